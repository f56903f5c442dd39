//! What a probe's reply says of the server's clock.
//!
//! A line probe brackets the server's timestamp between our send time t1
//! and receive time t4: the server stamped some instant in [t1, t4], and
//! its printed time T covers [T, T + resolution). So the offset (server
//! clock minus ours) lies in [T - t4, T + resolution - t1]; its midpoint
//! is the estimate and half the width its uncertainty, which is half the
//! round trip or the timestamp's resolution (1 s for ctime), whichever
//! dominates. A STAMP reply gives the reflector's receive and transmit
//! times (t2, t3): the offset lies in [t3 - t4, t2 - t1]. Intersecting
//! the intervals of all probes narrows the final estimate.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What one answered probe tells.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Probe {
    pub rtt: Duration,
    /// Bounds on (server clock - our clock), in seconds.
    pub low: f64,
    pub high: f64,
}

impl Probe {
    pub fn offset(&self) -> f64 {
        (self.low + self.high) / 2.0
    }

    pub fn uncertainty(&self) -> f64 {
        (self.high - self.low) / 2.0
    }
}

pub fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The server's time as a reply shows it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ServerTime {
    /// Unix seconds.
    pub at: f64,
    pub resolution: f64,
    /// Shown without a zone (ctime): read as if in ours.
    pub zoneless: bool,
}

/// The server's time, read from `[time] ...`.
pub fn parse_server_time(reply: &[u8]) -> Option<ServerTime> {
    let text = std::str::from_utf8(reply.strip_prefix(b"[")?).ok()?;
    let time = &text[..text.find("] ")?];
    if let Ok(n) = time.parse::<u64>() {
        // unix, unix-ms, unix-us, unix-ns: told apart by magnitude.
        let (scale, resolution) = match n {
            0..=99_999_999_999 => (1.0, 1.0),
            100_000_000_000..=99_999_999_999_999 => (1e-3, 1e-3),
            100_000_000_000_000..=99_999_999_999_999_999 => (1e-6, 1e-6),
            _ => (1e-9, 1e-9),
        };
        return Some(ServerTime {
            at: n as f64 * scale,
            resolution,
            zoneless: false,
        });
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(time) {
        let fraction = time
            .split('.')
            .nth(1)
            .map_or(0, |f| f.chars().take_while(char::is_ascii_digit).count());
        let resolution = 10f64.powi(-(fraction as i32));
        return Some(ServerTime {
            at: t.timestamp() as f64 + f64::from(t.timestamp_subsec_nanos()) / 1e9,
            resolution,
            zoneless: false,
        });
    }
    // ctime, shown in the server's local time: read as ours (same TZ assumed).
    let naive = chrono::NaiveDateTime::parse_from_str(time, "%a %b %e %H:%M:%S %Y").ok()?;
    let local = naive.and_local_timezone(chrono::Local).earliest()?;
    Some(ServerTime {
        at: local.timestamp() as f64,
        resolution: 1.0,
        zoneless: true,
    })
}

/// What a line probe sent at `sent` and answered after `rtt` tells.
pub fn probe_from(sent: SystemTime, rtt: Duration, server: ServerTime) -> Probe {
    let t1 = unix_seconds(sent);
    let t4 = t1 + rtt.as_secs_f64();
    Probe {
        rtt,
        low: server.at - t4,
        high: server.at + server.resolution - t1,
    }
}

/// What a STAMP exchange tells: t1 sent, t2 received and t3 sent back by
/// the reflector, t4 received here. Its round trip leaves out the time
/// the reflector held the packet.
pub fn probe_from_stamp(t1: SystemTime, t2: SystemTime, t3: SystemTime, t4: SystemTime) -> Probe {
    let (t1, t2, t3, t4) = (
        unix_seconds(t1),
        unix_seconds(t2),
        unix_seconds(t3),
        unix_seconds(t4),
    );
    let rtt = ((t4 - t1) - (t3 - t2)).max(0.0);
    Probe {
        rtt: Duration::from_secs_f64(rtt),
        low: t3 - t4,
        high: t2 - t1,
    }
}

/// The intersection of every probe's interval; if clocks moved so they do
/// not overlap, the probe with the shortest round trip.
pub fn combine(probes: &[Probe]) -> Probe {
    let low = probes
        .iter()
        .map(|p| p.low)
        .fold(f64::NEG_INFINITY, f64::max);
    let high = probes.iter().map(|p| p.high).fold(f64::INFINITY, f64::min);
    let fastest = probes.iter().min_by_key(|p| p.rtt).copied();
    match fastest {
        Some(best) if low > high => best,
        Some(best) => Probe {
            rtt: best.rtt,
            low,
            high,
        },
        None => Probe {
            rtt: Duration::ZERO,
            low: 0.0,
            high: 0.0,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_time_in_every_format() {
        let read = |reply: &[u8]| {
            let t = parse_server_time(reply).unwrap();
            (t.at, t.resolution, t.zoneless)
        };
        assert_eq!(read(b"[1795597503] x"), (1_795_597_503.0, 1.0, false));
        let (t, r, _) = read(b"[1795597503123] x");
        assert!((t - 1_795_597_503.123).abs() < 1e-6 && r == 1e-3);
        let (t, r, _) = read(b"[2026-11-25T09:05:03.250Z] x");
        assert!((t - 1_795_597_503.25).abs() < 1e-6 && (r - 1e-3).abs() < 1e-12);
        assert_eq!(
            read(b"[2026-11-25T09:05:03Z] x"),
            (1_795_597_503.0, 1.0, false)
        );
        assert!(
            read(b"[Wed Nov 25 09:05:03 2026] x").2,
            "ctime shows no zone"
        );
        assert_eq!(parse_server_time(b"no stamp"), None);
    }

    #[test]
    fn uncertainty_is_half_the_round_trip_or_the_resolution() {
        let sent = UNIX_EPOCH + Duration::from_secs(1_795_597_503);
        // Stamped 5 ms after sending, halfway through a 10 ms round trip.
        let at = |reply: &[u8]| parse_server_time(reply).unwrap();
        let fine = probe_from(sent, Duration::from_millis(10), at(b"[1795597503005000] x"));
        assert!(fine.offset().abs() < 1e-6, "{fine:?}");
        assert!((fine.uncertainty() - 0.005).abs() < 1e-6);
        let coarse = probe_from(sent, Duration::from_millis(10), at(b"[1795597503] x"));
        assert!((coarse.uncertainty() - 0.505).abs() < 1e-6);
        assert!((coarse.offset() - 0.495).abs() < 1e-6);
    }

    #[test]
    fn a_stamp_exchange_bounds_the_offset_by_each_direction() {
        let t = |ms: u64| UNIX_EPOCH + Duration::from_millis(1_795_597_503_000 + ms);
        // Reflector 100 ms ahead; 2 ms out, 1 ms held, 4 ms back.
        let p = probe_from_stamp(t(0), t(102), t(103), t(7));
        assert!((p.rtt.as_secs_f64() - 0.006).abs() < 1e-6);
        assert!((p.low - 0.096).abs() < 1e-6 && (p.high - 0.102).abs() < 1e-6);
        assert!((p.offset() - 0.099).abs() < 1e-6 && (p.uncertainty() - 0.003).abs() < 1e-6);
    }

    #[test]
    fn probes_intersect() {
        let a = Probe {
            rtt: Duration::from_millis(1),
            low: -0.5,
            high: 0.5,
        };
        let b = Probe {
            rtt: Duration::from_millis(2),
            low: 0.2,
            high: 1.2,
        };
        let c = combine(&[a, b]);
        assert!((c.low - 0.2).abs() < 1e-12 && (c.high - 0.5).abs() < 1e-12);
    }
}

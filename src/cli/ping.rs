//! `tsecho ping`: round trips to a stamp server, and how far its clock is
//! from ours.
//!
//! Each probe brackets the server's timestamp between our send time t1 and
//! receive time t4: the server stamped some instant in [t1, t4], and its
//! printed time T covers [T, T + resolution). So the offset (server clock
//! minus ours) lies in [T - t4, T + resolution - t1]; its midpoint is the
//! estimate and half the width its uncertainty, which is half the round
//! trip or the timestamp's resolution (1 s for ctime), whichever dominates.
//! Intersecting the intervals of all probes narrows the final estimate.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Args as ClapArgs;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tsecho::Endpoint;
use tsecho::client::{ClientStream, Connector, DatagramSocket, Opened};
use tsecho::error::EX_TEMPFAIL;
use tsecho::tls::client::ClientTlsArgs;

use super::parse_duration;

#[derive(Debug, ClapArgs)]
pub struct Args {
    /// Server URL: tcp://HOST:PORT, tls://HOST:PORT, udp://HOST:PORT,
    /// unix:///path, unixgram:///path.
    #[arg(default_value = tsecho::settings::DEFAULT_URL)]
    url: String,
    /// Probes to send.
    #[arg(short = 'c', long, default_value_t = 5)]
    count: u32,
    /// Time between probes.
    #[arg(short = 'i', long, default_value = "1s", value_parser = parse_duration)]
    interval: Duration,
    /// How long to wait for each reply (and for the connection).
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    timeout: Duration,
    #[command(flatten)]
    tls: ClientTlsArgs,
}

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

fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The server's time and its resolution, read from `[time] ...`.
pub fn parse_server_time(reply: &[u8]) -> Option<(f64, f64)> {
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
        return Some((n as f64 * scale, resolution));
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(time) {
        let fraction = time
            .split('.')
            .nth(1)
            .map_or(0, |f| f.chars().take_while(char::is_ascii_digit).count());
        let resolution = 10f64.powi(-(fraction as i32));
        return Some((
            t.timestamp() as f64 + f64::from(t.timestamp_subsec_nanos()) / 1e9,
            resolution,
        ));
    }
    // ctime, shown in the server's local time: read as ours (same TZ assumed).
    let naive = chrono::NaiveDateTime::parse_from_str(time, "%a %b %e %H:%M:%S %Y").ok()?;
    let local = naive.and_local_timezone(chrono::Local).earliest()?;
    Some((local.timestamp() as f64, 1.0))
}

pub fn probe_from(sent: SystemTime, rtt: Duration, reply: &[u8]) -> Option<Probe> {
    let (server, resolution) = parse_server_time(reply)?;
    let t1 = unix_seconds(sent);
    let t4 = t1 + rtt.as_secs_f64();
    Some(Probe {
        rtt,
        low: server - t4,
        high: server + resolution - t1,
    })
}

enum Channel {
    Stream(BufReader<Box<dyn ClientStream>>),
    Datagram(DatagramSocket),
}

impl Channel {
    async fn ask(&mut self, message: &[u8], reply: &mut Vec<u8>) -> std::io::Result<()> {
        reply.clear();
        match self {
            Channel::Stream(stream) => {
                stream.get_mut().write_all(message).await?;
                if stream.read_until(b'\n', reply).await? == 0 {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "server closed the connection",
                    ));
                }
            }
            Channel::Datagram(sock) => {
                sock.send(message).await?;
                reply.resize(65_536, 0);
                let n = sock.recv(reply).await?;
                reply.truncate(n);
            }
        }
        Ok(())
    }
}

pub fn run(args: Args) -> anyhow::Result<i32> {
    let endpoint: Endpoint = args.url.parse()?;
    let runtime = super::single_thread_runtime()?;
    runtime.block_on(ping(args, endpoint))
}

async fn ping(args: Args, endpoint: Endpoint) -> anyhow::Result<i32> {
    let (mut channel, opened) = if endpoint.transport.is_datagram() {
        let sock = DatagramSocket::connect(&endpoint).await?;
        (Channel::Datagram(sock), None)
    } else {
        let connector = Connector::new(&endpoint, args.timeout, &args.tls)?;
        let (stream, opened) = connector.connect_timed().await?;
        (Channel::Stream(BufReader::new(stream)), Some(opened))
    };
    say!("PING {endpoint}");
    if let Some(opened) = opened {
        print_opened(&opened);
    }
    let mut probes = Vec::new();
    let mut reply = Vec::new();
    let mut next = Instant::now();
    for seq in 1..=args.count {
        tokio::time::sleep_until(next.into()).await;
        next += args.interval;
        let message = format!("tsecho-ping {seq}\n");
        let sent = SystemTime::now();
        let started = Instant::now();
        let answered =
            tokio::time::timeout(args.timeout, channel.ask(message.as_bytes(), &mut reply)).await;
        let rtt = started.elapsed();
        match answered {
            Ok(Ok(())) => match probe_from(sent, rtt, &reply) {
                Some(probe) => {
                    say!(
                        "reply from {endpoint}: seq={seq} time={:.3} ms offset={:+.6} s ±{:.6} s",
                        ms(rtt),
                        probe.offset(),
                        probe.uncertainty()
                    );
                    probes.push(probe);
                }
                None => say!(
                    "reply from {endpoint}: seq={seq} time={:.3} ms (no timestamp in {:?})",
                    ms(rtt),
                    String::from_utf8_lossy(&reply)
                ),
            },
            Ok(Err(e)) => say!("seq={seq}: {e}"),
            Err(_) => say!("seq={seq}: no reply within {:?}", args.timeout),
        }
    }
    print_summary(&endpoint, args.count, &probes);
    Ok(if probes.is_empty() { EX_TEMPFAIL } else { 0 })
}

/// The connection's set-up, apart from the round trips that follow.
fn print_opened(opened: &Opened) {
    match opened.handshake {
        Some(handshake) => say!(
            "connected in {:.3} ms, TLS handshake {:.3} ms",
            ms(opened.connect),
            ms(handshake)
        ),
        None => say!("connected in {:.3} ms", ms(opened.connect)),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn print_summary(endpoint: &Endpoint, sent: u32, probes: &[Probe]) {
    let answered = probes.len() as u32;
    let loss = 100.0 * f64::from(sent - answered) / f64::from(sent.max(1));
    say!("--- {endpoint} ping statistics ---");
    say!("{sent} probes sent, {answered} answered, {loss:.0}% loss");
    if probes.is_empty() {
        return;
    }
    let rtts: Vec<f64> = probes.iter().map(|p| ms(p.rtt)).collect();
    let n = rtts.len() as f64;
    let avg = rtts.iter().sum::<f64>() / n;
    let mdev = (rtts.iter().map(|r| (r - avg).powi(2)).sum::<f64>() / n).sqrt();
    let min = rtts.iter().copied().fold(f64::INFINITY, f64::min);
    let max = rtts.iter().copied().fold(0.0, f64::max);
    say!("rtt min/avg/max/mdev = {min:.3}/{avg:.3}/{max:.3}/{mdev:.3} ms");
    let combined = combine(probes);
    say!(
        "clock offset {:+.6} s ±{:.6} s (server minus local, from {} probes)",
        combined.offset(),
        combined.uncertainty(),
        probes.len()
    );
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
        assert_eq!(
            parse_server_time(b"[1795597503] x"),
            Some((1_795_597_503.0, 1.0))
        );
        let (t, r) = parse_server_time(b"[1795597503123] x").unwrap();
        assert!((t - 1_795_597_503.123).abs() < 1e-6 && r == 1e-3);
        let (t, r) = parse_server_time(b"[2026-11-25T09:05:03.250Z] x").unwrap();
        assert!((t - 1_795_597_503.25).abs() < 1e-6 && (r - 1e-3).abs() < 1e-12);
        assert_eq!(
            parse_server_time(b"[2026-11-25T09:05:03Z] x"),
            Some((1_795_597_503.0, 1.0))
        );
        assert!(parse_server_time(b"[Wed Nov 25 09:05:03 2026] x").is_some());
        assert_eq!(parse_server_time(b"no stamp"), None);
    }

    #[test]
    fn uncertainty_is_half_the_round_trip_or_the_resolution() {
        let sent = UNIX_EPOCH + Duration::from_secs(1_795_597_503);
        // Stamped 5 ms after sending, halfway through a 10 ms round trip.
        let fine = probe_from(sent, Duration::from_millis(10), b"[1795597503005000] x").unwrap();
        assert!(fine.offset().abs() < 1e-6, "{fine:?}");
        assert!((fine.uncertainty() - 0.005).abs() < 1e-6);
        let coarse = probe_from(sent, Duration::from_millis(10), b"[1795597503] x").unwrap();
        assert!((coarse.uncertainty() - 0.505).abs() < 1e-6);
        assert!((coarse.offset() - 0.495).abs() < 1e-6);
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

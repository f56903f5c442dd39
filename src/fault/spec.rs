//! The faults a listener injects, written as URL query parameters:
//! `tcp://:21567?delay=20ms&jitter=5ms`, `udp://:21567?drop=1%&duplicate=0.5%`.
//! Parsed and checked here, shown again in the same notation, so that a
//! listener's URL round-trips and `check-config` prints what will happen.

use std::fmt;
use std::time::Duration;

use crate::text::{parse_duration, parse_size, show_duration, show_size};

/// A probability in parts per million: exact to compare and to hash, and
/// enough resolution for `0.0001%`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Chance(pub u32);

pub const MILLION: u32 = 1_000_000;

/// How jitter spreads the delay.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum JitterDist {
    /// Uniform in [delay - jitter, delay + jitter].
    #[default]
    Uniform,
    /// Normal around delay with jitter as standard deviation, cut at 0.
    Normal,
}

/// Every fault a listener may have; all off by default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Faults {
    pub delay: Option<Duration>,
    pub jitter: Option<Duration>,
    pub jitter_dist: JitterDist,
    /// Datagrams: no reply.
    pub drop: Option<Chance>,
    /// Datagrams: the reply twice.
    pub duplicate: Option<Chance>,
    /// Streams: an RST instead of the reply.
    pub reset: Option<Chance>,
    /// Streams: a clean close after this many replies.
    pub close_after: Option<u64>,
    /// Streams: bytes per second per connection.
    pub bandwidth: Option<u64>,
    /// Streams: no reading for this long after each reply.
    pub stall: Option<Duration>,
    pub seed: Option<u64>,
}

/// The query keys this file owns, in the order they are shown.
pub const KEYS: [&str; 10] = [
    "delay",
    "jitter",
    "jitter-dist",
    "drop",
    "duplicate",
    "reset",
    "close-after",
    "bandwidth",
    "stall",
    "seed",
];

/// Faults that only datagram listeners have, and those only streams have.
const DATAGRAM_ONLY: [&str; 2] = ["drop", "duplicate"];
const STREAM_ONLY: [&str; 4] = ["reset", "close-after", "bandwidth", "stall"];

impl Faults {
    pub fn is_none(&self) -> bool {
        *self == Faults::default()
    }

    /// Whether replies wait: the delay queue is needed.
    pub fn delays(&self) -> bool {
        self.delay.is_some() || self.jitter.is_some()
    }

    /// Sets one key; Ok(false) when the key is not a fault's. A key given
    /// twice is an error.
    pub fn set(&mut self, key: &str, value: &str) -> Result<bool, String> {
        let bad = |reason: String| format!("{key}={value}: {reason}");
        // Fills a slot with the parsed value; true if it was already set.
        fn put<T>(slot: &mut Option<T>, parsed: Result<T, String>) -> Result<bool, String> {
            Ok(slot.replace(parsed?).is_some())
        }
        let taken = match key {
            "delay" => put(&mut self.delay, parse_duration(value).map_err(bad))?,
            "jitter" => put(&mut self.jitter, parse_duration(value).map_err(bad))?,
            "jitter-dist" => {
                let dist = match value {
                    "uniform" => JitterDist::Uniform,
                    "normal" => JitterDist::Normal,
                    _ => return Err(bad("expected uniform or normal".into())),
                };
                std::mem::replace(&mut self.jitter_dist, dist) != JitterDist::Uniform
            }
            "drop" => put(&mut self.drop, parse_chance(value).map_err(bad))?,
            "duplicate" => put(&mut self.duplicate, parse_chance(value).map_err(bad))?,
            "reset" => put(&mut self.reset, parse_chance(value).map_err(bad))?,
            "close-after" => put(&mut self.close_after, parse_count(value).map_err(bad))?,
            "bandwidth" => put(
                &mut self.bandwidth,
                parse_size(value).map(|n| n as u64).map_err(bad),
            )?,
            "stall" => put(&mut self.stall, parse_duration(value).map_err(bad))?,
            "seed" => put(
                &mut self.seed,
                value
                    .parse()
                    .map_err(|_| bad("expected a whole number".into())),
            )?,
            _ => return Ok(false),
        };
        if taken {
            return Err(format!("query parameter {key:?} is given twice"));
        }
        Ok(true)
    }

    /// Checks the faults against each other and against the listener's
    /// kind of socket: a fault that could never happen is an error, not a
    /// silent no-op.
    pub fn check(&self, datagram: bool) -> Result<(), String> {
        let (wrong, other) = if datagram {
            (STREAM_ONLY.as_slice(), "stream listeners (tcp, tls, unix)")
        } else {
            (
                DATAGRAM_ONLY.as_slice(),
                "datagram listeners (udp, unixgram)",
            )
        };
        if let Some(key) = wrong
            .iter()
            .find(|k| self.pairs().iter().any(|(p, _)| p == *k))
        {
            return Err(format!("{key} applies to {other} only"));
        }
        let jitter = self.jitter.unwrap_or_default();
        let delay = self.delay.unwrap_or_default();
        if self.jitter_dist == JitterDist::Uniform && jitter > delay {
            return Err(format!(
                "jitter {} is larger than delay {}: uniform jitter would make delays below 0 \
                 (lower it, or use jitter-dist=normal)",
                show_duration(jitter),
                show_duration(delay)
            ));
        }
        if self.close_after == Some(0) {
            return Err("close-after must be at least 1 reply".into());
        }
        Ok(())
    }

    /// The set keys with their values, as written in a URL.
    pub fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut pairs = Vec::new();
        let mut add = |key, value: Option<String>| {
            if let Some(value) = value {
                pairs.push((key, value));
            }
        };
        add("delay", self.delay.map(show_duration));
        add("jitter", self.jitter.map(show_duration));
        add(
            "jitter-dist",
            (self.jitter_dist == JitterDist::Normal).then(|| "normal".to_string()),
        );
        add("drop", self.drop.map(|c| c.to_string()));
        add("duplicate", self.duplicate.map(|c| c.to_string()));
        add("reset", self.reset.map(|c| c.to_string()));
        add("close-after", self.close_after.map(|n| n.to_string()));
        add("bandwidth", self.bandwidth.map(|n| show_size(n as usize)));
        add("stall", self.stall.map(show_duration));
        add("seed", self.seed.map(|n| n.to_string()));
        pairs
    }
}

/// `1%`, `0.5%`, `100%`, or a fraction from 0 to 1 (`0.01`).
fn parse_chance(value: &str) -> Result<Chance, String> {
    let (number, scale) = match value.strip_suffix('%') {
        Some(number) => (number, 10_000.0),
        None => (value, 1_000_000.0),
    };
    let p: f64 = number
        .trim()
        .parse()
        .map_err(|_| "expected a percentage such as 1% or 0.5%".to_string())?;
    let ppm = (p * scale).round();
    if !(0.0..=f64::from(MILLION)).contains(&ppm) || p.is_nan() {
        return Err("a probability is from 0% to 100%".into());
    }
    Ok(Chance(ppm as u32))
}

fn parse_count(value: &str) -> Result<u64, String> {
    value
        .parse()
        .map_err(|_| "expected a whole number of replies".to_string())
}

impl fmt::Display for Chance {
    /// `1%`, `0.5%`, `0.0001%`: exact.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (whole, rest) = (self.0 / 10_000, self.0 % 10_000);
        if rest == 0 {
            return write!(f, "{whole}%");
        }
        let decimals = format!("{rest:04}");
        write!(f, "{whole}.{}%", decimals.trim_end_matches('0'))
    }
}

impl fmt::Display for Faults {
    /// `delay=20ms jitter=5ms`, or `none`: for `services` and `check-config`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pairs = self.pairs();
        if pairs.is_empty() {
            return f.write_str("none");
        }
        let text: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
        f.write_str(&text.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(query: &str, datagram: bool) -> Result<Faults, String> {
        let mut faults = Faults::default();
        for pair in query.split('&') {
            let (k, v) = pair.split_once('=').unwrap();
            assert!(faults.set(k, v)?, "{k} is a fault");
        }
        faults.check(datagram)?;
        Ok(faults)
    }

    #[test]
    fn chances_are_exact_both_ways() {
        for (text, ppm, shown) in [
            ("1%", 10_000, "1%"),
            ("0.5%", 5_000, "0.5%"),
            ("100%", MILLION, "100%"),
            ("0.0001%", 1, "0.0001%"),
            ("0.25", 250_000, "25%"),
            ("0%", 0, "0%"),
        ] {
            let chance = parse_chance(text).unwrap();
            assert_eq!(chance, Chance(ppm), "{text}");
            assert_eq!(chance.to_string(), shown);
        }
    }

    #[test]
    fn the_issues_examples_parse() {
        let f = parse("delay=20ms&jitter=5ms", false).unwrap();
        assert_eq!(f.delay, Some(Duration::from_millis(20)));
        let f = parse("drop=1%&duplicate=0.5%&delay=10ms", true).unwrap();
        assert_eq!(f.drop, Some(Chance(10_000)));
        let f = parse(
            "bandwidth=64KiB&stall=1s&reset=2%&close-after=3&seed=7",
            false,
        )
        .unwrap();
        assert_eq!(f.bandwidth, Some(65_536));
        assert_eq!(
            f.to_string(),
            "reset=2% close-after=3 bandwidth=64KiB stall=1s seed=7"
        );
    }

    #[test]
    fn bad_values_name_their_key() {
        for (query, datagram, named) in [
            ("drop=150%", true, "drop"),
            ("delay=-1s", false, "delay"),
            ("delay=10ms&jitter=20ms", false, "jitter"),
            ("jitter-dist=pareto", false, "jitter-dist"),
            ("drop=1%", false, "drop"),
            ("reset=1%", true, "reset"),
            ("close-after=0", false, "close-after"),
            ("close-after=x", false, "close-after"),
            ("bandwidth=fast", false, "bandwidth"),
            ("seed=-3", false, "seed"),
            ("delay=1s&delay=2s", false, "delay"),
        ] {
            let err = parse(query, datagram).unwrap_err();
            assert!(err.contains(named), "{query}: {err}");
        }
        assert!(parse("delay=10ms&jitter=20ms&jitter-dist=normal", false).is_ok());
    }
}

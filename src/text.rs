//! Settings and URL parameters written as text, both ways: `64KiB`, `250ms`, `10.0.0.0/8,::1`
//! parsed from flags, variables and the config file, and shown again by
//! `check-config` and `--help` in the same notation.

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;

/// `64KiB` -> (`64`, `KiB`); `1.5` -> (`1.5`, `default_unit`).
fn number_and_unit<'a>(s: &'a str, default_unit: &'a str) -> (&'a str, &'a str) {
    match s.find(|c: char| c.is_ascii_alphabetic()) {
        Some(at) => s.split_at(at),
        None => (s, default_unit),
    }
}

/// Parses `5s`, `250ms`, `2m` or plain seconds (`1.5`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (number, unit) = number_and_unit(s, "s");
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 5s, 250ms or 2m"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        _ => return Err(format!("unknown unit {unit:?} in {s:?} (use ms, s or m)")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{s:?}: {e}"))
}

/// `5s`, `250ms`: the shortest exact form.
pub fn show_duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else if d.as_nanos() % 1_000_000 == 0 {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}", d.as_secs_f64())
    }
}

/// Parses `65536`, `64KiB`, `1MiB`.
pub fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let (number, unit) = number_and_unit(s, "");
    let value: usize = number
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a size like 65536 or 64KiB"))?;
    let scale = match unit {
        "" | "B" => 1,
        "K" | "KiB" | "k" => 1024,
        "M" | "MiB" => 1024 * 1024,
        _ => return Err(format!("unknown unit {unit:?} in {s:?} (use KiB or MiB)")),
    };
    match value.checked_mul(scale) {
        Some(0) | None => Err(format!(
            "{s:?} must be between 1 byte and the address space"
        )),
        Some(n) => Ok(n),
    }
}

/// `64KiB`, `1MiB`, `1000`: whole units where they fit.
pub fn show_size(n: usize) -> String {
    const MIB: usize = 1024 * 1024;
    match n {
        n if n % MIB == 0 => format!("{}MiB", n / MIB),
        n if n % 1024 == 0 => format!("{}KiB", n / 1024),
        n => n.to_string(),
    }
}

/// Parses a comma-separated list of addresses and CIDR networks; empty
/// for none.
pub fn parse_networks(s: &str) -> Result<Vec<IpNet>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(|part| {
            part.parse::<IpNet>()
                .or_else(|_| part.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| format!("{part:?} is not an address or CIDR network"))
        })
        .collect()
}

pub fn show_networks(networks: &[IpNet]) -> String {
    let parts: Vec<String> = networks.iter().map(IpNet::to_string).collect();
    parts.join(",")
}

/// At least one thread.
pub fn parse_threads(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("{s:?} is not a number of threads")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("5h").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64KiB"), Ok(65536));
        assert_eq!(parse_size("100"), Ok(100));
        assert!(parse_size("0").is_err());
        assert!(parse_size("1GB").is_err());
    }

    #[test]
    fn shown_values_parse_back() {
        for text in ["64KiB", "1MiB", "1000", "1"] {
            assert_eq!(show_size(parse_size(text).unwrap()), text);
        }
        for text in ["5s", "250ms", "300s"] {
            assert_eq!(show_duration(parse_duration(text).unwrap()), text);
        }
        let nets = parse_networks("127.0.0.0/8, ::1").unwrap();
        assert_eq!(show_networks(&nets), "127.0.0.0/8,::1/128");
        assert!(parse_threads("0").is_err());
    }
}

//! The `tsecho` command line: one module per subcommand, each with its clap
//! arguments next to the function that runs it.

pub mod bench;
pub mod client;
pub mod config;
pub mod ping;
pub mod serve;
pub mod services;

use std::time::Duration;

/// The runtime of the one-connection commands (client, ping): one thread.
pub fn single_thread_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    use anyhow::Context;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")
}

/// Parses `5s`, `250ms`, `2m` or plain seconds (`1.5`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (number, unit) = match s.find(|c: char| c.is_ascii_alphabetic()) {
        Some(at) => s.split_at(at),
        None => (s, "s"),
    };
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

/// Parses `65536`, `64KiB`, `1MiB`.
pub fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let (number, unit) = match s.find(|c: char| c.is_ascii_alphabetic()) {
        Some(at) => s.split_at(at),
        None => (s, ""),
    };
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
}

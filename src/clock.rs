//! Timestamp formats, and a per-second cache so the hot path formats the
//! clock at most once a second instead of once per reply.

use std::fmt::Write as _;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::format::{Item, StrftimeItems};
use chrono::{DateTime, Local, SecondsFormat, Utc};

use crate::error::Error;

/// C's `ctime()` without its trailing newline: `Wed Nov 25 09:05:03 2026`.
const CTIME: &str = "%a %b %e %H:%M:%S %Y";

#[derive(Debug, Clone)]
pub enum TimeFormat {
    Ctime,
    Rfc3339,
    Rfc3339Ms,
    Rfc3339Us,
    Unix,
    UnixMs,
    UnixUs,
    UnixNs,
    /// A strftime pattern, parsed once at start.
    Strftime {
        pattern: String,
        items: Vec<Item<'static>>,
    },
}

impl TimeFormat {
    pub const NAMES: &'static str = "ctime, rfc3339, rfc3339-ms, rfc3339-us, unix, unix-ms, unix-us, unix-ns, or a strftime pattern";

    /// How finely the format resolves time: a client estimating our clock
    /// offset cannot do better than this.
    pub fn resolution(&self) -> Duration {
        match self {
            TimeFormat::Rfc3339Ms | TimeFormat::UnixMs => Duration::from_millis(1),
            TimeFormat::Rfc3339Us | TimeFormat::UnixUs => Duration::from_micros(1),
            TimeFormat::UnixNs => Duration::from_nanos(1),
            TimeFormat::Strftime { pattern, .. } if has_subsecond_field(pattern) => {
                Duration::from_nanos(1)
            }
            _ => Duration::from_secs(1),
        }
    }

    fn is_whole_seconds(&self) -> bool {
        self.resolution() >= Duration::from_secs(1)
    }
}

impl std::fmt::Display for TimeFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TimeFormat::Ctime => "ctime",
            TimeFormat::Rfc3339 => "rfc3339",
            TimeFormat::Rfc3339Ms => "rfc3339-ms",
            TimeFormat::Rfc3339Us => "rfc3339-us",
            TimeFormat::Unix => "unix",
            TimeFormat::UnixMs => "unix-ms",
            TimeFormat::UnixUs => "unix-us",
            TimeFormat::UnixNs => "unix-ns",
            TimeFormat::Strftime { pattern, .. } => pattern,
        })
    }
}

/// True when a strftime pattern prints fractions of a second (`%f`, `%.3f`, `%6f`...).
fn has_subsecond_field(pattern: &str) -> bool {
    let mut rest = pattern;
    while let Some(at) = rest.find('%') {
        let spec = rest[at + 1..].trim_start_matches(|c: char| c == '.' || c.is_ascii_digit());
        if spec.starts_with('f') {
            return true;
        }
        rest = spec.strip_prefix('%').unwrap_or(spec);
    }
    false
}

impl FromStr for TimeFormat {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Ok(match s {
            "ctime" => TimeFormat::Ctime,
            "rfc3339" => TimeFormat::Rfc3339,
            "rfc3339-ms" => TimeFormat::Rfc3339Ms,
            "rfc3339-us" => TimeFormat::Rfc3339Us,
            "unix" => TimeFormat::Unix,
            "unix-ms" => TimeFormat::UnixMs,
            "unix-us" => TimeFormat::UnixUs,
            "unix-ns" => TimeFormat::UnixNs,
            pattern if pattern.contains('%') => {
                let items = StrftimeItems::new(pattern).parse_to_owned().map_err(|e| {
                    Error::TimeFormat {
                        input: s.into(),
                        reason: e.to_string(),
                    }
                })?;
                TimeFormat::Strftime {
                    pattern: pattern.to_string(),
                    items,
                }
            }
            _ => {
                return Err(Error::TimeFormat {
                    input: s.into(),
                    reason: format!("expected {}", TimeFormat::NAMES),
                });
            }
        })
    }
}

/// Which clock a message's stamp is read from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StampClock {
    /// When the kernel received the message (SO_TIMESTAMPNS), on sockets
    /// that report it: TCP, UDP, Unix datagram. Unix streams and TLS keep
    /// the user clock.
    #[default]
    Kernel,
    /// When tsecho read the message.
    User,
}

impl StampClock {
    pub fn name(self) -> &'static str {
        match self {
            StampClock::Kernel => "kernel",
            StampClock::User => "user",
        }
    }
}

/// A format plus the time zone it is shown in.
#[derive(Debug, Clone)]
pub struct TimeStyle {
    pub format: TimeFormat,
    /// UTC instead of local time (local time honours `TZ`).
    pub utc: bool,
}

impl Default for TimeStyle {
    fn default() -> Self {
        TimeStyle {
            format: TimeFormat::Ctime,
            utc: false,
        }
    }
}

impl TimeStyle {
    /// Appends `at` formatted in this style to `out`.
    pub fn write(&self, at: SystemTime, out: &mut String) {
        let since_epoch = at.duration_since(UNIX_EPOCH).unwrap_or_default();
        let _ = match &self.format {
            TimeFormat::Unix => write!(out, "{}", since_epoch.as_secs()),
            TimeFormat::UnixMs => write!(out, "{}", since_epoch.as_millis()),
            TimeFormat::UnixUs => write!(out, "{}", since_epoch.as_micros()),
            TimeFormat::UnixNs => write!(out, "{}", since_epoch.as_nanos()),
            _ if self.utc => self.write_zoned(DateTime::<Utc>::from(at), out),
            _ => self.write_zoned(DateTime::<Local>::from(at), out),
        };
    }

    fn write_zoned<Tz: chrono::TimeZone>(
        &self,
        t: DateTime<Tz>,
        out: &mut String,
    ) -> std::fmt::Result
    where
        Tz::Offset: std::fmt::Display,
    {
        let use_z = self.utc;
        match &self.format {
            TimeFormat::Ctime => write!(out, "{}", t.format(CTIME)),
            TimeFormat::Rfc3339 => write!(out, "{}", t.to_rfc3339_opts(SecondsFormat::Secs, use_z)),
            TimeFormat::Rfc3339Ms => {
                write!(out, "{}", t.to_rfc3339_opts(SecondsFormat::Millis, use_z))
            }
            TimeFormat::Rfc3339Us => {
                write!(out, "{}", t.to_rfc3339_opts(SecondsFormat::Micros, use_z))
            }
            TimeFormat::Strftime { items, .. } => {
                write!(out, "{}", t.format_with_items(items.iter()))
            }
            TimeFormat::Unix | TimeFormat::UnixMs | TimeFormat::UnixUs | TimeFormat::UnixNs => {
                unreachable!("epoch formats are written without a zone")
            }
        }
    }

    pub fn format(&self, at: SystemTime) -> String {
        let mut s = String::new();
        self.write(at, &mut s);
        s
    }
}

/// Formats timestamps for one task, reusing the last text while the
/// second has not changed (for formats that show whole seconds), or while
/// the instant has not (for any format).
///
/// Every line of one read is stamped with the same instant, so the first
/// check is the one that answers nearly every call: with 16 lines per read
/// the second's arithmetic and the format lookup per line took 2.2% of the
/// server's CPU, more than copying the replies (perf, 50 connections at
/// pipeline 16).
///
/// The text is kept in stamp's brackets, `[time] `, so that a stamp reply
/// is two copies (the bracketed time, the message); other services take
/// the time alone from inside them.
#[derive(Debug, Clone)]
pub struct Stamper {
    style: Arc<TimeStyle>,
    /// The instant the text was last asked for.
    cached_at: Option<SystemTime>,
    bracketed: String,
}

impl Stamper {
    pub fn new(style: Arc<TimeStyle>) -> Self {
        Stamper {
            style,
            cached_at: None,
            bracketed: String::new(),
        }
    }

    /// The timestamp text for `at`.
    pub fn text(&mut self, at: SystemTime) -> &[u8] {
        let bracketed = self.bracketed(at);
        &bracketed[1..bracketed.len() - 2]
    }

    /// `[` + the timestamp text for `at` + `] `.
    #[inline]
    pub fn bracketed(&mut self, at: SystemTime) -> &[u8] {
        if self.cached_at != Some(at) {
            self.refresh(at);
        }
        self.bracketed.as_bytes()
    }

    /// Writes the text for `at`, unless it shows whole seconds and the
    /// second is the one already written. No more state than that: the
    /// stamper lives in every connection, and 24 bytes more of it (the
    /// second and the format's resolution kept apart) cost 0.2 KiB per
    /// connection with 10,000 held: 1.62 KiB against 1.43-1.47.
    fn refresh(&mut self, at: SystemTime) {
        let since_epoch = at.duration_since(UNIX_EPOCH).unwrap_or_default();
        let second = UNIX_EPOCH + Duration::from_secs(since_epoch.as_secs());
        let same_second = self
            .cached_at
            .is_some_and(|cached| cached >= second && cached < second + Duration::from_secs(1));
        if !(same_second && self.style.format.is_whole_seconds()) {
            self.bracketed.clear();
            self.bracketed.push('[');
            self.style.write(at, &mut self.bracketed);
            self.bracketed.push_str("] ");
        }
        self.cached_at = Some(at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-11-25 09:05:03.123456789 UTC, a Wednesday.
    fn fixed() -> SystemTime {
        UNIX_EPOCH + Duration::new(1_795_597_503, 123_456_789)
    }

    fn utc(format: &str) -> String {
        TimeStyle {
            format: format.parse().unwrap(),
            utc: true,
        }
        .format(fixed())
    }

    #[test]
    fn every_named_format() {
        assert_eq!(utc("ctime"), "Wed Nov 25 09:05:03 2026");
        assert_eq!(utc("rfc3339"), "2026-11-25T09:05:03Z");
        assert_eq!(utc("rfc3339-ms"), "2026-11-25T09:05:03.123Z");
        assert_eq!(utc("rfc3339-us"), "2026-11-25T09:05:03.123456Z");
        assert_eq!(utc("unix"), "1795597503");
        assert_eq!(utc("unix-ms"), "1795597503123");
        assert_eq!(utc("unix-us"), "1795597503123456");
        assert_eq!(utc("unix-ns"), "1795597503123456789");
        assert_eq!(utc("%Y/%m/%d %H.%M.%S%.3f"), "2026/11/25 09.05.03.123");
    }

    #[test]
    fn ctime_pads_single_digit_days_with_a_space() {
        let style = TimeStyle {
            format: TimeFormat::Ctime,
            utc: true,
        };
        let nov4 = UNIX_EPOCH + Duration::from_secs(1_793_833_260); // 2026-11-04 23:01:00
        assert_eq!(style.format(nov4), "Wed Nov  4 23:01:00 2026");
    }

    #[test]
    fn unknown_formats_are_refused() {
        assert!("iso".parse::<TimeFormat>().is_err());
        assert!("%Q%".parse::<TimeFormat>().is_err());
    }

    #[test]
    fn resolution_follows_the_format() {
        assert_eq!(TimeFormat::Ctime.resolution(), Duration::from_secs(1));
        assert_eq!(
            "%H:%M:%S%.6f".parse::<TimeFormat>().unwrap().resolution(),
            Duration::from_nanos(1)
        );
        assert_eq!(
            "%H:%M:%S %%f".parse::<TimeFormat>().unwrap().resolution(),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn stamper_reuses_the_text_within_a_second_only() {
        let mut stamper = Stamper::new(Arc::new(TimeStyle {
            format: TimeFormat::Ctime,
            utc: true,
        }));
        let a = stamper.text(fixed()).to_vec();
        assert_eq!(stamper.text(fixed() + Duration::from_millis(800)), &a[..]);
        assert_eq!(
            stamper.text(fixed() + Duration::from_secs(1)),
            b"Wed Nov 25 09:05:04 2026"
        );
    }

    #[test]
    fn stamper_formats_subsecond_styles_every_time() {
        let mut stamper = Stamper::new(Arc::new(TimeStyle {
            format: TimeFormat::UnixMs,
            utc: true,
        }));
        assert_eq!(stamper.text(fixed()), b"1795597503123");
        assert_eq!(
            stamper.text(fixed() + Duration::from_millis(1)),
            b"1795597503124"
        );
    }
}

//! `--config FILE`: the settings from a TOML file, keyed by the flags'
//! long names (`listen = ["tcp://:7"]`, `max-line = "64KiB"`, `utc = true`),
//! read straight into [`Settings`] with serde. Values are written as the
//! flags take them, so each is checked by the same parser, and an error
//! names the file, the line and the setting.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use ipnet::IpNet;
use serde::de::{self, Deserializer, SeqAccess, Visitor};

use super::Settings;
use crate::endpoint::Endpoint;
use crate::error::{Error, describe};
use crate::text::{parse_duration, parse_networks, parse_size, parse_threads};

/// The file's settings over the defaults, and the keys the file set.
pub fn load(path: &Path) -> Result<(Settings, Vec<String>), Error> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Usage(format!("cannot read {}: {}", path.display(), describe(&e))))?;
    let at = |e: toml::de::Error| located(path, &text, &e);
    let table: toml::Table = text.parse().map_err(at)?;
    let settings: Settings = toml::from_str(&text).map_err(at)?;
    Ok((settings, table.keys().cloned().collect()))
}

/// `FILE:LINE: KEY: reason`, or `FILE:LINE: unknown setting "KEY" (valid: ...)`.
fn located(path: &Path, text: &str, e: &toml::de::Error) -> Error {
    let start = e.span().map_or(0, |span| span.start);
    let line = text[..start.min(text.len())].matches('\n').count() + 1;
    let key = text
        .lines()
        .nth(line - 1)
        .and_then(|l| l.split('=').next())
        .map(|k| k.trim().trim_matches(['[', ']', '"']).to_string())
        .unwrap_or_default();
    let message = e.message().trim_end();
    let reason = if message.starts_with("unknown field") {
        let valid: Vec<&str> = Settings::default()
            .describe()
            .into_iter()
            .map(|(key, _)| key)
            .collect();
        format!("unknown setting {key:?} (valid: {})", valid.join(", "))
    } else {
        format!("{key}: {message}")
    };
    Error::Usage(format!("{}:{line}: {reason}", path.display()))
}

/// A scalar as the text a flag would take: `"64KiB"`, `65536`, `1.5`.
struct Scalar;

impl Visitor<'_> for Scalar {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string or a number")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<String, E> {
        Ok(v.to_string())
    }
}

fn scalar<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    d.deserialize_any(Scalar)
}

fn parsed<'de, D: Deserializer<'de>, T>(
    d: D,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Result<T, D::Error> {
    parse(&scalar(d)?).map_err(de::Error::custom)
}

/// Anything with a `FromStr`: time formats, templates, endpoints.
pub fn text<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr,
    T::Err: fmt::Display,
{
    parsed(d, |s| s.parse::<T>().map_err(|e| e.to_string()))
}

pub fn optional_text<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr,
    T::Err: fmt::Display,
{
    text(d).map(Some)
}

pub fn size<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    parsed(d, parse_size)
}

pub fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<std::time::Duration, D::Error> {
    parsed(d, parse_duration)
}

pub fn networks<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
    parsed(d, parse_networks)
}

pub fn threads<'de, D: Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    parsed(d, parse_threads).map(Some)
}

/// `true`, or the text `"true"` as a flag's value would be.
pub fn boolean<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    struct Boolean;
    impl Visitor<'_> for Boolean {
        type Value = bool;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("true or false")
        }
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<bool, E> {
            Ok(v)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
            v.parse().map_err(|_| E::custom("expected true or false"))
        }
    }
    d.deserialize_any(Boolean)
}

/// One listener URL or a list of them.
pub fn endpoints<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Endpoint>, D::Error> {
    struct Endpoints;
    impl<'de> Visitor<'de> for Endpoints {
        type Value = Vec<Endpoint>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a listener URL or a list of them")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            v.parse().map(|e| vec![e]).map_err(E::custom)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut all = Vec::new();
            while let Some(url) = seq.next_element::<String>()? {
                all.push(url.parse().map_err(de::Error::custom)?);
            }
            Ok(all)
        }
    }
    d.deserialize_any(Endpoints)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_text(text: &str) -> Result<Settings, String> {
        let path = std::env::temp_dir().join(format!(
            "tsecho-settings-{}-{}.toml",
            std::process::id(),
            text.len()
        ));
        std::fs::write(&path, text).map_err(|e| e.to_string())?;
        let loaded = load(&path)
            .map(|(s, _)| s)
            .map_err(|e| e.to_string().replace(&path.display().to_string(), "FILE"));
        let _ = std::fs::remove_file(&path);
        loaded
    }

    #[test]
    fn values_take_the_flags_notation() {
        let s = load_text("listen = \"udp://:7\"\nmax-line = \"1KiB\"\nchunk = 512\nutc = true\nlog-level = \"debug\"\n")
            .unwrap();
        assert_eq!(s.listen.len(), 1);
        assert_eq!((s.max_line, s.chunk, s.utc), (1024, 512, true));
        assert_eq!(s.log_level, "debug");
        assert_eq!(s.idle_timeout, Settings::default().idle_timeout);
    }

    #[test]
    fn mistakes_name_the_file_line_and_setting() {
        let cases = [
            (
                "\nlisten = 21680\n",
                "FILE:2: listen: invalid type: integer `21680`",
            ),
            (
                "utc = true\n[metrics]\nport = 1\n",
                "FILE:2: metrics: invalid type",
            ),
            (
                "max-connections = -5\n",
                "FILE:1: max-connections: invalid value: integer `-5`",
            ),
            (
                "format = [\"unix\", \"rfc3339\"]\n",
                "FILE:1: format: invalid type: sequence",
            ),
            ("threads = 0\n", "FILE:1: threads: must be at least 1"),
            ("x = 1\n", "FILE:1: unknown setting \"x\" (valid: listen, "),
        ];
        for (text, expected) in cases {
            let err = load_text(text).unwrap_err();
            assert!(err.starts_with(expected), "{text:?}: {err}");
        }
    }
}

//! Who may use a Unix socket file: `unix:///run/tsecho.sock?mode=0660&group=tsecho`,
//! as systemd's SocketMode=, SocketUser= and SocketGroup= set it. Without
//! them the file takes its mode from the umask and belongs to the server's
//! user, as before.

use std::fmt;

/// The query parameters of a Unix socket path.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct SocketFile {
    /// Permission bits, at most 0o777.
    pub mode: Option<u32>,
    /// A user name or numeric id.
    pub owner: Option<String>,
    /// A group name or numeric id.
    pub group: Option<String>,
}

impl SocketFile {
    pub fn is_default(&self) -> bool {
        *self == SocketFile::default()
    }

    /// Reads `mode=0660&owner=tsecho&group=tsecho`; any other key, or a
    /// key given twice, is an error naming it.
    pub fn parse(query: &str) -> Result<Self, String> {
        let mut file = SocketFile::default();
        for pair in query.split('&') {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| format!("query parameter {pair:?} is not KEY=VALUE"))?;
            if value.is_empty() {
                return Err(format!("query parameter {key:?} has no value"));
            }
            let slot_taken = match key {
                "mode" => file.mode.replace(parse_mode(value)?).is_some(),
                "owner" => file.owner.replace(checked_name(key, value)?).is_some(),
                "group" => file.group.replace(checked_name(key, value)?).is_some(),
                _ => {
                    return Err(format!(
                        "unknown query parameter {key:?} (valid on unix sockets: mode, owner, group)"
                    ));
                }
            };
            if slot_taken {
                return Err(format!("query parameter {key:?} is given twice"));
            }
        }
        Ok(file)
    }
}

/// Octal, as chmod takes it: `0660` or `660`.
fn parse_mode(value: &str) -> Result<u32, String> {
    u32::from_str_radix(value, 8)
        .ok()
        .filter(|mode| *mode <= 0o777)
        .ok_or_else(|| format!("mode {value:?} is not octal permission bits such as 0660"))
}

/// User and group names as useradd accepts them, or numeric ids: nothing
/// that could break the URL they are written back into.
fn checked_name(key: &str, value: &str) -> Result<String, String> {
    let fine = value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '$'));
    if fine {
        Ok(value.to_string())
    } else {
        Err(format!("{key} {value:?} is not a user or group name"))
    }
}

impl fmt::Display for SocketFile {
    /// `?mode=0660&group=tsecho`, or nothing.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut separator = '?';
        let mut next = |f: &mut fmt::Formatter<'_>| {
            let s = separator;
            separator = '&';
            write!(f, "{s}")
        };
        if let Some(mode) = self.mode {
            next(f)?;
            write!(f, "mode={mode:04o}")?;
        }
        if let Some(owner) = &self.owner {
            next(f)?;
            write!(f, "owner={owner}")?;
        }
        if let Some(group) = &self.group {
            next(f)?;
            write!(f, "group={group}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_owner_and_group_round_trip() {
        let file = SocketFile::parse("group=tsecho&mode=660&owner=1000").unwrap();
        assert_eq!(file.mode, Some(0o660));
        assert_eq!(file.to_string(), "?mode=0660&owner=1000&group=tsecho");
        assert_eq!(SocketFile::default().to_string(), "");
    }

    #[test]
    fn bad_parameters_name_the_key() {
        for (query, named) in [
            ("mode=0999", "mode"),
            ("mode=1777", "mode"),
            ("colour=red", "colour"),
            ("mode=0600&mode=0660", "mode"),
            ("group=", "group"),
            ("owner=a/b", "owner"),
            ("mode", "mode"),
        ] {
            let err = SocketFile::parse(query).unwrap_err();
            assert!(err.contains(named), "{query}: {err}");
        }
    }
}

//! Who may use a Unix socket file: `unix:///run/tsecho.sock?mode=0660&group=tsecho`,
//! as systemd's SocketMode=, SocketUser= and SocketGroup= set it. Without
//! them the file takes its mode from the umask and belongs to the server's
//! user, as before.

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

    /// Sets one of `mode`, `owner` and `group`; Ok(false) when the key is
    /// none of them. A key given twice is an error.
    pub fn set(&mut self, key: &str, value: &str) -> Result<bool, String> {
        let slot_taken = match key {
            "mode" => self.mode.replace(parse_mode(value)?).is_some(),
            "owner" => self.owner.replace(checked_name(key, value)?).is_some(),
            "group" => self.group.replace(checked_name(key, value)?).is_some(),
            _ => return Ok(false),
        };
        if slot_taken {
            return Err(format!("query parameter {key:?} is given twice"));
        }
        Ok(true)
    }

    /// The set keys with their values, as written in a URL.
    pub fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut pairs = Vec::new();
        if let Some(mode) = self.mode {
            pairs.push(("mode", format!("{mode:04o}")));
        }
        if let Some(owner) = &self.owner {
            pairs.push(("owner", owner.clone()));
        }
        if let Some(group) = &self.group {
            pairs.push(("group", group.clone()));
        }
        pairs
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(query: &str) -> Result<SocketFile, String> {
        let mut file = SocketFile::default();
        for pair in query.split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            if value.is_empty() {
                return Err(format!("{key} has no value"));
            }
            if !file.set(key, value)? {
                return Err(format!("unknown {key}"));
            }
        }
        Ok(file)
    }

    #[test]
    fn mode_owner_and_group_round_trip() {
        let file = parse("group=tsecho&mode=660&owner=1000").unwrap();
        assert_eq!(file.mode, Some(0o660));
        let pairs = file.pairs();
        assert_eq!(pairs[0], ("mode", "0660".to_string()));
        assert_eq!(pairs[2], ("group", "tsecho".to_string()));
        assert!(SocketFile::default().pairs().is_empty());
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
            let err = parse(query).unwrap_err();
            assert!(err.contains(named), "{query}: {err}");
        }
    }
}

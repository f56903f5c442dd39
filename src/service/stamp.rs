//! The stamp service: `[` + time + `] ` + the message, bytes unchanged,
//! or the message laid out by a `--reply-template`.

use std::sync::Arc;
use std::time::SystemTime;

use crate::clock::Stamper;

/// The stamp service's port, on TCP and UDP: tsecho's default.
pub const PORT: u16 = 21567;

/// Appends the reply to `message`: `bracketed` is the time already in its
/// brackets, `[time] ` (`Stamper::bracketed`).
pub fn write_reply(bracketed: &[u8], message: &[u8], out: &mut Vec<u8>) {
    out.reserve(bracketed.len() + message.len());
    out.extend_from_slice(bracketed);
    out.extend_from_slice(message);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_keeps_crlf_and_binary_bytes() {
        let mut out = Vec::new();
        write_reply(b"[Wed Nov 25 09:05:03 2026] ", b"a\0\xff\r\n", &mut out);
        assert_eq!(out, b"[Wed Nov 25 09:05:03 2026] a\0\xff\r\n");
    }

    #[test]
    fn empty_message_still_gets_its_stamp() {
        let mut out = Vec::new();
        write_reply(b"[1] ", b"", &mut out);
        assert_eq!(out, b"[1] ");
    }
}

/// A `--reply-template` such as `{host} [{time}] {msg}`, parsed once at
/// start so that each reply only copies pieces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(Vec<u8>),
    Field(Field),
}

/// What a template can show, each written `{name}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Time,
    Msg,
    Peer,
    Local,
    Host,
    TlsVersion,
    TlsCipher,
    Sni,
    ClientCert,
}

const FIELDS: [(&str, Field); 9] = [
    ("time", Field::Time),
    ("msg", Field::Msg),
    ("peer", Field::Peer),
    ("local", Field::Local),
    ("host", Field::Host),
    ("tls_version", Field::TlsVersion),
    ("tls_cipher", Field::TlsCipher),
    ("sni", Field::Sni),
    ("client_cert", Field::ClientCert),
];

impl Field {
    fn name(self) -> &'static str {
        FIELDS
            .iter()
            .find(|(_, f)| *f == self)
            .map_or("", |(name, _)| name)
    }
}

/// Where a reply goes and who sends it, for `{peer}`, `{local}`, `{host}`,
/// and the TLS session's fields (empty on plain connections).
#[derive(Debug, Clone, Default)]
pub struct Origin {
    pub peer: String,
    pub local: String,
    pub host: std::sync::Arc<str>,
    pub tls: crate::tls::SessionInfo,
}

impl std::str::FromStr for Template {
    type Err = crate::error::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = |reason: String| {
            crate::error::Error::Usage(format!("invalid --reply-template {s:?}: {reason}"))
        };
        let mut parts = Vec::new();
        let mut text = Vec::new();
        let mut rest = s;
        while let Some(at) = rest.find(['{', '}']) {
            text.extend_from_slice(&rest.as_bytes()[..at]);
            let tail = &rest[at..];
            if tail.starts_with("{{") || tail.starts_with("}}") {
                text.push(tail.as_bytes()[0]);
                rest = &tail[2..];
                continue;
            }
            if tail.starts_with('}') {
                return Err(invalid("unmatched '}' (write '}}' for a brace)".into()));
            }
            let close = tail
                .find('}')
                .ok_or_else(|| invalid("unclosed '{'".into()))?;
            let name = &tail[1..close];
            let Some((_, field)) = FIELDS.iter().find(|(n, _)| *n == name) else {
                let valid: Vec<&str> = FIELDS.iter().map(|(n, _)| *n).collect();
                return Err(invalid(format!(
                    "unknown field {{{name}}} (valid: {})",
                    valid.join(", ")
                )));
            };
            if !text.is_empty() {
                parts.push(Part::Text(std::mem::take(&mut text)));
            }
            parts.push(Part::Field(*field));
            rest = &tail[close + 1..];
        }
        text.extend_from_slice(rest.as_bytes());
        if !text.is_empty() {
            parts.push(Part::Text(text));
        }
        Ok(Template { parts })
    }
}

impl std::fmt::Display for Template {
    /// The template as written, braces doubled again.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for part in &self.parts {
            match part {
                Part::Text(text) => {
                    let text = String::from_utf8_lossy(text);
                    f.write_str(&text.replace('{', "{{").replace('}', "}}"))?
                }
                Part::Field(field) => write!(f, "{{{}}}", field.name())?,
            }
        }
        Ok(())
    }
}

impl Template {
    /// Whether any field but `{time}` and `{msg}` appears, so connections
    /// know to keep who they are.
    pub fn needs_origin(&self) -> bool {
        self.parts
            .iter()
            .any(|p| matches!(p, Part::Field(f) if !matches!(f, Field::Time | Field::Msg)))
    }

    /// Out of line, so that `StampWriter::write` stays small enough to be
    /// inlined into the reply loop: since the TLS fields, the plain
    /// `[time] msg` path paid a call per reply for it (callgrind).
    #[inline(never)]
    pub fn write(&self, time: &[u8], message: &[u8], origin: &Origin, out: &mut Vec<u8>) {
        for part in &self.parts {
            let bytes: &[u8] = match part {
                Part::Text(text) => text,
                Part::Field(field) => match field {
                    Field::Time => time,
                    Field::Msg => message,
                    Field::Peer => origin.peer.as_bytes(),
                    Field::Local => origin.local.as_bytes(),
                    Field::Host => origin.host.as_bytes(),
                    Field::TlsVersion => origin.tls.version.as_bytes(),
                    Field::TlsCipher => origin.tls.cipher.as_bytes(),
                    Field::Sni => origin.tls.sni.as_bytes(),
                    Field::ClientCert => origin.tls.client_cert.as_bytes(),
                },
            };
            out.extend_from_slice(bytes);
        }
    }
}

static NO_ORIGIN: std::sync::LazyLock<Origin> = std::sync::LazyLock::new(Origin::default);

/// Writes stamp replies for one connection or datagram socket: the clock's
/// text for the arrival time, laid out as `[time] msg` or by the template.
#[derive(Debug)]
pub struct StampWriter {
    stamper: Stamper,
    template: Option<Arc<Template>>,
    /// Who the reply goes to, for templates that show it; boxed, so that
    /// connections without such a template pay one pointer.
    origin: Option<Box<Origin>>,
}

impl StampWriter {
    pub fn new(
        stamper: Stamper,
        template: Option<Arc<Template>>,
        origin: Option<Box<Origin>>,
    ) -> Self {
        StampWriter {
            stamper,
            template,
            origin,
        }
    }

    /// A new time style and template; the origin stays.
    pub fn restyle(
        &mut self,
        style: Arc<crate::clock::TimeStyle>,
        template: Option<Arc<Template>>,
    ) {
        self.stamper = Stamper::new(style);
        self.template = template;
    }

    pub fn stamper(&mut self) -> &mut Stamper {
        &mut self.stamper
    }

    pub fn has_template(&self) -> bool {
        self.template.is_some()
    }

    /// The origin a datagram loop rewrites per peer.
    pub fn origin_mut(&mut self) -> &mut Origin {
        self.origin.get_or_insert_with(Box::default)
    }

    /// Appends the reply to `message`, received at `now`. Inlined into the
    /// reply loop (see `Template::write`).
    #[inline]
    pub fn write(&mut self, now: SystemTime, message: &[u8], out: &mut Vec<u8>) {
        match &self.template {
            None => write_reply(self.stamper.bracketed(now), message, out),
            Some(template) => {
                let origin = self.origin.as_deref().unwrap_or(&NO_ORIGIN);
                template.write(self.stamper.text(now), message, origin, out)
            }
        }
    }
}

#[cfg(test)]
mod template_tests {
    use super::*;

    #[test]
    fn template_fields_braces_and_errors() {
        let t: Template = "{host} {{{peer}}} [{time}] {msg}".parse().unwrap();
        let origin = Origin {
            peer: "192.0.2.1:5".into(),
            local: "x".into(),
            host: "t1".into(),
            ..Origin::default()
        };
        let mut out = Vec::new();
        t.write(b"T", b"hi\n", &origin, &mut out);
        assert_eq!(out, b"t1 {192.0.2.1:5} [T] hi\n");
        assert!(t.needs_origin());
        let mut plain = Vec::new();
        "[{time}] {msg}"
            .parse::<Template>()
            .unwrap()
            .write(b"T", b"m", &origin, &mut plain);
        let mut classic = Vec::new();
        write_reply(b"[T] ", b"m", &mut classic);
        assert_eq!(plain, classic);
        assert_eq!(t.to_string(), "{host} {{{peer}}} [{time}] {msg}");
        for bad in ["{nope}", "{time", "a}b"] {
            assert!(bad.parse::<Template>().is_err(), "{bad}");
        }
    }
}

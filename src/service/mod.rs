//! What each service answers, as pure functions of (request, time).
//!
//! The connection and datagram loops own the sockets; the services here only
//! turn bytes and an arrival time into reply bytes, so they are tested with a
//! fixed clock and no sockets at all. Each service's file holds both its
//! stream and its datagram behaviour; the matches here only dispatch, and
//! name every service, so a new one cannot silently behave like another.

pub mod chargen;
pub mod daytime;
pub mod discard;
pub mod echo;
pub mod stamp;
pub mod time;

use std::fmt;
use std::str::FromStr;
use std::time::SystemTime;

use crate::clock::Stamper;
use crate::error::Error;
use stamp::StampWriter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ServiceKind {
    Stamp,
    Echo,
    Discard,
    Chargen,
    Daytime,
    Time,
}

/// What `tsecho services` prints about a service.
pub struct ServiceInfo {
    pub kind: ServiceKind,
    pub rfc: Option<u16>,
    pub port: u16,
    pub on_stream: &'static str,
    pub on_datagram: &'static str,
}

pub const SERVICES: [ServiceInfo; 6] = [
    ServiceInfo {
        kind: ServiceKind::Stamp,
        rfc: None,
        port: stamp::PORT,
        on_stream: "each line answered as [time] line, keeping its own newline",
        on_datagram: "each datagram answered as [time] datagram",
    },
    ServiceInfo {
        kind: ServiceKind::Echo,
        rfc: Some(862),
        port: 7,
        on_stream: "every byte sent back as received",
        on_datagram: "the datagram sent back",
    },
    ServiceInfo {
        kind: ServiceKind::Discard,
        rfc: Some(863),
        port: 9,
        on_stream: "everything read and dropped",
        on_datagram: "dropped, no reply",
    },
    ServiceInfo {
        kind: ServiceKind::Chargen,
        rfc: Some(864),
        port: 19,
        on_stream: "72-character lines of the rotating ASCII pattern until the client closes",
        on_datagram: "one datagram of pattern: as long as the request, at least one line, at most 512 bytes",
    },
    ServiceInfo {
        kind: ServiceKind::Daytime,
        rfc: Some(867),
        port: 13,
        on_stream: "one line of the time with CRLF, then close",
        on_datagram: "one datagram holding the time with CRLF",
    },
    ServiceInfo {
        kind: ServiceKind::Time,
        rfc: Some(868),
        port: 37,
        on_stream: "4 bytes, big-endian seconds since 1900 (mod 2^32), then close",
        on_datagram: "the same 4 bytes for any datagram",
    },
];

impl ServiceKind {
    pub fn name(self) -> &'static str {
        match self {
            ServiceKind::Stamp => "stamp",
            ServiceKind::Echo => "echo",
            ServiceKind::Discard => "discard",
            ServiceKind::Chargen => "chargen",
            ServiceKind::Daytime => "daytime",
            ServiceKind::Time => "time",
        }
    }

    /// What the service does with a byte stream.
    pub fn stream_role(self) -> StreamRole {
        match self {
            ServiceKind::Stamp => StreamRole::Answer(Answering::Stamp),
            ServiceKind::Echo => StreamRole::Answer(Answering::Echo),
            ServiceKind::Discard => StreamRole::Answer(Answering::Discard),
            ServiceKind::Daytime => StreamRole::Greet(Greeting::Daytime),
            ServiceKind::Time => StreamRole::Greet(Greeting::Time),
            ServiceKind::Chargen => StreamRole::Generate,
        }
    }
}

/// How a service uses a byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamRole {
    /// Replies to what the client sends, as it arrives.
    Answer(Answering),
    /// One reply as the connection opens, then close.
    Greet(Greeting),
    /// Sends without end, whatever arrives (chargen).
    Generate,
}

/// What a request-driven service gives what it receives: stamp answers
/// each message (cut by the framing), echo and discard take bytes as they
/// come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answering {
    Stamp,
    Echo,
    Discard,
}

/// The one reply of daytime and time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Greeting {
    Daytime,
    Time,
}

impl Greeting {
    pub fn write(self, now: SystemTime, stamper: &mut Stamper, out: &mut Vec<u8>) {
        match self {
            Greeting::Daytime => daytime::write_line(stamper, now, out),
            Greeting::Time => out.extend_from_slice(&time::rfc868_bytes(now)),
        }
    }
}

impl fmt::Display for ServiceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ServiceKind {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        SERVICES
            .iter()
            .map(|info| info.kind)
            .find(|kind| kind.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = SERVICES.iter().map(|i| i.kind.name()).collect();
                Error::Usage(format!(
                    "unknown service {s:?} (valid: {})",
                    names.join(", ")
                ))
            })
    }
}

/// Writes the reply to one datagram into `out`; returns false when the
/// service sends none (discard).
pub fn datagram_reply(
    kind: ServiceKind,
    request: &[u8],
    arrival: SystemTime,
    stamp: &mut StampWriter,
    out: &mut Vec<u8>,
) -> bool {
    match kind {
        ServiceKind::Stamp => stamp.write(arrival, request, out),
        ServiceKind::Echo => echo::datagram(request, out),
        ServiceKind::Discard => return false,
        ServiceKind::Chargen => out.extend_from_slice(chargen::datagram(request.len())),
        ServiceKind::Daytime => Greeting::Daytime.write(arrival, stamp.stamper(), out),
        ServiceKind::Time => Greeting::Time.write(arrival, stamp.stamper(), out),
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back() {
        for info in &SERVICES {
            assert_eq!(info.kind.name().parse::<ServiceKind>().unwrap(), info.kind);
        }
        let err = "gopher".parse::<ServiceKind>().unwrap_err().to_string();
        assert!(
            err.contains("stamp, echo, discard, chargen, daytime, time"),
            "{err}"
        );
    }
}

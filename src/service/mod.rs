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
pub mod rfc8762;
pub mod sockperf;
pub mod stamp;
pub mod time;

use std::fmt;
use std::str::FromStr;
use std::time::SystemTime;

use crate::clock::{StampClock, Stamper};
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
    Rfc8762,
    Sockperf,
}

/// What `tsecho services` prints about a service.
pub struct ServiceInfo {
    pub kind: ServiceKind,
    pub rfc: Option<u16>,
    pub port: u16,
    /// None for a datagram-only service.
    pub on_stream: Option<&'static str>,
    pub on_datagram: &'static str,
    /// Served by `--inetd`, on TCP and UDP (or UDP only).
    pub inetd: bool,
}

pub const SERVICES: [ServiceInfo; 8] = [
    ServiceInfo {
        kind: ServiceKind::Stamp,
        rfc: None,
        port: stamp::PORT,
        on_stream: Some("each line answered as [time] line, keeping its own newline"),
        on_datagram: "each datagram answered as [time] datagram",
        inetd: true,
    },
    ServiceInfo {
        kind: ServiceKind::Echo,
        rfc: Some(862),
        port: 7,
        on_stream: Some("every byte sent back as received"),
        on_datagram: "the datagram sent back",
        inetd: true,
    },
    ServiceInfo {
        kind: ServiceKind::Discard,
        rfc: Some(863),
        port: 9,
        on_stream: Some("everything read and dropped"),
        on_datagram: "dropped, no reply",
        inetd: true,
    },
    ServiceInfo {
        kind: ServiceKind::Chargen,
        rfc: Some(864),
        port: 19,
        on_stream: Some("72-character lines of the rotating ASCII pattern until the client closes"),
        on_datagram: "one datagram of pattern: as long as the request, at least one line, at most 512 bytes",
        inetd: true,
    },
    ServiceInfo {
        kind: ServiceKind::Daytime,
        rfc: Some(867),
        port: 13,
        on_stream: Some("one line of the time with CRLF, then close"),
        on_datagram: "one datagram holding the time with CRLF",
        inetd: true,
    },
    ServiceInfo {
        kind: ServiceKind::Time,
        rfc: Some(868),
        port: 37,
        on_stream: Some("4 bytes, big-endian seconds since 1900 (mod 2^32), then close"),
        on_datagram: "the same 4 bytes for any datagram",
        inetd: true,
    },
    ServiceInfo {
        kind: ServiceKind::Rfc8762,
        rfc: Some(8762),
        port: rfc8762::PORT,
        on_stream: None,
        on_datagram: "STAMP reflector: the test packet reflected with receive and transmit times (?mode=stateful: own sequence numbers)",
        inetd: true,
    },
    ServiceInfo {
        kind: ServiceKind::Sockperf,
        rfc: None,
        port: sockperf::PORT,
        on_stream: Some("sockperf messages framed by their header; pong requests sent back"),
        on_datagram: "a sockperf pong request sent back, with the client flag cleared",
        inetd: false,
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
            ServiceKind::Rfc8762 => "rfc8762",
            ServiceKind::Sockperf => "sockperf",
        }
    }

    pub fn info(self) -> &'static ServiceInfo {
        let index = match self {
            ServiceKind::Stamp => 0,
            ServiceKind::Echo => 1,
            ServiceKind::Discard => 2,
            ServiceKind::Chargen => 3,
            ServiceKind::Daytime => 4,
            ServiceKind::Time => 5,
            ServiceKind::Rfc8762 => 6,
            ServiceKind::Sockperf => 7,
        };
        &SERVICES[index]
    }

    /// Whether its replies show when a message arrived: only then is the
    /// kernel asked to stamp what the socket receives (a cost per message
    /// that echo, discard, chargen and sockperf would pay for nothing).
    pub fn shows_arrival_time(self) -> bool {
        match self {
            ServiceKind::Stamp
            | ServiceKind::Daytime
            | ServiceKind::Time
            | ServiceKind::Rfc8762 => true,
            ServiceKind::Echo
            | ServiceKind::Discard
            | ServiceKind::Chargen
            | ServiceKind::Sockperf => false,
        }
    }

    /// Whether its messages are stamped with the kernel's receive time
    /// under `clock`: only where the replies show a time.
    pub fn takes_kernel_time(self, clock: StampClock) -> bool {
        clock == StampClock::Kernel && self.shows_arrival_time()
    }

    /// What the service does with a byte stream; None for a datagram-only
    /// service (a URL that puts it on a stream is refused when parsed).
    pub fn stream_role(self) -> Option<StreamRole> {
        Some(match self {
            ServiceKind::Stamp => StreamRole::Answer(Answering::Stamp),
            ServiceKind::Echo => StreamRole::Answer(Answering::Echo),
            ServiceKind::Discard => StreamRole::Answer(Answering::Discard),
            ServiceKind::Sockperf => StreamRole::Answer(Answering::Sockperf),
            ServiceKind::Daytime => StreamRole::Greet(Greeting::Daytime),
            ServiceKind::Time => StreamRole::Greet(Greeting::Time),
            ServiceKind::Chargen => StreamRole::Generate,
            ServiceKind::Rfc8762 => return None,
        })
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
    Sockperf,
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

/// What came with a datagram besides its bytes.
#[derive(Debug, Clone, Copy)]
pub struct DatagramMeta {
    /// When it arrived: the kernel's time where the socket gives it.
    pub at: SystemTime,
    /// The TTL or hop limit it arrived with, where the socket reports it.
    pub ttl: Option<u8>,
    /// STAMP's stateful mode: the reflector's sequence number for it.
    pub session_sequence: Option<u32>,
    /// The local clock's quality, as STAMP states it.
    pub clock: rfc8762::ClockQuality,
}

/// Writes the reply to one datagram into `out`; returns false when the
/// service sends none (discard, a sockperf message that asks for none, a
/// packet too short for STAMP).
pub fn datagram_reply(
    kind: ServiceKind,
    request: &[u8],
    meta: DatagramMeta,
    stamp: &mut StampWriter,
    out: &mut Vec<u8>,
) -> bool {
    let arrival = meta.at;
    match kind {
        ServiceKind::Rfc8762 => {
            let received = rfc8762::Received {
                at: meta.at,
                ttl: meta.ttl,
                sequence: meta.session_sequence,
            };
            return rfc8762::reflect(request, received, meta.clock, out);
        }
        ServiceKind::Sockperf => return sockperf::datagram(request, out),
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
            assert_eq!(info.kind.info().kind, info.kind);
        }
        let err = "gopher".parse::<ServiceKind>().unwrap_err().to_string();
        assert!(
            err.contains("stamp, echo, discard, chargen, daytime, time, rfc8762, sockperf"),
            "{err}"
        );
    }
}

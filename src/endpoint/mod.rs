//! Listener and client addresses written as URLs:
//! `tcp://HOST:PORT`, `tls://HOST:PORT`, `udp://HOST:PORT`, `unix:///path`,
//! `unixgram:///path`, `unix://@abstract`, each optionally prefixed by a service (`echo+tcp://:7`).
//!
//! An empty host means every interface, so `tcp://:7` reads like inetd.conf.
//! A Unix socket path may end in `?mode=0660&owner=U&group=G` (`socket_file.rs`),
//! and any listener in faults to inject, `?delay=20ms&drop=1%` (`fault::spec`).

mod socket_file;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use crate::error::Error;
use crate::fault::{self, Faults};
use crate::service::ServiceKind;
pub use socket_file::SocketFile;

/// How bytes travel: a byte stream or datagrams, over IP or a Unix socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Tcp,
    /// TLS 1.2/1.3 over TCP.
    Tls,
    Udp,
    Unix,
    UnixGram,
}

impl Transport {
    pub const ALL: [Transport; 5] = [
        Transport::Tcp,
        Transport::Tls,
        Transport::Udp,
        Transport::Unix,
        Transport::UnixGram,
    ];

    pub fn scheme(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
            Transport::Udp => "udp",
            Transport::Unix => "unix",
            Transport::UnixGram => "unixgram",
        }
    }

    /// Every transport named, so that a new one is decided on, not
    /// silently taken for a stream or a datagram socket.
    pub fn is_datagram(self) -> bool {
        match self {
            Transport::Udp | Transport::UnixGram => true,
            Transport::Tcp | Transport::Tls | Transport::Unix => false,
        }
    }

    pub fn is_inet(self) -> bool {
        match self {
            Transport::Tcp | Transport::Tls | Transport::Udp => true,
            Transport::Unix | Transport::UnixGram => false,
        }
    }
}

/// Where an endpoint lives.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Address {
    /// `host` is empty for "all interfaces"; IPv6 literals are kept without brackets.
    Inet {
        host: String,
        port: u16,
    },
    Path(PathBuf),
    /// A Linux abstract socket name, written `@name`.
    Abstract(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    pub service: ServiceKind,
    pub transport: Transport,
    pub address: Address,
    /// Connections start with a PROXY protocol header (`proxy+tcp://`,
    /// `proxy+tls://`, where it comes before the handshake).
    pub proxy: bool,
    /// The mode, owner and group of a Unix socket file.
    pub socket_file: SocketFile,
    /// Delays, losses and the like this listener injects.
    pub faults: Faults,
    /// STAMP's stateful reflector (`rfc8762+udp://:862?mode=stateful`).
    pub stateful: bool,
}

impl Endpoint {
    pub fn new(service: ServiceKind, transport: Transport, address: Address) -> Self {
        Endpoint {
            service,
            transport,
            address,
            proxy: false,
            socket_file: SocketFile::default(),
            faults: Faults::default(),
            stateful: false,
        }
    }
}

/// The addresses a host name stands for: a literal IP at once, a name
/// through the system's resolver. An unknown name is an `UnknownHost`.
pub async fn lookup(host: &str, port: u16) -> std::io::Result<Vec<std::net::SocketAddr>> {
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Ok(vec![std::net::SocketAddr::new(ip, port)]);
    }
    let unknown = || {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            crate::error::UnknownHost { host: host.into() },
        )
    };
    let addrs: Vec<_> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|_| unknown())?
        .collect();
    if addrs.is_empty() {
        return Err(unknown());
    }
    Ok(addrs)
}

impl FromStr for Endpoint {
    type Err = Error;

    fn from_str(input: &str) -> Result<Self, Error> {
        let invalid = |reason: String| Error::Endpoint {
            input: input.to_string(),
            reason,
        };
        let (scheme, rest) = input
            .split_once("://")
            .ok_or_else(|| invalid("expected SCHEME://ADDRESS, e.g. tcp://[::]:21567".into()))?;
        // SERVICE+proxy+TRANSPORT, each prefix optional.
        let mut prefixes: Vec<&str> = scheme.split('+').collect();
        let transport = prefixes.pop().unwrap_or(scheme);
        let proxy = prefixes.last() == Some(&"proxy");
        if proxy {
            prefixes.pop();
        }
        let service = match prefixes.as_slice() {
            [] => ServiceKind::Stamp,
            [service] => service.parse::<ServiceKind>()?,
            _ => return Err(invalid("expected at most SERVICE+proxy+TRANSPORT".into())),
        };
        let transport = Transport::ALL
            .into_iter()
            .find(|t| t.scheme() == transport)
            .ok_or_else(|| {
                invalid(format!(
                    "unknown transport {transport:?} (valid: tcp, tls, udp, unix, unixgram)"
                ))
            })?;
        if proxy && !matches!(transport, Transport::Tcp | Transport::Tls) {
            return Err(invalid(
                "the PROXY protocol works on tcp:// and tls:// listeners only".into(),
            ));
        }
        let (rest, query) = match rest.split_once('?') {
            Some((rest, query)) => (rest, Some(query)),
            None => (rest, None),
        };
        let address = if transport.is_inet() {
            parse_inet(rest).map_err(invalid)?
        } else {
            parse_unix(rest).map_err(invalid)?
        };
        if service == ServiceKind::Rfc8762 && transport != Transport::Udp {
            return Err(invalid(format!(
                "{service} (STAMP) works over UDP only: {service}+udp://HOST:PORT"
            )));
        }
        let mut endpoint = Endpoint {
            proxy,
            ..Endpoint::new(service, transport, address)
        };
        if let Some(query) = query {
            parse_query(query, &mut endpoint).map_err(invalid)?;
        }
        Ok(endpoint)
    }
}

/// `mode=0660&delay=20ms`: the socket file's keys (on Unix socket paths),
/// STAMP's `mode=stateful`, and the faults (on any listener), each key once.
fn parse_query(query: &str, endpoint: &mut Endpoint) -> Result<(), String> {
    let (service, transport) = (endpoint.service, endpoint.transport);
    let (file, faults) = (&mut endpoint.socket_file, &mut endpoint.faults);
    for pair in query.split('&') {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| format!("query parameter {pair:?} is not KEY=VALUE"))?;
        if value.is_empty() {
            return Err(format!("query parameter {key:?} has no value"));
        }
        if service == ServiceKind::Rfc8762 && key == "mode" {
            endpoint.stateful = match value {
                "stateful" => true,
                "stateless" => false,
                _ => return Err(format!("mode {value:?}: expected stateless or stateful")),
            };
        } else if file.set(key, value)? {
            if !matches!(endpoint.address, Address::Path(_)) {
                return Err(format!("{key} is for Unix socket paths only"));
            }
        } else if !faults.set(key, value)? {
            return Err(format!(
                "unknown query parameter {key:?} (valid: {}; on Unix socket paths also mode, owner, group)",
                fault::spec::KEYS.join(", ")
            ));
        }
    }
    faults.check(transport.is_datagram())?;
    let chargen_stream = service == ServiceKind::Chargen && !transport.is_datagram();
    if chargen_stream && (faults.reset.is_some() || faults.stall.is_some()) {
        return Err(
            "reset and stall do not apply to chargen on a stream: it sends no \
                    replies to reset and reads nothing to stall (it takes delay, bandwidth \
                    and close-after)"
                .into(),
        );
    }
    Ok(())
}

fn parse_inet(rest: &str) -> Result<Address, String> {
    let (host, port) = rest
        .rsplit_once(':')
        .ok_or_else(|| "expected HOST:PORT, e.g. 127.0.0.1:21567 or :21567".to_string())?;
    let port = port
        .parse::<u16>()
        .map_err(|_| format!("port {port:?} is not a number from 0 to 65535"))?;
    let host = match host.strip_prefix('[') {
        Some(inner) => inner
            .strip_suffix(']')
            .ok_or_else(|| format!("unclosed bracket in host {host:?}"))?,
        None if host.contains(':') => {
            return Err(format!(
                "IPv6 address {host:?} must be in brackets: [{host}]"
            ));
        }
        None => host,
    };
    if host.contains(['/', ' ', '[', ']']) {
        return Err(format!("host {host:?} is not a name or an IP address"));
    }
    Ok(Address::Inet {
        host: host.to_string(),
        port,
    })
}

fn parse_unix(rest: &str) -> Result<Address, String> {
    match rest.strip_prefix('@') {
        Some("") => Err("abstract socket name after @ is empty".into()),
        Some(name) => Ok(Address::Abstract(name.to_string())),
        None if rest.is_empty() => Err("socket path is empty".into()),
        None if rest.contains('\0') => Err("socket path contains a NUL byte".into()),
        None => Ok(Address::Path(PathBuf::from(rest))),
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Inet { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            Address::Inet { host, port } => write!(f, "{host}:{port}"),
            Address::Path(path) => write!(f, "{}", path.display()),
            Address::Abstract(name) => write!(f, "@{name}"),
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.service != ServiceKind::Stamp {
            write!(f, "{}+", self.service)?;
        }
        if self.proxy {
            f.write_str("proxy+")?;
        }
        write!(f, "{}://{}", self.transport.scheme(), self.address)?;
        let mut pairs = self.socket_file.pairs();
        if self.stateful {
            pairs.push(("mode", "stateful".to_string()));
        }
        pairs.extend(self.faults.pairs());
        for (i, (key, value)) in pairs.iter().enumerate() {
            let separator = if i == 0 { '?' } else { '&' };
            write!(f, "{separator}{key}={value}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;

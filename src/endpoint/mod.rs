//! Listener and client addresses written as URLs:
//! `tcp://HOST:PORT`, `tls://HOST:PORT`, `udp://HOST:PORT`, `unix:///path`,
//! `unixgram:///path`, `unix://@abstract`, each optionally prefixed by a service (`echo+tcp://:7`).
//!
//! An empty host means every interface, so `tcp://:7` reads like inetd.conf.
//! A Unix socket path may end in `?mode=0660&owner=U&group=G` (`socket_file.rs`).

mod socket_file;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use crate::error::Error;
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
}

impl Endpoint {
    pub fn new(service: ServiceKind, transport: Transport, address: Address) -> Self {
        Endpoint {
            service,
            transport,
            address,
            proxy: false,
            socket_file: SocketFile::default(),
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
        let socket_file = match (query, &address) {
            (None, _) => SocketFile::default(),
            (Some(query), Address::Path(_)) => SocketFile::parse(query).map_err(invalid)?,
            (Some(_), _) => {
                return Err(invalid(
                    "query parameters (mode, owner, group) are for Unix socket paths only".into(),
                ));
            }
        };
        Ok(Endpoint {
            proxy,
            socket_file,
            ..Endpoint::new(service, transport, address)
        })
    }
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
        write!(
            f,
            "{}://{}{}",
            self.transport.scheme(),
            self.address,
            self.socket_file
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(s: &str) -> Endpoint {
        s.parse().unwrap()
    }

    #[test]
    fn tcp_with_bracketed_ipv6() {
        let e = parse("tcp://[::1]:21567");
        assert_eq!(e.transport, Transport::Tcp);
        assert_eq!(
            e.address,
            Address::Inet {
                host: "::1".into(),
                port: 21567
            }
        );
        assert_eq!(e.service, ServiceKind::Stamp);
    }

    #[test]
    fn empty_host_means_all_interfaces() {
        let e = parse("udp://:0");
        assert_eq!(
            e.address,
            Address::Inet {
                host: String::new(),
                port: 0
            }
        );
    }

    #[test]
    fn unix_path_and_abstract_name() {
        assert_eq!(
            parse("unix:///run/t.sock").address,
            Address::Path("/run/t.sock".into())
        );
        assert_eq!(
            parse("unixgram://@tsecho").address,
            Address::Abstract("tsecho".into())
        );
    }

    #[test]
    fn service_prefix_selects_the_service() {
        let e = parse("daytime+udp://:13");
        assert_eq!(e.service, ServiceKind::Daytime);
        assert_eq!(e.transport, Transport::Udp);
    }

    #[test]
    fn bad_inputs_are_refused_with_a_reason() {
        for bad in [
            "tcp//x:1",
            "sctp://:1",
            "tcp://host",
            "tcp://:70000",
            "tcp://::1:80",
            "tcp://[::1:80",
            "unix://",
            "unix://@",
            "gopher+tcp://:70",
            "proxy+udp://:1",
            "echo+echo+tcp://:1",
            "tcp://:1?mode=0600",
            "unix://@name?mode=0600",
            "unix:///x?mode=9",
            "unix:///x?colour=red",
        ] {
            let err = bad.parse::<Endpoint>().unwrap_err();
            assert!(!err.to_string().is_empty(), "{bad}");
        }
    }

    fn any_endpoint() -> impl Strategy<Value = Endpoint> {
        let service = proptest::sample::select(
            crate::service::SERVICES
                .iter()
                .map(|i| i.kind)
                .collect::<Vec<_>>(),
        );
        let host = prop_oneof![
            Just(String::new()),
            any::<std::net::Ipv4Addr>().prop_map(|ip| ip.to_string()),
            any::<std::net::Ipv6Addr>().prop_map(|ip| ip.to_string()),
            "[a-z][a-z0-9-]{0,20}(\\.[a-z][a-z0-9-]{0,10}){0,2}",
        ];
        let inet = (
            proptest::sample::select(vec![Transport::Tcp, Transport::Tls, Transport::Udp]),
            host,
            any::<u16>(),
        )
            .prop_map(|(t, host, port)| (t, Address::Inet { host, port }));
        let unix = (
            proptest::sample::select(vec![Transport::Unix, Transport::UnixGram]),
            prop_oneof![
                "/[a-zA-Z0-9_./-]{1,60}".prop_map(|p| Address::Path(p.into())),
                "[a-zA-Z0-9_.-]{1,30}".prop_map(Address::Abstract),
            ],
        );
        let socket_file = (
            proptest::option::of(0u32..=0o777),
            proptest::option::of("[a-z_][a-z0-9_-]{0,15}"),
            proptest::option::of("[0-9]{1,5}"),
        )
            .prop_map(|(mode, owner, group)| SocketFile { mode, owner, group });
        (service, prop_oneof![inet, unix], any::<bool>(), socket_file).prop_map(
            |(s, (t, a), proxy, file)| Endpoint {
                proxy: proxy && matches!(t, Transport::Tcp | Transport::Tls),
                socket_file: if matches!(a, Address::Path(_)) {
                    file
                } else {
                    SocketFile::default()
                },
                ..Endpoint::new(s, t, a)
            },
        )
    }

    proptest! {
        #[test]
        fn any_endpoint_round_trips_through_its_url(e in any_endpoint()) {
            prop_assert_eq!(e.to_string().parse::<Endpoint>().unwrap(), e);
        }

        #[test]
        fn any_string_parses_or_fails_without_panic_and_parsed_ones_are_stable(s in "\\PC{0,40}") {
            if let Ok(e) = s.parse::<Endpoint>() {
                prop_assert_eq!(e.to_string().parse::<Endpoint>().unwrap(), e);
            }
        }
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "tcp://[::1]:21567",
            "tcp://:21567",
            "udp://127.0.0.1:0",
            "unix:///tmp/x.sock",
            "unixgram://@name",
            "echo+tcp://:7",
            "time+unix:///run/time.sock",
            "proxy+tcp://:21567",
            "echo+proxy+tcp://127.0.0.1:7",
            "tls://:21568",
            "daytime+proxy+tls://[::1]:13",
            "unix:///run/t.sock?mode=0660&group=tsecho",
            "echo+unixgram:///run/e.sock?owner=0",
        ] {
            assert_eq!(parse(s).to_string(), s);
        }
    }
}

//! The PROXY protocol (v1 text and v2 binary, as HAProxy sends them): a
//! load balancer in front of tsecho tells, before the client's bytes, who
//! the client really is.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The v2 signature, then version/command, family, and length.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// The longest v1 line the spec allows, CRLF included.
const V1_MAX: usize = 107;
/// A v2 header this long is refused: addresses plus generous TLVs.
pub const V2_MAX: usize = 16 + 2048;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// The balancer's own connection (health checks): keep the real peer.
    Local,
    Proxied {
        source: SocketAddr,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// More bytes are needed.
    Incomplete,
    /// The header and its length in bytes.
    Done(Header, usize),
    Invalid(&'static str),
}

pub fn parse(buf: &[u8]) -> Parsed {
    if buf.len() < V2_SIGNATURE.len() {
        let v1 = b"PROXY ".starts_with(&buf[..buf.len().min(6)]) || buf.starts_with(b"PROXY ");
        let v2 = V2_SIGNATURE.starts_with(buf);
        return if v1 || v2 {
            Parsed::Incomplete
        } else {
            Parsed::Invalid("not a PROXY protocol header")
        };
    }
    if buf.starts_with(V2_SIGNATURE) {
        parse_v2(buf)
    } else if buf.starts_with(b"PROXY ") {
        parse_v1(buf)
    } else {
        Parsed::Invalid("not a PROXY protocol header")
    }
}

fn parse_v1(buf: &[u8]) -> Parsed {
    let window = &buf[..buf.len().min(V1_MAX)];
    let Some(end) = window.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() >= V1_MAX {
            Parsed::Invalid("PROXY v1 line too long")
        } else {
            Parsed::Incomplete
        };
    };
    let Ok(line) = std::str::from_utf8(&buf[..end]) else {
        return Parsed::Invalid("PROXY v1 line is not text");
    };
    let fields: Vec<&str> = line.split(' ').collect();
    let header = match fields.as_slice() {
        ["PROXY", "UNKNOWN", ..] => Header::Local,
        [
            "PROXY",
            family @ ("TCP4" | "TCP6"),
            source,
            _destination,
            source_port,
            _destination_port,
        ] => {
            let (Ok(ip), Ok(port)) = (source.parse::<IpAddr>(), source_port.parse::<u16>()) else {
                return Parsed::Invalid("PROXY v1 address or port malformed");
            };
            if ip.is_ipv4() != (*family == "TCP4") {
                return Parsed::Invalid("PROXY v1 address does not match its family");
            }
            Header::Proxied {
                source: SocketAddr::new(ip, port),
            }
        }
        _ => return Parsed::Invalid("PROXY v1 line malformed"),
    };
    Parsed::Done(header, end + 2)
}

fn parse_v2(buf: &[u8]) -> Parsed {
    if buf.len() < 16 {
        return Parsed::Incomplete;
    }
    let (version, command) = (buf[12] >> 4, buf[12] & 0x0f);
    if version != 2 {
        return Parsed::Invalid("PROXY v2 version is not 2");
    }
    let len = 16 + usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if len > V2_MAX {
        return Parsed::Invalid("PROXY v2 header too long");
    }
    if buf.len() < len {
        return Parsed::Incomplete;
    }
    let addresses = &buf[16..len];
    let header = match (command, buf[13]) {
        (0, _) => Header::Local,
        (1, 0x11) if addresses.len() >= 12 => {
            let ip = Ipv4Addr::new(addresses[0], addresses[1], addresses[2], addresses[3]);
            let port = u16::from_be_bytes([addresses[8], addresses[9]]);
            Header::Proxied {
                source: SocketAddr::new(ip.into(), port),
            }
        }
        (1, 0x21) if addresses.len() >= 36 => {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&addresses[..16]);
            let port = u16::from_be_bytes([addresses[32], addresses[33]]);
            Header::Proxied {
                source: SocketAddr::new(Ipv6Addr::from(octets).into(), port),
            }
        }
        (1, 0x00) => Header::Local,
        (1, _) => return Parsed::Invalid("PROXY v2 family or addresses unsupported"),
        _ => return Parsed::Invalid("PROXY v2 command unknown"),
    };
    Parsed::Done(header, len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_tcp4_and_tcp6_and_unknown() {
        let line = b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\nhello\n";
        assert_eq!(
            parse(line),
            Parsed::Done(
                Header::Proxied {
                    source: "192.0.2.1:56324".parse().unwrap()
                },
                45
            )
        );
        let six = b"PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n";
        assert!(matches!(
            parse(six),
            Parsed::Done(Header::Proxied { .. }, 40)
        ));
        assert_eq!(parse(b"PROXY UNKNOWN\r\n"), Parsed::Done(Header::Local, 15));
    }

    #[test]
    fn v1_incomplete_then_refused_past_107_bytes() {
        assert_eq!(parse(b"PRO"), Parsed::Incomplete);
        assert_eq!(parse(b"PROXY TCP4 1.2.3.4"), Parsed::Incomplete);
        let long = [b"PROXY TCP4 ".as_slice(), &[b'1'; 120]].concat();
        assert!(matches!(parse(&long), Parsed::Invalid(_)));
        assert!(matches!(
            parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 1\r\n"),
            Parsed::Invalid(_)
        ));
        assert!(matches!(
            parse(b"PROXY TCP4 ::1 ::2 1 2\r\n"),
            Parsed::Invalid(_)
        ));
        assert!(matches!(parse(b"GET / HTTP/1.1\r\n"), Parsed::Invalid(_)));
    }

    #[test]
    fn v2_tcp4_local_and_limits() {
        let mut h = V2_SIGNATURE.to_vec();
        h.extend_from_slice(&[
            0x21, 0x11, 0, 12, 192, 0, 2, 1, 198, 51, 100, 2, 0xdc, 0x04, 0x01, 0xbb,
        ]);
        assert_eq!(
            parse(&h),
            Parsed::Done(
                Header::Proxied {
                    source: "192.0.2.1:56324".parse().unwrap()
                },
                28
            )
        );
        assert_eq!(parse(&h[..20]), Parsed::Incomplete);
        let mut local = V2_SIGNATURE.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0, 0]);
        assert_eq!(parse(&local), Parsed::Done(Header::Local, 16));
        let mut huge = V2_SIGNATURE.to_vec();
        huge.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        assert!(matches!(parse(&huge), Parsed::Invalid(_)));
    }
}

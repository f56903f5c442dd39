//! Binding sockets for endpoints: dual-stack wildcards, a large accept
//! backlog, and Unix socket files that replace stale ones but never a live
//! server's.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{self as std_unix, SocketAddr as UnixAddr};
use std::path::{Path, PathBuf};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, UdpSocket, UnixDatagram, UnixListener};

use crate::endpoint::{Address, Endpoint, Transport};
use crate::error::Error;
use crate::service::ServiceKind;

/// Connections the kernel may queue before we accept them; bursts of
/// thousands of connects must not overflow it (the kernel caps it at
/// `net.core.somaxconn`).
const ACCEPT_BACKLOG: i32 = 65_535;

/// A bound socket, ready to serve.
pub enum BoundSocket {
    Tcp(TcpListener),
    Udp(UdpSocket),
    Unix(UnixListener),
    UnixGram(UnixDatagram),
}

/// What a listener is bound to, with the port actually chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalAddr {
    Inet(SocketAddr),
    Path(PathBuf),
    Abstract(String),
}

pub struct Bound {
    pub socket: BoundSocket,
    pub local: LocalAddr,
    /// The endpoint as bound: port 0 replaced by the real port.
    pub endpoint: Endpoint,
}

/// Serves a socket someone else bound, such as systemd: its transport and
/// address are read from the socket itself.
pub fn adopt(service: ServiceKind, socket: Socket) -> Result<Bound, Error> {
    adopt_inner(service, socket).map_err(|reason| Error::Listen {
        endpoint: "an inherited socket".into(),
        reason,
    })
}

fn adopt_inner(service: ServiceKind, socket: Socket) -> io::Result<Bound> {
    socket.set_nonblocking(true)?;
    let stream = socket.r#type()? == Type::STREAM;
    let local = socket.local_addr()?;
    let (address, local_addr) = if let Some(addr) = local.as_socket() {
        let host = addr.ip().to_string();
        (
            Address::Inet {
                host,
                port: addr.port(),
            },
            LocalAddr::Inet(addr),
        )
    } else if let Some(path) = local.as_pathname() {
        (
            Address::Path(path.to_path_buf()),
            LocalAddr::Path(path.to_path_buf()),
        )
    } else if let Some(name) = local.as_abstract_namespace() {
        let name = String::from_utf8_lossy(name).into_owned();
        (Address::Abstract(name.clone()), LocalAddr::Abstract(name))
    } else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "inherited socket is not IP or Unix",
        ));
    };
    let inet = matches!(local_addr, LocalAddr::Inet(_));
    let (transport, bound) = match (inet, stream) {
        (true, true) => (
            Transport::Tcp,
            BoundSocket::Tcp(TcpListener::from_std(socket.into())?),
        ),
        (true, false) => (
            Transport::Udp,
            BoundSocket::Udp(UdpSocket::from_std(socket.into())?),
        ),
        (false, true) => (
            Transport::Unix,
            BoundSocket::Unix(UnixListener::from_std(socket.into())?),
        ),
        (false, false) => (
            Transport::UnixGram,
            BoundSocket::UnixGram(UnixDatagram::from_std(socket.into())?),
        ),
    };
    Ok(Bound {
        socket: bound,
        local: local_addr,
        endpoint: Endpoint::new(service, transport, address),
    })
}

pub async fn bind(endpoint: &Endpoint) -> Result<Bound, Error> {
    bind_inner(endpoint).await.map_err(|reason| Error::Listen {
        endpoint: endpoint.to_string(),
        reason,
    })
}

async fn bind_inner(endpoint: &Endpoint) -> io::Result<Bound> {
    let (socket, local) = match (&endpoint.address, endpoint.transport) {
        (Address::Inet { host, port }, transport) => {
            let addr = resolve_for_bind(host, *port).await?;
            bind_inet(addr, transport)?
        }
        (Address::Path(path), Transport::Unix) => {
            clear_stale_socket_file(path, Transport::Unix)?;
            let listener = UnixListener::bind(path)?;
            (BoundSocket::Unix(listener), LocalAddr::Path(path.clone()))
        }
        (Address::Path(path), _) => {
            clear_stale_socket_file(path, Transport::UnixGram)?;
            let socket = UnixDatagram::bind(path)?;
            (BoundSocket::UnixGram(socket), LocalAddr::Path(path.clone()))
        }
        (Address::Abstract(name), Transport::Unix) => {
            let std = std_unix::UnixListener::bind_addr(&UnixAddr::from_abstract_name(name)?)?;
            std.set_nonblocking(true)?;
            let listener = UnixListener::from_std(std)?;
            (
                BoundSocket::Unix(listener),
                LocalAddr::Abstract(name.clone()),
            )
        }
        (Address::Abstract(name), _) => {
            let std = std_unix::UnixDatagram::bind_addr(&UnixAddr::from_abstract_name(name)?)?;
            std.set_nonblocking(true)?;
            let socket = UnixDatagram::from_std(std)?;
            (
                BoundSocket::UnixGram(socket),
                LocalAddr::Abstract(name.clone()),
            )
        }
    };
    let mut bound_endpoint = endpoint.clone();
    if let LocalAddr::Inet(addr) = local {
        bound_endpoint.address = Address::Inet {
            host: addr.ip().to_string(),
            port: addr.port(),
        };
    }
    Ok(Bound {
        socket,
        local,
        endpoint: bound_endpoint,
    })
}

/// An empty host is every interface: `[::]` taking IPv4 too where the
/// system allows, else `0.0.0.0`.
async fn resolve_for_bind(host: &str, port: u16) -> io::Result<SocketAddr> {
    if host.is_empty() {
        let any6 = SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port);
        return Ok(if ipv6_available() {
            any6
        } else {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port)
        });
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    tokio::net::lookup_host((host, port))
        .await?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{host}: no address")))
}

fn ipv6_available() -> bool {
    Socket::new(Domain::IPV6, Type::STREAM, None).is_ok()
}

fn bind_inet(addr: SocketAddr, transport: Transport) -> io::Result<(BoundSocket, LocalAddr)> {
    let (kind, protocol) = match transport {
        Transport::Tcp => (Type::STREAM, Protocol::TCP),
        _ => (Type::DGRAM, Protocol::UDP),
    };
    let socket = Socket::new(Domain::for_address(addr), kind, Some(protocol))?;
    if addr.is_ipv6() && addr.ip().is_unspecified() {
        socket.set_only_v6(false)?;
    }
    if transport == Transport::Tcp {
        // Lets a restarted server bind while old connections sit in
        // TIME_WAIT. Not for UDP, where it would let two servers share a port.
        socket.set_reuse_address(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    let local = socket
        .local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::other("bound address is not an IP address"))?;
    let bound = if transport == Transport::Tcp {
        socket.listen(ACCEPT_BACKLOG)?;
        BoundSocket::Tcp(TcpListener::from_std(socket.into())?)
    } else {
        BoundSocket::Udp(UdpSocket::from_std(socket.into())?)
    };
    Ok((bound, LocalAddr::Inet(local)))
}

/// A socket file left by a server that is gone is removed; one with a live
/// server behind it, or a file that is not a socket, is left alone and
/// binding fails with "address in use".
fn clear_stale_socket_file(path: &Path, transport: Transport) -> io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::from(io::ErrorKind::AddrInUse));
    }
    let probe = match transport {
        Transport::Unix => std_unix::UnixStream::connect(path).map(drop),
        _ => std_unix::UnixDatagram::unbound().and_then(|s| s.connect(path)),
    };
    match probe {
        Ok(()) => Err(io::Error::from(io::ErrorKind::AddrInUse)),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => std::fs::remove_file(path),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wildcard_tcp_is_dual_stack() {
        let endpoint: Endpoint = "tcp://:0".parse().unwrap();
        let bound = bind(&endpoint).await.unwrap();
        let LocalAddr::Inet(addr) = bound.local else {
            panic!("not inet")
        };
        assert_ne!(addr.port(), 0);
        assert!(
            bound
                .endpoint
                .to_string()
                .ends_with(&format!(":{}", addr.port()))
        );
        if addr.is_ipv6() {
            tokio::net::TcpStream::connect(("127.0.0.1", addr.port()))
                .await
                .expect("IPv4 client reaches the dual-stack listener");
        }
    }

    #[tokio::test]
    async fn second_bind_on_the_same_port_is_address_in_use() {
        let first = bind(&"tcp://127.0.0.1:0".parse().unwrap()).await.unwrap();
        let again: Endpoint = first.endpoint.to_string().parse().unwrap();
        let err = bind(&again).await.err().expect("must fail");
        assert!(err.to_string().ends_with("address already in use"), "{err}");
    }
}

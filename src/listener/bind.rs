//! Binding sockets for endpoints: dual-stack wildcards and a large accept
//! backlog (Unix socket files are `socket_file.rs`'s).

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{self as std_unix, SocketAddr as UnixAddr};
use std::path::PathBuf;

use super::socket_file::bind_path;
use crate::endpoint::{Address, Endpoint, Transport};
use crate::error::Error;
use crate::service::ServiceKind;
use socket2::{Domain, Protocol, Socket, Type};

/// Connections the kernel may queue before we accept them; bursts of
/// thousands of connects must not overflow it (the kernel caps it at
/// `net.core.somaxconn`).
const ACCEPT_BACKLOG: i32 = 65_535;

/// A bound socket, ready to serve. Still a plain (non-blocking) socket:
/// it joins the I/O driver of the runtime that serves it, which need not
/// be the one that bound it (UDP sockets are served by threads instead).
pub enum BoundSocket {
    Tcp(std::net::TcpListener),
    Udp(std::net::UdpSocket),
    Unix(std_unix::UnixListener),
    UnixGram(std_unix::UnixDatagram),
}

impl BoundSocket {
    /// Whether what is read comes with the kernel's receive time: set
    /// before the listener is announced, so that every connection it
    /// accepts inherits it. TLS reads records, not the client's bytes,
    /// and a Unix stream's data is never stamped by the kernel.
    pub fn report_receive_times(&self, transport: Transport, on: bool) {
        let fd = match self {
            BoundSocket::Tcp(l) => l.as_raw_fd(),
            BoundSocket::Udp(s) => s.as_raw_fd(),
            BoundSocket::UnixGram(s) => s.as_raw_fd(),
            BoundSocket::Unix(_) => return,
        };
        let on = on && transport != Transport::Tls;
        if let Err(e) = crate::ancillary::report_receive_time(fd, on) {
            tracing::warn!("messages are stamped when read, not when received: {e}");
        }
    }
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
        (true, true) => (Transport::Tcp, BoundSocket::Tcp(socket.into())),
        (true, false) => (Transport::Udp, BoundSocket::Udp(socket.into())),
        (false, true) => (Transport::Unix, BoundSocket::Unix(socket.into())),
        (false, false) => (Transport::UnixGram, BoundSocket::UnixGram(socket.into())),
    };
    Ok(Bound {
        socket: bound,
        local: local_addr,
        endpoint: Endpoint::new(service, transport, address),
    })
}

impl Bound {
    /// Another descriptor for the same socket: it keeps the socket open,
    /// with its queue, while the one being served is closed and replaced.
    pub fn duplicate_fd(&self) -> io::Result<std::os::fd::OwnedFd> {
        match &self.socket {
            BoundSocket::Tcp(s) => s.as_fd().try_clone_to_owned(),
            BoundSocket::Udp(s) => s.as_fd().try_clone_to_owned(),
            BoundSocket::Unix(s) => s.as_fd().try_clone_to_owned(),
            BoundSocket::UnixGram(s) => s.as_fd().try_clone_to_owned(),
        }
    }

    /// A socket already bound for `endpoint` (kept across a reload, or
    /// handed over by the process before us), served as that endpoint.
    pub fn reuse(fd: std::os::fd::OwnedFd, endpoint: Endpoint) -> io::Result<Bound> {
        let mut adopted = adopt_inner(endpoint.service, Socket::from(fd))?;
        let same_kind = adopted.endpoint.transport.is_datagram()
            == endpoint.transport.is_datagram()
            && adopted.endpoint.transport.is_inet() == endpoint.transport.is_inet();
        if !same_kind {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "the socket given for {endpoint} is a {} socket",
                    adopted.endpoint.transport.scheme()
                ),
            ));
        }
        adopted.endpoint = Endpoint {
            address: adopted.endpoint.address,
            ..endpoint
        };
        Ok(adopted)
    }
}

/// Binds a plain TCP listener (the metrics endpoint): its address and the
/// socket, not yet registered with a runtime.
pub async fn bind_tcp(endpoint: &Endpoint) -> Result<(SocketAddr, std::net::TcpListener), Error> {
    let not_tcp = || Error::Usage(format!("--metrics needs a tcp:// endpoint, not {endpoint}"));
    if endpoint.transport != Transport::Tcp {
        return Err(not_tcp());
    }
    match bind(endpoint).await? {
        Bound {
            socket: BoundSocket::Tcp(listener),
            local: LocalAddr::Inet(addr),
            ..
        } => Ok((addr, listener)),
        _ => Err(not_tcp()),
    }
}

pub async fn bind(endpoint: &Endpoint) -> Result<Bound, Error> {
    let mut copies = bind_copies(endpoint, 1).await?;
    Ok(copies.swap_remove(0))
}

/// Binds `copies` sockets to one TCP or UDP address, all sharing it with
/// SO_REUSEPORT, so that the kernel spreads connections and datagrams over
/// as many threads as serve them. Unix sockets, and a single copy, bind
/// one ordinary socket.
pub async fn bind_copies(endpoint: &Endpoint, copies: usize) -> Result<Vec<Bound>, Error> {
    bind_inner(endpoint, copies)
        .await
        .map_err(|reason| Error::Listen {
            endpoint: endpoint.to_string(),
            reason,
        })
}

async fn bind_inner(endpoint: &Endpoint, copies: usize) -> io::Result<Vec<Bound>> {
    let sockets = match (&endpoint.address, endpoint.transport) {
        (Address::Inet { host, port }, transport) => {
            let addr = resolve_for_bind(host, *port).await?;
            bind_inet_copies(addr, transport, copies)?
        }
        _ => vec![bind_local(endpoint)?],
    };
    let mut bound_endpoint = endpoint.clone();
    if let Some((_, LocalAddr::Inet(addr))) = sockets.first() {
        bound_endpoint.address = Address::Inet {
            host: addr.ip().to_string(),
            port: addr.port(),
        };
    }
    Ok(sockets
        .into_iter()
        .map(|(socket, local)| Bound {
            socket,
            local,
            endpoint: bound_endpoint.clone(),
        })
        .collect())
}

fn bind_local(endpoint: &Endpoint) -> io::Result<(BoundSocket, LocalAddr)> {
    let datagram = endpoint.transport.is_datagram();
    Ok(match (&endpoint.address, datagram) {
        (Address::Inet { .. }, _) => {
            return Err(io::Error::other("an IP address is not a Unix socket"));
        }
        (Address::Path(path), false) => {
            let socket = bind_path(path, Type::STREAM, &endpoint.socket_file, ACCEPT_BACKLOG)?;
            (
                BoundSocket::Unix(socket.into()),
                LocalAddr::Path(path.clone()),
            )
        }
        (Address::Path(path), true) => {
            let socket = bind_path(path, Type::DGRAM, &endpoint.socket_file, 0)?;
            (
                BoundSocket::UnixGram(socket.into()),
                LocalAddr::Path(path.clone()),
            )
        }
        (Address::Abstract(name), false) => {
            let std = std_unix::UnixListener::bind_addr(&UnixAddr::from_abstract_name(name)?)?;
            std.set_nonblocking(true)?;
            (BoundSocket::Unix(std), LocalAddr::Abstract(name.clone()))
        }
        (Address::Abstract(name), true) => {
            let std = std_unix::UnixDatagram::bind_addr(&UnixAddr::from_abstract_name(name)?)?;
            std.set_nonblocking(true)?;
            (
                BoundSocket::UnixGram(std),
                LocalAddr::Abstract(name.clone()),
            )
        }
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
    let addrs = crate::endpoint::lookup(host, port).await?;
    Ok(addrs[0])
}

fn ipv6_available() -> bool {
    Socket::new(Domain::IPV6, Type::STREAM, None).is_ok()
}

/// The first socket binds alone: it finds a port that anyone, a server of
/// ours with SO_REUSEPORT included, already holds (address in use), and
/// picks the port for `:0`. The copies then share that port among
/// themselves only; the first is closed, unused, if there are copies.
fn bind_inet_copies(
    addr: SocketAddr,
    transport: Transport,
    copies: usize,
) -> io::Result<Vec<(BoundSocket, LocalAddr)>> {
    // A port picked for `:0` can be taken by someone else between closing
    // the first socket and binding the copies: then pick another.
    let attempts = if addr.port() == 0 { 5 } else { 1 };
    let mut result = Err(io::ErrorKind::AddrInUse.into());
    for _ in 0..attempts {
        let first = inet_socket(addr, transport, false)?;
        if copies <= 1 {
            return Ok(vec![into_bound(first, transport)?]);
        }
        let chosen = bound_addr(&first)?;
        drop(first);
        result = (0..copies)
            .map(|_| into_bound(inet_socket(chosen, transport, true)?, transport))
            .collect();
        match &result {
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => continue,
            _ => break,
        }
    }
    result
}

fn inet_socket(addr: SocketAddr, transport: Transport, reuse_port: bool) -> io::Result<Socket> {
    let (kind, protocol) = if transport.is_datagram() {
        (Type::DGRAM, Protocol::UDP)
    } else {
        (Type::STREAM, Protocol::TCP)
    };
    let socket = Socket::new(Domain::for_address(addr), kind, Some(protocol))?;
    if addr.is_ipv6() && addr.ip().is_unspecified() {
        socket.set_only_v6(false)?;
    }
    if !transport.is_datagram() {
        // Lets a restarted server bind while old connections sit in
        // TIME_WAIT. Not for UDP, where it would let two servers share a port.
        socket.set_reuse_address(true)?;
    }
    socket.set_reuse_port(reuse_port)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket)
}

fn bound_addr(socket: &Socket) -> io::Result<SocketAddr> {
    socket
        .local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::other("bound address is not an IP address"))
}

fn into_bound(socket: Socket, transport: Transport) -> io::Result<(BoundSocket, LocalAddr)> {
    let local = bound_addr(&socket)?;
    let bound = if transport.is_datagram() {
        BoundSocket::Udp(socket.into())
    } else {
        socket.listen(ACCEPT_BACKLOG)?;
        BoundSocket::Tcp(socket.into())
    };
    Ok((bound, LocalAddr::Inet(local)))
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

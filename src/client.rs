//! The client side of every transport, shared by `client`, `ping` and
//! `bench`: connect to an endpoint URL and get a stream or a datagram socket.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net as std_unix;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UdpSocket, UnixDatagram, UnixStream};

use crate::endpoint::{Address, Endpoint};
use crate::error::Error;

/// A connected byte stream, TCP or Unix.
pub trait ClientStream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> ClientStream for T {}

fn connect_error(endpoint: &Endpoint, reason: io::Error) -> Error {
    Error::Connect {
        endpoint: endpoint.to_string(),
        reason,
    }
}

fn timed_out(after: Duration) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!("timed out after {}", crate::client::human_duration(after)),
    )
}

/// `3 s`, `250 ms`: how a timeout reads in an error message.
pub fn human_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{} ms", d.as_millis())
    }
}

/// Resolves an IP endpoint; an empty host means this machine.
pub async fn resolve(host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
    if host.is_empty() {
        return Ok(vec![
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), port),
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
        ]);
    }
    crate::endpoint::lookup(host, port).await
}

/// Connects a stream endpoint, trying each address of a name in turn.
pub async fn connect_stream(
    endpoint: &Endpoint,
    timeout: Duration,
) -> Result<Box<dyn ClientStream>, Error> {
    let attempt = async {
        match &endpoint.address {
            Address::Inet { host, port } => {
                let mut last = io::Error::from(io::ErrorKind::NotFound);
                for addr in resolve(host, *port).await? {
                    match TcpStream::connect(addr).await {
                        Ok(s) => {
                            s.set_nodelay(true)?;
                            return Ok(Box::new(s) as Box<dyn ClientStream>);
                        }
                        Err(e) => last = e,
                    }
                }
                Err(last)
            }
            Address::Path(path) => {
                Ok(Box::new(UnixStream::connect(path).await?) as Box<dyn ClientStream>)
            }
            Address::Abstract(name) => {
                let std = std_unix::UnixStream::connect_addr(
                    &std_unix::SocketAddr::from_abstract_name(name)?,
                )?;
                std.set_nonblocking(true)?;
                Ok(Box::new(UnixStream::from_std(std)?) as Box<dyn ClientStream>)
            }
        }
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(e)) => Err(connect_error(endpoint, e)),
        Err(_) => Err(connect_error(endpoint, timed_out(timeout))),
    }
}

/// A datagram socket connected to one server, so only its replies arrive.
pub enum DatagramSocket {
    Udp(UdpSocket),
    Unix(UnixDatagram),
}

impl DatagramSocket {
    pub async fn connect(endpoint: &Endpoint) -> Result<Self, Error> {
        Self::connect_inner(endpoint)
            .await
            .map_err(|e| connect_error(endpoint, e))
    }

    async fn connect_inner(endpoint: &Endpoint) -> io::Result<Self> {
        match &endpoint.address {
            Address::Inet { host, port } => {
                let addr = resolve(host, *port).await?[0];
                let local: SocketAddr = match addr {
                    SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
                    SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
                };
                let sock = UdpSocket::bind(local).await?;
                sock.connect(addr).await?;
                Ok(DatagramSocket::Udp(sock))
            }
            unix => {
                // A reply needs an address to come back to; an abstract name
                // leaves no file behind.
                let me = std_unix::SocketAddr::from_abstract_name(unique_client_name())?;
                let std = std_unix::UnixDatagram::bind_addr(&me)?;
                match unix {
                    Address::Path(path) => std.connect(path)?,
                    Address::Abstract(name) => {
                        std.connect_addr(&std_unix::SocketAddr::from_abstract_name(name)?)?
                    }
                    Address::Inet { .. } => unreachable!("handled above"),
                }
                std.set_nonblocking(true)?;
                Ok(DatagramSocket::Unix(UnixDatagram::from_std(std)?))
            }
        }
    }

    pub async fn send(&self, buf: &[u8]) -> io::Result<usize> {
        match self {
            DatagramSocket::Udp(s) => s.send(buf).await,
            DatagramSocket::Unix(s) => s.send(buf).await,
        }
    }

    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            DatagramSocket::Udp(s) => s.recv(buf).await,
            DatagramSocket::Unix(s) => s.recv(buf).await,
        }
    }
}

fn unique_client_name() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "tsecho-client-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

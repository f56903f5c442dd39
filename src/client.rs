//! The client side of every transport, shared by `client`, `ping` and
//! `bench`: connect to an endpoint URL and get a stream or a datagram socket.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net as std_unix;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UdpSocket, UnixDatagram, UnixStream};

use crate::endpoint::{Address, Endpoint, Transport};
use crate::error::Error;
use crate::tls::client::{ClientTls, ClientTlsArgs};
use crate::transport::tls::TlsSocket;

/// A connected byte stream: TCP, TLS or Unix.
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

/// Connects a stream endpoint with the system's TLS roots for tls://.
pub async fn connect_stream(
    endpoint: &Endpoint,
    timeout: Duration,
) -> Result<Box<dyn ClientStream>, Error> {
    Connector::new(endpoint, timeout, &ClientTlsArgs::default())?
        .connect()
        .await
}

/// Opens stream connections to one endpoint, as often as asked (bench
/// reconnects for each request): TLS settings are read once.
#[derive(Clone)]
pub struct Connector {
    endpoint: Endpoint,
    timeout: Duration,
    tls: Option<ClientTls>,
}

/// How long the parts of opening a connection took.
#[derive(Debug, Clone, Copy)]
pub struct Opened {
    pub connect: Duration,
    /// The TLS handshake, for tls://.
    pub handshake: Option<Duration>,
}

impl Connector {
    pub fn new(endpoint: &Endpoint, timeout: Duration, tls: &ClientTlsArgs) -> Result<Self, Error> {
        let tls = match (&endpoint.address, endpoint.transport) {
            (Address::Inet { host, .. }, Transport::Tls) => Some(tls.for_host(host)?),
            _ => None,
        };
        Ok(Connector {
            endpoint: endpoint.clone(),
            timeout,
            tls,
        })
    }

    pub async fn connect(&self) -> Result<Box<dyn ClientStream>, Error> {
        self.connect_timed().await.map(|(stream, _)| stream)
    }

    /// Connects, then shakes hands for tls://, both within the timeout.
    pub async fn connect_timed(&self) -> Result<(Box<dyn ClientStream>, Opened), Error> {
        let started = Instant::now();
        let attempt = async {
            let stream = open(&self.endpoint).await?;
            let connect = started.elapsed();
            let Some(tls) = &self.tls else {
                let opened = Opened {
                    connect,
                    handshake: None,
                };
                return Ok((stream, opened));
            };
            let secured = tls
                .connector
                .connect(tls.name.clone(), TlsSocket::new(stream))
                .await?;
            let opened = Opened {
                connect,
                handshake: Some(started.elapsed() - connect),
            };
            Ok((Box::new(secured) as Box<dyn ClientStream>, opened))
        };
        match tokio::time::timeout(self.timeout, attempt).await {
            Ok(Ok(done)) => Ok(done),
            Ok(Err(e)) => Err(connect_error(&self.endpoint, e)),
            Err(_) => Err(connect_error(&self.endpoint, timed_out(self.timeout))),
        }
    }
}

/// Connects the socket under a stream endpoint, trying each address of a
/// name in turn.
async fn open(endpoint: &Endpoint) -> io::Result<Box<dyn ClientStream>> {
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

//! Byte streams the connection core can drive, and the listeners that
//! produce them: TCP and Unix today. A new transport (TLS) is one file
//! here that implements these two traits, and one match arm where the
//! server picks a listener's accept loop.

pub mod tcp;
pub mod unix;

use std::future::Future;
use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncWrite};

/// A connected byte stream: anything that reads and writes asynchronously.
/// `tokio::io::duplex` qualifies as it is, which is how the connection
/// core is tested without sockets.
pub trait ByteStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// Reads what the kernel holds right now, even before the runtime has
    /// seen the socket become readable: a draining server answers lines
    /// that already arrived. Streams with no kernel socket of their own
    /// return `None` and are read through `poll_read`.
    fn read_direct(&mut self, _buf: &mut [u8]) -> Option<io::Result<usize>> {
        None
    }

    /// The local address, for `{local}` in reply templates.
    fn local_text(&self) -> String {
        String::new()
    }
}

impl ByteStream for tokio::io::DuplexStream {}

/// A listening stream socket.
pub trait Accept: Send + Sync + 'static {
    type Stream: ByteStream;
    /// The next connection and, for IP, the client's address.
    fn accept_one(
        &self,
    ) -> impl Future<Output = io::Result<(Self::Stream, Option<SocketAddr>)>> + Send;
}

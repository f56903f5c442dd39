//! Byte streams the connection core can drive, the listeners that produce
//! them, and the step that turns an accepted stream into the one served:
//! TCP and Unix, served as accepted, and TLS over TCP, whose `Upgrade` is
//! the handshake. A new transport is one file here implementing these
//! traits and one match arm where `listener::serve` picks the accept loop.

pub mod tcp;
pub mod tls;
pub mod unix;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::SystemTime;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::task::TaskTracker;

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

    /// `poll_read`, and with it when the kernel received what was read,
    /// on streams whose socket reports it (TCP, asked with SO_TIMESTAMPNS
    /// on its listener).
    fn poll_read_stamped(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<(usize, Option<SystemTime>)>> {
        let n = ready!(poll_read_plain(self, cx, buf))?;
        Poll::Ready(Ok((n, None)))
    }

    /// Hands what arrived to `take` from where the stream already holds
    /// it, at most `limit` bytes, with the kernel's receive time; returns
    /// the bytes handed over (0: EOF). `None`: the stream holds no input
    /// of its own and is read into a buffer (`poll_read_stamped`). io_uring
    /// streams do: the kernel filled their buffers, and a copy would be
    /// wasted.
    fn poll_read_in_place(
        &mut self,
        _cx: &mut Context<'_>,
        _limit: usize,
        _take: &mut dyn FnMut(&[u8], Option<SystemTime>),
    ) -> Option<Poll<io::Result<usize>>> {
        None
    }

    /// Takes all of `out` for sending without copying it, leaving an empty
    /// buffer in its place, when the stream can take it whole right now;
    /// false: write it with `poll_write`.
    fn send_owned(&mut self, _out: &mut Vec<u8>) -> io::Result<bool> {
        Ok(false)
    }

    /// The local address, for `{local}` in reply templates.
    fn local_text(&self) -> String {
        String::new()
    }

    /// The TLS session, for `{tls_version}` and the like in templates.
    fn tls_info(&self) -> Option<crate::tls::SessionInfo> {
        None
    }

    /// Makes closing the stream abort it: TCP sends an RST (SO_LINGER 0)
    /// instead of a FIN. A Unix stream has no reset; it just closes.
    fn reset_on_close(&self) {}
}

/// One `poll_read` into a plain slice; returns the bytes read (0: EOF).
pub fn poll_read_plain<S: AsyncRead + Unpin + ?Sized>(
    sock: &mut S,
    cx: &mut Context<'_>,
    buf: &mut [u8],
) -> Poll<io::Result<usize>> {
    let mut read = ReadBuf::new(buf);
    ready!(Pin::new(sock).poll_read(cx, &mut read))?;
    Poll::Ready(Ok(read.filled().len()))
}

impl ByteStream for tokio::io::DuplexStream {}

/// A stream kept on the heap, so that a connection's task stays small.
impl<T: ByteStream> ByteStream for Box<T> {
    fn read_direct(&mut self, buf: &mut [u8]) -> Option<io::Result<usize>> {
        (**self).read_direct(buf)
    }

    fn poll_read_stamped(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<(usize, Option<SystemTime>)>> {
        (**self).poll_read_stamped(cx, buf)
    }

    fn poll_read_in_place(
        &mut self,
        cx: &mut Context<'_>,
        limit: usize,
        take: &mut dyn FnMut(&[u8], Option<SystemTime>),
    ) -> Option<Poll<io::Result<usize>>> {
        (**self).poll_read_in_place(cx, limit, take)
    }

    fn send_owned(&mut self, out: &mut Vec<u8>) -> io::Result<bool> {
        (**self).send_owned(out)
    }

    fn local_text(&self) -> String {
        (**self).local_text()
    }

    fn tls_info(&self) -> Option<crate::tls::SessionInfo> {
        (**self).tls_info()
    }

    fn reset_on_close(&self) {
        (**self).reset_on_close()
    }
}

/// A listening stream socket.
pub trait Accept: Send + Sync + 'static {
    type Stream: ByteStream;
    /// The next connection and, for IP, the client's address.
    fn accept_one(
        &self,
    ) -> impl Future<Output = io::Result<(Self::Stream, Option<SocketAddr>)>> + Send;

    /// A connection the kernel has already completed, taken without
    /// waiting (WouldBlock when there is none), even before the runtime
    /// has seen the socket become readable: a listener that stops still
    /// serves what its clients were promised by `connect` returning.
    fn accept_queued(&self) -> io::Result<(Self::Stream, Option<SocketAddr>)>;

    /// Runs a connection's task: on the accepting runtime, unless the
    /// listener's streams must be served on a thread of their own.
    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static, tracker: &TaskTracker) {
        tracker.spawn(task);
    }
}

/// Turns an accepted stream into the one served, after its PROXY header
/// was read and it was admitted: at once (plain sockets), or after a
/// handshake (TLS) that runs in the connection's own task, so that a slow
/// client holds only itself.
///
/// `early` holds what came in with the PROXY header. A plain stream leaves
/// it to be answered; a handshake takes it, since those bytes are the
/// start of its own messages.
pub trait Upgrade<S: ByteStream>: Clone + Send + Sync + 'static {
    type Stream: ByteStream;
    fn upgrade(&self, accepted: S, early: &mut Vec<u8>) -> Upgraded<Self::Stream>;
}

/// The stream to serve, or the handshake that yields it. Boxed, so that
/// plain connections, which never wait, do not carry a handshake's state
/// in their (idle) memory.
pub enum Upgraded<T> {
    Ready(T),
    Handshake(Pin<Box<dyn Future<Output = io::Result<T>> + Send>>),
}

/// Plain sockets are served as accepted.
#[derive(Debug, Clone, Copy)]
pub struct Plain;

impl<S: ByteStream> Upgrade<S> for Plain {
    type Stream = S;

    fn upgrade(&self, accepted: S, _early: &mut Vec<u8>) -> Upgraded<S> {
        Upgraded::Ready(accepted)
    }
}

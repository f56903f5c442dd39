//! A TCP connection whose reads and writes go through its ring thread's
//! ring, served by the same code as any other `ByteStream`; and the
//! listener that makes them and hands them to that thread.

#![allow(unsafe_code)]

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::SystemTime;

use socket2::SockRef;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;

use super::driver::SlotId;
use super::executor::Remote;
use super::thread as driver;
use super::thread::for_this_runtime;
use crate::transport::{Accept, ByteStream};

pub struct UringStream {
    place: Place,
    /// Owned by `place`, which outlives this stream.
    fd: RawFd,
}

/// Accepted on the shard's thread, a socket joins the ring of the thread
/// that serves it when that thread first reads or writes it.
enum Place {
    Accepted(OwnedFd),
    Ring(SlotId),
    Lost,
}

impl UringStream {
    fn new(fd: OwnedFd) -> Self {
        UringStream {
            fd: fd.as_raw_fd(),
            place: Place::Accepted(fd),
        }
    }

    fn id(&mut self) -> io::Result<SlotId> {
        if let Place::Ring(id) = self.place {
            return Ok(id);
        }
        match std::mem::replace(&mut self.place, Place::Lost) {
            Place::Accepted(fd) => {
                let id = driver::with(|d| d.register(fd))?;
                self.place = Place::Ring(id);
                Ok(id)
            }
            _ => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    /// Copies unread input into `buf`: the bytes copied and when the last
    /// of them was received.
    fn poll_read_copy(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<(usize, Option<SystemTime>)>> {
        let (id, limit) = (self.id()?, buf.len());
        let (mut filled, mut at) = (0, None);
        ready!(driver::with(|d| d.poll_read_chunks(
            id,
            cx,
            limit,
            &mut |bytes, when| {
                buf[filled..filled + bytes.len()].copy_from_slice(bytes);
                filled += bytes.len();
                at = when;
            }
        ))?)?;
        Poll::Ready(Ok((filled, at)))
    }

    fn fd(&self) -> BorrowedFd<'_> {
        // SAFETY: the slot keeps the descriptor open until this stream is
        // dropped and the kernel is done with it.
        unsafe { BorrowedFd::borrow_raw(self.fd) }
    }
}

impl Drop for UringStream {
    fn drop(&mut self) {
        if let Place::Ring(id) = self.place {
            driver::drop_slot(id);
        }
    }
}

impl AsyncRead for UringStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let (n, _) = ready!(self.poll_read_copy(cx, buf.initialize_unfilled()))?;
        buf.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for UringStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let id = self.id()?;
        driver::with(|d| d.poll_write(id, cx, data))?
    }

    /// What was written is the kernel's to send, as with a socket's buffer.
    fn poll_flush(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        let id = self.id()?;
        match driver::with(|d| d.write_error(id))? {
            Some(e) => Poll::Ready(Err(e)),
            None => Poll::Ready(Ok(())),
        }
    }

    /// Sends FIN once everything written has left.
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let id = self.id()?;
        ready!(driver::with(|d| d.poll_sent(id, cx))?)?;
        match SockRef::from(&self.fd()).shutdown(std::net::Shutdown::Write) {
            Err(e) if e.kind() != io::ErrorKind::NotConnected => Poll::Ready(Err(e)),
            _ => Poll::Ready(Ok(())),
        }
    }
}

impl ByteStream for UringStream {
    fn poll_read_stamped(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<(usize, Option<SystemTime>)>> {
        self.poll_read_copy(cx, buf)
    }

    fn poll_read_in_place(
        &mut self,
        cx: &mut Context<'_>,
        limit: usize,
        take: &mut dyn FnMut(&[u8], Option<SystemTime>),
    ) -> Option<Poll<io::Result<usize>>> {
        let read = self
            .id()
            .and_then(|id| driver::with(|d| d.poll_read_in_place(id, cx, limit, take)));
        match read {
            Ok(poll) => poll,
            Err(e) => Some(Poll::Ready(Err(e))),
        }
    }

    fn send_owned(&mut self, out: &mut Vec<u8>) -> io::Result<bool> {
        let id = self.id()?;
        driver::with(|d| d.send_owned(id, out))?
    }

    fn local_text(&self) -> String {
        SockRef::from(&self.fd())
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .map_or_else(|| "?".into(), |a| a.to_string())
    }

    fn reset_on_close(&self) {
        let _ = SockRef::from(&self.fd()).set_linger(Some(std::time::Duration::ZERO));
    }
}

/// A TCP listener whose connections are served on its runtime's ring
/// thread. Accepts stay with the runtime's epoll: one per connection, not
/// one per reply.
pub struct UringListener {
    listener: TcpListener,
    ring: Arc<Remote>,
}

impl UringListener {
    /// Starts this runtime's ring thread if it has none yet; where that
    /// fails, the listener comes back with why.
    pub fn new(listener: TcpListener) -> Result<Self, (io::Error, TcpListener)> {
        match for_this_runtime() {
            Ok(ring) => Ok(UringListener { listener, ring }),
            Err(e) => Err((e, listener)),
        }
    }

    fn take(
        sock: std::net::TcpStream,
        peer: Option<SocketAddr>,
    ) -> io::Result<(UringStream, Option<SocketAddr>)> {
        sock.set_nodelay(true)?;
        Ok((UringStream::new(sock.into()), peer))
    }
}

impl Accept for UringListener {
    type Stream = UringStream;

    async fn accept_one(&self) -> io::Result<(UringStream, Option<SocketAddr>)> {
        let (sock, peer) = self.listener.accept().await?;
        Self::take(sock.into_std()?, Some(peer))
    }

    fn accept_queued(&self) -> io::Result<(UringStream, Option<SocketAddr>)> {
        let (sock, peer) = SockRef::from(&self.listener).accept()?;
        sock.set_nonblocking(true)?;
        Self::take(sock.into(), peer.as_socket())
    }

    /// On the ring thread: its streams can be served nowhere else.
    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static, tracker: &TaskTracker) {
        self.ring.spawn(Box::pin(tracker.track_future(task)));
    }
}

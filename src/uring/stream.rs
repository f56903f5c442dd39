//! A TCP connection whose reads and writes go through the thread's ring,
//! served by the same code as any other `ByteStream`; and the listener
//! that makes them.

#![allow(unsafe_code)]

use std::io;
use std::net::SocketAddr;
use std::os::fd::{BorrowedFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::SystemTime;

use socket2::SockRef;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;

use super::driver::SlotId;
use super::thread as driver;
use crate::transport::{Accept, ByteStream};

pub struct UringStream {
    id: SlotId,
    /// Owned by the slot, which outlives this stream.
    fd: RawFd,
}

impl UringStream {
    fn new(fd: OwnedFd) -> io::Result<Self> {
        let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
        let id = driver::with(|d| d.register(fd))?;
        Ok(UringStream { id, fd: raw })
    }

    fn fd(&self) -> BorrowedFd<'_> {
        // SAFETY: the slot keeps the descriptor open until this stream is
        // dropped and the kernel is done with it.
        unsafe { BorrowedFd::borrow_raw(self.fd) }
    }
}

impl Drop for UringStream {
    fn drop(&mut self) {
        driver::drop_slot(self.id);
    }
}

impl AsyncRead for UringStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let id = self.id;
        let (n, _) = ready!(driver::with(|d| d.poll_read(
            id,
            cx,
            buf.initialize_unfilled()
        ))?)?;
        buf.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for UringStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let id = self.id;
        driver::with(|d| d.poll_write(id, cx, data))?
    }

    /// What was written is the kernel's to send, as with a socket's buffer.
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        let id = self.id;
        match driver::with(|d| d.write_error(id))? {
            Some(e) => Poll::Ready(Err(e)),
            None => Poll::Ready(Ok(())),
        }
    }

    /// Sends FIN once everything written has left.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let id = self.id;
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
        let id = self.id;
        driver::with(|d| d.poll_read(id, cx, buf))?
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

/// A TCP listener whose connections are served through the ring. Accepts
/// stay with epoll: one per connection, not one per reply.
pub struct UringListener(pub TcpListener);

impl UringListener {
    fn take(
        sock: std::net::TcpStream,
        peer: Option<SocketAddr>,
    ) -> io::Result<(UringStream, Option<SocketAddr>)> {
        sock.set_nodelay(true)?;
        Ok((UringStream::new(sock.into())?, peer))
    }
}

impl Accept for UringListener {
    type Stream = UringStream;

    async fn accept_one(&self) -> io::Result<(UringStream, Option<SocketAddr>)> {
        let (sock, peer) = self.0.accept().await?;
        Self::take(sock.into_std()?, Some(peer))
    }

    fn accept_queued(&self) -> io::Result<(UringStream, Option<SocketAddr>)> {
        let (sock, peer) = SockRef::from(&self.0).accept()?;
        sock.set_nonblocking(true)?;
        Self::take(sock.into(), peer.as_socket())
    }
}

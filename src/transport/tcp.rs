//! TCP: the kernel socket underneath allows direct reads, and tells when
//! it received what is read.

use std::io::{self, Read};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::task::{Context, Poll, ready};
use std::time::SystemTime;

use socket2::SockRef;
use tokio::io::Interest;
use tokio::net::{TcpListener, TcpStream};

use crate::ancillary;

use super::{Accept, ByteStream};

impl ByteStream for TcpStream {
    fn read_direct(&mut self, buf: &mut [u8]) -> Option<io::Result<usize>> {
        Some((&*SockRef::from(&*self)).read(buf))
    }

    fn poll_read_stamped(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<(usize, Option<SystemTime>)>> {
        let fd = self.as_raw_fd();
        let len = buf.len();
        loop {
            ready!(self.poll_read_ready(cx))?;
            let mut short = None;
            let read = self.try_io(Interest::READABLE, || {
                let (n, received) = ancillary::recv_with_info(fd, buf)?;
                if n > 0 && n < len {
                    // A short read drained the socket: answered as
                    // WouldBlock, tokio forgets the readiness, as its own
                    // poll_read does, and the next read waits for epoll
                    // instead of costing a system call that finds nothing.
                    short = Some((n, received.at));
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                Ok((n, received.at))
            });
            match (read, short) {
                (_, Some(read)) => return Poll::Ready(Ok(read)),
                (Err(e), None) if e.kind() == io::ErrorKind::WouldBlock => continue,
                (read, None) => return Poll::Ready(read),
            }
        }
    }

    fn local_text(&self) -> String {
        self.local_addr()
            .map_or_else(|_| "?".into(), |a| a.to_string())
    }

    fn reset_on_close(&self) {
        let _ = SockRef::from(self).set_linger(Some(std::time::Duration::ZERO));
    }
}

impl Accept for TcpListener {
    type Stream = TcpStream;

    async fn accept_one(&self) -> io::Result<(TcpStream, Option<SocketAddr>)> {
        let (sock, peer) = self.accept().await?;
        // Replies are whole messages already; Nagle would only delay them.
        sock.set_nodelay(true)?;
        Ok((sock, Some(peer)))
    }

    fn accept_queued(&self) -> io::Result<(TcpStream, Option<SocketAddr>)> {
        let (sock, peer) = SockRef::from(self).accept()?;
        sock.set_nonblocking(true)?;
        let sock = TcpStream::from_std(sock.into())?;
        sock.set_nodelay(true)?;
        Ok((sock, peer.as_socket()))
    }
}

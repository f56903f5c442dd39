//! TCP: the kernel socket underneath allows direct reads.

use std::io::{self, Read};
use std::net::SocketAddr;

use socket2::SockRef;
use tokio::net::{TcpListener, TcpStream};

use super::{Accept, ByteStream};

impl ByteStream for TcpStream {
    fn read_direct(&mut self, buf: &mut [u8]) -> Option<io::Result<usize>> {
        Some((&*SockRef::from(&*self)).read(buf))
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

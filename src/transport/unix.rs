//! Unix stream sockets: like TCP, without a peer address.

use std::io::{self, Read};
use std::net::SocketAddr;

use socket2::SockRef;
use tokio::net::{UnixListener, UnixStream};

use super::{Accept, ByteStream};

impl ByteStream for UnixStream {
    fn read_direct(&mut self, buf: &mut [u8]) -> Option<io::Result<usize>> {
        Some((&*SockRef::from(&*self)).read(buf))
    }

    fn local_text(&self) -> String {
        self.local_addr()
            .map_or_else(|_| "?".into(), |a| format!("{a:?}"))
    }
}

impl Accept for UnixListener {
    type Stream = UnixStream;

    async fn accept_one(&self) -> io::Result<(UnixStream, Option<SocketAddr>)> {
        Ok((self.accept().await?.0, None))
    }

    fn accept_queued(&self) -> io::Result<(UnixStream, Option<SocketAddr>)> {
        let (sock, _) = SockRef::from(self).accept()?;
        sock.set_nonblocking(true)?;
        Ok((UnixStream::from_std(sock.into())?, None))
    }
}

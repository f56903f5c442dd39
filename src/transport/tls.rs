//! TLS listeners: a TCP connection upgraded by a rustls handshake, run in
//! the connection's own task after its PROXY header and admission. The
//! handshake is bounded in time and in number, so that slow or hostile
//! clients (a flood of ClientHellos, plain text on a TLS port) cannot hold
//! the places of connections that are served.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

use super::{ByteStream, Upgrade, Upgraded};
use crate::tls::counters::{Failure, TlsCounters};
use crate::tls::{ServerTls, SessionInfo};

/// The socket under a TLS session, server's or client's, as rustls needs
/// it: bytes already read with a PROXY header are read again first (they
/// are the start of the ClientHello), and a record buffer handed over
/// alone goes out with send(2) rather than writev(2), which costs the
/// kernel more per call (perf: about 0.15 µs per reply); rustls hands its
/// records over as a vector, nearly always of one.
pub struct TlsSocket<S> {
    early: Vec<u8>,
    inner: S,
}

impl<S> TlsSocket<S> {
    pub fn new(inner: S) -> Self {
        Self::with_early(Vec::new(), inner)
    }

    pub fn with_early(early: Vec<u8>, inner: S) -> Self {
        TlsSocket { early, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for TlsSocket<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.early.is_empty() {
            return Pin::new(&mut self.inner).poll_read(cx, buf);
        }
        let n = self.early.len().min(buf.remaining());
        buf.put_slice(&self.early[..n]);
        self.early.drain(..n);
        if self.early.is_empty() {
            // Nothing of it stays with an idle connection.
            self.early = Vec::new();
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for TlsSocket<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match bufs {
            [one] => Pin::new(&mut self.inner).poll_write(cx, one),
            many => Pin::new(&mut self.inner).poll_write_vectored(cx, many),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<S: ByteStream> ByteStream for TlsStream<TlsSocket<S>> {
    fn local_text(&self) -> String {
        self.get_ref().0.inner.local_text()
    }

    fn tls_info(&self) -> Option<SessionInfo> {
        Some(SessionInfo::of(self.get_ref().1))
    }

    fn reset_on_close(&self) {
        self.get_ref().0.inner.reset_on_close()
    }
}

/// The handshake of one TLS listener.
#[derive(Clone)]
pub struct TlsUpgrade {
    pub tls: Arc<ServerTls>,
    /// Handshakes in progress, over every TLS listener.
    pub handshakes: Arc<Semaphore>,
    pub counters: Arc<TlsCounters>,
    /// The drain deadline: a handshake under way when the server starts
    /// to stop is finished (in TLS 1.3 the client's first lines may follow
    /// its Finished message at once, and the drain promise covers them);
    /// only the drain's end abandons it.
    pub abort: CancellationToken,
}

/// The session is boxed: rustls's connection state is large, and inline it
/// would be laid out in every TLS connection's task twice over (measured:
/// 16 KiB per idle connection, against the 16 KiB limit).
impl<S: ByteStream> Upgrade<S> for TlsUpgrade {
    type Stream = Box<TlsStream<TlsSocket<S>>>;

    fn upgrade(&self, accepted: S, early: &mut Vec<u8>) -> Upgraded<Self::Stream> {
        let counters = self.counters.clone();
        let Ok(permit) = self.handshakes.clone().try_acquire_owned() else {
            counters.count_failure(Failure::Busy);
            return Upgraded::Handshake(Box::pin(async {
                Err(io::Error::other("too many TLS handshakes in progress"))
            }));
        };
        // The configuration current now serves this handshake to its end,
        // whatever a reload does meanwhile.
        let acceptor = TlsAcceptor::from(self.tls.config());
        let (timeout, abort) = (self.tls.handshake_timeout(), self.abort.clone());
        let accepted = TlsSocket::with_early(std::mem::take(early), accepted);
        Upgraded::Handshake(Box::pin(async move {
            let mut accept = acceptor.accept(accepted).into_fallible();
            let result = tokio::select! {
                done = tokio::time::timeout(timeout, &mut accept) => done,
                _ = abort.cancelled() => return Err(io::Error::other("drain timeout reached")),
            };
            // A failure is counted and its place given back before the
            // socket closes: a client that sees its connection end may
            // connect again at once, and must find both done.
            let failure = match &result {
                Ok(Ok(_)) => None,
                Ok(Err((e, _))) => Some(Failure::of(e)),
                Err(_) => Some(Failure::Timeout),
            };
            if let Some(failure) = failure {
                counters.count_failure(failure);
            }
            drop(permit);
            drop(accept);
            match result {
                Ok(Ok(stream)) => {
                    counters.count_established(stream.get_ref().1.protocol_version());
                    Ok(Box::new(stream))
                }
                Ok(Err((e, _socket))) => Err(e),
                Err(_) => Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "TLS handshake timed out",
                )),
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::TlsSettings;
    use rustls::pki_types::ServerName;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A certificate and key for localhost, as PEM files in `dir`.
    fn write_identity(dir: &std::path::Path) -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
        crate::tls::certs::fingerprint(cert.der())
    }

    /// A handshake keeps the configuration it started with: a reload while
    /// it is under way changes the certificate of the next one only.
    #[tokio::test]
    async fn a_handshake_under_way_finishes_on_the_certificate_it_started_with() {
        let dir = std::env::temp_dir().join(format!("tsecho-tls-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let old = write_identity(&dir);
        let settings = TlsSettings {
            cert: Some(dir.join("cert.pem")),
            key: Some(dir.join("key.pem")),
            ..TlsSettings::default()
        };
        let upgrade = TlsUpgrade {
            tls: Arc::new(ServerTls::load(&settings, "h").unwrap()),
            handshakes: Arc::new(Semaphore::new(4)),
            counters: Arc::default(),
            abort: CancellationToken::new(),
        };
        let (client_side, server_side) = tokio::io::duplex(64 * 1024);
        let Upgraded::Handshake(handshake) = upgrade.upgrade(server_side, &mut Vec::new()) else {
            panic!("TLS has a handshake");
        };
        let new = write_identity(&dir);
        upgrade.tls.reload().unwrap();
        let served = tokio::spawn(async move {
            let mut stream = handshake.await.unwrap();
            let mut line = [0; 5];
            stream.read_exact(&mut line).await.unwrap();
            stream.write_all(&line).await.unwrap();
            stream.flush().await.unwrap();
        });
        let client = crate::tls::client::ClientTlsArgs {
            insecure: true,
            ..Default::default()
        }
        .for_host("localhost")
        .unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let mut stream = client.connector.connect(name, client_side).await.unwrap();
        stream.write_all(b"ping\n").await.unwrap();
        let mut echoed = [0; 5];
        stream.read_exact(&mut echoed).await.unwrap();
        served.await.unwrap();
        let seen = stream.get_ref().1.peer_certificates().unwrap()[0].clone();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(crate::tls::certs::fingerprint(&seen), old);
        assert_ne!(old, new);
        assert_eq!(
            upgrade
                .tls
                .reloads
                .ok
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
    }
}

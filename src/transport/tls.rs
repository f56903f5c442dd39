//! TLS listeners: a TCP connection upgraded by a rustls handshake, run in
//! the connection's own task after its PROXY header and admission. The
//! handshake is bounded in time and in number, so that slow or hostile
//! clients (a flood of ClientHellos, plain text on a TLS port) cannot hold
//! the places of connections that are served.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

use super::{ByteStream, Upgrade, Upgraded};
use crate::tls::counters::{Failure, TlsCounters};
use crate::tls::{ServerTls, SessionInfo};

impl<S: ByteStream> ByteStream for TlsStream<S> {
    fn local_text(&self) -> String {
        self.get_ref().0.local_text()
    }

    fn tls_info(&self) -> Option<SessionInfo> {
        Some(SessionInfo::of(self.get_ref().1))
    }
}

/// The handshake of one TLS listener.
#[derive(Clone)]
pub struct TlsUpgrade {
    pub tls: Arc<ServerTls>,
    /// Handshakes in progress, over every TLS listener.
    pub handshakes: Arc<Semaphore>,
    pub timeout: Duration,
    pub counters: Arc<TlsCounters>,
    /// A server that stops abandons handshakes: nothing was received yet.
    pub shutdown: CancellationToken,
}

/// The session is boxed: rustls's connection state is large, and inline it
/// would be laid out in every TLS connection's task twice over (measured:
/// 16 KiB per idle connection, against the 16 KiB limit).
impl<S: ByteStream> Upgrade<S> for TlsUpgrade {
    type Stream = Box<TlsStream<S>>;

    fn upgrade(&self, accepted: S) -> Upgraded<Box<TlsStream<S>>> {
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
        let (timeout, shutdown) = (self.timeout, self.shutdown.clone());
        Upgraded::Handshake(Box::pin(async move {
            let result = tokio::select! {
                done = tokio::time::timeout(timeout, acceptor.accept(accepted)) => done,
                _ = shutdown.cancelled() => return Err(io::Error::other("server stopping")),
            };
            drop(permit);
            match result {
                Ok(Ok(stream)) => {
                    counters.count_established(stream.get_ref().1.protocol_version());
                    Ok(Box::new(stream))
                }
                Ok(Err(e)) => {
                    counters.count_failure(Failure::of(&e));
                    Err(e)
                }
                Err(_) => {
                    counters.count_failure(Failure::Timeout);
                    Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "TLS handshake timed out",
                    ))
                }
            }
        }))
    }
}

//! One bound listener, served: stream sockets get the accept loop, with
//! admission under the connection limits and PROXY headers, and hand each
//! connection to `stream::serve`; datagram sockets go to their loops.

mod accept;
pub mod bind;
mod proxy;
pub mod socket_file;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use tokio::net::{TcpListener, UnixDatagram, UnixListener};
use tokio_util::either::Either;
use tokio_util::task::TaskTracker;

pub use accept::accept_next;
use accept::queued;
pub use bind::{Bound, BoundSocket, LocalAddr};

use crate::context::{Config, ListenerCtx, Shared};
use crate::datagram;
use crate::endpoint::Transport;
use crate::limits::Refusal;
use crate::service::stamp::Origin;
use crate::stats::Stats;
use crate::stream::{self, ConnectionLog, Handover, On};
use crate::transport::tls::TlsUpgrade;
use crate::transport::{Accept, ByteStream, Plain, Upgrade, Upgraded};
use crate::uring::UringListener;

/// Serves one bound socket until shutdown.
pub async fn serve(b: Bound, ctx: Arc<ListenerCtx>, shared: Arc<Shared>, tracker: TaskTracker) {
    let proxy = b.endpoint.proxy;
    let registered = match b.socket {
        BoundSocket::Udp(sock) => return datagram::serve_udp_on_a_thread(sock, ctx, shared).await,
        BoundSocket::Tcp(l) => TcpListener::from_std(l).map(Serving::Tcp),
        BoundSocket::Unix(l) => UnixListener::from_std(l).map(Serving::Unix),
        BoundSocket::UnixGram(s) => UnixDatagram::from_std(s).map(Serving::UnixGram),
    };
    // Registering joins the I/O driver of the runtime this task runs on.
    match registered {
        Ok(Serving::Tcp(l)) if b.endpoint.transport == Transport::Tls => {
            match tls_upgrade(&ctx, &shared) {
                Some(tls) => accept_loop(l, tls, proxy, ctx, shared, tracker).await,
                None => tracing::error!("cannot serve {}: no TLS certificate", b.endpoint),
            }
        }
        Ok(Serving::Tcp(l)) if serves_with_uring(&shared) => match UringListener::new(l) {
            Ok(l) => accept_loop(l, Plain, proxy, ctx, shared, tracker).await,
            Err((e, l)) => {
                tracing::warn!("cannot start an io_uring thread ({e}); serving TCP with epoll");
                accept_loop(l, Plain, proxy, ctx, shared, tracker).await
            }
        },
        Ok(Serving::Tcp(l)) => accept_loop(l, Plain, proxy, ctx, shared, tracker).await,
        Ok(Serving::Unix(l)) => accept_loop(l, Plain, proxy, ctx, shared, tracker).await,
        Ok(Serving::UnixGram(s)) => datagram::serve_unixgram(s, ctx, shared).await,
        Err(e) => tracing::error!("cannot serve {}: {e}", b.endpoint),
    }
}

/// Whether this listener's connections go through io_uring: as configured,
/// resolved once when the server started.
fn serves_with_uring(shared: &Shared) -> bool {
    matches!(shared.config().options.io.resolve(), Ok(true))
}

/// The handshake of a tls:// listener, with the server's certificates and
/// the listener's counters.
fn tls_upgrade(ctx: &ListenerCtx, shared: &Shared) -> Option<TlsUpgrade> {
    Some(TlsUpgrade {
        tls: shared.tls.get()?.clone(),
        handshakes: shared.tls_handshakes.clone(),
        counters: ctx.tls.clone()?,
        abort: ctx.abort.clone(),
    })
}

/// A bound socket registered with the runtime that serves it.
enum Serving {
    Tcp(TcpListener),
    Unix(UnixListener),
    UnixGram(UnixDatagram),
}

/// Accepts until shutdown; each connection goes to a task of its own,
/// which reads its PROXY header, passes admission, upgrades (the TLS
/// handshake) and is served. On shutdown the connections the kernel has
/// already completed are taken too, unless the socket lives on elsewhere:
/// closing it would reset clients whose `connect` had succeeded.
async fn accept_loop<L: Accept, U: Upgrade<L::Stream>>(
    listener: L,
    upgrade: U,
    proxy: bool,
    ctx: Arc<ListenerCtx>,
    shared: Arc<Shared>,
    tracker: TaskTracker,
) {
    let take = |sock: L::Stream, peer: Option<SocketAddr>| {
        if proxy {
            if !peer.is_some_and(|p| proxy::is_trusted(&shared, p.ip())) {
                Stats::add(&shared.stats.local().proxy_rejected_untrusted, 1);
                return;
            }
            let task =
                proxy::serve_proxied(sock, peer, upgrade.clone(), ctx.clone(), shared.clone());
            listener.spawn(task, &tracker);
        } else if let Some(connection) = admit(sock, &upgrade, peer, Vec::new(), &ctx, &shared) {
            listener.spawn(connection, &tracker);
        }
    };
    while let Some((sock, peer)) =
        accept_next(&listener, &ctx.stop, &shared.stats, &ctx.accept_log).await
    {
        take(sock, peer);
    }
    if ctx.socket_kept.load(Ordering::Relaxed) {
        return;
    }
    for (sock, peer) in queued(&listener, &shared.stats) {
        take(sock, peer);
    }
}

/// Admission by the client's address: the connection to serve, or None
/// when a limit refuses it. A refused connection is closed at once, which
/// tells the client now instead of leaving it in the backlog to time out.
fn admit<S: ByteStream, U: Upgrade<S>>(
    sock: S,
    upgrade: &U,
    peer: Option<SocketAddr>,
    mut early_input: Vec<u8>,
    listener: &Arc<ListenerCtx>,
    shared: &Arc<Shared>,
) -> Option<impl Future<Output = ()> + Send + 'static> {
    let config = shared.config();
    let admission = match shared
        .gate
        .admit(peer.map(|p| p.ip()), &config.options.limits)
    {
        Ok(admission) => admission,
        Err(Refusal::MaxConnections) => {
            Stats::add(&shared.stats.local().connections_rejected_max, 1);
            return None;
        }
        Err(Refusal::PerIp) => {
            Stats::add(&shared.stats.local().connections_rejected_per_ip, 1);
            return None;
        }
    };
    let origin = origin_for(&config, &sock, peer);
    // A handshake takes what came with the PROXY header as its own.
    let upgraded = upgrade.upgrade(sock, &mut early_input);
    let handover = Handover {
        admission,
        origin,
        early_input,
        log: config.options.log_connections.then(|| {
            Box::new(ConnectionLog {
                peer,
                started: Instant::now(),
            })
        }),
    };
    let (listener, shared) = (listener.clone(), shared.clone());
    Some(match upgraded {
        Upgraded::Ready(stream) => {
            Either::Left(stream::serve(stream, On { shared, listener }, handover))
        }
        Upgraded::Handshake(handshake) => Either::Right(Box::pin(async move {
            match handshake.await {
                Ok(stream) => {
                    let mut handover = handover;
                    if let Some(origin) = handover.origin.as_mut() {
                        origin.tls = stream.tls_info().unwrap_or_default();
                    }
                    stream::serve(stream, On { shared, listener }, handover).await
                }
                // Its admission is given back with the handover.
                Err(e) => tracing::debug!("handshake failed: {e}"),
            }
        })),
    })
}

/// What a reply template may say about a connection; only built when the
/// template uses it.
fn origin_for<S: ByteStream>(
    config: &Config,
    sock: &S,
    peer: Option<SocketAddr>,
) -> Option<Box<Origin>> {
    let template = config.options.reply_template.as_ref()?;
    template.needs_origin().then(|| {
        Box::new(Origin {
            peer: peer.map_or_else(|| "unix".to_string(), |p| p.to_string()),
            local: sock.local_text(),
            host: config.host.clone(),
            tls: Default::default(),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::ServiceKind;
    use crate::settings::Options;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    /// A connected socket, as an accept loop would hand over (the
    /// listener is kept so that the connection stays open).
    async fn connected_socket() -> (TcpListener, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let sock = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        (listener, sock)
    }

    /// An idle connection's memory is its task (target: 1.5 KiB each with
    /// the socket's runtime state); this keeps the future from creeping
    /// back up unnoticed, as it did twice (to 968, then 712 bytes).
    #[tokio::test]
    async fn connection_future_stays_small() {
        let (_listener, sock) = connected_socket().await;
        let shared = Arc::new(Shared::for_tests(Options::default()));
        let ctx = Arc::new(ListenerCtx::for_tests(ServiceKind::Stamp));
        let fut = admit(sock, &Plain, None, Vec::new(), &ctx, &shared).unwrap();
        let size = std::mem::size_of_val(&fut);
        eprintln!("connection future: {size} bytes");
        assert!(size <= 700, "connection future grew to {size} bytes");
    }

    /// A TLS connection's task is no larger than a plain one's: its
    /// session lives in a box of its own (inline, it was laid out twice,
    /// and an idle TLS connection cost 16 KiB instead of 9.7).
    #[tokio::test]
    async fn tls_connection_future_stays_small() {
        let (_listener, sock) = connected_socket().await;
        let shared = Arc::new(Shared::for_tests(Options::default()));
        let ctx = Arc::new(ListenerCtx {
            tls: Some(Arc::default()),
            ..ListenerCtx::for_tests(ServiceKind::Stamp)
        });
        let settings = crate::tls::TlsSettings {
            self_signed: true,
            ..Default::default()
        };
        let upgrade = TlsUpgrade {
            tls: Arc::new(crate::tls::ServerTls::load(&settings, "h").unwrap()),
            handshakes: Arc::new(tokio::sync::Semaphore::new(1)),
            counters: ctx.tls.clone().unwrap(),
            abort: shared.abort.clone(),
        };
        let fut = admit(sock, &upgrade, None, Vec::new(), &ctx, &shared).unwrap();
        let size = std::mem::size_of_val(&fut);
        eprintln!("TLS connection future: {size} bytes");
        assert!(size <= 700, "TLS connection future grew to {size} bytes");
    }

    /// A transport with a handshake, as TLS is: the stream is served once
    /// its greeting has come.
    #[derive(Clone)]
    struct Greeted;

    impl Upgrade<tokio::io::DuplexStream> for Greeted {
        type Stream = tokio::io::DuplexStream;

        fn upgrade(
            &self,
            mut accepted: tokio::io::DuplexStream,
            _early: &mut Vec<u8>,
        ) -> Upgraded<Self::Stream> {
            Upgraded::Handshake(Box::pin(async move {
                let mut hello = [0; 6];
                accepted.read_exact(&mut hello).await?;
                if &hello != b"HELLO\n" {
                    return Err(std::io::Error::other("no greeting"));
                }
                Ok(accepted)
            }))
        }
    }

    /// What the connection's task does with a handshake: serves the
    /// upgraded stream after it, or closes and gives the place back.
    #[tokio::test]
    async fn a_handshake_runs_in_the_connection_task_before_it_is_served() {
        let shared = Arc::new(Shared::for_tests(Options::default()));
        let ctx = Arc::new(ListenerCtx::for_tests(ServiceKind::Echo));
        let deadline = std::time::Duration::from_secs(10);
        for (sent, expected) in [
            (&b"HELLO\nping\n"[..], &b"ping\n"[..]),
            (b"WRONG!ping\n", b""),
        ] {
            let (mut client, server) = tokio::io::duplex(64);
            let connection = admit(server, &Greeted, None, Vec::new(), &ctx, &shared).unwrap();
            let served = tokio::spawn(connection);
            client.write_all(sent).await.unwrap();
            client.shutdown().await.unwrap();
            let mut reply = Vec::new();
            tokio::time::timeout(deadline, client.read_to_end(&mut reply))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(reply, expected);
            tokio::time::timeout(deadline, served)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(shared.gate.open(), 0);
        }
    }

    /// The same code that serves a TCP connection serves an in-memory
    /// stream: the seam a TLS stream plugs into.
    #[tokio::test]
    async fn a_duplex_stream_is_served_by_the_tcp_connection_code() {
        let shared = Arc::new(Shared::for_tests(Options::default()));
        let ctx = Arc::new(ListenerCtx::for_tests(ServiceKind::Stamp));
        let (client, server) = tokio::io::duplex(64);
        let connection = admit(server, &Plain, None, b"early\n".to_vec(), &ctx, &shared).unwrap();
        let served = tokio::spawn(connection);
        let (mut read, mut write) = tokio::io::split(client);
        write.write_all(b"hello\r\nworld\n").await.unwrap();
        write.shutdown().await.unwrap();
        let deadline = std::time::Duration::from_secs(10);
        let mut replies = Vec::new();
        tokio::time::timeout(deadline, read.read_to_end(&mut replies))
            .await
            .unwrap()
            .unwrap();
        let replies: Vec<&[u8]> = replies.split_inclusive(|&b| b == b'\n').collect();
        assert_eq!(replies.len(), 3, "{replies:?}");
        for (reply, message) in replies
            .iter()
            .zip([&b"early\n"[..], b"hello\r\n", b"world\n"])
        {
            assert!(reply.starts_with(b"["), "{reply:?}");
            assert!(reply.ends_with(&[b"] ", message].concat()), "{reply:?}");
        }
        tokio::time::timeout(deadline, served)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(shared.gate.open(), 0);
        assert_eq!(shared.stats.snapshot().stream_replies, 3);
    }
}

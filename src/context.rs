//! What the tasks of one server share, handed down from the server to its
//! listeners and from them to each connection: settings, counters, the
//! shutdown signals, and each listener's own name, service and limiter.
//!
//! It sits below everything that uses it, so no connection module needs to
//! reach back up into the server.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::clock::TimeStyle;
use crate::limits::ConnectionGate;
use crate::rate_limit::ResponseLimiter;
use crate::service::ServiceKind;
use crate::settings::Options;
use crate::stats::{ListenerStats, Stats};
use crate::tls::ServerTls;
use crate::tls::counters::TlsCounters;

/// State every task of one server shares.
pub struct Shared {
    pub options: Options,
    pub style: Arc<TimeStyle>,
    pub stats: Stats,
    /// Graceful stop: no new connections, answer what has arrived, close.
    pub shutdown: CancellationToken,
    /// Drain deadline passed: drop whatever is still open.
    pub abort: CancellationToken,
    /// Source ports a UDP reply never goes to, our own included.
    pub reflector_ports: Vec<u16>,
    /// Open stream connections, in total and per source; the one count of
    /// open connections (the gauge in /metrics reads it).
    pub gate: Arc<ConnectionGate>,
    /// `{host}` in reply templates.
    pub host: Arc<str>,
    /// One per listener, in the order they were given.
    pub listeners: Vec<Arc<ListenerCtx>>,
    /// The certificates of tls:// listeners, if there is one.
    pub tls: Option<Arc<ServerTls>>,
    /// Places for TLS handshakes in progress, over every listener.
    pub tls_handshakes: Arc<Semaphore>,
    /// UDP sockets whose threads block in a receive, to wake on shutdown.
    udp_sockets: Mutex<Vec<Arc<std::net::UdpSocket>>>,
}

impl Shared {
    pub fn new(
        options: Options,
        host: Arc<str>,
        reflector_ports: Vec<u16>,
        listeners: Vec<Arc<ListenerCtx>>,
        tls: Option<Arc<ServerTls>>,
    ) -> Self {
        let handshakes = options.tls.max_handshakes(options.limits.max_connections);
        Shared {
            tls,
            tls_handshakes: Arc::new(Semaphore::new(handshakes)),
            style: Arc::new(options.time.clone()),
            options,
            stats: Stats::default(),
            shutdown: CancellationToken::new(),
            abort: CancellationToken::new(),
            reflector_ports,
            gate: Arc::new(ConnectionGate::default()),
            host,
            listeners,
            udp_sockets: Mutex::default(),
        }
    }

    pub fn watch_udp_socket(&self, sock: Arc<std::net::UdpSocket>) {
        if let Ok(mut sockets) = self.udp_sockets.lock() {
            sockets.push(sock);
        }
    }

    /// Shuts the receiving side of every UDP socket, which returns their
    /// threads from a blocked receive (after `shutdown` is cancelled, so
    /// that they stop).
    pub fn wake_udp_threads(&self) {
        if let Ok(sockets) = self.udp_sockets.lock() {
            for sock in sockets.iter() {
                // Unconnected UDP sockets report ENOTCONN, yet are shut.
                let _ = socket2::SockRef::from(&**sock).shutdown(std::net::Shutdown::Read);
            }
        }
    }

    #[cfg(test)]
    pub fn for_tests(options: Options) -> Shared {
        Shared::new(options, "h".into(), Vec::new(), Vec::new(), None)
    }
}

/// A listener's name, service and counters, shared by its connections and
/// by its copies on every thread.
#[derive(Debug)]
pub struct ListenerCtx {
    pub service: ServiceKind,
    pub name: Arc<str>,
    pub stats: ListenerStats,
    /// Failing accepts are logged at most once a second, by any copy of
    /// the listener.
    pub accept_log: LogLimiter,
    /// UDP reply limits, shared by the listener's copies.
    pub udp_limiter: Mutex<ResponseLimiter>,
    /// Handshakes and sessions, on tls:// listeners.
    pub tls: Option<Arc<TlsCounters>>,
}

impl ListenerCtx {
    pub fn new(service: ServiceKind, name: Arc<str>, limiter: ResponseLimiter) -> Self {
        ListenerCtx {
            service,
            name,
            stats: ListenerStats::default(),
            accept_log: LogLimiter::default(),
            udp_limiter: Mutex::new(limiter),
            tls: None,
        }
    }

    /// A tls:// listener's context, which counts handshakes.
    pub fn with_tls_counters(mut self) -> Self {
        self.tls = Some(Arc::default());
        self
    }

    #[cfg(test)]
    pub fn for_tests(service: ServiceKind) -> ListenerCtx {
        ListenerCtx::new(
            service,
            "x".into(),
            ResponseLimiter::new(&Default::default()),
        )
    }
}

/// Lets one line through per interval, however many threads log: a
/// failure that repeats thousands of times a second must not flood the log.
#[derive(Debug, Default)]
pub struct LogLimiter {
    last: Mutex<Option<Instant>>,
}

impl LogLimiter {
    pub fn may_log(&self, interval: std::time::Duration) -> bool {
        let Ok(mut last) = self.last.lock() else {
            return false;
        };
        let due = last.is_none_or(|at| at.elapsed() >= interval);
        if due {
            *last = Some(Instant::now());
        }
        due
    }
}

//! What the tasks of one server share, handed down from the server to its
//! listeners and from them to each connection: settings, counters, the
//! shutdown signals, and each listener's own name, service and limiter.
//!
//! It sits below everything that uses it, so no connection module needs to
//! reach back up into the server.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Instant;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::clock::TimeStyle;
use crate::endpoint::{Endpoint, Transport};
use crate::fault::ListenerFaults;
use crate::limits::ConnectionGate;
use crate::rate_limit::ResponseLimiter;
use crate::service::ServiceKind;
use crate::settings::Options;
use crate::stats::{ListenerStats, ReloadCounts, Stats};
use crate::tls::ServerTls;
use crate::tls::counters::TlsCounters;

/// The settings in effect, swapped whole by a reload. A connection takes
/// the one current when it is accepted; its replies follow later swaps of
/// the time format and template (`Shared::is_current`).
#[derive(Debug)]
pub struct Config {
    pub options: Options,
    pub style: Arc<TimeStyle>,
    /// `{host}` in reply templates.
    pub host: Arc<str>,
    /// Source ports a UDP reply never goes to, our own included.
    pub reflector_ports: PortSet,
    generation: u64,
}

impl Config {
    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn new(options: Options, host: Arc<str>, reflector_ports: Vec<u16>) -> Self {
        Config {
            style: Arc::new(options.time.clone()),
            options,
            host,
            reflector_ports: PortSet::from(&reflector_ports[..]),
            generation: 0,
        }
    }
}

/// A set of ports, one bit each (8 KiB): asked once per datagram, so a
/// lookup is a load and a shift rather than a scan.
#[derive(Debug)]
pub struct PortSet(Box<[u64; 1024]>);

impl PortSet {
    #[inline]
    pub fn contains(&self, port: u16) -> bool {
        self.0[usize::from(port >> 6)] & (1 << (port & 63)) != 0
    }
}

impl From<&[u16]> for PortSet {
    fn from(ports: &[u16]) -> Self {
        let mut bits = Box::new([0u64; 1024]);
        for &port in ports {
            bits[usize::from(port >> 6)] |= 1 << (port & 63);
        }
        PortSet(bits)
    }
}

/// State every task of one server shares.
pub struct Shared {
    config: RwLock<Arc<Config>>,
    /// The generation of `config`, read without the lock.
    generation: AtomicU64,
    pub stats: Stats,
    /// Graceful stop: no new connections, answer what has arrived, close.
    /// Each listener's own stop is a child of it.
    pub shutdown: CancellationToken,
    /// Drain deadline passed: drop whatever is still open.
    pub abort: CancellationToken,
    /// Readiness withdrawn (/readyz answers 503) while still serving: the
    /// shutdown delay, then the drain.
    pub unready: CancellationToken,
    /// The metrics listener stops accepting: at the drain's end (a child
    /// of `abort`), or once another process took its socket over.
    pub metrics_stop: CancellationToken,
    /// Open stream connections, in total and per source; the one count of
    /// open connections (the gauge in /metrics reads it).
    pub gate: Arc<ConnectionGate>,
    /// One per listener being served, in the order they were given.
    listeners: Mutex<Vec<Arc<ListenerCtx>>>,
    /// The certificates of tls:// listeners, once there is one.
    pub tls: OnceLock<Arc<ServerTls>>,
    /// Places for TLS handshakes in progress, over every listener.
    pub tls_handshakes: Arc<Semaphore>,
    pub config_reloads: ReloadCounts,
}

impl Shared {
    pub fn new(config: Config, tls: Option<Arc<ServerTls>>) -> Self {
        let options = &config.options;
        let handshakes = options.tls.max_handshakes(options.limits.max_connections);
        let abort = CancellationToken::new();
        Shared {
            tls: tls.map(OnceLock::from).unwrap_or_default(),
            tls_handshakes: Arc::new(Semaphore::new(handshakes)),
            config: RwLock::new(Arc::new(config)),
            generation: AtomicU64::new(0),
            stats: Stats::default(),
            shutdown: CancellationToken::new(),
            metrics_stop: abort.child_token(),
            abort,
            unready: CancellationToken::new(),
            gate: Arc::new(ConnectionGate::default()),
            listeners: Mutex::default(),
            config_reloads: ReloadCounts::default(),
        }
    }

    /// The settings new connections and datagrams get.
    pub fn config(&self) -> Arc<Config> {
        match self.config.read() {
            Ok(config) => config.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Whether `config` is still the one in effect: one atomic load, for
    /// loops that keep a copy.
    pub fn is_current(&self, config: &Config) -> bool {
        self.generation() == config.generation
    }

    /// Which configuration is in effect: it changes with every reload.
    #[inline]
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    /// Puts `config` in effect for what starts from now on.
    pub fn replace_config(&self, mut config: Config) {
        let Ok(mut current) = self.config.write() else {
            return;
        };
        config.generation = current.generation + 1;
        *current = Arc::new(config);
        self.generation.store(current.generation, Ordering::Relaxed);
    }

    pub fn listeners(&self) -> Vec<Arc<ListenerCtx>> {
        self.listeners.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// A listener's context, its stop tied to the server's.
    pub fn add_listener(&self, endpoint: &Endpoint) -> Arc<ListenerCtx> {
        let limiter = ResponseLimiter::new(&self.config().options.limits.udp);
        let name = endpoint.to_string().into();
        let mut ctx = ListenerCtx::new(endpoint.service, name, limiter);
        ctx.stop = self.shutdown.child_token();
        ctx.abort = self.abort.child_token();
        ctx.stateful = endpoint.stateful;
        if endpoint.transport == Transport::Tls {
            ctx.tls = Some(Arc::default());
        }
        if !endpoint.faults.is_none() {
            ctx.faults = Some(ListenerFaults {
                spec: endpoint.faults.clone(),
                counts: Default::default(),
            });
        }
        let ctx = Arc::new(ctx);
        if let Ok(mut listeners) = self.listeners.lock() {
            listeners.push(ctx.clone());
        }
        ctx
    }

    /// Stops serving one listener: no new connections, and its open ones
    /// drain, as on shutdown; `abort` ends what is left after the drain timeout.
    pub fn remove_listener(&self, ctx: &Arc<ListenerCtx>) {
        if let Ok(mut listeners) = self.listeners.lock() {
            listeners.retain(|l| !Arc::ptr_eq(l, ctx));
        }
        ctx.stop.cancel();
    }

    #[cfg(test)]
    pub fn for_tests(options: Options) -> Shared {
        Shared::new(Config::new(options, "h".into(), Vec::new()), None)
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
    /// This listener's graceful stop (the server's, or its removal by a
    /// reload): no new connections, drain the open ones.
    pub stop: CancellationToken,
    /// The drain deadline passed: drop what is still open.
    pub abort: CancellationToken,
    /// Another listener or process serves this socket after the stop, so
    /// the connections waiting in its queue are theirs to accept.
    pub socket_kept: AtomicBool,
    /// What this listener injects (`?delay=20ms&drop=1%`), if anything.
    pub faults: Option<ListenerFaults>,
    /// STAMP: the reflector keeps a sequence per session (`?mode=stateful`).
    pub stateful: bool,
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
            stop: CancellationToken::new(),
            abort: CancellationToken::new(),
            socket_kept: AtomicBool::new(false),
            faults: None,
            stateful: false,
        }
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

#[cfg(test)]
mod tests {
    use super::PortSet;

    #[test]
    fn port_set_holds_exactly_its_ports() {
        let set = PortSet::from(&[0, 7, 63, 64, 65535][..]);
        for port in [0, 7, 63, 64, 65535] {
            assert!(set.contains(port), "{port}");
        }
        for port in [1, 8, 62, 65, 128, 65534] {
            assert!(!set.contains(port), "{port}");
        }
    }
}

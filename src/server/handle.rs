//! A running server: what it serves, its listeners added and removed by
//! reloads, and the drain on shutdown.

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio_util::task::TaskTracker;

use super::Group;
use crate::context::{ListenerCtx, Shared};
use crate::control::Handoff;
use crate::endpoint::{Endpoint, Transport};
use crate::listener::{self, LocalAddr};
use crate::metrics;
use crate::stats::Snapshot;

/// A listener the server is serving.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listening {
    /// As bound, with the real port: `tcp://127.0.0.1:40123`.
    pub endpoint: Endpoint,
    pub local: LocalAddr,
}

/// One listener being served, and what it takes to stop it or hand it on.
pub(crate) struct Served {
    /// As the settings give it; None for a socket systemd passed.
    pub configured: Option<Endpoint>,
    pub listening: Listening,
    pub ctx: Arc<ListenerCtx>,
    /// Another descriptor for each copy's socket: handed to a process
    /// that takes over, or reused when a reload changes only the service.
    pub fds: Vec<OwnedFd>,
    /// Removed when the listener is (None for inherited sockets).
    pub socket_file: Option<PathBuf>,
}

/// A running server. Dropping it stops the server at once; `shutdown()`
/// stops it gracefully.
pub struct ServerHandle {
    pub(super) shared: Arc<Shared>,
    pub(super) served: Mutex<Vec<Served>>,
    pub(super) runtimes: Vec<tokio::runtime::Handle>,
    /// Listeners and their connections.
    tracker: TaskTracker,
    /// The metrics endpoint and its connections, which outlive the drain.
    helpers: TaskTracker,
    metrics: Mutex<Option<SocketAddr>>,
    /// The /metrics socket again, with its endpoint, to hand over.
    metrics_socket: Mutex<Option<(Endpoint, OwnedFd)>>,
    /// One reload at a time.
    pub(super) reloading: tokio::sync::Mutex<()>,
    /// Another process serves the sockets now: their files are its.
    handed_over: AtomicBool,
}

impl ServerHandle {
    pub(super) fn new(shared: Arc<Shared>, runtimes: Vec<tokio::runtime::Handle>) -> Self {
        ServerHandle {
            shared,
            served: Mutex::default(),
            runtimes,
            tracker: TaskTracker::new(),
            helpers: TaskTracker::new(),
            metrics: Mutex::default(),
            metrics_socket: Mutex::default(),
            reloading: tokio::sync::Mutex::new(()),
            handed_over: AtomicBool::new(false),
        }
    }

    /// Starts serving a group of sockets, each copy on its runtime.
    pub(super) fn serve(&self, group: Group) {
        let Some(first) = group.copies.first() else {
            return;
        };
        let endpoint = first.endpoint.clone();
        let kernel_clock = endpoint
            .service
            .takes_kernel_time(self.shared.config().options.stamp_clock);
        for b in &group.copies {
            b.socket
                .report_receive_times(endpoint.transport, kernel_clock);
        }
        match endpoint.faults.is_none() {
            true => tracing::info!("listening on {endpoint} ({})", endpoint.service),
            false => tracing::info!(
                "listening on {endpoint} ({}, injecting faults: {})",
                endpoint.service,
                endpoint.faults
            ),
        }
        let ctx = self.shared.add_listener(&endpoint);
        let mut fds = Vec::new();
        for b in &group.copies {
            match b.duplicate_fd() {
                Ok(fd) => fds.push(fd),
                Err(e) => tracing::warn!("{endpoint} cannot be handed over or reused: {e}"),
            }
        }
        let served = Served {
            socket_file: group.socket_file(),
            configured: group.configured,
            listening: Listening {
                endpoint,
                local: first.local.clone(),
            },
            ctx: ctx.clone(),
            fds,
        };
        for (i, b) in group.copies.into_iter().enumerate() {
            let task = listener::serve(b, ctx.clone(), self.shared.clone(), self.tracker.clone());
            match self.runtimes.get(i % self.runtimes.len().max(1)) {
                Some(runtime) => self.tracker.spawn_on(task, runtime),
                None => self.tracker.spawn(task),
            };
        }
        if let Ok(mut all) = self.served.lock() {
            all.push(served);
        }
    }

    /// Stops one listener: no new connections, its open ones drain, and
    /// after the drain timeout what is left is dropped. `replaced`: a
    /// listener that replaces this one serves its socket (and file) now.
    pub(super) fn retire(&self, served: Served, replaced: bool) {
        tracing::info!("stopped listening on {}", served.listening.endpoint);
        served.ctx.socket_kept.store(replaced, Ordering::Relaxed);
        self.shared.remove_listener(&served.ctx);
        if !replaced && let Some(path) = &served.socket_file {
            let _ = std::fs::remove_file(path);
        }
        let abort = served.ctx.abort.clone();
        let drain = self.shared.config().options.drain_timeout;
        // Ends early when the server's own abort (its parent) comes first,
        // so a shutdown never waits on it.
        self.helpers.spawn(async move {
            tokio::select! {
                () = tokio::time::sleep(drain) => abort.cancel(),
                () = abort.cancelled() => {}
            }
        });
    }

    /// /metrics, and the certificate file watch.
    pub(super) fn start_helpers(&self, metrics: Option<(SocketAddr, tokio::net::TcpListener)>) {
        self.helpers.spawn(watch_certificates(self.shared.clone()));
        if let Some((addr, listener)) = metrics {
            tracing::info!("metrics on http://{addr}/metrics");
            let endpoint = self.shared.config().options.metrics.clone();
            let fd = std::os::fd::AsFd::as_fd(&listener).try_clone_to_owned();
            if let (Some(endpoint), Ok(fd), Ok(mut socket)) =
                (endpoint, fd, self.metrics_socket.lock())
            {
                *socket = Some((endpoint, fd));
            }
            let task = metrics::serve(listener, self.shared.clone(), self.helpers.clone());
            self.helpers.spawn(task);
            if let Ok(mut metrics) = self.metrics.lock() {
                *metrics = Some(addr);
            }
        }
    }

    pub fn listeners(&self) -> Vec<Listening> {
        self.served
            .lock()
            .map(|all| all.iter().map(|s| s.listening.clone()).collect())
            .unwrap_or_default()
    }

    /// The address of the first listener on `transport` with an IP address.
    pub fn addr(&self, transport: Transport) -> Option<SocketAddr> {
        self.listeners().into_iter().find_map(|l| match l.local {
            LocalAddr::Inet(addr) if l.endpoint.transport == transport => Some(addr),
            _ => None,
        })
    }

    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.addr(Transport::Tcp)
    }

    pub fn udp_addr(&self) -> Option<SocketAddr> {
        self.addr(Transport::Udp)
    }

    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.addr(Transport::Tls)
    }

    /// Where /metrics, /healthz and /readyz are served.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.lock().ok().and_then(|m| *m)
    }

    pub fn stats(&self) -> Snapshot {
        self.shared.stats.snapshot()
    }

    /// Stream connections open now.
    pub fn connections_open(&self) -> usize {
        self.shared.gate.open()
    }

    /// /readyz answers 503 from now on while everything is still served:
    /// the moment to let load balancers take us out before the drain.
    pub fn withdraw_readiness(&self) {
        self.shared.unready.cancel();
    }

    /// Every listening socket, for a process that takes over: each
    /// listener as configured, with another descriptor for each copy.
    pub fn handoffs(&self) -> Vec<Handoff> {
        let Ok(served) = self.served.lock() else {
            return Vec::new();
        };
        served
            .iter()
            .map(|s| Handoff {
                endpoint: s
                    .configured
                    .clone()
                    .unwrap_or_else(|| s.listening.endpoint.clone()),
                inherited: s.configured.is_none(),
                fds: s.fds.iter().filter_map(|fd| fd.try_clone().ok()).collect(),
            })
            .collect()
    }

    /// The /metrics socket, for a process that takes over: from then on
    /// it answers, and this one stops accepting there.
    pub fn metrics_handoff(&self) -> Option<(Endpoint, OwnedFd)> {
        let socket = self.metrics_socket.lock().ok()?;
        let (endpoint, fd) = socket.as_ref()?;
        Some((endpoint.clone(), fd.try_clone().ok()?))
    }

    /// Another process serves /metrics on our socket now.
    pub fn stop_metrics(&self) {
        self.shared.metrics_stop.cancel();
    }

    /// Reads the TLS certificate, key and client CA files again: new
    /// handshakes use them if they load, else the old ones stay.
    pub fn reload_certificates(&self) {
        match self.shared.tls.get() {
            Some(tls) => {
                let _ = tls.reload();
            }
            None => tracing::info!("no TLS certificates to reload"),
        }
    }

    /// The sockets are served by another process now: their files are
    /// left for it when this one ends.
    pub fn disown_socket_files(&self) {
        self.handed_over.store(true, Ordering::Relaxed);
        for ctx in self.shared.listeners() {
            ctx.socket_kept.store(true, Ordering::Relaxed);
        }
    }

    /// Stops accepting, lets every connection answer what it has received
    /// and close, and waits for that up to the drain timeout; connections
    /// still open then are dropped. Returns once every task has ended.
    pub async fn shutdown(self) {
        self.shared.unready.cancel();
        self.shared.shutdown.cancel();
        self.tracker.close();
        let drain = self.shared.config().options.drain_timeout;
        if tokio::time::timeout(drain, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("drain timeout of {drain:?} reached; closing the remaining connections");
            self.shared.abort.cancel();
            self.tracker.wait().await;
        }
        self.shared.abort.cancel();
        self.helpers.close();
        self.helpers.wait().await;
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.shared.shutdown.cancel();
        self.shared.abort.cancel();
        if self.handed_over.load(Ordering::Relaxed) {
            return;
        }
        if let Ok(served) = self.served.lock() {
            for path in served.iter().filter_map(|s| s.socket_file.as_ref()) {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

/// Reloads the certificates when their files change, until the server
/// stops. A reload can bring the first tls:// listener, so the watch runs
/// whether or not there are certificates yet.
async fn watch_certificates(shared: Arc<Shared>) {
    let mut ticks = tokio::time::interval(CERTIFICATE_POLL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {
                if let Some(tls) = shared.tls.get() {
                    tls.reload_if_changed();
                }
            }
            _ = shared.abort.cancelled() => return,
        }
    }
}

/// How often the certificate files are looked at: a few stat calls.
const CERTIFICATE_POLL: std::time::Duration = std::time::Duration::from_secs(1);

//! The server: a builder that binds every listener before anything is
//! served (all or nothing), and a handle that reports what was bound and
//! drains on shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio_util::task::TaskTracker;

use crate::context::{ListenerCtx, Shared};
use crate::datagram::REFLECTOR_PORTS;
use crate::endpoint::{Address, Endpoint, Transport};
use crate::error::Error;
use crate::listener::{self, Bound, BoundSocket, LocalAddr};
use crate::metrics;
use crate::rate_limit::ResponseLimiter;
use crate::service::ServiceKind;
use crate::settings::{DEFAULT_PORT, Options};
use crate::stats::Snapshot;
use crate::tls::ServerTls;

/// Builds a server from listener URLs and options.
///
/// ```
/// use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
///
/// # #[tokio::main] async fn main() -> anyhow::Result<()> {
/// let server = tsecho::Server::builder().listen("tcp://127.0.0.1:0")?.start().await?;
///
/// let mut conn = tokio::net::TcpStream::connect(server.tcp_addr().unwrap()).await?;
/// conn.write_all(b"hello\n").await?;
/// let mut reply = String::new();
/// BufReader::new(conn).read_line(&mut reply).await?;
/// assert!(reply.starts_with('[') && reply.ends_with("] hello\n"));
///
/// server.shutdown().await;
/// # Ok(()) }
/// ```
#[derive(Debug, Default)]
pub struct Server {
    endpoints: Vec<Endpoint>,
    inherited: Vec<(ServiceKind, socket2::Socket)>,
    options: Options,
    runtimes: Vec<tokio::runtime::Handle>,
}

impl Server {
    pub fn builder() -> Self {
        Server::default()
    }

    /// Adds a listener given as a URL such as `udp://[::1]:0`.
    pub fn listen(mut self, url: &str) -> Result<Self, Error> {
        self.endpoints.push(url.parse()?);
        Ok(self)
    }

    pub fn endpoint(mut self, endpoint: Endpoint) -> Self {
        self.endpoints.push(endpoint);
        self
    }

    /// Serves a socket bound elsewhere (systemd socket activation).
    pub fn inherited(mut self, service: ServiceKind, socket: socket2::Socket) -> Self {
        self.inherited.push((service, socket));
        self
    }

    pub fn options(mut self, options: Options) -> Self {
        self.options = options;
        self
    }

    /// Serves every TCP and UDP listener with one socket per runtime, all
    /// bound to the same address with SO_REUSEPORT: each TCP copy is driven
    /// by its own runtime, so with one single-threaded runtime per core the
    /// kernel spreads connections over the cores and no task ever moves
    /// between threads; each UDP copy, like every UDP socket, gets a thread
    /// of its own. Unix and inherited sockets are served by the first
    /// runtime. Without this, everything runs on the caller's runtime.
    pub fn spread_over(mut self, runtimes: Vec<tokio::runtime::Handle>) -> Self {
        self.runtimes = runtimes;
        self
    }

    /// Binds every listener (all or nothing), then starts serving.
    pub async fn start(self) -> Result<ServerHandle, Error> {
        let Server {
            endpoints,
            inherited,
            options,
            runtimes,
        } = self;
        if endpoints.is_empty() && inherited.is_empty() {
            return Err(Error::Usage("no listener given".into()));
        }
        warn_about_untrusted_proxy_listeners(&endpoints, &options);
        let host: Arc<str> = options.instance.clone().unwrap_or_else(hostname).into();
        // Before binding: a certificate that cannot be used is a
        // configuration error, with nothing left bound.
        let tls = load_tls(&endpoints, &options, &host)?;
        let mut bound = BoundSet::default();
        let copies = runtimes.len().max(1);
        // All or nothing: the metrics listener too is bound (and registered)
        // before anything is spawned, and a failure removes the socket
        // files already made.
        let bound_all = match bound.bind_all(inherited, &endpoints, copies).await {
            Ok(()) => metrics::bind(options.metrics.as_ref()).await,
            Err(e) => Err(e),
        };
        let metrics_listener = match bound_all {
            Ok(metrics) => metrics,
            Err(e) => {
                remove_files(&bound.socket_files);
                return Err(e);
            }
        };
        let reflector_ports = REFLECTOR_PORTS
            .into_iter()
            .chain(bound.udp_ports())
            .collect();
        let listener_contexts = bound.listener_contexts(&options);
        let shared = Arc::new(Shared::new(
            options,
            host,
            reflector_ports,
            listener_contexts,
            tls,
        ));
        let tracker = TaskTracker::new();
        let mut listening = Vec::with_capacity(bound.listeners.len());
        for (copies, ctx) in std::mem::take(&mut bound.listeners)
            .into_iter()
            .zip(shared.listeners.clone())
        {
            if let Some(b) = copies.first() {
                tracing::info!("listening on {} ({})", b.endpoint, b.endpoint.service);
                listening.push(Listening {
                    endpoint: b.endpoint.clone(),
                    local: b.local.clone(),
                });
            }
            for (i, b) in copies.into_iter().enumerate() {
                let task = listener::serve(b, ctx.clone(), shared.clone(), tracker.clone());
                match runtimes.get(i) {
                    Some(runtime) => tracker.spawn_on(task, runtime),
                    None => tracker.spawn(task),
                };
            }
        }
        // Its own tracker: /metrics keeps answering (503 on /readyz) while
        // the connections drain, and stops after them.
        let helpers = TaskTracker::new();
        if let Some(tls) = shared.tls.clone().filter(|tls| tls.watches_files()) {
            helpers.spawn(watch_certificates(tls, shared.clone()));
        }
        let metrics = metrics_listener.map(|(addr, listener)| {
            tracing::info!("metrics on http://{addr}/metrics");
            helpers.spawn(metrics::serve(listener, shared.clone(), helpers.clone()));
            addr
        });
        Ok(ServerHandle {
            listeners: listening,
            shared,
            tracker,
            helpers,
            socket_files: bound.socket_files,
            metrics,
        })
    }
}

/// The sockets bound so far, one entry per listener with its copies (one
/// per runtime they spread over), and the socket files to remove if a
/// later bind fails.
#[derive(Default)]
struct BoundSet {
    listeners: Vec<Vec<Bound>>,
    /// Files of inherited sockets belong to whoever bound them.
    socket_files: Vec<PathBuf>,
}

impl BoundSet {
    async fn bind_all(
        &mut self,
        inherited: Vec<(ServiceKind, socket2::Socket)>,
        endpoints: &[Endpoint],
        copies: usize,
    ) -> Result<(), Error> {
        for (service, socket) in inherited {
            self.listeners
                .push(vec![listener::bind::adopt(service, socket)?]);
        }
        for endpoint in endpoints {
            let copies = listener::bind::bind_copies(endpoint, copies).await?;
            if let Some(LocalAddr::Path(path)) = copies.first().map(|b| &b.local) {
                self.socket_files.push(path.clone());
            }
            self.listeners.push(copies);
        }
        Ok(())
    }

    fn udp_ports(&self) -> Vec<u16> {
        self.listeners
            .iter()
            .flatten()
            .filter_map(|b| match (&b.socket, &b.local) {
                (BoundSocket::Udp(_), LocalAddr::Inet(addr)) => Some(addr.port()),
                _ => None,
            })
            .collect()
    }

    /// One context per listener, shared by its copies.
    fn listener_contexts(&self, options: &Options) -> Vec<Arc<ListenerCtx>> {
        self.listeners
            .iter()
            .filter_map(|copies| copies.first())
            .map(|b| {
                let ctx = ListenerCtx::new(
                    b.endpoint.service,
                    b.endpoint.to_string().into(),
                    ResponseLimiter::new(&options.limits.udp),
                );
                Arc::new(match b.endpoint.transport {
                    Transport::Tls => ctx.with_tls_counters(),
                    Transport::Tcp | Transport::Udp | Transport::Unix | Transport::UnixGram => ctx,
                })
            })
            .collect()
    }
}

/// A PROXY listener refuses every peer not in `proxy_trusted`: with none
/// trusted it refuses everyone, which deserves a word at start.
fn warn_about_untrusted_proxy_listeners(endpoints: &[Endpoint], options: &Options) {
    if !options.proxy_trusted.is_empty() {
        return;
    }
    for endpoint in endpoints.iter().filter(|e| e.proxy) {
        tracing::warn!(
            "{endpoint} expects PROXY headers but --proxy-trusted is empty: every connection to it will be closed"
        );
    }
}

/// The certificates, when a tls:// listener needs them. TLS settings
/// without such a listener are not an error (a config file shared by
/// several servers), but worth a word.
fn load_tls(
    endpoints: &[Endpoint],
    options: &Options,
    host: &str,
) -> Result<Option<Arc<ServerTls>>, Error> {
    if !endpoints.iter().any(|e| e.transport == Transport::Tls) {
        if options.tls.is_configured() {
            tracing::warn!("TLS certificate settings given, but no tls:// listener uses them");
        }
        return Ok(None);
    }
    Ok(Some(Arc::new(ServerTls::load(&options.tls, host)?)))
}

/// Reloads the certificates when their files change, until the server stops.
async fn watch_certificates(tls: Arc<ServerTls>, shared: Arc<Shared>) {
    let mut ticks = tokio::time::interval(CERTIFICATE_POLL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => tls.reload_if_changed(),
            _ = shared.shutdown.cancelled() => return,
        }
    }
}

/// How often the certificate files are looked at: a few stat calls.
const CERTIFICATE_POLL: std::time::Duration = std::time::Duration::from_secs(1);

/// The machine's name for `{host}`, as the kernel knows it.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

/// A listener the server is serving.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listening {
    /// As bound, with the real port: `tcp://127.0.0.1:40123`.
    pub endpoint: Endpoint,
    pub local: LocalAddr,
}

/// A running server. Dropping it stops the server at once; `shutdown()`
/// stops it gracefully.
pub struct ServerHandle {
    listeners: Vec<Listening>,
    shared: Arc<Shared>,
    /// Listeners and their connections.
    tracker: TaskTracker,
    /// The metrics endpoint and its connections, which outlive the drain.
    helpers: TaskTracker,
    socket_files: Vec<PathBuf>,
    metrics: Option<SocketAddr>,
}

impl ServerHandle {
    pub fn listeners(&self) -> &[Listening] {
        &self.listeners
    }

    /// The address of the first listener on `transport` with an IP address.
    pub fn addr(&self, transport: Transport) -> Option<SocketAddr> {
        self.listeners.iter().find_map(|l| match l.local {
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

    /// Reads the TLS certificate, key and client CA files again (SIGHUP):
    /// new handshakes use them if they load, else the old ones stay.
    pub fn reload_tls(&self) {
        match &self.shared.tls {
            Some(tls) => tls.reload(),
            None => tracing::info!("reload asked for: no TLS certificates to reload"),
        }
    }

    /// Where /metrics, /healthz and /readyz are served.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics
    }

    pub fn stats(&self) -> Snapshot {
        self.shared.stats.snapshot()
    }

    /// Stream connections open now.
    pub fn connections_open(&self) -> usize {
        self.shared.gate.open()
    }

    /// Stops accepting, lets every connection answer what it has received
    /// and close, and waits for that up to the drain timeout; connections
    /// still open then are dropped. Returns once every task has ended.
    pub async fn shutdown(self) {
        self.shared.shutdown.cancel();
        self.shared.wake_udp_threads();
        self.tracker.close();
        let drain = self.shared.options.drain_timeout;
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
        self.shared.wake_udp_threads();
        self.shared.abort.cancel();
        remove_files(&self.socket_files);
    }
}

fn remove_files(paths: &[PathBuf]) {
    for path in paths {
        let _ = std::fs::remove_file(path);
    }
}

/// The endpoints `tsecho serve` uses when given none: stamp on TCP and UDP
/// port 21567, every interface.
pub fn default_endpoints() -> Vec<Endpoint> {
    [Transport::Tcp, Transport::Udp]
        .into_iter()
        .map(|transport| {
            Endpoint::new(
                ServiceKind::Stamp,
                transport,
                Address::Inet {
                    host: String::new(),
                    port: DEFAULT_PORT,
                },
            )
        })
        .collect()
}

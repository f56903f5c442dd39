//! The server: a builder that binds every listener before anything is
//! served, and a handle that reports what was bound and drains on shutdown.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::TimeStyle;
use crate::datagram::{self, REFLECTOR_PORTS};
use crate::endpoint::{Address, Endpoint, Transport};
use crate::error::Error;
use crate::framing::Framing;
use crate::limits::{ConnectionGate, Limits, Refusal};
use crate::listener::{self, BoundSocket, LocalAddr, Serving};
use crate::proxy_protocol;
use crate::rate_limit::ResponseLimiter;
use crate::service::ServiceKind;
use crate::service::stamp::{Origin, Template};
use crate::stats::{ListenerStats, Snapshot, Stats};
use crate::stream::{self, StreamSocket};

/// Every setting of `tsecho serve` apart from the listeners.
#[derive(Debug, Clone)]
pub struct Options {
    pub time: TimeStyle,
    pub framing: Framing,
    /// How long shutdown waits for connections to finish their replies.
    pub drain_timeout: Duration,
    pub limits: Limits,
    /// Where to serve /metrics, /healthz and /readyz (a tcp:// endpoint).
    pub metrics: Option<Endpoint>,
    /// Replies shaped by `--reply-template` instead of `[time] msg`.
    pub reply_template: Option<Arc<Template>>,
    /// `{host}` in templates; the machine's hostname when unset.
    pub instance: Option<String>,
    /// Peers allowed to send PROXY protocol headers.
    pub proxy_trusted: Vec<ipnet::IpNet>,
    /// One log line per closed connection: peer, listener, counts, duration.
    pub log_connections: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            time: TimeStyle::default(),
            framing: Framing::default(),
            drain_timeout: Duration::from_secs(5),
            limits: Limits::default(),
            metrics: None,
            reply_template: None,
            instance: None,
            proxy_trusted: Vec::new(),
            log_connections: false,
        }
    }
}

/// State every task of one server shares.
pub(crate) struct Shared {
    pub options: Options,
    pub style: Arc<TimeStyle>,
    pub stats: Stats,
    /// Graceful stop: no new connections, answer what has arrived, close.
    pub shutdown: CancellationToken,
    /// Drain deadline passed: drop whatever is still open.
    pub abort: CancellationToken,
    /// Source ports a UDP reply never goes to, our own included.
    pub reflector_ports: Vec<u16>,
    pub gate: Arc<ConnectionGate>,
    /// `{host}` in reply templates.
    pub host: Arc<str>,
    /// One per listener, in the order they were given.
    pub listeners: Vec<Arc<ListenerCtx>>,
    /// UDP sockets whose threads block in a receive, to wake on shutdown.
    udp_sockets: std::sync::Mutex<Vec<Arc<std::net::UdpSocket>>>,
}

/// A listener's name, service and counters, shared by its connections.
#[derive(Debug)]
pub(crate) struct ListenerCtx {
    pub service: ServiceKind,
    pub name: Arc<str>,
    pub stats: ListenerStats,
    /// When a failing accept was last logged, by any copy of the listener.
    accept_logged: std::sync::Mutex<Option<Instant>>,
    /// UDP reply limits, shared by the listener's copies.
    pub udp_limiter: std::sync::Mutex<ResponseLimiter>,
}

impl ListenerCtx {
    /// At most one log line per ACCEPT_LOG_INTERVAL however many threads
    /// accept on this listener.
    fn may_log_accept_error(&self) -> bool {
        let Ok(mut last) = self.accept_logged.lock() else {
            return false;
        };
        let due = last.is_none_or(|at| at.elapsed() >= ACCEPT_LOG_INTERVAL);
        if due {
            *last = Some(Instant::now());
        }
        due
    }
}

impl Shared {
    pub(crate) fn watch_udp_socket(&self, sock: Arc<std::net::UdpSocket>) {
        if let Ok(mut sockets) = self.udp_sockets.lock() {
            sockets.push(sock);
        }
    }

    /// Shuts the receiving side of every UDP socket, which returns their
    /// threads from a blocked receive (after `shutdown` is cancelled, so
    /// that they stop).
    fn wake_udp_threads(&self) {
        if let Ok(sockets) = self.udp_sockets.lock() {
            for sock in sockets.iter() {
                // Unconnected UDP sockets report ENOTCONN, yet are shut.
                let _ = socket2::SockRef::from(&**sock).shutdown(std::net::Shutdown::Read);
            }
        }
    }

    fn is_trusted_proxy(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.options
            .proxy_trusted
            .iter()
            .any(|net| net.contains(&ip))
    }

    /// What a reply template may say about a connection; only built when
    /// the template uses it.
    fn origin_for<S: StreamSocket>(
        &self,
        sock: &S,
        peer: Option<SocketAddr>,
    ) -> Option<Box<Origin>> {
        let template = self.options.reply_template.as_ref()?;
        template.needs_origin().then(|| {
            Box::new(Origin {
                peer: peer.map_or_else(|| "unix".to_string(), |p| p.to_string()),
                local: sock.local_text(),
                host: self.host.clone(),
            })
        })
    }
}

/// The machine's name for `{host}`, as the kernel knows it.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

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
        if self.endpoints.is_empty() && self.inherited.is_empty() {
            return Err(Error::Usage("no listener given".into()));
        }
        // One entry per listener: its copies, one per runtime they spread over.
        let mut bound: Vec<Vec<listener::Bound>> =
            Vec::with_capacity(self.endpoints.len() + self.inherited.len());
        for (service, socket) in self.inherited {
            bound.push(vec![listener::adopt(service, socket)?]);
        }
        // Files of inherited sockets belong to whoever bound them.
        let mut socket_files = Vec::new();
        let copies = self.runtimes.len().max(1);
        for endpoint in &self.endpoints {
            let copies = match listener::bind_copies(endpoint, copies).await {
                Ok(b) => b,
                Err(e) => {
                    remove_files(&socket_files);
                    return Err(e);
                }
            };
            if let Some(LocalAddr::Path(path)) = copies.first().map(|b| &b.local) {
                socket_files.push(path.clone());
            }
            bound.push(copies);
        }

        let own_udp_ports = bound
            .iter()
            .flatten()
            .filter_map(|b| match (&b.socket, &b.local) {
                (BoundSocket::Udp(_), LocalAddr::Inet(addr)) => Some(addr.port()),
                _ => None,
            });
        let host: Arc<str> = self
            .options
            .instance
            .clone()
            .unwrap_or_else(hostname)
            .into();
        let udp_limits = self.options.limits.udp.clone();
        let shared = Arc::new(Shared {
            style: Arc::new(self.options.time.clone()),
            options: self.options,
            stats: Stats::default(),
            shutdown: CancellationToken::new(),
            abort: CancellationToken::new(),
            reflector_ports: REFLECTOR_PORTS.into_iter().chain(own_udp_ports).collect(),
            gate: Arc::new(ConnectionGate::default()),
            host,
            listeners: bound
                .iter()
                .filter_map(|copies| copies.first())
                .map(|b| {
                    Arc::new(ListenerCtx {
                        service: b.endpoint.service,
                        name: b.endpoint.to_string().into(),
                        stats: ListenerStats::default(),
                        accept_logged: Default::default(),
                        udp_limiter: ResponseLimiter::new(&udp_limits).into(),
                    })
                })
                .collect(),
            udp_sockets: Default::default(),
        });
        let metrics_listener = match &shared.options.metrics {
            Some(endpoint) => Some(bind_metrics(endpoint).await?),
            None => None,
        };
        let tracker = TaskTracker::new();
        let mut listeners = Vec::with_capacity(bound.len());
        for (copies, ctx) in bound.into_iter().zip(shared.listeners.clone()) {
            if let Some(b) = copies.first() {
                tracing::info!("listening on {} ({})", b.endpoint, b.endpoint.service);
                listeners.push(Listening {
                    endpoint: b.endpoint.clone(),
                    local: b.local.clone(),
                });
            }
            for (i, b) in copies.into_iter().enumerate() {
                let task = serve_listener(b, ctx.clone(), shared.clone(), tracker.clone());
                match self.runtimes.get(i) {
                    Some(runtime) => tracker.spawn_on(task, runtime),
                    None => tracker.spawn(task),
                };
            }
        }
        let metrics = metrics_listener.map(|(addr, listener)| {
            tracing::info!("metrics on http://{addr}/metrics");
            // Outside the task tracker: it must keep answering (503 on
            // /readyz) while connections drain.
            (
                addr,
                tokio::spawn(crate::metrics::serve(listener, shared.clone())),
            )
        });
        Ok(ServerHandle {
            listeners,
            shared,
            tracker,
            socket_files,
            metrics,
        })
    }
}

/// Serves one bound socket until shutdown. Stream listeners take the whole
/// endpoint (service and PROXY).
async fn serve_listener(
    b: listener::Bound,
    ctx: Arc<ListenerCtx>,
    shared: Arc<Shared>,
    tracker: TaskTracker,
) {
    let service = b.endpoint.service;
    let proxy = b.endpoint.proxy;
    if let BoundSocket::Udp(sock) = b.socket {
        return serve_udp_on_a_thread(sock, service, ctx, shared).await;
    }
    let socket = match b.socket.register() {
        Ok(socket) => socket,
        Err(e) => {
            tracing::error!("cannot serve {}: {e}", b.endpoint);
            return;
        }
    };
    match socket {
        Serving::Tcp(l) => accept_loop(l, proxy, ctx, shared, tracker).await,
        Serving::Unix(l) => accept_loop(l, proxy, ctx, shared, tracker).await,
        Serving::UnixGram(s) => datagram::serve_unixgram(s, service, ctx, shared).await,
    }
}

/// Runs `datagram::serve_udp` on a thread of its own and waits for it, so
/// that the server's task tracker knows when it ended.
async fn serve_udp_on_a_thread(
    sock: std::net::UdpSocket,
    service: ServiceKind,
    ctx: Arc<ListenerCtx>,
    shared: Arc<Shared>,
) {
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let spawned = std::thread::Builder::new()
        .name("tsecho-udp".into())
        .spawn(move || {
            datagram::serve_udp(Arc::new(sock), service, ctx, shared);
            drop(done_tx);
        });
    match spawned {
        Ok(_) => {
            let _ = done_rx.await;
        }
        Err(e) => tracing::error!("cannot start a UDP thread: {e}"),
    }
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
    tracker: TaskTracker,
    socket_files: Vec<PathBuf>,
    metrics: Option<(SocketAddr, JoinHandle<()>)>,
}

async fn bind_metrics(endpoint: &Endpoint) -> Result<(SocketAddr, TcpListener), Error> {
    if endpoint.transport != Transport::Tcp {
        return Err(Error::Usage(format!(
            "--metrics needs a tcp:// endpoint, not {endpoint}"
        )));
    }
    let bound = listener::bind(endpoint).await?;
    let (BoundSocket::Tcp(listener), LocalAddr::Inet(addr)) = (bound.socket, bound.local) else {
        return Err(Error::Usage(format!(
            "--metrics needs a tcp:// endpoint, not {endpoint}"
        )));
    };
    let listener = TcpListener::from_std(listener).map_err(|reason| Error::Listen {
        endpoint: endpoint.to_string(),
        reason,
    })?;
    Ok((addr, listener))
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

    /// Where /metrics, /healthz and /readyz are served.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(|(addr, _)| *addr)
    }

    pub fn stats(&self) -> Snapshot {
        self.shared.stats.snapshot()
    }

    /// Stops accepting, lets every connection answer what it has received
    /// and close, and waits for that up to the drain timeout; connections
    /// still open then are dropped.
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
        if let Some((_, task)) = &self.metrics {
            task.abort();
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.shared.shutdown.cancel();
        self.shared.wake_udp_threads();
        self.shared.abort.cancel();
        if let Some((_, task)) = &self.metrics {
            task.abort();
        }
        remove_files(&self.socket_files);
    }
}

fn remove_files(paths: &[PathBuf]) {
    for path in paths {
        let _ = std::fs::remove_file(path);
    }
}

/// Errors from `accept` that concern one connection that already failed;
/// the next accept can go ahead at once.
fn is_connection_error(e: &io::Error) -> bool {
    use io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | ConnectionRefused | Interrupted
    ) || matches!(e.raw_os_error(), Some(libc::EPROTO | libc::EPERM))
}

/// After resource exhaustion (EMFILE, ENFILE, ENOBUFS, ENOMEM) connections
/// wait in the kernel's queue while we pause, instead of the loop spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// At most one log line per this interval about failing accepts.
const ACCEPT_LOG_INTERVAL: Duration = Duration::from_secs(1);

/// A listening stream socket: TCP or Unix.
trait Accept: Send + 'static {
    type Stream: StreamSocket;
    /// The next connection and, for IP, the client's address.
    fn accept_one(
        &self,
    ) -> impl Future<Output = io::Result<(Self::Stream, Option<SocketAddr>)>> + Send;
}

impl Accept for TcpListener {
    type Stream = TcpStream;
    async fn accept_one(&self) -> io::Result<(TcpStream, Option<SocketAddr>)> {
        let (sock, peer) = self.accept().await?;
        // Replies are whole messages already; Nagle would only delay them.
        sock.set_nodelay(true)?;
        Ok((sock, Some(peer)))
    }
}

impl Accept for UnixListener {
    type Stream = UnixStream;
    async fn accept_one(&self) -> io::Result<(UnixStream, Option<SocketAddr>)> {
        Ok((self.accept().await?.0, None))
    }
}

async fn accept_loop<L: Accept>(
    listener: L,
    proxy: bool,
    ctx: Arc<ListenerCtx>,
    shared: Arc<Shared>,
    tracker: TaskTracker,
) {
    let stats = &shared.stats;
    loop {
        let accepted = tokio::select! {
            biased;
            _ = shared.shutdown.cancelled() => return,
            accepted = listener.accept_one() => accepted,
        };
        let (sock, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                Stats::add(&stats.local().accept_errors, 1);
                if is_connection_error(&e) {
                    continue;
                }
                if ctx.may_log_accept_error() {
                    tracing::warn!("accept failed: {e}; pausing accepts for {ACCEPT_BACKOFF:?}");
                }
                tokio::select! {
                    _ = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                    _ = shared.shutdown.cancelled() => return,
                }
                continue;
            }
        };
        if proxy {
            if !peer.is_some_and(|p| shared.is_trusted_proxy(p.ip())) {
                Stats::add(&stats.local().proxy_rejected_untrusted, 1);
                continue;
            }
            tracker.spawn(serve_proxied(sock, peer, ctx.clone(), shared.clone()));
            continue;
        }
        if let Some(connection) = admit(sock, peer, Vec::new(), &ctx, &shared) {
            tracker.spawn(connection);
        }
    }
}

/// Admission by the client's address: the connection to serve, or None
/// when a limit refuses it. A refused connection is closed at once, which
/// tells the client now instead of leaving it in the backlog to time out.
fn admit<S: StreamSocket>(
    sock: S,
    peer: Option<SocketAddr>,
    early_input: Vec<u8>,
    listener: &Arc<ListenerCtx>,
    shared: &Arc<Shared>,
) -> Option<impl Future<Output = ()> + Send + 'static> {
    match shared
        .gate
        .admit(peer.map(|p| p.ip()), &shared.options.limits)
    {
        Ok(admission) => {
            let arrival = stream::Arrival {
                admission,
                origin: shared.origin_for(&sock, peer),
                early_input,
                log: shared.options.log_connections.then(|| {
                    Box::new(stream::ConnectionLog {
                        peer,
                        started: Instant::now(),
                    })
                }),
            };
            Some(stream::serve(
                sock,
                listener.clone(),
                shared.clone(),
                arrival,
            ))
        }
        Err(Refusal::MaxConnections) => {
            Stats::add(&shared.stats.local().connections_rejected_max, 1);
            None
        }
        Err(Refusal::PerIp) => {
            Stats::add(&shared.stats.local().connections_rejected_per_ip, 1);
            None
        }
    }
}

/// How long a PROXY protocol header may take to arrive.
const PROXY_HEADER_TIMEOUT: Duration = Duration::from_secs(3);

/// A connection from a trusted load balancer: its PROXY header names the
/// real client, which is then what limits, logs and `{peer}` see.
async fn serve_proxied<S: StreamSocket>(
    sock: S,
    peer: Option<SocketAddr>,
    listener: Arc<ListenerCtx>,
    shared: Arc<Shared>,
) {
    let header = tokio::time::timeout(PROXY_HEADER_TIMEOUT, stream::read_proxy_header(&sock)).await;
    let (client, early_input) = match header {
        Ok(Ok((proxy_protocol::Header::Proxied { source }, rest))) => (Some(source), rest),
        Ok(Ok((proxy_protocol::Header::Local, rest))) => (peer, rest),
        Ok(Err(e)) => {
            tracing::debug!("PROXY header refused: {e}");
            Stats::add(&shared.stats.local().proxy_rejected_malformed, 1);
            return;
        }
        Err(_) => {
            Stats::add(&shared.stats.local().proxy_rejected_malformed, 1);
            return;
        }
    };
    if let Some(connection) = admit(sock, client, early_input, &listener, &shared) {
        connection.await;
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

pub const DEFAULT_PORT: u16 = 21567;

#[cfg(test)]
impl Shared {
    pub(crate) fn for_tests(options: Options) -> Shared {
        Shared {
            style: Arc::new(options.time.clone()),
            options,
            stats: Stats::default(),
            shutdown: CancellationToken::new(),
            abort: CancellationToken::new(),
            reflector_ports: vec![],
            gate: Arc::new(ConnectionGate::default()),
            host: "h".into(),
            listeners: Vec::new(),
            udp_sockets: Default::default(),
        }
    }
}

#[cfg(test)]
impl ListenerCtx {
    pub(crate) fn for_tests(service: ServiceKind) -> ListenerCtx {
        ListenerCtx {
            service,
            name: "x".into(),
            stats: ListenerStats::default(),
            accept_logged: Default::default(),
            udp_limiter: ResponseLimiter::new(&Default::default()).into(),
        }
    }
}

#[cfg(test)]
mod size_probe {
    use super::*;

    /// An idle connection's memory is its task (target: 1.5 KiB each with
    /// the socket's runtime state); this keeps the future from creeping
    /// back up unnoticed, as it did twice (to 968, then 712 bytes).
    #[tokio::test]
    async fn connection_future_stays_small() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let sock = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let shared = Arc::new(Shared::for_tests(Options::default()));
        let ctx = Arc::new(ListenerCtx::for_tests(ServiceKind::Stamp));
        let fut = admit(sock, None, Vec::new(), &ctx, &shared).unwrap();
        let size = std::mem::size_of_val(&fut);
        eprintln!("connection future: {size} bytes");
        assert!(size <= 700, "connection future grew to {size} bytes");
    }
}

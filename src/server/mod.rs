//! The server: a builder that binds every listener before anything is
//! served (all or nothing), and a handle (`handle.rs`) that reports what
//! was bound, reloads (`reload.rs`) and drains on shutdown.

mod handle;
mod reload;

use std::sync::Arc;

use crate::context::{Config, Shared};
use crate::datagram::REFLECTOR_PORTS;
use crate::endpoint::{Address, Endpoint, Transport};
use crate::error::Error;
use crate::listener::{self, Bound, BoundSocket, LocalAddr};
use crate::metrics;
use crate::service::ServiceKind;
use crate::settings::{DEFAULT_PORT, Options};
use crate::tls::ServerTls;
pub use handle::{Listening, ServerHandle};
pub use reload::ReloadReport;

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
    /// Sockets the process before us served, by the endpoint they were
    /// configured as (`--takeover`).
    taken_over: Vec<(Endpoint, std::os::fd::OwnedFd)>,
    /// The /metrics socket of the process before us, by its endpoint.
    metrics_taken_over: Option<(Endpoint, std::os::fd::OwnedFd)>,
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

    /// Serves an already bound socket as `endpoint` (one of its copies, if
    /// it has several) instead of binding that endpoint anew.
    pub fn taken_over(mut self, endpoint: Endpoint, fd: std::os::fd::OwnedFd) -> Self {
        self.taken_over.push((endpoint, fd));
        self
    }

    /// Serves /metrics on this already bound socket when `--metrics` is
    /// the endpoint it was bound for.
    pub fn metrics_taken_over(mut self, endpoint: Endpoint, fd: std::os::fd::OwnedFd) -> Self {
        self.metrics_taken_over = Some((endpoint, fd));
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
            taken_over,
            metrics_taken_over,
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
        // Likewise an engine the kernel refuses, asked for by name.
        options
            .io
            .resolve()
            .map_err(|e| Error::Usage(e.to_string()))?;
        let copies = runtimes.len().max(1);
        let mut groups = Vec::new();
        for (service, socket) in inherited {
            groups.push(Group {
                configured: None,
                copies: vec![listener::bind::adopt(service, socket)?],
                bound_here: false,
            });
        }
        // All or nothing: the metrics listener too is bound (and registered)
        // before anything is spawned, and a failure removes the socket
        // files already made (dropping the groups).
        let mut taken_over = taken_over;
        for endpoint in &endpoints {
            match Group::bind(endpoint, copies, &mut taken_over).await {
                Ok(group) => groups.push(group),
                Err(e) => {
                    groups.iter_mut().for_each(Group::remove_file);
                    return Err(e);
                }
            }
        }
        let metrics_fd = metrics_taken_over
            .filter(|(endpoint, _)| options.metrics.as_ref() == Some(endpoint))
            .map(|(_, fd)| fd);
        let metrics_listener = match metrics::bind(options.metrics.as_ref(), metrics_fd).await {
            Ok(metrics) => metrics,
            Err(e) => {
                groups.iter_mut().for_each(Group::remove_file);
                return Err(e);
            }
        };
        for (endpoint, _) in &taken_over {
            tracing::info!("{endpoint} is no longer configured: not served by this process");
        }
        let udp_ports = groups.iter().flat_map(Group::udp_ports).collect();
        let config = Config::new(options, host, reflector_ports(udp_ports));
        let shared = Arc::new(Shared::new(config, tls));
        let handle = ServerHandle::new(shared.clone(), runtimes);
        for group in groups {
            handle.serve(group);
        }
        handle.start_helpers(metrics_listener);
        Ok(handle)
    }
}

/// One listener's sockets: one, or a copy per runtime.
pub(crate) struct Group {
    /// As the settings give it (None for a socket systemd passed).
    configured: Option<Endpoint>,
    copies: Vec<Bound>,
    /// Bound here, so its socket file is ours to remove if starting fails
    /// (a socket handed over still belongs to the process serving it).
    bound_here: bool,
}

impl Group {
    /// Binds `endpoint`, or serves the sockets handed over for it.
    async fn bind(
        endpoint: &Endpoint,
        copies: usize,
        taken_over: &mut Vec<(Endpoint, std::os::fd::OwnedFd)>,
    ) -> Result<Group, Error> {
        let mut handed = Vec::new();
        let mut i = 0;
        while i < taken_over.len() {
            if taken_over[i].0 == *endpoint {
                handed.push(taken_over.swap_remove(i).1);
            } else {
                i += 1;
            }
        }
        let bound_here = handed.is_empty();
        let copies = if bound_here {
            listener::bind::bind_copies(endpoint, copies).await?
        } else {
            handed
                .into_iter()
                .map(|fd| Bound::reuse(fd, endpoint.clone()))
                .collect::<Result<_, _>>()
                .map_err(|reason| Error::Listen {
                    endpoint: endpoint.to_string(),
                    reason,
                })?
        };
        Ok(Group {
            configured: Some(endpoint.clone()),
            copies,
            bound_here,
        })
    }

    fn udp_ports(&self) -> Vec<u16> {
        self.copies
            .iter()
            .filter_map(|b| match (&b.socket, &b.local) {
                (BoundSocket::Udp(_), LocalAddr::Inet(addr)) => Some(addr.port()),
                _ => None,
            })
            .collect()
    }

    /// The socket file this process made, if any: the inherited ones
    /// belong to whoever bound them.
    fn socket_file(&self) -> Option<std::path::PathBuf> {
        self.configured.as_ref()?;
        match self.copies.first().map(|b| &b.local) {
            Some(LocalAddr::Path(path)) => Some(path.clone()),
            _ => None,
        }
    }

    fn remove_file(&mut self) {
        if !self.bound_here {
            return;
        }
        if let Some(path) = self.socket_file() {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn reflector_ports(udp_ports: Vec<u16>) -> Vec<u16> {
    REFLECTOR_PORTS.into_iter().chain(udp_ports).collect()
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

/// The machine's name for `{host}`, as the kernel knows it.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
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

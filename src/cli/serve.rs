//! `tsecho serve`: run the server until SIGINT or SIGTERM, then drain.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args as ClapArgs, ValueEnum};
use ipnet::IpNet;
use tsecho::clock::{TimeFormat, TimeStyle};
use tsecho::framing::{DEFAULT_CHUNK, Framing};
use tsecho::limits::{DEFAULT_MAX_CONNECTIONS, Limits, UdpLimits, fit_to_open_file_limit};
use tsecho::service::SERVICES;
use tsecho::service::stamp::Template;
use tsecho::{Address, Endpoint, Error, Options, Server, ServiceKind, Shards, Transport};

use super::{parse_duration, parse_size};

#[derive(Debug, ClapArgs)]
pub struct Args {
    /// Read settings from this TOML file (keys are the long flag names);
    /// command line and environment override it.
    #[arg(long, value_name = "FILE", env = "TSECHO_CONFIG")]
    pub config: Option<std::path::PathBuf>,

    /// Listener URL, repeatable: tcp://HOST:PORT, udp://HOST:PORT,
    /// unix:///path, unixgram:///path, unix://@abstract, with an optional
    /// service prefix (echo+tcp://:7). Default: tcp://:21567 and udp://:21567.
    #[arg(
        long = "listen",
        short = 'l',
        value_name = "URL",
        env = "TSECHO_LISTEN",
        value_delimiter = ','
    )]
    listen: Vec<String>,

    /// Also serve the classic inetd set on TCP and UDP: echo 7, discard 9,
    /// daytime 13, chargen 19, time 37, and stamp 21567.
    #[arg(long, env = "TSECHO_INETD")]
    inetd: bool,

    /// Add N to the inetd ports (20007, 20009, ... for 20000), so they need
    /// no privileges.
    #[arg(long, value_name = "N", default_value_t = 0, env = "TSECHO_INETD_BASE")]
    inetd_base: u16,

    /// Timestamp format: ctime, rfc3339, rfc3339-ms, rfc3339-us, unix,
    /// unix-ms, unix-us, unix-ns, or a strftime pattern such as '%H:%M:%S%.3f'.
    #[arg(long, default_value = "ctime", env = "TSECHO_FORMAT", value_parser = parse_time_format)]
    format: TimeFormat,

    /// Show times in UTC instead of local time (local time follows TZ).
    #[arg(long, env = "TSECHO_UTC")]
    utc: bool,

    /// How stream input is cut into messages: each line, or each read (as the
    /// textbook server does).
    #[arg(long, value_enum, default_value_t = FramingArg::Lines, env = "TSECHO_FRAMING")]
    framing: FramingArg,

    /// Longest line answered in one reply; longer lines are answered in
    /// pieces of this size.
    #[arg(long, value_name = "BYTES", default_value = "64KiB", value_parser = parse_size, env = "TSECHO_MAX_LINE")]
    max_line: usize,

    /// Largest read answered as one reply with --framing raw.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_CHUNK, value_parser = parse_size, env = "TSECHO_CHUNK")]
    chunk: usize,

    /// On SIGTERM/SIGINT, how long connections get to finish their replies.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration, env = "TSECHO_DRAIN_TIMEOUT")]
    drain_timeout: Duration,

    /// Shape stamp replies: {time}, {msg}, {peer}, {local}, {host}; '{{'
    /// for a brace. Default: '[{time}] {msg}'.
    #[arg(long, value_name = "TEMPLATE", env = "TSECHO_REPLY_TEMPLATE", value_parser = parse_template)]
    reply_template: Option<Template>,

    /// Name for {host} in reply templates [default: the hostname].
    #[arg(long, value_name = "NAME", env = "TSECHO_INSTANCE")]
    instance: Option<String>,

    /// Load balancers allowed to send PROXY protocol headers on proxy+tcp://
    /// listeners, comma-separated; connections from anyone else are closed.
    #[arg(long, value_name = "CIDR,...", default_value = "", value_parser = parse_networks, env = "TSECHO_PROXY_TRUSTED")]
    proxy_trusted: Networks,

    /// Serve Prometheus metrics on /metrics, liveness on /healthz and
    /// readiness on /readyz (503 while draining) at this tcp:// URL.
    #[arg(long, value_name = "URL", env = "TSECHO_METRICS")]
    metrics: Option<String>,

    /// Log one line per closed connection: peer, listener, replies, bytes,
    /// duration.
    #[arg(long, env = "TSECHO_LOG_CONNECTIONS")]
    log_connections: bool,

    /// Threads serving connections [default: the CPUs this process may
    /// use]. Each runs its own event loop with its own copy of every TCP
    /// and UDP socket (SO_REUSEPORT), among which the kernel spreads
    /// connections and datagrams; Unix sockets are served by the first.
    #[arg(long, value_name = "N", env = "TSECHO_THREADS")]
    threads: Option<usize>,

    #[command(flatten)]
    limits: LimitArgs,
}

/// Limits; each one that triggers is counted.
#[derive(Debug, ClapArgs)]
#[command(next_help_heading = "Limits")]
struct LimitArgs {
    /// Replies held per connection once the kernel's send buffer is full;
    /// past it tsecho stops reading from that client until it reads.
    #[arg(long, value_name = "BYTES", default_value = "32KiB", value_parser = parse_size, env = "TSECHO_OUTPUT_BUDGET")]
    output_budget: usize,

    /// Close a connection whose client reads nothing for this long.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration, env = "TSECHO_WRITE_TIMEOUT")]
    write_timeout: Duration,

    /// Close a connection that sends nothing for this long.
    #[arg(long, value_name = "DURATION", default_value = "300s", value_parser = parse_duration, env = "TSECHO_IDLE_TIMEOUT")]
    idle_timeout: Duration,

    /// Close a connection whose started line is not finished within this long.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration, env = "TSECHO_LINE_TIMEOUT")]
    line_timeout: Duration,

    /// Connections open at once; more are accepted and closed at once
    /// [default: 10000, lowered to fit the open-file limit]
    #[arg(long, value_name = "N", env = "TSECHO_MAX_CONNECTIONS")]
    max_connections: Option<usize>,

    /// Connections open at once from one address (IPv6: one /64).
    #[arg(
        long,
        value_name = "N",
        default_value_t = 256,
        env = "TSECHO_MAX_CONNECTIONS_PER_IP"
    )]
    max_connections_per_ip: usize,

    /// UDP replies per second to one source address (IPv6: one /64).
    #[arg(
        long,
        value_name = "PER_SEC",
        default_value_t = 100.0,
        env = "TSECHO_UDP_RATE"
    )]
    udp_rate: f64,

    /// UDP replies one source may get in a burst above its rate.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 200.0,
        env = "TSECHO_UDP_BURST"
    )]
    udp_burst: f64,

    /// UDP replies per second to all limited sources together.
    #[arg(
        long,
        value_name = "PER_SEC",
        default_value_t = 20_000.0,
        env = "TSECHO_UDP_GLOBAL_RATE"
    )]
    udp_global_rate: f64,

    /// Over the rate, still answer every Nth datagram (0: never).
    #[arg(long, value_name = "N", default_value_t = 0, env = "TSECHO_UDP_SLIP")]
    udp_slip: u32,

    /// A UDP source receives at most this many times the bytes it sent
    /// (counting IP and UDP headers)...
    #[arg(
        long,
        value_name = "FACTOR",
        default_value_t = 3.0,
        env = "TSECHO_UDP_BYTE_FACTOR"
    )]
    udp_byte_factor: f64,

    /// ...plus this allowance.
    #[arg(long, value_name = "BYTES", default_value = "4KiB", value_parser = parse_size, env = "TSECHO_UDP_BYTE_ALLOWANCE")]
    udp_byte_allowance: usize,

    /// Source networks no per-address limit applies to, comma-separated;
    /// '' for none.
    #[arg(long, value_name = "CIDR,...", default_value = "127.0.0.0/8,::1/128", value_parser = parse_networks, env = "TSECHO_LIMIT_EXEMPT")]
    limit_exempt: Networks,
}

#[derive(Debug, Clone)]
struct Networks(Vec<IpNet>);

fn parse_networks(s: &str) -> Result<Networks, String> {
    s.split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(|part| {
            part.parse::<IpNet>()
                .or_else(|_| part.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| format!("{part:?} is not an address or CIDR network"))
        })
        .collect::<Result<_, _>>()
        .map(Networks)
}

impl LimitArgs {
    fn limits(&self) -> Limits {
        Limits {
            output_budget: self.output_budget,
            write_timeout: self.write_timeout,
            idle_timeout: self.idle_timeout,
            line_timeout: self.line_timeout,
            max_connections: self.max_connections(),
            max_connections_per_ip: self.max_connections_per_ip,
            udp: UdpLimits {
                rate: self.udp_rate,
                burst: self.udp_burst,
                global_rate: self.udp_global_rate,
                slip: self.udp_slip,
                byte_factor: self.udp_byte_factor,
                byte_allowance: self.udp_byte_allowance as f64,
            },
            exempt: self.limit_exempt.0.clone(),
        }
    }

    /// The default fits the open-file limit; an explicit value is kept.
    fn max_connections(&self) -> usize {
        let wanted = self.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS);
        let (fitted, file_limit) = fit_to_open_file_limit(wanted);
        match (file_limit, self.max_connections) {
            (Some(limit), None) => {
                tracing::warn!(
                    "open-file limit is {limit}: --max-connections lowered from {wanted} to {fitted}"
                );
                fitted
            }
            (Some(limit), Some(_)) => {
                tracing::warn!(
                    "--max-connections {wanted} exceeds what the open-file limit of {limit} allows"
                );
                wanted
            }
            (None, _) => wanted,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum FramingArg {
    Lines,
    Raw,
}

fn parse_template(s: &str) -> Result<Template, String> {
    s.parse().map_err(|e: Error| e.to_string())
}

fn parse_time_format(s: &str) -> Result<TimeFormat, String> {
    s.parse().map_err(|e: Error| e.to_string())
}

impl Args {
    fn options(&self) -> Options {
        let framing = match self.framing {
            FramingArg::Lines => Framing::Lines {
                max_line: self.max_line,
            },
            FramingArg::Raw => Framing::Raw { chunk: self.chunk },
        };
        Options {
            time: TimeStyle {
                format: self.format.clone(),
                utc: self.utc,
            },
            framing,
            drain_timeout: self.drain_timeout,
            limits: self.limits.limits(),
            metrics: None,
            reply_template: self.reply_template.clone().map(Arc::new),
            instance: self.instance.clone(),
            proxy_trusted: self.proxy_trusted.0.clone(),
            log_connections: self.log_connections,
        }
    }

    /// Checks what clap cannot: the listener URLs and the metrics URL.
    pub fn validate(&self) -> Result<(), Error> {
        self.endpoints()?;
        if let Some(metrics) = &self.metrics {
            metrics.parse::<Endpoint>()?;
        }
        Ok(())
    }

    fn endpoints(&self) -> Result<Vec<Endpoint>, Error> {
        let mut endpoints = self
            .listen
            .iter()
            .map(|url| url.parse())
            .collect::<Result<Vec<Endpoint>, Error>>()?;
        if self.inetd {
            endpoints.extend(inetd_endpoints(self.inetd_base)?);
        }
        if endpoints.is_empty() {
            endpoints = tsecho::default_endpoints();
        }
        Ok(endpoints)
    }
}

/// The standard inetd services on TCP and UDP, every interface.
fn inetd_endpoints(base: u16) -> Result<Vec<Endpoint>, Error> {
    let mut endpoints = Vec::new();
    for info in &SERVICES {
        let port = if info.kind == ServiceKind::Stamp {
            info.port
        } else {
            info.port.checked_add(base).ok_or_else(|| {
                Error::Usage(format!(
                    "--inetd-base {base} puts {} past port 65535",
                    info.kind
                ))
            })?
        };
        for transport in [Transport::Tcp, Transport::Udp] {
            let address = Address::Inet {
                host: String::new(),
                port,
            };
            endpoints.push(Endpoint::new(info.kind, transport, address));
        }
    }
    Ok(endpoints)
}

pub fn run(args: Args) -> anyhow::Result<()> {
    // Before any thread exists: taking them edits the environment.
    let activated = tsecho::systemd::take_activated_sockets();
    let mut endpoints = args.endpoints()?;
    if !activated.is_empty() && args.listen.is_empty() && !args.inetd {
        // systemd's sockets replace the defaults, as --listen would.
        endpoints.clear();
    }
    let mut options = args.options();
    options.metrics = args.metrics.as_deref().map(str::parse).transpose()?;
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let shards = Shards::start(args.threads.unwrap_or(cpus)).context("starting the runtime")?;
    shards.block_on(async {
        let stop = stop_signal()?;
        let mut server = Server::builder()
            .options(options)
            .spread_over(shards.handles());
        for (service, socket) in activated {
            server = server.inherited(service, socket);
        }
        for endpoint in endpoints {
            server = server.endpoint(endpoint);
        }
        let handle = server.start().await?;
        tsecho::systemd::notify("READY=1\nSTATUS=serving");
        let watchdog = tsecho::systemd::watchdog_interval().map(|every| {
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                loop {
                    tick.tick().await;
                    tsecho::systemd::notify("WATCHDOG=1");
                }
            })
        });
        stop.await;
        tracing::info!("stopping: draining connections");
        tsecho::systemd::notify("STOPPING=1\nSTATUS=draining");
        handle.shutdown().await;
        if let Some(watchdog) = watchdog {
            watchdog.abort();
        }
        tracing::info!("stopped");
        Ok(())
    })
}

/// Installs the SIGTERM and SIGINT handlers now, before any listener is
/// bound: a signal that arrives as soon as the server answers must start
/// the drain, not kill the process. The future completes on the signal.
fn stop_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inetd_base_shifts_the_standard_ports_only() {
        let endpoints = inetd_endpoints(20000).unwrap();
        let ports: Vec<String> = endpoints.iter().map(|e| e.to_string()).collect();
        assert!(ports.contains(&"echo+tcp://:20007".to_string()));
        assert!(ports.contains(&"time+udp://:20037".to_string()));
        assert!(ports.contains(&"udp://:21567".to_string()));
        assert_eq!(endpoints.len(), 12);
        assert!(inetd_endpoints(65530).is_err());
    }
}

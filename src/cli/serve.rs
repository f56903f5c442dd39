//! `tsecho serve`: run the server until SIGINT or SIGTERM, then drain.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args as ClapArgs;
use tsecho::limits::fit_to_open_file_limit;
use tsecho::service::SERVICES;
use tsecho::settings::{DEFAULT_MAX_CONNECTIONS, Overrides, Settings};
use tsecho::{Address, Endpoint, Error, Server, ServiceKind, Shards, Transport};

#[derive(Debug, ClapArgs)]
pub struct Args {
    /// Read settings from this TOML file (keys are the long flag names);
    /// command line and environment override it.
    #[arg(long, value_name = "FILE", env = "TSECHO_CONFIG")]
    pub config: Option<PathBuf>,

    #[command(flatten)]
    pub overrides: Overrides,
}

/// Where the settings in effect came from, by key.
pub struct Sources {
    pub file: Vec<String>,
    /// The command line or the environment.
    pub flags: Vec<&'static str>,
}

impl Args {
    /// The settings in effect: defaults, then the file, then the
    /// environment and the command line.
    pub fn settings(&self) -> Result<(Settings, Sources), Error> {
        let (mut settings, file) = match &self.config {
            Some(path) => tsecho::settings::load(path)?,
            None => (Settings::default(), Vec::new()),
        };
        let flags = self.overrides.apply(&mut settings)?;
        endpoints(&settings)?;
        Ok((settings, Sources { file, flags }))
    }
}

/// The listeners to bind: --listen, plus the inetd set, or the defaults.
fn endpoints(settings: &Settings) -> Result<Vec<Endpoint>, Error> {
    let mut endpoints = settings.listen.clone();
    if settings.inetd {
        endpoints.extend(inetd_endpoints(settings.inetd_base)?);
    }
    if endpoints.is_empty() {
        endpoints = tsecho::default_endpoints();
    }
    Ok(endpoints)
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

/// The default fits the open-file limit; an explicit value is kept.
fn max_connections(settings: &Settings) -> usize {
    let wanted = settings.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS);
    let (fitted, file_limit) = fit_to_open_file_limit(wanted);
    match (file_limit, settings.max_connections) {
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

pub fn run(settings: Settings) -> anyhow::Result<()> {
    // Before any thread exists: taking them edits the environment.
    let activated = tsecho::systemd::take_activated_sockets();
    let mut endpoints = endpoints(&settings)?;
    if !activated.is_empty() && settings.listen.is_empty() && !settings.inetd {
        // systemd's sockets replace the defaults, as --listen would.
        endpoints.clear();
    }
    let mut options = settings.options();
    options.limits.max_connections = max_connections(&settings);
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let shards = Shards::start(settings.threads.unwrap_or(cpus)).context("starting the runtime")?;
    shards.block_on(async {
        let stop = stop_signal()?;
        let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .context("installing the SIGHUP handler")?;
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
        tokio::pin!(stop);
        // SIGHUP reloads the TLS certificates; the rest of a reload is
        // another issue's ("Zero-downtime").
        loop {
            tokio::select! {
                _ = &mut stop => break,
                _ = tsecho::systemd::watchdog() => break,
                _ = hangup.recv() => handle.reload_tls(),
            }
        }
        tracing::info!("stopping: draining connections");
        tsecho::systemd::notify("STOPPING=1\nSTATUS=draining");
        // The watchdog keeps being fed while the connections drain.
        tokio::select! {
            _ = handle.shutdown() => {}
            _ = tsecho::systemd::watchdog() => {}
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

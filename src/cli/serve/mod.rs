//! `tsecho serve`: run the server until SIGINT or SIGTERM, then drain;
//! reload on SIGHUP (`reload.rs`); hand the sockets to a new process that
//! asks on the control socket (`takeover.rs`).

mod reload;
mod signals;
mod takeover;

use std::path::PathBuf;

use anyhow::Context;
use clap::Args as ClapArgs;
use tsecho::control::ControlListener;
use tsecho::limits::fit_to_open_file_limit;
use tsecho::service::SERVICES;
use tsecho::settings::{DEFAULT_MAX_CONNECTIONS, Options, Overrides, Settings};
use tsecho::{Address, Endpoint, Error, Server, ServerHandle, ServiceKind, Shards, Transport};

use signals::{Asked, Signals};

#[derive(Debug, ClapArgs)]
pub struct Args {
    /// Read settings from this TOML file (keys are the long flag names);
    /// command line and environment override it.
    #[arg(long, value_name = "FILE", env = "TSECHO_CONFIG")]
    pub config: Option<PathBuf>,

    /// Take the listening sockets over from the server whose --control
    /// socket this is (a path or unix:// URL), then tell it to drain: an
    /// upgrade or restart without refusing a connection.
    #[arg(long, value_name = "PATH")]
    pub takeover: Option<String>,

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
    for info in SERVICES.iter().filter(|info| info.inetd) {
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
        let transports = match info.on_stream {
            Some(_) => &[Transport::Tcp, Transport::Udp][..],
            None => &[Transport::Udp][..],
        };
        for &transport in transports {
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

/// The listeners of `settings`; with sockets from systemd and no
/// listener asked for, just those (they replace the defaults, as --listen
/// would).
fn endpoints_for(settings: &Settings, inherited: bool) -> Result<Vec<Endpoint>, Error> {
    if inherited && settings.listen.is_empty() && !settings.inetd {
        return Ok(Vec::new());
    }
    endpoints(settings)
}

/// The server's options, the connection limit fitted to the open-file limit.
fn server_options(settings: &Settings) -> Options {
    let mut options = settings.options();
    options.limits.max_connections = max_connections(settings);
    options
}

/// How serving ended.
enum Ending {
    /// Drain, after the shutdown delay.
    Drain,
    /// Drop every connection now.
    Now,
    /// Another process serves the sockets: drain ours, leave the files.
    HandedOver(u32),
}

pub fn run(args: &Args, settings: Settings, level_fixed: bool) -> anyhow::Result<()> {
    // Before any thread exists: taking them edits the environment.
    let activated = tsecho::systemd::take_activated_sockets();
    // Checked before anything else happens; computed again below, once
    // the sockets a takeover brings are known.
    endpoints_for(&settings, !activated.is_empty())?;
    let takeover_path = args
        .takeover
        .as_deref()
        .map(takeover::takeover_path)
        .transpose()?;
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let shards = Shards::start(settings.threads.unwrap_or(cpus)).context("starting the runtime")?;
    shards.block_on(async {
        let mut signals = Signals::install()?;
        // The old server keeps serving until we commit: if anything here
        // fails, it is as if we had never started.
        let mut takeover = takeover_path
            .as_deref()
            .map(tsecho::control::Takeover::request)
            .transpose()?;
        let mut server = Server::builder()
            .options(server_options(&settings))
            .spread_over(shards.handles());
        let inherited = !activated.is_empty()
            || takeover
                .as_ref()
                .is_some_and(|t| t.listeners.iter().any(|l| l.inherited));
        for (service, socket) in activated {
            server = server.inherited(service, socket);
        }
        if let Some(takeover) = &mut takeover {
            server = takeover::add_sockets(server, takeover);
        }
        for endpoint in endpoints_for(&settings, inherited)? {
            server = server.endpoint(endpoint);
        }
        let control = takeover::control_listener(settings.control.as_ref(), takeover.as_mut())?;
        let handle = server.start().await?;
        let mut ready = "READY=1\nSTATUS=serving".to_string();
        if let Some(takeover) = &takeover {
            let old = match takeover.commit() {
                Ok(pid) => pid,
                Err(e) => {
                    // Not ours yet: the files stay with the old server.
                    handle.disown_socket_files();
                    return Err(e.into());
                }
            };
            tracing::info!("took over from process {old}, which now drains");
            ready = format!("MAINPID={}\n{ready}", std::process::id());
        }
        drop(takeover);
        if let Some(control) = &control {
            tracing::info!("control socket on {}", control.endpoint());
        }
        tsecho::systemd::notify(&ready);
        let run = Running {
            args,
            handle: &handle,
            control: control.as_ref(),
            started: Started {
                inherited,
                level_fixed,
                threads: settings.threads,
            },
        };
        let ending = run.until_stopped(&mut signals).await;
        stop(handle, ending, &settings, &mut signals, control).await;
        Ok(())
    })
}

/// The server while it serves, and what it answers.
struct Running<'a> {
    args: &'a Args,
    handle: &'a ServerHandle,
    control: Option<&'a ControlListener>,
    started: Started,
}

/// What a reload needs to know of how the server started.
pub struct Started {
    /// Whether some listeners came from systemd.
    inherited: bool,
    /// --log-level or RUST_LOG: a reload leaves the level alone.
    level_fixed: bool,
    /// The threads the server runs on, which only a restart changes.
    threads: Option<usize>,
}

impl Running<'_> {
    async fn until_stopped(&self, signals: &mut Signals) -> Ending {
        let mut answering = takeover::Answering::new();
        loop {
            tokio::select! {
                asked = signals.next() => match asked {
                    Asked::Stop(name) => {
                        tracing::info!("{name} received");
                        return Ending::Drain;
                    }
                    Asked::Quit => {
                        tracing::info!("SIGQUIT: stopping now, without a drain");
                        return Ending::Now;
                    }
                    Asked::Reload => {
                        reload::reload(self.args, self.handle, &self.started).await;
                    }
                    Asked::Ignored(name) => {
                        tracing::info!("{name} ignored: tsecho gives it no meaning");
                    }
                },
                () = tsecho::systemd::watchdog() => return Ending::Drain,
                pid = answering.next(self.control, self.handle) => return Ending::HandedOver(pid),
            }
        }
    }
}

/// Drains (or not), and removes the control socket's file unless the
/// process that took over serves it now.
async fn stop(
    handle: ServerHandle,
    ending: Ending,
    settings: &Settings,
    signals: &mut Signals,
    control: Option<ControlListener>,
) {
    let control_file = control.as_ref().and_then(ControlListener::path);
    drop(control);
    match ending {
        Ending::Now => {
            drop(handle);
            remove(control_file);
            tracing::info!("stopped");
            return;
        }
        Ending::HandedOver(pid) => {
            handle.disown_socket_files();
            handle.stop_metrics();
            tracing::info!("process {pid} serves the sockets now; stopping: draining connections");
        }
        Ending::Drain => {
            remove(control_file);
            delay_shutdown(&handle, settings.shutdown_delay, signals).await;
            tracing::info!("stopping: draining connections");
            tsecho::systemd::notify("STOPPING=1\nSTATUS=draining");
        }
    }
    // The watchdog keeps being fed while the connections drain.
    tokio::select! {
        () = handle.shutdown() => {}
        () = tsecho::systemd::watchdog() => {}
    }
    tracing::info!("stopped");
}

/// --shutdown-delay: /readyz answers 503 while everything is still
/// served, so that load balancers stop sending before the drain. Another
/// stop signal ends the wait.
async fn delay_shutdown(handle: &ServerHandle, delay: std::time::Duration, signals: &mut Signals) {
    if delay.is_zero() {
        return;
    }
    handle.withdraw_readiness();
    tracing::info!(
        "serving {} more before the drain; /readyz answers 503",
        tsecho::settings::text::show_duration(delay)
    );
    tsecho::systemd::notify("STATUS=stopping: readiness withdrawn");
    let deadline = tokio::time::Instant::now() + delay;
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => return,
            asked = signals.next() => match asked {
                Asked::Stop(_) | Asked::Quit => return,
                Asked::Reload | Asked::Ignored(_) => {}
            },
        }
    }
}

fn remove(file: Option<PathBuf>) {
    if let Some(path) = file {
        let _ = std::fs::remove_file(path);
    }
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
        assert!(ports.contains(&"rfc8762+udp://:20862".to_string()));
        assert!(!ports.iter().any(|p| p.starts_with("rfc8762+tcp")));
        assert_eq!(endpoints.len(), 13);
        assert!(inetd_endpoints(65530).is_err());
    }
}

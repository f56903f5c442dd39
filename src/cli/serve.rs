//! `tsecho serve`: run the server until SIGINT or SIGTERM, then drain.

use std::time::Duration;

use anyhow::Context;
use clap::{Args as ClapArgs, ValueEnum};
use tsecho::clock::{TimeFormat, TimeStyle};
use tsecho::framing::{DEFAULT_CHUNK, Framing};
use tsecho::service::SERVICES;
use tsecho::{Address, Endpoint, Error, Options, Server, ServiceKind, Transport};

use super::{parse_duration, parse_size};

#[derive(Debug, ClapArgs)]
pub struct Args {
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum FramingArg {
    Lines,
    Raw,
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
        }
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
    let endpoints = args.endpoints()?;
    let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
    runtime.block_on(async {
        let mut server = Server::builder().options(args.options());
        for endpoint in endpoints {
            server = server.endpoint(endpoint);
        }
        let handle = server.start().await?;
        wait_for_stop_signal().await?;
        tracing::info!("stopping: draining connections");
        handle.shutdown().await;
        tracing::info!("stopped");
        Ok(())
    })
}

async fn wait_for_stop_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
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

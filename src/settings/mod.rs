//! Every setting of `tsecho serve`, with its default.
//!
//! [`Settings`] is the one source of truth: its `Default` holds every
//! default (those of lower types, such as the limits, taken from them); the TOML file is read into it with serde (`file.rs`); the
//! command line and the `TSECHO_*` variables fill an [`Overrides`] that
//! is laid over it (`flags.rs`), so the precedence is command line >
//! environment > file > default. `check-config` and `--help` show values
//! from it; the server takes the [`Options`] derived from it.

mod environment;
mod file;
mod flags;
pub use crate::text;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;

use crate::clock::{StampClock, TimeFormat, TimeStyle};
use crate::endpoint::Endpoint;
use crate::framing::{DEFAULT_CHUNK, DEFAULT_MAX_LINE, Framing};
use crate::limits::{Limits, UdpLimits};
use crate::service::stamp::Template;
use crate::tls::{ClientAuth, TlsSettings};
use crate::uring::IoEngine;

pub use environment::check_environment;
pub use file::load;
pub use flags::{Overrides, show_defaults};
use text::{show_duration, show_networks, show_size};

/// The port of the stamp service, on TCP and UDP, when none is given.
pub use crate::service::stamp::PORT as DEFAULT_PORT;
/// Where the clients go when given no URL: the stamp port on this machine.
pub const DEFAULT_URL: &str = "tcp://localhost:21567";

/// How stream input is cut into messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FramingKind {
    /// Each line.
    Lines,
    /// Each read, as the textbook server does.
    Raw,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    Text,
    Json,
}

/// Every setting of `tsecho serve`. Each field is a flag (`--max-line`), a
/// variable (`TSECHO_MAX_LINE`) and a key of the config file
/// (`max-line`); the doc comments are in `flags.rs`, where `--help` shows
/// them. The file's values are read with the flags' own notation
/// (`file.rs`).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Settings {
    #[serde(deserialize_with = "file::endpoints")]
    pub listen: Vec<Endpoint>,
    #[serde(deserialize_with = "file::boolean")]
    pub inetd: bool,
    pub inetd_base: u16,
    #[serde(deserialize_with = "file::text")]
    pub format: TimeFormat,
    #[serde(deserialize_with = "file::boolean")]
    pub utc: bool,
    pub stamp_clock: StampClock,
    pub io: IoEngine,
    pub framing: FramingKind,
    #[serde(deserialize_with = "file::size")]
    pub max_line: usize,
    #[serde(deserialize_with = "file::size")]
    pub chunk: usize,
    #[serde(deserialize_with = "file::duration")]
    pub drain_timeout: Duration,
    #[serde(deserialize_with = "file::duration")]
    pub shutdown_delay: Duration,
    #[serde(deserialize_with = "file::optional_text")]
    pub control: Option<Endpoint>,
    #[serde(deserialize_with = "file::optional_text")]
    pub reply_template: Option<Template>,
    pub instance: Option<String>,
    #[serde(deserialize_with = "file::networks")]
    pub proxy_trusted: Vec<IpNet>,
    #[serde(deserialize_with = "file::optional_text")]
    pub metrics: Option<Endpoint>,
    #[serde(deserialize_with = "file::boolean")]
    pub log_connections: bool,
    /// None: one per CPU this process may use.
    #[serde(deserialize_with = "file::threads")]
    pub threads: Option<usize>,
    pub log_level: String,
    pub log_format: LogFormat,
    #[serde(deserialize_with = "file::size")]
    pub output_budget: usize,
    #[serde(deserialize_with = "file::duration")]
    pub write_timeout: Duration,
    #[serde(deserialize_with = "file::duration")]
    pub idle_timeout: Duration,
    #[serde(deserialize_with = "file::duration")]
    pub line_timeout: Duration,
    /// None: 10,000, lowered to fit the open-file limit.
    pub max_connections: Option<usize>,
    pub max_connections_per_ip: usize,
    pub udp_rate: f64,
    pub udp_burst: f64,
    pub udp_global_rate: f64,
    pub udp_slip: u32,
    pub udp_byte_factor: f64,
    #[serde(deserialize_with = "file::size")]
    pub udp_byte_allowance: usize,
    #[serde(deserialize_with = "file::networks")]
    pub limit_exempt: Vec<IpNet>,
    #[serde(deserialize_with = "file::optional_text")]
    pub tls_cert: Option<PathBuf>,
    #[serde(deserialize_with = "file::optional_text")]
    pub tls_key: Option<PathBuf>,
    #[serde(deserialize_with = "file::boolean")]
    pub tls_self_signed: bool,
    #[serde(deserialize_with = "file::optional_text")]
    pub tls_client_ca: Option<PathBuf>,
    /// None: required when a client CA is given.
    pub tls_client_auth: Option<ClientAuth>,
    #[serde(deserialize_with = "file::duration")]
    pub tls_handshake_timeout: Duration,
    /// None: a quarter of max-connections.
    pub tls_max_handshakes: Option<usize>,
}

pub use crate::limits::DEFAULT_MAX_CONNECTIONS;

/// The serve-only defaults are written here; those of the time format, the
/// framing and the limits where their types are, and gathered here.
impl Default for Settings {
    fn default() -> Self {
        let style = TimeStyle::default();
        let limits = Limits::default();
        let tls = TlsSettings::default();
        Settings {
            listen: Vec::new(),
            inetd: false,
            inetd_base: 0,
            format: style.format,
            utc: style.utc,
            stamp_clock: StampClock::default(),
            io: IoEngine::default(),
            framing: FramingKind::Lines,
            max_line: DEFAULT_MAX_LINE,
            chunk: DEFAULT_CHUNK,
            drain_timeout: Duration::from_secs(5),
            shutdown_delay: Duration::ZERO,
            control: None,
            reply_template: None,
            instance: None,
            proxy_trusted: Vec::new(),
            metrics: None,
            log_connections: false,
            threads: None,
            log_level: "info".into(),
            log_format: LogFormat::Text,
            output_budget: limits.output_budget,
            write_timeout: limits.write_timeout,
            idle_timeout: limits.idle_timeout,
            line_timeout: limits.line_timeout,
            max_connections: None,
            max_connections_per_ip: limits.max_connections_per_ip,
            udp_rate: limits.udp.rate,
            udp_burst: limits.udp.burst,
            udp_global_rate: limits.udp.global_rate,
            udp_slip: limits.udp.slip,
            udp_byte_factor: limits.udp.byte_factor,
            udp_byte_allowance: limits.udp.byte_allowance as usize,
            limit_exempt: limits.exempt,
            tls_cert: tls.cert,
            tls_key: tls.key,
            tls_self_signed: tls.self_signed,
            tls_client_ca: tls.client_ca,
            tls_client_auth: tls.client_auth,
            tls_handshake_timeout: tls.handshake_timeout,
            tls_max_handshakes: tls.max_handshakes,
        }
    }
}

impl Settings {
    /// What the server runs with. `max_connections` is the explicit value
    /// or the default; fitting it to the open-file limit is the caller's
    /// (it logs about it).
    pub fn options(&self) -> Options {
        Options {
            time: TimeStyle {
                format: self.format.clone(),
                utc: self.utc,
            },
            stamp_clock: self.stamp_clock,
            io: self.io,
            framing: match self.framing {
                FramingKind::Lines => Framing::Lines {
                    max_line: self.max_line,
                },
                FramingKind::Raw => Framing::Raw { chunk: self.chunk },
            },
            drain_timeout: self.drain_timeout,
            limits: self.limits(),
            metrics: self.metrics.clone(),
            reply_template: self.reply_template.clone().map(Arc::new),
            instance: self.instance.clone(),
            proxy_trusted: self.proxy_trusted.clone(),
            log_connections: self.log_connections,
            tls: TlsSettings {
                cert: self.tls_cert.clone(),
                key: self.tls_key.clone(),
                self_signed: self.tls_self_signed,
                client_ca: self.tls_client_ca.clone(),
                client_auth: self.tls_client_auth,
                handshake_timeout: self.tls_handshake_timeout,
                max_handshakes: self.tls_max_handshakes,
            },
        }
    }

    pub fn limits(&self) -> Limits {
        Limits {
            output_budget: self.output_budget,
            write_timeout: self.write_timeout,
            idle_timeout: self.idle_timeout,
            line_timeout: self.line_timeout,
            max_connections: self.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS),
            max_connections_per_ip: self.max_connections_per_ip,
            udp: UdpLimits {
                rate: self.udp_rate,
                burst: self.udp_burst,
                global_rate: self.udp_global_rate,
                slip: self.udp_slip,
                byte_factor: self.udp_byte_factor,
                byte_allowance: self.udp_byte_allowance as f64,
            },
            exempt: self.limit_exempt.clone(),
        }
    }

    /// Every setting as its key and its values in the notation the flags
    /// take, for `check-config` and for the defaults `--help` shows.
    pub fn describe(&self) -> Vec<(&'static str, Vec<String>)> {
        let one = |v: String| vec![v];
        let maybe = |v: Option<String>| v.into_iter().collect::<Vec<_>>();
        vec![
            (
                "listen",
                self.listen.iter().map(Endpoint::to_string).collect(),
            ),
            ("inetd", one(self.inetd.to_string())),
            ("inetd-base", one(self.inetd_base.to_string())),
            ("format", one(self.format.to_string())),
            ("utc", one(self.utc.to_string())),
            ("stamp-clock", one(self.stamp_clock.name().into())),
            ("io", one(self.io.name().into())),
            ("framing", one(self.framing.name().into())),
            ("max-line", one(show_size(self.max_line))),
            ("chunk", one(show_size(self.chunk))),
            ("drain-timeout", one(show_duration(self.drain_timeout))),
            ("shutdown-delay", one(show_duration(self.shutdown_delay))),
            (
                "control",
                maybe(self.control.as_ref().map(Endpoint::to_string)),
            ),
            (
                "reply-template",
                maybe(self.reply_template.as_ref().map(|t| t.to_string())),
            ),
            ("instance", maybe(self.instance.clone())),
            ("proxy-trusted", one(show_networks(&self.proxy_trusted))),
            (
                "metrics",
                maybe(self.metrics.as_ref().map(Endpoint::to_string)),
            ),
            ("log-connections", one(self.log_connections.to_string())),
            ("threads", maybe(self.threads.map(|n| n.to_string()))),
            ("log-level", one(self.log_level.clone())),
            ("log-format", one(self.log_format.name().into())),
            ("output-budget", one(show_size(self.output_budget))),
            ("write-timeout", one(show_duration(self.write_timeout))),
            ("idle-timeout", one(show_duration(self.idle_timeout))),
            ("line-timeout", one(show_duration(self.line_timeout))),
            (
                "max-connections",
                maybe(self.max_connections.map(|n| n.to_string())),
            ),
            (
                "max-connections-per-ip",
                one(self.max_connections_per_ip.to_string()),
            ),
            ("udp-rate", one(self.udp_rate.to_string())),
            ("udp-burst", one(self.udp_burst.to_string())),
            ("udp-global-rate", one(self.udp_global_rate.to_string())),
            ("udp-slip", one(self.udp_slip.to_string())),
            ("udp-byte-factor", one(self.udp_byte_factor.to_string())),
            (
                "udp-byte-allowance",
                one(show_size(self.udp_byte_allowance)),
            ),
            ("limit-exempt", one(show_networks(&self.limit_exempt))),
            (
                "tls-cert",
                maybe(self.tls_cert.as_ref().map(|p| show_path(p))),
            ),
            (
                "tls-key",
                maybe(self.tls_key.as_ref().map(|p| show_path(p))),
            ),
            ("tls-self-signed", one(self.tls_self_signed.to_string())),
            (
                "tls-client-ca",
                maybe(self.tls_client_ca.as_ref().map(|p| show_path(p))),
            ),
            (
                "tls-client-auth",
                maybe(self.tls_client_auth.map(|a| a.name().into())),
            ),
            (
                "tls-handshake-timeout",
                one(show_duration(self.tls_handshake_timeout)),
            ),
            (
                "tls-max-handshakes",
                maybe(self.tls_max_handshakes.map(|n| n.to_string())),
            ),
        ]
    }
}

fn show_path(path: &std::path::Path) -> String {
    path.display().to_string()
}

impl FramingKind {
    pub fn name(self) -> &'static str {
        match self {
            FramingKind::Lines => "lines",
            FramingKind::Raw => "raw",
        }
    }
}

impl LogFormat {
    pub fn name(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

/// What the server needs of the settings: everything but the listeners,
/// resolved into the types the connection code uses.
#[derive(Debug, Clone)]
pub struct Options {
    pub time: TimeStyle,
    /// Kernel receive times or the user clock (a restart changes it: it
    /// is a socket option, set as each listener starts).
    pub stamp_clock: StampClock,
    /// What serves TCP connections: epoll or io_uring (a restart
    /// changes it).
    pub io: IoEngine,
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
    pub proxy_trusted: Vec<IpNet>,
    /// One log line per closed connection: peer, listener, counts, duration.
    pub log_connections: bool,
    /// Certificates and handshake limits of tls:// listeners.
    pub tls: TlsSettings,
}

impl Default for Options {
    fn default() -> Self {
        Settings::default().options()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_url_uses_the_default_port() {
        assert!(DEFAULT_URL.ends_with(&format!(":{DEFAULT_PORT}")));
    }

    #[test]
    fn every_setting_is_described_once() {
        let keys: Vec<&str> = Settings::default()
            .describe()
            .iter()
            .map(|(k, _)| *k)
            .collect();
        let unique: std::collections::HashSet<&&str> = keys.iter().collect();
        assert_eq!(unique.len(), keys.len());
        assert_eq!(keys.len(), 41);
    }
}

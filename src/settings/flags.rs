//! The command line and the `TSECHO_*` variables: one optional field per
//! setting, laid over the settings from the file. Nothing here has a
//! default; `--help` shows the ones `Settings::default` holds.

use clap::builder::BoolishValueParser;
use std::path::PathBuf;

use clap::Command;
use ipnet::IpNet;

use super::{FramingKind, Settings};
use crate::clock::{StampClock, TimeFormat};
use crate::endpoint::Endpoint;
use crate::error::Error;
use crate::service::stamp::Template;
use crate::text::{parse_duration, parse_networks, parse_size, parse_threads};
use crate::tls::ClientAuth;
use crate::uring::IoEngine;

/// A list of networks as one value (`10.0.0.0/8,::1`; empty for none).
#[derive(Debug, Clone)]
pub struct Networks(Vec<IpNet>);

impl From<Networks> for Vec<IpNet> {
    fn from(Networks(nets): Networks) -> Self {
        nets
    }
}

fn networks(s: &str) -> Result<Networks, String> {
    parse_networks(s).map(Networks)
}

fn template(s: &str) -> Result<Template, String> {
    s.parse().map_err(|e: Error| e.to_string())
}

fn time_format(s: &str) -> Result<TimeFormat, String> {
    s.parse().map_err(|e: Error| e.to_string())
}

#[derive(Debug, Default, clap::Args)]
pub struct Overrides {
    /// Listener URL, repeatable: tcp://HOST:PORT, tls://HOST:PORT,
    /// udp://HOST:PORT, unix:///path, unixgram:///path, unix://@abstract,
    /// with an optional service prefix (echo+tcp://:7). Default: tcp://:21567 and udp://:21567.
    #[arg(
        long,
        short = 'l',
        value_name = "URL",
        env = "TSECHO_LISTEN",
        value_delimiter = ','
    )]
    pub listen: Vec<String>,

    /// Also serve the classic inetd set on TCP and UDP: echo 7, discard 9,
    /// daytime 13, chargen 19, time 37, and stamp 21567.
    #[arg(long, env = "TSECHO_INETD", value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub inetd: Option<bool>,

    /// Add N to the inetd ports (20007, 20009, ... for 20000), so they need
    /// no privileges.
    #[arg(long, value_name = "N", env = "TSECHO_INETD_BASE")]
    pub inetd_base: Option<u16>,

    /// Timestamp format: ctime, rfc3339, rfc3339-ms, rfc3339-us, unix,
    /// unix-ms, unix-us, unix-ns, or a strftime pattern such as '%H:%M:%S%.3f'.
    #[arg(long, env = "TSECHO_FORMAT", value_parser = time_format)]
    pub format: Option<TimeFormat>,

    /// Show times in UTC instead of local time (local time follows TZ).
    #[arg(long, env = "TSECHO_UTC", value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub utc: Option<bool>,

    /// Which clock stamps a message: kernel (when the kernel received it,
    /// on TCP, UDP and Unix datagram sockets) or user (when tsecho read it).
    #[arg(long, value_enum, env = "TSECHO_STAMP_CLOCK")]
    pub stamp_clock: Option<StampClock>,

    /// What serves TCP connections: epoll, uring (io_uring; refuses to
    /// start where the kernel does not allow it) or auto (io_uring where
    /// allowed, else epoll).
    #[arg(long, value_enum, env = "TSECHO_IO")]
    pub io: Option<IoEngine>,

    /// How stream input is cut into messages: each line, or each read (as the
    /// textbook server does).
    #[arg(long, value_enum, env = "TSECHO_FRAMING")]
    pub framing: Option<FramingKind>,

    /// Longest line answered in one reply; longer lines are answered in
    /// pieces of this size.
    #[arg(long, value_name = "BYTES", value_parser = parse_size, env = "TSECHO_MAX_LINE")]
    pub max_line: Option<usize>,

    /// Largest read answered as one reply with --framing raw.
    #[arg(long, value_name = "BYTES", value_parser = parse_size, env = "TSECHO_CHUNK")]
    pub chunk: Option<usize>,

    /// On SIGTERM/SIGINT, how long connections get to finish their replies.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, env = "TSECHO_DRAIN_TIMEOUT")]
    pub drain_timeout: Option<std::time::Duration>,

    /// On SIGTERM, keep serving this long with /readyz answering 503
    /// before the drain starts, so load balancers stop sending first.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, env = "TSECHO_SHUTDOWN_DELAY")]
    pub shutdown_delay: Option<std::time::Duration>,

    /// Accept `tsecho serve --takeover` on this unix:// socket (mode 0600):
    /// a new process takes over every listening socket, then this one
    /// drains. Off by default.
    #[arg(long, value_name = "URL", env = "TSECHO_CONTROL")]
    pub control: Option<String>,

    /// Shape stamp replies: {time}, {msg}, {peer}, {local}, {host}; '{{'
    /// for a brace. Default: '[{time}] {msg}'.
    #[arg(long, value_name = "TEMPLATE", env = "TSECHO_REPLY_TEMPLATE", value_parser = template)]
    pub reply_template: Option<Template>,

    /// Name for {host} in reply templates [default: the hostname].
    #[arg(long, value_name = "NAME", env = "TSECHO_INSTANCE")]
    pub instance: Option<String>,

    /// Load balancers allowed to send PROXY protocol headers on proxy+tcp://
    /// listeners, comma-separated; connections from anyone else are closed.
    #[arg(long, value_name = "CIDR,...", value_parser = networks, env = "TSECHO_PROXY_TRUSTED")]
    pub proxy_trusted: Option<Networks>,

    /// Serve Prometheus metrics on /metrics, liveness on /healthz and
    /// readiness on /readyz (503 while draining) at this tcp:// URL.
    #[arg(long, value_name = "URL", env = "TSECHO_METRICS")]
    pub metrics: Option<String>,

    /// Log one line per closed connection: peer, listener, replies, bytes,
    /// duration.
    #[arg(long, env = "TSECHO_LOG_CONNECTIONS", value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub log_connections: Option<bool>,

    /// Threads serving connections, each with its own event loop and its
    /// own copy of every TCP and UDP socket (SO_REUSEPORT), among which the
    /// kernel spreads connections and datagrams; Unix sockets are served
    /// by the first [default: the CPUs this process may use].
    #[arg(long, value_name = "N", env = "TSECHO_THREADS", value_parser = parse_threads)]
    pub threads: Option<usize>,

    /// Replies held per connection once the kernel's send buffer is full;
    /// past it tsecho stops reading from that client until it reads.
    #[arg(long, value_name = "BYTES", value_parser = parse_size, env = "TSECHO_OUTPUT_BUDGET", help_heading = "Limits")]
    pub output_budget: Option<usize>,

    /// Close a connection whose client reads nothing for this long.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, env = "TSECHO_WRITE_TIMEOUT", help_heading = "Limits")]
    pub write_timeout: Option<std::time::Duration>,

    /// Close a connection that sends nothing for this long.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, env = "TSECHO_IDLE_TIMEOUT", help_heading = "Limits")]
    pub idle_timeout: Option<std::time::Duration>,

    /// Close a connection whose started line is not finished within this long.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, env = "TSECHO_LINE_TIMEOUT", help_heading = "Limits")]
    pub line_timeout: Option<std::time::Duration>,

    /// Connections open at once; more are accepted and closed at once
    /// [default: 10000, lowered to fit the open-file limit]
    #[arg(
        long,
        value_name = "N",
        env = "TSECHO_MAX_CONNECTIONS",
        help_heading = "Limits"
    )]
    pub max_connections: Option<usize>,

    /// Connections open at once from one address (IPv6: one /64).
    #[arg(
        long,
        value_name = "N",
        env = "TSECHO_MAX_CONNECTIONS_PER_IP",
        help_heading = "Limits"
    )]
    pub max_connections_per_ip: Option<usize>,

    /// UDP replies per second to one source address (IPv6: one /64).
    #[arg(
        long,
        value_name = "PER_SEC",
        env = "TSECHO_UDP_RATE",
        help_heading = "Limits"
    )]
    pub udp_rate: Option<f64>,

    /// UDP replies one source may get in a burst above its rate.
    #[arg(
        long,
        value_name = "N",
        env = "TSECHO_UDP_BURST",
        help_heading = "Limits"
    )]
    pub udp_burst: Option<f64>,

    /// UDP replies per second to all limited sources together.
    #[arg(
        long,
        value_name = "PER_SEC",
        env = "TSECHO_UDP_GLOBAL_RATE",
        help_heading = "Limits"
    )]
    pub udp_global_rate: Option<f64>,

    /// Over the rate, still answer every Nth datagram (0: never).
    #[arg(
        long,
        value_name = "N",
        env = "TSECHO_UDP_SLIP",
        help_heading = "Limits"
    )]
    pub udp_slip: Option<u32>,

    /// A UDP source receives at most this many times the bytes it sent
    /// (counting IP and UDP headers)...
    #[arg(
        long,
        value_name = "FACTOR",
        env = "TSECHO_UDP_BYTE_FACTOR",
        help_heading = "Limits"
    )]
    pub udp_byte_factor: Option<f64>,

    /// ...plus this allowance.
    #[arg(long, value_name = "BYTES", value_parser = parse_size, env = "TSECHO_UDP_BYTE_ALLOWANCE", help_heading = "Limits")]
    pub udp_byte_allowance: Option<usize>,

    /// Source networks no per-address limit applies to, comma-separated;
    /// '' for none.
    #[arg(long, value_name = "CIDR,...", value_parser = networks, env = "TSECHO_LIMIT_EXEMPT", help_heading = "Limits")]
    pub limit_exempt: Option<Networks>,

    /// Certificate chain of tls:// listeners (PEM, leaf first); reloaded on
    /// SIGHUP and when the file changes.
    #[arg(
        long,
        value_name = "FILE",
        env = "TSECHO_TLS_CERT",
        help_heading = "TLS"
    )]
    pub tls_cert: Option<PathBuf>,

    /// Private key of --tls-cert (PEM: PKCS#8, RSA or EC; RSA, ECDSA or Ed25519).
    #[arg(
        long,
        value_name = "FILE",
        env = "TSECHO_TLS_KEY",
        help_heading = "TLS"
    )]
    pub tls_key: Option<PathBuf>,

    /// Make a certificate for localhost and this host in memory, and log its
    /// SHA-256 fingerprint: TLS in one command, to try things out.
    #[arg(long, env = "TSECHO_TLS_SELF_SIGNED", value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = BoolishValueParser::new(), help_heading = "TLS")]
    pub tls_self_signed: Option<bool>,

    /// Mutual TLS: CA certificates (PEM) that client certificates must chain to.
    #[arg(
        long,
        value_name = "FILE",
        env = "TSECHO_TLS_CLIENT_CA",
        help_heading = "TLS"
    )]
    pub tls_client_ca: Option<PathBuf>,

    /// Whether clients must show a certificate [default: required with --tls-client-ca].
    #[arg(long, value_enum, env = "TSECHO_TLS_CLIENT_AUTH", help_heading = "TLS")]
    pub tls_client_auth: Option<ClientAuth>,

    /// Close a connection whose TLS handshake is not done within this long.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, env = "TSECHO_TLS_HANDSHAKE_TIMEOUT", help_heading = "TLS")]
    pub tls_handshake_timeout: Option<std::time::Duration>,

    /// TLS handshakes in progress at once; more are closed at once
    /// [default: a quarter of --max-connections].
    #[arg(
        long,
        value_name = "N",
        env = "TSECHO_TLS_MAX_HANDSHAKES",
        help_heading = "TLS"
    )]
    pub tls_max_handshakes: Option<usize>,
}

impl Overrides {
    /// Lays every value given over `s`, and returns their keys as the
    /// config file names them (for `check-config`). Listener URLs are
    /// parsed here, so that a bad one reads as every endpoint error does.
    pub fn apply(&self, s: &mut Settings) -> Result<Vec<&'static str>, Error> {
        let mut set = Vec::new();
        // Each given value into its setting (an optional setting takes
        // `Some`, a list of networks its addresses, through `Into`).
        macro_rules! over {
            ($($field:ident => $key:literal),* $(,)?) => {
                $(if let Some(value) = &self.$field {
                    s.$field = value.clone().into();
                    set.push($key);
                })*
            };
        }
        if !self.listen.is_empty() {
            s.listen = self
                .listen
                .iter()
                .map(|url| url.parse())
                .collect::<Result<_, _>>()?;
            set.push("listen");
        }
        if let Some(url) = &self.metrics {
            s.metrics = Some(url.parse::<Endpoint>()?);
            set.push("metrics");
        }
        if let Some(url) = &self.control {
            s.control = Some(url.parse::<Endpoint>()?);
            set.push("control");
        }
        over! {
            inetd => "inetd", inetd_base => "inetd-base", format => "format", utc => "utc",
            stamp_clock => "stamp-clock", io => "io",
            framing => "framing", max_line => "max-line", chunk => "chunk",
            drain_timeout => "drain-timeout", shutdown_delay => "shutdown-delay",
            reply_template => "reply-template",
            instance => "instance", proxy_trusted => "proxy-trusted",
            log_connections => "log-connections", threads => "threads",
            output_budget => "output-budget", write_timeout => "write-timeout",
            idle_timeout => "idle-timeout", line_timeout => "line-timeout",
            max_connections => "max-connections",
            max_connections_per_ip => "max-connections-per-ip", udp_rate => "udp-rate",
            udp_burst => "udp-burst", udp_global_rate => "udp-global-rate",
            udp_slip => "udp-slip", udp_byte_factor => "udp-byte-factor",
            udp_byte_allowance => "udp-byte-allowance", limit_exempt => "limit-exempt",
            tls_cert => "tls-cert", tls_key => "tls-key", tls_self_signed => "tls-self-signed",
            tls_client_ca => "tls-client-ca", tls_client_auth => "tls-client-auth",
            tls_handshake_timeout => "tls-handshake-timeout",
            tls_max_handshakes => "tls-max-handshakes",
        }
        Ok(set)
    }
}

/// `serve` with `[default: ...]` in the help of every setting that has one,
/// read from `Settings::default`.
pub fn show_defaults(serve: Command) -> Command {
    let defaults = Settings::default().describe();
    serve.mut_args(|arg| {
        let Some(long) = arg.get_long() else {
            return arg;
        };
        let shown = defaults
            .iter()
            .find(|(key, _)| *key == long)
            .map(|(_, values)| values.join(","));
        match (shown, arg.get_help().map(ToString::to_string)) {
            (Some(value), Some(help)) if !value.is_empty() && !help.contains("[default:") => {
                arg.help(format!("{help} [default: {value}]"))
            }
            _ => arg,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Probe {
        #[command(flatten)]
        overrides: Overrides,
    }

    /// Every flag, given a value, lands in its setting: a field added to
    /// Overrides and forgotten in `apply` fails here.
    #[test]
    fn every_flag_is_laid_over_its_setting() {
        let examples = [
            ("listen", "tcp://:7"),
            ("reply-template", "{time} {msg}"),
            ("instance", "a"),
            ("metrics", "tcp://127.0.0.1:0"),
            ("control", "unix:///run/tsecho/control.sock"),
            ("threads", "2"),
            ("max-connections", "5"),
            ("tls-cert", "c.pem"),
            ("tls-key", "k.pem"),
            ("tls-client-ca", "ca.pem"),
            ("tls-client-auth", "optional"),
            ("tls-max-handshakes", "3"),
        ];
        let mut described = Settings::default().describe();
        // The log settings are global flags of the binary, not serve's.
        described.retain(|(key, _)| !matches!(*key, "log-level" | "log-format"));
        let mut args = vec!["probe".to_string()];
        for (key, values) in &described {
            let value = match examples.iter().find(|(k, _)| k == key) {
                Some((_, example)) => example.to_string(),
                None => values.join(","),
            };
            args.push(format!("--{key}={value}"));
        }
        let probe = Probe::try_parse_from(&args).unwrap();
        let mut settings = Settings::default();
        let mut set = probe.overrides.apply(&mut settings).unwrap();
        let mut all: Vec<&str> = described.iter().map(|(key, _)| *key).collect();
        set.sort();
        all.sort();
        assert_eq!(set, all);
        assert_eq!(settings.threads, Some(2));
        assert_eq!(settings.instance.as_deref(), Some("a"));
    }
}

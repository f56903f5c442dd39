//! Every setting of `tsecho serve` apart from the listeners, with its
//! default.

use std::sync::Arc;
use std::time::Duration;

use crate::clock::TimeStyle;
use crate::endpoint::Endpoint;
use crate::framing::Framing;
use crate::limits::Limits;
use crate::service::stamp::Template;

/// The port of the stamp service, on TCP and UDP, when none is given.
pub const DEFAULT_PORT: u16 = 21567;

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

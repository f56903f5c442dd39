//! tsecho: a timestamp echo server (and the classic inetd services) over
//! TCP, UDP and Unix sockets, with the clients that talk to it.
//!
//! Data flows one way: `endpoint -> listener -> connection (stream |
//! datagram) -> framing -> service -> reply`; docs/architecture.md maps
//! the modules. Start a server in a test with [`Server`].

pub mod ancillary;
pub mod client;
pub mod clock;
mod connection;
mod context;
pub mod control;
mod datagram;
pub mod endpoint;
pub mod error;
pub mod fault;
pub mod framing;
pub mod limits;
pub mod listener;
mod metrics;
pub mod proxy_protocol;
mod rate_limit;
mod server;
pub mod service;
pub mod settings;
pub mod shards;
pub mod stats;
mod stream;
pub mod system_clock;
pub mod systemd;
pub mod text;
pub mod tls;
pub mod transport;
mod udp_batch;
pub mod uring;

pub use endpoint::{Address, Endpoint, Transport};
pub use error::Error;
pub use server::{Listening, ReloadReport, Server, ServerHandle, default_endpoints};
pub use service::ServiceKind;
pub use settings::{DEFAULT_PORT, Options};
pub use shards::Shards;

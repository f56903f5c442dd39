//! tsecho: a timestamp echo server (and the classic inetd services) over
//! TCP, UDP and Unix sockets, with the clients that talk to it.
//!
//! Data flows one way: `listener -> stream | datagram -> framing -> service
//! -> reply`. Start a server in a test with [`Server`].

pub mod client;
pub mod clock;
mod datagram;
pub mod endpoint;
pub mod error;
pub mod framing;
pub mod limits;
pub mod listener;
mod metrics;
pub mod proxy_protocol;
mod rate_limit;
mod server;
pub mod service;
mod shards;
pub mod stats;
mod stream;
pub mod systemd;
mod udp_batch;

pub use endpoint::{Address, Endpoint, Transport};
pub use error::Error;
pub use server::{DEFAULT_PORT, Listening, Options, Server, ServerHandle, default_endpoints};
pub use service::ServiceKind;
pub use shards::Shards;

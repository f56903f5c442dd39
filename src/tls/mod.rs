//! TLS for stream listeners (`tls://`) and for the clients, on rustls.
//!
//! The crypto provider is ring: at full handshakes it tied with aws-lc-rs
//! on this machine (wall clock) and ran fewer instructions (callgrind),
//! and it builds without compiling a C library of its own
//! (docs/benchmarks.md, "TLS"). Its one place is [`provider`].

pub mod certs;
pub mod client;
pub mod counters;
mod server;

use std::sync::Arc;

use rustls::SupportedProtocolVersion;
use rustls::crypto::CryptoProvider;

pub use server::{ClientAuth, DEFAULT_HANDSHAKE_TIMEOUT, ServerTls, TlsSettings};

/// TLS 1.2 and 1.3, nothing older.
pub static VERSIONS: &[&SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// What a reply template may show about a connection's TLS session.
#[derive(Debug, Clone, Default)]
pub struct SessionInfo {
    pub version: &'static str,
    pub cipher: String,
    pub sni: String,
    /// The client certificate's subject; empty without one.
    pub client_cert: String,
}

impl SessionInfo {
    pub fn of(conn: &rustls::ServerConnection) -> SessionInfo {
        SessionInfo {
            version: counters::version_name(conn.protocol_version()),
            cipher: conn
                .negotiated_cipher_suite()
                .and_then(|s| s.suite().as_str())
                .unwrap_or("")
                .to_string(),
            sni: conn.server_name().unwrap_or("").to_string(),
            client_cert: conn
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(certs::subject)
                .unwrap_or_default(),
        }
    }
}

//! What a TLS listener counts: connections by protocol version, and
//! handshakes that failed, by why. Handshakes are rare next to replies,
//! so plain shared atomics do.

use std::sync::atomic::{AtomicU64, Ordering};

/// Why a handshake did not complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Not finished within `--tls-handshake-timeout`.
    Timeout,
    /// Too many handshakes in progress: closed without starting.
    Busy,
    /// The client spoke something else (plain text on a TLS port).
    NotTls,
    /// No protocol version or cipher suite in common (TLS 1.1 and older).
    Incompatible,
    /// Client authentication required and no certificate shown.
    NoClientCert,
    /// A client certificate that does not verify against the client CA.
    BadClientCert,
    /// The client went away or sent an alert.
    Closed,
    Other,
}

impl Failure {
    pub const ALL: [Failure; 8] = [
        Failure::Timeout,
        Failure::Busy,
        Failure::NotTls,
        Failure::Incompatible,
        Failure::NoClientCert,
        Failure::BadClientCert,
        Failure::Closed,
        Failure::Other,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Failure::Timeout => "timeout",
            Failure::Busy => "busy",
            Failure::NotTls => "not_tls",
            Failure::Incompatible => "incompatible",
            Failure::NoClientCert => "no_client_cert",
            Failure::BadClientCert => "bad_client_cert",
            Failure::Closed => "closed",
            Failure::Other => "other",
        }
    }

    /// Sorts a failed handshake's error (rustls's, inside tokio-rustls's
    /// `io::Error`) into its reason.
    pub fn of(err: &std::io::Error) -> Failure {
        use rustls::Error as E;
        let Some(tls) = err.get_ref().and_then(|e| e.downcast_ref::<E>()) else {
            return match err.kind() {
                std::io::ErrorKind::UnexpectedEof
                | std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::BrokenPipe => Failure::Closed,
                _ => Failure::Other,
            };
        };
        match tls {
            E::NoCertificatesPresented => Failure::NoClientCert,
            E::InvalidCertificate(_) => Failure::BadClientCert,
            E::InvalidMessage(_) | E::InappropriateMessage { .. } => Failure::NotTls,
            E::PeerIncompatible(_) => Failure::Incompatible,
            E::AlertReceived(_) => Failure::Closed,
            _ => Failure::Other,
        }
    }
}

/// A TLS version rustls negotiated, as a metric label.
pub fn version_name(version: Option<rustls::ProtocolVersion>) -> &'static str {
    match version {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
        _ => "unknown",
    }
}

/// One TLS listener's counts, shared by its copies.
#[derive(Debug, Default)]
pub struct TlsCounters {
    tls12: AtomicU64,
    tls13: AtomicU64,
    failures: [AtomicU64; Failure::ALL.len()],
}

impl TlsCounters {
    pub fn count_established(&self, version: Option<rustls::ProtocolVersion>) {
        let counter = match version {
            Some(rustls::ProtocolVersion::TLSv1_2) => &self.tls12,
            _ => &self.tls13,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count_failure(&self, failure: Failure) {
        self.failures[failure as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Established connections per version label.
    pub fn established(&self) -> [(&'static str, u64); 2] {
        [
            ("TLSv1.2", self.tls12.load(Ordering::Relaxed)),
            ("TLSv1.3", self.tls13.load(Ordering::Relaxed)),
        ]
    }

    /// Failed handshakes per reason label.
    pub fn failures(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        Failure::ALL
            .iter()
            .map(|f| (f.name(), self.failures[*f as usize].load(Ordering::Relaxed)))
    }
}

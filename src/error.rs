//! Errors users see, and the sysexits(3) codes they map to.
//!
//! A user who mistypes a port or starts a second server should read one
//! short line that names the thing and the reason, and a script should be
//! able to tell "bad arguments" from "address in use" by the exit code.

use std::io;

/// Command line usage error.
pub const EX_USAGE: i32 = 64;
/// Host name unknown or unreachable.
pub const EX_NOHOST: i32 = 68;
/// Service unavailable: address in use, connection refused.
pub const EX_UNAVAILABLE: i32 = 69;
/// Internal software error.
pub const EX_SOFTWARE: i32 = 70;
/// Input/output error.
pub const EX_IOERR: i32 = 74;
/// Remote error in protocol: a TLS handshake that failed (an untrusted
/// certificate, a refused client certificate, no common version).
pub const EX_PROTOCOL: i32 = 76;
/// Temporary failure: timed out, no answer.
pub const EX_TEMPFAIL: i32 = 75;
/// Permission denied.
pub const EX_NOPERM: i32 = 77;
/// Configuration error: a certificate or key that cannot be used.
pub const EX_CONFIG: i32 = 78;

/// Errors the library reports; each knows its exit code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid endpoint {input:?}: {reason}")]
    Endpoint { input: String, reason: String },
    #[error("invalid time format {input:?}: {reason}")]
    TimeFormat { input: String, reason: String },
    #[error("cannot listen on {endpoint}: {}", describe(.reason))]
    Listen { endpoint: String, reason: io::Error },
    #[error("cannot connect to {endpoint}: {}", describe(.reason))]
    Connect { endpoint: String, reason: io::Error },
    /// `--takeover`: the server before us could not be reached, or the
    /// hand-over broke off.
    #[error("cannot take over from {control}: {}", describe(.reason))]
    Takeover { control: String, reason: io::Error },
    #[error("{0}")]
    Usage(String),
    /// A certificate, key or CA file that cannot be read or used.
    #[error("TLS: {0}")]
    Tls(String),
    /// Ctrl-C at the interactive prompt.
    #[error("interrupted")]
    Interrupted,
}

/// Exit code of a program stopped by Ctrl-C (128 + SIGINT), as shells report it.
pub const EX_INTERRUPTED: i32 = 130;

/// A host name that does not resolve; carried inside an `io::Error` so
/// that the exit code (68) and the message can tell it from other failures.
#[derive(Debug, thiserror::Error)]
#[error("unknown host {host:?}")]
pub struct UnknownHost {
    pub host: String,
}

impl Error {
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Endpoint { .. } | Error::TimeFormat { .. } | Error::Usage(_) => EX_USAGE,
            Error::Listen { reason, .. }
            | Error::Connect { reason, .. }
            | Error::Takeover { reason, .. } => io_exit_code(reason),
            Error::Interrupted => EX_INTERRUPTED,
            Error::Tls(_) => EX_CONFIG,
        }
    }
}

/// The sysexits code for an I/O error met while binding or connecting.
pub fn io_exit_code(err: &io::Error) -> i32 {
    use io::ErrorKind::*;
    if is_unknown_host(err) {
        return EX_NOHOST;
    }
    if err
        .get_ref()
        .is_some_and(|inner| inner.is::<rustls::Error>())
    {
        return EX_PROTOCOL;
    }
    match err.kind() {
        PermissionDenied => EX_NOPERM,
        TimedOut => EX_TEMPFAIL,
        HostUnreachable | NetworkUnreachable => EX_NOHOST,
        AddrInUse | AddrNotAvailable | ConnectionRefused | NotFound => EX_UNAVAILABLE,
        InvalidInput => EX_USAGE,
        _ => match err.raw_os_error() {
            Some(libc::EAI_NONAME) => EX_NOHOST,
            _ => EX_IOERR,
        },
    }
}

fn is_unknown_host(err: &io::Error) -> bool {
    err.get_ref().is_some_and(|inner| inner.is::<UnknownHost>())
}

/// A lower-case reason without the "(os error N)" suffix, as in
/// `address already in use`.
pub fn describe(err: &io::Error) -> String {
    use io::ErrorKind::*;
    if is_unknown_host(err) {
        return err.to_string();
    }
    let fixed = match err.kind() {
        AddrInUse => "address already in use",
        AddrNotAvailable => "address not available",
        PermissionDenied => "permission denied",
        ConnectionRefused => "connection refused",
        ConnectionReset => "connection reset by peer",
        HostUnreachable => "no route to host",
        NetworkUnreachable => "network unreachable",
        NotFound => "no such file or directory",
        _ => "",
    };
    if !fixed.is_empty() {
        return fixed.to_string();
    }
    let text = err.to_string();
    let text = match text.find(" (os error") {
        Some(at) => &text[..at],
        None => &text,
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_in_use_reads_like_the_documented_message() {
        let err = io::Error::from_raw_os_error(libc::EADDRINUSE);
        let e = Error::Listen {
            endpoint: "tcp://[::]:21567".into(),
            reason: err,
        };
        assert_eq!(
            e.to_string(),
            "cannot listen on tcp://[::]:21567: address already in use"
        );
        assert_eq!(e.exit_code(), EX_UNAVAILABLE);
    }

    #[test]
    fn unknown_host_maps_to_nohost_and_names_the_host() {
        let err = io::Error::new(
            io::ErrorKind::NotFound,
            UnknownHost {
                host: "no-such-host.invalid".into(),
            },
        );
        assert_eq!(io_exit_code(&err), EX_NOHOST);
        assert_eq!(describe(&err), "unknown host \"no-such-host.invalid\"");
    }

    #[test]
    fn permission_denied_maps_to_noperm() {
        let err = io::Error::from_raw_os_error(libc::EACCES);
        assert_eq!(io_exit_code(&err), EX_NOPERM);
        assert_eq!(describe(&err), "permission denied");
    }
}

//! Accepting with back-off, for every listener the server has (metrics
//! included): which accept errors concern one connection (retry at once)
//! and which are resource exhaustion (pause, log once a second, never
//! spin and never exit), as axum's `serve` tells them apart.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::context::LogLimiter;
use crate::stats::Stats;
use crate::transport::Accept;

/// After resource exhaustion (EMFILE, ENFILE, ENOBUFS, ENOMEM) connections
/// wait in the kernel's queue while we pause, instead of the loop spinning.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// At most one log line per this interval about failing accepts.
const ACCEPT_LOG_INTERVAL: Duration = Duration::from_secs(1);
/// Linux's largest accept queue (net.core.somaxconn's default).
const QUEUED_AT_MOST: usize = 4096;

/// The next connection, or None once `stop` is cancelled.
pub async fn accept_next<L: Accept>(
    listener: &L,
    stop: &CancellationToken,
    stats: &Stats,
    log: &LogLimiter,
) -> Option<(L::Stream, Option<SocketAddr>)> {
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stop.cancelled() => return None,
            accepted = listener.accept_one() => accepted,
        };
        let e = match accepted {
            Ok(accepted) => return Some(accepted),
            Err(e) => e,
        };
        Stats::add(&stats.local().accept_errors, 1);
        if is_connection_error(&e) {
            continue;
        }
        if log.may_log(ACCEPT_LOG_INTERVAL) {
            tracing::warn!("accept failed: {e}; pausing accepts for {ACCEPT_BACKOFF:?}");
        }
        tokio::select! {
            _ = tokio::time::sleep(ACCEPT_BACKOFF) => {}
            _ = stop.cancelled() => return None,
        }
    }
}

/// The connections waiting in the kernel's queue, taken without waiting.
/// At most a backlog's worth: clients that keep connecting while a
/// listener stops cannot hold it open.
pub fn queued<'a, L: Accept>(
    listener: &'a L,
    stats: &'a Stats,
) -> impl Iterator<Item = (L::Stream, Option<SocketAddr>)> + 'a {
    let mut tries = 0;
    std::iter::from_fn(move || {
        while tries < QUEUED_AT_MOST {
            tries += 1;
            match listener.accept_queued() {
                Ok(accepted) => return Some(accepted),
                Err(e) if is_connection_error(&e) => Stats::add(&stats.local().accept_errors, 1),
                Err(_) => return None,
            }
        }
        None
    })
}

/// Errors from `accept` that concern one connection that already failed;
/// the next accept can go ahead at once.
fn is_connection_error(e: &io::Error) -> bool {
    use io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | ConnectionRefused | Interrupted
    ) || matches!(e.raw_os_error(), Some(libc::EPROTO | libc::EPERM))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exhaustion_is_not_a_connection_error_but_an_aborted_handshake_is() {
        assert!(!is_connection_error(&io::Error::from_raw_os_error(
            libc::EMFILE
        )));
        assert!(!is_connection_error(&io::Error::from_raw_os_error(
            libc::ENFILE
        )));
        assert!(is_connection_error(&io::Error::from_raw_os_error(
            libc::ECONNABORTED
        )));
    }
}

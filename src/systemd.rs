//! Running under systemd: sockets handed over by socket activation
//! (`LISTEN_FDS`, `LISTEN_FDNAMES`, read with the sd-notify crate), and
//! readiness, stopping and watchdog notifications (`NOTIFY_SOCKET`).
//!
//! Notifications are sent here rather than by sd-notify, whose 0.5 release
//! connects `NOTIFY_SOCKET` as a path only: systemd also hands out abstract
//! sockets (`@name`), which this supports.

#![allow(unsafe_code)]

use std::os::fd::{FromRawFd, OwnedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixDatagram};

use socket2::Socket;

use crate::service::ServiceKind;

/// Sockets systemd passed to this process, each with the service its name
/// selects (a `FileDescriptorName=` of `echo`, `daytime`...; anything else,
/// or no name, means stamp). Call once: the descriptors become owned here.
/// The variables stay, harmless: `LISTEN_PID` names this process only.
pub fn take_activated_sockets() -> Vec<(ServiceKind, Socket)> {
    let fds = match sd_notify::listen_fds_with_names() {
        Ok(fds) => fds,
        Err(e) => {
            tracing::warn!("ignoring the sockets systemd passed: {e}");
            return Vec::new();
        }
    };
    fds.map(|(fd, name)| {
        // SAFETY: by the socket activation protocol, descriptors 3 ..
        // 3+LISTEN_FDS are open sockets handed to this process and owned by
        // nothing else in it; this is the one place that adopts them.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let service = name.parse().unwrap_or(ServiceKind::Stamp);
        (service, Socket::from(fd))
    })
    .collect()
}

/// Sends a state change to the service manager, if one asked for them.
pub fn notify(state: &str) {
    let Ok(path) = std::env::var("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(sock) = UnixDatagram::unbound() else {
        return;
    };
    let sent = match path.strip_prefix('@') {
        Some(name) => UnixAddr::from_abstract_name(name)
            .and_then(|addr| sock.send_to_addr(state.as_bytes(), &addr)),
        None => sock.send_to(state.as_bytes(), &path),
    };
    if let Err(e) = sent {
        tracing::warn!("cannot notify the service manager at {path}: {e}");
    }
}

/// Feeds systemd's watchdog at half its interval, for ever; never
/// completes, and does nothing when no watchdog is set.
pub async fn watchdog() {
    let Some(interval) = sd_notify::watchdog_enabled() else {
        return std::future::pending().await;
    };
    let mut tick = tokio::time::interval(interval / 2);
    loop {
        tick.tick().await;
        notify("WATCHDOG=1");
    }
}

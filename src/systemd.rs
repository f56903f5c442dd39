//! Running under systemd: sockets handed over by socket activation
//! (`LISTEN_FDS`, `LISTEN_FDNAMES`) and readiness, stopping and watchdog
//! notifications (`NOTIFY_SOCKET`, `WATCHDOG_USEC`), following
//! sd_listen_fds(3) and sd_notify(3) without linking libsystemd.

#![allow(unsafe_code)]

use std::os::fd::{FromRawFd, OwnedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixDatagram};
use std::time::Duration;

use socket2::Socket;

use crate::service::ServiceKind;

/// The first inherited descriptor, by the protocol.
const LISTEN_FDS_START: i32 = 3;

/// Sockets systemd passed to this process, each with the service its name
/// selects (a `FileDescriptorName=` of `echo`, `daytime`...; anything else,
/// or no name, means stamp). The variables are removed so that children do
/// not inherit them.
pub fn take_activated_sockets() -> Vec<(ServiceKind, Socket)> {
    let for_us = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|pid| pid.parse::<u32>().ok())
        .is_some_and(|pid| pid == std::process::id());
    let count = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.parse::<i32>().ok())
        .unwrap_or(0);
    let names = std::env::var("LISTEN_FDNAMES").unwrap_or_default();
    for var in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        // SAFETY (of the std call, which is unsafe in edition 2024): this
        // runs at start-up, before the runtime or any other thread exists.
        unsafe { std::env::remove_var(var) };
    }
    if !for_us || count <= 0 {
        return Vec::new();
    }
    let names: Vec<&str> = names.split(':').collect();
    (0..count)
        .map(|i| {
            // SAFETY: by the socket activation protocol, descriptors 3 ..
            // 3+LISTEN_FDS are open sockets handed to this process and owned
            // by nothing else in it; each is adopted exactly once.
            let fd = unsafe { OwnedFd::from_raw_fd(LISTEN_FDS_START + i) };
            let service = names
                .get(i as usize)
                .and_then(|name| name.parse().ok())
                .unwrap_or(ServiceKind::Stamp);
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

/// Half the watchdog interval systemd expects pings at, if it expects them.
pub fn watchdog_interval() -> Option<Duration> {
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.parse::<u32>().ok() != Some(std::process::id())
    {
        return None;
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

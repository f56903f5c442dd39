//! Limits that keep one client, or many, from taking more than their share:
//! connection counts (total and per source address) and the timeouts of a
//! stream connection. The UDP response limiter is in `rate_limit.rs`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipnet::IpNet;

/// Every limit, with the defaults `tsecho serve --help` shows.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Replies held in tsecho for one connection while the kernel's send
    /// buffer is full; past it the connection is not read (backpressure).
    pub output_budget: usize,
    /// A connection whose client has read nothing for this long is closed.
    pub write_timeout: Duration,
    /// A connection with no input for this long is closed.
    pub idle_timeout: Duration,
    /// A started line not finished within this long is closed (slowloris).
    pub line_timeout: Duration,
    pub max_connections: usize,
    /// Per client address; IPv6 counts per /64.
    pub max_connections_per_ip: usize,
    pub udp: UdpLimits,
    /// Sources no per-address limit applies to (default: loopback, which
    /// cannot be spoofed from outside).
    pub exempt: Vec<IpNet>,
}

/// Response rate limiting for UDP, in the style of DNS RRL.
#[derive(Debug, Clone, PartialEq)]
pub struct UdpLimits {
    /// Replies per second to one source (IPv6: one /64).
    pub rate: f64,
    pub burst: f64,
    /// Replies per second to all limited sources together.
    pub global_rate: f64,
    /// Over the limit, still answer every Nth datagram (0: never).
    pub slip: u32,
    /// A source receives at most this many times the bytes it sent...
    pub byte_factor: f64,
    /// ...plus this many bytes.
    pub byte_allowance: f64,
}

impl Default for UdpLimits {
    fn default() -> Self {
        UdpLimits {
            rate: 100.0,
            burst: 200.0,
            global_rate: 20_000.0,
            slip: 0,
            byte_factor: 3.0,
            byte_allowance: 4096.0,
        }
    }
}

/// Connections open at once when no limit is given.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

/// The one place the limits' defaults are written; `Settings` takes them
/// from here.
impl Default for Limits {
    fn default() -> Self {
        Limits {
            output_budget: 32 * 1024,
            write_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(300),
            line_timeout: Duration::from_secs(60),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_ip: 256,
            udp: UdpLimits::default(),
            exempt: ["127.0.0.0/8", "::1/128"]
                .iter()
                .filter_map(|net| net.parse().ok())
                .collect(),
        }
    }
}

impl Limits {
    pub fn is_exempt(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.exempt.iter().any(|net| net.contains(&ip))
    }
}

/// The key a per-address limit counts under: the IPv4 address, or the /64
/// an IPv6 address belongs to (one customer's usual allocation).
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(prefix.into())
        }
        v4 => v4,
    }
}

/// Connections held open by the process, and the limit it lowers to fit
/// the open-file limit, keeping a few descriptors for everything else.
pub fn fit_to_open_file_limit(max_connections: usize) -> (usize, Option<u64>) {
    const RESERVED: u64 = 64;
    match open_file_limit() {
        Some(limit) if (max_connections as u64) + RESERVED > limit => {
            (limit.saturating_sub(RESERVED).max(1) as usize, Some(limit))
        }
        _ => (max_connections, None),
    }
}

/// The soft RLIMIT_NOFILE, read from /proc so no unsafe call is needed.
fn open_file_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Why a connection was refused at the door.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    MaxConnections,
    PerIp,
}

/// Counts open connections, in total and per source, for admission.
#[derive(Debug, Default)]
pub struct ConnectionGate {
    open: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
}

/// An admitted connection; dropping it frees its place.
pub struct Admission {
    gate: Arc<ConnectionGate>,
    ip: Option<IpAddr>,
}

impl ConnectionGate {
    pub fn admit(
        self: &Arc<Self>,
        peer: Option<IpAddr>,
        limits: &Limits,
    ) -> Result<Admission, Refusal> {
        if self.open.fetch_add(1, Ordering::AcqRel) >= limits.max_connections {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::MaxConnections);
        }
        let mut admission = Admission {
            gate: self.clone(),
            ip: None,
        };
        if let Some(ip) = peer.filter(|ip| !limits.is_exempt(*ip)) {
            let key = source_key(ip);
            let mut per_ip = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
            let count = per_ip.entry(key).or_default();
            if *count >= limits.max_connections_per_ip {
                return Err(Refusal::PerIp);
            }
            *count += 1;
            admission.ip = Some(key);
        }
        Ok(admission)
    }

    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.gate.open.fetch_sub(1, Ordering::AcqRel);
        if let Some(ip) = self.ip {
            let mut per_ip = self.gate.per_ip.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(count) = per_ip.get_mut(&ip) {
                *count -= 1;
                if *count == 0 {
                    per_ip.remove(&ip);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv6_sources_count_per_64() {
        assert_eq!(source_key(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(source_key(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
    }

    #[test]
    fn loopback_is_exempt_by_default_including_mapped_ipv4() {
        let limits = Limits::default();
        assert!(limits.is_exempt(ip("127.0.0.9")));
        assert!(limits.is_exempt(ip("::ffff:127.0.0.1")));
        assert!(limits.is_exempt(ip("::1")));
        assert!(!limits.is_exempt(ip("192.0.2.1")));
    }

    #[test]
    fn gate_refuses_past_each_limit_and_frees_places_on_drop() {
        let limits = Limits {
            max_connections: 3,
            max_connections_per_ip: 2,
            exempt: vec![],
            ..Limits::default()
        };
        let gate = Arc::new(ConnectionGate::default());
        let a1 = gate.admit(Some(ip("192.0.2.1")), &limits).unwrap();
        let _a2 = gate.admit(Some(ip("192.0.2.1")), &limits).unwrap();
        assert_eq!(
            gate.admit(Some(ip("192.0.2.1")), &limits).err(),
            Some(Refusal::PerIp)
        );
        let _b = gate.admit(Some(ip("192.0.2.2")), &limits).unwrap();
        assert_eq!(
            gate.admit(Some(ip("192.0.2.3")), &limits).err(),
            Some(Refusal::MaxConnections)
        );
        drop(a1);
        assert_eq!(gate.open(), 2);
        assert!(gate.admit(Some(ip("192.0.2.1")), &limits).is_ok());
    }

    #[test]
    fn open_file_limit_is_read() {
        assert!(open_file_limit().is_some_and(|n| n > 0));
        let (fitted, lowered) = fit_to_open_file_limit(usize::MAX / 2);
        assert!(lowered.is_some() && fitted < usize::MAX / 2);
    }
}

//! Counters the server keeps while it runs: cheap relaxed atomics, read
//! through `ServerHandle::stats()` by tests and, later, by metrics.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        #[derive(Debug, Default)]
        pub struct Stats {
            $($(#[$doc])* pub $name: AtomicU64,)*
        }

        /// A copy of the counters at one moment.
        #[derive(Debug, Default, Clone, PartialEq, Eq)]
        pub struct Snapshot {
            $($(#[$doc])* pub $name: u64,)*
        }

        impl Stats {
            pub fn snapshot(&self) -> Snapshot {
                Snapshot { $($name: self.$name.load(Ordering::Relaxed),)* }
            }
        }
    };
}

counters! {
    /// Stream connections accepted.
    connections_accepted,
    /// Stream connections currently open.
    connections_open,
    /// Replies sent on streams (lines, pieces or reads, per framing).
    stream_replies,
    /// Datagrams answered.
    datagram_replies,
    /// Datagram replies cut to fit the largest datagram.
    datagram_replies_truncated,
    /// Datagrams not answered because the source port is 0 or a reflecting port.
    datagrams_dropped_reflector_port,
    /// Datagrams not answered because they carried our own last reply back (a loop).
    datagrams_dropped_loop,
    /// Connections closed at once because --max-connections were open.
    connections_rejected_max,
    /// Connections closed at once because their address had --max-connections-per-ip open.
    connections_rejected_per_ip,
    /// Connections closed after --idle-timeout without input.
    closed_idle_timeout,
    /// Connections closed because a line took longer than --line-timeout.
    closed_line_timeout,
    /// Connections closed because the client read nothing for --write-timeout.
    closed_write_timeout,
    /// Connections to a PROXY listener from a peer not in --proxy-trusted.
    proxy_rejected_untrusted,
    /// PROXY protocol headers malformed, too long, or not sent within 3 s.
    proxy_rejected_malformed,
    /// Failed accepts (resource exhaustion and per-connection errors).
    accept_errors,
    /// Datagrams not answered: their source was over its reply rate.
    datagrams_dropped_rate_limit,
    /// Datagrams not answered: the reply would exceed the source's byte budget.
    datagrams_dropped_byte_budget,
    /// Datagrams over the rate answered anyway (every Nth, --udp-slip).
    datagrams_slipped,
    /// Bytes read from clients.
    bytes_in,
    /// Bytes written to clients.
    bytes_out,
}

impl Stats {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn sub(counter: &AtomicU64, n: u64) {
        counter.fetch_sub(n, Ordering::Relaxed);
    }
}

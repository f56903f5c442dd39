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

/// Upper bounds of the reply-latency histogram buckets, in seconds.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0,
];

/// Counters of one listener, for per-listener metrics: what it accepted and
/// answered, and how long replies took from the read that brought their
/// request to the write that sent them.
#[derive(Debug, Default)]
pub struct ListenerStats {
    pub connections_accepted: AtomicU64,
    pub replies: AtomicU64,
    /// Per bucket of LATENCY_BUCKETS, then one for larger values.
    latency_buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    latency_sum_ns: AtomicU64,
}

impl ListenerStats {
    /// Records `replies` replies that all took `latency` (one batch).
    pub fn record_replies(&self, replies: u64, latency: std::time::Duration) {
        if replies == 0 {
            return;
        }
        Stats::add(&self.replies, replies);
        let seconds = latency.as_secs_f64();
        let bucket = LATENCY_BUCKETS
            .iter()
            .position(|&bound| seconds <= bound)
            .unwrap_or(LATENCY_BUCKETS.len());
        Stats::add(&self.latency_buckets[bucket], replies);
        let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        Stats::add(&self.latency_sum_ns, ns.saturating_mul(replies));
    }

    /// Cumulative bucket counts (the last one is +Inf), and the sum in seconds.
    pub fn latency(&self) -> (Vec<u64>, f64) {
        let mut total = 0;
        let cumulative = self
            .latency_buckets
            .iter()
            .map(|b| {
                total += b.load(Ordering::Relaxed);
                total
            })
            .collect();
        (
            cumulative,
            self.latency_sum_ns.load(Ordering::Relaxed) as f64 / 1e9,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn latency_histogram_is_cumulative_with_an_infinite_bucket() {
        let s = ListenerStats::default();
        s.record_replies(3, Duration::from_micros(40));
        s.record_replies(2, Duration::from_millis(3));
        s.record_replies(1, Duration::from_secs(5));
        let (buckets, sum) = s.latency();
        assert_eq!(buckets[0], 3);
        assert_eq!(buckets[6], 5); // <= 5 ms
        assert_eq!(*buckets.last().unwrap(), 6);
        assert!((sum - (3.0 * 40e-6 + 2.0 * 3e-3 + 5.0)).abs() < 1e-9);
        assert_eq!(s.replies.load(Ordering::Relaxed), 6);
    }
}

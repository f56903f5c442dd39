//! Counters the server keeps while it runs: cheap relaxed atomics, read
//! through `ServerHandle::stats()` by tests and by /metrics.
//!
//! Every thread adds to its own copy of the counters, cache lines apart from
//! the other threads' copies: threads serving connections on different
//! cores then never contend for one line, which a single shared atomic per
//! counter makes them do on every reply. Reading sums the copies.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Copies of the counters; threads beyond this many share them.
const SLOTS: usize = 16;

/// One `T` per thread, each aligned to its own cache lines.
#[derive(Debug)]
pub struct PerThread<T> {
    slots: Box<[Slot<T>; SLOTS]>,
}

/// 128 bytes: adjacent-line prefetching pairs 64-byte lines.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Slot<T>(T);

impl<T: Default> Default for PerThread<T> {
    fn default() -> Self {
        PerThread {
            slots: Box::new(std::array::from_fn(|_| Slot::default())),
        }
    }
}

impl<T> PerThread<T> {
    /// The calling thread's copy.
    pub fn local(&self) -> &T {
        &self.slots[thread_slot() % SLOTS].0
    }

    pub fn all(&self) -> impl Iterator<Item = &T> {
        self.slots.iter().map(|slot| &slot.0)
    }
}

/// Threads take slots in turn as they first count something.
fn thread_slot() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SLOT: usize = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    SLOT.with(|slot| *slot)
}

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        /// One thread's counters.
        #[derive(Debug, Default)]
        pub struct Counters {
            $($(#[$doc])* pub $name: AtomicU64,)*
        }

        /// A copy of the counters at one moment.
        #[derive(Debug, Default, Clone, PartialEq, Eq)]
        pub struct Snapshot {
            $($(#[$doc])* pub $name: u64,)*
        }

        impl Stats {
            /// The sums over all threads.
            pub fn snapshot(&self) -> Snapshot {
                let mut sum = Snapshot::default();
                for counters in self.per_thread.all() {
                    $(sum.$name = sum.$name.wrapping_add(counters.$name.load(Ordering::Relaxed));)*
                }
                sum
            }
        }
    };
}

counters! {
    /// Stream connections accepted.
    connections_accepted,
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

/// The server's counters, kept per thread.
#[derive(Debug, Default)]
pub struct Stats {
    per_thread: PerThread<Counters>,
}

impl Stats {
    /// This thread's counters, the ones to add to.
    pub fn local(&self) -> &Counters {
        self.per_thread.local()
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
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
    per_thread: PerThread<ListenerCounters>,
}

#[derive(Debug, Default)]
struct ListenerCounters {
    connections_accepted: AtomicU64,
    replies: AtomicU64,
    /// Per bucket of LATENCY_BUCKETS, then one for larger values.
    latency_buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    latency_sum_ns: AtomicU64,
}

impl ListenerStats {
    pub fn count_connection(&self) {
        Stats::add(&self.per_thread.local().connections_accepted, 1);
    }

    pub fn connections_accepted(&self) -> u64 {
        self.sum(|c| &c.connections_accepted)
    }

    pub fn replies(&self) -> u64 {
        self.sum(|c| &c.replies)
    }

    fn sum(&self, counter: impl Fn(&ListenerCounters) -> &AtomicU64) -> u64 {
        self.per_thread
            .all()
            .map(|c| counter(c).load(Ordering::Relaxed))
            .fold(0, u64::wrapping_add)
    }

    /// Records `replies` replies that all took `latency` (one batch).
    pub fn record_replies(&self, replies: u64, latency: std::time::Duration) {
        if replies == 0 {
            return;
        }
        let local = self.per_thread.local();
        Stats::add(&local.replies, replies);
        let seconds = latency.as_secs_f64();
        let bucket = LATENCY_BUCKETS
            .iter()
            .position(|&bound| seconds <= bound)
            .unwrap_or(LATENCY_BUCKETS.len());
        if let Some(counter) = local.latency_buckets.get(bucket) {
            Stats::add(counter, replies);
        }
        let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        Stats::add(&local.latency_sum_ns, ns.saturating_mul(replies));
    }

    /// Cumulative bucket counts (the last one is +Inf), and the sum in seconds.
    pub fn latency(&self) -> (Vec<u64>, f64) {
        let mut total = 0;
        let cumulative = (0..=LATENCY_BUCKETS.len())
            .map(|bucket| {
                total += self.sum(|c| &c.latency_buckets[bucket]);
                total
            })
            .collect();
        (cumulative, self.sum(|c| &c.latency_sum_ns) as f64 / 1e9)
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
        assert_eq!(s.replies(), 6);
    }

    #[test]
    fn counts_from_many_threads_add_up() {
        let stats = Stats::default();
        std::thread::scope(|scope| {
            for _ in 0..20 {
                scope.spawn(|| {
                    for _ in 0..1000 {
                        Stats::add(&stats.local().stream_replies, 1);
                    }
                });
            }
        });
        assert_eq!(stats.snapshot().stream_replies, 20_000);
    }
}

/// Reload outcomes (of the configuration, of the certificates), for /metrics.
#[derive(Debug, Default)]
pub struct ReloadCounts {
    pub ok: AtomicU64,
    pub error: AtomicU64,
}

impl ReloadCounts {
    pub fn count(&self, ok: bool) {
        let counter = if ok { &self.ok } else { &self.error };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

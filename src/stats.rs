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

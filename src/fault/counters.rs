//! Every fault applied, counted per listener and kind for /metrics.
//! Faults are rare next to replies and only on listeners that ask for
//! them, so plain shared atomics do.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A reply held back by delay or jitter.
    Delay,
    /// A datagram reply not sent.
    Drop,
    /// A datagram reply sent twice.
    Duplicate,
    /// A connection reset instead of a reply.
    Reset,
    /// A connection closed by close-after.
    Close,
    /// A write that waited for the bandwidth limit.
    Throttle,
    /// A pause in reading after a reply.
    Stall,
    /// A delayed datagram reply dropped because the queue was full.
    Overflow,
}

impl Kind {
    const ALL: [Kind; 8] = [
        Kind::Delay,
        Kind::Drop,
        Kind::Duplicate,
        Kind::Reset,
        Kind::Close,
        Kind::Throttle,
        Kind::Stall,
        Kind::Overflow,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Delay => "delay",
            Kind::Drop => "drop",
            Kind::Duplicate => "duplicate",
            Kind::Reset => "reset",
            Kind::Close => "close",
            Kind::Throttle => "throttle",
            Kind::Stall => "stall",
            Kind::Overflow => "overflow",
        }
    }
}

#[derive(Debug, Default)]
pub struct FaultCounts([AtomicU64; Kind::ALL.len()]);

impl FaultCounts {
    pub fn add(&self, kind: Kind, n: u64) {
        self.0[kind as usize].fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self, kind: Kind) -> u64 {
        self.0[kind as usize].load(Ordering::Relaxed)
    }
}

/// `tsecho_faults_total{listener,service,kind}`, one row per kind for
/// each (labels, counts) given; nothing when none is.
pub fn exposition<'a>(listeners: impl Iterator<Item = (String, &'a FaultCounts)>) -> String {
    let mut out = String::new();
    for (labels, counts) in listeners {
        if out.is_empty() {
            out.push_str("# HELP tsecho_faults_total Faults injected, per listener and kind.\n");
            out.push_str("# TYPE tsecho_faults_total counter\n");
        }
        for kind in Kind::ALL {
            let (name, n) = (kind.name(), counts.get(kind));
            let _ = writeln!(out, "tsecho_faults_total{{{labels},kind=\"{name}\"}} {n}");
        }
    }
    out
}

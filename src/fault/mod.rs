//! Fault injection: replies late, lost, doubled, reset, throttled, as a
//! slow or lossy link would deliver them, for testing clients and proxies.
//! A listener without faults never enters this code.

pub mod counters;
pub mod dice;
pub mod link;
pub mod queue;
pub mod spec;
pub mod timer;

pub use counters::{FaultCounts, Kind};
pub use dice::Dice;
pub use link::Link;
pub use spec::{Chance, Faults, JitterDist};
pub use timer::PreciseTimer;

/// A listener's faults and what they did.
#[derive(Debug)]
pub struct ListenerFaults {
    pub spec: Faults,
    pub counts: FaultCounts,
}

/// Sleeps until `at`; never wakes without one (a `select!` branch that
/// waits for the next fault, if there is one).
pub async fn sleep_until(at: Option<std::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

//! A slow link: bytes leave at most `bandwidth` per second, booked in
//! 10 ms slots at most one slot ahead, so that small writes share a
//! wakeup and the burst is two slots (20 ms of bytes), as a token
//! bucket's would be. Used by the faulty stream loop and by chargen.

use std::time::{Duration, Instant};

const SLOT: Duration = Duration::from_millis(10);

#[derive(Debug)]
pub struct Link {
    /// Bytes per second.
    rate: u64,
    /// When the bytes booked so far have left.
    booked_until: Option<Instant>,
}

impl Link {
    pub fn new(rate: u64) -> Self {
        Link {
            rate: rate.max(1),
            booked_until: None,
        }
    }

    /// The most bytes one write may send.
    pub fn slot_bytes(&self) -> usize {
        ((self.rate as f64 * SLOT.as_secs_f64()) as usize).max(1)
    }

    /// When the link takes more bytes; None or a past instant: now.
    pub fn busy_until(&self) -> Option<Instant> {
        self.booked_until.map(|until| until - SLOT)
    }

    /// Books `n` bytes written at `now`.
    pub fn book(&mut self, n: usize, now: Instant) {
        let start = self.booked_until.map_or(now, |until| until.max(now));
        self.booked_until = Some(start + Duration::from_secs_f64(n as f64 / self.rate as f64));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_of_bytes_keeps_the_link_busy_for_a_second_less_one_slot() {
        let mut link = Link::new(100 * 1024);
        let t0 = Instant::now();
        assert_eq!(link.slot_bytes(), 1024);
        assert!(link.busy_until().is_none());
        for _ in 0..100 {
            link.book(1024, t0);
        }
        let busy = link.busy_until().unwrap() - t0;
        assert!(busy.abs_diff(Duration::from_millis(990)) < Duration::from_micros(10));
    }
}

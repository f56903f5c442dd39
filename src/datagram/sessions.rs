//! STAMP's stateful mode (RFC 8762 §4.3): the reflector numbers the
//! packets it reflects in each session on its own, so that the sender can
//! tell loss on the way out from loss on the way back.
//!
//! A session is a sender's address and port. The table is bounded: past
//! `MAX_SESSIONS`, sessions idle for `IDLE` go first, then the one idle
//! longest, so a flood of spoofed senders costs memory once, not forever.

use std::collections::HashMap;
use std::time::{Duration, Instant};

pub const MAX_SESSIONS: usize = 16_384;
/// A session quiet this long may be forgotten (and restart from 0).
pub const IDLE: Duration = Duration::from_secs(300);

#[derive(Debug, Default)]
pub struct Sessions {
    next: HashMap<u64, (u32, Instant)>,
}

impl Sessions {
    /// The reflector's sequence number for the next packet of `peer`'s
    /// session: 0 for its first.
    pub fn next_sequence(&mut self, peer: u64, now: Instant) -> u32 {
        if !self.next.contains_key(&peer) && self.next.len() >= MAX_SESSIONS {
            self.make_room(now);
        }
        let (next, seen) = self.next.entry(peer).or_insert((0, now));
        let sequence = *next;
        *next = next.wrapping_add(1);
        *seen = now;
        sequence
    }

    fn make_room(&mut self, now: Instant) {
        self.next
            .retain(|_, (_, seen)| now.duration_since(*seen) < IDLE);
        if self.next.len() >= MAX_SESSIONS {
            let oldest = self.next.iter().min_by_key(|(_, (_, seen))| *seen);
            if let Some((&peer, _)) = oldest {
                self.next.remove(&peer);
            }
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.next.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_session_counts_from_zero_on_its_own() {
        let mut s = Sessions::default();
        let now = Instant::now();
        assert_eq!(
            [1, 1, 2, 1, 2].map(|peer| s.next_sequence(peer, now)),
            [0, 1, 0, 2, 1]
        );
    }

    #[test]
    fn the_table_stays_bounded_and_forgets_the_idlest() {
        let mut s = Sessions::default();
        let start = Instant::now();
        for peer in 0..MAX_SESSIONS as u64 {
            s.next_sequence(peer, start + Duration::from_micros(peer));
        }
        let later = start + Duration::from_secs(1);
        s.next_sequence(u64::MAX, later);
        assert_eq!(s.len(), MAX_SESSIONS);
        assert_eq!(s.next_sequence(1, later), 1, "kept");
        assert_eq!(s.next_sequence(0, later), 0, "the idlest was forgotten");
    }
}

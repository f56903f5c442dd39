//! Faults on a datagram socket: each reply is dropped, doubled or held
//! back in the socket's delay queue, by the listener's dice. Used by the
//! UDP thread and the Unix datagram task alike; a socket without faults
//! has none of this.

use std::time::Instant;

use crate::context::ListenerCtx;
use crate::fault::queue::DelayQueue;
use crate::fault::{Dice, Kind, ListenerFaults};

pub struct DatagramFaults<'a, A> {
    faults: &'a ListenerFaults,
    dice: Dice,
    queue: DelayQueue<A>,
}

impl<'a, A: Clone> DatagramFaults<'a, A> {
    pub fn new(listener: &'a ListenerCtx) -> Option<Self> {
        let faults = listener.faults.as_ref()?;
        Some(DatagramFaults {
            faults,
            dice: Dice::new(faults.spec.seed),
            queue: DelayQueue::default(),
        })
    }

    /// How many copies of a reply to send now: 1, 2 (duplicate) or 0
    /// (dropped, or queued to leave later). The dice are thrown in the
    /// same order for every reply, so a seed gives the same pattern for
    /// the same input.
    pub fn dispatch(&mut self, reply: &[u8], to: A, arrival: Instant) -> usize {
        let (spec, counts) = (&self.faults.spec, &self.faults.counts);
        let dropped = self.dice.happens(spec.drop);
        let doubled = self.dice.happens(spec.duplicate);
        let due = spec.delays().then(|| self.dice.due(spec, arrival));
        if dropped {
            counts.add(Kind::Drop, 1);
            return 0;
        }
        let copies = if doubled {
            counts.add(Kind::Duplicate, 1);
            2
        } else {
            1
        };
        let Some(due) = due else {
            return copies;
        };
        counts.add(Kind::Delay, 1);
        for _ in 0..copies {
            if !self.queue.push(due, reply, to.clone()) {
                counts.add(Kind::Overflow, 1);
            }
        }
        0
    }

    /// When the next delayed reply falls due.
    pub fn next_due(&self) -> Option<Instant> {
        self.queue.next_due()
    }

    /// The next delayed reply that is due by `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<(Vec<u8>, A)> {
        self.queue.pop_due(now)
    }
}

//! Delayed datagram replies of one socket: one deadline queue, ordered by
//! when each is due, so that one wakeup serves every reply that fell due
//! and no reply has a timer of its own. Datagrams may leave out of order,
//! as on a real link with jitter.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

/// Bytes of delayed replies a socket holds at most; past it a reply is
/// dropped (and counted), as a full router queue would.
pub const QUEUE_BYTES: usize = 4 * 1024 * 1024;

struct Entry<A> {
    due: Instant,
    /// Arrival order, so that replies due at the same instant keep it.
    seq: u64,
    reply: Vec<u8>,
    to: A,
}

impl<A> PartialEq for Entry<A> {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}
impl<A> Eq for Entry<A> {}
impl<A> PartialOrd for Entry<A> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<A> Ord for Entry<A> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.due, self.seq).cmp(&(other.due, other.seq))
    }
}

pub struct DelayQueue<A> {
    heap: BinaryHeap<Reverse<Entry<A>>>,
    bytes: usize,
    seq: u64,
}

impl<A> Default for DelayQueue<A> {
    fn default() -> Self {
        DelayQueue {
            heap: BinaryHeap::new(),
            bytes: 0,
            seq: 0,
        }
    }
}

impl<A> DelayQueue<A> {
    /// Queues a reply; false (and nothing queued) when the queue is full.
    pub fn push(&mut self, due: Instant, reply: &[u8], to: A) -> bool {
        if self.bytes + reply.len() > QUEUE_BYTES {
            return false;
        }
        self.bytes += reply.len();
        self.seq += 1;
        self.heap.push(Reverse(Entry {
            due,
            seq: self.seq,
            reply: reply.to_vec(),
            to,
        }));
        true
    }

    pub fn next_due(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse(e)| e.due)
    }

    /// The earliest reply if it is due by `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<(Vec<u8>, A)> {
        if self.next_due()? > now {
            return None;
        }
        let Reverse(entry) = self.heap.pop()?;
        self.bytes -= entry.reply.len();
        Some((entry.reply, entry.to))
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn replies_leave_by_due_time_and_never_early() {
        let t0 = Instant::now();
        let mut q = DelayQueue::default();
        q.push(t0 + Duration::from_millis(30), b"late", 1);
        q.push(t0 + Duration::from_millis(10), b"early", 2);
        q.push(t0 + Duration::from_millis(10), b"early too", 3);
        assert_eq!(q.next_due(), Some(t0 + Duration::from_millis(10)));
        assert!(q.pop_due(t0).is_none());
        let now = t0 + Duration::from_millis(20);
        assert_eq!(q.pop_due(now), Some((b"early".to_vec(), 2)));
        assert_eq!(q.pop_due(now), Some((b"early too".to_vec(), 3)));
        assert!(q.pop_due(now).is_none());
        assert!(!q.is_empty());
    }

    #[test]
    fn a_full_queue_refuses_instead_of_growing() {
        let mut q = DelayQueue::default();
        let big = vec![0; QUEUE_BYTES / 2];
        let due = Instant::now();
        assert!(q.push(due, &big, ()));
        assert!(q.push(due, &big, ()));
        assert!(!q.push(due, b"x", ()));
        q.pop_due(due);
        assert!(q.push(due, b"x", ()));
    }
}

//! `serve_requests` for a listener with faults: each reply is made on its
//! own and waits in the connection's outbox until it is due (delay,
//! jitter), leaves in order (a later reply never overtakes an earlier
//! one), at most as fast as the bandwidth allows; a reply may be a reset
//! instead, the connection may close after N replies, and reading may
//! pause after each reply (stall).
//!
//! One timer per connection, set to whatever comes next (the outbox's
//! head, the end of a stall, the bandwidth's next slot); the outbox counts
//! against the output budget, so a client that sends faster than the
//! delay lets replies go gets backpressure, not a growing queue.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::io;
use std::time::{Instant, SystemTime};

use super::{On, close, poll_read_scratch, read_while_draining, write_out};
use crate::connection::{self, Exchange, Expired};
use crate::fault::{Dice, Kind, Link, ListenerFaults, PreciseTimer};
use crate::stats::Stats;
use crate::transport::ByteStream;

/// A reply waiting for its time.
struct Delayed {
    due: Instant,
    /// When its request arrived, for the latency the metrics show.
    arrived: Instant,
    /// Replies in it (0 for echo, which has no messages).
    replies: u64,
    /// An RST goes out instead of this reply.
    reset: bool,
    /// Its bytes, the next `len` of the outbox's buffer.
    len: usize,
    /// Bytes of it already written (bandwidth sends it in slots).
    written: usize,
}

/// The faults of one connection and the replies they hold back.
struct Outbox<'a> {
    faults: &'a ListenerFaults,
    dice: Dice,
    queue: VecDeque<Delayed>,
    /// The waiting replies' bytes, back to back from `head` on: one
    /// buffer, so that many small replies cost no allocation each.
    buf: Vec<u8>,
    head: usize,
    budget: usize,
    /// The latest due time given out: replies leave in order.
    last_due: Option<Instant>,
    /// Reading resumes at this instant.
    stalled_until: Option<Instant>,
    /// bandwidth=RATE.
    link: Option<Link>,
    sent: u64,
}

/// What became of the connection after sending what was due.
enum Sent {
    Open,
    Reset,
    Closed,
}

impl<'a> Outbox<'a> {
    fn new(faults: &'a ListenerFaults, budget: usize) -> Self {
        Outbox {
            faults,
            dice: Dice::new(faults.spec.seed),
            queue: VecDeque::new(),
            buf: Vec::new(),
            head: 0,
            budget,
            last_due: None,
            stalled_until: None,
            link: faults.spec.bandwidth.map(Link::new),
            sent: 0,
        }
    }

    /// The entries count too: many tiny replies must not hold more
    /// memory than the budget says.
    fn has_room(&self) -> bool {
        let held = self.buf.len() - self.head + self.queue.len() * std::mem::size_of::<Delayed>();
        held < self.budget
    }

    /// Forgets the front entry's bytes once written, reusing the buffer.
    fn pop_front(&mut self) -> Option<Delayed> {
        let front = self.queue.pop_front()?;
        self.head += front.len;
        if self.head == self.buf.len() {
            self.buf.clear();
            self.head = 0;
            if self.buf.capacity() > 2 * self.budget {
                self.buf = Vec::new();
            }
        } else if self.head > self.budget {
            self.buf.drain(..self.head);
            self.head = 0;
        }
        Some(front)
    }

    /// Makes replies of what the exchange holds, one at a time, while the
    /// budget has room; each is due `delay` after its request arrived.
    fn take_replies(&mut self, ex: &mut Exchange, arrived: Instant, stamped: SystemTime) -> bool {
        let spec = &self.faults.spec;
        // close-after and stall count replies one by one; otherwise replies
        // due together share an entry (pipelined lines under a plain delay).
        let may_merge = spec.close_after.is_none() && spec.stall.is_none();
        let mut wants_input = true;
        while self.has_room() && ex.has_pending_work() {
            ex.answer_one(stamped);
            if ex.out.is_empty() {
                break;
            }
            let replies = ex.take_reply_count();
            let reset = self.dice.happens(spec.reset);
            let mut due = arrived;
            if spec.delays() {
                due = self.dice.due(spec, arrived);
                self.faults.counts.add(Kind::Delay, replies.max(1));
            }
            let due = self.last_due.map_or(due, |last| due.max(last));
            self.last_due = Some(due);
            if let Some(back) = self.queue.back_mut()
                && may_merge
                && !reset
                && !back.reset
                && back.due == due
            {
                back.replies += replies;
                back.len += ex.out.len();
            } else {
                self.queue.push_back(Delayed {
                    due,
                    arrived,
                    replies,
                    reset,
                    len: ex.out.len(),
                    written: 0,
                });
            }
            self.buf.extend_from_slice(&ex.out);
            ex.out.clear();
        }
        if !self.has_room() && ex.has_unanswered_input() {
            // What waits is answered as the outbox empties; reading more
            // now would only pile it up.
            wants_input = false;
        }
        ex.note_input(Instant::now());
        wants_input
    }

    /// Writes every reply that is due, as far as the bandwidth allows.
    async fn send_due<S: ByteStream>(&mut self, sock: &mut S, on: &On) -> io::Result<Sent> {
        let spec = &self.faults.spec;
        loop {
            let now = Instant::now();
            let busy = self.link_busy_until().is_some_and(|until| until > now);
            let Some(front) = self.queue.front_mut() else {
                return Ok(Sent::Open);
            };
            if front.due > now || busy {
                return Ok(Sent::Open);
            }
            if front.reset {
                self.faults.counts.add(Kind::Reset, 1);
                sock.reset_on_close();
                return Ok(Sent::Reset);
            }
            let start = self.head + front.written;
            let rest = &self.buf[start..self.head + front.len];
            let n = match &mut self.link {
                Some(link) => {
                    let n = rest.len().min(link.slot_bytes());
                    link.book(n, now);
                    if n < rest.len() {
                        self.faults.counts.add(Kind::Throttle, 1);
                    }
                    n
                }
                None => rest.len(),
            };
            write_out(sock, &rest[..n], on).await?;
            front.written += n;
            if front.written < front.len {
                continue;
            }
            let Some(Delayed {
                replies, arrived, ..
            }) = self.pop_front()
            else {
                continue;
            };
            self.sent += 1;
            Stats::add(&on.shared.stats.local().stream_replies, replies);
            on.listener.stats.record_replies(replies, arrived.elapsed());
            if let Some(stall) = spec.stall {
                self.faults.counts.add(Kind::Stall, 1);
                self.stalled_until = Some(Instant::now() + stall);
            }
            if spec.close_after == Some(self.sent) {
                self.faults.counts.add(Kind::Close, 1);
                return Ok(Sent::Closed);
            }
        }
    }

    /// When something can happen next without input: the head falls due,
    /// the bandwidth frees a slot, or a stall ends.
    fn next_wake(&self) -> Option<Instant> {
        let head = self
            .queue
            .front()
            .map(|f| self.link_busy_until().map_or(f.due, |busy| f.due.max(busy)));
        let stall = self.stalled_until.filter(|until| *until > Instant::now());
        match (head, stall) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn link_busy_until(&self) -> Option<Instant> {
        self.link.as_ref().and_then(Link::busy_until)
    }

    fn stalled(&self, now: Instant) -> bool {
        self.stalled_until.is_some_and(|until| until > now)
    }
}

/// The loop of `serve_requests`, with faults.
pub(super) async fn serve_with_faults<S: ByteStream>(
    sock: &mut S,
    ex: &mut Exchange,
    on: &On,
    faults: &ListenerFaults,
) -> io::Result<()> {
    let listener = &*on.listener;
    let (limits, kernel_clock) = {
        let config = on.config();
        let clock = config.options.stamp_clock;
        (
            config.options.limits.clone(),
            listener.service.takes_kernel_time(clock),
        )
    };
    let mut outbox = Outbox::new(faults, limits.output_budget);
    let mut draining = false;
    let mut input_done = false;
    let mut timer = PreciseTimer::default();
    let (mut arrived, mut stamped) = (Instant::now(), SystemTime::now());
    let mut kernel_stamp = None;
    // Registered once per connection, as in `serve_requests`: waiters on
    // the shared tokens and a timer in the wheel are not free per reply.
    let (stop, abort) = (listener.stop.cancelled(), listener.abort.cancelled());
    tokio::pin!(stop, abort);
    let idle = tokio::time::sleep_until(
        connection::earliest_possible_deadline(Instant::now(), &limits).into(),
    );
    tokio::pin!(idle);
    loop {
        ex.follow_reload(&on.shared);
        let wants_input = outbox.take_replies(ex, arrived, stamped);
        match outbox.send_due(sock, on).await? {
            Sent::Open => {}
            Sent::Reset => return Ok(()),
            Sent::Closed => return close(sock, ex.at_eof, listener).await,
        }
        let finished = ex.at_eof || input_done;
        if finished && outbox.queue.is_empty() && !ex.has_unanswered_input() {
            break;
        }
        let now = Instant::now();
        draining |= listener.stop.is_cancelled();
        let can_read = !finished && wants_input && outbox.has_room() && !outbox.stalled(now);
        let wake = outbox.next_wake();
        let read_limit = ex.read_limit(super::SCRATCH_LEN);
        tokio::select! {
            biased;
            _ = &mut abort => return Err(io::Error::other("drain timeout reached")),
            _ = &mut stop, if !draining => continue,
            read = read_input(sock, ex, read_limit, on, draining, kernel_clock), if can_read => match read {
                Some(read) => {
                    let (n, received) = read?;
                    count_input(on, n);
                    kernel_stamp = received;
                }
                None => input_done = true,
            },
            () = timer.sleep_until(wake), if wake.is_some() => continue,
            () = &mut idle, if can_read && outbox.queue.is_empty() && !draining => {
                // The timer runs at the earliest moment a deadline could
                // fall; only now is the real one worked out.
                let now = Instant::now();
                let (deadline, reason) = ex.input_deadline(&limits);
                if deadline > now {
                    idle.as_mut().reset(connection::next_check(deadline, now, &limits).into());
                    continue;
                }
                let counter = match reason {
                    Expired::Idle => &on.shared.stats.local().closed_idle_timeout,
                    Expired::Line => &on.shared.stats.local().closed_line_timeout,
                };
                Stats::add(counter, 1);
                break;
            }
        }
        (arrived, stamped) = (
            Instant::now(),
            kernel_stamp.take().unwrap_or_else(SystemTime::now),
        );
    }
    close(sock, ex.at_eof, listener).await
}

/// What the client sent, kept unanswered; while draining only what has
/// already arrived (None once that is all).
async fn read_input<S: ByteStream>(
    sock: &mut S,
    ex: &mut Exchange,
    limit: usize,
    on: &On,
    draining: bool,
    kernel_clock: bool,
) -> Option<io::Result<(usize, Option<SystemTime>)>> {
    if draining {
        let read = read_while_draining(sock, ex, limit, &on.listener, |ex, data, _| {
            ex.receive(data)
        });
        return Box::pin(read).await.map(|read| read.map(|n| (n, None)));
    }
    let mut stamped = None;
    let read = poll_fn(|cx| {
        poll_read_scratch(sock, cx, limit, kernel_clock, |data, received| {
            ex.receive(data);
            stamped = received;
        })
    });
    Some(read.await.map(|n| (n, stamped)))
}

fn count_input(on: &On, bytes: usize) {
    Stats::add(&on.shared.stats.local().bytes_in, bytes as u64);
}

//! The services whose replies do not answer input: daytime and time (one
//! reply, then close) and chargen (the pattern for as long as the client
//! reads it).

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use super::{On, SCRATCH_LEN, close, poll_read_scratch, write_out};
use crate::clock::Stamper;
use crate::context::Shared;
use crate::fault::{Dice, Kind, Link, sleep_until};
use crate::service::{Greeting, chargen};
use crate::stats::Stats;
use crate::transport::ByteStream;

/// Reads of chargen's ignored input per wakeup, so that a client sending
/// without pause cannot keep its connection from writing.
const CHARGEN_READS_PER_WAKE: usize = 16;

/// Daytime and time: one reply, then close.
pub(super) async fn serve_greeting<S: ByteStream>(
    sock: &mut S,
    greeting: Greeting,
    on: &On,
) -> io::Result<()> {
    let mut stamper = Stamper::new(on.config().style.clone());
    let mut out = Vec::with_capacity(64);
    greeting.write(SystemTime::now(), &mut stamper, &mut out);
    if let Some(faults) = &on.listener.faults {
        let mut dice = Dice::new(faults.spec.seed);
        if faults.spec.delays() {
            faults.counts.add(Kind::Delay, 1);
            tokio::time::sleep(dice.delay(&faults.spec)).await;
        }
        if dice.happens(faults.spec.reset) {
            faults.counts.add(Kind::Reset, 1);
            sock.reset_on_close();
            return Ok(());
        }
    }
    Stats::add(&on.shared.stats.local().stream_replies, 1);
    write_out(sock, &out, on).await?;
    close(sock, false, &on.listener).await
}

/// Chargen's faults: a first line that comes late, a slow link, a close
/// after N lines.
struct Pacing {
    link: Option<Link>,
    /// Bytes left before close-after closes the connection.
    left: Option<u64>,
}

impl Pacing {
    async fn start(on: &On) -> Pacing {
        let Some(faults) = &on.listener.faults else {
            return Pacing {
                link: None,
                left: None,
            };
        };
        if faults.spec.delays() {
            faults.counts.add(Kind::Delay, 1);
            let delay = Dice::new(faults.spec.seed).delay(&faults.spec);
            tokio::time::sleep(delay).await;
        }
        Pacing {
            link: faults.spec.bandwidth.map(Link::new),
            left: faults
                .spec
                .close_after
                .map(|n| n * chargen::LINE_LEN as u64),
        }
    }

    /// The most the next write may send.
    fn max_write(&self) -> usize {
        let slot = self.link.as_ref().map_or(usize::MAX, Link::slot_bytes);
        slot.min(self.left.map_or(usize::MAX, |left| left as usize))
    }

    /// After `n` bytes went out at `now`: until when the link is busy with
    /// them, and whether close-after is reached.
    fn sent(&mut self, n: usize, now: Instant) -> (Option<Instant>, bool) {
        if let Some(left) = &mut self.left {
            *left -= (n as u64).min(*left);
        }
        let busy = self.link.as_mut().and_then(|link| {
            link.book(n, now);
            link.busy_until().filter(|until| *until > now)
        });
        (busy, self.left == Some(0))
    }
}

/// Chargen: the pattern, as fast as the client reads it, until the client
/// goes away, stops reading for the write timeout, or the server stops.
/// Input is read and dropped.
pub(super) async fn serve_chargen<S: ByteStream>(sock: &mut S, on: &On) -> io::Result<()> {
    let (shared, listener) = (&*on.shared, &*on.listener);
    let mut offset = 0;
    let mut input_open = true;
    let mut last_progress = Instant::now();
    let write_timeout = on.config().options.limits.write_timeout;
    let mut pacing = Pacing::start(on).await;
    let mut busy_until = None;
    loop {
        let max = pacing.max_write();
        tokio::select! {
            biased;
            _ = listener.stop.cancelled() => break,
            _ = tokio::time::sleep_until((last_progress + write_timeout).into()) => {
                Stats::add(&shared.stats.local().closed_write_timeout, 1);
                return Ok(());
            }
            () = sleep_until(busy_until), if busy_until.is_some() => busy_until = None,
            sent = poll_fn(|cx| poll_chargen(sock, cx, offset, max, &mut input_open, shared)),
                if busy_until.is_none() => {
                let n = sent?;
                last_progress = Instant::now();
                offset = (offset + n) % chargen::CYCLE_LEN;
                Stats::add(&shared.stats.local().bytes_out, n as u64);
                let (busy, done) = pacing.sent(n, last_progress);
                if done {
                    if let Some(faults) = &listener.faults {
                        faults.counts.add(Kind::Close, 1);
                    }
                    break;
                }
                if let (Some(_), Some(faults)) = (busy, &listener.faults) {
                    faults.counts.add(Kind::Throttle, 1);
                }
                busy_until = busy;
            }
        }
    }
    close(sock, !input_open, listener).await
}

/// Drops whatever input is there, then writes the pattern from `offset`;
/// ready with the bytes written.
fn poll_chargen<S: ByteStream>(
    sock: &mut S,
    cx: &mut Context<'_>,
    offset: usize,
    max: usize,
    input_open: &mut bool,
    shared: &Shared,
) -> Poll<io::Result<usize>> {
    let mut reads = 0;
    while *input_open && reads < CHARGEN_READS_PER_WAKE {
        match poll_read_scratch(sock, cx, SCRATCH_LEN, false, |_, _| {}) {
            Poll::Ready(Ok(0)) => *input_open = false,
            Poll::Ready(Ok(n)) => {
                Stats::add(&shared.stats.local().bytes_in, n as u64);
                reads += 1;
            }
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => break,
        }
    }
    if reads == CHARGEN_READS_PER_WAKE {
        // More input may be waiting: come back for it after this write.
        cx.waker().wake_by_ref();
    }
    let pattern = chargen::stream_from(offset);
    Pin::new(sock).poll_write(cx, &pattern[..pattern.len().min(max)])
}

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
    Stats::add(&on.shared.stats.local().stream_replies, 1);
    write_out(sock, &out, on).await?;
    close(sock, false, &on.listener).await
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
    loop {
        tokio::select! {
            biased;
            _ = listener.stop.cancelled() => break,
            _ = tokio::time::sleep_until((last_progress + write_timeout).into()) => {
                Stats::add(&shared.stats.local().closed_write_timeout, 1);
                return Ok(());
            }
            sent = poll_fn(|cx| poll_chargen(sock, cx, offset, &mut input_open, shared)) => {
                let n = sent?;
                last_progress = Instant::now();
                offset = (offset + n) % chargen::CYCLE_LEN;
                Stats::add(&shared.stats.local().bytes_out, n as u64);
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
    input_open: &mut bool,
    shared: &Shared,
) -> Poll<io::Result<usize>> {
    let mut reads = 0;
    while *input_open && reads < CHARGEN_READS_PER_WAKE {
        match poll_read_scratch(sock, cx, SCRATCH_LEN, |_| {}) {
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
    Pin::new(sock).poll_write(cx, chargen::stream_from(offset))
}

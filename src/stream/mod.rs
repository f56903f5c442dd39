//! Drives one stream connection over any [`ByteStream`]: read what the
//! client sent, let the service answer it (`connection.rs`), write the
//! replies, close cleanly.
//!
//! Reads go into a per-thread scratch buffer that is borrowed only while a
//! read is polled (io_uring streams hand over the buffers the kernel
//! filled instead), so an idle connection holds no read buffer; only an
//! unfinished line is copied into the connection's own state. All replies
//! for one read leave in one write. While a write waits for the client to
//! read, nothing more is read from it: a client that never reads stalls
//! only itself, and its memory stays bounded by the output budget plus one
//! read. Writes are first tried without waiting; only a slow client brings
//! in the (boxed) waiting machinery.

mod faulty;
mod generated;
mod write;

use std::cell::RefCell;
use std::future::poll_fn;
use std::io;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Instant, SystemTime};

use tokio::io::AsyncWriteExt;

use crate::clock::Stamper;
use crate::connection::{self, DRAIN_SETTLE, Exchange, Expired, LINGER, Totals};
use crate::context::{Config, ListenerCtx, Shared};
use crate::framing::Responder;
use crate::limits::Admission;
use crate::service::StreamRole;
use crate::service::stamp::{Origin, StampWriter};
use crate::stats::Stats;
use crate::transport::{ByteStream, poll_read_plain};

use write::{sent_owned, write_out};

/// The largest single read. Small enough that what one read leaves
/// unanswered (when its replies overflow the output budget) stays small
/// on a connection whose client does not read.
const SCRATCH_LEN: usize = 16 * 1024;

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; SCRATCH_LEN]);
}

/// What the listener hands a connection besides its stream.
pub struct Handover {
    /// Its place under the connection limits, freed when it ends.
    pub admission: Admission,
    /// Who it is, for reply templates that say so.
    pub origin: Option<Box<Origin>>,
    /// Bytes that came in with a PROXY protocol header.
    pub early_input: Vec<u8>,
    /// Who and where, kept only with --log-connections: boxed, so that
    /// the common case costs one pointer per idle connection.
    pub log: Option<Box<ConnectionLog>>,
}

/// What --log-connections reports besides the counts.
pub struct ConnectionLog {
    /// The client, after any PROXY header.
    pub peer: Option<std::net::SocketAddr>,
    pub started: Instant,
}

/// Serves one connection to the end; errors only end this connection.
pub async fn serve<S: ByteStream>(mut sock: S, on: On, handover: Handover) {
    let Handover {
        admission,
        origin,
        early_input,
        log,
    } = handover;
    Stats::add(&on.shared.stats.local().connections_accepted, 1);
    on.listener.stats.count_connection();
    let mut totals = Totals::default();
    let result = match on.listener.service.stream_role() {
        // Refused when the URL was parsed; closed at once should one come.
        None => Ok(()),
        Some(StreamRole::Answer(answering)) => {
            // Not kept in the task: an idle connection's memory is its
            // task, and one pointer more can cost it a whole cache line.
            let config = on.shared.config();
            let responder = Responder::new(answering, config.options.framing);
            // Boxed so that its state does not enlarge every connection's
            // task: an idle connection's memory is its task.
            let stamp = StampWriter::new(
                Stamper::new(config.style.clone()),
                config.options.reply_template.clone(),
                origin,
            );
            let budget = config.options.limits.output_budget;
            let mut exchange = Box::new(
                Exchange::new(responder, stamp, budget)
                    .with_early_input(early_input)
                    .following(&config),
            );
            let result = match &on.listener.faults {
                None => serve_requests(&mut sock, &mut exchange, &on).await,
                Some(faults) => {
                    let faulty = faulty::serve_with_faults(&mut sock, &mut exchange, &on, faults);
                    Box::pin(faulty).await
                }
            };
            totals = exchange.totals;
            result
        }
        Some(StreamRole::Greet(greeting)) => {
            Box::pin(generated::serve_greeting(&mut sock, greeting, &on)).await
        }
        Some(StreamRole::Generate) => Box::pin(generated::serve_chargen(&mut sock, &on)).await,
    };
    if let Err(e) = &result {
        tracing::debug!("connection ended: {e}");
    }
    if let Some(log) = log {
        log_closed(&log, &on.listener, totals, result.err());
    }
    drop(admission);
}

fn log_closed(
    log: &ConnectionLog,
    listener: &ListenerCtx,
    totals: Totals,
    error: Option<io::Error>,
) {
    let peer = log
        .peer
        .map_or_else(|| "unix".to_string(), |p| p.to_string());
    tracing::info!(
        peer,
        listener = &*listener.name,
        service = listener.service.name(),
        replies = totals.replies,
        bytes_in = totals.bytes_in,
        bytes_out = totals.bytes_out,
        duration_ms = log.started.elapsed().as_millis() as u64,
        error = error.map(|e| e.to_string()),
        "connection closed"
    );
}

/// What a connection's loops need besides its stream: the counters and
/// the settings in effect, and its listener's stop and abort.
///
/// Taken by `serve` as it is: moved into a local, it would be laid out
/// twice in every connection's task.
pub struct On {
    pub shared: Arc<Shared>,
    pub listener: Arc<ListenerCtx>,
}

impl On {
    /// The settings in effect now (a lock and a reference count): for
    /// what happens once per connection or on the slow paths, so that the
    /// connection's task holds no copy.
    fn config(&self) -> Arc<Config> {
        self.shared.config()
    }
}

/// Reads once and hands what came to `take` while it is still borrowed:
/// from the stream's own buffers where it has them (io_uring's), else
/// from the thread's scratch buffer; with the kernel's receive time when
/// `kernel_clock` asks for it and the stream has one; returns the bytes
/// read (0: EOF).
fn poll_read_scratch<S: ByteStream>(
    sock: &mut S,
    cx: &mut Context<'_>,
    limit: usize,
    kernel_clock: bool,
    mut take: impl FnMut(&[u8], Option<SystemTime>),
) -> Poll<io::Result<usize>> {
    let mut in_place = |data: &[u8], received: Option<SystemTime>| {
        take(data, received.filter(|_| kernel_clock));
    };
    if let Some(read) = sock.poll_read_in_place(cx, limit, &mut in_place) {
        if let Poll::Ready(Ok(0)) = read {
            take(&[], None);
        }
        return read;
    }
    SCRATCH.with_borrow_mut(|scratch| {
        let buf = &mut scratch[..limit];
        let (n, received) = if kernel_clock {
            ready!(sock.poll_read_stamped(cx, buf))?
        } else {
            (ready!(poll_read_plain(sock, cx, buf))?, None)
        };
        take(&buf[..n], received);
        Poll::Ready(Ok(n))
    })
}

/// The read-answer-write loop of stamp, echo and discard.
///
/// On shutdown it stops waiting for input but still reads what has already
/// arrived, answers every complete line of it, and then closes.
///
/// The exchange lives in a box the connection owns and is lent here: moved
/// in by value, its state was laid out twice in the connection's future,
/// which is what an idle connection costs.
async fn serve_requests<S: ByteStream>(sock: &mut S, ex: &mut Exchange, on: &On) -> io::Result<()> {
    let (shared, listener) = (&*on.shared, &*on.listener);
    // One look at the settings per connection, not kept in its future.
    let (kernel_clock, first_check) = {
        let config = on.config();
        let limits = &config.options.limits;
        (
            listener
                .service
                .takes_kernel_time(config.options.stamp_clock),
            connection::earliest_possible_deadline(Instant::now(), limits),
        )
    };
    let (mut draining, mut rounds) = (false, 0u8);
    // Long-lived futures: registering a waiter on the shared token, or a
    // timer in the wheel, once per connection instead of once per request.
    let shutdown = listener.stop.cancelled();
    tokio::pin!(shutdown);
    let timer = tokio::time::sleep_until(first_check.into());
    tokio::pin!(timer);
    loop {
        if ex.has_pending_work() {
            ex.follow_reload(shared);
            ex.answer_pending(SystemTime::now());
        }
        if !ex.out.is_empty() {
            let replies = ex.take_reply_count();
            Stats::add(&shared.stats.local().stream_replies, replies);
            if !sent_owned(sock, &mut ex.out, on)? {
                write_out(sock, &ex.out, on).await?;
            }
            ex.written();
            // From the latest read to the reply's write: the server's share
            // of a client's round trip.
            listener
                .stats
                .record_replies(replies, ex.last_input.elapsed());
            continue;
        }
        if ex.at_eof {
            break;
        }
        // An idle connection learns of the drain from `shutdown`; one whose
        // reads never wait looks at the token itself, but only every 64th
        // time round: the look takes a lock, and it cost more than all of
        // the stamping (callgrind, pipeline 1).
        rounds = rounds.wrapping_add(1);
        if rounds % 64 == 0 {
            draining |= listener.stop.is_cancelled();
        }
        let limit = ex.read_limit(SCRATCH_LEN);
        let read = if draining {
            // Boxed: only a draining connection pays for its timer.
            match Box::pin(read_while_draining(
                sock,
                ex,
                limit,
                listener,
                Exchange::feed,
            ))
            .await
            {
                Some(read) => read,
                None => break,
            }
        } else {
            tokio::select! {
                biased;
                read = poll_fn(|cx| poll_read_scratch(sock, cx, limit, kernel_clock, |data, received| {
                    ex.follow_reload(shared);
                    ex.feed(data, received);
                })) => read,
                _ = &mut shutdown => {
                    draining = true;
                    continue;
                }
                _ = &mut timer => {
                    // The timer runs at the earliest moment a deadline could
                    // fall; only now is the real one worked out.
                    let now = Instant::now();
                    let config = on.config();
                    let limits = &config.options.limits;
                    let (deadline, reason) = ex.input_deadline(limits);
                    if deadline > now {
                        timer.as_mut().reset(connection::next_check(deadline, now, limits).into());
                        continue;
                    }
                    let counter = match reason {
                        Expired::Idle => &shared.stats.local().closed_idle_timeout,
                        Expired::Line => &shared.stats.local().closed_line_timeout,
                    };
                    Stats::add(counter, 1);
                    break;
                }
            }
        };
        Stats::add(&shared.stats.local().bytes_in, read? as u64);
    }
    Box::pin(close(sock, ex.at_eof, listener)).await
}

/// While draining: what has already arrived, asked of the kernel directly
/// where the stream allows (the runtime may not have seen it yet), else
/// what arrives within DRAIN_SETTLE. None once input stayed quiet that
/// long, or the drain deadline passed.
async fn read_while_draining<S: ByteStream>(
    sock: &mut S,
    ex: &mut Exchange,
    limit: usize,
    listener: &ListenerCtx,
    take: fn(&mut Exchange, &[u8], Option<SystemTime>),
) -> Option<io::Result<usize>> {
    let direct = SCRATCH.with_borrow_mut(|scratch| {
        let buf = &mut scratch[..limit];
        match sock.read_direct(buf)? {
            Ok(n) => {
                take(ex, &buf[..n], None);
                Some(Ok(n))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
            Err(e) => Some(Err(e)),
        }
    });
    if direct.is_some() {
        return direct;
    }
    let read =
        poll_fn(|cx| poll_read_scratch(sock, cx, limit, false, |data, _| take(ex, data, None)));
    tokio::select! {
        read = tokio::time::timeout(DRAIN_SETTLE, read) => read.ok(),
        _ = listener.abort.cancelled() => None,
    }
}

/// Sends FIN after the last reply, then reads and drops whatever the client
/// still sends for a moment: closing with unread input would send a reset
/// that can destroy replies the client has not read yet.
async fn close<S: ByteStream>(
    sock: &mut S,
    peer_finished: bool,
    listener: &ListenerCtx,
) -> io::Result<()> {
    sock.shutdown().await?;
    if peer_finished {
        return Ok(());
    }
    let drain_input = async {
        while poll_fn(|cx| poll_read_scratch(sock, cx, SCRATCH_LEN, false, |_, _| {})).await? > 0 {}
        Ok(())
    };
    tokio::select! {
        done = tokio::time::timeout(LINGER, drain_input) => done.unwrap_or(Ok(())),
        _ = listener.abort.cancelled() => Ok(()),
    }
}

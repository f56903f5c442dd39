//! One stream connection (TCP or Unix): read what the client sent, answer
//! it through the service, write the replies, close cleanly.
//!
//! Reads go into a per-thread scratch buffer, so an idle connection holds no
//! read buffer; only an unfinished line is copied into the connection's own
//! `pending`. All replies for one read leave in one write. While a write is
//! waiting for the client to read, nothing more is read from it: a client
//! that never reads stalls only itself, and its memory stays bounded by
//! the output budget plus one read.

use std::cell::RefCell;
use std::future::Future;
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use socket2::SockRef;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

use crate::clock::Stamper;
use crate::framing::{Framing, Lines};
use crate::limits::{Admission, Limits};
use crate::proxy_protocol::{self, Header, Parsed};
use crate::server::{ListenerCtx, Shared};
use crate::service::stamp::{Origin, Template};
use crate::service::{ServiceKind, chargen, daytime, stamp, time};
use crate::stats::{ListenerStats, Stats};

/// The largest single read. Small enough that what one read leaves
/// unanswered (when its replies overflow the output budget) stays small
/// on a connection whose client does not read.
const SCRATCH_LEN: usize = 16 * 1024;
/// Buffers grown past this are released once emptied, so a burst does not
/// pin memory on a connection that then goes idle.
const KEEP_CAPACITY: usize = 16 * 1024;
/// How long a closing connection keeps reading (and dropping) what the
/// client still sends, so our last replies are not destroyed by a reset.
const LINGER: Duration = Duration::from_secs(2);
/// While draining, a connection is closed once its input has been quiet
/// this long: lines already on their way when the signal came (in the
/// client's kernel, or queued behind a busy CPU) still get answered.
const DRAIN_SETTLE: Duration = Duration::from_millis(50);

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; SCRATCH_LEN]);
}

/// A connected stream socket: TCP or Unix.
pub trait StreamSocket: AsyncRead + AsyncWrite + AsFd + Unpin + Send + Sync + 'static {
    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send;
    /// `readable` without a waiter node of its own: the connection's one
    /// task uses the socket's single reader slot, which keeps ~150 bytes
    /// off every idle connection.
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    fn try_read(&self, buf: &mut [u8]) -> io::Result<usize>;
    fn writable(&self) -> impl Future<Output = io::Result<()>> + Send;
    fn try_write(&self, buf: &[u8]) -> io::Result<usize>;
    /// The local address, for `{local}` in reply templates.
    fn local_text(&self) -> String;
}

macro_rules! stream_socket {
    ($ty:ty) => {
        impl StreamSocket for $ty {
            fn readable(&self) -> impl Future<Output = io::Result<()>> + Send {
                <$ty>::readable(self)
            }
            fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                <$ty>::poll_read_ready(self, cx)
            }
            fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
                <$ty>::try_read(self, buf)
            }
            fn writable(&self) -> impl Future<Output = io::Result<()>> + Send {
                <$ty>::writable(self)
            }
            fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
                <$ty>::try_write(self, buf)
            }
            fn local_text(&self) -> String {
                self.local_addr()
                    .map_or_else(|_| "?".into(), |a| format!("{a:?}"))
            }
        }
    };
}
stream_socket!(TcpStream);
stream_socket!(UnixStream);

/// What the accept loop hands a connection besides its socket.
pub struct Arrival {
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

/// What one connection did, for --log-connections.
#[derive(Debug, Default)]
struct Totals {
    replies: u64,
    bytes_in: u64,
    bytes_out: u64,
}

/// Reads a PROXY protocol header and returns it with whatever client
/// bytes followed it in the same reads.
pub async fn read_proxy_header<S: StreamSocket>(sock: &S) -> io::Result<(Header, Vec<u8>)> {
    let mut buf = vec![0; proxy_protocol::V2_MAX];
    let mut len = 0;
    loop {
        match proxy_protocol::parse(&buf[..len]) {
            Parsed::Done(header, used) => {
                buf.truncate(len);
                buf.drain(..used);
                return Ok((header, buf));
            }
            Parsed::Invalid(reason) => {
                return Err(io::Error::new(io::ErrorKind::InvalidData, reason));
            }
            Parsed::Incomplete if len == buf.len() => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "PROXY header too long",
                ));
            }
            Parsed::Incomplete => {}
        }
        sock.readable().await?;
        match sock.try_read(&mut buf[len..]) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
}

/// Reads what is there without waiting. Through the runtime's own read
/// path: after a short read it forgets the socket's readiness, saving the
/// read that would only return EAGAIN, and it does so safely, checking that
/// no new readiness arrived since the read (clearing it separately, after
/// the read, lost wakeups on the multi-threaded runtime).
fn read_now<S: StreamSocket>(sock: &mut S, buf: &mut [u8]) -> io::Result<usize> {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    let mut filled = ReadBuf::new(buf);
    match Pin::new(sock).poll_read(&mut cx, &mut filled) {
        Poll::Ready(Ok(())) => Ok(filled.filled().len()),
        Poll::Ready(Err(e)) => Err(e),
        Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
    }
}

/// Serves one connection to the end; errors only end this connection.
pub async fn serve<S: StreamSocket>(
    mut sock: S,
    listener: Arc<ListenerCtx>,
    shared: Arc<Shared>,
    arrival: Arrival,
) {
    let service = listener.service;
    let Arrival {
        admission,
        origin,
        early_input,
        log,
    } = arrival;
    Stats::add(&shared.stats.local().connections_accepted, 1);
    listener.stats.count_connection();
    Stats::add(&shared.stats.local().connections_open, 1);
    let responder = match (service, shared.options.framing) {
        (ServiceKind::Stamp, Framing::Lines { max_line }) => Some(Responder::Lines { max_line }),
        (ServiceKind::Stamp, Framing::Raw { chunk }) => Some(Responder::Raw { chunk }),
        (ServiceKind::Echo, _) => Some(Responder::Echo),
        (ServiceKind::Discard, _) => Some(Responder::Discard),
        _ => None,
    };
    // The exchange and the rarer services are boxed so that their state
    // does not enlarge every connection's task: an idle connection's
    // memory is its task.
    let mut exchange = responder.map(|responder| {
        let stamper = Stamper::new(shared.style.clone());
        let budget = shared.options.limits.output_budget;
        let mut exchange = Box::new(Exchange::new(responder, stamper, budget));
        exchange.shape = ReplyShape {
            template: shared.options.reply_template.clone(),
            origin,
        };
        exchange.pending = early_input;
        exchange
    });
    let result = match (&mut exchange, service) {
        (Some(exchange), _) => serve_requests(&mut sock, exchange, &listener.stats, &shared).await,
        (None, ServiceKind::Chargen) => Box::pin(serve_chargen(&mut sock, &shared)).await,
        (None, _) => {
            let stamper = Stamper::new(shared.style.clone());
            Box::pin(serve_one_reply(&mut sock, service, stamper, &shared)).await
        }
    };
    let totals = exchange.map(|ex| ex.totals).unwrap_or_default();
    if let Err(e) = &result {
        tracing::debug!("connection ended: {e}");
    }
    if let Some(log) = log {
        let peer = log
            .peer
            .map_or_else(|| "unix".to_string(), |p| p.to_string());
        tracing::info!(
            peer,
            listener = &*listener.name,
            service = service.name(),
            replies = totals.replies,
            bytes_in = totals.bytes_in,
            bytes_out = totals.bytes_out,
            duration_ms = log.started.elapsed().as_millis() as u64,
            error = result.err().map(|e| e.to_string()),
            "connection closed"
        );
    }
    Stats::sub(&shared.stats.local().connections_open, 1);
    drop(admission);
}

/// How a request-driven service turns input into replies.
#[derive(Debug, Clone, Copy)]
enum Responder {
    Lines { max_line: usize },
    Raw { chunk: usize },
    Echo,
    Discard,
}

/// How a stamp reply is laid out: `[time] msg`, or a reply template.
#[derive(Default)]
struct ReplyShape {
    template: Option<Arc<Template>>,
    origin: Option<Box<Origin>>,
}

impl ReplyShape {
    fn write(&self, time: &[u8], message: &[u8], out: &mut Vec<u8>) {
        match &self.template {
            None => stamp::write_reply(time, message, out),
            Some(template) => {
                let origin = self.origin.as_deref().unwrap_or(&NO_ORIGIN);
                template.write(time, message, origin, out)
            }
        }
    }
}

static NO_ORIGIN: std::sync::LazyLock<Origin> = std::sync::LazyLock::new(Origin::default);

/// The state of one request/reply conversation, independent of the socket.
struct Exchange {
    responder: Responder,
    stamper: Stamper,
    shape: ReplyShape,
    /// Input received but not yet answered: an unfinished line, or what did
    /// not fit in the output budget.
    pending: Vec<u8>,
    out: Vec<u8>,
    /// Replies stop being added once `out` holds this many bytes.
    budget: usize,
    replies: u64,
    at_eof: bool,
    /// When the unfinished line in `pending` began.
    partial_since: Option<Instant>,
    /// Some input was answered since the line timer was last looked at.
    progressed: bool,
    /// For --log-connections.
    totals: Totals,
    last_input: Instant,
}

/// Why a connection was closed before its client finished.
#[derive(Debug, Clone, Copy)]
enum Expired {
    Idle,
    Line,
}

impl Exchange {
    fn new(responder: Responder, stamper: Stamper, budget: usize) -> Self {
        Exchange {
            responder,
            stamper,
            shape: ReplyShape::default(),
            pending: Vec::new(),
            out: Vec::new(),
            budget: budget.max(1),
            replies: 0,
            at_eof: false,
            partial_since: None,
            progressed: false,
            totals: Totals::default(),
            last_input: Instant::now(),
        }
    }

    fn read_limit(&self) -> usize {
        match self.responder {
            Responder::Raw { chunk } => chunk.clamp(1, SCRATCH_LEN),
            _ => SCRATCH_LEN,
        }
    }

    /// When waiting for more input must stop, and why.
    fn input_deadline(&self, limits: &Limits) -> (Instant, Expired) {
        let idle = (self.last_input + limits.idle_timeout, Expired::Idle);
        match self.partial_since {
            Some(since) if since + limits.line_timeout < idle.0 => {
                (since + limits.line_timeout, Expired::Line)
            }
            _ => idle,
        }
    }

    /// Keeps the line timer honest: it runs while an unanswered partial
    /// line waits, and restarts whenever a piece of input was answered (a
    /// huge line streamed at full speed is answered piece by piece and is
    /// not a slow sender).
    fn note_input(&mut self, now: Instant) {
        self.last_input = now;
        let progressed = std::mem::take(&mut self.progressed);
        self.partial_since = match (self.pending.is_empty(), progressed) {
            (true, _) => None,
            (false, true) => Some(now),
            (false, false) => self.partial_since.or(Some(now)),
        };
    }

    fn has_pending_work(&self) -> bool {
        !self.pending.is_empty() || self.at_eof
    }

    /// Answers freshly read bytes, keeping whatever cannot be answered yet.
    fn take_input(&mut self, data: &[u8], now: SystemTime) {
        if self.pending.is_empty() {
            let used = self.respond(data, now);
            self.pending.extend_from_slice(&data[used..]);
        } else {
            self.pending.extend_from_slice(data);
            self.answer_pending(now);
        }
    }

    fn answer_pending(&mut self, now: SystemTime) {
        if !self.has_pending_work() {
            return;
        }
        let pending = std::mem::take(&mut self.pending);
        let used = self.respond(&pending, now);
        self.pending = pending;
        self.pending.drain(..used);
        release_if_large(&mut self.pending);
    }

    /// Answers from the front of `input` until it runs out of complete
    /// messages or the output budget is full; returns the bytes used.
    fn respond(&mut self, input: &[u8], now: SystemTime) -> usize {
        let used = self.respond_inner(input, now);
        self.progressed |= used > 0;
        used
    }

    fn respond_inner(&mut self, input: &[u8], now: SystemTime) -> usize {
        let budget = self.budget;
        match self.responder {
            Responder::Lines { max_line } => {
                let mut lines = Lines::new(input, max_line, self.at_eof);
                while self.out.len() < budget {
                    let Some(line) = lines.next() else { break };
                    self.shape
                        .write(self.stamper.text(now), line, &mut self.out);
                    self.replies += 1;
                }
                input.len() - lines.remainder().len()
            }
            Responder::Raw { chunk } => {
                let mut used = 0;
                while used < input.len() && self.out.len() < budget {
                    let piece = &input[used..input.len().min(used + chunk.max(1))];
                    self.shape
                        .write(self.stamper.text(now), piece, &mut self.out);
                    self.replies += 1;
                    used += piece.len();
                }
                used
            }
            Responder::Echo => {
                let n = input.len().min(budget.saturating_sub(self.out.len()));
                self.out.extend_from_slice(&input[..n]);
                n
            }
            Responder::Discard => input.len(),
        }
    }
}

/// A line started at `now` or later cannot be due before this, nor can
/// silence that starts now.
fn earliest_possible_deadline(now: Instant, limits: &Limits) -> Instant {
    now + limits.line_timeout.min(limits.idle_timeout)
}

fn release_if_large(buf: &mut Vec<u8>) {
    if buf.is_empty() && buf.capacity() > KEEP_CAPACITY {
        *buf = Vec::new();
    }
}

/// The read-answer-write loop shared by stamp, echo and discard.
///
/// On shutdown it stops waiting for input but still reads what has already
/// arrived, answers every complete line of it, and then closes.
///
/// The exchange lives in a box the connection owns and is lent here: moved
/// in by value, its state was laid out twice in the connection's future,
/// which is what an idle connection costs.
async fn serve_requests<S: StreamSocket>(
    sock: &mut S,
    ex: &mut Exchange,
    listener: &ListenerStats,
    shared: &Shared,
) -> io::Result<()> {
    let limits = &shared.options.limits;
    let mut draining = false;
    // Long-lived futures: registering a waiter on the shared token, or a
    // timer in the wheel, once per connection instead of once per request.
    let shutdown = shared.shutdown.cancelled();
    tokio::pin!(shutdown);
    let timer = tokio::time::sleep_until(earliest_possible_deadline(Instant::now(), limits).into());
    tokio::pin!(timer);
    loop {
        if ex.has_pending_work() {
            ex.answer_pending(SystemTime::now());
        }
        if !ex.out.is_empty() {
            let replies = std::mem::take(&mut ex.replies);
            Stats::add(&shared.stats.local().stream_replies, replies);
            ex.totals.replies += replies;
            ex.totals.bytes_out += ex.out.len() as u64;
            write_out(sock, &mut ex.out, shared).await?;
            // From the latest read to the reply's write: the server's share
            // of a client's round trip.
            listener.record_replies(replies, ex.last_input.elapsed());
            continue;
        }
        if ex.at_eof {
            break;
        }
        draining |= shared.shutdown.is_cancelled();
        if !draining {
            tokio::select! {
                biased;
                ready = std::future::poll_fn(|cx| sock.poll_read_ready(cx)) => ready?,
                _ = &mut shutdown => continue,
                _ = &mut timer => {
                    // The timer runs at the earliest moment a deadline could
                    // fall; only now is the real one worked out.
                    let now = Instant::now();
                    let (deadline, reason) = ex.input_deadline(limits);
                    if deadline > now {
                        let next = deadline.min(earliest_possible_deadline(now, limits));
                        timer.as_mut().reset(next.into());
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
        }
        let limit = ex.read_limit();
        let read = SCRATCH.with_borrow_mut(|scratch| {
            let buf = &mut scratch[..limit];
            // While draining, ask the kernel directly: the runtime's
            // readiness flag may not yet know of bytes that already arrived.
            let n = if draining {
                read_draining(sock, buf)
            } else {
                read_now(sock, buf)
            }?;
            ex.at_eof = n == 0;
            ex.take_input(&buf[..n], SystemTime::now());
            ex.note_input(Instant::now());
            Ok::<_, io::Error>(n)
        });
        match read {
            Ok(n) => {
                Stats::add(&shared.stats.local().bytes_in, n as u64);
                ex.totals.bytes_in += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && draining => {
                // Boxed: only a draining connection pays for the timer.
                if !Box::pin(input_arrives_soon(sock, shared)).await {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Box::pin(close(sock, ex.at_eof, shared)).await
}

/// A read that asks the kernel first (the runtime's readiness flag may not
/// yet know of bytes that already arrived), then goes through the runtime,
/// which clears a stale readiness so that waiting for input really waits.
fn read_draining<S: StreamSocket>(sock: &S, buf: &mut [u8]) -> io::Result<usize> {
    match (&*SockRef::from(sock)).read(buf) {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => sock.try_read(buf),
        done => done,
    }
}

/// While draining: does more input arrive within DRAIN_SETTLE?
async fn input_arrives_soon<S: StreamSocket>(sock: &S, shared: &Shared) -> bool {
    tokio::select! {
        ready = tokio::time::timeout(DRAIN_SETTLE, sock.readable()) => matches!(ready, Ok(Ok(()))),
        _ = shared.abort.cancelled() => false,
    }
}

/// Writes `out` whole. Nearly always the kernel takes it at once; only a
/// slow client needs the waiting machinery, which is boxed so that it does
/// not weigh on every idle connection.
async fn write_out<S: StreamSocket>(
    sock: &mut S,
    out: &mut Vec<u8>,
    shared: &Shared,
) -> io::Result<()> {
    let mut written = 0;
    while written < out.len() {
        match sock.try_write(&out[written..]) {
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e),
        }
    }
    if written < out.len() {
        Box::pin(write_rest(sock, &out[written..], shared)).await?;
    }
    Stats::add(&shared.stats.local().bytes_out, out.len() as u64);
    out.clear();
    release_if_large(out);
    Ok(())
}

/// A client that reads none of it for the write timeout loses its connection.
async fn write_rest<S: StreamSocket>(sock: &mut S, rest: &[u8], shared: &Shared) -> io::Result<()> {
    let timeout = shared.options.limits.write_timeout;
    // The write comes first: when it completes at once the abort token is
    // never even registered with.
    tokio::select! {
        biased;
        written = tokio::time::timeout(timeout, sock.write_all(rest)) => match written {
            Ok(written) => written?,
            Err(_) => {
                Stats::add(&shared.stats.local().closed_write_timeout, 1);
                return Err(io::Error::new(io::ErrorKind::TimedOut, "client stopped reading"));
            }
        },
        _ = shared.abort.cancelled() => return Err(io::Error::other("drain timeout reached")),
    }
    Ok(())
}

/// Sends FIN after the last reply, then reads and drops whatever the client
/// still sends for a moment: closing with unread input would send a reset
/// that can destroy replies the client has not read yet.
async fn close<S: StreamSocket>(
    sock: &mut S,
    peer_finished: bool,
    shared: &Shared,
) -> io::Result<()> {
    sock.shutdown().await?;
    if peer_finished {
        return Ok(());
    }
    let drain_input = async {
        loop {
            sock.readable().await?;
            let n = SCRATCH.with_borrow_mut(|scratch| sock.try_read(scratch));
            match n {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
    };
    tokio::select! {
        done = tokio::time::timeout(LINGER, drain_input) => done.unwrap_or(Ok(())),
        _ = shared.abort.cancelled() => Ok(()),
    }
}

/// Daytime and time: one reply, then close.
async fn serve_one_reply<S: StreamSocket>(
    sock: &mut S,
    service: ServiceKind,
    mut stamper: Stamper,
    shared: &Shared,
) -> io::Result<()> {
    let now = SystemTime::now();
    let mut out = Vec::with_capacity(64);
    match service {
        ServiceKind::Time => out.extend_from_slice(&time::rfc868_bytes(now)),
        _ => daytime::write_line(&mut stamper, now, &mut out),
    }
    Stats::add(&shared.stats.local().stream_replies, 1);
    write_out(sock, &mut out, shared).await?;
    close(sock, false, shared).await
}

/// Chargen: the pattern, as fast as the client reads it, until the client
/// goes away, stops reading for the write timeout, or the server stops.
/// Input is read and dropped.
async fn serve_chargen<S: StreamSocket>(sock: &mut S, shared: &Shared) -> io::Result<()> {
    let mut offset = 0;
    let mut input_open = true;
    let mut last_progress = Instant::now();
    let write_timeout = shared.options.limits.write_timeout;
    loop {
        tokio::select! {
            biased;
            _ = shared.shutdown.cancelled() => break,
            _ = tokio::time::sleep_until((last_progress + write_timeout).into()) => {
                Stats::add(&shared.stats.local().closed_write_timeout, 1);
                return Ok(());
            }
            ready = sock.writable() => {
                ready?;
                match sock.try_write(chargen::stream_from(offset)) {
                    Ok(n) => {
                        last_progress = Instant::now();
                        offset = (offset + n) % chargen::CYCLE_LEN;
                        Stats::add(&shared.stats.local().bytes_out, n as u64);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
            }
            ready = sock.readable(), if input_open => {
                ready?;
                match SCRATCH.with_borrow_mut(|scratch| sock.try_read(scratch)) {
                    Ok(0) => input_open = false,
                    Ok(n) => Stats::add(&shared.stats.local().bytes_in, n as u64),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
    close(sock, !input_open, shared).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{TimeFormat, TimeStyle};
    use proptest::prelude::*;
    use std::time::UNIX_EPOCH;

    fn exchange(responder: Responder, budget: usize) -> Exchange {
        let style = TimeStyle {
            format: TimeFormat::Ctime,
            utc: true,
        };
        Exchange::new(responder, Stamper::new(Arc::new(style)), budget)
    }

    /// Feeds `input` cut at `cuts`, writing out whenever the budget fills,
    /// and returns everything that would have been sent.
    fn replies(responder: Responder, budget: usize, input: &[u8], cuts: &[usize]) -> Vec<u8> {
        let now = UNIX_EPOCH + Duration::from_secs(1_795_597_503);
        let mut ex = exchange(responder, budget);
        let mut sent = Vec::new();
        let mut at = 0;
        let mut bounds: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
        bounds.push(input.len());
        bounds.sort();
        for end in bounds {
            ex.take_input(&input[at..end], now);
            at = end;
            loop {
                sent.append(&mut ex.out);
                ex.answer_pending(now);
                if ex.out.is_empty() {
                    break;
                }
            }
        }
        ex.at_eof = true;
        loop {
            ex.answer_pending(now);
            if ex.out.is_empty() {
                break;
            }
            sent.append(&mut ex.out);
        }
        sent
    }

    proptest! {
        #[test]
        fn any_split_of_the_input_gives_the_same_replies(
            input in proptest::collection::vec(prop_oneof![Just(b'\n'), Just(b'\r'), any::<u8>()], 0..600),
            cuts in proptest::collection::vec(any::<usize>(), 0..12),
            max_line in 1usize..80,
            budget in 1usize..200,
        ) {
            for responder in [Responder::Lines { max_line }, Responder::Echo] {
                let whole = replies(responder, 1 << 20, &input, &[]);
                let split = replies(responder, budget, &input, &cuts);
                prop_assert_eq!(whole, split);
            }
        }
    }

    #[test]
    fn output_budget_holds_back_the_rest_of_a_read() {
        let mut ex = exchange(Responder::Lines { max_line: 1024 }, 100);
        ex.take_input(&b"x\n".repeat(1000), SystemTime::now());
        assert!(ex.out.len() >= 100 && ex.out.len() < 100 + 30);
        assert_eq!(ex.pending.len(), 2000 - 2 * (ex.out.len() / 29));
    }

    #[test]
    fn unfinished_line_starts_the_line_timer_and_a_newline_stops_it() {
        let limits = Limits::default();
        let mut ex = exchange(Responder::Lines { max_line: 1024 }, 1024);
        let t0 = Instant::now();
        ex.take_input(b"partial", SystemTime::now());
        ex.note_input(t0);
        assert!(
            matches!(ex.input_deadline(&limits), (d, Expired::Line) if d == t0 + limits.line_timeout)
        );
        ex.take_input(b" done\n", SystemTime::now());
        ex.note_input(t0 + Duration::from_secs(1));
        assert!(matches!(ex.input_deadline(&limits), (_, Expired::Idle)));
    }

    #[test]
    fn an_answered_piece_of_a_long_line_restarts_the_line_timer() {
        let limits = Limits::default();
        let mut ex = exchange(Responder::Lines { max_line: 4 }, 1024);
        let t0 = Instant::now();
        ex.take_input(b"ab", SystemTime::now());
        ex.note_input(t0);
        let t1 = t0 + Duration::from_secs(30);
        ex.take_input(b"cdef", SystemTime::now()); // "abcd" answered, "ef" waits
        ex.note_input(t1);
        assert!(
            matches!(ex.input_deadline(&limits), (d, Expired::Line) if d == t1 + limits.line_timeout)
        );
    }
}

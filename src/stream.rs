//! One stream connection (TCP or Unix): read what the client sent, answer
//! it through the service, write the replies, close cleanly.
//!
//! Reads go into a per-thread scratch buffer, so an idle connection holds no
//! read buffer; only an unfinished line is copied into the connection's own
//! `pending`. All replies for one read leave in one write. While a write is
//! waiting for the client to read, nothing more is read from it: a client
//! that never reads stalls only itself, and its memory stays bounded by
//! `OUT_BUDGET` plus one read.

use std::cell::RefCell;
use std::future::Future;
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use socket2::SockRef;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

use crate::clock::Stamper;
use crate::framing::{Framing, Lines};
use crate::server::Shared;
use crate::service::{ServiceKind, chargen, daytime, stamp, time};
use crate::stats::Stats;

/// Replies held back before they are written, however many lines arrived.
const OUT_BUDGET: usize = 32 * 1024;
/// The largest single read.
const SCRATCH_LEN: usize = 64 * 1024;
/// Buffers grown past this are released once emptied, so a burst does not
/// pin memory on a connection that then goes idle.
const KEEP_CAPACITY: usize = 16 * 1024;
/// How long a closing connection keeps reading (and dropping) what the
/// client still sends, so our last replies are not destroyed by a reset.
const LINGER: Duration = Duration::from_secs(2);

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; SCRATCH_LEN]);
}

/// A connected stream socket: TCP or Unix.
pub trait StreamSocket: AsyncWrite + AsFd + Unpin + Send + 'static {
    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send;
    fn try_read(&self, buf: &mut [u8]) -> io::Result<usize>;
    fn writable(&self) -> impl Future<Output = io::Result<()>> + Send;
    fn try_write(&self, buf: &[u8]) -> io::Result<usize>;
}

macro_rules! stream_socket {
    ($ty:ty) => {
        impl StreamSocket for $ty {
            fn readable(&self) -> impl Future<Output = io::Result<()>> + Send {
                <$ty>::readable(self)
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
        }
    };
}
stream_socket!(TcpStream);
stream_socket!(UnixStream);

/// Serves one connection to the end; errors only end this connection.
pub async fn serve<S: StreamSocket>(mut sock: S, service: ServiceKind, shared: Arc<Shared>) {
    Stats::add(&shared.stats.connections_accepted, 1);
    Stats::add(&shared.stats.connections_open, 1);
    let stamper = Stamper::new(shared.style.clone());
    let result = match service {
        ServiceKind::Stamp => {
            let responder = match shared.options.framing {
                Framing::Lines { max_line } => Responder::Lines { max_line },
                Framing::Raw { chunk } => Responder::Raw { chunk },
            };
            serve_requests(&mut sock, Exchange::new(responder, stamper), &shared).await
        }
        ServiceKind::Echo => {
            serve_requests(&mut sock, Exchange::new(Responder::Echo, stamper), &shared).await
        }
        ServiceKind::Discard => {
            serve_requests(
                &mut sock,
                Exchange::new(Responder::Discard, stamper),
                &shared,
            )
            .await
        }
        ServiceKind::Chargen => serve_chargen(&mut sock, &shared).await,
        ServiceKind::Daytime | ServiceKind::Time => {
            serve_one_reply(&mut sock, service, stamper, &shared).await
        }
    };
    if let Err(e) = result {
        tracing::debug!("connection ended: {e}");
    }
    Stats::sub(&shared.stats.connections_open, 1);
}

/// How a request-driven service turns input into replies.
#[derive(Debug, Clone, Copy)]
enum Responder {
    Lines { max_line: usize },
    Raw { chunk: usize },
    Echo,
    Discard,
}

/// The state of one request/reply conversation, independent of the socket.
struct Exchange {
    responder: Responder,
    stamper: Stamper,
    /// Input received but not yet answered: an unfinished line, or what did
    /// not fit in the output budget.
    pending: Vec<u8>,
    out: Vec<u8>,
    replies: u64,
    at_eof: bool,
}

impl Exchange {
    fn new(responder: Responder, stamper: Stamper) -> Self {
        Exchange {
            responder,
            stamper,
            pending: Vec::new(),
            out: Vec::new(),
            replies: 0,
            at_eof: false,
        }
    }

    fn read_limit(&self) -> usize {
        match self.responder {
            Responder::Raw { chunk } => chunk.clamp(1, SCRATCH_LEN),
            _ => SCRATCH_LEN,
        }
    }

    /// Answers freshly read bytes, keeping whatever cannot be answered yet.
    fn take_input(&mut self, data: &[u8]) {
        if self.pending.is_empty() {
            let used = self.respond(data, SystemTime::now());
            self.pending.extend_from_slice(&data[used..]);
        } else {
            self.pending.extend_from_slice(data);
            self.answer_pending();
        }
    }

    fn answer_pending(&mut self) {
        if self.pending.is_empty() && !self.at_eof {
            return;
        }
        let pending = std::mem::take(&mut self.pending);
        let used = self.respond(&pending, SystemTime::now());
        self.pending = pending;
        self.pending.drain(..used);
        release_if_large(&mut self.pending);
    }

    /// Answers from the front of `input` until it runs out of complete
    /// messages or the output budget is full; returns the bytes used.
    fn respond(&mut self, input: &[u8], now: SystemTime) -> usize {
        let room = OUT_BUDGET.saturating_sub(self.out.len());
        match self.responder {
            Responder::Lines { max_line } => {
                let mut lines = Lines::new(input, max_line, self.at_eof);
                while self.out.len() < OUT_BUDGET {
                    let Some(line) = lines.next() else { break };
                    stamp::write_reply(self.stamper.text(now), line, &mut self.out);
                    self.replies += 1;
                }
                input.len() - lines.remainder().len()
            }
            Responder::Raw { chunk } => {
                let mut used = 0;
                while used < input.len() && self.out.len() < OUT_BUDGET {
                    let piece = &input[used..input.len().min(used + chunk.max(1))];
                    stamp::write_reply(self.stamper.text(now), piece, &mut self.out);
                    self.replies += 1;
                    used += piece.len();
                }
                used
            }
            Responder::Echo => {
                let n = input.len().min(room);
                self.out.extend_from_slice(&input[..n]);
                n
            }
            Responder::Discard => input.len(),
        }
    }
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
async fn serve_requests<S: StreamSocket>(
    sock: &mut S,
    mut ex: Exchange,
    shared: &Shared,
) -> io::Result<()> {
    let mut draining = false;
    loop {
        ex.answer_pending();
        if !ex.out.is_empty() {
            Stats::add(
                &shared.stats.stream_replies,
                std::mem::take(&mut ex.replies),
            );
            write_out(sock, &mut ex.out, shared).await?;
            continue;
        }
        if ex.at_eof {
            break;
        }
        draining |= shared.shutdown.is_cancelled();
        if !draining {
            tokio::select! {
                biased;
                _ = shared.shutdown.cancelled() => continue,
                ready = sock.readable() => ready?,
            }
        }
        let limit = ex.read_limit();
        let read = SCRATCH.with_borrow_mut(|scratch| {
            let buf = &mut scratch[..limit];
            // While draining, ask the kernel directly: the runtime's
            // readiness flag may not yet know of bytes that already arrived.
            let n = if draining {
                (&*SockRef::from(&*sock)).read(buf)
            } else {
                sock.try_read(buf)
            }?;
            ex.at_eof = n == 0;
            ex.take_input(&buf[..n]);
            Ok::<_, io::Error>(n)
        });
        match read {
            Ok(n) => Stats::add(&shared.stats.bytes_in, n as u64),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && draining => break,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    close(sock, ex.at_eof, shared).await
}

async fn write_out<S: StreamSocket>(
    sock: &mut S,
    out: &mut Vec<u8>,
    shared: &Shared,
) -> io::Result<()> {
    tokio::select! {
        biased;
        _ = shared.abort.cancelled() => return Err(io::Error::other("drain timeout reached")),
        written = sock.write_all(out) => written?,
    }
    Stats::add(&shared.stats.bytes_out, out.len() as u64);
    out.clear();
    release_if_large(out);
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
    Stats::add(&shared.stats.stream_replies, 1);
    write_out(sock, &mut out, shared).await?;
    close(sock, false, shared).await
}

/// Chargen: the pattern, as fast as the client reads it, until the client
/// goes away or the server stops. Input is read and dropped.
async fn serve_chargen<S: StreamSocket>(sock: &mut S, shared: &Shared) -> io::Result<()> {
    let mut offset = 0;
    let mut input_open = true;
    loop {
        tokio::select! {
            biased;
            _ = shared.shutdown.cancelled() => break,
            ready = sock.writable() => {
                ready?;
                match sock.try_write(chargen::stream_from(offset)) {
                    Ok(n) => {
                        offset = (offset + n) % chargen::CYCLE_LEN;
                        Stats::add(&shared.stats.bytes_out, n as u64);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
            }
            ready = sock.readable(), if input_open => {
                ready?;
                match SCRATCH.with_borrow_mut(|scratch| sock.try_read(scratch)) {
                    Ok(0) => input_open = false,
                    Ok(n) => Stats::add(&shared.stats.bytes_in, n as u64),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
    close(sock, !input_open, shared).await
}

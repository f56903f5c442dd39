//! Writing a connection's replies: at once when the stream takes them,
//! which is nearly always, and otherwise under the write timeout and the
//! drain's abort.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use tokio::io::AsyncWriteExt;

use super::On;
use crate::stats::Stats;
use crate::transport::ByteStream;

/// Writes what the stream takes without waiting. A stream that would block
/// is left registered with a no-op waker; the slow path that follows
/// registers the real one.
fn write_now<S: ByteStream>(sock: &mut S, buf: &[u8]) -> io::Result<usize> {
    let mut cx = Context::from_waker(Waker::noop());
    let mut written = 0;
    while written < buf.len() {
        match Pin::new(&mut *sock).poll_write(&mut cx, &buf[written..]) {
            Poll::Ready(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
            Poll::Ready(Ok(n)) => written += n,
            Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => break,
            Poll::Ready(Err(e)) => return Err(e),
            Poll::Pending => break,
        }
    }
    Ok(written)
}

/// Whether everything written has left the stream's own buffers (always,
/// for a socket; a TLS stream may still hold records).
fn flushed_now<S: ByteStream>(sock: &mut S) -> io::Result<bool> {
    let mut cx = Context::from_waker(Waker::noop());
    match Pin::new(sock).poll_flush(&mut cx) {
        Poll::Ready(Ok(())) => Ok(true),
        Poll::Ready(Err(e)) => Err(e),
        Poll::Pending => Ok(false),
    }
}

/// Hands a read's replies over whole to a stream that can take the buffer
/// itself (io_uring's: no copy), leaving it empty; false: nothing was
/// sent, write them with `write_out`. Not async, so that the connection's
/// future keeps nothing more across its writes.
pub(super) fn sent_owned<S: ByteStream>(
    sock: &mut S,
    out: &mut Vec<u8>,
    on: &On,
) -> io::Result<bool> {
    let len = out.len() as u64;
    let sent = sock.send_owned(out)?;
    if sent {
        Stats::add(&on.shared.stats.local().bytes_out, len);
    }
    Ok(sent)
}

/// Writes `out` whole. Nearly always the stream takes it at once; only a
/// slow client needs the waiting machinery, which is boxed so that it does
/// not weigh on every idle connection.
pub(super) async fn write_out<S: ByteStream>(sock: &mut S, out: &[u8], on: &On) -> io::Result<()> {
    let written = write_now(sock, out)?;
    if written < out.len() || !flushed_now(sock)? {
        Box::pin(write_rest(sock, &out[written..], on)).await?;
    }
    Stats::add(&on.shared.stats.local().bytes_out, out.len() as u64);
    Ok(())
}

/// A client that reads none of it for the write timeout loses its connection.
async fn write_rest<S: ByteStream>(sock: &mut S, rest: &[u8], on: &On) -> io::Result<()> {
    let (shared, listener) = (&*on.shared, &*on.listener);
    let timeout = on.config().options.limits.write_timeout;
    let write = async {
        sock.write_all(rest).await?;
        sock.flush().await
    };
    // The write comes first: when it completes at once the abort token is
    // never even registered with.
    tokio::select! {
        biased;
        written = tokio::time::timeout(timeout, write) => match written {
            Ok(written) => written,
            Err(_) => {
                Stats::add(&shared.stats.local().closed_write_timeout, 1);
                Err(io::Error::new(io::ErrorKind::TimedOut, "client stopped reading"))
            }
        },
        _ = listener.abort.cancelled() => Err(io::Error::other("drain timeout reached")),
    }
}

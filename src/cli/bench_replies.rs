//! The reply lines `tsecho bench` reads off a stream: one buffer per
//! connection, filled by one read at a time and emptied a whole line at a
//! time, so a wake-up handles every reply that came with it.
//!
//! Bounded: a reply longer than its request plus `SLACK` is an error, not a
//! reason to grow (a server that never sends a newline cannot make the
//! load generator eat the machine's memory).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, ReadBuf};

/// What a reply may add to its request: stamp's timestamp is 30 bytes; a
/// server's own prefix may be longer, but not this long.
const SLACK: usize = 64 * 1024;

pub struct Replies {
    buf: Vec<u8>,
    head: usize,
    tail: usize,
    max_line: usize,
}

impl Replies {
    /// For replies to requests of `size` bytes.
    pub fn new(size: usize) -> Self {
        Replies {
            buf: vec![0; 64 * 1024],
            head: 0,
            tail: 0,
            max_line: size + SLACK,
        }
    }

    /// Forgets what it holds, for a new connection.
    pub fn clear(&mut self) {
        (self.head, self.tail) = (0, 0);
    }

    /// One read from `stream`; 0 when the server closed.
    pub async fn fill(&mut self, stream: &mut (impl AsyncRead + Unpin)) -> io::Result<usize> {
        std::future::poll_fn(|cx| self.poll_fill(cx, stream)).await
    }

    /// `fill`, for a caller that polls the stream's writing too.
    pub fn poll_fill(
        &mut self,
        cx: &mut Context<'_>,
        stream: &mut (impl AsyncRead + Unpin),
    ) -> Poll<io::Result<usize>> {
        self.make_room()?;
        let mut space = ReadBuf::new(&mut self.buf[self.tail..]);
        ready!(Pin::new(stream).poll_read(cx, &mut space))?;
        let n = space.filled().len();
        self.tail += n;
        Poll::Ready(Ok(n))
    }

    /// The next complete line, newline included.
    pub fn next_line(&mut self) -> Option<&[u8]> {
        let pending = &self.buf[self.head..self.tail];
        let len = memchr::memchr(b'\n', pending)? + 1;
        let start = self.head;
        self.head += len;
        Some(&self.buf[start..start + len])
    }

    fn make_room(&mut self) -> io::Result<()> {
        if self.head == self.tail {
            (self.head, self.tail) = (0, 0);
        }
        if self.tail < self.buf.len() {
            return Ok(());
        }
        if self.head > 0 {
            self.buf.copy_within(self.head..self.tail, 0);
            (self.head, self.tail) = (0, self.tail - self.head);
            return Ok(());
        }
        if self.buf.len() >= self.max_line {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "a reply line longer than {} bytes: not a reply to these requests",
                    self.max_line
                ),
            ));
        }
        let grown = (self.buf.len() * 2).min(self.max_line);
        self.buf.resize(grown, 0);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_come_out_whole_however_the_reads_split_them() {
        let mut replies = Replies::new(64);
        let mut input: &[u8] = b"[t] one\n[t] tw";
        replies.fill(&mut input).await.unwrap();
        assert_eq!(replies.next_line(), Some(&b"[t] one\n"[..]));
        assert_eq!(replies.next_line(), None);
        let mut rest: &[u8] = b"o\n";
        replies.fill(&mut rest).await.unwrap();
        assert_eq!(replies.next_line(), Some(&b"[t] two\n"[..]));
        assert_eq!(replies.next_line(), None);
    }

    #[tokio::test]
    async fn a_line_without_end_is_an_error_not_a_growing_buffer() {
        let mut replies = Replies::new(64);
        let endless = vec![b'x'; 200 * 1024];
        let mut input: &[u8] = &endless;
        let mut failed = false;
        for _ in 0..100 {
            if replies.fill(&mut input).await.is_err() {
                failed = true;
                break;
            }
        }
        assert!(failed);
        assert!(replies.buf.len() <= 64 + SLACK);
    }
}

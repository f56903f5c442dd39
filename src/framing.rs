//! Cutting a byte stream into the messages that get one reply each, and
//! handing each message to its service.
//!
//! Pure functions over byte slices: the connection code feeds them whatever
//! the socket returned, so any split of the input gives the same replies.

use std::time::SystemTime;

use crate::service::stamp::StampWriter;
use crate::service::{Answering, discard, echo, sockperf};

/// How a stream is cut into messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Each line, with its own `\n` or `\r\n`; a longer line is answered in
    /// pieces of at most `max_line` bytes so memory stays bounded.
    Lines { max_line: usize },
    /// Each read of up to `chunk` bytes, as the textbook server does.
    Raw { chunk: usize },
}

pub const DEFAULT_MAX_LINE: usize = 64 * 1024;
pub const DEFAULT_CHUNK: usize = 1024;

impl Default for Framing {
    fn default() -> Self {
        Framing::Lines {
            max_line: DEFAULT_MAX_LINE,
        }
    }
}

/// How stream input becomes replies: the service's answering cut by the
/// framing (stamp), or bytes as they come (echo, discard).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Responder {
    Lines {
        max_line: usize,
    },
    Raw {
        chunk: usize,
    },
    Echo,
    Discard,
    /// sockperf messages, framed by the length in their headers.
    Sockperf,
}

impl Responder {
    pub fn new(answering: Answering, framing: Framing) -> Self {
        match (answering, framing) {
            (Answering::Stamp, Framing::Lines { max_line }) => Responder::Lines { max_line },
            (Answering::Stamp, Framing::Raw { chunk }) => Responder::Raw { chunk },
            (Answering::Echo, _) => Responder::Echo,
            (Answering::Discard, _) => Responder::Discard,
            (Answering::Sockperf, _) => Responder::Sockperf,
        }
    }

    /// Answers from the front of `input` until it runs out of complete
    /// messages or `out` holds `budget` bytes; returns the bytes used and
    /// the replies written.
    pub fn answer(
        self,
        input: &[u8],
        at_eof: bool,
        now: SystemTime,
        stamp: &mut StampWriter,
        out: &mut Vec<u8>,
        budget: usize,
    ) -> (usize, u64) {
        match self {
            Responder::Lines { max_line } => {
                let lines = Lines::new(input, max_line, at_eof);
                stamp_each(lines, now, stamp, out, budget)
            }
            // One reply per read of up to `chunk` bytes (reads are limited
            // to it, see read_limit), as the textbook server does.
            Responder::Raw { chunk } => {
                stamp_each(input.chunks(chunk.max(1)), now, stamp, out, budget)
            }
            // Echo has no messages to count: bytes go back as they come.
            Responder::Echo => (echo::answer(input, out, budget), 0),
            Responder::Discard => (discard::answer(input), 0),
            Responder::Sockperf => sockperf::answer(input, out, budget),
        }
    }

    /// Whether what is left unanswered can never become a message (a
    /// sockperf header with an impossible length): the input ends there.
    pub fn refuses(self, rest: &[u8]) -> bool {
        self == Responder::Sockperf && sockperf::next_frame(rest) == sockperf::Frame::Bad
    }

    /// The output budget under which `answer` writes one reply at a time
    /// (echo has no messages: what came, as far as `budget` allows).
    pub fn one_message_budget(self, budget: usize) -> usize {
        match self {
            Responder::Lines { .. } | Responder::Raw { .. } | Responder::Sockperf => 1,
            Responder::Echo | Responder::Discard => budget,
        }
    }

    /// The most bytes one read should bring: with raw framing, one read is
    /// one reply.
    pub fn read_limit(self, scratch: usize) -> usize {
        match self {
            Responder::Raw { chunk } => chunk.clamp(1, scratch),
            Responder::Lines { .. }
            | Responder::Echo
            | Responder::Discard
            | Responder::Sockperf => scratch,
        }
    }
}

/// Stamps each message in turn until they run out or `out` holds `budget`
/// bytes; returns the bytes used and the replies written. The messages
/// are consecutive pieces of the input, so what was used is their sum.
fn stamp_each<'a>(
    messages: impl Iterator<Item = &'a [u8]>,
    now: SystemTime,
    stamp: &mut StampWriter,
    out: &mut Vec<u8>,
    budget: usize,
) -> (usize, u64) {
    let (mut used, mut replies) = (0, 0);
    for message in messages {
        if out.len() >= budget {
            break;
        }
        stamp.write(now, message, out);
        used += message.len();
        replies += 1;
    }
    (used, replies)
}

/// Length of the line (or piece of an over-long line) at the front of
/// `buf`, or `None` when more bytes are needed. At EOF the unterminated
/// tail is a message of its own.
pub fn next_line_len(buf: &[u8], max_line: usize, at_eof: bool) -> Option<usize> {
    let window = &buf[..buf.len().min(max_line)];
    if let Some(newline) = memchr::memchr(b'\n', window) {
        return Some(newline + 1);
    }
    if buf.len() >= max_line || (at_eof && !buf.is_empty()) {
        return Some(window.len());
    }
    None
}

/// The lines at the front of a buffer; what is left over is `remainder()`.
pub struct Lines<'a> {
    rest: &'a [u8],
    max_line: usize,
    at_eof: bool,
}

impl<'a> Lines<'a> {
    pub fn new(buf: &'a [u8], max_line: usize, at_eof: bool) -> Self {
        Lines {
            rest: buf,
            max_line: max_line.max(1),
            at_eof,
        }
    }

    /// The bytes not yet returned as a line.
    pub fn remainder(&self) -> &'a [u8] {
        self.rest
    }
}

impl<'a> Iterator for Lines<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let len = next_line_len(self.rest, self.max_line, self.at_eof)?;
        let (line, rest) = self.rest.split_at(len);
        self.rest = rest;
        Some(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(buf: &[u8], max: usize, eof: bool) -> (Vec<&[u8]>, &[u8]) {
        let mut it = Lines::new(buf, max, eof);
        let got: Vec<&[u8]> = it.by_ref().collect();
        (got, it.remainder())
    }

    #[test]
    fn lines_keep_their_own_terminators() {
        let (got, rest) = lines(b"a\nb\r\nc", 64, false);
        assert_eq!(got, [&b"a\n"[..], b"b\r\n"]);
        assert_eq!(rest, b"c");
    }

    #[test]
    fn tail_without_newline_is_answered_at_eof() {
        let (got, rest) = lines(b"a\nlast", 64, true);
        assert_eq!(got, [&b"a\n"[..], b"last"]);
        assert!(rest.is_empty());
    }

    #[test]
    fn over_long_line_comes_in_pieces_of_max_line() {
        let (got, rest) = lines(b"abcdefgh\n", 3, false);
        assert_eq!(got, [&b"abc"[..], b"def", b"gh\n"]);
        assert!(rest.is_empty());
    }

    #[test]
    fn line_of_exactly_max_line_is_one_piece() {
        let (got, _) = lines(b"ab\ncd", 3, false);
        assert_eq!(got, [&b"ab\n"[..]]);
    }

    #[test]
    fn binary_bytes_pass_through() {
        let input = b"\0\xff\xfe\n\x80";
        let (got, rest) = lines(input, 64, false);
        assert_eq!(got, [&b"\0\xff\xfe\n"[..]]);
        assert_eq!(rest, b"\x80");
    }

    fn stamp() -> StampWriter {
        let style = crate::clock::TimeStyle {
            format: crate::clock::TimeFormat::Unix,
            utc: true,
        };
        StampWriter::new(
            crate::clock::Stamper::new(std::sync::Arc::new(style)),
            None,
            None,
        )
    }

    #[test]
    fn raw_framing_answers_each_chunk_and_stops_at_the_budget() {
        let now = std::time::UNIX_EPOCH + std::time::Duration::from_secs(7);
        let raw = Responder::Raw { chunk: 3 };
        let mut out = Vec::new();
        assert_eq!(
            raw.answer(b"abcdefg", false, now, &mut stamp(), &mut out, 1 << 20),
            (7, 3)
        );
        assert_eq!(out, b"[7] abc[7] def[7] g");
        let mut out = Vec::new();
        assert_eq!(
            raw.answer(b"abcdefg", false, now, &mut stamp(), &mut out, 8),
            (6, 2)
        );
        assert_eq!(raw.read_limit(16 * 1024), 3);
    }

    #[test]
    fn empty_input_has_no_lines_even_at_eof() {
        assert_eq!(lines(b"", 8, true).0.len(), 0);
    }
}

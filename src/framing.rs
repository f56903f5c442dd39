//! Cutting a byte stream into the messages that get one reply each.
//!
//! Pure functions over byte slices: the connection code feeds them whatever
//! the socket returned, so any split of the input gives the same replies.

/// How a stream is cut into messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Each line, with its own `\n` or `\r\n`; a longer line is answered in
    /// pieces of at most `max_line` bytes so memory stays bounded.
    Lines { max_line: usize },
    /// Each read of up to `chunk` bytes, as the textbook server does.
    Raw { chunk: usize },
}

/// The default is the settings' (`Settings::default`).
impl Default for Framing {
    fn default() -> Self {
        crate::settings::Settings::default().options().framing
    }
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

    #[test]
    fn empty_input_has_no_lines_even_at_eof() {
        assert_eq!(lines(b"", 8, true).0.len(), 0);
    }
}

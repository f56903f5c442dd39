//! The requests `tsecho bench` sends, and how a reply is known to answer
//! one: `<conn>:<seq>|` in hex, `abc...z` filler, a newline, exactly
//! `--size` bytes (or the header and newline alone, if longer). A reply
//! is correct when it ends with its request, which holds for stamp, echo
//! and any server that only prefixes.
//!
//! Every reply costs one request written and one recognised, so neither
//! formats or allocates: through `write!` and a second copy to compare
//! against, this was the client's costliest code of its own (callgrind:
//! 440 instructions per reply).

/// Filler long enough for most requests in one copy; a whole number of
/// alphabets, so that longer filler continues the pattern chunk by chunk.
static FILLER: [u8; 26 * 64] = alphabets();

const fn alphabets() -> [u8; 26 * 64] {
    let mut filler = [0; 26 * 64];
    let mut i = 0;
    while i < filler.len() {
        filler[i] = b'a' + (i % 26) as u8;
        i += 1;
    }
    filler
}

/// `<conn>:<seq>|`, built on the stack.
struct Header {
    bytes: [u8; 34],
    len: usize,
}

impl Header {
    fn new(conn: usize, seq: u64) -> Self {
        let mut header = Header {
            bytes: [0; 34],
            len: 0,
        };
        header.hex(conn as u64);
        header.byte(b':');
        header.hex(seq);
        header.byte(b'|');
        header
    }

    fn byte(&mut self, b: u8) {
        self.bytes[self.len] = b;
        self.len += 1;
    }

    /// `n` in lower-case hex, no leading zeros, as `{n:x}` writes it.
    fn hex(&mut self, mut n: u64) {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut digits = [0; 16];
        let mut first = digits.len();
        for slot in digits.iter_mut().rev() {
            *slot = DIGITS[(n & 0xf) as usize];
            first -= 1;
            n >>= 4;
            if n == 0 {
                break;
            }
        }
        let hex = &digits[first..];
        self.bytes[self.len..self.len + hex.len()].copy_from_slice(hex);
        self.len += hex.len();
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    fn filler_len(&self, size: usize) -> usize {
        size.saturating_sub(self.len + 1)
    }
}

/// The filler of `len` bytes, in pieces of at most `FILLER.len()`.
fn filler(len: usize) -> impl Iterator<Item = &'static [u8]> {
    (0..len)
        .step_by(FILLER.len())
        .map(move |at| &FILLER[..(len - at).min(FILLER.len())])
}

/// Appends request `seq` of connection `conn` to `out`.
pub fn write_request(conn: usize, seq: u64, size: usize, out: &mut Vec<u8>) {
    let header = Header::new(conn, seq);
    let filler_len = header.filler_len(size);
    out.reserve(header.len + filler_len + 1);
    out.extend_from_slice(header.as_bytes());
    filler(filler_len).for_each(|piece| out.extend_from_slice(piece));
    out.push(b'\n');
}

#[cfg(test)]
fn request(conn: usize, seq: u64, size: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(size);
    write_request(conn, seq, size, &mut out);
    out
}

/// Whether `reply` ends with request `seq` of connection `conn`.
pub fn answers(reply: &[u8], conn: usize, seq: u64, size: usize) -> bool {
    let header = Header::new(conn, seq);
    let filler_len = header.filler_len(size);
    let Some(start) = reply.len().checked_sub(header.len + filler_len + 1) else {
        return false;
    };
    let (head, rest) = reply[start..].split_at(header.len);
    let (mut body, newline) = rest.split_at(filler_len);
    if head != header.as_bytes() || newline != b"\n" {
        return false;
    }
    filler(filler_len).all(|piece| {
        let (this, next) = body.split_at(piece.len());
        body = next;
        this == piece
    })
}

/// The sequence number in a datagram reply, read from the request it ends with.
pub fn seq_of_reply(reply: &[u8], size: usize) -> Option<u64> {
    let request = reply.get(reply.len().checked_sub(size)?..)?;
    let colon = request.iter().position(|&b| b == b':')?;
    let bar = request.iter().position(|&b| b == b'|')?;
    let hex = std::str::from_utf8(request.get(colon + 1..bar)?).ok()?;
    u64::from_str_radix(hex, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The format as it was first written, with `write!`.
    fn formatted(conn: usize, seq: u64, size: usize) -> Vec<u8> {
        let mut out = format!("{conn:x}:{seq:x}|").into_bytes();
        let filler = size.saturating_sub(out.len() + 1);
        out.extend((0..filler).map(|i| b'a' + (i % 26) as u8));
        out.push(b'\n');
        out
    }

    #[test]
    fn requests_have_the_exact_size_and_their_sequence_number() {
        let r = request(0x1f, 0xabc, 64);
        assert_eq!(r.len(), 64);
        assert!(r.starts_with(b"1f:abc|abc"));
        assert!(r.ends_with(b"\n"));
        let mut reply = b"[Wed Nov 25 09:05:03 2026] ".to_vec();
        reply.extend_from_slice(&r);
        assert_eq!(seq_of_reply(&reply, 64), Some(0xabc));
        assert_eq!(seq_of_reply(b"short", 64), None);
    }

    #[test]
    fn requests_are_byte_for_byte_the_formatted_ones_at_any_size() {
        for (conn, seq) in [(0, 0), (7, 0xffff_ffff_ffff_ffff), (1234, 99)] {
            for size in [1, 24, 64, 1_663, 1_664, 1_665, 5_000, 70_000] {
                assert_eq!(request(conn, seq, size), formatted(conn, seq, size));
            }
        }
    }

    #[test]
    fn a_reply_answers_only_its_own_request() {
        for size in [24, 64, 5_000] {
            let mut reply = b"[1796323772] ".to_vec();
            reply.extend_from_slice(&request(3, 41, size));
            assert!(answers(&reply, 3, 41, size));
            assert!(!answers(&reply, 3, 42, size));
            assert!(!answers(&reply, 4, 41, size));
            assert!(!answers(&reply[..reply.len() - 1], 3, 41, size));
            let mut damaged = reply.clone();
            let at = damaged.len() - 2;
            damaged[at] ^= 1;
            assert!(!answers(&damaged, 3, 41, size));
        }
        assert!(!answers(b"x\n", 3, 41, 64));
    }
}

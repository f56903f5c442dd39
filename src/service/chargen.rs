//! Chargen (RFC 864): the RFC's rotating pattern of printable ASCII.
//!
//! The ring is all 95 printable characters, space through `~`. Line `n`
//! holds 72 characters starting at ring position `n + 1` (so the first line
//! starts at `!`, as in the RFC's sample) and ends in CRLF. After 95 lines
//! the pattern repeats, so the whole stream is one 7,030-byte cycle sent
//! over and over.

use std::sync::LazyLock;

const RING: usize = 95;
const LINE_CHARS: usize = 72;
pub const LINE_LEN: usize = LINE_CHARS + 2;
pub const CYCLE_LEN: usize = RING * LINE_LEN;
/// Largest datagram reply, from the RFC ("between 0 and 512").
pub const MAX_DATAGRAM: usize = 512;

static CYCLE: LazyLock<Vec<u8>> = LazyLock::new(|| {
    let mut cycle = Vec::with_capacity(CYCLE_LEN);
    for line in 0..RING {
        for i in 0..LINE_CHARS {
            cycle.push(b' ' + ((line + 1 + i) % RING) as u8);
        }
        cycle.extend_from_slice(b"\r\n");
    }
    cycle
});

/// The stream from byte `offset` (modulo the cycle) to the end of the cycle.
pub fn stream_from(offset: usize) -> &'static [u8] {
    &CYCLE[offset % CYCLE_LEN..]
}

/// The reply to a datagram of `request_len` bytes: as many bytes of pattern
/// as the request carried, at least one whole line, at most 512 bytes, so a
/// reply is never more than one line larger than its request.
pub fn datagram(request_len: usize) -> &'static [u8] {
    &CYCLE[..request_len.clamp(LINE_LEN, MAX_DATAGRAM)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_lines_match_the_rfc_sample() {
        let lines: Vec<&[u8]> = CYCLE.split_inclusive(|&b| b == b'\n').collect();
        assert_eq!(
            lines[0],
            &b"!\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefgh\r\n"[..]
        );
        assert_eq!(
            lines[1],
            &b"\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghi\r\n"[..]
        );
        // The RFC's sample wraps through `~` and the space.
        assert!(lines[22].ends_with(b"|}~\r\n"));
        assert!(lines[23].starts_with(b"89:") && lines[23].ends_with(b"|}~ \r\n"));
        assert!(lines[94].starts_with(b" !\"#"));
        assert_eq!(lines.len(), RING);
        assert!(lines.iter().all(|l| l.len() == LINE_LEN));
    }

    #[test]
    fn stream_repeats_after_one_cycle() {
        assert_eq!(stream_from(CYCLE_LEN), stream_from(0));
        assert_eq!(stream_from(1)[0], b'"');
    }

    #[test]
    fn datagram_size_follows_the_request() {
        assert_eq!(datagram(0).len(), LINE_LEN);
        assert_eq!(datagram(300).len(), 300);
        assert_eq!(datagram(65_000).len(), MAX_DATAGRAM);
    }
}

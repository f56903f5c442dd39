//! The reflector side of sockperf's protocol, so that `sockperf ping-pong`
//! and `sockperf under-load` run against tsecho unchanged.
//!
//! Every sockperf message starts with a 14-byte header (sockperf's
//! `src/message.h`, packed, big-endian): a 64-bit sequence number, 16 bits
//! of flags and the message's whole length in 32 bits. A client message
//! that asks for a pong (the under-load client asks for one in N) is sent
//! back whole with its client flag cleared; warm-up messages and the rest
//! get nothing, as `sockperf server` does. On a stream the length frames
//! the messages; a header whose length cannot be a message ends the
//! connection (sockperf's server closes it too).

/// sockperf's default port.
pub const PORT: u16 = 11111;
/// The header's size on the wire (sockperf's `MsgHeader::EFFECTIVE_SIZE`).
pub const HEADER_LEN: usize = 14;
/// The largest message: sockperf's limit for one UDP datagram, rounded up.
pub const MAX_MESSAGE: usize = 65_536;

const FLAGS_AT: usize = 8;
const LENGTH_AT: usize = 10;
/// Sent by a client (cleared in the reply).
pub const CLIENT: u16 = 1;
/// Wants a reply.
pub const PONG_REQUEST: u16 = 2;
/// Warms the path up; never answered.
pub const WARMUP: u16 = 4;

/// What is at the front of a stream's input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// A whole message of this many bytes.
    Message(usize),
    /// Its header or body has not all arrived.
    Incomplete,
    /// A header whose length is shorter than the header or past the limit.
    Bad,
}

/// The message length a header states (None before the whole header).
pub fn stated_length(header: &[u8]) -> Option<usize> {
    let length = header.get(LENGTH_AT..HEADER_LEN)?;
    Some(u32::from_be_bytes([length[0], length[1], length[2], length[3]]) as usize)
}

pub fn next_frame(input: &[u8]) -> Frame {
    let Some(length) = stated_length(input) else {
        return Frame::Incomplete;
    };
    if !(HEADER_LEN..=MAX_MESSAGE).contains(&length) {
        Frame::Bad
    } else if input.len() < length {
        Frame::Incomplete
    } else {
        Frame::Message(length)
    }
}

/// Appends the reply to one whole message, if it is owed one.
pub fn reply(message: &[u8], out: &mut Vec<u8>) -> bool {
    let flags = u16::from_be_bytes([message[FLAGS_AT], message[FLAGS_AT + 1]]);
    if flags & CLIENT == 0 || flags & WARMUP != 0 || flags & PONG_REQUEST == 0 {
        return false;
    }
    let start = out.len();
    out.extend_from_slice(message);
    let cleared = (flags & !CLIENT).to_be_bytes();
    out[start + FLAGS_AT..start + FLAGS_AT + 2].copy_from_slice(&cleared);
    true
}

/// Answers the whole messages at the front of a stream's input until they
/// run out or `out` holds `budget` bytes; returns the bytes used and the
/// replies written.
pub fn answer(input: &[u8], out: &mut Vec<u8>, budget: usize) -> (usize, u64) {
    let (mut used, mut replies) = (0, 0);
    while out.len() < budget {
        let Frame::Message(len) = next_frame(&input[used..]) else {
            break;
        };
        replies += u64::from(reply(&input[used..used + len], out));
        used += len;
    }
    (used, replies)
}

/// The reply to one datagram: its first message, if that is owed one.
pub fn datagram(request: &[u8], out: &mut Vec<u8>) -> bool {
    match next_frame(request) {
        Frame::Message(len) => reply(&request[..len], out),
        Frame::Incomplete | Frame::Bad => false,
    }
}

/// Builds a client message asking for a reply, `len` bytes long (at least
/// the header): what `tsecho ping sockperf+...` sends.
pub fn request(sequence: u64, len: usize) -> Vec<u8> {
    let len = len.clamp(HEADER_LEN, MAX_MESSAGE);
    let mut message = vec![0; len];
    message[..8].copy_from_slice(&sequence.to_be_bytes());
    message[FLAGS_AT..LENGTH_AT].copy_from_slice(&(CLIENT | PONG_REQUEST).to_be_bytes());
    message[LENGTH_AT..HEADER_LEN].copy_from_slice(&(len as u32).to_be_bytes());
    message
}

/// The sequence number of a reply (a server message), if it is one.
pub fn reply_sequence(reply: &[u8]) -> Option<u64> {
    let Frame::Message(_) = next_frame(reply) else {
        return None;
    };
    let flags = u16::from_be_bytes([reply[FLAGS_AT], reply[FLAGS_AT + 1]]);
    if flags & CLIENT != 0 {
        return None;
    }
    Some(u64::from_be_bytes(reply[..8].try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(sequence: u64, flags: u16, len: usize) -> Vec<u8> {
        let mut m = request(sequence, len);
        m[FLAGS_AT..LENGTH_AT].copy_from_slice(&flags.to_be_bytes());
        m
    }

    #[test]
    fn a_pong_request_comes_back_whole_with_the_client_flag_cleared() {
        let mut ping = message(7, CLIENT | PONG_REQUEST, 20);
        ping[14..].copy_from_slice(b"abcdef");
        let mut out = Vec::new();
        assert!(datagram(&ping, &mut out));
        assert_eq!(&out[..8], &7u64.to_be_bytes());
        assert_eq!(&out[8..10], &PONG_REQUEST.to_be_bytes());
        assert_eq!(&out[10..], &ping[10..]);
        assert_eq!(reply_sequence(&out), Some(7));
    }

    #[test]
    fn warm_ups_plain_messages_and_server_messages_get_nothing() {
        for flags in [CLIENT | PONG_REQUEST | WARMUP, CLIENT, PONG_REQUEST] {
            assert!(
                !datagram(&message(1, flags, 14), &mut Vec::new()),
                "{flags}"
            );
        }
    }

    #[test]
    fn a_stream_is_framed_by_the_length_in_each_header() {
        let mut input = message(1, CLIENT | PONG_REQUEST, 14);
        input.extend(message(2, CLIENT, 20)); // under-load: no pong asked
        input.extend(message(3, CLIENT | PONG_REQUEST, 16));
        input.extend(&message(4, CLIENT | PONG_REQUEST, 30)[..20]);
        let mut out = Vec::new();
        assert_eq!(answer(&input, &mut out, 1 << 20), (50, 2));
        assert_eq!(out.len(), 30);
        assert_eq!(next_frame(&input[50..]), Frame::Incomplete);
    }

    #[test]
    fn impossible_lengths_are_bad_headers() {
        let mut short = message(1, CLIENT | PONG_REQUEST, 14);
        short[LENGTH_AT..HEADER_LEN].copy_from_slice(&3u32.to_be_bytes());
        assert_eq!(next_frame(&short), Frame::Bad);
        let mut huge = short.clone();
        huge[LENGTH_AT..HEADER_LEN].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(next_frame(&huge), Frame::Bad);
        assert_eq!(answer(&huge, &mut Vec::new(), 1 << 20), (0, 0));
    }
}

//! The stamp service: `[` + time + `] ` + the message, bytes unchanged.

/// Appends the reply to `message` received at the time shown by `time`.
pub fn write_reply(time: &[u8], message: &[u8], out: &mut Vec<u8>) {
    out.reserve(time.len() + 3 + message.len());
    out.push(b'[');
    out.extend_from_slice(time);
    out.extend_from_slice(b"] ");
    out.extend_from_slice(message);
}

/// How many bytes the stamp adds in front of a message.
pub fn overhead(time: &[u8]) -> usize {
    time.len() + 3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_keeps_crlf_and_binary_bytes() {
        let mut out = Vec::new();
        write_reply(b"Wed Nov 25 09:05:03 2026", b"a\0\xff\r\n", &mut out);
        assert_eq!(out, b"[Wed Nov 25 09:05:03 2026] a\0\xff\r\n");
        assert_eq!(overhead(b"12"), 5);
    }

    #[test]
    fn empty_message_still_gets_its_stamp() {
        let mut out = Vec::new();
        write_reply(b"1", b"", &mut out);
        assert_eq!(out, b"[1] ");
    }
}

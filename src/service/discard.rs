//! Discard (RFC 863): everything read and dropped, nothing sent.

/// All of `input` is used, none of it answered.
pub fn answer(input: &[u8]) -> usize {
    input.len()
}

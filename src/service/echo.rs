//! Echo (RFC 862): every byte sent back as received.

/// Copies as much of `input` as fits in the output budget; returns the
/// bytes used.
pub fn answer(input: &[u8], out: &mut Vec<u8>, budget: usize) -> usize {
    let n = input.len().min(budget.saturating_sub(out.len()));
    out.extend_from_slice(&input[..n]);
    n
}

/// The datagram, sent back.
pub fn datagram(request: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(request);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_stops_at_the_budget_and_keeps_the_rest() {
        let mut out = b"xx".to_vec();
        assert_eq!(answer(b"hello", &mut out, 5), 3);
        assert_eq!(out, b"xxhel");
    }
}

//! Line framing over arbitrary bytes and limits: the frames and the
//! remainder rebuild the input exactly, no frame exceeds the limit, and
//! every frame but an EOF tail or a full-size piece ends in a newline.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tsecho::framing::Lines;

fuzz_target!(|data: &[u8]| {
    let Some((&limit, input)) = data.split_first() else {
        return;
    };
    let max_line = usize::from(limit) + 1;
    for at_eof in [false, true] {
        let mut lines = Lines::new(input, max_line, at_eof);
        let mut rebuilt = Vec::with_capacity(input.len());
        for line in lines.by_ref() {
            assert!(!line.is_empty() && line.len() <= max_line);
            let complete = line.ends_with(b"\n") || line.len() == max_line;
            assert!(complete || at_eof, "unfinished line answered before EOF");
            rebuilt.extend_from_slice(line);
        }
        let rest = lines.remainder();
        assert!(!at_eof || rest.is_empty());
        assert!(rest.len() < max_line && !rest.contains(&b'\n'));
        rebuilt.extend_from_slice(rest);
        assert_eq!(rebuilt, input);
    }
});

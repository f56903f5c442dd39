//! PROXY protocol headers from arbitrary bytes: parsing never panics, a
//! parsed header never claims more bytes than it was given, and a header
//! that parses keeps parsing the same when more bytes follow.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tsecho::proxy_protocol::{Parsed, parse};

fuzz_target!(|data: &[u8]| {
    if let Parsed::Done(header, len) = parse(data) {
        assert!(len <= data.len());
        let mut longer = data.to_vec();
        longer.extend_from_slice(b"trailing client bytes\n");
        assert_eq!(parse(&longer), Parsed::Done(header, len));
    }
});

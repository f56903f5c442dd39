//! Endpoint URLs from arbitrary text: parsing never panics, and whatever
//! parses prints back to a URL that parses to the same endpoint.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tsecho::Endpoint;

fuzz_target!(|text: &str| {
    if let Ok(endpoint) = text.parse::<Endpoint>() {
        let again: Endpoint = endpoint.to_string().parse().expect("printed URL parses");
        assert_eq!(again, endpoint);
    }
});

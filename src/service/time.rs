//! Time (RFC 868): seconds since 1900-01-01 00:00 UTC as 32 bits, big-endian.
//!
//! The count passes 2^32 on 2036-02-07 06:28:16 UTC and then wraps to 0
//! ("era 1"), which is what rdate and NTP clients expect: they pick the era
//! nearest their own clock.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds from 1900-01-01 to 1970-01-01.
pub const SECONDS_1900_TO_1970: u64 = 2_208_988_800;

pub fn rfc868_seconds(at: SystemTime) -> u32 {
    let unix = at.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    // Truncation is the RFC's wrap modulo 2^32.
    (unix + SECONDS_1900_TO_1970) as u32
}

pub fn rfc868_bytes(at: SystemTime) -> [u8; 4] {
    rfc868_seconds(at).to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn unix(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn epoch_is_the_rfc_constant() {
        assert_eq!(rfc868_seconds(unix(0)), 2_208_988_800);
        assert_eq!(rfc868_bytes(unix(0)), [0x83, 0xAA, 0x7E, 0x80]);
    }

    #[test]
    fn wraps_to_era_one_on_2036_02_07() {
        // 2036-02-07 06:28:15 UTC is the last second of era 0.
        let last = (1u64 << 32) - SECONDS_1900_TO_1970 - 1;
        assert_eq!(last, 2_085_978_495);
        assert_eq!(rfc868_seconds(unix(last)), u32::MAX);
        assert_eq!(rfc868_seconds(unix(last + 1)), 0);
        assert_eq!(rfc868_bytes(unix(last + 2)), [0, 0, 0, 1]);
    }
}

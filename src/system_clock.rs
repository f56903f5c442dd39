//! What the kernel says of its own clock (adjtimex, read-only): whether
//! NTP keeps it synchronised, its estimated error, and TAI − UTC. STAMP
//! states the first two in every packet and needs the third for PTP
//! timestamps, which count TAI seconds.

#![allow(unsafe_code)]

use std::time::Duration;

use crate::service::rfc8762::ClockQuality;

/// The clock's quality now. Without an answer from the kernel: not
/// synchronised, error unknown (stated as the largest error NTP allows,
/// 16 s), TAI − UTC as of 2017 (37 s).
pub fn quality() -> ClockQuality {
    // SAFETY: timex is plain old data; zeroes are valid, and modes = 0
    // asks adjtimex only to read.
    let mut timex: libc::timex = unsafe { std::mem::zeroed() };
    // SAFETY: a valid, exclusively borrowed timex for the call.
    let state = unsafe { libc::adjtimex(&mut timex) };
    if state < 0 {
        return ClockQuality {
            synchronised: false,
            error: Duration::from_secs(16),
            tai_offset: 37,
        };
    }
    let unsynchronised = state == libc::TIME_ERROR || timex.status & libc::STA_UNSYNC != 0;
    ClockQuality {
        synchronised: !unsynchronised,
        error: Duration::from_micros(u64::try_from(timex.esterror).unwrap_or(16_000_000)),
        tai_offset: match u32::try_from(timex.tai) {
            Ok(0) | Err(_) => 37,
            Ok(tai) => tai,
        },
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_kernel_answers_with_a_plausible_tai_offset() {
        let q = super::quality();
        assert!((10..=100).contains(&q.tai_offset), "{q:?}");
    }
}

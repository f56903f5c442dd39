//! STAMP, the Simple Two-way Active Measurement Protocol (RFC 8762), in
//! unauthenticated mode: the reflector's packet, and the sender's.
//!
//! Session-Sender test packet (RFC 8762 §4.2.1), 44 bytes at least:
//! ```text
//!  0      Sequence Number (32)
//!  4      Timestamp (64)                      T1
//! 12      Error Estimate (16) | MBZ (30 bytes to 44)
//! ```
//! Session-Reflector test packet (§4.3.1), as long as the sender's:
//! ```text
//!  0      Sequence Number (32)
//!  4      Timestamp (64)                      T3, just before the send
//! 12      Error Estimate (16) | MBZ (16)
//! 16      Receive Timestamp (64)              T2
//! 24      Session-Sender Sequence Number (32)
//! 28      Session-Sender Timestamp (64)       T1, copied
//! 36      Session-Sender Error Estimate (16) | MBZ (16)
//! 40      Ses-Sender TTL (8) | MBZ (24)
//! ```
//! Bytes past 44 (padding, or RFC 8972 TLVs) are sent back as they came,
//! so the reply is never longer than the request: no amplification.
//!
//! Error Estimate (RFC 4656 §4.1.2): S (clock synchronised), Z (0: NTP
//! timestamps, 1: PTPv2), a 6-bit Scale and an 8-bit Multiplier; the
//! error is Multiplier × 2^(Scale−32) seconds. The reflector answers in
//! the format the sender's Z flag asks for.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// STAMP's well-known port (shared with TWAMP).
pub const PORT: u16 = 862;
/// The unauthenticated packet's size, and the least a reflector answers.
pub const MIN_LEN: usize = 44;
/// The TTL (hop limit) test packets leave with, so that hops can be counted.
pub const SEND_TTL: u8 = 255;

const SEQ: usize = 0;
const TIMESTAMP: usize = 4;
const ERROR: usize = 12;
const RECEIVE_TIMESTAMP: usize = 16;
const SENDER_SEQ: usize = 24;
const SENDER_TIMESTAMP: usize = 28;
const SENDER_ERROR: usize = 36;
const SENDER_TTL: usize = 40;

const S_FLAG: u16 = 0x8000;
const Z_FLAG: u16 = 0x4000;

/// Seconds from the NTP epoch (1900) to the Unix epoch (1970).
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

/// The timestamp format, as the Z flag tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// 32-bit seconds since 1900 and a 32-bit binary fraction.
    Ntp,
    /// PTPv2 truncated: 32-bit seconds since 1970 (TAI) and nanoseconds.
    Ptp,
}

/// What the local clock says of itself: whether it is synchronised, how
/// far off it may be, and TAI − UTC (for PTP timestamps).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ClockQuality {
    pub synchronised: bool,
    pub error: Duration,
    pub tai_offset: u32,
}

impl Format {
    fn of(error_estimate: u16) -> Format {
        if error_estimate & Z_FLAG != 0 {
            Format::Ptp
        } else {
            Format::Ntp
        }
    }

    pub fn encode(self, t: SystemTime, tai_offset: u32) -> [u8; 8] {
        let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
        let (seconds, fraction) = match self {
            Format::Ntp => {
                let fraction = (u64::from(since.subsec_nanos()) << 32) / 1_000_000_000;
                (since.as_secs() + NTP_UNIX_OFFSET, fraction as u32)
            }
            Format::Ptp => (
                since.as_secs() + u64::from(tai_offset),
                since.subsec_nanos(),
            ),
        };
        let mut out = [0; 8];
        // NTP seconds wrap in 2036 (era 1): the low 32 bits, as on the wire.
        out[..4].copy_from_slice(&(seconds as u32).to_be_bytes());
        out[4..].copy_from_slice(&fraction.to_be_bytes());
        out
    }

    /// The instant 8 bytes on the wire stand for (NTP: in the era nearest
    /// `near`, so timestamps past 2036 read right).
    pub fn decode(self, bytes: &[u8], tai_offset: u32, near: SystemTime) -> SystemTime {
        let seconds = u64::from(read_u32(bytes, 0));
        let fraction = u64::from(read_u32(bytes, 4));
        let (unix_seconds, nanos) = match self {
            Format::Ntp => {
                let now_ntp = near
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs()
                    + NTP_UNIX_OFFSET;
                let era = now_ntp >> 32;
                let candidates = [era.saturating_sub(1), era, era + 1].map(|e| (e << 32) | seconds);
                let ntp = candidates
                    .into_iter()
                    .min_by_key(|c| c.abs_diff(now_ntp))
                    .unwrap_or(seconds);
                (
                    ntp.saturating_sub(NTP_UNIX_OFFSET),
                    ((fraction * 1_000_000_000) >> 32) as u32,
                )
            }
            Format::Ptp => (
                seconds.saturating_sub(u64::from(tai_offset)),
                fraction.min(999_999_999) as u32,
            ),
        };
        UNIX_EPOCH + Duration::new(unix_seconds, nanos)
    }
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_be_bytes(word)
}

fn read_u16(bytes: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([bytes[at], bytes[at + 1]])
}

/// The Error Estimate field for a clock of this quality, in `format`.
pub fn error_estimate(clock: ClockQuality, format: Format) -> u16 {
    let mut field = 0;
    if clock.synchronised {
        field |= S_FLAG;
    }
    if format == Format::Ptp {
        field |= Z_FLAG;
    }
    // Multiplier × 2^(Scale−32) s ≥ error, with the Multiplier in 1..=255
    // (never 0, RFC 4656) and the Scale as small as that allows.
    let units = clock.error.as_secs_f64() * 2f64.powi(32);
    let mut scale = 0u16;
    while scale < 63 && units / 2f64.powi(scale.into()) > 255.0 {
        scale += 1;
    }
    let multiplier = (units / 2f64.powi(scale.into())).ceil().clamp(1.0, 255.0) as u16;
    field | (scale << 8) | multiplier
}

/// The error an Error Estimate field states.
pub fn stated_error(field: u16) -> Duration {
    let scale = i32::from((field >> 8) & 0x3f);
    let multiplier = f64::from(field & 0xff);
    Duration::from_secs_f64(multiplier * 2f64.powi(scale - 32))
}

/// What the reflector knows of one received test packet.
#[derive(Debug, Clone, Copy)]
pub struct Received {
    /// T2: when it arrived (the kernel's time where the socket gives it).
    pub at: SystemTime,
    /// The TTL or hop limit it arrived with (255 if unknown, so that no
    /// hops are claimed).
    pub ttl: Option<u8>,
    /// Stateful mode: the reflector's own sequence number for this
    /// session; stateless mode copies the sender's.
    pub sequence: Option<u32>,
}

/// Appends the reflected packet for `request` to `out`; false (nothing
/// sent) for a packet shorter than the unauthenticated minimum.
pub fn reflect(request: &[u8], received: Received, clock: ClockQuality, out: &mut Vec<u8>) -> bool {
    if request.len() < MIN_LEN {
        return false;
    }
    let start = out.len();
    out.extend_from_slice(request);
    let reply = &mut out[start..];
    let format = Format::of(read_u16(request, ERROR));
    let sequence = received.sequence.unwrap_or(read_u32(request, SEQ));
    reply[SEQ..TIMESTAMP].copy_from_slice(&sequence.to_be_bytes());
    reply[ERROR..ERROR + 2].copy_from_slice(&error_estimate(clock, format).to_be_bytes());
    reply[ERROR + 2..RECEIVE_TIMESTAMP].fill(0);
    let t2 = format.encode(received.at, clock.tai_offset);
    reply[RECEIVE_TIMESTAMP..SENDER_SEQ].copy_from_slice(&t2);
    reply[SENDER_SEQ..SENDER_TIMESTAMP].copy_from_slice(&request[SEQ..TIMESTAMP]);
    reply[SENDER_TIMESTAMP..SENDER_ERROR].copy_from_slice(&request[TIMESTAMP..ERROR]);
    reply[SENDER_ERROR..SENDER_ERROR + 2].copy_from_slice(&request[ERROR..ERROR + 2]);
    reply[SENDER_ERROR + 2..SENDER_TTL].fill(0);
    reply[SENDER_TTL] = received.ttl.unwrap_or(SEND_TTL);
    reply[SENDER_TTL + 1..MIN_LEN].fill(0);
    // T3 until the send overwrites it: never earlier than T2.
    reply[TIMESTAMP..ERROR].copy_from_slice(&t2);
    true
}

/// Writes T3 into a reflected packet, just before it is sent, in the
/// format its own Error Estimate states.
pub fn write_transmit_time(reply: &mut [u8], now: SystemTime, tai_offset: u32) {
    if reply.len() >= MIN_LEN {
        let format = Format::of(read_u16(reply, ERROR));
        reply[TIMESTAMP..ERROR].copy_from_slice(&format.encode(now, tai_offset));
    }
}

/// A Session-Sender test packet of `len` bytes (at least 44).
pub fn test_packet(
    sequence: u32,
    sent: SystemTime,
    clock: ClockQuality,
    format: Format,
    len: usize,
) -> Vec<u8> {
    let mut packet = vec![0; len.max(MIN_LEN)];
    packet[SEQ..TIMESTAMP].copy_from_slice(&sequence.to_be_bytes());
    packet[TIMESTAMP..ERROR].copy_from_slice(&format.encode(sent, clock.tai_offset));
    packet[ERROR..ERROR + 2].copy_from_slice(&error_estimate(clock, format).to_be_bytes());
    packet
}

/// A reflected packet, read back by the sender.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reflected {
    pub sequence: u32,
    pub sender_sequence: u32,
    /// T1, as the reflector copied it.
    pub sent: SystemTime,
    /// T2.
    pub received: SystemTime,
    /// T3.
    pub transmitted: SystemTime,
    pub reflector_error: Duration,
    pub reflector_synchronised: bool,
    /// The TTL our packet reached the reflector with.
    pub sender_ttl: u8,
}

/// Reads a reflected packet; None if it is too short to be one.
pub fn read_reflected(packet: &[u8], tai_offset: u32, near: SystemTime) -> Option<Reflected> {
    if packet.len() < MIN_LEN {
        return None;
    }
    let error = read_u16(packet, ERROR);
    let format = Format::of(error);
    let sender_format = Format::of(read_u16(packet, SENDER_ERROR));
    let decode = |at: usize, format: Format| format.decode(&packet[at..at + 8], tai_offset, near);
    Some(Reflected {
        sequence: read_u32(packet, SEQ),
        sender_sequence: read_u32(packet, SENDER_SEQ),
        sent: decode(SENDER_TIMESTAMP, sender_format),
        received: decode(RECEIVE_TIMESTAMP, format),
        transmitted: decode(TIMESTAMP, format),
        reflector_error: stated_error(error),
        reflector_synchronised: error & S_FLAG != 0,
        sender_ttl: packet[SENDER_TTL],
    })
}

#[cfg(test)]
mod tests;

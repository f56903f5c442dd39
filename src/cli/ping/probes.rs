//! What `tsecho ping` sends, and which probe a reply answers.
//!
//! Every probe carries its sequence number and this run's nonce, and a
//! reply counts only for the probe it names: a reply that comes after its
//! probe gave up is reported late, never credited to the probe then
//! waiting. Line services get `tsecho-ping NONCE SEQ\n` (stamp and echo
//! send it back inside their reply); sockperf gets its own header, the
//! nonce in the sequence's high 32 bits; STAMP gets a Session-Sender test
//! packet, matched by its sequence and the send time the reflector copies.

use std::time::SystemTime;

use tsecho::ServiceKind;
use tsecho::service::rfc8762::{self, ClockQuality, Format, Reflected};
use tsecho::service::sockperf;

use super::offset::{ServerTime, parse_server_time};

/// How a service is probed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Line,
    Sockperf,
    Stamp,
}

/// What a reply tells of the server's clock.
#[derive(Debug, Clone, Copy)]
pub enum Timing {
    /// A stamp service's time.
    Stamped(ServerTime),
    /// A STAMP reflector's receive and transmit times.
    Reflected(Reflected),
    /// Nothing: echo and sockperf send the probe back as it was.
    Untimed,
}

/// The probe a reply answers, and what it tells.
#[derive(Debug, Clone, Copy)]
pub struct Answer {
    pub sequence: u32,
    pub timing: Timing,
}

#[derive(Debug)]
pub struct Prober {
    pub style: Style,
    nonce: u32,
    clock: ClockQuality,
}

impl Prober {
    pub fn new(service: ServiceKind, clock: ClockQuality) -> Self {
        let style = match service {
            ServiceKind::Rfc8762 => Style::Stamp,
            ServiceKind::Sockperf => Style::Sockperf,
            _ => Style::Line,
        };
        Prober {
            style,
            nonce: fastrand::u32(..),
            clock,
        }
    }

    pub fn probe(&self, sequence: u32, sent: SystemTime) -> Vec<u8> {
        match self.style {
            Style::Line => self.line_tag(sequence).into_bytes(),
            Style::Sockperf => {
                sockperf::request(u64::from(self.nonce) << 32 | u64::from(sequence), 64)
            }
            Style::Stamp => {
                rfc8762::test_packet(sequence, sent, self.clock, Format::Ntp, rfc8762::MIN_LEN)
            }
        }
    }

    fn line_tag(&self, sequence: u32) -> String {
        format!("tsecho-ping {:08x} {sequence}\n", self.nonce)
    }

    /// The probe `reply` answers; None if it answers none of ours.
    pub fn answer(&self, reply: &[u8], now: SystemTime) -> Option<Answer> {
        match self.style {
            Style::Line => {
                let tag = format!("tsecho-ping {:08x} ", self.nonce);
                let at = memchr::memmem::find(reply, tag.as_bytes())?;
                let rest = &reply[at + tag.len()..];
                let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
                let sequence = std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()?;
                let timing = parse_server_time(reply).map_or(Timing::Untimed, Timing::Stamped);
                Some(Answer { sequence, timing })
            }
            Style::Sockperf => {
                let tagged = sockperf::reply_sequence(reply)?;
                if (tagged >> 32) as u32 != self.nonce {
                    return None;
                }
                Some(Answer {
                    sequence: tagged as u32,
                    timing: Timing::Untimed,
                })
            }
            Style::Stamp => {
                let reflected = rfc8762::read_reflected(reply, self.clock.tai_offset, now)?;
                Some(Answer {
                    sequence: reflected.sender_sequence,
                    timing: Timing::Reflected(reflected),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_reply_names_its_probe_and_ours_only() {
        let prober = Prober::new(ServiceKind::Stamp, ClockQuality::default());
        let now = SystemTime::now();
        let mut reply = b"[1795597503123456] ".to_vec();
        reply.extend(prober.probe(42, now));
        let answer = prober.answer(&reply, now).unwrap();
        assert_eq!(answer.sequence, 42);
        assert!(matches!(answer.timing, Timing::Stamped(_)));
        let echoed = prober.probe(43, now);
        let answer = prober.answer(&echoed, now).unwrap();
        assert!(matches!(answer.timing, Timing::Untimed));
        let stranger = Prober::new(ServiceKind::Stamp, ClockQuality::default());
        assert!(
            prober.answer(&stranger.probe(42, now), now).is_none()
                || stranger.nonce == prober.nonce
        );
    }

    #[test]
    fn sockperf_replies_carry_the_nonce_in_their_sequence() {
        let prober = Prober::new(ServiceKind::Sockperf, ClockQuality::default());
        let now = SystemTime::now();
        let mut reply = Vec::new();
        assert!(sockperf::datagram(&prober.probe(5, now), &mut reply));
        assert_eq!(prober.answer(&reply, now).map(|a| a.sequence), Some(5));
        assert!(
            prober.answer(&prober.probe(5, now), now).is_none(),
            "not a reply"
        );
    }
}

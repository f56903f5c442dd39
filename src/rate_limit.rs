//! UDP response rate limiting, per source in the style of DNS RRL, plus a
//! byte budget so nobody can use us to send a victim more bytes than the
//! (spoofed) requests carried.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

use crate::limits::{UdpLimits, source_key};

/// Bytes an IPv4 and UDP header add to every datagram on the wire; the
/// byte budget compares wire sizes, so an empty request still earns a
/// small reply.
const HEADERS: f64 = 28.0;
/// Beyond this many sources, forget the ones not heard from lately.
const MAX_SOURCES: usize = 100_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Answer,
    /// Over the rate, answered anyway as every Nth ("slip").
    Slip,
    DropRate,
    DropBytes,
}

#[derive(Debug)]
struct Source {
    tokens: f64,
    byte_credit: f64,
    last: Instant,
    over_limit: u32,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn take(&mut self, rate: f64, burst: f64, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The limiter of one UDP listener, shared by its sockets.
#[derive(Debug)]
pub struct ResponseLimiter {
    limits: UdpLimits,
    sources: HashMap<IpAddr, Source>,
    global: Bucket,
}

impl ResponseLimiter {
    pub fn new(limits: &UdpLimits) -> Self {
        ResponseLimiter {
            limits: limits.clone(),
            sources: HashMap::new(),
            global: Bucket {
                tokens: limits.global_rate,
                last: Instant::now(),
            },
        }
    }

    /// Decides whether `source` gets a `reply_len`-byte reply to its
    /// `request_len`-byte datagram.
    pub fn check(
        &mut self,
        source: IpAddr,
        request_len: usize,
        reply_len: usize,
        now: Instant,
    ) -> Verdict {
        if self.sources.len() >= MAX_SOURCES {
            self.forget_quiet_sources(now);
        }
        let l = &self.limits;
        let source = self.sources.entry(source_key(source)).or_insert(Source {
            tokens: l.burst,
            byte_credit: l.byte_allowance,
            last: now,
            over_limit: 0,
        });
        let elapsed = now.saturating_duration_since(source.last).as_secs_f64();
        source.last = now;
        source.tokens = (source.tokens + elapsed * l.rate).min(l.burst);
        let cap = l.byte_allowance + l.byte_factor * 65_536.0;
        source.byte_credit =
            (source.byte_credit + l.byte_factor * (request_len as f64 + HEADERS)).min(cap);

        let cost = reply_len as f64 + HEADERS;
        if source.byte_credit < cost {
            return Verdict::DropBytes;
        }
        let within_rate =
            source.tokens >= 1.0 && self.global.take(l.global_rate, l.global_rate, now);
        let verdict = if within_rate {
            source.tokens -= 1.0;
            Verdict::Answer
        } else {
            source.over_limit += 1;
            if l.slip > 0 && source.over_limit % l.slip == 0 {
                Verdict::Slip
            } else {
                return Verdict::DropRate;
            }
        };
        source.byte_credit -= cost;
        verdict
    }

    fn forget_quiet_sources(&mut self, now: Instant) {
        self.sources
            .retain(|_, s| now.saturating_duration_since(s.last).as_secs() < 10);
        if self.sources.len() >= MAX_SOURCES {
            self.sources.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn burst_then_rate_per_source() {
        let limits = UdpLimits {
            rate: 10.0,
            burst: 5.0,
            ..UdpLimits::default()
        };
        let mut rl = ResponseLimiter::new(&limits);
        let t0 = Instant::now();
        let answered = (0..20)
            .filter(|_| rl.check(ip("192.0.2.1"), 100, 100, t0) == Verdict::Answer)
            .count();
        assert_eq!(answered, 5);
        // A different source has its own bucket.
        assert_eq!(rl.check(ip("192.0.2.2"), 100, 100, t0), Verdict::Answer);
        // 10/s refills one token per 100 ms.
        let later = t0 + Duration::from_millis(100);
        assert_eq!(rl.check(ip("192.0.2.1"), 100, 100, later), Verdict::Answer);
        assert_eq!(
            rl.check(ip("192.0.2.1"), 100, 100, later),
            Verdict::DropRate
        );
    }

    #[test]
    fn slip_answers_every_nth_over_the_limit() {
        let limits = UdpLimits {
            burst: 1.0,
            rate: 0.0,
            slip: 2,
            ..UdpLimits::default()
        };
        let mut rl = ResponseLimiter::new(&limits);
        let t0 = Instant::now();
        let verdicts: Vec<Verdict> = (0..5)
            .map(|_| rl.check(ip("192.0.2.1"), 10, 10, t0))
            .collect();
        assert_eq!(
            verdicts,
            [
                Verdict::Answer,
                Verdict::DropRate,
                Verdict::Slip,
                Verdict::DropRate,
                Verdict::Slip
            ]
        );
    }

    #[test]
    fn byte_budget_bounds_amplification() {
        let limits = UdpLimits {
            rate: 1e9,
            burst: 1e9,
            global_rate: 1e9,
            byte_allowance: 1000.0,
            ..UdpLimits::default()
        };
        let mut rl = ResponseLimiter::new(&limits);
        let t0 = Instant::now();
        // 0-byte requests answered with 512 bytes: the allowance runs out.
        let mut sent = 0.0;
        let mut received = 0.0;
        for _ in 0..1000 {
            sent += HEADERS;
            if rl.check(ip("192.0.2.1"), 0, 512, t0) == Verdict::Answer {
                received += 512.0 + HEADERS;
            }
        }
        assert!(received <= 3.0 * sent + 1000.0, "{received} for {sent}");
        assert!(received > 0.0);
        // Stamp-sized replies to small requests always fit.
        for _ in 0..1000 {
            assert_eq!(rl.check(ip("192.0.2.9"), 10, 37, t0), Verdict::Answer);
        }
    }
}

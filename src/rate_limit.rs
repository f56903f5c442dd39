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
/// The most sources remembered: memory stays bounded (about 6 MiB per
/// listener) however many addresses a spoofed flood uses.
const MAX_SOURCES: usize = 100_000;
/// When the table is full, this many sources are forgotten at once, so the
/// scan that picks them is paid once per this many new sources.
const EVICT_BATCH: usize = MAX_SOURCES / 8;

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

impl Source {
    /// The tokens it would hold at `now`.
    fn refilled(&self, limits: &UdpLimits, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        (self.tokens + elapsed * limits.rate).min(limits.burst)
    }
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
        let key = source_key(source);
        if self.sources.len() >= MAX_SOURCES && !self.sources.contains_key(&key) {
            self.make_room(now);
        }
        let l = &self.limits;
        let source = self.sources.entry(key).or_insert(Source {
            tokens: l.burst,
            byte_credit: l.byte_allowance,
            last: now,
            over_limit: 0,
        });
        source.tokens = source.refilled(l, now);
        source.last = now;
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

    /// Forgets the sources whose allowance is the most refilled. Forgetting
    /// one costs it nothing it would not get back as a new source, while a
    /// source over its limit (few tokens) is remembered, so no flood of
    /// other addresses can hand it a fresh burst.
    fn make_room(&mut self, now: Instant) {
        let mut by_tokens: Vec<(f64, IpAddr)> = self
            .sources
            .iter()
            .map(|(ip, source)| (source.refilled(&self.limits, now), *ip))
            .collect();
        let evict = EVICT_BATCH.min(by_tokens.len() - 1);
        by_tokens.select_nth_unstable_by(evict, |a, b| b.0.total_cmp(&a.0));
        for (_, ip) in &by_tokens[..evict] {
            self.sources.remove(ip);
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

    /// The flood of spoofed sources that used to reset every source's limit
    /// once 100,000 were tracked.
    #[test]
    fn a_source_over_its_limit_stays_limited_while_200_000_others_arrive() {
        let limits = UdpLimits {
            rate: 1.0,
            burst: 5.0,
            global_rate: 1e9,
            ..UdpLimits::default()
        };
        let mut rl = ResponseLimiter::new(&limits);
        let t0 = Instant::now();
        let limited = ip("192.0.2.1");
        let answered = (0..20)
            .filter(|_| rl.check(limited, 10, 37, t0) == Verdict::Answer)
            .count();
        assert_eq!(answered, 5);
        for i in 0..200_000u32 {
            let other = IpAddr::from((0x0a00_0000 + i).to_be_bytes());
            let at = t0 + Duration::from_micros(u64::from(i));
            assert_eq!(rl.check(other, 10, 37, at), Verdict::Answer);
            assert!(rl.sources.len() <= MAX_SOURCES);
        }
        let later = t0 + Duration::from_millis(200);
        let answered = (0..5)
            .filter(|_| rl.check(limited, 10, 37, later) == Verdict::Answer)
            .count();
        assert_eq!(
            answered, 0,
            "the flood gave the limited source a fresh burst"
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

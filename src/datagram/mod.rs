//! The datagram loops (UDP in `udp.rs`, Unix datagram in `unixgram.rs`):
//! one reply datagram per request datagram, sent back to its sender.
//!
//! Two guards keep a UDP service from being used against third parties: it
//! never answers a source port that is 0 or belongs to a service that would
//! answer back (echo, chargen, DNS, NTP...), and it drops a datagram that
//! carries back, within a moment, the reply it just sent to that same
//! address, which is what a second echo-like server aimed at us does
//! (`loop_guard.rs`). On
//! top, replies to UDP sources outside the exempt list are rate limited and
//! byte budgeted (`rate_limit.rs`).

mod faults;
mod loop_guard;
mod sessions;
mod udp;
mod unixgram;

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use crate::ancillary::Received;
use crate::clock::Stamper;
use crate::context::{Config, ListenerCtx, Shared};
use crate::rate_limit::{ResponseLimiter, Verdict};
use crate::service::rfc8762::ClockQuality;
use crate::service::stamp::StampWriter;
use crate::service::{self, DatagramMeta, ServiceKind};
use crate::stats::{ListenerStats, Stats};
use crate::system_clock;
use loop_guard::LoopGuard;
use sessions::Sessions;
pub use udp::serve_udp_on_a_thread;
pub use unixgram::serve_unixgram;

/// Source ports of services that answer whatever they receive: replying to
/// them can start a loop or reflect traffic at a victim. 862 is STAMP's
/// and TWAMP's: a reflected packet reads like a test packet to another
/// reflector, so two of them would bounce it for ever.
pub const REFLECTOR_PORTS: [u16; 12] = [7, 9, 13, 17, 19, 37, 53, 123, 161, 862, 1900, 11211];
/// How often STAMP's statement of the clock's quality is brought up to date.
const CLOCK_CHECK: std::time::Duration = std::time::Duration::from_secs(1);
/// Room for any datagram a Unix peer can send us.
const RECV_LEN: usize = 65_536;

/// Turns request datagrams into reply datagrams, per socket (one thread or task each).
struct Answerer<'a> {
    service: ServiceKind,
    stamp: StampWriter,
    out: Vec<u8>,
    guard: LoopGuard,
    shared: &'a Shared,
    stats: &'a Stats,
    /// The settings in effect, looked at again once per batch.
    config: Arc<Config>,
    /// Shared by every copy of the listener (one per thread), so that
    /// spreading sources over threads does not multiply their allowance.
    limiter: &'a Mutex<ResponseLimiter>,
    /// Counted per datagram, added to the shared counters once per batch.
    batch: BatchCounts,
    /// STAMP in stateful mode: the reflector's sequence per session.
    sessions: Option<Sessions>,
    /// The clock's quality, for STAMP, and when it was last asked for.
    clock: (ClockQuality, Option<Instant>),
}

#[derive(Default)]
struct BatchCounts {
    bytes_in: u64,
    bytes_out: u64,
    replies: u64,
}

/// When a datagram (or a batch of them) was received, by both clocks: the
/// wall clock for its stamp, the monotonic one for intervals.
#[derive(Clone, Copy)]
struct Arrival {
    time: SystemTime,
    at: Instant,
    /// The TTL (hop limit) it came with, where the socket reports it.
    ttl: Option<u8>,
}

impl Arrival {
    fn now() -> Self {
        Arrival {
            time: SystemTime::now(),
            at: Instant::now(),
            ttl: None,
        }
    }

    /// Stamped with the kernel's receive time where the socket gave one.
    fn kernel_or_now(self, kernel: Option<SystemTime>) -> Self {
        Arrival {
            time: kernel.unwrap_or(self.time),
            ..self
        }
    }

    /// What the kernel told of the datagram: its receive time and TTL.
    fn with(self, received: Received) -> Self {
        Arrival {
            ttl: received.ttl,
            ..self.kernel_or_now(received.at)
        }
    }
}

impl<'a> Answerer<'a> {
    fn new(shared: &'a Shared, listener: &'a ListenerCtx) -> Self {
        let config = shared.config();
        Answerer {
            service: listener.service,
            stamp: stamp_writer(&config),
            out: Vec::with_capacity(RECV_LEN + 64),
            guard: LoopGuard::new(),
            shared,
            stats: &shared.stats,
            config,
            limiter: &listener.udp_limiter,
            batch: BatchCounts::default(),
            sessions: listener.stateful.then(Sessions::default),
            clock: (ClockQuality::default(), None),
        }
    }

    fn clock_quality(&self) -> ClockQuality {
        self.clock.0
    }

    /// What STAMP needs besides the bytes: the reflector's sequence in
    /// stateful mode, and the clock's quality (asked of the kernel at most
    /// once a second).
    fn meta(&mut self, peer: u64, arrival: Arrival) -> DatagramMeta {
        let mut meta = DatagramMeta {
            at: arrival.time,
            ttl: arrival.ttl,
            session_sequence: None,
            clock: self.clock.0,
        };
        if self.service == ServiceKind::Rfc8762 {
            let stale = self
                .clock
                .1
                .is_none_or(|asked| arrival.at.duration_since(asked) >= CLOCK_CHECK);
            if stale {
                self.clock = (system_clock::quality(), Some(arrival.at));
            }
            meta.clock = self.clock.0;
            meta.session_sequence = self
                .sessions
                .as_mut()
                .map(|sessions| sessions.next_sequence(peer, arrival.at));
        }
        meta
    }

    /// Takes up a reloaded configuration, if there is one: one atomic
    /// load per batch when there is not.
    #[inline]
    fn refresh(&mut self) {
        if !self.shared.is_current(&self.config) {
            self.config = self.shared.config();
            self.stamp = stamp_writer(&self.config);
        }
    }

    #[inline]
    fn is_reflector_port(&self, port: u16) -> bool {
        port == 0 || self.config.reflector_ports.contains(port)
    }

    /// Adds one batch's counts to the server's and the listener's counters:
    /// a few shared atomic adds per batch instead of per datagram.
    fn flush(&mut self, listener: &ListenerStats, latency: std::time::Duration) {
        let batch = std::mem::take(&mut self.batch);
        Stats::add(&self.stats.local().bytes_in, batch.bytes_in);
        Stats::add(&self.stats.local().bytes_out, batch.bytes_out);
        Stats::add(&self.stats.local().datagram_replies, batch.replies);
        listener.record_replies(batch.replies, latency);
    }

    /// Only a reply template shows the peer and local address; plain
    /// replies never pay for formatting them.
    fn note_addresses(&mut self, peer: &dyn std::fmt::Display, local: &dyn std::fmt::Display) {
        if self.stamp.has_template() {
            use std::fmt::Write;
            let origin = self.stamp.origin_mut();
            origin.peer.clear();
            let _ = write!(origin.peer, "{peer}");
            if origin.local.is_empty() {
                let _ = write!(origin.local, "{local}");
            }
        }
    }

    /// The reply to send, if any. `source` is the IP address replies are
    /// limited under; Unix peers are local and not limited.
    fn answer(
        &mut self,
        request: &[u8],
        peer: u64,
        max_len: usize,
        source: Option<IpAddr>,
        arrival: Arrival,
    ) -> Option<&[u8]> {
        self.batch.bytes_in += request.len() as u64;
        if self
            .guard
            .is_our_reply_coming_back(request, peer, arrival.at)
        {
            Stats::add(&self.stats.local().datagrams_dropped_loop, 1);
            return None;
        }
        self.out.clear();
        let meta = self.meta(peer, arrival);
        if !service::datagram_reply(self.service, request, meta, &mut self.stamp, &mut self.out) {
            return None;
        }
        if self.out.len() > max_len {
            self.out.truncate(max_len);
            Stats::add(&self.stats.local().datagram_replies_truncated, 1);
        }
        if let Some(ip) = source.filter(|ip| !self.config.options.limits.is_exempt(*ip)) {
            let verdict = match self.limiter.lock() {
                Ok(mut limiter) => limiter.check(ip, request.len(), self.out.len(), arrival.at),
                // Only a panic elsewhere poisons it; refuse rather than flood.
                Err(_) => Verdict::DropRate,
            };
            let dropped = match verdict {
                Verdict::Answer => None,
                Verdict::Slip => {
                    Stats::add(&self.stats.local().datagrams_slipped, 1);
                    None
                }
                Verdict::DropRate => Some(&self.stats.local().datagrams_dropped_rate_limit),
                Verdict::DropBytes => Some(&self.stats.local().datagrams_dropped_byte_budget),
            };
            if let Some(counter) = dropped {
                Stats::add(counter, 1);
                return None;
            }
        }
        self.guard.remember(peer, &self.out, arrival.at);
        self.batch.replies += 1;
        self.batch.bytes_out += self.out.len() as u64;
        Some(&self.out)
    }
}

fn stamp_writer(config: &Config) -> StampWriter {
    let template = config.options.reply_template.clone();
    let mut stamp = StampWriter::new(Stamper::new(config.style.clone()), template, None);
    if stamp.has_template() {
        stamp.origin_mut().host = config.host.clone();
    }
    stamp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Options;
    use std::net::SocketAddr;

    #[test]
    fn a_datagram_ending_with_our_reply_is_a_loop_and_others_are_not() {
        let shared = Shared::for_tests(Options::default());
        let listener = ListenerCtx::for_tests(ServiceKind::Stamp);
        let mut answerer = Answerer::new(&shared, &listener);
        let peer = answerer
            .guard
            .inet_peer_key(SocketAddr::from(([127, 0, 0, 1], 40_000)));
        let other = answerer
            .guard
            .inet_peer_key(SocketAddr::from(([127, 0, 0, 1], 40_001)));
        let arrival = Arrival::now();
        let reply = answerer
            .answer(b"hello", peer, 1500, None, arrival)
            .unwrap()
            .to_vec();
        let mut bounced = b"[Thu Jan  1 00:00:00 1970] ".to_vec();
        bounced.extend_from_slice(&reply);
        let guard = &answerer.guard;
        assert!(guard.is_our_reply_coming_back(&bounced, peer, arrival.at));
        assert!(!guard.is_our_reply_coming_back(&bounced, other, arrival.at));
        assert!(!guard.is_our_reply_coming_back(b"hello", peer, arrival.at));
        let later = arrival.at + loop_guard::LOOP_WINDOW;
        assert!(!guard.is_our_reply_coming_back(&bounced, peer, later));
    }
}

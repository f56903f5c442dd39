//! The datagram loop (UDP and Unix datagram): one reply datagram per
//! request datagram, sent back to its sender.
//!
//! Two guards keep a UDP service from being used against third parties: it
//! never answers a source port that is 0 or belongs to a service that would
//! answer back (echo, chargen, DNS, NTP...), and it drops a datagram that
//! carries back, within `LOOP_WINDOW`, the reply it just sent to that same
//! address, which is what a second echo-like server aimed at us does. On
//! top, replies to UDP sources outside the exempt list are rate limited and
//! byte budgeted (`rate_limit.rs`).

use std::hash::{BuildHasher, RandomState};

use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net as std_unix;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::io::Interest;
use tokio::net::UnixDatagram;

use crate::clock::Stamper;
use crate::context::{ListenerCtx, Shared};
use crate::limits::Limits;
use crate::rate_limit::{ResponseLimiter, Verdict};
use crate::service::stamp::StampWriter;
use crate::service::{self, ServiceKind};
use crate::stats::{ListenerStats, Stats};
use crate::udp_batch::{RecvBatch, SendBatch, enable_destination_info};

/// Source ports of services that answer whatever they receive: replying to
/// them can start a loop or reflect traffic at a victim.
pub const REFLECTOR_PORTS: [u16; 11] = [7, 9, 13, 17, 19, 37, 53, 123, 161, 1900, 11211];
/// Largest UDP payload over IPv4, and over IPv6 without jumbograms.
const MAX_UDP_V4: usize = 65_507;
const MAX_UDP_V6: usize = 65_527;
/// Room for any datagram a Unix peer can send us.
const RECV_LEN: usize = 65_536;
/// How long after a reply a datagram carrying it back counts as a loop.
/// Shorter than any sensible client retry, longer than a bounce off a
/// distant server.
const LOOP_WINDOW: Duration = Duration::from_millis(500);
const LOOP_SLOTS: usize = 1024;
const _: () = assert!(LOOP_SLOTS.is_power_of_two());

/// Runs `serve_udp` on a thread of its own and waits for it, so that the
/// server's task tracker knows when it ended.
pub async fn serve_udp_on_a_thread(
    sock: std::net::UdpSocket,
    listener: Arc<ListenerCtx>,
    shared: Arc<Shared>,
) {
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let spawned = std::thread::Builder::new()
        .name("tsecho-udp".into())
        .spawn(move || {
            serve_udp(Arc::new(sock), listener, shared);
            drop(done_tx);
        });
    match spawned {
        Ok(_) => {
            let _ = done_rx.await;
        }
        Err(e) => tracing::error!("cannot start a UDP thread: {e}"),
    }
}

/// Serves one UDP socket on the calling thread, blocking in recvmmsg until
/// `Shared::wake_udp_threads` shuts the socket's receiving side after the
/// server's shutdown began.
///
/// A thread of its own rather than a task: a socket in an epoll set costs
/// every arriving datagram an epoll callback, paid by whoever sends it
/// (on loopback, the client's CPU), even while we are busy; a blocked
/// receiver costs that only while it sleeps (measured: docs/benchmarks.md).
fn serve_udp(sock: Arc<std::net::UdpSocket>, listener: Arc<ListenerCtx>, shared: Arc<Shared>) {
    if let Err(e) = sock.set_nonblocking(false) {
        tracing::error!("UDP socket unusable: {e}");
        return;
    }
    shared.watch_udp_socket(sock.clone());
    let mut answerer = Answerer::new(&shared, &listener);
    let mut requests = RecvBatch::default();
    let mut replies = SendBatch::default();
    let fd = sock.as_raw_fd();
    // On a wildcard address, reply from the address each request came to.
    if let Ok(bound) = sock.local_addr()
        && bound.ip().is_unspecified()
        && let Err(e) = enable_destination_info(fd, bound.is_ipv6())
    {
        tracing::warn!("replies may leave from another address than requests came to: {e}");
    }
    let local = sock
        .local_addr()
        .map_or_else(|_| "?".to_string(), |a| a.to_string());
    while !shared.shutdown.is_cancelled() {
        // Errors are ICMP reports about earlier replies; they concern one
        // peer, never the socket.
        let count = requests.recv(fd).unwrap_or(0);
        if shared.shutdown.is_cancelled() {
            // Woken by the shutdown, or just in time for it.
            break;
        }
        // One batch came in one call: one arrival time stamps all of it.
        let arrival = Arrival::now();
        for i in 0..count {
            let Some((request, peer)) = requests.get(i) else {
                continue;
            };
            if peer.port() == 0 || shared.reflector_ports.contains(&peer.port()) {
                Stats::add(&shared.stats.local().datagrams_dropped_reflector_port, 1);
                continue;
            }
            let peer_key = answerer.inet_peer_key(peer);
            let max = max_udp_payload(peer);
            answerer.note_addresses(&peer, &local);
            if let Some(reply) = answerer.answer(request, peer_key, max, Some(peer.ip()), arrival) {
                replies.push(reply, peer, requests.destination(i));
            }
        }
        // Counted before sending, so a client that has its reply also sees
        // it in the counters; the latency recorded runs to this hand-over.
        answerer.flush(&listener.stats, arrival.at.elapsed());
        replies.send(fd);
    }
}

pub async fn serve_unixgram(sock: UnixDatagram, listener: Arc<ListenerCtx>, shared: Arc<Shared>) {
    // std's socket type can send to abstract addresses; tokio's only to paths.
    let sender = match sock.as_fd().try_clone_to_owned() {
        Ok(fd) => std_unix::UnixDatagram::from(fd),
        Err(e) => {
            tracing::error!("unix datagram socket unusable: {e}");
            return;
        }
    };
    let mut answerer = Answerer::new(&shared, &listener);
    let mut buf = vec![0; RECV_LEN];
    loop {
        let received = tokio::select! {
            biased;
            _ = shared.shutdown.cancelled() => return,
            received = sock.recv_from(&mut buf) => received,
        };
        let Ok((len, peer)) = received else { continue };
        let arrival = Arrival::now();
        if peer.is_unnamed() {
            // Nowhere to send a reply to: the client did not bind.
            continue;
        }
        let peer_key = answerer
            .hasher
            .hash_one((peer.as_pathname(), peer.as_abstract_name()));
        let peer: std_unix::SocketAddr = peer.into();
        if answerer.stamp.has_template() {
            answerer.note_addresses(&format!("{peer:?}"), &"unixgram");
        }
        let answered = answerer
            .answer(&buf[..len], peer_key, usize::MAX, None, arrival)
            .is_some();
        answerer.flush(&listener.stats, arrival.at.elapsed());
        if answered {
            let reply = &answerer.out;
            let _ = sock
                .async_io(Interest::WRITABLE, || sender.send_to_addr(reply, &peer))
                .await;
        }
    }
}

fn max_udp_payload(peer: SocketAddr) -> usize {
    match peer {
        SocketAddr::V6(v6) if v6.ip().to_ipv4_mapped().is_none() => MAX_UDP_V6,
        _ => MAX_UDP_V4,
    }
}

/// Turns request datagrams into reply datagrams, per socket (one thread or task each).
struct Answerer<'a> {
    service: ServiceKind,
    stamp: StampWriter,
    out: Vec<u8>,
    recent: Vec<RecentReply>,
    /// Keys Unix peers (paths) for the loop guard.
    hasher: RandomState,
    /// A random seed for keying IP peers for the loop guard: an outsider
    /// cannot aim at a chosen slot.
    peer_seed: u64,
    stats: &'a Stats,
    limits: &'a Limits,
    /// Shared by every copy of the listener (one per thread), so that
    /// spreading sources over threads does not multiply their allowance.
    limiter: &'a Mutex<ResponseLimiter>,
    /// Counted per datagram, added to the shared counters once per batch.
    batch: BatchCounts,
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
}

impl Arrival {
    fn now() -> Self {
        Arrival {
            time: SystemTime::now(),
            at: Instant::now(),
        }
    }
}

#[derive(Clone, Copy)]
struct RecentReply {
    peer: u64,
    reply: Fingerprint,
    sent: Instant,
}

/// A reply's length and its first and last 16 bytes: enough to recognise
/// it at the end of a datagram that carries it back, at the cost of two
/// copies instead of hashing every reply.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
struct Fingerprint {
    len: usize,
    head: [u8; 16],
    tail: [u8; 16],
}

impl Fingerprint {
    fn of(bytes: &[u8]) -> Self {
        let mut print = Fingerprint {
            len: bytes.len(),
            ..Fingerprint::default()
        };
        let n = bytes.len().min(16);
        print.head[..n].copy_from_slice(&bytes[..n]);
        print.tail[..n].copy_from_slice(&bytes[bytes.len() - n..]);
        print
    }
}

impl<'a> Answerer<'a> {
    fn new(shared: &'a Shared, listener: &'a ListenerCtx) -> Self {
        let empty = RecentReply {
            peer: 0,
            reply: Fingerprint::default(),
            sent: Instant::now(),
        };
        let hasher = RandomState::new();
        let template = shared.options.reply_template.clone();
        let mut stamp = StampWriter::new(Stamper::new(shared.style.clone()), template, None);
        if stamp.has_template() {
            stamp.origin_mut().host = shared.host.clone();
        }
        Answerer {
            service: listener.service,
            stamp,
            out: Vec::with_capacity(RECV_LEN + 64),
            recent: vec![empty; LOOP_SLOTS],
            peer_seed: hasher.hash_one(0_u8),
            hasher,
            stats: &shared.stats,
            limits: &shared.options.limits,
            limiter: &listener.udp_limiter,
            batch: BatchCounts::default(),
        }
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
        if self.is_our_reply_coming_back(request, peer, arrival.at) {
            Stats::add(&self.stats.local().datagrams_dropped_loop, 1);
            return None;
        }
        self.out.clear();
        if !service::datagram_reply(
            self.service,
            request,
            arrival.time,
            &mut self.stamp,
            &mut self.out,
        ) {
            return None;
        }
        if self.out.len() > max_len {
            self.out.truncate(max_len);
            Stats::add(&self.stats.local().datagram_replies_truncated, 1);
        }
        if let Some(ip) = source.filter(|ip| !self.limits.is_exempt(*ip)) {
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
        self.remember(peer, arrival.at);
        self.batch.replies += 1;
        self.batch.bytes_out += self.out.len() as u64;
        Some(&self.out)
    }

    /// A distinct key per IPv4 peer (a bijection of address and port);
    /// IPv6 addresses are folded first.
    fn inet_peer_key(&self, peer: SocketAddr) -> u64 {
        let address = match peer.ip() {
            IpAddr::V4(ip) => u64::from(ip.to_bits()),
            IpAddr::V6(ip) => {
                let bits = ip.to_bits();
                (bits >> 64) as u64 ^ (bits as u64).rotate_left(17)
            }
        };
        // splitmix64's finaliser over the seeded key: a bijection, so IPv4
        // keys stay distinct, and every bit of it reaches the slot bits.
        let mut x = ((address << 16) ^ u64::from(peer.port())) ^ self.peer_seed;
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^ (x >> 31)
    }

    fn slot(peer: u64) -> usize {
        (peer >> (64 - LOOP_SLOTS.trailing_zeros())) as usize % LOOP_SLOTS
    }

    fn is_our_reply_coming_back(&self, request: &[u8], peer: u64, now: Instant) -> bool {
        let last = &self.recent[Self::slot(peer)];
        last.peer == peer
            && last.reply.len > 0
            && request.len() >= last.reply.len
            && now.saturating_duration_since(last.sent) < LOOP_WINDOW
            && Fingerprint::of(&request[request.len() - last.reply.len..]) == last.reply
    }

    fn remember(&mut self, peer: u64, sent: Instant) {
        self.recent[Self::slot(peer)] = RecentReply {
            peer,
            reply: Fingerprint::of(&self.out),
            sent,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Options;

    #[test]
    fn ipv4_peers_get_distinct_keys_spread_over_the_slots() {
        let shared = Shared::for_tests(Options::default());
        let listener = ListenerCtx::for_tests(ServiceKind::Echo);
        let answerer = Answerer::new(&shared, &listener);
        let mut keys = std::collections::HashSet::new();
        let mut slots = std::collections::HashSet::new();
        for host in 1..=20u8 {
            for port in 40_000..40_100u16 {
                let key = answerer.inet_peer_key(SocketAddr::from(([127, 0, 0, host], port)));
                keys.insert(key);
                slots.insert(Answerer::slot(key));
            }
        }
        assert_eq!(keys.len(), 2000);
        // Uniformly random slots would fill 1024 * (1 - e^(-2000/1024)) = 879.
        assert!(slots.len() > 800, "2000 peers in {} slots", slots.len());
    }

    #[test]
    fn a_datagram_ending_with_our_reply_is_a_loop_and_others_are_not() {
        let shared = Shared::for_tests(Options::default());
        let listener = ListenerCtx::for_tests(ServiceKind::Stamp);
        let mut answerer = Answerer::new(&shared, &listener);
        let peer = answerer.inet_peer_key(SocketAddr::from(([127, 0, 0, 1], 40_000)));
        let other = answerer.inet_peer_key(SocketAddr::from(([127, 0, 0, 1], 40_001)));
        let arrival = Arrival::now();
        let reply = answerer
            .answer(b"hello", peer, 1500, None, arrival)
            .unwrap()
            .to_vec();
        let mut bounced = b"[Thu Jan  1 00:00:00 1970] ".to_vec();
        bounced.extend_from_slice(&reply);
        assert!(answerer.is_our_reply_coming_back(&bounced, peer, arrival.at));
        assert!(!answerer.is_our_reply_coming_back(&bounced, other, arrival.at));
        assert!(!answerer.is_our_reply_coming_back(b"hello", peer, arrival.at));
        let later = arrival.at + LOOP_WINDOW;
        assert!(!answerer.is_our_reply_coming_back(&bounced, peer, later));
    }
}

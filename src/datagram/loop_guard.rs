//! The loop guard: a datagram that carries back, within `LOOP_WINDOW`, the
//! reply just sent to that same address is what a second echo-like server
//! aimed at us sends, and is dropped. One slot per peer key in a fixed
//! table: memory does not grow with the number of peers.

use std::hash::{BuildHasher, Hash, RandomState};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// How long after a reply a datagram carrying it back counts as a loop.
/// Shorter than any sensible client retry, longer than a bounce off a
/// distant server.
pub const LOOP_WINDOW: Duration = Duration::from_millis(500);
const LOOP_SLOTS: usize = 1024;
const _: () = assert!(LOOP_SLOTS.is_power_of_two());

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

/// The last reply sent to each slot's peer.
pub struct LoopGuard {
    recent: Vec<RecentReply>,
    /// Keys Unix peers (paths) for the guard.
    hasher: RandomState,
    /// A random seed for keying IP peers: an outsider cannot aim at a
    /// chosen slot.
    peer_seed: u64,
}

impl LoopGuard {
    pub fn new() -> Self {
        let empty = RecentReply {
            peer: 0,
            reply: Fingerprint::default(),
            sent: Instant::now(),
        };
        let hasher = RandomState::new();
        LoopGuard {
            recent: vec![empty; LOOP_SLOTS],
            peer_seed: hasher.hash_one(0_u8),
            hasher,
        }
    }

    /// The key of a Unix peer (its path or abstract name).
    pub fn unix_peer_key(&self, peer: impl Hash) -> u64 {
        self.hasher.hash_one(peer)
    }

    /// A distinct key per IPv4 peer (a bijection of address and port);
    /// IPv6 addresses are folded first.
    pub fn inet_peer_key(&self, peer: SocketAddr) -> u64 {
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

    pub fn is_our_reply_coming_back(&self, request: &[u8], peer: u64, now: Instant) -> bool {
        let last = &self.recent[Self::slot(peer)];
        last.peer == peer
            && last.reply.len > 0
            && request.len() >= last.reply.len
            && now.saturating_duration_since(last.sent) < LOOP_WINDOW
            && Fingerprint::of(&request[request.len() - last.reply.len..]) == last.reply
    }

    pub fn remember(&mut self, peer: u64, reply: &[u8], sent: Instant) {
        self.recent[Self::slot(peer)] = RecentReply {
            peer,
            reply: Fingerprint::of(reply),
            sent,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_peers_get_distinct_keys_spread_over_the_slots() {
        let guard = LoopGuard::new();
        let mut keys = std::collections::HashSet::new();
        let mut slots = std::collections::HashSet::new();
        for host in 1..=20u8 {
            for port in 40_000..40_100u16 {
                let key = guard.inet_peer_key(SocketAddr::from(([127, 0, 0, host], port)));
                keys.insert(key);
                slots.insert(LoopGuard::slot(key));
            }
        }
        assert_eq!(keys.len(), 2000);
        // Uniformly random slots would fill 1024 * (1 - e^(-2000/1024)) = 879.
        assert!(slots.len() > 800, "2000 peers in {} slots", slots.len());
    }
}

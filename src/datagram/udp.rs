//! UDP sockets, each served by a thread of its own in recvmmsg/sendmmsg
//! batches.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use super::faults::DatagramFaults;
use super::{Answerer, Arrival};
use crate::ancillary::{enable_destination_info, enable_ttl_info, set_outgoing_ttl};
use crate::context::{ListenerCtx, Shared};
use crate::service::{ServiceKind, rfc8762};
use crate::stats::Stats;
use crate::udp_batch::{RecvBatch, SendBatch, readable_within};

/// Largest UDP payload over IPv4, and over IPv6 without jumbograms.
const MAX_UDP_V4: usize = 65_507;
const MAX_UDP_V6: usize = 65_527;

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

/// Serves one UDP socket on the calling thread, blocking in recvmmsg, until
/// the listener stops.
///
/// The receive times out every `STOP_CHECK` to look at the stop. Shutting
/// the socket's receiving side would wake it at once, but the socket may
/// now be another process's too (handed over with `--takeover`), and a
/// shutdown would stop it there as well.
///
/// A thread of its own rather than a task: a socket in an epoll set costs
/// every arriving datagram an epoll callback, paid by whoever sends it
/// (on loopback, the client's CPU), even while we are busy; a blocked
/// receiver costs that only while it sleeps (measured: docs/benchmarks.md).
fn serve_udp(sock: Arc<std::net::UdpSocket>, listener: Arc<ListenerCtx>, shared: Arc<Shared>) {
    let blocking = sock
        .set_nonblocking(false)
        .and_then(|()| sock.set_read_timeout(Some(STOP_CHECK)));
    if let Err(e) = blocking {
        tracing::error!("UDP socket unusable: {e}");
        return;
    }
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
    if listener.service == ServiceKind::Rfc8762 {
        reflect_hops(fd, sock.local_addr().is_ok_and(|a| a.is_ipv6()));
    }
    let mut faulty = DatagramFaults::new(&listener);
    while !listener.stop.is_cancelled() {
        if let Some(faulty) = &mut faulty {
            send_due(faulty, fd, &mut replies);
            if !readable_before(fd, faulty.next_due()) {
                continue;
            }
        }
        // Errors are ICMP reports about earlier replies, which concern one
        // peer, never the socket, or the stop check's timeout. A batch
        // received is answered even if the stop came meanwhile.
        let count = requests.recv(fd).unwrap_or(0);
        if count == 0 {
            continue;
        }
        // One batch came in one call: one reading of the clock stamps all
        // of it, unless the kernel told when each datagram came.
        let batch_arrival = Arrival::now();
        answerer.refresh();
        for i in 0..count {
            let Some((request, peer)) = requests.get(i) else {
                continue;
            };
            let received = requests.received(i);
            let arrival = batch_arrival.with(received);
            if answerer.is_reflector_port(peer.port()) {
                Stats::add(&shared.stats.local().datagrams_dropped_reflector_port, 1);
                continue;
            }
            let peer_key = answerer.guard.inet_peer_key(peer);
            let max = max_udp_payload(peer);
            answerer.note_addresses(&peer, &local);
            let Some(reply) = answerer.answer(request, peer_key, max, Some(peer.ip()), arrival)
            else {
                continue;
            };
            let from = received.destination;
            match &mut faulty {
                None => replies.push(reply, peer, from),
                Some(faulty) => {
                    for _ in 0..faulty.dispatch(reply, (peer, from), arrival.at) {
                        push(&mut replies, fd, reply, peer, from);
                    }
                }
            }
        }
        // Counted before sending, so a client that has its reply also sees
        // it in the counters; the latency recorded runs to this hand-over.
        answerer.flush(&listener.stats, batch_arrival.at.elapsed());
        if listener.service == ServiceKind::Rfc8762 {
            // T3, as close to the send as this thread can take it.
            let tai = answerer.clock_quality().tai_offset;
            let now = SystemTime::now();
            replies.for_each_mut(|reply| rfc8762::write_transmit_time(reply, now, tai));
        }
        replies.send(fd);
    }
    if let Some(faulty) = &mut faulty {
        send_delayed_until_done(faulty, fd, &mut replies, &listener);
    }
}

/// STAMP's reflector reports the TTL each test packet came with, and sends
/// its replies with TTL 255, so that the sender can count hops both ways.
fn reflect_hops(fd: RawFd, ipv6: bool) {
    let set =
        enable_ttl_info(fd, ipv6).and_then(|()| set_outgoing_ttl(fd, rfc8762::SEND_TTL, ipv6));
    if let Err(e) = set {
        tracing::warn!("STAMP replies will not tell the sender's hop count: {e}");
    }
}

/// Pushes a reply, sending the batch first when it is full (duplicates and
/// delayed replies can outnumber the requests of one batch).
fn push(replies: &mut SendBatch, fd: RawFd, reply: &[u8], to: SocketAddr, from: Option<IpAddr>) {
    if replies.is_full() {
        replies.send(fd);
    }
    replies.push(reply, to, from);
}

/// Whether a datagram arrived before the next delayed reply is due (or
/// the stop check); without one, the receive itself waits.
fn readable_before(fd: RawFd, due: Option<Instant>) -> bool {
    let Some(due) = due else {
        return true;
    };
    let wait = due
        .saturating_duration_since(Instant::now())
        .min(STOP_CHECK);
    readable_within(fd, wait)
}
/// The drain promise with delays: replies already queued leave at their
/// time, until the drain timeout.
fn send_delayed_until_done(
    faulty: &mut DatagramFaults<(SocketAddr, Option<IpAddr>)>,
    fd: RawFd,
    replies: &mut SendBatch,
    listener: &ListenerCtx,
) {
    while let Some(due) = faulty.next_due() {
        if listener.abort.is_cancelled() {
            return;
        }
        std::thread::sleep(
            due.saturating_duration_since(Instant::now())
                .min(STOP_CHECK),
        );
        send_due(faulty, fd, replies);
    }
}

/// Sends the delayed replies that fell due.
fn send_due(
    faulty: &mut DatagramFaults<(SocketAddr, Option<IpAddr>)>,
    fd: RawFd,
    replies: &mut SendBatch,
) {
    let now = Instant::now();
    while let Some((reply, (to, from))) = faulty.pop_due(now) {
        push(replies, fd, &reply, to, from);
    }
    replies.send(fd);
}

/// How long a UDP thread may take to notice that its listener stopped.
const STOP_CHECK: std::time::Duration = std::time::Duration::from_millis(100);

fn max_udp_payload(peer: SocketAddr) -> usize {
    match peer {
        SocketAddr::V6(v6) if v6.ip().to_ipv4_mapped().is_none() => MAX_UDP_V6,
        _ => MAX_UDP_V4,
    }
}

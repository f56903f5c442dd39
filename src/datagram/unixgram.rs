//! Unix datagram sockets, served by a task.

use std::os::fd::{AsFd, AsRawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net as std_unix;
use std::sync::Arc;
use std::time::Instant;

use tokio::io::Interest;
use tokio::net::UnixDatagram;

use super::faults::DatagramFaults;
use super::{Answerer, Arrival, RECV_LEN};
use crate::ancillary::recv_from_unix;
use crate::context::{ListenerCtx, Shared};
use crate::fault::PreciseTimer;

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
    let mut faulty = DatagramFaults::new(&listener);
    let mut timer = PreciseTimer::default();
    let mut buf = vec![0; RECV_LEN];
    let fd = sender.as_raw_fd();
    loop {
        let due = faulty.as_ref().and_then(DatagramFaults::next_due);
        let received = tokio::select! {
            biased;
            _ = listener.stop.cancelled() => break,
            () = timer.sleep_until(due), if due.is_some() => {
                send_due(faulty.as_mut(), &sock, &sender).await;
                continue;
            }
            received = sock.async_io(Interest::READABLE, || recv_from_unix(fd, &mut buf)) => received,
        };
        // Nowhere to send a reply to when the client did not bind.
        let Ok((len, Some(peer), kernel_time)) = received else {
            continue;
        };
        let arrival = Arrival::now().kernel_or_now(kernel_time);
        answerer.refresh();
        let peer_key = answerer
            .guard
            .unix_peer_key((peer.as_pathname(), peer.as_abstract_name()));
        if answerer.stamp.has_template() {
            answerer.note_addresses(&format!("{peer:?}"), &"unixgram");
        }
        let answered = answerer
            .answer(&buf[..len], peer_key, usize::MAX, None, arrival)
            .is_some();
        answerer.flush(&listener.stats, arrival.at.elapsed());
        if !answered {
            continue;
        }
        let copies = match &mut faulty {
            None => 1,
            Some(faulty) => faulty.dispatch(&answerer.out, peer.clone(), arrival.at),
        };
        // Two for a duplicate, none for a drop or a delay (queued).
        for _ in 0..copies {
            send(&sock, &sender, &answerer.out, &peer).await;
        }
    }
    // The drain promise with delays: what is queued leaves at its time.
    while let Some(due) = faulty.as_ref().and_then(DatagramFaults::next_due) {
        tokio::select! {
            _ = listener.abort.cancelled() => return,
            () = timer.sleep_until(Some(due)) => send_due(faulty.as_mut(), &sock, &sender).await,
        }
    }
}

async fn send(
    sock: &UnixDatagram,
    sender: &std_unix::UnixDatagram,
    reply: &[u8],
    to: &std_unix::SocketAddr,
) {
    let _ = sock
        .async_io(Interest::WRITABLE, || sender.send_to_addr(reply, to))
        .await;
}

/// Sends the delayed replies that fell due.
async fn send_due(
    faulty: Option<&mut DatagramFaults<'_, std_unix::SocketAddr>>,
    sock: &UnixDatagram,
    sender: &std_unix::UnixDatagram,
) {
    let Some(faulty) = faulty else { return };
    let now = Instant::now();
    while let Some((reply, to)) = faulty.pop_due(now) {
        send(sock, sender, &reply, &to).await;
    }
}

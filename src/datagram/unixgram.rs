//! Unix datagram sockets, served by a task.

use std::os::fd::AsFd;
use std::os::unix::net as std_unix;
use std::sync::Arc;

use tokio::io::Interest;
use tokio::net::UnixDatagram;

use super::{Answerer, Arrival, RECV_LEN};
use crate::context::{ListenerCtx, Shared};

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
            _ = listener.stop.cancelled() => return,
            received = sock.recv_from(&mut buf) => received,
        };
        let Ok((len, peer)) = received else { continue };
        let arrival = Arrival::now();
        answerer.refresh();
        if peer.is_unnamed() {
            // Nowhere to send a reply to: the client did not bind.
            continue;
        }
        let peer_key = answerer
            .guard
            .unix_peer_key((peer.as_pathname(), peer.as_abstract_name()));
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

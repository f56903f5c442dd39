//! `--control` and `--takeover` on the command line's side: asking the
//! running server for its sockets before ours are bound, committing once
//! ours serve, and answering the next process that asks us.

use std::path::{Path, PathBuf};

use tokio::sync::mpsc;
use tsecho::control::{ControlListener, Takeover, control_path};
use tsecho::{Endpoint, Error, Server, ServerHandle};

/// `--takeover` takes the control socket's path, or its unix:// URL.
pub fn takeover_path(arg: &str) -> Result<PathBuf, Error> {
    if arg.contains("://") {
        let endpoint: Endpoint = arg.parse()?;
        return control_path(&endpoint).map(Path::to_path_buf);
    }
    Ok(PathBuf::from(arg))
}

/// The sockets of the server we take over from, for the builder: each
/// listener's copies as configured there, systemd's sockets as inherited.
pub fn add_sockets(mut server: Server, takeover: &mut Takeover) -> Server {
    if let Some((endpoint, fd)) = takeover.metrics_socket.take() {
        server = server.metrics_taken_over(endpoint, fd);
    }
    for handoff in std::mem::take(&mut takeover.listeners) {
        for fd in handoff.fds {
            server = if handoff.inherited {
                server.inherited(handoff.endpoint.service, socket2::Socket::from(fd))
            } else {
                server.taken_over(handoff.endpoint.clone(), fd)
            };
        }
    }
    server
}

/// Our control socket: the one handed over, when it is the one
/// `--control` names, else bound anew.
pub fn control_listener(
    wanted: Option<&Endpoint>,
    takeover: Option<&mut Takeover>,
) -> Result<Option<ControlListener>, Error> {
    let handed = takeover.and_then(|t| t.control_socket.take());
    let Some(wanted) = wanted else {
        return Ok(None);
    };
    match handed {
        Some((endpoint, fd)) if control_path(&endpoint)? == control_path(wanted)? => {
            ControlListener::adopt(fd, wanted.clone())
                .map(Some)
                .map_err(|reason| Error::Listen {
                    endpoint: wanted.to_string(),
                    reason,
                })
        }
        _ => ControlListener::bind(wanted).map(Some),
    }
}

/// Waits for a process to take over and commit; answers each asking
/// process in a task of its own, so signals are still answered meanwhile.
pub struct Answering {
    committed_tx: mpsc::UnboundedSender<u32>,
    committed_rx: mpsc::UnboundedReceiver<u32>,
}

impl Answering {
    pub fn new() -> Self {
        let (committed_tx, committed_rx) = mpsc::unbounded_channel();
        Answering {
            committed_tx,
            committed_rx,
        }
    }

    /// The pid of a process that took over. Never completes without a
    /// control socket.
    pub async fn next(&mut self, control: Option<&ControlListener>, handle: &ServerHandle) -> u32 {
        let Some(control) = control else {
            return std::future::pending().await;
        };
        loop {
            tokio::select! {
                Some(pid) = self.committed_rx.recv() => return pid,
                accepted = control.accept() => match accepted {
                    Ok(conn) => {
                        let listeners = handle.handoffs();
                        let own = control
                            .duplicate_fd()
                            .ok()
                            .map(|fd| (control.endpoint().clone(), fd));
                        let metrics = handle.metrics_handoff();
                        let committed = self.committed_tx.clone();
                        tokio::spawn(async move {
                            match conn.hand_over(listeners, own, metrics).await {
                                Ok(Some(pid)) => {
                                    let _ = committed.send(pid);
                                }
                                Ok(None) => {}
                                Err(e) => tracing::warn!("takeover broke off: {e}; serving on"),
                            }
                        });
                    }
                    Err(e) => tracing::warn!("control socket: {e}"),
                },
            }
        }
    }
}

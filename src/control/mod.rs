//! The control socket (`--control unix:///run/tsecho/control.sock`) and the
//! hand-over it carries: a new process (`serve --takeover`) receives every
//! listening socket of the running one, starts serving them, and only then
//! tells the old one to stop accepting and drain. The kernel's accept
//! queues and UDP receive queues belong to the sockets, not the process,
//! so nothing queued is lost; until the commit the old process serves on
//! untouched, so a new one that fails to start changes nothing.
//!
//! The socket is SOCK_SEQPACKET: each message is one JSON object, with the
//! descriptors it describes attached (SCM_RIGHTS), and keeps its bounds.
//!
//! ```text
//! new -> old  {"type":"takeover","pid":N}
//! old -> new  {"type":"listener","endpoint":"tcp://:21567","inherited":false}  + its copies' fds
//!             ... one per listener ...
//!             {"type":"control","endpoint":"unix:///run/tsecho/control.sock"} + 1 fd
//!             {"type":"metrics","endpoint":"tcp://127.0.0.1:9121"} + 1 fd (with --metrics)
//!             {"type":"end"}
//! new -> old  {"type":"commit","pid":N}            (after it started serving)
//! old -> new  {"type":"committed","pid":M}         (then the old one drains)
//! ```

mod wire;

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use socket2::{Domain, SockAddr, Socket, Type};
use tokio::io::Interest;
use tokio::net::{UnixListener, UnixStream};

use crate::endpoint::{Address, Endpoint, SocketFile, Transport};
use crate::error::Error;

use wire::{MAX_FDS, parse, parse_endpoint, protocol_error, receive_message, send_message};
/// How long either side waits for the other's next message.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the old process waits for the new one to start and commit.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub(crate) enum Message {
    Takeover { pid: u32 },
    Listener { endpoint: String, inherited: bool },
    Control { endpoint: String },
    Metrics { endpoint: String },
    End,
    Commit { pid: u32 },
    Committed { pid: u32 },
}

/// A listener's sockets as handed over: its URL as configured (or as bound,
/// for one systemd passed), and a descriptor per copy.
#[derive(Debug)]
pub struct Handoff {
    pub endpoint: Endpoint,
    pub inherited: bool,
    pub fds: Vec<OwnedFd>,
}

/// The path of a `unix:///path` control URL; anything else is a usage error.
pub fn control_path(endpoint: &Endpoint) -> Result<&Path, Error> {
    match (&endpoint.address, endpoint.transport) {
        (Address::Path(path), Transport::Unix) => Ok(path),
        _ => Err(Error::Usage(format!(
            "--control takes a unix:///path URL, not {endpoint}"
        ))),
    }
}

/// The control socket of a running server. tokio's Unix types serve the
/// seqpacket socket as they would a stream one: accepting, and waiting
/// for readiness, are the same calls.
pub struct ControlListener {
    listener: UnixListener,
    endpoint: Endpoint,
}

impl ControlListener {
    /// Binds the control socket, mode 0600 whatever the URL says: whoever
    /// can connect can take the server's sockets.
    pub fn bind(endpoint: &Endpoint) -> Result<Self, Error> {
        let listen_error = |reason| Error::Listen {
            endpoint: endpoint.to_string(),
            reason,
        };
        let path = control_path(endpoint)?;
        let private = SocketFile {
            mode: Some(0o600),
            ..endpoint.socket_file.clone()
        };
        let socket = crate::listener::socket_file::bind_path(path, Type::SEQPACKET, &private, 16)
            .map_err(listen_error)?;
        Self::serve(socket, endpoint.clone()).map_err(listen_error)
    }

    /// A control socket handed over by the process before us.
    pub fn adopt(fd: OwnedFd, endpoint: Endpoint) -> io::Result<Self> {
        Self::serve(Socket::from(fd), endpoint)
    }

    fn serve(socket: Socket, endpoint: Endpoint) -> io::Result<Self> {
        socket.set_nonblocking(true)?;
        let std = std::os::unix::net::UnixListener::from(OwnedFd::from(socket));
        Ok(ControlListener {
            listener: UnixListener::from_std(std)?,
            endpoint,
        })
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    pub fn path(&self) -> Option<PathBuf> {
        control_path(&self.endpoint).ok().map(Path::to_path_buf)
    }

    /// Another descriptor for the listening socket, to hand over.
    pub fn duplicate_fd(&self) -> io::Result<OwnedFd> {
        use std::os::fd::AsFd;
        self.listener.as_fd().try_clone_to_owned()
    }

    /// The next process asking to take over.
    pub async fn accept(&self) -> io::Result<ControlConn> {
        let (stream, _) = self.listener.accept().await?;
        Ok(ControlConn { stream })
    }
}

/// One process asking to take over, seen from the server it takes over from.
pub struct ControlConn {
    stream: UnixStream,
}

impl ControlConn {
    /// Answers a takeover: sends the sockets, waits for the commit.
    /// Returns the new process's pid once it committed, None if it went
    /// away (or asked for something else) first: then nothing changes.
    pub async fn hand_over(
        self,
        listeners: Vec<Handoff>,
        control: Option<(Endpoint, OwnedFd)>,
        metrics: Option<(Endpoint, OwnedFd)>,
    ) -> io::Result<Option<u32>> {
        let asked = tokio::time::timeout(ANSWER_TIMEOUT, self.receive()).await;
        let Ok(Some(Message::Takeover { pid })) = asked.unwrap_or(Ok(None)) else {
            return Ok(None);
        };
        tracing::info!(pid, "process {pid} is taking over the listening sockets");
        for listener in &listeners {
            let message = Message::Listener {
                endpoint: listener.endpoint.to_string(),
                inherited: listener.inherited,
            };
            for fds in listener.fds.chunks(MAX_FDS) {
                self.send(&message, fds).await?;
            }
        }
        if let Some((endpoint, fd)) = &control {
            let message = Message::Control {
                endpoint: endpoint.to_string(),
            };
            self.send(&message, std::slice::from_ref(fd)).await?;
        }
        if let Some((endpoint, fd)) = &metrics {
            let message = Message::Metrics {
                endpoint: endpoint.to_string(),
            };
            self.send(&message, std::slice::from_ref(fd)).await?;
        }
        self.send(&Message::End, &[]).await?;
        // The new process binds, loads its certificates and starts its
        // threads before it commits; one that never does is given up on.
        let committed = tokio::time::timeout(COMMIT_TIMEOUT, self.receive()).await;
        let Ok(Ok(Some(Message::Commit { pid }))) = committed else {
            tracing::warn!("process {pid} did not take over; serving on");
            return Ok(None);
        };
        self.send(
            &Message::Committed {
                pid: std::process::id(),
            },
            &[],
        )
        .await?;
        Ok(Some(pid))
    }

    async fn send(&self, message: &Message, fds: &[OwnedFd]) -> io::Result<()> {
        let text = serde_json::to_vec(message).map_err(io::Error::other)?;
        let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
        let fd = self.stream.as_raw_fd();
        self.stream
            .async_io(Interest::WRITABLE, || send_message(fd, &text, &raw))
            .await
    }

    async fn receive(&self) -> io::Result<Option<Message>> {
        let fd = self.stream.as_raw_fd();
        let (text, _fds) = self
            .stream
            .async_io(Interest::READABLE, || receive_message(fd))
            .await?;
        Ok(parse(&text))
    }
}

/// The new process's side: the sockets received, and the connection on
/// which to commit once they are served.
pub struct Takeover {
    socket: Socket,
    control: String,
    pub listeners: Vec<Handoff>,
    /// The control socket itself, to serve the next takeover from.
    pub control_socket: Option<(Endpoint, OwnedFd)>,
    /// The /metrics socket, when the old server had one.
    pub metrics_socket: Option<(Endpoint, OwnedFd)>,
}

impl Takeover {
    /// Connects to the running server's control socket and receives its
    /// listening sockets. The old server keeps serving them meanwhile.
    pub fn request(path: &Path) -> Result<Takeover, Error> {
        let control = path.display().to_string();
        let fail = |reason| Error::Takeover {
            control: path.display().to_string(),
            reason,
        };
        let socket = Socket::new(Domain::UNIX, Type::SEQPACKET, None).map_err(fail)?;
        socket
            .set_read_timeout(Some(ANSWER_TIMEOUT))
            .map_err(fail)?;
        socket
            .connect(&SockAddr::unix(path).map_err(fail)?)
            .map_err(fail)?;
        let mut takeover = Takeover {
            socket,
            control,
            listeners: Vec::new(),
            control_socket: None,
            metrics_socket: None,
        };
        takeover
            .send(&Message::Takeover {
                pid: std::process::id(),
            })
            .map_err(fail)?;
        takeover.receive_sockets().map_err(fail)?;
        Ok(takeover)
    }

    fn receive_sockets(&mut self) -> io::Result<()> {
        loop {
            let (text, fds) = receive_message(self.socket.as_raw_fd())?;
            match parse(&text) {
                Some(Message::Listener {
                    endpoint,
                    inherited,
                }) => self.add_listener(&endpoint, inherited, fds)?,
                Some(Message::Control { endpoint }) => {
                    let endpoint = parse_endpoint(&endpoint)?;
                    self.control_socket = fds.into_iter().next().map(|fd| (endpoint, fd));
                }
                Some(Message::Metrics { endpoint }) => {
                    let endpoint = parse_endpoint(&endpoint)?;
                    self.metrics_socket = fds.into_iter().next().map(|fd| (endpoint, fd));
                }
                Some(Message::End) => return Ok(()),
                _ if text.is_empty() => {
                    return Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        "the server closed the control connection",
                    ));
                }
                _ => return Err(protocol_error(&text)),
            }
        }
    }

    /// Copies of one listener may come in several messages.
    fn add_listener(
        &mut self,
        endpoint: &str,
        inherited: bool,
        fds: Vec<OwnedFd>,
    ) -> io::Result<()> {
        let endpoint = parse_endpoint(endpoint)?;
        match self
            .listeners
            .iter_mut()
            .find(|l| l.endpoint == endpoint && l.inherited == inherited)
        {
            Some(listener) => listener.fds.extend(fds),
            None => self.listeners.push(Handoff {
                endpoint,
                inherited,
                fds,
            }),
        }
        Ok(())
    }

    /// Tells the old process that we serve now; it stops accepting and
    /// drains. Returns its pid.
    pub fn commit(&self) -> Result<u32, Error> {
        let fail = |reason| Error::Takeover {
            control: self.control.clone(),
            reason,
        };
        self.send(&Message::Commit {
            pid: std::process::id(),
        })
        .map_err(fail)?;
        let (text, _) = receive_message(self.socket.as_raw_fd()).map_err(fail)?;
        match parse(&text) {
            Some(Message::Committed { pid }) => Ok(pid),
            _ => Err(fail(protocol_error(&text))),
        }
    }

    fn send(&self, message: &Message) -> io::Result<()> {
        let text = serde_json::to_vec(message).map_err(io::Error::other)?;
        send_message(self.socket.as_raw_fd(), &text, &[])
    }
}

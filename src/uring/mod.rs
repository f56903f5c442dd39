//! io_uring as a second I/O engine for TCP connections (`--io uring`).
//!
//! A shard's plain TCP connections live on a thread of their own that
//! sleeps in its ring (`executor.rs`); their reads and writes go through
//! the ring. Accepting, the timers and the drain stay with the shard's
//! runtime, and everything above the `ByteStream` is the same code, so
//! every service, limit and fault is served alike over either engine.
//! See `driver.rs` for what the ring buys.

mod buffers;
mod driver;
mod executor;
mod setup;
mod slot;
mod slot_id;
mod stream;
mod thread;

use std::io;
use std::sync::OnceLock;

pub use stream::{UringListener, UringStream};

/// Which engine serves TCP connections.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IoEngine {
    /// Readiness from epoll, then a system call per read and per write.
    #[default]
    Epoll,
    /// io_uring; the server does not start where the kernel refuses it.
    Uring,
    /// io_uring where the kernel allows it, else epoll.
    Auto,
}

impl IoEngine {
    pub fn name(self) -> &'static str {
        match self {
            IoEngine::Epoll => "epoll",
            IoEngine::Uring => "uring",
            IoEngine::Auto => "auto",
        }
    }

    /// Whether TCP connections go through io_uring: asked of the kernel
    /// once per process. Err only when `uring` was asked for and the
    /// kernel refuses it.
    pub fn resolve(self) -> io::Result<bool> {
        static AVAILABLE: OnceLock<Result<(), String>> = OnceLock::new();
        if self == IoEngine::Epoll {
            return Ok(false);
        }
        let available = AVAILABLE.get_or_init(|| probe().map_err(|e| e.to_string()));
        match (self, available) {
            (_, Ok(())) => Ok(true),
            (IoEngine::Auto, Err(why)) => {
                tracing::info!("io_uring is not available ({why}); serving TCP with epoll");
                Ok(false)
            }
            (_, Err(why)) => Err(io::Error::other(format!(
                "--io uring: io_uring is not available: {why}"
            ))),
        }
    }
}

/// Whether this kernel gives tsecho what its ring needs.
fn probe() -> io::Result<()> {
    let ring = setup::new_ring()?;
    let mut probe = io_uring::Probe::new();
    ring.submitter().register_probe(&mut probe)?;
    for code in [
        io_uring::opcode::RecvMsgMulti::CODE,
        io_uring::opcode::Send::CODE,
        io_uring::opcode::AsyncCancel::CODE,
        // How other threads wake a ring thread: a read of its eventfd.
        io_uring::opcode::Read::CODE,
    ] {
        if !probe.is_supported(code) {
            return Err(io::Error::other(format!(
                "io_uring opcode {code} not supported"
            )));
        }
    }
    // Registering the buffer ring is the last thing that may be refused;
    // this one is leaked with its probe ring, once per process.
    buffers::Buffers::register(&ring).map(drop)
}

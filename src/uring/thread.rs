//! Ring threads: each shard's runtime gets one, started with its first
//! io_uring listener, on which its connections live. The thread's driver
//! is reached from its connections through a thread-local.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::{Arc, mpsc};
use std::task::{Context, Poll};

use super::driver::{Driver, SlotId};
use super::executor::{Executor, Remote};

thread_local! {
    /// On a ring thread: its driver.
    static DRIVER: RefCell<Option<Driver>> = const { RefCell::new(None) };
    /// On a shard's thread: its ring thread.
    static RING: RefCell<Option<Arc<Remote>>> = const { RefCell::new(None) };
}

/// Runs `f` on this ring thread's driver.
pub fn with<R>(f: impl FnOnce(&mut Driver) -> R) -> io::Result<R> {
    DRIVER.with_borrow_mut(|driver| match driver.as_mut() {
        Some(driver) => Ok(f(driver)),
        None => Err(io::Error::other("not on an io_uring thread")),
    })
}

/// The ring thread of the runtime this runs on, started if it has none
/// (or its last one ended with an earlier runtime on this thread).
pub fn for_this_runtime() -> io::Result<Arc<Remote>> {
    RING.with_borrow_mut(|ring| {
        if let Some(remote) = ring.as_ref().filter(|r| !r.is_closed()) {
            return Ok(remote.clone());
        }
        let remote = start()?;
        *ring = Some(remote.clone());
        Ok(remote)
    })
}

/// Starts a ring thread that uses this runtime's timers, and ends when
/// this runtime does: its connections are dropped then, as the runtime's
/// own tasks are.
fn start() -> io::Result<Arc<Remote>> {
    let remote = Arc::new(Remote::new()?);
    let runtime = tokio::runtime::Handle::current();
    let (started_tx, started_rx) = mpsc::channel();
    let theirs = remote.clone();
    std::thread::Builder::new()
        .name("tsecho-ring".into())
        .spawn(move || {
            let _timers = runtime.enter();
            match Driver::start(theirs.wake_fd().as_raw_fd()) {
                Ok(driver) => {
                    DRIVER.set(Some(driver));
                    let _ = started_tx.send(Ok(()));
                    Executor::new(theirs).run();
                    DRIVER.take();
                }
                Err(e) => {
                    let _ = started_tx.send(Err(e));
                }
            }
        })?;
    started_rx
        .recv()
        .map_err(|_| io::Error::other("the io_uring thread died while starting"))??;
    tokio::spawn(Keeper(remote.clone()));
    Ok(remote)
}

/// A task that never ends: dropped when its runtime shuts down, it
/// closes the ring thread.
struct Keeper(Arc<Remote>);

impl Future for Keeper {
    type Output = ();

    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        Poll::Pending
    }
}

impl Drop for Keeper {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// Frees a connection's slot. Called from `Drop`, so it never panics:
/// while the thread tears down, the driver may already be gone, and then
/// the kernel drops what it held when the ring closes.
pub fn drop_slot(id: SlotId) {
    let _ = DRIVER.try_with(|driver| match driver.try_borrow_mut() {
        Ok(mut driver) => {
            if let Some(driver) = driver.as_mut() {
                driver.drop_slot(id);
            }
        }
        Err(_) => tracing::warn!("an io_uring connection was dropped while its driver was busy"),
    });
}

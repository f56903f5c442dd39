//! The thread's driver and the task that turns it: each thread has its
//! own ring, reached from its connections' tasks through a thread-local.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::driver::{Driver, SlotId};

thread_local! {
    static DRIVER: RefCell<Option<Driver>> = const { RefCell::new(None) };
}

/// Runs `f` on this thread's driver, starting it (and its task) first.
pub fn with<R>(f: impl FnOnce(&mut Driver) -> R) -> io::Result<R> {
    DRIVER.with_borrow_mut(|driver| {
        if !driver.as_ref().is_some_and(Driver::task_alive) {
            *driver = Some(Driver::start()?);
            tokio::spawn(DriverTask);
        }
        let Some(driver) = driver.as_mut() else {
            return Err(io::Error::other("io_uring driver missing"));
        };
        Ok(f(driver))
    })
}

/// The task that submits and completes for every connection of its thread.
struct DriverTask;

impl Drop for DriverTask {
    fn drop(&mut self) {
        let _ = DRIVER.try_with(|driver| {
            if let Ok(mut driver) = driver.try_borrow_mut() {
                if let Some(driver) = driver.as_mut() {
                    driver.task_ended();
                }
            }
        });
    }
}

impl Future for DriverTask {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        DRIVER.with_borrow_mut(|driver| match driver.as_mut() {
            Some(driver) => driver.poll_turn(cx),
            None => Poll::Ready(()),
        })
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

//! Waiting for a delayed reply to the microsecond. tokio's timer ticks
//! every millisecond and rounds a deadline up to the next tick, so every
//! delayed stream reply left 0.5-1.5 ms late (docs/benchmarks.md). A
//! connection with faults gets a timerfd of its own, armed to whatever it
//! waits for next; without one (out of descriptors) it falls back to
//! tokio's timer, late but never early.

use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::time::Instant;

use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use tokio::io::unix::AsyncFd;

struct Fd(TimerFd);

impl AsRawFd for Fd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

/// The timerfd, with the runtime that wakes its waiter.
#[allow(unsafe_code)]
fn register(fd: TimerFd) -> Option<AsyncFd<Fd>> {
    // SAFETY: the AsyncFd owns the descriptor, so it stays open for as
    // long as it is registered, and is deregistered before it is closed.
    unsafe { AsyncFd::register_with_interest(Fd(fd), tokio::io::Interest::READABLE) }.ok()
}

/// Made on first use: a connection whose faults never wait (reset,
/// close-after) holds no descriptor.
#[derive(Default)]
pub struct PreciseTimer {
    /// None until first used; then None inside when it could not be made.
    fd: Option<Option<AsyncFd<Fd>>>,
    /// What the timerfd is armed for, so that waiting again for the same
    /// instant (after a read woke the connection) costs no system call.
    armed: Option<Instant>,
}

impl PreciseTimer {
    /// Returns at `at` or just after, never before; never without one.
    pub async fn sleep_until(&mut self, at: Option<Instant>) {
        let Some(at) = at else {
            return std::future::pending().await;
        };
        if self.wait_precisely(at).await.is_err() {
            tokio::time::sleep_until(at.into()).await;
        }
    }

    async fn wait_precisely(&mut self, at: Instant) -> io::Result<()> {
        let made = self.fd.get_or_insert_with(|| {
            let flags = TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC;
            TimerFd::new(ClockId::CLOCK_MONOTONIC, flags)
                .ok()
                .and_then(register)
        });
        let Some(fd) = made else {
            return Err(io::ErrorKind::Unsupported.into());
        };
        loop {
            let left = at.saturating_duration_since(Instant::now());
            if left.is_zero() {
                self.armed = None;
                return Ok(());
            }
            if self.armed != Some(at) {
                // Relative to a clock read before the kernel's own: it
                // fires at `at` or a little after.
                let expiration = Expiration::OneShot(TimeSpec::from_duration(left));
                fd.get_ref().0.set(expiration, TimerSetTimeFlags::empty())?;
                self.armed = Some(at);
            }
            // The expiry count is never read: arming again resets it, and
            // each expiry is a new edge for the runtime's epoll. Readiness
            // left from an earlier arming only costs a look at the clock.
            fd.readable().await?.clear_ready();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn wakes_after_the_instant_and_well_within_a_millisecond() {
        let mut timer = PreciseTimer::default();
        for _ in 0..20 {
            let at = Instant::now() + Duration::from_micros(2_300);
            timer.sleep_until(Some(at)).await;
            let now = Instant::now();
            assert!(now >= at);
            // Generous for a loaded machine; tokio's timer alone is late
            // by 0.5-1.5 ms on average, which this would let through
            // only rarely.
            assert!(now - at < Duration::from_millis(50), "{:?}", now - at);
        }
    }
}

//! What each ring thread is made of: the ring with its flags, and the
//! eventfd other threads write to wake it.

#![allow(unsafe_code)]

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};

use io_uring::IoUring;

/// The ring each thread gets: one issuer (the thread), and completion
/// work deferred until the thread asks for it (`io_uring_enter` with
/// GETEVENTS, once per turn for everything that came), never done by
/// interrupting the thread. The registered eventfd is how it learns to
/// ask: the thread sleeps in `io_uring_enter` waiting for completions.
pub fn new_ring() -> io::Result<IoUring> {
    IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_taskrun_flag()
        .setup_cqsize(16384)
        .build(4096)
}

/// An eventfd the ring reads with a waiting read. Blocking on purpose:
/// io_uring answers a read of a non-blocking descriptor with EAGAIN
/// instead of waiting for it.
pub fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: eventfd takes no pointers; a non-negative result is a new
    // descriptor that nothing else owns.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: see above.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

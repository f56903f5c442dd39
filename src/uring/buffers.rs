//! The provided-buffer ring: receive buffers the kernel picks from when
//! data arrives, so a connection holds a buffer only while it has unread
//! input, never while it waits.

#![allow(unsafe_code)]

use std::alloc::{Layout, alloc_zeroed};
use std::io;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::IoUring;
use io_uring::types::BufRingEntry;

/// The buffer group every receive picks from.
pub const GROUP: u16 = 1;
/// Buffers per thread: 1 MiB with `SIZE`. The kernel takes them in turn
/// round the ring, so every one of them is touched once traffic has gone
/// round it: 2,048 (8 MiB) cost 10,000 idle connections 0.3-0.5 KiB
/// each, past the 1.5 KiB an idle connection may cost. A burst that
/// finds none left waits in the kernel's socket buffers (`starved`).
pub const COUNT: u16 = 256;
/// One buffer: a receive brings at most this much, less the 48 bytes of
/// header and control message `recvmsg` puts in front. A page and that:
/// a 4 KiB message arrives whole, in one completion and one wake-up of
/// its connection, not two.
pub const SIZE: usize = 4096 + 64;

/// The ring the kernel takes buffers from and the memory behind it. Never
/// freed: the kernel may write into it until the ring is torn down, which
/// happens after the thread's destructors run. One per thread, for the
/// life of the process.
pub struct Buffers {
    entries: *mut BufRingEntry,
    memory: *mut u8,
    tail: u16,
}

impl Buffers {
    /// Allocates the ring and its buffers, hands every buffer to the
    /// kernel and registers the ring with `ring`.
    pub fn register(ring: &IoUring) -> io::Result<Self> {
        let entries = page_aligned(usize::from(COUNT) * size_of::<BufRingEntry>())?;
        let memory = page_aligned(usize::from(COUNT) * SIZE)?;
        let mut buffers = Buffers {
            entries: entries.cast(),
            memory,
            tail: 0,
        };
        for id in 0..COUNT {
            buffers.push(id);
        }
        buffers.publish();
        // SAFETY: the ring's memory is valid, page aligned, and never freed
        // (see the type's comment).
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(entries as u64, COUNT, GROUP, 0)?;
        }
        Ok(buffers)
    }

    /// The first `len` bytes of buffer `id`, as the kernel filled them.
    pub fn get(&self, id: u16, len: usize) -> &[u8] {
        let id = usize::from(id % COUNT);
        let len = len.min(SIZE);
        // SAFETY: buffer `id` lies inside `memory`, and the kernel is done
        // writing to it: it told us so in a completion, and it gets the
        // buffer back only through `give_back`.
        unsafe { std::slice::from_raw_parts(self.memory.add(id * SIZE), len) }
    }

    /// Returns buffer `id` to the kernel once its bytes are read.
    pub fn give_back(&mut self, id: u16) {
        self.push(id % COUNT);
        self.publish();
    }

    fn push(&mut self, id: u16) {
        let slot = usize::from(self.tail & (COUNT - 1));
        // SAFETY: `slot` < COUNT, inside the ring's memory; the kernel reads
        // this entry only once the tail is published past it.
        unsafe {
            let entry = &mut *self.entries.add(slot);
            entry.set_addr(self.memory.add(usize::from(id) * SIZE) as u64);
            entry.set_len(SIZE as u32);
            entry.set_bid(id);
        }
        self.tail = self.tail.wrapping_add(1);
    }

    fn publish(&self) {
        // SAFETY: the tail field lies in the ring's first entry, u16
        // aligned; the kernel reads it, we alone write it.
        let tail = unsafe { AtomicU16::from_ptr(BufRingEntry::tail(self.entries).cast_mut()) };
        tail.store(self.tail, Ordering::Release);
    }
}

fn page_aligned(len: usize) -> io::Result<*mut u8> {
    let layout = Layout::from_size_align(len, 4096).map_err(io::Error::other)?;
    // SAFETY: the layout has a non-zero size.
    let memory = unsafe { alloc_zeroed(layout) };
    if memory.is_null() {
        return Err(io::ErrorKind::OutOfMemory.into());
    }
    Ok(memory)
}

//! One io_uring per ring thread, turned by that thread's executor.
//!
//! Connections are futures on the ring thread (`executor.rs`); only their
//! reads and writes touch the ring. Each connection has a slot here: a
//! multishot `recvmsg` that fills buffers from the provided-buffer ring,
//! and at most one `send` in flight. Futures queue their operations; the
//! executor, once it has polled every future it woke, submits the whole
//! batch in one system call and hands out what completed. That batching
//! is what epoll cannot do: one `io_uring_enter` for every reply the
//! thread produced in a turn, instead of one `sendto` and one `recvmsg`
//! each.

#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::task::{Context, Poll};
use std::time::SystemTime;

use io_uring::{IoUring, cqueue, opcode, squeue, types};

use super::buffers::{self, Buffers};
use super::setup;
use super::slot::{AfterSend, QUEUE_LIMIT, Slot, give_back_all, set_waker, writable};
pub use super::slot_id::SlotId;

/// Send buffers kept for reuse. A burst (10,000 connections answered in
/// one turn) has as many sends in flight; kept, they would stay the
/// thread's memory for good.
const SPARE_SENDS: usize = 256;

/// Room for one SO_TIMESTAMPNS control message.
const CONTROL_LEN: u32 = 32;

const RECV: u64 = 1;
const SEND: u64 = 2;
const CANCEL: u64 = 3;
/// The read of the executor's eventfd: another thread wants it awake.
const WAKE: u64 = 4;

pub struct Driver {
    ring: IoUring,
    buffers: Buffers,
    slots: Vec<Slot>,
    free: Vec<u32>,
    /// Kept for the kernel to read as each receive is submitted.
    template: Box<libc::msghdr>,
    /// The eventfd other threads write, and where its count is read to.
    wake_fd: RawFd,
    wake_count: Box<u64>,
    spare_sends: Vec<Vec<u8>>,
    /// Slots whose receive ended for want of buffers.
    starved: Vec<SlotId>,
}

impl Driver {
    /// A driver whose thread sleeps in its ring, woken from other
    /// threads through `wake_fd`, which must outlive it.
    pub fn start(wake_fd: RawFd) -> io::Result<Self> {
        let ring = setup::new_ring()?;
        let buffers = Buffers::register(&ring)?;
        // SAFETY: an all-zero msghdr is a valid empty one.
        let mut template: Box<libc::msghdr> = Box::new(unsafe { std::mem::zeroed() });
        template.msg_controllen = CONTROL_LEN as _;
        let mut driver = Driver {
            ring,
            buffers,
            slots: Vec::new(),
            free: Vec::new(),
            template,
            wake_fd,
            wake_count: Box::new(0),
            spare_sends: Vec::new(),
            starved: Vec::new(),
        };
        driver.arm_wake();
        Ok(driver)
    }

    /// Submits what the futures queued and hands out every completion.
    pub fn turn(&mut self) {
        if !self.ring.submission().is_empty() || self.ring.submission().taskrun() {
            if let Err(e) = self.ring.submit() {
                tracing::warn!("io_uring submit failed: {e}");
            }
        }
        self.complete_all();
    }

    fn complete_all(&mut self) {
        loop {
            let Some(cqe) = self.ring.completion().next() else {
                break;
            };
            self.complete(&cqe);
        }
    }

    /// Submits what the futures queued and sleeps until a completion
    /// arrives (another thread's wake-up is one), then hands out what came.
    pub fn submit_and_wait(&mut self) {
        match self.ring.submit_and_wait(1) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => tracing::warn!("io_uring wait failed: {e}"),
        }
        self.complete_all();
    }

    /// Takes a connected socket into a slot.
    pub fn register(&mut self, fd: OwnedFd) -> SlotId {
        let index = self.free.pop().unwrap_or_else(|| {
            self.slots.push(Slot::default());
            (self.slots.len() - 1) as u32
        });
        let slot = &mut self.slots[index as usize];
        slot.generation = slot.generation.wrapping_add(1);
        slot.fd = Some(fd);
        SlotId {
            index,
            generation: slot.generation,
        }
    }

    pub fn slot(&mut self, id: SlotId) -> Option<&mut Slot> {
        self.slots
            .get_mut(id.index as usize)
            .filter(|slot| slot.generation == id.generation && !slot.dropped)
    }

    pub fn fd(&mut self, id: SlotId) -> Option<RawFd> {
        self.slot(id)?.fd.as_ref().map(AsRawFd::as_raw_fd)
    }

    /// Copies unread input into `buf`; Pending (with the receive armed)
    /// when there is none yet.
    /// Hands unread input to `take` straight from the provided buffer
    /// when it is in one; `None` when more is waiting, to be read into one
    /// buffer: handed over piece by piece, what follows a line split
    /// between two pieces would be copied whole behind it.
    pub fn poll_read_in_place(
        &mut self,
        id: SlotId,
        cx: &mut Context<'_>,
        limit: usize,
        take: &mut dyn FnMut(&[u8], Option<SystemTime>),
    ) -> Option<Poll<io::Result<usize>>> {
        let waiting = self
            .slots
            .get(id.index as usize)
            .map(|slot| slot.chunks.len());
        (waiting <= Some(1)).then(|| self.poll_read_chunks(id, cx, limit, take))
    }

    /// Hands unread input to `take` straight from the provided buffers, a
    /// piece at a time; the bytes handed over (0: the input ended).
    pub fn poll_read_chunks(
        &mut self,
        id: SlotId,
        cx: &mut Context<'_>,
        limit: usize,
        take: &mut dyn FnMut(&[u8], Option<SystemTime>),
    ) -> Poll<io::Result<usize>> {
        let Some(slot) = self.slots.get_mut(id.index as usize) else {
            return Poll::Ready(Err(io::ErrorKind::NotConnected.into()));
        };
        let handed = slot.hand_input(&mut self.buffers, limit, take);
        if handed > 0 {
            if !self.starved.is_empty() {
                self.wake_starved();
            }
            return Poll::Ready(Ok(handed));
        }
        if let Some(errno) = slot.read_error.take() {
            return Poll::Ready(Err(io::Error::from_raw_os_error(errno)));
        }
        if slot.eof {
            return Poll::Ready(Ok(0));
        }
        set_waker(&mut slot.read_waker, cx);
        if !slot.recv_armed && !slot.starved {
            self.arm_receive(id);
        }
        Poll::Pending
    }

    /// Takes what fits of `data` for sending; Pending while the queue is
    /// full.
    pub fn poll_write(
        &mut self,
        id: SlotId,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let slot = match writable(&mut self.slots, id) {
            Ok(slot) => slot,
            Err(e) => return Poll::Ready(Err(e)),
        };
        if slot.sending.is_none() {
            let mut out = self.spare_sends.pop().unwrap_or_default();
            out.extend_from_slice(data);
            self.start_send(id, out, 0);
            return Poll::Ready(Ok(data.len()));
        }
        let room = QUEUE_LIMIT.saturating_sub(slot.queued.len());
        if room == 0 {
            set_waker(&mut slot.write_waker, cx);
            return Poll::Pending;
        }
        let n = room.min(data.len());
        slot.queued.extend_from_slice(&data[..n]);
        Poll::Ready(Ok(n))
    }

    /// Sends all of `out` without a copy when nothing is in flight, leaving
    /// a spare (empty) buffer in its place; false: write it the usual way.
    pub fn send_owned(&mut self, id: SlotId, out: &mut Vec<u8>) -> io::Result<bool> {
        if writable(&mut self.slots, id)?.sending.is_some() || out.is_empty() {
            return Ok(false);
        }
        // Never larger than the connection's own: it keeps it while idle.
        let spare = match self.spare_sends.last() {
            Some(spare) if spare.capacity() <= out.capacity() => self.spare_sends.pop(),
            _ => None,
        };
        let full = std::mem::replace(out, spare.unwrap_or_default());
        self.start_send(id, full, 0);
        Ok(true)
    }

    /// Ready once everything written has been handed to the kernel.
    pub fn poll_sent(&mut self, id: SlotId, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let slot = match writable(&mut self.slots, id) {
            Ok(slot) => slot,
            Err(e) => return Poll::Ready(Err(e)),
        };
        if slot.sending.is_some() {
            set_waker(&mut slot.write_waker, cx);
            return Poll::Pending;
        }
        Poll::Ready(Ok(()))
    }

    pub fn write_error(&mut self, id: SlotId) -> Option<io::Error> {
        let errno = self.slots.get(id.index as usize)?.write_error?;
        Some(io::Error::from_raw_os_error(errno))
    }

    /// The connection is gone: what the kernel still holds of it is
    /// cancelled, and the socket is closed once nothing is left.
    pub fn drop_slot(&mut self, id: SlotId) {
        let Some(slot) = self.slot(id) else {
            return;
        };
        slot.dropped = true;
        slot.read_waker = None;
        slot.write_waker = None;
        slot.queued = Vec::new();
        let chunks = std::mem::take(&mut slot.chunks);
        let cancel_receive = slot.recv_armed && !slot.recv_cancelled;
        // A client that stopped reading would hold the socket open for
        // ever; after a clean close nothing is in flight by now.
        let cancel_send = slot.sending.is_some();
        give_back_all(chunks, &mut self.buffers);
        if cancel_receive {
            self.cancel_receive(id);
        }
        if cancel_send {
            self.cancel(id, SEND);
        }
        if !self.starved.is_empty() {
            self.wake_starved();
        }
        self.release_if_done(id.index);
    }

    fn arm_receive(&mut self, id: SlotId) {
        let Some(fd) = self.fd(id) else {
            return;
        };
        let entry = opcode::RecvMsgMulti::new(types::Fd(fd), &*self.template, buffers::GROUP)
            .build()
            .user_data(id.user_data(RECV));
        let slot = &mut self.slots[id.index as usize];
        slot.recv_armed = true;
        slot.recv_cancelled = false;
        slot.in_kernel += 1;
        self.push(entry);
    }

    fn cancel_receive(&mut self, id: SlotId) {
        self.slots[id.index as usize].recv_cancelled = true;
        self.cancel(id, RECV);
    }

    fn cancel(&mut self, id: SlotId, op: u64) {
        let entry = opcode::AsyncCancel::new(id.user_data(op))
            .build()
            .user_data(id.user_data(CANCEL));
        self.slots[id.index as usize].in_kernel += 1;
        self.push(entry);
    }

    fn start_send(&mut self, id: SlotId, out: Vec<u8>, from: usize) {
        let slot = &mut self.slots[id.index as usize];
        let Some(fd) = slot.fd.as_ref().map(AsRawFd::as_raw_fd) else {
            return;
        };
        let rest = &out[from..];
        // The buffer lives in the slot until the send completes.
        let entry = opcode::Send::new(types::Fd(fd), rest.as_ptr(), rest.len() as u32)
            .flags(libc::MSG_NOSIGNAL)
            .build()
            .user_data(id.user_data(SEND));
        slot.sending = Some((out, from));
        slot.in_kernel += 1;
        self.push(entry);
    }

    fn push(&mut self, entry: squeue::Entry) {
        // SAFETY: what the entry points at (the msghdr template, the wake
        // count, a send's buffer in its slot) outlives the operation: the
        // first two live as long as the driver, a buffer until its
        // completion.
        while unsafe { self.ring.submission().push(&entry) }.is_err() {
            if let Err(e) = self.ring.submit() {
                tracing::warn!("io_uring submit failed: {e}");
            }
        }
    }

    fn arm_wake(&mut self) {
        let entry = opcode::Read::new(
            types::Fd(self.wake_fd),
            (&mut *self.wake_count as *mut u64).cast(),
            8,
        )
        .build()
        .user_data(WAKE);
        self.push(entry);
    }

    fn complete(&mut self, cqe: &cqueue::Entry) {
        if cqe.user_data() == WAKE {
            // The executor looks at what the other thread left it.
            self.arm_wake();
            return;
        }
        let (id, op) = SlotId::from_user_data(cqe.user_data());
        let Some(slot) = self.slots.get_mut(id.index as usize) else {
            return;
        };
        if slot.generation != id.generation {
            return;
        }
        let more = cqueue::more(cqe.flags());
        match op {
            RECV => self.received(id, cqe.result(), cqe.flags(), more),
            SEND => self.sent(id, cqe.result()),
            _ => slot.in_kernel -= 1,
        }
        self.release_if_done(id.index);
    }

    fn received(&mut self, id: SlotId, result: i32, flags: u32, more: bool) {
        let slot = &mut self.slots[id.index as usize];
        let buffer = cqueue::buffer_select(flags);
        let cancel = slot.on_received(&mut self.buffers, &self.template, result, buffer, more);
        if slot.starved {
            self.starved.push(id);
            return;
        }
        let waker = slot.read_waker.take();
        if cancel {
            self.cancel_receive(id);
        }
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    fn sent(&mut self, id: SlotId, result: i32) {
        let slot = &mut self.slots[id.index as usize];
        let after = slot.on_sent(result);
        let waker = slot.write_waker.take();
        match after {
            Some(AfterSend::Rest(out, from)) => self.start_send(id, out, from),
            Some(AfterSend::Queued(out)) => self.start_send(id, out, 0),
            Some(AfterSend::Done(out))
                if out.capacity() <= QUEUE_LIMIT && self.spare_sends.len() < SPARE_SENDS =>
            {
                self.spare_sends.push(out);
            }
            _ => {}
        }
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    fn release_if_done(&mut self, index: u32) {
        let slot = &mut self.slots[index as usize];
        if slot.dropped && slot.in_kernel == 0 {
            *slot = slot.vacated();
            self.free.push(index);
        }
    }

    fn wake_starved(&mut self) {
        for id in std::mem::take(&mut self.starved) {
            if let Some(slot) = self.slot(id) {
                slot.starved = false;
                if let Some(waker) = slot.read_waker.take() {
                    waker.wake();
                }
            }
        }
    }
}

//! One connection's state beside the ring, without the ring: its unread
//! input, its send in flight and what waits behind it, and what each
//! completion changes. The driver turns the outcomes into operations.

#![allow(unsafe_code)]

use std::collections::VecDeque;
use std::io;
use std::os::fd::OwnedFd;
use std::task::{Context, Waker};
use std::time::SystemTime;

use io_uring::types;

use super::buffers::Buffers;
use super::slot_id::SlotId;

/// Chunks a connection may hold unread before its receive is cancelled,
/// so that one client that sends without reading cannot take every buffer.
pub const MAX_CHUNKS: usize = 4;
/// Bytes a connection may queue behind the send in flight before its
/// writes wait. Small: a client that stops reading holds this, the send
/// in flight and the connection's own output budget.
pub const QUEUE_LIMIT: usize = 16 * 1024;

/// A received piece of input: which buffer, which bytes of it, and when
/// the kernel received it. Offsets are u16 (a buffer is at most
/// `buffers::SIZE` bytes): every connection that ever read keeps room for
/// `MAX_CHUNKS` of these, so their size is idle memory.
pub struct Chunk {
    buffer: u16,
    start: u16,
    end: u16,
    at: Option<SystemTime>,
}

const _: () = assert!(super::buffers::SIZE <= u16::MAX as usize);

#[derive(Default)]
pub struct Slot {
    pub generation: u32,
    pub fd: Option<OwnedFd>,
    pub chunks: VecDeque<Chunk>,
    pub recv_armed: bool,
    pub recv_cancelled: bool,
    pub eof: bool,
    pub read_error: Option<i32>,
    pub read_waker: Option<Waker>,
    /// The bytes being sent and how far the kernel has taken them.
    pub sending: Option<(Vec<u8>, usize)>,
    pub queued: Vec<u8>,
    pub write_error: Option<i32>,
    pub write_waker: Option<Waker>,
    /// Operations the kernel still holds; the slot (and the socket) is
    /// freed only when none are left.
    pub in_kernel: u8,
    pub dropped: bool,
    /// Its receive ended for want of buffers; armed again once one is
    /// given back.
    pub starved: bool,
}

/// What a send's completion leaves to do.
pub enum AfterSend {
    /// Send the rest of this buffer, from this offset.
    Rest(Vec<u8>, usize),
    /// Send what was queued meanwhile.
    Queued(Vec<u8>),
    /// Nothing: here is the buffer, emptied, for the next send.
    Done(Vec<u8>),
}

impl Slot {
    /// Hands unread input to `take` where it lies, at most `limit` bytes,
    /// a chunk at a time with the time the kernel received it, giving back
    /// the buffers it empties; returns the bytes handed over.
    pub fn hand_input(
        &mut self,
        buffers: &mut Buffers,
        limit: usize,
        take: &mut dyn FnMut(&[u8], Option<SystemTime>),
    ) -> usize {
        let mut handed = 0;
        while handed < limit {
            let Some(chunk) = self.chunks.front_mut() else {
                break;
            };
            let bytes =
                &buffers.get(chunk.buffer, usize::from(chunk.end))[usize::from(chunk.start)..];
            let n = bytes.len().min(limit - handed);
            take(&bytes[..n], chunk.at);
            handed += n;
            // n <= end - start, so this stays within u16.
            chunk.start += n as u16;
            if chunk.start == chunk.end {
                let buffer = chunk.buffer;
                self.chunks.pop_front();
                buffers.give_back(buffer);
            }
        }
        handed
    }

    /// Takes a receive completion; returns whether the receive should be
    /// cancelled (enough is waiting, or the input ended).
    pub fn on_received(
        &mut self,
        buffers: &mut Buffers,
        template: &libc::msghdr,
        result: i32,
        buffer: Option<u16>,
        more: bool,
    ) -> bool {
        if !more {
            self.recv_armed = false;
            self.in_kernel -= 1;
        }
        match (result, buffer) {
            (n, Some(buffer)) if n >= 0 => match parse(buffers, template, buffer, n as usize) {
                Some(chunk) if !self.dropped => self.chunks.push_back(chunk),
                _ => {
                    buffers.give_back(buffer);
                    self.eof = !self.dropped;
                }
            },
            (n, _) if n == -libc::ENOBUFS => self.starved = true,
            (n, _) if n == -libc::ECANCELED => {}
            (n, _) if n < 0 => self.read_error = Some(-n),
            _ => self.eof = true,
        }
        let enough = self.chunks.len() >= MAX_CHUNKS || self.eof || self.read_error.is_some();
        enough && self.recv_armed && !self.recv_cancelled
    }

    /// Takes a send's completion.
    pub fn on_sent(&mut self, result: i32) -> Option<AfterSend> {
        self.in_kernel -= 1;
        let (mut out, from) = self.sending.take()?;
        let sent = usize::try_from(result).ok();
        match sent {
            None => self.write_error = Some(-result),
            Some(n) if from + n < out.len() => return Some(AfterSend::Rest(out, from + n)),
            Some(_) if !self.queued.is_empty() => {
                out.clear();
                std::mem::swap(&mut out, &mut self.queued);
                return Some(AfterSend::Queued(out));
            }
            Some(_) => {}
        }
        out.clear();
        Some(AfterSend::Done(out))
    }

    /// The slot once freed: only the generation carries over.
    pub fn vacated(&self) -> Slot {
        Slot {
            generation: self.generation,
            ..Slot::default()
        }
    }
}

/// The chunk a receive completion describes; None at end of input.
fn parse(buffers: &Buffers, template: &libc::msghdr, buffer: u16, len: usize) -> Option<Chunk> {
    let bytes = buffers.get(buffer, len);
    let out = types::RecvMsgOut::parse(bytes, template).ok()?;
    let payload = out.payload_data();
    if payload.is_empty() {
        return None;
    }
    let start = payload.as_ptr() as usize - bytes.as_ptr() as usize;
    let control = out.control_data();
    let at = if control.is_empty() {
        None
    } else {
        // SAFETY: an all-zero msghdr is a valid empty one; it only points
        // the control-message walk at bytes the kernel wrote.
        let mut header: libc::msghdr = unsafe { std::mem::zeroed() };
        header.msg_control = control.as_ptr().cast_mut().cast();
        header.msg_controllen = control.len() as _;
        crate::ancillary::read_control(&header).at
    };
    // Both lie within the buffer (`Buffers::get` keeps to SIZE), so
    // within u16.
    Some(Chunk {
        buffer,
        start: start as u16,
        end: (start + payload.len()) as u16,
        at,
    })
}

/// Keeps the waker to wake, cloning only when it changed.
pub fn set_waker(slot: &mut Option<Waker>, cx: &Context<'_>) {
    match slot {
        Some(waker) if waker.will_wake(cx.waker()) => {}
        _ => *slot = Some(cx.waker().clone()),
    }
}

/// Gives back the buffers a dropped connection still held.
pub fn give_back_all(chunks: VecDeque<Chunk>, buffers: &mut Buffers) {
    for chunk in chunks {
        buffers.give_back(chunk.buffer);
    }
}

/// A connection's slot, or the error that ended its writing.
pub fn writable(slots: &mut [Slot], id: SlotId) -> io::Result<&mut Slot> {
    let slot = slots
        .get_mut(id.index as usize)
        .ok_or(io::ErrorKind::NotConnected)?;
    match slot.write_error {
        Some(errno) => Err(io::Error::from_raw_os_error(errno)),
        None => Ok(slot),
    }
}

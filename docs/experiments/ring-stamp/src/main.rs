//! Throwaway measurement: what a tsecho-like stamp server costs when its
//! one thread sleeps in io_uring_enter (no tokio, no epoll): multishot
//! accept, multishot recvmsg with SO_TIMESTAMPNS into provided buffers,
//! lines framed and stamped "[ctime] " from the kernel receive time, one
//! send in flight per connection. Not part of tsecho.
//!
//! What it leaves out, and tsecho pays for: idle, line and write timers,
//! the output budget and line limit (its buffers grow without bound), the
//! drain, counters and the latency histogram, PROXY headers, faults,
//! every other service, IPv6, and any error handling (it unwraps). Its
//! figures are therefore the most a ring-native loop could gain, not what
//! tsecho would measure with one.
use io_uring::{IoUring, cqueue, opcode, types};
use std::alloc::{Layout, alloc_zeroed};
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU16, Ordering};

const COUNT: u16 = 256;
const SIZE: usize = 4096;
const GROUP: u16 = 1;
const ACCEPT: u64 = 1 << 40;
const SEND: u64 = 1 << 41;

#[derive(Default)]
struct Conn {
    partial: Vec<u8>,
    out: Vec<u8>,
    inflight: Vec<u8>,
    sent: usize,
    sending: bool,
    open: bool,
}

struct Bufs {
    ring: *mut types::BufRingEntry,
    mem: *mut u8,
    tail: u16,
}

impl Bufs {
    fn push(&mut self, id: u16) {
        unsafe {
            let e = &mut *self.ring.add(usize::from(self.tail & (COUNT - 1)));
            e.set_addr(self.mem.add(usize::from(id) * SIZE) as u64);
            e.set_len(SIZE as u32);
            e.set_bid(id);
        }
        self.tail = self.tail.wrapping_add(1);
        let t = unsafe { AtomicU16::from_ptr(types::BufRingEntry::tail(self.ring).cast_mut()) };
        t.store(self.tail, Ordering::Release);
    }
}

fn ctime(sec: i64, out: &mut Vec<u8>) {
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    unsafe { libc::localtime_r(&sec, &mut tm) };
    let mut buf = [0u8; 64];
    let n = unsafe {
        libc::strftime(
            buf.as_mut_ptr().cast(),
            64,
            c"%a %b %e %H:%M:%S %Y".as_ptr(),
            &tm,
        )
    };
    out.clear();
    out.push(b'[');
    out.extend_from_slice(&buf[..n]);
    out.extend_from_slice(b"] ");
}

fn main() {
    let port: u16 = std::env::args().nth(1).unwrap().parse().unwrap();
    let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
    let lfd = listener.as_raw_fd();
    enable(lfd, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS);
    let mut ring = IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_cqsize(16384)
        .build(4096)
        .unwrap();
    let ring_mem =
        unsafe { alloc_zeroed(Layout::from_size_align(usize::from(COUNT) * 16, 4096).unwrap()) };
    let mem =
        unsafe { alloc_zeroed(Layout::from_size_align(usize::from(COUNT) * SIZE, 4096).unwrap()) };
    let mut bufs = Bufs {
        ring: ring_mem.cast(),
        mem,
        tail: 0,
    };
    for id in 0..COUNT {
        bufs.push(id);
    }
    unsafe {
        ring.submitter()
            .register_buf_ring_with_flags(ring_mem as u64, COUNT, GROUP, 0)
            .unwrap()
    };
    let mut template: Box<libc::msghdr> = Box::new(unsafe { std::mem::zeroed() });
    template.msg_controllen = 32;
    let mut conns: Vec<Conn> = Vec::new();
    let accept = opcode::AcceptMulti::new(types::Fd(lfd))
        .build()
        .user_data(ACCEPT);
    unsafe { ring.submission().push(&accept).unwrap() };
    let (mut stamp_sec, mut stamp) = (i64::MIN, Vec::new());
    let mut cqes: Vec<(u64, i32, u32)> = Vec::with_capacity(1024);
    loop {
        ring.submit_and_wait(1).unwrap();
        cqes.clear();
        cqes.extend(
            ring.completion()
                .map(|c: cqueue::Entry| (c.user_data(), c.result(), c.flags())),
        );
        for &(ud, res, flags) in &cqes {
            if ud == ACCEPT {
                if res >= 0 {
                    let fd = res;
                    enable(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY);
                    enable(fd, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS);
                    if conns.len() <= fd as usize {
                        conns.resize_with(fd as usize + 1, Conn::default);
                    }
                    conns[fd as usize] = Conn {
                        open: true,
                        ..Conn::default()
                    };
                    arm_receive(&mut ring, fd, &template);
                }
                continue;
            }
            let fd = (ud & 0xffff_ffff) as i32;
            if ud & SEND != 0 {
                let c = &mut conns[fd as usize];
                if res < 0 {
                    c.sending = false;
                    continue;
                }
                c.sent += res as usize;
                if c.sent < c.inflight.len() {
                    let rest = &c.inflight[c.sent..];
                    let e = opcode::Send::new(types::Fd(fd), rest.as_ptr(), rest.len() as u32)
                        .build()
                        .user_data(SEND | fd as u64);
                    unsafe { ring.submission().push(&e).unwrap() };
                    continue;
                }
                c.sending = false;
                if !c.out.is_empty() {
                    start_send(&mut ring, c, fd);
                }
                continue;
            }
            let more = cqueue::more(flags);
            let c = &mut conns[fd as usize];
            match cqueue::buffer_select(flags) {
                Some(bid) if res > 0 => {
                    let bytes = unsafe {
                        std::slice::from_raw_parts(mem.add(usize::from(bid) * SIZE), res as usize)
                    };
                    let msg = types::RecvMsgOut::parse(bytes, &template).unwrap();
                    let data = msg.payload_data();
                    let mut sec = 0;
                    let ctl = msg.control_data();
                    if ctl.len() >= 32 {
                        // cmsghdr (16 bytes) then a timespec.
                        sec = i64::from_ne_bytes(ctl[16..24].try_into().unwrap());
                    }
                    if sec != stamp_sec {
                        stamp_sec = sec;
                        ctime(sec, &mut stamp);
                    }
                    if data.is_empty() {
                        c.open = false;
                    }
                    let mut rest = data;
                    while let Some(nl) = memchr(rest) {
                        c.out.extend_from_slice(&stamp);
                        if !c.partial.is_empty() {
                            c.out.extend_from_slice(&c.partial);
                            c.partial.clear();
                        }
                        c.out.extend_from_slice(&rest[..=nl]);
                        rest = &rest[nl + 1..];
                    }
                    c.partial.extend_from_slice(rest);
                    bufs.push(bid);
                    if !c.sending && !c.out.is_empty() {
                        start_send(&mut ring, c, fd);
                    }
                    if !more && c.open {
                        arm_receive(&mut ring, fd, &template);
                    }
                }
                other => {
                    if let Some(bid) = other {
                        bufs.push(bid);
                    }
                    if res == -libc::ENOBUFS && c.open {
                        arm_receive(&mut ring, fd, &template);
                    } else if !more {
                        c.open = false;
                        unsafe { libc::close(fd) };
                    }
                }
            }
        }
    }
}

fn memchr(s: &[u8]) -> Option<usize> {
    // glibc's, vectorised as tsecho's memchr crate is.
    let at = unsafe { libc::memchr(s.as_ptr().cast(), i32::from(b'\n'), s.len()) };
    (!at.is_null()).then(|| at as usize - s.as_ptr() as usize)
}

fn start_send(ring: &mut IoUring, c: &mut Conn, fd: i32) {
    std::mem::swap(&mut c.out, &mut c.inflight);
    c.out.clear();
    c.sent = 0;
    c.sending = true;
    let e = opcode::Send::new(types::Fd(fd), c.inflight.as_ptr(), c.inflight.len() as u32)
        .build()
        .user_data(SEND | fd as u64);
    unsafe { ring.submission().push(&e).unwrap() };
}

/// Sets an int socket option to 1.
fn enable(fd: i32, level: i32, option: i32) {
    let one: libc::c_int = 1;
    unsafe { libc::setsockopt(fd, level, option, (&one as *const i32).cast(), 4) };
}

/// A multishot recvmsg into the provided buffers, named by its fd.
fn arm_receive(ring: &mut IoUring, fd: i32, template: &libc::msghdr) {
    let e = opcode::RecvMsgMulti::new(types::Fd(fd), template, GROUP)
        .build()
        .user_data(fd as u64);
    unsafe { ring.submission().push(&e).unwrap() };
}

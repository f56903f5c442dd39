//! Datagrams in batches: one `recvmmsg` fetches up to `BATCH` requests and
//! one `sendmmsg` sends their replies, where a plain loop pays two system
//! calls per datagram. On a wildcard socket each request also brings the
//! address it was sent to (IP_PKTINFO), and its reply leaves from that
//! address, so clients of multi-homed hosts and connected UDP clients
//! accept it; with it come the kernel's receive time and the TTL, when
//! the socket was asked for them (`ancillary.rs` reads them). The unsafe
//! code this needs is confined to this module and that one: filling the
//! kernel's message headers and reading them back.

#![allow(unsafe_code)]

use std::io;
use std::mem::{self, MaybeUninit};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;
use std::ptr;

use socket2::SockAddr;

use crate::ancillary::{self, Received};

/// Datagrams per system call.
pub const BATCH: usize = 32;
/// Room for the largest datagram.
const SLOT: usize = 65_536;
/// Room for the control messages of a received datagram, or the one of
/// a reply.
const CONTROL: usize = ancillary::CONTROL_LEN;

/// Whether the socket has a datagram to read within `wait`: a wait to the
/// nanosecond (ppoll), where SO_RCVTIMEO would round to the kernel's tick.
pub fn readable_within(fd: RawFd, wait: std::time::Duration) -> bool {
    let timeout = libc::timespec {
        tv_sec: wait.as_secs() as libc::time_t,
        tv_nsec: wait.subsec_nanos() as libc::c_long,
    };
    let mut poll = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd and a timespec, both alive for the call.
    let ready = unsafe { libc::ppoll(&mut poll, 1, &timeout, std::ptr::null()) };
    ready > 0
}

/// Received datagrams and their senders.
///
/// The kernel's message headers are laid out once, pointing into this
/// batch's own heap buffers (which never move or grow): a receive then
/// only restores the lengths the kernel rewrote in the headers it filled
/// last time. Laying out all 32 per call cost about 1,200 instructions,
/// half of everything a one-datagram ping-pong spent (callgrind).
pub struct RecvBatch {
    bufs: Vec<u8>,
    addrs: Vec<libc::sockaddr_storage>,
    controls: Vec<ancillary::ControlBuf>,
    iovecs: Vec<libc::iovec>,
    headers: Vec<libc::mmsghdr>,
    /// Headers the kernel wrote lengths into on the last receive.
    filled: usize,
    received: [Received; BATCH],
    count: usize,
}

/// Replies waiting to be sent, each with its destination.
pub struct SendBatch {
    bufs: Vec<u8>,
    lens: [usize; BATCH],
    addrs: Vec<SockAddr>,
    sources: [Option<IpAddr>; BATCH],
    controls: Vec<ancillary::ControlBuf>,
    sent: usize,
}

fn zeroed_storage() -> libc::sockaddr_storage {
    // SAFETY: sockaddr_storage is plain old data; all zeroes is a valid
    // (AF_UNSPEC) value.
    unsafe { MaybeUninit::zeroed().assume_init() }
}

const NAME_LEN: libc::socklen_t = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;

impl Default for RecvBatch {
    fn default() -> Self {
        let mut batch = RecvBatch {
            bufs: vec![0; BATCH * SLOT],
            addrs: vec![zeroed_storage(); BATCH],
            controls: vec![[0; CONTROL / 8]; BATCH],
            // SAFETY: iovec and mmsghdr are plain old data; zeroes are valid.
            iovecs: vec![unsafe { mem::zeroed() }; BATCH],
            headers: vec![unsafe { mem::zeroed() }; BATCH],
            filled: BATCH,
            received: [Received::default(); BATCH],
            count: 0,
        };
        for i in 0..BATCH {
            batch.iovecs[i] = libc::iovec {
                iov_base: batch.bufs[i * SLOT..].as_mut_ptr().cast(),
                iov_len: SLOT,
            };
            let header = &mut batch.headers[i].msg_hdr;
            header.msg_name = ptr::from_mut(&mut batch.addrs[i]).cast();
            header.msg_iov = &mut batch.iovecs[i];
            header.msg_iovlen = 1;
            header.msg_control = batch.controls[i].as_mut_ptr().cast();
        }
        batch
    }
}

impl RecvBatch {
    /// On a blocking socket: waits for one datagram, then takes whatever
    /// else is queued, up to `BATCH` datagrams.
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        for header in &mut self.headers[..self.filled] {
            header.msg_hdr.msg_namelen = NAME_LEN;
            header.msg_hdr.msg_controllen = CONTROL;
        }
        // SAFETY: every header points at a buffer of SLOT bytes, a control
        // buffer of CONTROL bytes and an address of NAME_LEN bytes, all in
        // this batch's heap allocations, which live as long as it and are
        // never resized.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.headers.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_WAITFORONE,
                ptr::null_mut(),
            )
        };
        if n < 0 {
            self.count = 0;
            return Err(io::Error::last_os_error());
        }
        self.count = n as usize;
        self.filled = self.count;
        for i in 0..self.count {
            self.received[i] = ancillary::read_control(&self.headers[i].msg_hdr);
        }
        Ok(self.count)
    }

    /// The `i`th datagram received and its sender (None for a sender that
    /// is not an IP address, which a UDP socket does not produce).
    pub fn get(&self, i: usize) -> Option<(&[u8], SocketAddr)> {
        if i >= self.count {
            return None;
        }
        let len = self.headers[i].msg_len as usize;
        let data = &self.bufs[i * SLOT..i * SLOT + len.min(SLOT)];
        Some((data, socket_addr(&self.addrs[i])?))
    }

    /// What the kernel told of the `i`th datagram: the address it was
    /// sent to, when it came, its TTL, as far as the socket was asked to.
    pub fn received(&self, i: usize) -> Received {
        self.received.get(i).copied().unwrap_or_default()
    }
}

/// Writes a packet-info control message choosing `source` as the reply's
/// source address; returns its length.
fn write_source(control: &mut ancillary::ControlBuf, source: IpAddr) -> usize {
    let (level, kind, payload_len) = match source {
        IpAddr::V4(_) => (
            libc::IPPROTO_IP,
            libc::IP_PKTINFO,
            mem::size_of::<libc::in_pktinfo>(),
        ),
        IpAddr::V6(_) => (
            libc::IPPROTO_IPV6,
            libc::IPV6_PKTINFO,
            mem::size_of::<libc::in6_pktinfo>(),
        ),
    };
    // SAFETY: a zeroed msghdr pointing at our CONTROL-byte, 8-aligned
    // buffer lets the CMSG macros lay out one message, whose space
    // (CMSG_SPACE of the payload) fits in CONTROL bytes for both kinds.
    unsafe {
        let mut header: libc::msghdr = mem::zeroed();
        header.msg_control = control.as_mut_ptr().cast();
        header.msg_controllen = CONTROL;
        let cmsg = libc::CMSG_FIRSTHDR(&header);
        (*cmsg).cmsg_level = level;
        (*cmsg).cmsg_type = kind;
        (*cmsg).cmsg_len = libc::CMSG_LEN(payload_len as u32) as usize;
        let data = libc::CMSG_DATA(cmsg);
        match source {
            IpAddr::V4(ip) => {
                let mut info: libc::in_pktinfo = mem::zeroed();
                info.ipi_spec_dst.s_addr = u32::from(ip).to_be();
                ptr::write_unaligned(data.cast(), info);
            }
            IpAddr::V6(ip) => {
                let mut info: libc::in6_pktinfo = mem::zeroed();
                info.ipi6_addr.s6_addr = ip.octets();
                ptr::write_unaligned(data.cast(), info);
            }
        }
        libc::CMSG_SPACE(payload_len as u32) as usize
    }
}

fn socket_addr(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the kernel wrote a sockaddr_in (family AF_INET), and
            // sockaddr_storage is large and aligned enough for it.
            let sin: libc::sockaddr_in = unsafe { ptr::read(ptr::from_ref(storage).cast()) };
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Some(SocketAddrV4::new(ip, u16::from_be(sin.sin_port)).into())
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for sockaddr_in6 and AF_INET6.
            let sin6: libc::sockaddr_in6 = unsafe { ptr::read(ptr::from_ref(storage).cast()) };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            let port = u16::from_be(sin6.sin6_port);
            Some(SocketAddrV6::new(ip, port, sin6.sin6_flowinfo, sin6.sin6_scope_id).into())
        }
        _ => None,
    }
}

impl Default for SendBatch {
    fn default() -> Self {
        SendBatch {
            bufs: vec![0; BATCH * SLOT],
            lens: [0; BATCH],
            addrs: Vec::with_capacity(BATCH),
            sources: [None; BATCH],
            controls: vec![[0; CONTROL / 8]; BATCH],
            sent: 0,
        }
    }
}

impl SendBatch {
    pub fn is_empty(&self) -> bool {
        self.sent == self.addrs.len()
    }

    /// No room for another reply: send before pushing more.
    pub fn is_full(&self) -> bool {
        self.addrs.len() == BATCH
    }

    /// Queues a reply (at most 64 KiB; longer ones are cut by the caller),
    /// sent from `from` when given (the address the request came to).
    pub fn push(&mut self, reply: &[u8], to: SocketAddr, from: Option<IpAddr>) {
        let i = self.addrs.len();
        if i == BATCH {
            return;
        }
        let len = reply.len().min(SLOT);
        self.bufs[i * SLOT..i * SLOT + len].copy_from_slice(&reply[..len]);
        self.lens[i] = len;
        self.sources[i] = from;
        self.addrs.push(SockAddr::from(to));
    }

    /// Lets `f` change each reply queued (STAMP's transmit time, written
    /// just before the send).
    pub fn for_each_mut(&mut self, mut f: impl FnMut(&mut [u8])) {
        for i in self.sent..self.addrs.len() {
            f(&mut self.bufs[i * SLOT..i * SLOT + self.lens[i]]);
        }
    }

    /// Sends what is queued, waiting for room in the socket's buffer if
    /// need be. A reply the kernel refuses for its own reasons is skipped,
    /// so one bad destination cannot hold up the rest.
    pub fn send(&mut self, fd: RawFd) {
        while !self.is_empty() {
            let pending = self.addrs.len() - self.sent;
            // Only the headers sent are laid out: a reply at a time (a
            // ping-pong) does not pay for zeroing all 32.
            let mut iovecs = [const { MaybeUninit::<libc::iovec>::uninit() }; BATCH];
            let mut headers = [const { MaybeUninit::<libc::mmsghdr>::uninit() }; BATCH];
            for k in 0..pending {
                let i = self.sent + k;
                let iov = iovecs[k].write(libc::iovec {
                    iov_base: self.bufs[i * SLOT..].as_mut_ptr().cast(),
                    iov_len: self.lens[i],
                });
                // SAFETY: mmsghdr is plain old data; zeroes are valid.
                let header = &mut headers[k].write(unsafe { mem::zeroed() }).msg_hdr;
                // sendmmsg only reads the address.
                header.msg_name = self.addrs[i].as_ptr().cast_mut().cast();
                header.msg_namelen = self.addrs[i].len();
                header.msg_iov = iov;
                header.msg_iovlen = 1;
                if let Some(source) = self.sources[i] {
                    header.msg_controllen = write_source(&mut self.controls[i], source);
                    header.msg_control = self.controls[i].as_mut_ptr().cast();
                }
            }
            // SAFETY: the first `pending` headers were written above; each
            // points at `lens[i]` initialised bytes and an address of
            // `len()` bytes, alive for the whole call.
            let n = unsafe {
                libc::sendmmsg(fd, headers.as_mut_ptr().cast(), pending as libc::c_uint, 0)
            };
            if n < 0 {
                if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                    self.sent += 1;
                }
            } else {
                self.sent += n as usize;
            }
        }
        self.addrs.clear();
        self.sent = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn a_batch_goes_out_and_comes_back_with_its_senders() {
        let server = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = server.local_addr().unwrap();
        let mut out = SendBatch::default();
        for i in 0..5u8 {
            out.push(&[i; 3], to, None);
        }
        out.send(client.as_raw_fd());
        assert!(out.is_empty());
        let mut batch = RecvBatch::default();
        let mut got = Vec::new();
        while got.len() < 5 {
            match batch.recv(server.as_raw_fd()) {
                Ok(n) => {
                    got.extend((0..n).map(|i| batch.get(i).map(|(d, a)| (d.to_vec(), a)).unwrap()))
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
        }
        let from = client.local_addr().unwrap();
        assert_eq!(
            got,
            (0..5u8).map(|i| (vec![i; 3], from)).collect::<Vec<_>>()
        );
    }

    #[test]
    fn ipv6_senders_are_decoded() {
        let Ok(server) = std::net::UdpSocket::bind("[::1]:0") else {
            eprintln!("SKIPPED: no IPv6 loopback");
            return;
        };
        let client = std::net::UdpSocket::bind("[::1]:0").unwrap();
        client
            .send_to(b"six", server.local_addr().unwrap())
            .unwrap();
        let mut batch = RecvBatch::default();
        loop {
            match batch.recv(server.as_raw_fd()) {
                Ok(_) => break,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(
            batch.get(0),
            Some((&b"six"[..], client.local_addr().unwrap()))
        );
    }
}

//! What the kernel tells with a received message besides its bytes: the
//! address it was sent to (IP_PKTINFO), when the kernel received it
//! (SO_TIMESTAMPNS) and the TTL or hop limit it arrived with
//! (IP_RECVTTL, IPV6_RECVHOPLIMIT). Each is asked for once per socket;
//! then every receive brings it as a control message, read here.
//!
//! A kernel receive time is when the data reached the socket, not when
//! tsecho got round to reading it: a busy or stopped server still stamps
//! the true arrival. TCP and datagram sockets report it; Unix streams do
//! not (the kernel never stamps their data), so they keep the user clock.

#![allow(unsafe_code)]

use std::io;
use std::mem;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::RawFd;
use std::os::unix::net::SocketAddr as UnixAddr;
use std::ptr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Room for every control message asked for here at once: packet info
/// (40 bytes for IPv6), a timestamp (32) and a TTL (24), with margin.
pub const CONTROL_LEN: usize = 128;

/// A control-message buffer, aligned as the kernel's headers need.
pub type ControlBuf = [u64; CONTROL_LEN / 8];

/// What came with one received message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Received {
    /// The local address it was sent to.
    pub destination: Option<IpAddr>,
    /// When the kernel received it.
    pub at: Option<SystemTime>,
    /// The IPv4 TTL or IPv6 hop limit it arrived with.
    pub ttl: Option<u8>,
}

fn set_int(fd: RawFd, level: libc::c_int, name: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: a c_int option value of the right size, alive for the call.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            ptr::from_ref(&value).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Every datagram brings the address it was sent to: IPv4 (also on a
/// dual-stack IPv6 socket) and IPv6.
pub fn enable_destination_info(fd: RawFd, ipv6: bool) -> io::Result<()> {
    set_int(fd, libc::IPPROTO_IP, libc::IP_PKTINFO, 1)?;
    if ipv6 {
        set_int(fd, libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO, 1)?;
    }
    Ok(())
}

/// Whether every receive brings the kernel's receive time. Set on a
/// listening TCP socket, the connections it accepts inherit it. Turned
/// off explicitly too: a socket handed over by another process may have
/// it on.
pub fn report_receive_time(fd: RawFd, on: bool) -> io::Result<()> {
    set_int(fd, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, on.into())
}

/// Every datagram brings the TTL (hop limit) it arrived with.
pub fn enable_ttl_info(fd: RawFd, ipv6: bool) -> io::Result<()> {
    set_int(fd, libc::IPPROTO_IP, libc::IP_RECVTTL, 1)?;
    if ipv6 {
        set_int(fd, libc::IPPROTO_IPV6, libc::IPV6_RECVHOPLIMIT, 1)?;
    }
    Ok(())
}

/// Replies leave with this TTL (hop limit), as RFC 8762 asks of a
/// reflector so the sender can count the hops back.
pub fn set_outgoing_ttl(fd: RawFd, ttl: u8, ipv6: bool) -> io::Result<()> {
    set_int(fd, libc::IPPROTO_IP, libc::IP_TTL, ttl.into())?;
    if ipv6 {
        set_int(fd, libc::IPPROTO_IPV6, libc::IPV6_UNICAST_HOPS, ttl.into())?;
    }
    Ok(())
}

/// Reads the control messages of a received message header.
pub fn read_control(header: &libc::msghdr) -> Received {
    let mut received = Received::default();
    if header.msg_control.is_null() {
        return received;
    }
    // SAFETY: the kernel filled msg_control with msg_controllen bytes of
    // well-formed control messages; the CMSG macros walk exactly those, and
    // each payload is read as the type its level and type announce.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(header);
        while !cmsg.is_null() {
            let data = libc::CMSG_DATA(cmsg);
            match ((*cmsg).cmsg_level, (*cmsg).cmsg_type) {
                (libc::IPPROTO_IP, libc::IP_PKTINFO) => {
                    let info: libc::in_pktinfo = ptr::read_unaligned(data.cast());
                    let ip = Ipv4Addr::from(u32::from_be(info.ipi_addr.s_addr));
                    received.destination = Some(ip.into());
                }
                (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) => {
                    let info: libc::in6_pktinfo = ptr::read_unaligned(data.cast());
                    let ip = Ipv6Addr::from(info.ipi6_addr.s6_addr);
                    received.destination =
                        Some(ip.to_ipv4_mapped().map_or(IpAddr::V6(ip), IpAddr::V4));
                }
                (libc::SOL_SOCKET, libc::SCM_TIMESTAMPNS) => {
                    let ts: libc::timespec = ptr::read_unaligned(data.cast());
                    received.at = system_time(ts);
                }
                (libc::IPPROTO_IP, libc::IP_TTL) | (libc::IPPROTO_IPV6, libc::IPV6_HOPLIMIT) => {
                    let ttl: libc::c_int = ptr::read_unaligned(data.cast());
                    received.ttl = u8::try_from(ttl).ok();
                }
                _ => {}
            }
            cmsg = libc::CMSG_NXTHDR(header, cmsg);
        }
    }
    received
}

fn system_time(ts: libc::timespec) -> Option<SystemTime> {
    let secs = u64::try_from(ts.tv_sec).ok()?;
    let nanos = u32::try_from(ts.tv_nsec).ok()?;
    UNIX_EPOCH.checked_add(Duration::new(secs, nanos))
}

/// One `recvmsg` on a connected socket: the bytes read (0 at EOF) and
/// what the kernel told with them, as far as the socket was asked to (for
/// TCP, the receive time of the last of the segments read).
pub fn recv_with_info(fd: RawFd, buf: &mut [u8]) -> io::Result<(usize, Received)> {
    let (n, received, _) = recv_msg(fd, buf, None)?;
    Ok((n, received))
}

/// One `recvmsg` on a Unix datagram socket: the datagram's length, its
/// sender (None if it did not bind a name to reply to) and, if the socket
/// reports it, when the kernel received it.
pub fn recv_from_unix(
    fd: RawFd,
    buf: &mut [u8],
) -> io::Result<(usize, Option<UnixAddr>, Option<SystemTime>)> {
    // SAFETY: sockaddr_un is plain old data; zeroes are valid.
    let mut name: libc::sockaddr_un = unsafe { mem::zeroed() };
    let (n, received, name_len) = recv_msg(fd, buf, Some(&mut name))?;
    Ok((n, unix_addr(&name, name_len), received.at))
}

/// One `recvmsg` into `buf`, its control messages read back; the sender's
/// name goes into `name` when asked for, and its length is returned.
fn recv_msg(
    fd: RawFd,
    buf: &mut [u8],
    name: Option<&mut libc::sockaddr_un>,
) -> io::Result<(usize, Received, usize)> {
    let mut control: ControlBuf = [0; CONTROL_LEN / 8];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is plain old data; zeroes are valid.
    let mut header: libc::msghdr = unsafe { mem::zeroed() };
    if let Some(name) = name {
        header.msg_name = ptr::from_mut(name).cast();
        header.msg_namelen = mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
    }
    header.msg_iov = &mut iov;
    header.msg_iovlen = 1;
    header.msg_control = control.as_mut_ptr().cast();
    header.msg_controllen = CONTROL_LEN;
    // SAFETY: the header points at `buf`, `control` and (if given) `name`,
    // all alive and of the declared lengths for the whole call.
    let n = unsafe { libc::recvmsg(fd, &mut header, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((
        n as usize,
        read_control(&header),
        header.msg_namelen as usize,
    ))
}

/// A Unix sender's name as the kernel wrote it: `len` bytes of `name`.
fn unix_addr(name: &libc::sockaddr_un, len: usize) -> Option<UnixAddr> {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::ffi::OsStrExt;
    let offset = mem::size_of::<libc::sa_family_t>();
    let path: Vec<u8> = name.sun_path[..len.checked_sub(offset)?.min(name.sun_path.len())]
        .iter()
        .map(|&c| c as u8)
        .collect();
    match path.split_first() {
        None => None,
        Some((0, name)) => UnixAddr::from_abstract_name(name).ok(),
        Some(_) => {
            let end = path.iter().position(|&c| c == 0).unwrap_or(path.len());
            UnixAddr::from_pathname(std::ffi::OsStr::from_bytes(&path[..end])).ok()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsRawFd;

    #[test]
    fn tcp_connections_inherit_the_receive_time_from_their_listener() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        report_receive_time(listener.as_raw_fd(), true).unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        // The first socket to ask turns the kernel's stamping on through a
        // deferred work item: until it has run, data comes unstamped.
        for _ in 0..10_000 {
            let before = SystemTime::now();
            client.write_all(b"hello\n").unwrap();
            let mut buf = [0; 16];
            let (n, at) = recv_with_info(server.as_raw_fd(), &mut buf).unwrap();
            assert_eq!(&buf[..n], b"hello\n");
            if let Some(at) = at.at {
                assert!(at >= before && at <= SystemTime::now(), "{at:?}");
                return;
            }
            std::thread::yield_now();
        }
        panic!("no kernel receive time");
    }

    #[test]
    fn without_asking_there_is_no_receive_time() {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        (&a).write_all(b"x").unwrap();
        let mut buf = [0; 4];
        assert_eq!(
            recv_with_info(b.as_raw_fd(), &mut buf).unwrap(),
            (1, Received::default())
        );
    }

    #[test]
    fn unix_datagrams_bring_their_sender_and_time() {
        use std::os::linux::net::SocketAddrExt;
        use std::os::unix::net::UnixDatagram;
        let server_name = UnixAddr::from_abstract_name(b"tsecho-ancillary-test-s").unwrap();
        let client_name = UnixAddr::from_abstract_name(b"tsecho-ancillary-test-c").unwrap();
        let server = UnixDatagram::bind_addr(&server_name).unwrap();
        report_receive_time(server.as_raw_fd(), true).unwrap();
        let client = UnixDatagram::bind_addr(&client_name).unwrap();
        client.send_to_addr(b"ping", &server_name).unwrap();
        let unnamed = UnixDatagram::unbound().unwrap();
        unnamed.send_to_addr(b"anon", &server_name).unwrap();
        let mut buf = [0; 16];
        let (n, from, at) = recv_from_unix(server.as_raw_fd(), &mut buf).unwrap();
        assert_eq!(&buf[..n], b"ping");
        assert_eq!(
            from.and_then(|a| a.as_abstract_name().map(<[u8]>::to_vec)),
            Some(b"tsecho-ancillary-test-c".to_vec())
        );
        // Stamped once the kernel's stamping is on (see above).
        assert!(at.is_none_or(|at| at <= SystemTime::now()));
        let (n, from, _) = recv_from_unix(server.as_raw_fd(), &mut buf).unwrap();
        assert_eq!((&buf[..n], from.is_none()), (&b"anon"[..], true));
    }
}

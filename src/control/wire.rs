//! The control socket's messages on the wire: one JSON object per
//! SOCK_SEQPACKET message, with the descriptors it describes attached as
//! SCM_RIGHTS.

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};

use super::Message;
use crate::endpoint::Endpoint;
use crate::error::Error;

/// Largest message: a listener's URL and a few words.
const MESSAGE_LEN: usize = 16 * 1024;
/// Descriptors in one message: a listener's copies, one per thread.
pub(super) const MAX_FDS: usize = 250;

pub(super) fn parse(text: &[u8]) -> Option<Message> {
    serde_json::from_slice(text).ok()
}

pub(super) fn parse_endpoint(text: &str) -> io::Result<Endpoint> {
    text.parse()
        .map_err(|e: Error| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))
}

pub(super) fn protocol_error(text: &[u8]) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "unexpected message from the server: {:?}",
            String::from_utf8_lossy(&text[..text.len().min(200)])
        ),
    )
}

pub(super) fn send_message(fd: RawFd, text: &[u8], fds: &[RawFd]) -> io::Result<()> {
    let iov = [IoSlice::new(text)];
    let rights = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &rights };
    sendmsg::<()>(fd, &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None)?;
    Ok(())
}

/// One message and the descriptors that came with it; an empty message is
/// the peer closing.
#[allow(unsafe_code)]
pub(super) fn receive_message(fd: RawFd) -> io::Result<(Vec<u8>, Vec<OwnedFd>)> {
    let mut buf = vec![0; MESSAGE_LEN];
    let mut space = nix::cmsg_space!([RawFd; MAX_FDS]);
    let mut iov = [IoSliceMut::new(&mut buf)];
    let msg = recvmsg::<()>(fd, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)?;
    let mut fds = Vec::new();
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(received) = cmsg {
            // SAFETY: the kernel just installed these descriptors in this
            // process for us; nothing else owns them.
            fds.extend(
                received
                    .into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    if msg.flags.contains(MsgFlags::MSG_TRUNC) || msg.flags.contains(MsgFlags::MSG_CTRUNC) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "a control message was cut short",
        ));
    }
    let len = msg.bytes;
    buf.truncate(len);
    Ok((buf, fds))
}

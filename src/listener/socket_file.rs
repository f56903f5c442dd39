//! Unix socket files: a stale one left by a server that is gone is
//! replaced, a live server's never is, and the file gets the mode, owner
//! and group its URL asks for without ever being more open than that.

use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use nix::sys::stat::{Mode, fchmod};
use nix::unistd::{Gid, Group, Uid, User, chown};
use socket2::{Domain, SockAddr, Socket, Type};

use crate::endpoint::SocketFile;

/// Binds a Unix socket of `kind` (stream, datagram, seqpacket) to `path`
/// with `file`'s permissions; a connection-oriented one is left listening
/// with `backlog`. With no permissions asked for, the umask decides, as
/// for any file.
///
/// The socket's own inode is given mode 0 before binding (Linux creates
/// the file from it, less the umask), so until the owner, group and mode
/// are set nobody but root can connect: never a moment when the file is
/// open to more users than it will be.
pub fn bind_path(path: &Path, kind: Type, file: &SocketFile, backlog: i32) -> io::Result<Socket> {
    clear_stale(path, kind)?;
    let ids = resolve(file)?;
    let socket = Socket::new(Domain::UNIX, kind, None)?;
    if !file.is_default() {
        fchmod(socket.as_fd(), Mode::empty())?;
    }
    socket.bind(&SockAddr::unix(path)?)?;
    let ready = permit(path, file, ids).and_then(|()| {
        if kind != Type::DGRAM {
            socket.listen(backlog)?;
        }
        socket.set_nonblocking(true)
    });
    match ready {
        Ok(()) => Ok(socket),
        Err(e) => {
            let _ = std::fs::remove_file(path);
            Err(e)
        }
    }
}

/// Gives an existing socket file the mode, owner and group asked for (a
/// reload that changed only them).
pub fn set_permissions(path: &Path, file: &SocketFile) -> io::Result<()> {
    let ids = resolve(file)?;
    permit(path, file, ids)
}

/// Whether the owner and group a URL names exist (`check-config`).
pub fn check(file: &SocketFile) -> io::Result<()> {
    resolve(file).map(drop)
}

/// The owner and group as ids, looked up before anything is bound so that
/// an unknown name leaves no file behind.
fn resolve(file: &SocketFile) -> io::Result<(Option<Uid>, Option<Gid>)> {
    let uid = file.owner.as_deref().map(user_id).transpose()?;
    let gid = file.group.as_deref().map(group_id).transpose()?;
    Ok((uid, gid))
}

/// A setting that names nobody: a usage error (exit 64), with its own
/// message (NotFound would read "no such file or directory").
fn nobody(kind: &str, name: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("no {kind} named {name:?}"),
    )
}

fn user_id(name: &str) -> io::Result<Uid> {
    if let Ok(id) = name.parse() {
        return Ok(Uid::from_raw(id));
    }
    let user = User::from_name(name)?.ok_or_else(|| nobody("user", name))?;
    Ok(user.uid)
}

fn group_id(name: &str) -> io::Result<Gid> {
    if let Ok(id) = name.parse() {
        return Ok(Gid::from_raw(id));
    }
    let group = Group::from_name(name)?.ok_or_else(|| nobody("group", name))?;
    Ok(group.gid)
}

/// Owner and group first, then the mode: the mode only ever opens the file
/// to the final owner and group.
fn permit(
    path: &Path,
    file: &SocketFile,
    (uid, gid): (Option<Uid>, Option<Gid>),
) -> io::Result<()> {
    if file.is_default() {
        return Ok(());
    }
    if uid.is_some() || gid.is_some() {
        chown(path, uid, gid).map_err(|e| {
            io::Error::new(
                io::Error::from(e).kind(),
                format!("cannot give the socket file to {}: {e}", owner_text(file)),
            )
        })?;
    }
    let mode = file.mode.unwrap_or_else(|| 0o666 & !current_umask());
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

fn owner_text(file: &SocketFile) -> String {
    match (&file.owner, &file.group) {
        (Some(owner), Some(group)) => format!("{owner}:{group}"),
        (Some(owner), None) => owner.clone(),
        (None, Some(group)) => format!(":{group}"),
        (None, None) => String::new(),
    }
}

/// The umask, read from /proc (setting it to read it would race with
/// other threads creating files).
fn current_umask() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        .unwrap_or(0o022)
}

/// A socket file left by a server that is gone is removed; one with a live
/// server behind it, or a file that is not a socket, is left alone and
/// binding fails with "address in use".
fn clear_stale(path: &Path, kind: Type) -> io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::from(io::ErrorKind::AddrInUse));
    }
    // A socket of the same kind: connecting to another kind is refused.
    let probe =
        Socket::new(Domain::UNIX, kind, None).and_then(|s| s.connect(&SockAddr::unix(path)?));
    match probe {
        Ok(()) => Err(io::Error::from(io::ErrorKind::AddrInUse)),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => std::fs::remove_file(path),
        // Mode 0 on a live server's file: root's probe gets through, anyone
        // else's is refused permission; either way it is not stale.
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            Err(io::Error::from(io::ErrorKind::AddrInUse))
        }
        Err(e) => Err(e),
    }
}

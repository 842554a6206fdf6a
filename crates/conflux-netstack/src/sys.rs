//! The crate's only unsafe code: the TUNSETIFF ioctl that attaches a
//! `/dev/net/tun` descriptor to a TAP or TUN interface.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// `TUNSETIFF` (`_IOW('T', 202, int)`).
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const IFF_TUN: libc::c_short = 0x0001;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;

/// `struct ifreq` with the flags member of its union (40 bytes on Linux).
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// Attaches `file` (an open `/dev/net/tun`) to interface `name`, created if
/// missing: a TAP (`tap = true`, Ethernet frames) or a TUN (IP packets),
/// without packet information headers.
pub(crate) fn tun_set_iff(file: &File, name: &str, tap: bool) -> io::Result<()> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("bad interface name {name:?}")));
    }
    let mut req =
        IfReq { name: [0; libc::IFNAMSIZ], flags: IFF_NO_PI | if tap { IFF_TAP } else { IFF_TUN }, _pad: [0; 22] };
    req.name[..bytes.len()].copy_from_slice(bytes);
    // SAFETY: `file` is an open descriptor for the duration of the call, and
    // `req` is a properly initialised, NUL-terminated `struct ifreq` that
    // outlives the call; TUNSETIFF reads and writes only within it.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF as _, &mut req as *mut IfReq) };
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// Registers `file` with tokio's reactor for readiness.
pub(crate) fn async_fd(file: File) -> io::Result<tokio::io::unix::AsyncFd<File>> {
    // SAFETY: the `File` owns its descriptor and moves into the `AsyncFd`,
    // so the descriptor stays open and unchanged until the `AsyncFd` drops;
    // `File::as_raw_fd` always returns that same descriptor.
    unsafe { tokio::io::unix::AsyncFd::register(file) }.map_err(|e| e.into_parts().1)
}

//! The crate's only unsafe code: the TUNSETIFF ioctl that attaches a
//! `/dev/net/tun` descriptor to a TAP or TUN interface, and the ioctls that
//! turn on its virtio net headers and offloads.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// `TUNSETIFF` (`_IOW('T', 202, int)`).
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const IFF_TUN: libc::c_short = 0x0001;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;

/// `struct ifreq` with the flags member of its union (40 bytes on Linux).
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// Attaches `file` (an open `/dev/net/tun`) to interface `name`, created if
/// missing: a TAP (`tap = true`, Ethernet frames) or a TUN (IP packets),
/// without packet information headers; with a virtio net header before
/// every frame if `vnet`.
pub(crate) fn tun_set_iff(file: &File, name: &str, tap: bool, vnet: bool) -> io::Result<()> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("bad interface name {name:?}")));
    }
    let flags = IFF_NO_PI | if tap { IFF_TAP } else { IFF_TUN } | if vnet { IFF_VNET_HDR } else { 0 };
    let mut req = IfReq { name: [0; libc::IFNAMSIZ], flags, _pad: [0; 22] };
    req.name[..bytes.len()].copy_from_slice(bytes);
    // SAFETY: `file` is an open descriptor for the duration of the call, and
    // `req` is a properly initialised, NUL-terminated `struct ifreq` that
    // outlives the call; TUNSETIFF reads and writes only within it.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF as _, &mut req as *mut IfReq) };
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// On a descriptor attached with `vnet`: sets the virtio net header length
/// to `hdr_len` bytes (`TUNSETVNETHDRSZ`), its byte order to little-endian
/// (`TUNSETVNETLE`), and the offloads the descriptor's reader handles
/// (`TUNSETOFFLOAD`: partial checksums and TCP segmentation for IPv4 and
/// IPv6, with ECN). The kernel then hands us GSO frames and partial
/// checksums, and takes them from us.
pub(crate) fn tun_set_offloads(file: &File, hdr_len: usize) -> io::Result<()> {
    let fd = file.as_raw_fd();
    let mut len = libc::c_int::try_from(hdr_len).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `fd` is open for the call; TUNSETVNETHDRSZ reads one `c_int`
    // through the pointer, which points at `len`, alive across the call.
    let rc = unsafe { libc::ioctl(fd, libc::TUNSETVNETHDRSZ as _, &mut len as *mut libc::c_int) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut le: libc::c_int = 1;
    // SAFETY: as above: TUNSETVNETLE reads one `c_int` from `le`.
    let rc = unsafe { libc::ioctl(fd, libc::TUNSETVNETLE as _, &mut le as *mut libc::c_int) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        // Kernels without it use the host's order, little-endian here.
        if !(cfg!(target_endian = "little") && e.raw_os_error() == Some(libc::EINVAL)) {
            return Err(e);
        }
    }
    let offloads = libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6 | libc::TUN_F_TSO_ECN;
    // SAFETY: `fd` is open for the call; TUNSETOFFLOAD takes its argument by
    // value (an unsigned long of flags) and dereferences nothing.
    let rc = unsafe { libc::ioctl(fd, libc::TUNSETOFFLOAD as _, libc::c_ulong::from(offloads)) };
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// Registers `file` with tokio's reactor for readiness.
pub(crate) fn async_fd(file: File) -> io::Result<tokio::io::unix::AsyncFd<File>> {
    // SAFETY: the `File` owns its descriptor and moves into the `AsyncFd`,
    // so the descriptor stays open and unchanged until the `AsyncFd` drops;
    // `File::as_raw_fd` always returns that same descriptor.
    unsafe { tokio::io::unix::AsyncFd::register(file) }.map_err(|e| e.into_parts().1)
}

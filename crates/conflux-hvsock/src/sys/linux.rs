//! Linux system calls that socket2 does not wrap: for AF_VSOCK, and the
//! scattering read of the framed flow.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::unix::AsyncFd;

use crate::family::SCATTER_MAX_HEADS;

/// `SO_VM_SOCKETS_CONNECT_TIMEOUT` (the `_OLD` value, a native `timeval`).
const SO_VM_SOCKETS_CONNECT_TIMEOUT: libc::c_int = 6;
/// The socket level of AF_VSOCK options: the family number.
const SOL_VSOCK: libc::c_int = libc::AF_VSOCK;
/// `IOCTL_VM_SOCKETS_GET_LOCAL_CID`.
const IOCTL_VM_SOCKETS_GET_LOCAL_CID: libc::c_ulong = 0x7b9;

/// `recv` into the spare capacity of `buf` (at least one byte of it), appending.
/// `EINTR` is retried.
pub(crate) fn recv_buf(sock: &socket2::Socket, buf: &mut BytesMut) -> io::Result<usize> {
    if buf.capacity() == buf.len() {
        buf.reserve(64 * 1024);
    }
    loop {
        let spare = buf.spare_capacity_mut();
        match sock.recv(spare) {
            Ok(n) => {
                debug_assert!(n <= buf.capacity() - buf.len());
                let n = n.min(buf.capacity() - buf.len());
                // SAFETY: `recv` initialised the first `n` bytes of the spare
                // capacity (it never reports more than it was given, and `n` is
                // clamped to the spare length), so they may join the buffer.
                unsafe { buf.set_len(buf.len() + n) };
                return Ok(n);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// One `readv` of `fd` that scatters what arrives: `segs[0]` bytes into the
/// spare capacity of `buf`, then 4 bytes into `heads[0]`, then `segs[1]` bytes
/// into the spare capacity right after the first piece, 4 into `heads[1]`, and
/// so on (`segs.len() == heads.len() + 1`, an empty piece is allowed). The
/// bytes that landed in the spare capacity join `buf`; returns every byte
/// received, header slots included (0: Eof). `EINTR` is retried.
///
/// # Panics
///
/// When `segs` do not fit the spare capacity of `buf`, or the lengths of
/// `segs` and `heads` do not match or exceed [`SCATTER_MAX_HEADS`] (caller bugs).
pub(crate) fn recv_scatter(
    fd: BorrowedFd<'_>,
    buf: &mut BytesMut,
    segs: &[usize],
    heads: &mut [[u8; 4]],
) -> io::Result<usize> {
    assert!(segs.len() == heads.len() + 1 && heads.len() <= SCATTER_MAX_HEADS, "scatter layout");
    let room = buf.capacity() - buf.len();
    assert!(segs.iter().sum::<usize>() <= room, "scatter payload beyond the spare capacity");
    let base = buf.spare_capacity_mut().as_mut_ptr().cast::<u8>();
    let mut iov = [libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; 2 * SCATTER_MAX_HEADS + 1];
    let (mut k, mut at) = (0, 0);
    for (i, &len) in segs.iter().enumerate() {
        if i > 0 {
            iov[k] = libc::iovec { iov_base: heads[i - 1].as_mut_ptr().cast(), iov_len: 4 };
            k += 1;
        }
        if len > 0 {
            iov[k] = libc::iovec { iov_base: base.wrapping_add(at).cast(), iov_len: len };
            k += 1;
            at += len;
        }
    }
    let n = loop {
        // SAFETY: the first `k` iovecs point at writable memory of their length,
        // alive across the call: pieces end to end within the spare capacity of
        // `buf` (checked above) or whole slots of `heads`; the fd is borrowed.
        let n = unsafe { libc::readv(fd.as_raw_fd(), iov.as_ptr(), k as libc::c_int) };
        if n >= 0 {
            break n as usize;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    };
    // The payload bytes received: readv fills the iovecs in order.
    let (mut left, mut payload) = (n, 0);
    for (i, &len) in segs.iter().enumerate() {
        if i > 0 {
            left -= left.min(4);
        }
        let got = left.min(len);
        payload += got;
        left -= got;
    }
    debug_assert_eq!(left, 0, "readv reported more than it was given");
    // SAFETY: readv wrote the iovecs in order, so the pieces of the spare
    // capacity it reached are written from their start: the first `payload`
    // bytes of the spare capacity are initialised (`payload <= room`).
    unsafe { buf.set_len(buf.len() + payload) };
    Ok(n)
}

/// Sets the kernel's vsock connect timeout of `sock`.
pub(crate) fn set_connect_timeout(sock: &socket2::Socket, timeout: Duration) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: timeout.as_secs().min(libc::time_t::MAX as u64) as libc::time_t,
        tv_usec: timeout.subsec_micros() as libc::suseconds_t,
    };
    // SAFETY: `tv` is a valid `timeval` living across the call, and the length
    // passed is its size; the descriptor is borrowed from a live socket.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            SOL_VSOCK,
            SO_VM_SOCKETS_CONNECT_TIMEOUT,
            (&raw const tv).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// This machine's CID, from the `IOCTL_VM_SOCKETS_GET_LOCAL_CID` ioctl on `/dev/vsock`.
pub(crate) fn local_cid() -> io::Result<u32> {
    let dev = std::fs::File::open("/dev/vsock")?;
    let mut cid: u32 = 0;
    loop {
        // SAFETY: the ioctl writes one `u32` through the pointer, which points
        // at `cid`, alive for the call; the descriptor is the open `dev`.
        let rc = unsafe { libc::ioctl(dev.as_raw_fd(), IOCTL_VM_SOCKETS_GET_LOCAL_CID as _, &raw mut cid) };
        if rc == 0 {
            return Ok(cid);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Registers `sock` with the tokio reactor (for readiness of reads and writes).
pub(crate) fn register(sock: socket2::Socket) -> io::Result<AsyncFd<socket2::Socket>> {
    // The socket owns its descriptor, closed only when the socket is dropped;
    // this crate never swaps it out through `AsyncFd::get_mut`.
    // SAFETY: so the descriptor is valid, open and the same for the AsyncFd's life.
    unsafe { AsyncFd::register(sock) }.map_err(io::Error::from)
}

/// `recv(MSG_PEEK | MSG_DONTWAIT)`: copies what is queued on `fd` into `buf`
/// without consuming it. `EINTR` is retried.
pub(crate) fn peek(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        // SAFETY: `buf` is a valid, writable buffer of `buf.len()` bytes for the
        // duration of the call, and the descriptor is borrowed, so open.
        let n = unsafe {
            libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), libc::MSG_PEEK | libc::MSG_DONTWAIT)
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

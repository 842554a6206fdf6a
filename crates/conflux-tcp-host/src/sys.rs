//! The crate's one unsafe module: kernel queries socket2 does not offer
//! (`SIOCOUTQ`, `TCP_INFO`'s state).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// `TCP_CLOSE` of the kernel's TCP state enum (`tcpi_state`).
pub(crate) const TCP_CLOSE: u8 = 7;

/// Bytes written to the socket that the peer has not acknowledged yet (sent or
/// not): the `SIOCOUTQ` ioctl (`TIOCOUTQ` by its other name).
pub(crate) fn unacked(fd: BorrowedFd<'_>) -> io::Result<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: `fd` is an open descriptor for the borrow's lifetime, and
    // SIOCOUTQ writes exactly one `c_int` through the pointer, which points to
    // `n`, alive and exclusively borrowed for the call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCOUTQ, &mut n as *mut libc::c_int) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(usize::try_from(n).unwrap_or(0))
}

/// The kernel's TCP state of the socket (`tcpi_state` of `TCP_INFO`).
pub(crate) fn tcp_state(fd: BorrowedFd<'_>) -> io::Result<u8> {
    let mut info = std::mem::MaybeUninit::<libc::tcp_info>::zeroed();
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `fd` is an open descriptor for the borrow's lifetime; the kernel
    // writes at most `len` bytes (the size of `tcp_info`) into `info`, which is
    // alive and exclusively borrowed for the call, and updates `len`.
    let rc = unsafe {
        libc::getsockopt(fd.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_INFO, info.as_mut_ptr().cast(), &mut len)
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the buffer was zero-initialised and `tcp_info` is plain integers,
    // so every bit pattern (including a partial write by the kernel) is valid.
    let info = unsafe { info.assume_init() };
    Ok(info.tcpi_state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn queries_a_fresh_connection() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        assert_eq!(unacked(client.as_fd()).unwrap(), 0);
        assert_ne!(tcp_state(client.as_fd()).unwrap(), TCP_CLOSE);
    }

    #[test]
    fn errors_on_a_non_socket() {
        let file = std::fs::File::open("/proc/self/status").unwrap();
        assert!(unacked(file.as_fd()).is_err());
        assert!(tcp_state(file.as_fd()).is_err());
    }
}

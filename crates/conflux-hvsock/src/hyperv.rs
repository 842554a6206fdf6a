//! AF_HYPERV sockets on Windows: a thin, blocking layer over the address code.
//!
//! Compiled only on Windows, and this workspace's toolchain cannot type-check
//! it: it stays as small as possible and hands out standard `OwnedSocket`s.

use std::io;
use std::os::windows::io::OwnedSocket;
use std::time::Duration;

use crate::addr::HvsockAddr;
use crate::sys::windows as sys;

/// Connects a new AF_HYPERV stream socket to `addr` (blocking), bounded by
/// `timeout` through `HVSOCKET_CONNECT_TIMEOUT` where given.
pub fn hyperv_connect(addr: &HvsockAddr, timeout: Option<Duration>) -> io::Result<OwnedSocket> {
    let sock = sys::hyperv_socket()?;
    if let Some(t) = timeout {
        sys::set_connect_timeout(&sock, t)?;
    }
    sock.connect(&sys::sockaddr(addr))?;
    Ok(OwnedSocket::from(sock))
}

/// Creates an AF_HYPERV stream socket bound to `addr`, listening with `backlog`.
pub fn hyperv_listen(addr: &HvsockAddr, backlog: u32) -> io::Result<OwnedSocket> {
    let sock = sys::hyperv_socket()?;
    sock.bind(&sys::sockaddr(addr))?;
    sock.listen(backlog.min(i32::MAX as u32) as i32)?;
    Ok(OwnedSocket::from(sock))
}

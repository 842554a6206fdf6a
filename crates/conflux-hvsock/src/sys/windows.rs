//! AF_HYPERV on Windows: a thin layer over the address code in `addr.rs`.
//!
//! Compiled only on Windows; this workspace's toolchain cannot type-check it,
//! so it stays as small as possible: create a socket, make a `SockAddr`.

use std::io;

use crate::addr::HvsockAddr;

/// A new AF_HYPERV stream socket (`HV_PROTOCOL_RAW`).
pub(crate) fn hyperv_socket() -> io::Result<socket2::Socket> {
    socket2::Socket::new(
        socket2::Domain::from(HvsockAddr::AF_HYPERV as i32),
        socket2::Type::STREAM,
        Some(socket2::Protocol::from(HvsockAddr::HV_PROTOCOL_RAW)),
    )
}

/// `addr` as a socket address.
pub(crate) fn sockaddr(addr: &HvsockAddr) -> socket2::SockAddr {
    let raw = addr.to_sockaddr_hv();
    let mut storage = socket2::SockAddrStorage::zeroed();
    // SAFETY: the storage is a `SOCKADDR_STORAGE` (128 bytes), larger than the
    // 36-byte `SOCKADDR_HV` copied into its start, and the length given to
    // `SockAddr::new` is exactly those 36 bytes.
    unsafe {
        let bytes = storage.view_as::<[u8; 36]>();
        *bytes = raw;
        socket2::SockAddr::new(storage, raw.len() as _)
    }
}

/// Sets `HVSOCKET_CONNECT_TIMEOUT` (level `HV_PROTOCOL_RAW`, a u32 of milliseconds).
pub(crate) fn set_connect_timeout(sock: &socket2::Socket, timeout: std::time::Duration) -> io::Result<()> {
    use std::os::windows::io::AsRawSocket;
    let ms: u32 = timeout.as_millis().min(u32::MAX as u128) as u32;
    // SAFETY: `ms` lives across the call and its exact size is passed; the
    // socket is borrowed from a live `socket2::Socket`.
    let rc = unsafe {
        windows_sys_setsockopt(
            sock.as_raw_socket() as usize,
            HvsockAddr::HV_PROTOCOL_RAW,
            HvsockAddr::HVSOCKET_CONNECT_TIMEOUT,
            (&raw const ms).cast(),
            std::mem::size_of::<u32>() as i32,
        )
    };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

#[link(name = "ws2_32")]
unsafe extern "system" {
    #[link_name = "setsockopt"]
    fn windows_sys_setsockopt(s: usize, level: i32, optname: i32, optval: *const u8, optlen: i32) -> i32;
}

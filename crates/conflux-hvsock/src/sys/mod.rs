//! The only place with `unsafe`: the system calls socket2 does not offer.
//!
//! Linux: reading into a buffer's spare capacity (also scattered around the
//! framing's headers), the vsock connect-timeout option and the local-CID
//! ioctl on `/dev/vsock`. Windows: building a `SOCKADDR_HV` (compiled only on
//! Windows).

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
pub(crate) use linux::{local_cid, peek, recv_buf, recv_scatter, register, set_connect_timeout};

#[cfg(windows)]
pub(crate) mod windows;

//! Linux TAP (Ethernet) and TUN (IP) devices, with readiness from tokio.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::task::{Context, Poll};

use tokio::io::unix::AsyncFd;

use crate::device::{DeviceCaps, FrameBuf, FrameDevice, FramePool, Medium};

/// A `/dev/net/tun` descriptor attached to an interface.
struct TunFd {
    fd: AsyncFd<File>,
    name: String,
    caps: DeviceCaps,
    pool: FramePool,
}

impl TunFd {
    fn open(name: &str, tap: bool, mtu: usize) -> io::Result<TunFd> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")?;
        crate::sys::tun_set_iff(&file, name, tap)?;
        let medium = if tap { Medium::Ethernet } else { Medium::Ip };
        Ok(TunFd {
            fd: crate::sys::async_fd(file)?,
            name: name.to_owned(),
            caps: DeviceCaps::new(medium, mtu),
            pool: FramePool::new(),
        })
    }

    /// Reads frames until the device has none or `max` were read.
    fn poll_recv(&mut self, cx: &mut Context<'_>, frames: &mut Vec<FrameBuf>, max: usize) -> Poll<io::Result<()>> {
        let from = frames.len();
        let mut buf = self.pool.take(self.caps.mtu + 14 + 4);
        while frames.len() - from < max.max(1) {
            let mut guard = match self.fd.poll_read_ready(cx) {
                Poll::Ready(Ok(guard)) => guard,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => break,
            };
            match guard.try_io(|fd| fd.get_ref().read(&mut buf)) {
                Ok(Ok(n)) => {
                    buf.set_len(n);
                    frames.push(std::mem::replace(&mut buf, self.pool.take(self.caps.mtu + 14 + 4)));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
        if frames.len() > from { Poll::Ready(Ok(())) } else { Poll::Pending }
    }

    fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        match self.fd.get_ref().write(frame) {
            Ok(_) => Ok(()),
            // A full device queue drops the frame, as a busy NIC would.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            // The interface is down or gone: the frame is lost; TCP retransmits.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EIO) | Some(libc::ENXIO)) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// A Linux TAP device (Ethernet frames), created or attached by name.
///
/// Needs `CAP_NET_ADMIN`. The interface starts down: bring it up (and move
/// it to a namespace) with `ip link`. Checksums are computed and checked by
/// the stack (no virtio net headers).
pub struct TapDevice(TunFd);

impl std::fmt::Debug for TapDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TapDevice").field("name", &self.0.name).finish()
    }
}

impl TapDevice {
    /// Opens TAP interface `name` (at most 15 bytes) with an MTU of `mtu`
    /// bytes of IP packet. Must be called within a tokio runtime.
    pub fn open(name: &str, mtu: usize) -> io::Result<TapDevice> {
        TunFd::open(name, true, mtu).map(TapDevice)
    }

    /// The interface's name.
    pub fn name(&self) -> &str {
        &self.0.name
    }
}

impl FrameDevice for TapDevice {
    fn caps(&self) -> DeviceCaps {
        self.0.caps
    }
    fn set_pool(&mut self, pool: FramePool) {
        self.0.pool = pool;
    }
    fn poll_recv(&mut self, cx: &mut Context<'_>, frames: &mut Vec<FrameBuf>, max: usize) -> Poll<io::Result<()>> {
        self.0.poll_recv(cx, frames, max)
    }
    fn poll_send_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn send(&mut self, frame: FrameBuf) -> io::Result<()> {
        self.0.send(&frame)
    }
}

/// A Linux TUN device (bare IP packets), created or attached by name.
///
/// As [`TapDevice`], with [`Medium::Ip`]: no ARP or NDP.
pub struct TunDevice(TunFd);

impl std::fmt::Debug for TunDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TunDevice").field("name", &self.0.name).finish()
    }
}

impl TunDevice {
    /// Opens TUN interface `name` (at most 15 bytes) with an MTU of `mtu`.
    /// Must be called within a tokio runtime.
    pub fn open(name: &str, mtu: usize) -> io::Result<TunDevice> {
        TunFd::open(name, false, mtu).map(TunDevice)
    }

    /// The interface's name.
    pub fn name(&self) -> &str {
        &self.0.name
    }
}

impl FrameDevice for TunDevice {
    fn caps(&self) -> DeviceCaps {
        self.0.caps
    }
    fn set_pool(&mut self, pool: FramePool) {
        self.0.pool = pool;
    }
    fn poll_recv(&mut self, cx: &mut Context<'_>, frames: &mut Vec<FrameBuf>, max: usize) -> Poll<io::Result<()>> {
        self.0.poll_recv(cx, frames, max)
    }
    fn poll_send_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn send(&mut self, frame: FrameBuf) -> io::Result<()> {
        self.0.send(&frame)
    }
}

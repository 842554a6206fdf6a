//! [`DgramDevice`]: a [`FrameDevice`] over an AF_UNIX datagram socket, one
//! Ethernet frame per datagram (vfkit, macOS Virtualization.framework).

use std::collections::VecDeque;
use std::io;
use std::task::{Context, Poll};

use conflux_netstack::{DeviceCaps, FrameBuf, FrameDevice, FramePool, Medium};
use tokio::io::ReadBuf;
use tokio::net::UnixDatagram;

use crate::qemu::{ETHERNET_HEADER, max_frame_len};

/// A frame device over a connected AF_UNIX `SOCK_DGRAM` socket: each
/// datagram is one Ethernet frame, with no header (vfkit's and
/// gvisor-tap-vsock's `unixgram` carrier).
///
/// The socket must be connected to the peer (`UnixDatagram::connect`, or
/// one end of `UnixDatagram::pair`). A datagram shorter than an Ethernet
/// header (vfkit's 4-byte `VFKT` greeting, an empty one) or longer than the
/// MTU plus the Ethernet header is dropped, as a wire drops a runt or a
/// giant: datagrams keep their boundaries, so one bad datagram does not
/// desynchronise the next. Receive takes every datagram already queued
/// (up to the driver's batch) into frames of the driver's pool, one copy
/// (the kernel's) each. A peer that went away makes sends fail with
/// `ConnectionRefused` (or `NotConnected`), which ends the device.
///
/// ```
/// use conflux_netstack::{NetStack, StackConfig};
/// use conflux_usernet::DgramDevice;
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let (ours, _vm) = tokio::net::UnixDatagram::pair()?;
/// let stack = NetStack::new(StackConfig::new().ipv4("10.0.2.2".parse().unwrap(), 24), DgramDevice::new(ours, 1500));
/// assert_eq!(stack.addrs().len(), 1);
/// # Ok::<(), std::io::Error>(())
/// # }).unwrap();
/// ```
#[derive(Debug)]
pub struct DgramDevice {
    sock: UnixDatagram,
    caps: DeviceCaps,
    max_frame: usize,
    pool: FramePool,
    dropped: u64,
}

impl DgramDevice {
    /// A device over the connected datagram socket `sock`, carrying frames
    /// of up to `mtu` bytes of IP packet (plus the Ethernet header).
    pub fn new(sock: UnixDatagram, mtu: usize) -> DgramDevice {
        DgramDevice {
            sock,
            caps: DeviceCaps::new(Medium::Ethernet, mtu),
            max_frame: max_frame_len(mtu) as usize,
            pool: FramePool::new(),
            dropped: 0,
        }
    }

    /// Serves a VM on `sock` (bound to a path, not connected), as
    /// gvisor-tap-vsock's `--listen-vfkit` does: waits for the VM's first
    /// datagram (vfkit's `VFKT` greeting; anything else there is dropped),
    /// connects `sock` to its sender's path and returns the device. A
    /// sender without a path (an unbound socket) cannot be answered: an
    /// `InvalidInput` error.
    pub async fn accept(sock: UnixDatagram, mtu: usize) -> io::Result<DgramDevice> {
        let mut buf = [0u8; 64];
        let (n, from) = sock.recv_from(&mut buf).await?;
        let Some(path) = from.as_pathname() else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "unixgram: the VM's socket has no path (unbound): it cannot be answered",
            ));
        };
        tracing::debug!(peer = %path.display(), greeting = buf[..n] == *b"VFKT", "unixgram: VM connected");
        sock.connect(path)?;
        Ok(DgramDevice::new(sock, mtu))
    }

    /// Datagrams received and dropped (shorter than an Ethernet header, or
    /// above the MTU plus the Ethernet header) and frames not sent (too big).
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Keeps `frame` (`n` bytes received into a buffer one byte larger than
    /// the largest frame) if it is a plausible Ethernet frame.
    fn keep(&mut self, mut frame: FrameBuf, n: usize, frames: &mut Vec<FrameBuf>) {
        if (ETHERNET_HEADER..=self.max_frame).contains(&n) {
            frame.set_len(n);
            frames.push(frame);
        } else {
            self.dropped += 1;
            tracing::debug!(
                len = n,
                max = self.max_frame,
                "unixgram: datagram dropped (not an Ethernet frame of this MTU)"
            );
        }
    }
}

/// Whether a socket error means the peer is gone (the device ends).
fn peer_gone(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::ConnectionRefused | io::ErrorKind::NotConnected | io::ErrorKind::ConnectionReset)
}

impl FrameDevice for DgramDevice {
    fn caps(&self) -> DeviceCaps {
        self.caps
    }

    fn set_pool(&mut self, pool: FramePool) {
        self.pool = pool;
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>, frames: &mut Vec<FrameBuf>, max: usize) -> Poll<io::Result<()>> {
        let start = frames.len();
        // One byte more than the largest frame: a longer datagram shows as truncated.
        let size = self.max_frame + 1;
        while frames.len() - start < max {
            let mut frame = self.pool.take(size);
            let n = if frames.len() == start {
                let mut buf = ReadBuf::new(&mut frame);
                match self.sock.poll_recv(cx, &mut buf) {
                    Poll::Ready(Ok(())) => buf.filled().len(),
                    Poll::Ready(Err(e)) if peer_gone(&e) => return Poll::Ready(Err(e)),
                    Poll::Ready(Err(e)) => {
                        tracing::debug!(error = %e, "unixgram: receive failed");
                        self.dropped += 1;
                        continue;
                    }
                    Poll::Pending => return Poll::Pending,
                }
            } else {
                match self.sock.try_recv(&mut frame) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if peer_gone(&e) => return Poll::Ready(Err(e)),
                    Err(_) => break,
                }
            };
            self.keep(frame, n, frames);
        }
        Poll::Ready(Ok(()))
    }

    fn poll_send_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.sock.poll_send_ready(cx)
    }

    fn send(&mut self, frame: FrameBuf) -> io::Result<()> {
        if frame.len() > self.max_frame || frame.is_empty() {
            self.dropped += 1;
            return Ok(());
        }
        match self.sock.try_send(&frame) {
            Ok(_) => Ok(()),
            // Full: dropped, as a busy wire would (TCP retransmits).
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn poll_send_batch(&mut self, cx: &mut Context<'_>, frames: &mut VecDeque<FrameBuf>) -> Poll<io::Result<()>> {
        while let Some(frame) = frames.front() {
            if frame.len() > self.max_frame || frame.is_empty() {
                self.dropped += 1;
                frames.pop_front();
                continue;
            }
            match self.sock.try_send(frame) {
                Ok(_) => {
                    frames.pop_front();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => match self.sock.poll_send_ready(cx) {
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => return Poll::Pending,
                },
                Err(e) if peer_gone(&e) => return Poll::Ready(Err(e)),
                Err(e) => {
                    tracing::debug!(error = %e, "unixgram: send failed: frame dropped");
                    self.dropped += 1;
                    frames.pop_front();
                }
            }
        }
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests;

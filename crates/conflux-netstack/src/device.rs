//! The frame-device trait users implement to bring their own device.

use std::io;
use std::task::{Context, Poll};

/// What a device's frames start with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Medium {
    /// Ethernet II frames (TAP devices): the stack answers ARP and NDP.
    Ethernet,
    /// Bare IPv4/IPv6 packets (TUN devices, point-to-point links).
    Ip,
}

/// Who computes and checks IP/TCP/ICMP checksums.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Checksums {
    /// The stack computes them on transmit and checks them on receive.
    Compute,
    /// The link is trusted (an in-memory link, like the kernel's loopback):
    /// neither computed nor checked.
    Offloaded,
}

/// A device's fixed properties.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DeviceCaps {
    /// The frame format.
    pub medium: Medium,
    /// The largest IP packet the device carries (the MTU, without the
    /// Ethernet header for [`Medium::Ethernet`]).
    pub mtu: usize,
    /// Checksum handling.
    pub checksums: Checksums,
}

impl DeviceCaps {
    /// The caps of a device with the given medium and MTU, checksums computed.
    pub const fn new(medium: Medium, mtu: usize) -> DeviceCaps {
        DeviceCaps { medium, mtu, checksums: Checksums::Compute }
    }
}

/// An asynchronous frame device: what the stack's driver task sends frames
/// to and receives frames from.
///
/// The driver calls these from one task only, never while it holds the
/// stack's lock. Frames are whole (one Ethernet frame or one IP packet per
/// call). A device that cannot take a frame right now returns `Pending` from
/// [`poll_send_ready`](FrameDevice::poll_send_ready); a device that drops a
/// frame it accepted behaves like a lossy wire (TCP retransmits).
pub trait FrameDevice: Send + 'static {
    /// The device's medium, MTU and checksum handling.
    fn caps(&self) -> DeviceCaps;

    /// The next received frame. `Err` ends the driver (the device is gone).
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Vec<u8>>>;

    /// Ready once [`send`](FrameDevice::send) would accept a frame.
    fn poll_send_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;

    /// Sends one frame (called after `poll_send_ready` returned ready).
    fn send(&mut self, frame: Vec<u8>) -> io::Result<()>;
}

impl<D: FrameDevice + ?Sized> FrameDevice for Box<D> {
    fn caps(&self) -> DeviceCaps {
        (**self).caps()
    }
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Vec<u8>>> {
        (**self).poll_recv(cx)
    }
    fn poll_send_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        (**self).poll_send_ready(cx)
    }
    fn send(&mut self, frame: Vec<u8>) -> io::Result<()> {
        (**self).send(frame)
    }
}

//! Linux TAP (Ethernet) and TUN (IP) devices, with readiness from tokio.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use tokio::io::unix::AsyncFd;

use crate::device::{DeviceCaps, DirectSend, FrameBuf, FrameDevice, FrameMeta, FramePool, Medium, RxCsum};
use crate::vnet::{self, RxCsumState, VnetHdr};

/// The largest IP packet an offload TAP takes or hands over
/// ([`DeviceCaps::tso`]): what fits a 16-bit length with the Ethernet
/// header (the kernel's GSO limit is 64 KiB).
const TSO_MAX: u16 = 65535 - 14;
/// The receive buffer of an offload TAP: the largest coalesced frame the
/// kernel builds (an IPv6 packet with a 65535-byte payload) and a VLAN tag.
const RX_MAX: usize = 14 + 4 + 40 + 65535;

/// A `/dev/net/tun` descriptor attached to an interface.
struct TunFd {
    fd: AsyncFd<File>,
    name: String,
    caps: DeviceCaps,
    /// Whether every frame carries a virtio net header (offloads on).
    vnet: bool,
    stats: TapStats,
    pool: FramePool,
    /// The transmit side (a duplicate of the descriptor), shared with the
    /// stack's tasks ([`FrameDevice::direct_send`]).
    tx: Arc<TunTx>,
}

/// A TUN/TAP device's transmit side: a write per frame, from any task.
struct TunTx {
    file: File,
    name: String,
    caps: DeviceCaps,
    vnet: bool,
    stats: TapStats,
}

impl TunFd {
    fn open(name: &str, tap: bool, mtu: usize, offloads: bool) -> io::Result<TunFd> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")?;
        crate::sys::tun_set_iff(&file, name, tap, offloads)?;
        if offloads {
            crate::sys::tun_set_offloads(&file, vnet::HDR_LEN)?;
        }
        let medium = if tap { Medium::Ethernet } else { Medium::Ip };
        let mut caps = DeviceCaps::new(medium, mtu);
        if offloads {
            caps.tso = Some(TSO_MAX);
            // Every TCP frame goes out partial (`NEEDS_CSUM`): the kernel
            // completes the checksum, or, for its own sockets, needs none.
            caps.tcp_tx_csum = true;
        }
        let stats = TapStats::default();
        let tx = TunTx { file: file.try_clone()?, name: name.to_owned(), caps, vnet: offloads, stats: stats.clone() };
        Ok(TunFd {
            fd: crate::sys::async_fd(file)?,
            name: name.to_owned(),
            caps,
            vnet: offloads,
            stats,
            pool: FramePool::new(),
            tx: Arc::new(tx),
        })
    }

    /// Reads frames until the device has none or `max` were read. With
    /// offloads, header and frame come in one `readv`; a frame whose header
    /// is malformed is dropped (and counted).
    fn poll_recv(&mut self, cx: &mut Context<'_>, frames: &mut Vec<FrameBuf>, max: usize) -> Poll<io::Result<()>> {
        let from = frames.len();
        let cap = if self.vnet { RX_MAX } else { self.caps.mtu + 14 + 4 };
        // Taken from the pool only once the device is readable, and kept
        // across a read that would block (then returned when this ends).
        let mut spare: Option<FrameBuf> = None;
        let mut hdr = [0u8; vnet::HDR_LEN];
        let s = &self.stats.0;
        while frames.len() - from < max.max(1) {
            let mut guard = match self.fd.poll_read_ready(cx) {
                Poll::Ready(Ok(guard)) => guard,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => break,
            };
            let buf = spare.get_or_insert_with(|| self.pool.take(cap));
            let read = guard.try_io(|fd| {
                if self.vnet {
                    fd.get_ref().read_vectored(&mut [IoSliceMut::new(&mut hdr), IoSliceMut::new(buf)])
                } else {
                    fd.get_ref().read(buf)
                }
            });
            let n = match read {
                Ok(Ok(n)) => n,
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            };
            if self.vnet {
                buf.set_len(n.saturating_sub(vnet::HDR_LEN));
                match VnetHdr::parse(&hdr[..n.min(vnet::HDR_LEN)]).and_then(|h| h.rx_state(buf)) {
                    Ok((csum, gso_mss)) => {
                        let csum = match csum {
                            RxCsumState::Unknown => RxCsum::Unknown,
                            RxCsumState::Verified => {
                                s.rx_data_valid.fetch_add(1, Ordering::Relaxed);
                                RxCsum::Verified
                            }
                            RxCsumState::Partial => {
                                s.rx_partial_csum.fetch_add(1, Ordering::Relaxed);
                                RxCsum::Partial
                            }
                        };
                        if gso_mss.is_some() {
                            s.rx_gso_frames.fetch_add(1, Ordering::Relaxed);
                        }
                        buf.meta = FrameMeta { csum, gso_mss };
                    }
                    Err(e) => {
                        s.rx_bad_header.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(tap = %self.name, error = %e, "dropped a received frame");
                        buf.set_len(cap);
                        continue;
                    }
                }
            } else {
                buf.set_len(n);
            }
            s.rx_frames.fetch_add(1, Ordering::Relaxed);
            frames.extend(spare.take());
        }
        if frames.len() > from { Poll::Ready(Ok(())) } else { Poll::Pending }
    }
}

impl TunTx {
    fn l2(&self) -> vnet::L2 {
        match self.caps.medium {
            Medium::Ethernet => vnet::L2::Ethernet,
            Medium::Ip => vnet::L2::Ip,
        }
    }

    /// Sends `frame`, as a GSO super-segment of `gso_mss`-byte segments if
    /// given and the frame is longer than one (offloads on).
    fn send(&self, frame: &mut [u8], gso_mss: Option<u16>) -> io::Result<()> {
        let s = &self.stats.0;
        s.tx_frames.fetch_add(1, Ordering::Relaxed);
        let res = if self.vnet {
            let hdr = match gso_mss {
                Some(mss) => vnet::gso_header(frame, self.l2(), mss, self.caps.mtu).unwrap_or_else(|e| {
                    tracing::debug!(tap = %self.name, error = %e, "sent a frame without segmentation");
                    VnetHdr::default()
                }),
                None => VnetHdr::default(),
            };
            // Not a super-segment: the TCP checksum is the kernel's to
            // complete (the stack left it 0, `DeviceCaps::tcp_tx_csum`).
            let hdr =
                if hdr.gso == vnet::Gso::None { vnet::partial_header(frame, self.l2()).unwrap_or(hdr) } else { hdr };
            if hdr.gso != vnet::Gso::None {
                s.tx_gso_frames.fetch_add(1, Ordering::Relaxed);
            }
            let hdr = hdr.to_bytes();
            (&self.file).write_vectored(&[IoSlice::new(&hdr), IoSlice::new(frame)])
        } else {
            (&self.file).write(frame)
        };
        match res {
            Ok(_) => Ok(()),
            // A full device queue drops the frame, as a busy NIC would.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            // The interface is down or gone: the frame is lost; TCP retransmits.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EIO) | Some(libc::ENXIO)) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

impl DirectSend for TunTx {
    fn try_send(&self, frames: &mut VecDeque<FrameBuf>) {
        for mut frame in frames.drain(..) {
            let mss = frame.meta.gso_mss;
            if let Err(e) = self.send(&mut frame, mss) {
                // The driver's next read or write sees the device fail.
                tracing::debug!(tap = %self.name, error = %e, "device send failed: frame dropped");
            }
        }
    }
}

/// Counters of a [`TapDevice`], shared with it: take them with
/// [`TapDevice::stats`] before the device moves into a stack.
#[derive(Debug, Clone, Default)]
pub struct TapStats(Arc<Counters>);

#[derive(Debug, Default)]
struct Counters {
    tx_frames: AtomicU64,
    tx_gso_frames: AtomicU64,
    rx_frames: AtomicU64,
    rx_gso_frames: AtomicU64,
    rx_partial_csum: AtomicU64,
    rx_data_valid: AtomicU64,
    rx_bad_header: AtomicU64,
}

impl TapStats {
    /// Frames handed to the kernel.
    pub fn tx_frames(&self) -> u64 {
        self.0.tx_frames.load(Ordering::Relaxed)
    }
    /// Of those, TCP super-segments the kernel cut (GSO, offloads only).
    pub fn tx_gso_frames(&self) -> u64 {
        self.0.tx_gso_frames.load(Ordering::Relaxed)
    }
    /// Frames received and handed to the stack.
    pub fn rx_frames(&self) -> u64 {
        self.0.rx_frames.load(Ordering::Relaxed)
    }
    /// Of those, coalesced TCP super-segments (GSO from the kernel).
    pub fn rx_gso_frames(&self) -> u64 {
        self.0.rx_gso_frames.load(Ordering::Relaxed)
    }
    /// Of those, frames whose L4 checksum was partial (`NEEDS_CSUM`).
    pub fn rx_partial_csum(&self) -> u64 {
        self.0.rx_partial_csum.load(Ordering::Relaxed)
    }
    /// Of those, frames the kernel had verified (`DATA_VALID`).
    pub fn rx_data_valid(&self) -> u64 {
        self.0.rx_data_valid.load(Ordering::Relaxed)
    }
    /// Frames dropped for a malformed virtio net header.
    pub fn rx_bad_header(&self) -> u64 {
        self.0.rx_bad_header.load(Ordering::Relaxed)
    }
}

/// What [`TapDevice`] and [`TunDevice`] share, both being a `TunFd`:
/// `Debug` (the interface's name), `name()` and the [`FrameDevice`] impl.
macro_rules! tun_fd_device {
    ($device:ident) => {
        impl std::fmt::Debug for $device {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($device)).field("name", &self.0.name).finish()
            }
        }

        impl $device {
            /// The interface's name.
            pub fn name(&self) -> &str {
                &self.0.name
            }
        }

        impl FrameDevice for $device {
            fn caps(&self) -> DeviceCaps {
                self.0.caps
            }
            fn set_pool(&mut self, pool: FramePool) {
                self.0.pool = pool;
            }
            fn poll_recv(
                &mut self,
                cx: &mut Context<'_>,
                frames: &mut Vec<FrameBuf>,
                max: usize,
            ) -> Poll<io::Result<()>> {
                self.0.poll_recv(cx, frames, max)
            }
            fn poll_send_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                Poll::Ready(Ok(()))
            }
            fn send(&mut self, mut frame: FrameBuf) -> io::Result<()> {
                let mss = frame.meta.gso_mss;
                self.0.tx.send(&mut frame, mss)
            }
            fn direct_send(&mut self) -> Option<Arc<dyn DirectSend>> {
                Some(self.0.tx.clone())
            }
        }
    };
}

/// A Linux TAP device (Ethernet frames), created or attached by name.
///
/// Needs `CAP_NET_ADMIN`. The interface starts down: bring it up (and move
/// it to a namespace) with `ip link`.
///
/// [`TapDevice::open`]: checksums are computed and checked by the stack,
/// every frame fits the MTU (no virtio net headers).
/// [`TapDevice::open_with_offloads`]: every frame carries a virtio net
/// header (`IFF_VNET_HDR`) and the kernel takes TCP super-segments up to
/// 64 KiB with partial checksums and cuts them itself (TSO/GSO, IPv4 and
/// IPv6), completes the checksum of every other TCP frame (sent partial,
/// [`DeviceCaps::tcp_tx_csum`]), and hands over coalesced ones with
/// partial or verified checksums.
pub struct TapDevice(TunFd);

impl TapDevice {
    /// Opens TAP interface `name` (at most 15 bytes) with an MTU of `mtu`
    /// bytes of IP packet. Must be called within a tokio runtime.
    pub fn open(name: &str, mtu: usize) -> io::Result<TapDevice> {
        TunFd::open(name, true, mtu, false).map(TapDevice)
    }

    /// As [`open`](TapDevice::open), with virtio net headers and the
    /// kernel's checksum and segmentation offloads (`TUNSETOFFLOAD` with
    /// `TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN`): the stack
    /// sends TCP segments of up to 64 KiB that the kernel cuts to the
    /// peer's MSS, and receives the kernel's coalesced ones; `mtu` stays the
    /// limit of every other frame. The interface must not be attached
    /// elsewhere without virtio net headers.
    pub fn open_with_offloads(name: &str, mtu: usize) -> io::Result<TapDevice> {
        TunFd::open(name, true, mtu, true).map(TapDevice)
    }

    /// The device's counters (frames, super-segments, partial checksums).
    pub fn stats(&self) -> TapStats {
        self.0.stats.clone()
    }
}

/// A Linux TUN device (bare IP packets), created or attached by name.
///
/// As [`TapDevice`], with [`Medium::Ip`]: no ARP or NDP.
pub struct TunDevice(TunFd);

impl TunDevice {
    /// Opens TUN interface `name` (at most 15 bytes) with an MTU of `mtu`.
    /// Must be called within a tokio runtime.
    pub fn open(name: &str, mtu: usize) -> io::Result<TunDevice> {
        TunFd::open(name, false, mtu, false).map(TunDevice)
    }
}

tun_fd_device!(TapDevice);
tun_fd_device!(TunDevice);

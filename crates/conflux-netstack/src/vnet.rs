//! The virtio net header (`struct virtio_net_hdr`) that a TAP opened with
//! `IFF_VNET_HDR` puts before every frame, and the two conversions the
//! offload TAP needs: a tx TCP frame into the partial form the kernel
//! completes (one segment, or a GSO super-segment), and a received header
//! into what the stack must still check.
//!
//! Layout (10 bytes; 12 with virtio 1.0's `num_buffers`, which we do not
//! use), little-endian because the device sets `TUNSETVNETLE`:
//!
//! ```text
//! 0  flags        u8    NEEDS_CSUM (1), DATA_VALID (2)
//! 1  gso_type     u8    NONE (0), TCPV4 (1), TCPV6 (4), | ECN (0x80)
//! 2  hdr_len      u16   Ethernet + IP + TCP header bytes (GSO)
//! 4  gso_size     u16   payload bytes per segment (GSO)
//! 6  csum_start   u16   where checksumming starts (NEEDS_CSUM)
//! 8  csum_offset  u16   where from csum_start the result goes (NEEDS_CSUM)
//! ```
//!
//! Invariant: nothing here does I/O or panics on bad input; a malformed
//! header or frame is a [`VnetError`] naming the wrong field.

use smoltcp::wire::{EthernetFrame, EthernetProtocol, IpProtocol, Ipv4Packet, Ipv6Packet, TcpPacket, checksum};

/// The header length the device sets with `TUNSETVNETHDRSZ`.
pub(crate) const HDR_LEN: usize = 10;
/// The header length with virtio 1.0's `num_buffers` (accepted by
/// [`VnetHdr::parse`], written by [`VnetHdr::emit`] when the buffer has room).
#[cfg(test)]
const HDR_LEN_V1: usize = 12;

/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the L4 checksum is partial.
const F_NEEDS_CSUM: u8 = 1;
/// `VIRTIO_NET_HDR_F_DATA_VALID`: the sender checked the checksums.
const F_DATA_VALID: u8 = 2;
const GSO_NONE: u8 = 0;
const GSO_TCPV4: u8 = 1;
const GSO_TCPV6: u8 = 4;
const GSO_ECN: u8 = 0x80;
/// The TCP checksum's offset in the TCP header.
const TCP_CSUM_OFFSET: u16 = 16;

/// What a header says about a frame's segmentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Gso {
    /// One packet.
    #[default]
    None,
    /// A TCP/IPv4 super-segment.
    TcpV4,
    /// A TCP/IPv6 super-segment.
    TcpV6,
}

/// A decoded `virtio_net_hdr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct VnetHdr {
    /// `NEEDS_CSUM`: the checksum at `csum_start + csum_offset` holds only
    /// the pseudo-header sum.
    pub(crate) needs_csum: bool,
    /// `DATA_VALID`: the checksums were verified by the sender.
    pub(crate) data_valid: bool,
    /// The segmentation type.
    pub(crate) gso: Gso,
    /// The ECN bit of `gso_type` (segments keep CWR on the first only).
    pub(crate) ecn: bool,
    /// Header bytes before the TCP payload (GSO).
    pub(crate) hdr_len: u16,
    /// Payload bytes per segment (GSO).
    pub(crate) gso_size: u16,
    /// Where checksumming starts (from the frame's first byte).
    pub(crate) csum_start: u16,
    /// Where, from `csum_start`, the checksum goes.
    pub(crate) csum_offset: u16,
}

/// A malformed header, or a frame that does not fit its header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum VnetError {
    /// Fewer bytes than a header.
    #[error("virtio net header truncated: {len} bytes, need {HDR_LEN}")]
    Truncated {
        /// The bytes there were.
        len: usize,
    },
    /// Flag bits this device never negotiated.
    #[error("virtio net header: unknown flags {0:#04x}")]
    Flags(u8),
    /// A `gso_type` other than NONE, TCPV4 or TCPV6 (with or without ECN).
    #[error("virtio net header: unsupported gso_type {0:#04x}")]
    GsoType(u8),
    /// A super-segment header with `gso_size` 0.
    #[error("virtio net header: gso_size 0 with gso_type {0:?}")]
    GsoSize(Gso),
    /// `csum_start + csum_offset + 2` past the frame.
    #[error("virtio net header: csum_start {start} + csum_offset {offset} outside the {len}-byte frame")]
    CsumRange {
        /// `csum_start`.
        start: u16,
        /// `csum_offset`.
        offset: u16,
        /// The frame's length.
        len: usize,
    },
    /// A frame the tx conversion cannot segment (what was wrong with it).
    #[error("frame cannot be segmented: {0}")]
    Frame(&'static str),
}

/// What the stack must still do with a received frame's checksums.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RxCsumState {
    /// Nothing known: check them.
    Unknown,
    /// The sender verified them.
    Verified,
    /// The L4 checksum field holds the pseudo-header sum only (the sender's
    /// own packet, never on a wire): not to be checked.
    Partial,
}

impl VnetHdr {
    /// Decodes the first [`HDR_LEN`] bytes of `bytes` (a 12-byte header's
    /// `num_buffers` is ignored).
    pub(crate) fn parse(bytes: &[u8]) -> Result<VnetHdr, VnetError> {
        let Some(b) = bytes.first_chunk::<HDR_LEN>() else {
            return Err(VnetError::Truncated { len: bytes.len() });
        };
        let flags = b[0];
        if flags & !(F_NEEDS_CSUM | F_DATA_VALID) != 0 {
            return Err(VnetError::Flags(flags));
        }
        let gso = match b[1] & !GSO_ECN {
            GSO_NONE if b[1] & GSO_ECN == 0 => Gso::None,
            GSO_TCPV4 => Gso::TcpV4,
            GSO_TCPV6 => Gso::TcpV6,
            _ => return Err(VnetError::GsoType(b[1])),
        };
        let word = |at: usize| u16::from_le_bytes([b[at], b[at + 1]]);
        let hdr = VnetHdr {
            needs_csum: flags & F_NEEDS_CSUM != 0,
            data_valid: flags & F_DATA_VALID != 0,
            gso,
            ecn: b[1] & GSO_ECN != 0,
            hdr_len: word(2),
            gso_size: word(4),
            csum_start: word(6),
            csum_offset: word(8),
        };
        if gso != Gso::None && hdr.gso_size == 0 {
            return Err(VnetError::GsoSize(gso));
        }
        Ok(hdr)
    }

    /// Encodes into the first [`HDR_LEN`] bytes of `out` and zeroes the
    /// rest of it (a 12-byte header's `num_buffers`).
    ///
    /// # Panics
    /// If `out` is shorter than [`HDR_LEN`] (a caller's bug, not input).
    pub(crate) fn emit(&self, out: &mut [u8]) {
        let flags = if self.needs_csum { F_NEEDS_CSUM } else { 0 } | if self.data_valid { F_DATA_VALID } else { 0 };
        let gso = match self.gso {
            Gso::None => GSO_NONE,
            Gso::TcpV4 => GSO_TCPV4,
            Gso::TcpV6 => GSO_TCPV6,
        } | if self.ecn { GSO_ECN } else { 0 };
        out.fill(0);
        out[0] = flags;
        out[1] = gso;
        out[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        out[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        out[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        out[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
    }

    /// The encoded header.
    pub(crate) fn to_bytes(self) -> [u8; HDR_LEN] {
        let mut out = [0; HDR_LEN];
        self.emit(&mut out);
        out
    }

    /// What the stack must still check in `frame`, received after this
    /// header, and the segment size of a coalesced frame. `NEEDS_CSUM` wins
    /// over `DATA_VALID` (the field is partial either way).
    pub(crate) fn rx_state(&self, frame: &[u8]) -> Result<(RxCsumState, Option<u16>), VnetError> {
        let csum = if self.needs_csum {
            let end = usize::from(self.csum_start) + usize::from(self.csum_offset) + 2;
            if end > frame.len() {
                return Err(VnetError::CsumRange {
                    start: self.csum_start,
                    offset: self.csum_offset,
                    len: frame.len(),
                });
            }
            RxCsumState::Partial
        } else if self.data_valid {
            RxCsumState::Verified
        } else {
            RxCsumState::Unknown
        };
        let mss = (self.gso != Gso::None).then_some(self.gso_size);
        Ok((csum, mss))
    }
}

/// Where a frame's IP packet starts: after the Ethernet header, or at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum L2 {
    /// Ethernet II frames (no VLAN tags).
    Ethernet,
    /// Bare IP packets.
    Ip,
}

/// The header for sending `frame` (Ethernet or IP per `l2`; its TCP
/// checksum field is overwritten) as a GSO super-segment of `mss`-byte segments:
/// rewrites the TCP checksum field to the pseudo-header sum (the partial
/// form) and returns `NEEDS_CSUM` + TCPV4/TCPV6 with `csum_start`,
/// `csum_offset`, `hdr_len` and `gso_size` set. `gso_size` is `mss`, or
/// less where the frame's IP and TCP headers (options included) would make
/// a segment longer than `mtu`: every segment the kernel cuts fits the
/// link. A frame whose payload fits one segment needs no header:
/// `Ok(VnetHdr::default())`, frame untouched. On error the frame is
/// untouched.
pub(crate) fn gso_header(frame: &mut [u8], l2: L2, mss: u16, mtu: usize) -> Result<VnetHdr, VnetError> {
    if mss == 0 {
        return Err(VnetError::GsoSize(Gso::TcpV4));
    }
    let l3 = match l2 {
        L2::Ip => 0,
        L2::Ethernet => {
            let eth = EthernetFrame::new_checked(&*frame).map_err(|_| VnetError::Frame("short Ethernet header"))?;
            match eth.ethertype() {
                EthernetProtocol::Ipv4 | EthernetProtocol::Ipv6 => EthernetFrame::<&[u8]>::header_len(),
                _ => return Err(VnetError::Frame("not IPv4 or IPv6")),
            }
        }
    };
    let packet = &frame[l3..];
    let (gso, ip_hdr, pseudo_of) = match packet.first().map(|b| b >> 4) {
        Some(4) => {
            let ip = Ipv4Packet::new_checked(packet).map_err(|_| VnetError::Frame("malformed IPv4 header"))?;
            if ip.next_header() != IpProtocol::Tcp {
                return Err(VnetError::Frame("not TCP"));
            }
            if ip.more_frags() || ip.frag_offset() != 0 {
                return Err(VnetError::Frame("an IPv4 fragment"));
            }
            if usize::from(ip.total_len()) != packet.len() {
                return Err(VnetError::Frame("IPv4 total length is not the frame's"));
            }
            let (src, dst) = (ip.src_addr(), ip.dst_addr());
            let hl = usize::from(ip.header_len());
            (Gso::TcpV4, hl, Pseudo::V4(src, dst))
        }
        Some(6) => {
            let ip = Ipv6Packet::new_checked(packet).map_err(|_| VnetError::Frame("malformed IPv6 header"))?;
            if ip.next_header() != IpProtocol::Tcp {
                return Err(VnetError::Frame("not TCP right after the IPv6 header"));
            }
            if usize::from(ip.payload_len()) + 40 != packet.len() {
                return Err(VnetError::Frame("IPv6 payload length is not the frame's"));
            }
            (Gso::TcpV6, 40, Pseudo::V6(ip.src_addr(), ip.dst_addr()))
        }
        _ => return Err(VnetError::Frame("not IPv4 or IPv6")),
    };
    let tcp_at = l3 + ip_hdr;
    let tcp_len = frame.len() - tcp_at;
    let tcp = TcpPacket::new_checked(&frame[tcp_at..]).map_err(|_| VnetError::Frame("malformed TCP header"))?;
    let tcp_hdr = usize::from(tcp.header_len());
    let fits = mtu.saturating_sub(ip_hdr + tcp_hdr);
    let seg = u16::try_from(fits).map_or(mss, |fits| fits.min(mss));
    if seg == 0 {
        return Err(VnetError::Frame("the headers leave no payload within the MTU"));
    }
    if tcp_len - tcp_hdr <= usize::from(seg) {
        return Ok(VnetHdr::default());
    }
    let ecn = tcp.cwr();
    let (Ok(hdr_len), Ok(csum_start), Ok(len32)) =
        (u16::try_from(tcp_at + tcp_hdr), u16::try_from(tcp_at), u32::try_from(tcp_len))
    else {
        return Err(VnetError::Frame("headers too long"));
    };
    let pseudo = match pseudo_of {
        Pseudo::V4(s, d) => checksum::pseudo_header_v4(&s, &d, IpProtocol::Tcp, len32),
        Pseudo::V6(s, d) => checksum::pseudo_header_v6(&s, &d, IpProtocol::Tcp, len32),
    };
    let at = tcp_at + usize::from(TCP_CSUM_OFFSET);
    frame[at..at + 2].copy_from_slice(&pseudo.to_be_bytes());
    Ok(VnetHdr {
        needs_csum: true,
        data_valid: false,
        gso,
        ecn,
        hdr_len,
        gso_size: seg,
        csum_start,
        csum_offset: TCP_CSUM_OFFSET,
    })
}

/// The header for sending a TCP `frame` (Ethernet or IP per `l2`) whose
/// checksum the kernel is to complete: writes the pseudo-header sum into
/// the TCP checksum field (the partial form) and returns `NEEDS_CSUM` with
/// `csum_start` and `csum_offset` set, no segmentation. `None` for a frame
/// that is not TCP right after an IPv4 or IPv6 header (ARP, ICMP, UDP, a
/// fragment, a malformed one): it goes as it is, untouched.
pub(crate) fn partial_header(frame: &mut [u8], l2: L2) -> Option<VnetHdr> {
    let l3 = match l2 {
        L2::Ip => 0,
        L2::Ethernet => match EthernetFrame::new_checked(&*frame).ok()?.ethertype() {
            EthernetProtocol::Ipv4 | EthernetProtocol::Ipv6 => EthernetFrame::<&[u8]>::header_len(),
            _ => return None,
        },
    };
    let packet = &frame[l3..];
    let (ip_hdr, pseudo_of) = match packet.first().map(|b| b >> 4) {
        Some(4) => {
            let ip = Ipv4Packet::new_checked(packet).ok()?;
            if ip.next_header() != IpProtocol::Tcp
                || ip.more_frags()
                || ip.frag_offset() != 0
                || usize::from(ip.total_len()) != packet.len()
            {
                return None;
            }
            (usize::from(ip.header_len()), Pseudo::V4(ip.src_addr(), ip.dst_addr()))
        }
        Some(6) => {
            let ip = Ipv6Packet::new_checked(packet).ok()?;
            if ip.next_header() != IpProtocol::Tcp || usize::from(ip.payload_len()) + 40 != packet.len() {
                return None;
            }
            (40, Pseudo::V6(ip.src_addr(), ip.dst_addr()))
        }
        _ => return None,
    };
    let tcp_at = l3 + ip_hdr;
    TcpPacket::new_checked(&frame[tcp_at..]).ok()?;
    let csum_start = u16::try_from(tcp_at).ok()?;
    let len32 = u32::try_from(frame.len() - tcp_at).ok()?;
    let pseudo = match pseudo_of {
        Pseudo::V4(s, d) => checksum::pseudo_header_v4(&s, &d, IpProtocol::Tcp, len32),
        Pseudo::V6(s, d) => checksum::pseudo_header_v6(&s, &d, IpProtocol::Tcp, len32),
    };
    let at = tcp_at + usize::from(TCP_CSUM_OFFSET);
    frame[at..at + 2].copy_from_slice(&pseudo.to_be_bytes());
    Some(VnetHdr { needs_csum: true, csum_start, csum_offset: TCP_CSUM_OFFSET, ..VnetHdr::default() })
}

enum Pseudo {
    V4(smoltcp::wire::Ipv4Address, smoltcp::wire::Ipv4Address),
    V6(smoltcp::wire::Ipv6Address, smoltcp::wire::Ipv6Address),
}

/// Completes a partial checksum as the device would (`NEEDS_CSUM`): the
/// one's-complement sum of `frame[csum_start..]`, field included, stored
/// complemented at `csum_start + csum_offset`.
#[cfg(test)]
pub(crate) fn complete_partial(frame: &mut [u8], csum_start: u16, csum_offset: u16) -> Result<(), VnetError> {
    let start = usize::from(csum_start);
    let at = start + usize::from(csum_offset);
    if at + 2 > frame.len() {
        return Err(VnetError::CsumRange { start: csum_start, offset: csum_offset, len: frame.len() });
    }
    let sum = !checksum::data(&frame[start..]);
    frame[at..at + 2].copy_from_slice(&sum.to_be_bytes());
    Ok(())
}

#[cfg(test)]
mod tests;

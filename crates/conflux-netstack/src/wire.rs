//! Frames parsed once, with smoltcp's checked zero-copy views
//! (`EthernetFrame`, `Ipv4Packet`, `Ipv6Packet`, `TcpPacket`, `ArpPacket`):
//! what the core needs of a frame before smoltcp sees it (the 4-tuple,
//! flags and sequence numbers of a TCP segment, where its headers start, so
//! [`rewrite`](crate::rewrite) edits them without parsing again) and the
//! destination of an outgoing frame (local delivery). Received frames are
//! checked (lengths, and checksums where asked) before anything is decided
//! on them. No I/O, no clock.

use std::net::{IpAddr, SocketAddr};

use smoltcp::wire::{
    ArpOperation, ArpPacket, EthernetFrame, EthernetProtocol, IpAddress, IpProtocol, Ipv4Packet, Ipv6Packet, TcpPacket,
};

use crate::device::Medium;

/// What the core needs from a TCP segment, read off the checked views.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Segment {
    /// Sender's address.
    pub(crate) src: SocketAddr,
    /// Receiver's address.
    pub(crate) dst: SocketAddr,
    pub(crate) syn: bool,
    pub(crate) ack: bool,
    pub(crate) rst: bool,
    pub(crate) fin: bool,
    /// The sequence number.
    pub(crate) seq_number: u32,
    /// Bytes of data the segment carries.
    pub(crate) payload_len: usize,
    /// The acknowledgment number (meaningful when `ack`).
    pub(crate) ack_number: u32,
    /// Where the IP header starts in the frame.
    pub(crate) ip_at: usize,
    /// Where the TCP header starts in the frame.
    pub(crate) tcp_at: usize,
    /// Where the TCP segment ends in the frame (trailing bytes excluded).
    pub(crate) tcp_end: usize,
}

impl Segment {
    /// The sequence number just past this segment (SYN and FIN count one each).
    pub(crate) fn seq_end(&self) -> u32 {
        self.seq_number
            .wrapping_add(self.payload_len as u32)
            .wrapping_add(u32::from(self.syn))
            .wrapping_add(u32::from(self.fin))
    }

    /// The IPv4 header checksum is there to adjust.
    pub(crate) fn is_ipv4(&self) -> bool {
        self.src.is_ipv4()
    }
}

/// `a` is after `b` in sequence space (RFC 793's modular comparison).
pub(crate) fn seq_after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

/// What a frame is, once checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Inspected {
    /// A well-formed TCP segment (checksums verified when asked).
    Tcp(Segment),
    /// Not TCP (ARP, ICMP, ...): smoltcp checks it itself. `dst` is the IP
    /// destination, or for ARP the address asked about or answered.
    Other { dst: Option<IpAddr> },
    /// Truncated, inconsistent lengths or a wrong checksum: drop it before
    /// anything looks at its contents.
    Bad,
}

impl Inspected {
    /// Where the frame is going (local delivery).
    pub(crate) fn destination(&self) -> Option<IpAddr> {
        match self {
            Inspected::Tcp(seg) => Some(seg.dst.ip()),
            Inspected::Other { dst } => *dst,
            Inspected::Bad => None,
        }
    }
}

/// Checks a frame of `medium`: Ethernet and IP lengths, TCP header length
/// and, with `verify`, the IPv4 header checksum and the TCP checksum. Only
/// a frame that passes is a [`Inspected::Tcp`]. One pass over the headers.
pub(crate) fn inspect(frame: &[u8], medium: Medium, verify: bool) -> Inspected {
    let ip_at = match medium {
        Medium::Ip => 0,
        Medium::Ethernet => {
            let Ok(eth) = EthernetFrame::new_checked(frame) else { return Inspected::Bad };
            match eth.ethertype() {
                EthernetProtocol::Ipv4 | EthernetProtocol::Ipv6 => EthernetFrame::<&[u8]>::header_len(),
                EthernetProtocol::Arp => return inspect_arp(&eth),
                _ => return Inspected::Other { dst: None },
            }
        }
    };
    let packet = &frame[ip_at..];
    let (src, dst, tcp_at, tcp_end): (IpAddress, IpAddress, usize, usize) = match packet.first().map(|b| b >> 4) {
        Some(4) => {
            let Ok(ip) = Ipv4Packet::new_checked(packet) else { return Inspected::Bad };
            if verify && !ip.verify_checksum() {
                return Inspected::Bad;
            }
            if ip.next_header() != IpProtocol::Tcp {
                return Inspected::Other { dst: Some(IpAddr::V4(ip.dst_addr())) };
            }
            (ip.src_addr().into(), ip.dst_addr().into(), usize::from(ip.header_len()), usize::from(ip.total_len()))
        }
        Some(6) => {
            let Ok(ip) = Ipv6Packet::new_checked(packet) else { return Inspected::Bad };
            if ip.next_header() != IpProtocol::Tcp {
                return Inspected::Other { dst: Some(IpAddr::V6(ip.dst_addr())) };
            }
            let start = ip.header_len();
            (ip.src_addr().into(), ip.dst_addr().into(), start, start + usize::from(ip.payload_len()))
        }
        _ => return Inspected::Bad,
    };
    match TcpPacket::new_checked(&packet[tcp_at..tcp_end]) {
        Ok(t) if !verify || t.verify_checksum(&src, &dst) => Inspected::Tcp(Segment {
            src: SocketAddr::new(src.into(), t.src_port()),
            dst: SocketAddr::new(dst.into(), t.dst_port()),
            syn: t.syn(),
            ack: t.ack(),
            rst: t.rst(),
            fin: t.fin(),
            seq_number: t.seq_number().0 as u32,
            payload_len: t.payload().len(),
            ack_number: t.ack_number().0 as u32,
            ip_at,
            tcp_at: ip_at + tcp_at,
            tcp_end: ip_at + tcp_end,
        }),
        _ => Inspected::Bad,
    }
}

/// Where a frame the core built is going (local delivery): the IP
/// destination read off the IP header alone (the frame is smoltcp's, well
/// formed: the TCP header needs no second parse); for ARP what
/// [`inspect`] says.
pub(crate) fn destination(frame: &[u8], medium: Medium) -> Option<IpAddr> {
    let ip_at = match medium {
        Medium::Ip => 0,
        Medium::Ethernet => {
            let eth = EthernetFrame::new_checked(frame).ok()?;
            match eth.ethertype() {
                EthernetProtocol::Ipv4 | EthernetProtocol::Ipv6 => EthernetFrame::<&[u8]>::header_len(),
                EthernetProtocol::Arp => return inspect_arp(&eth).destination(),
                _ => return None,
            }
        }
    };
    let packet = &frame[ip_at..];
    match packet.first().map(|b| b >> 4) {
        Some(4) => Ipv4Packet::new_checked(packet).ok().map(|ip| IpAddr::V4(ip.dst_addr())),
        Some(6) => Ipv6Packet::new_checked(packet).ok().map(|ip| IpAddr::V6(ip.dst_addr())),
        _ => None,
    }
}

/// The fields of a TCP segment the core tracks from what it sends
/// (`Core::sent`): [`built`] reads them without the [`Segment`] (and its
/// socket addresses) [`inspect`] builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sent {
    /// The sequence number just past the segment (SYN and FIN count one each).
    pub(crate) seq_end: u32,
    /// The acknowledgment number, when the ACK flag is set.
    pub(crate) ack: Option<u32>,
    /// Bytes of data the segment carries.
    pub(crate) payload_len: usize,
    pub(crate) rst: bool,
}

/// For a frame of `medium` the core built (smoltcp's): the tracked fields
/// when it is a TCP segment from `src` to `dst` with no IP options in the
/// way of the plain layout (IPv6 without extension headers), read off the
/// header bytes at their fixed places. `None` for anything else (another
/// protocol or tuple, a layout it does not read, or a frame [`inspect`]
/// would call bad): the caller then inspects the frame itself. One pass,
/// no checksum, no panic on any input.
pub(crate) fn built(frame: &[u8], medium: Medium, src: SocketAddr, dst: SocketAddr) -> Option<Sent> {
    let packet = match medium {
        Medium::Ip => frame,
        Medium::Ethernet => {
            let ethertype = frame.get(12..14)?;
            if ethertype != [0x08, 0x00] && ethertype != [0x86, 0xdd] {
                return None;
            }
            &frame[14..]
        }
    };
    let (tcp_at, tcp_end) = match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let ip = packet.get(..20)?;
            let header = usize::from(ip[0] & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
            if ip[0] >> 4 != 4 || ip[9] != 6 || ip[12..16] != s.octets() || ip[16..20] != d.octets() || header < 20 {
                return None;
            }
            (header, total)
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let ip = packet.get(..40)?;
            let payload = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
            if ip[0] >> 4 != 6 || ip[6] != 6 || ip[8..24] != s.octets() || ip[24..40] != d.octets() {
                return None;
            }
            (40, 40 + payload)
        }
        _ => return None,
    };
    let tcp = packet.get(tcp_at..tcp_end)?;
    let head = tcp.get(..20)?;
    let data_at = usize::from(head[12] >> 4) * 4;
    if head[0..2] != src.port().to_be_bytes() || head[2..4] != dst.port().to_be_bytes() || data_at < 20 {
        return None;
    }
    let payload_len = tcp.len().checked_sub(data_at)?;
    let flags = head[13];
    let (fin, syn, rst, ack) = (flags & 0x01 != 0, flags & 0x02 != 0, flags & 0x04 != 0, flags & 0x10 != 0);
    let seq = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
    Some(Sent {
        seq_end: seq.wrapping_add(payload_len as u32).wrapping_add(u32::from(syn)).wrapping_add(u32::from(fin)),
        ack: ack.then(|| u32::from_be_bytes([head[8], head[9], head[10], head[11]])),
        payload_len,
        rst,
    })
}

/// ARP carries no checksum: a sender hardware address that differs from the
/// frame's source is taken as corrupted, so one flipped byte cannot point
/// the neighbour cache at a host that does not exist.
fn inspect_arp(eth: &EthernetFrame<&[u8]>) -> Inspected {
    let Ok(arp) = ArpPacket::new_checked(eth.payload()) else { return Inspected::Bad };
    if arp.source_hardware_addr() != eth.src_addr().as_bytes() {
        return Inspected::Bad;
    }
    let dst = match arp.operation() {
        ArpOperation::Request | ArpOperation::Reply => {
            <[u8; 4]>::try_from(arp.target_protocol_addr()).ok().map(IpAddr::from)
        }
        _ => None,
    };
    Inspected::Other { dst }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An IPv4 SYN from 10.0.0.1:1234 to 10.0.0.2:80 with valid checksums.
    pub(crate) const SYN_V4: [u8; 40] = [
        0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0x26, 0xce, 10, 0, 0, 1, 10, 0, 0, 2, // IPv4
        0x04, 0xd2, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0x96, 0xbd, 0, 0, // TCP
    ];

    #[test]
    fn parses_a_syn_on_both_media() {
        let Inspected::Tcp(seg) = inspect(&SYN_V4, Medium::Ip, true) else { panic!("a segment") };
        assert_eq!(seg.src, "10.0.0.1:1234".parse().unwrap());
        assert_eq!(seg.dst, "10.0.0.2:80".parse().unwrap());
        assert!(seg.syn && !seg.ack && !seg.rst && !seg.fin);
        assert_eq!((seg.seq_number, seg.payload_len, seg.seq_end()), (1, 0, 2));
        assert_eq!((seg.ip_at, seg.tcp_at, seg.tcp_end), (0, 20, 40));
        let mut eth = vec![0u8; 12];
        eth.extend_from_slice(&[0x08, 0x00]);
        eth.extend_from_slice(&SYN_V4);
        eth.extend_from_slice(&[0xee; 6]); // Ethernet padding
        let Inspected::Tcp(e) = inspect(&eth, Medium::Ethernet, true) else { panic!("a segment") };
        assert_eq!((e.src, e.dst, e.ip_at, e.tcp_at, e.tcp_end), (seg.src, seg.dst, 14, 34, 54));
    }

    #[test]
    fn bad_checksums_and_truncation_are_bad() {
        let mut broken = SYN_V4;
        broken[37] ^= 1;
        assert_eq!(inspect(&broken, Medium::Ip, true), Inspected::Bad, "a wrong TCP checksum");
        assert!(matches!(inspect(&broken, Medium::Ip, false), Inspected::Tcp(_)), "not verified");
        for len in 0..SYN_V4.len() {
            assert_eq!(inspect(&SYN_V4[..len], Medium::Ip, false), Inspected::Bad, "truncated to {len}");
        }
        assert_eq!(inspect(&[0x45; 3], Medium::Ethernet, false), Inspected::Bad);
    }

    #[test]
    fn destination_reads_the_ip_header_alone() {
        let dst = Some("10.0.0.2".parse().unwrap());
        assert_eq!(destination(&SYN_V4, Medium::Ip), dst);
        assert_eq!(inspect(&SYN_V4, Medium::Ip, false).destination(), dst);
        let mut eth = vec![0u8; 12];
        eth.extend_from_slice(&[0x08, 0x00]);
        eth.extend_from_slice(&SYN_V4);
        assert_eq!(destination(&eth, Medium::Ethernet), dst);
        assert_eq!(destination(&SYN_V4[..10], Medium::Ip), None, "truncated");
        assert_eq!(destination(&[], Medium::Ip), None);
    }

    /// `built` reads what `inspect` reads, for the tuple it is asked
    /// about only, and nothing from a frame `inspect` calls bad.
    #[test]
    fn built_agrees_with_inspect() {
        let (src, dst) = ("10.0.0.1:1234".parse().unwrap(), "10.0.0.2:80".parse().unwrap());
        let expect = |frame: &[u8], medium| match inspect(frame, medium, false) {
            Inspected::Tcp(seg) => Some(Sent {
                seq_end: seg.seq_end(),
                ack: seg.ack.then_some(seg.ack_number),
                payload_len: seg.payload_len,
                rst: seg.rst,
            }),
            _ => None,
        };
        let mut data = SYN_V4.to_vec();
        data[3] = 45; // total length: 5 bytes of data
        data[33] = 0x19; // ACK, PSH, FIN
        data[28..32].copy_from_slice(&0xdead_beef_u32.to_be_bytes());
        data.extend_from_slice(b"hello");
        let mut eth = vec![0u8; 12];
        eth.extend_from_slice(&[0x08, 0x00]);
        eth.extend_from_slice(&data);
        eth.extend_from_slice(&[0xee; 6]);
        for (frame, medium) in [(&SYN_V4[..], Medium::Ip), (&data[..], Medium::Ip), (&eth[..], Medium::Ethernet)] {
            let got = built(frame, medium, src, dst);
            assert!(got.is_some());
            assert_eq!(got, expect(frame, medium));
            for len in 0..frame.len() {
                if expect(&frame[..len], medium).is_none() {
                    assert_eq!(built(&frame[..len], medium, src, dst), None, "truncated to {len}");
                }
            }
        }
        let sent = built(&data, Medium::Ip, src, dst).unwrap();
        assert_eq!((sent.seq_end, sent.ack, sent.payload_len, sent.rst), (1 + 5 + 1, Some(0xdead_beef), 5, false));
        assert_eq!(built(&SYN_V4, Medium::Ip, dst, src), None, "the other direction");
        assert_eq!(built(&SYN_V4, Medium::Ip, "10.0.0.1:1235".parse().unwrap(), dst), None, "another port");
        assert_eq!(built(&SYN_V4, Medium::Ethernet, src, dst), None, "not Ethernet");
        let mut udp = SYN_V4;
        udp[9] = 17;
        assert_eq!(built(&udp, Medium::Ip, src, dst), None, "not TCP");
    }

    #[test]
    fn seq_comparison_wraps() {
        assert!(seq_after(1, u32::MAX));
        assert!(!seq_after(u32::MAX, 1));
        assert!(!seq_after(5, 5));
    }
}

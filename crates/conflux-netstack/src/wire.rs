//! Just enough header parsing for the driver: validation of received frames
//! (lengths, and checksums where the device computes them) before the
//! driver takes any decision on them, the 4-tuple, flags and sequence
//! numbers of a TCP segment (ingress demultiplexing, SYN and RST tracking,
//! SND.NXT tracking on egress) and the destination of an outgoing frame
//! (local delivery). Malformed frames parse as `None`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use smoltcp::wire::{EthernetFrame, EthernetProtocol, IpAddress, IpProtocol, Ipv4Packet, Ipv6Packet, TcpPacket};

use crate::device::Medium;

const ETH_HEADER: usize = 14;
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERTYPE_ARP: u16 = 0x0806;
const PROTO_TCP: u8 = 6;

/// What the driver needs from a TCP segment.
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
}

/// The IP packet inside a frame of `medium`, if any.
fn ip_packet(frame: &[u8], medium: Medium) -> Option<&[u8]> {
    match medium {
        Medium::Ip => Some(frame),
        Medium::Ethernet => {
            let ethertype = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
            matches!(ethertype, ETHERTYPE_IPV4 | ETHERTYPE_IPV6).then(|| &frame[ETH_HEADER..])
        }
    }
}

/// (src, dst, protocol, payload) of an IP packet.
fn ip_parts(packet: &[u8]) -> Option<(IpAddr, IpAddr, u8, &[u8])> {
    match packet.first()? >> 4 {
        4 => {
            let ihl = usize::from(packet[0] & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([*packet.get(2)?, *packet.get(3)?]));
            if ihl < 20 || total < ihl || packet.len() < total {
                return None;
            }
            let src = Ipv4Addr::from(<[u8; 4]>::try_from(&packet[12..16]).ok()?);
            let dst = Ipv4Addr::from(<[u8; 4]>::try_from(&packet[16..20]).ok()?);
            Some((src.into(), dst.into(), packet[9], &packet[ihl..total]))
        }
        6 => {
            if packet.len() < 40 {
                return None;
            }
            let len = usize::from(u16::from_be_bytes([packet[4], packet[5]]));
            let src = Ipv6Addr::from(<[u8; 16]>::try_from(&packet[8..24]).ok()?);
            let dst = Ipv6Addr::from(<[u8; 16]>::try_from(&packet[24..40]).ok()?);
            let payload = packet.get(40..40 + len)?;
            Some((src.into(), dst.into(), packet[6], payload))
        }
        _ => None,
    }
}

/// The TCP segment in `frame`, if it is one.
pub(crate) fn tcp_segment(frame: &[u8], medium: Medium) -> Option<Segment> {
    let (src, dst, proto, tcp) = ip_parts(ip_packet(frame, medium)?)?;
    if proto != PROTO_TCP || tcp.len() < 20 {
        return None;
    }
    let sport = u16::from_be_bytes([tcp[0], tcp[1]]);
    let dport = u16::from_be_bytes([tcp[2], tcp[3]]);
    let flags = tcp[13];
    let data_offset = usize::from(tcp[12] >> 4) * 4;
    Some(Segment {
        payload_len: tcp.len().saturating_sub(data_offset),
        ack_number: u32::from_be_bytes([tcp[8], tcp[9], tcp[10], tcp[11]]),
        src: SocketAddr::new(src, sport),
        dst: SocketAddr::new(dst, dport),
        syn: flags & 0x02 != 0,
        ack: flags & 0x10 != 0,
        rst: flags & 0x04 != 0,
        fin: flags & 0x01 != 0,
        seq_number: u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]),
    })
}

impl Segment {
    /// The sequence number just past this segment (SYN and FIN count one each).
    pub(crate) fn seq_end(&self) -> u32 {
        self.seq_number
            .wrapping_add(self.payload_len as u32)
            .wrapping_add(u32::from(self.syn))
            .wrapping_add(u32::from(self.fin))
    }
}

/// `a` is after `b` in sequence space (RFC 793's modular comparison).
pub(crate) fn seq_after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

/// What a received frame is, once checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Inspected {
    /// A well-formed TCP segment (checksums verified when asked).
    Tcp(Segment),
    /// Not TCP (ARP, ICMP, ...): smoltcp checks it itself.
    Other,
    /// Truncated, inconsistent lengths or a wrong checksum: drop it before
    /// anything looks at its contents.
    Bad,
}

/// Checks a received frame: Ethernet and IP lengths, TCP header length and,
/// with `verify`, the IPv4 header checksum and the TCP checksum. Only a
/// frame that passes is a [`Inspected::Tcp`].
pub(crate) fn inspect(frame: &[u8], medium: Medium, verify: bool) -> Inspected {
    let packet = match medium {
        Medium::Ip => frame,
        Medium::Ethernet => match EthernetFrame::new_checked(frame) {
            Ok(eth) if matches!(eth.ethertype(), EthernetProtocol::Ipv4 | EthernetProtocol::Ipv6) => {
                &frame[EthernetFrame::<&[u8]>::header_len()..]
            }
            Ok(eth) if eth.ethertype() == EthernetProtocol::Arp => {
                // ARP carries no checksum: a sender hardware address that
                // differs from the frame's source is taken as corrupted, so
                // one flipped byte cannot point the neighbour cache at a
                // host that does not exist.
                let sha =
                    frame.get(EthernetFrame::<&[u8]>::header_len() + 8..EthernetFrame::<&[u8]>::header_len() + 14);
                return if sha == Some(eth.src_addr().as_bytes()) { Inspected::Other } else { Inspected::Bad };
            }
            Ok(_) => return Inspected::Other,
            Err(_) => return Inspected::Bad,
        },
    };
    let (src, dst, tcp): (IpAddress, IpAddress, &[u8]) = match packet.first().map(|b| b >> 4) {
        Some(4) => {
            let Ok(ip) = Ipv4Packet::new_checked(packet) else { return Inspected::Bad };
            if verify && !ip.verify_checksum() {
                return Inspected::Bad;
            }
            if ip.next_header() != IpProtocol::Tcp {
                return Inspected::Other;
            }
            let (src, dst) = (ip.src_addr(), ip.dst_addr());
            let range = usize::from(ip.header_len())..usize::from(ip.total_len());
            (src.into(), dst.into(), &packet[range])
        }
        Some(6) => {
            let Ok(ip) = Ipv6Packet::new_checked(packet) else { return Inspected::Bad };
            if ip.next_header() != IpProtocol::Tcp {
                return Inspected::Other;
            }
            let (src, dst) = (ip.src_addr(), ip.dst_addr());
            let start = ip.header_len();
            (src.into(), dst.into(), &packet[start..start + usize::from(ip.payload_len())])
        }
        _ => return Inspected::Bad,
    };
    match TcpPacket::new_checked(tcp) {
        // The segment is read off the checked view: the frame is parsed once.
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
        }),
        _ => Inspected::Bad,
    }
}

/// Where an outgoing frame is going: the IP destination, or for an ARP
/// packet the address it asks about.
pub(crate) fn destination(frame: &[u8], medium: Medium) -> Option<IpAddr> {
    if medium == Medium::Ethernet && frame.len() >= ETH_HEADER + 28 {
        let ethertype = u16::from_be_bytes([frame[12], frame[13]]);
        if ethertype == ETHERTYPE_ARP {
            let t = &frame[ETH_HEADER + 24..ETH_HEADER + 28];
            return Some(Ipv4Addr::new(t[0], t[1], t[2], t[3]).into());
        }
    }
    let (_, dst, _, _) = ip_parts(ip_packet(frame, medium)?)?;
    Some(dst)
}

/// Adjusts the 16-bit one's complement checksum at `at` for `old` bytes
/// replaced by `new` (RFC 1624: HC' = ~(~HC + ~m + m')).
fn adjust_checksum(buf: &mut [u8], at: usize, old: &[u8], new: &[u8]) {
    let mut sum = u32::from(!u16::from_be_bytes([buf[at], buf[at + 1]]));
    for c in old.chunks(2) {
        sum += u32::from(!u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)]));
    }
    for c in new.chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)]));
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    buf[at..at + 2].copy_from_slice(&(!(sum as u16)).to_be_bytes());
}

/// Rewrites the source (`src`) or destination address and port of the TCP
/// segment in `frame` to `to`, fixing the IPv4 header and TCP checksums
/// incrementally. Returns false (frame untouched) if `frame` is not a TCP
/// segment of `to`'s family (IPv6 with extension headers included).
pub(crate) fn rewrite(frame: &mut [u8], medium: Medium, src: bool, to: SocketAddr) -> bool {
    let off = match medium {
        Medium::Ip => 0,
        Medium::Ethernet => ETH_HEADER,
    };
    if tcp_segment(frame, medium).is_none() {
        return false;
    }
    let ip = &mut frame[off..];
    let (addr_at, tcp_at, new_addr): (usize, usize, Vec<u8>) = match (ip[0] >> 4, to.ip()) {
        (4, IpAddr::V4(v4)) => (if src { 12 } else { 16 }, usize::from(ip[0] & 0x0f) * 4, v4.octets().to_vec()),
        (6, IpAddr::V6(v6)) if ip[6] == PROTO_TCP => (if src { 8 } else { 24 }, 40, v6.octets().to_vec()),
        _ => return false,
    };
    let old_addr = ip[addr_at..addr_at + new_addr.len()].to_vec();
    let port_at = tcp_at + if src { 0 } else { 2 };
    let old_port = [ip[port_at], ip[port_at + 1]];
    let new_port = to.port().to_be_bytes();
    if ip[0] >> 4 == 4 {
        adjust_checksum(ip, 10, &old_addr, &new_addr);
    }
    adjust_checksum(ip, tcp_at + 16, &old_addr, &new_addr);
    adjust_checksum(ip, tcp_at + 16, &old_port, &new_port);
    ip[addr_at..addr_at + new_addr.len()].copy_from_slice(&new_addr);
    ip[port_at..port_at + 2].copy_from_slice(&new_port);
    true
}

/// Sets the acknowledgment number of the TCP segment in `frame` to `ack`,
/// fixing the TCP checksum incrementally. Returns false if `frame` is not a
/// TCP segment.
pub(crate) fn rewrite_ack(frame: &mut [u8], medium: Medium, ack: u32) -> bool {
    rewrite_word(frame, medium, 8, ack)
}

/// Sets the sequence number of the TCP segment in `frame` to `seq`, fixing
/// the TCP checksum incrementally. Returns false if `frame` is not a TCP
/// segment.
pub(crate) fn rewrite_seq(frame: &mut [u8], medium: Medium, seq: u32) -> bool {
    rewrite_word(frame, medium, 4, seq)
}

/// Sets the 32-bit word at `at` of the TCP header in `frame`.
fn rewrite_word(frame: &mut [u8], medium: Medium, at: usize, word: u32) -> bool {
    let off = match medium {
        Medium::Ip => 0,
        Medium::Ethernet => ETH_HEADER,
    };
    if tcp_segment(frame, medium).is_none() {
        return false;
    }
    let ip = &mut frame[off..];
    let tcp_at = match ip[0] >> 4 {
        4 => usize::from(ip[0] & 0x0f) * 4,
        _ => 40,
    };
    let at = tcp_at + at;
    let old = [ip[at], ip[at + 1], ip[at + 2], ip[at + 3]];
    let new = word.to_be_bytes();
    adjust_checksum(ip, tcp_at + 16, &old, &new);
    ip[at..at + 4].copy_from_slice(&new);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An IPv4 SYN from 10.0.0.1:1234 to 10.0.0.2:80 (checksums zero).
    const SYN_V4: [u8; 40] = [
        0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2, // IPv4
        0x04, 0xd2, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0, // TCP
    ];

    #[test]
    fn parses_a_syn() {
        let seg = tcp_segment(&SYN_V4, Medium::Ip).expect("a segment");
        assert_eq!(seg.src, "10.0.0.1:1234".parse().unwrap());
        assert_eq!(seg.dst, "10.0.0.2:80".parse().unwrap());
        assert!(seg.syn && !seg.ack && !seg.rst);
        assert_eq!(seg.payload_len, 0);
        assert_eq!(destination(&SYN_V4, Medium::Ip), Some("10.0.0.2".parse().unwrap()));
        let mut eth = vec![0u8; 12];
        eth.extend_from_slice(&[0x08, 0x00]);
        eth.extend_from_slice(&SYN_V4);
        assert_eq!(tcp_segment(&eth, Medium::Ethernet), Some(seg));
    }

    /// The one's complement sum of `data` (0 when a checksum inside verifies).
    fn checksum(data: &[u8]) -> u16 {
        let mut sum: u32 = data.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))).sum();
        while sum >> 16 != 0 {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    fn tcp_checksum_v4(p: &[u8]) -> u16 {
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&p[12..20]);
        pseudo.extend_from_slice(&[0, 6]);
        pseudo.extend_from_slice(&((p.len() - 20) as u16).to_be_bytes());
        pseudo.extend_from_slice(&p[20..]);
        checksum(&pseudo)
    }

    #[test]
    fn rewrites_keep_checksums_valid() {
        let mut p = SYN_V4;
        // Fill in valid checksums first.
        let ip = checksum(&p[..20]);
        p[10..12].copy_from_slice(&ip.to_be_bytes());
        let tcp = tcp_checksum_v4(&p);
        p[36..38].copy_from_slice(&tcp.to_be_bytes());
        assert_eq!((checksum(&p[..20]), tcp_checksum_v4(&p)), (0, 0));
        assert_eq!(
            inspect(&p, Medium::Ip, true),
            Inspected::Tcp(tcp_segment(&p, Medium::Ip).unwrap()),
            "the checked view reads the same segment"
        );
        let mut broken = p;
        broken[37] ^= 1;
        assert_eq!(inspect(&broken, Medium::Ip, true), Inspected::Bad, "a wrong TCP checksum");
        assert_eq!(
            inspect(&broken, Medium::Ip, false),
            Inspected::Tcp(tcp_segment(&broken, Medium::Ip).unwrap()),
            "offloaded"
        );
        assert!(rewrite(&mut p, Medium::Ip, false, "192.168.1.9:8080".parse().unwrap()));
        assert!(rewrite(&mut p, Medium::Ip, true, "172.16.0.3:4000".parse().unwrap()));
        let seg = tcp_segment(&p, Medium::Ip).unwrap();
        assert_eq!((seg.src, seg.dst), ("172.16.0.3:4000".parse().unwrap(), "192.168.1.9:8080".parse().unwrap()));
        assert_eq!((checksum(&p[..20]), tcp_checksum_v4(&p)), (0, 0), "checksums still verify");
        assert!(!rewrite(&mut p, Medium::Ip, true, "[::1]:1".parse().unwrap()), "families differ");
        assert!(rewrite_ack(&mut p, Medium::Ip, 0xdead_beef));
        assert_eq!(tcp_segment(&p, Medium::Ip).unwrap().ack_number, 0xdead_beef);
        assert_eq!(tcp_checksum_v4(&p), 0, "the TCP checksum still verifies");
        assert!(rewrite_seq(&mut p, Medium::Ip, 0x0102_0304));
        assert_eq!(tcp_segment(&p, Medium::Ip).unwrap().seq_number, 0x0102_0304);
        assert_eq!(tcp_checksum_v4(&p), 0, "the TCP checksum still verifies");
    }

    #[test]
    fn malformed_frames_are_none() {
        for len in 0..SYN_V4.len() {
            assert_eq!(tcp_segment(&SYN_V4[..len], Medium::Ip), None, "truncated to {len}");
        }
        assert_eq!(tcp_segment(&[0x45; 3], Medium::Ethernet), None);
        assert_eq!(destination(&[0x60], Medium::Ip), None);
    }
}

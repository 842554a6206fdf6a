//! Every edit the core makes to a TCP segment smoltcp sends or receives,
//! each with the reason smoltcp 0.14 needs it, in one place. All work on a
//! frame already checked by [`wire::inspect`](crate::wire::inspect) (its
//! [`Segment`] says where the headers are: nothing is parsed again) and fix
//! the IPv4 header and TCP checksums incrementally (RFC 1624), so a frame
//! whose checksums were valid stays valid and a frame on an offloaded link
//! stays as it was.
//!
//! - [`nat`]: transparent listening. smoltcp drops packets to addresses
//!   that are not the interface's, even with `any_ip`: a SYN to a foreign
//!   destination is rewritten to one of our addresses and a fresh port on
//!   the way in, and that connection's segments back on the way out.
//! - [`set_ack`]: the old-ACK raise. RFC 5961 5.2 says data with an old but
//!   acceptable ACK is processed; smoltcp drops any segment whose ACK is
//!   below SND.UNA, data included. The old ACK acknowledges nothing new, so
//!   raising it to the highest ACK smoltcp took lets the data through.
//! - [`set_seq`]: the RST sequence number. smoltcp's RST on abort carries
//!   SND.UNA, which a peer that received more than we know it acknowledged
//!   drops as out of window; Linux sends SND.MAX, what the peer expects.
//! - [`raise_mss`]: segmentation offload. smoltcp never sends a segment
//!   larger than the peer's MSS, so with a device that cuts super-segments
//!   (`DeviceCaps::tso`) the MSS option of a received SYN is raised to what
//!   the device takes; the real one is remembered and becomes the frame's
//!   `gso_mss` on the way out.

use std::net::{IpAddr, SocketAddr};

use smoltcp::wire::{Ipv4Packet, TcpOption, TcpPacket, TcpSeqNumber};

use crate::wire::Segment;

/// The one's complement sum `sum` (a checksum field's value) adjusted for
/// `old` bytes replaced by `new` (RFC 1624 eq. 3: HC' = ~(~HC + ~m + m')).
fn adjust(sum: u16, old: &[u8], new: &[u8]) -> u16 {
    let word = |c: &[u8]| u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)]);
    let mut acc = u32::from(!sum);
    for c in old.chunks(2) {
        acc += u32::from(!word(c));
    }
    for c in new.chunks(2) {
        acc += u32::from(word(c));
    }
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// Adjusts the TCP checksum of `seg` in `frame` for `old` replaced by `new`.
fn fix_tcp(frame: &mut [u8], seg: &Segment, old: &[u8], new: &[u8]) {
    let mut tcp = TcpPacket::new_unchecked(&mut frame[seg.tcp_at..seg.tcp_end]);
    let sum = adjust(tcp.checksum(), old, new);
    tcp.set_checksum(sum);
}

/// Rewrites the source (`src`) or destination address and port of `seg` in
/// `frame` to `to`. Returns false (frame untouched) across families.
pub(crate) fn nat(frame: &mut [u8], seg: &Segment, src: bool, to: SocketAddr) -> bool {
    let from = if src { seg.src } else { seg.dst };
    let (mut old, mut new, len) = ([0u8; 16], [0u8; 16], if seg.is_ipv4() { 4 } else { 16 });
    match (from.ip(), to.ip()) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            old[..4].copy_from_slice(&a.octets());
            new[..4].copy_from_slice(&b.octets());
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            old = a.octets();
            new = b.octets();
        }
        _ => return false,
    }
    let (old, new) = (&old[..len], &new[..len]);
    let ip = &mut frame[seg.ip_at..seg.tcp_at];
    // Source then destination address: IPv4 at 12 and 16, IPv6 at 8 and 24.
    let at = match (seg.is_ipv4(), src) {
        (true, true) => 12,
        (true, false) => 16,
        (false, true) => 8,
        (false, false) => 24,
    };
    ip[at..at + new.len()].copy_from_slice(new);
    if seg.is_ipv4() {
        let mut v4 = Ipv4Packet::new_unchecked(&mut frame[seg.ip_at..seg.tcp_at]);
        let sum = adjust(v4.checksum(), old, new);
        v4.set_checksum(sum);
    }
    fix_tcp(frame, seg, old, new);
    let mut tcp = TcpPacket::new_unchecked(&mut frame[seg.tcp_at..seg.tcp_end]);
    let old_port = if src { tcp.src_port() } else { tcp.dst_port() };
    if src {
        tcp.set_src_port(to.port());
    } else {
        tcp.set_dst_port(to.port());
    }
    fix_tcp(frame, seg, &old_port.to_be_bytes(), &to.port().to_be_bytes());
    true
}

/// Sets the acknowledgment number of `seg` in `frame` to `ack`.
pub(crate) fn set_ack(frame: &mut [u8], seg: &Segment, ack: u32) {
    TcpPacket::new_unchecked(&mut frame[seg.tcp_at..seg.tcp_end]).set_ack_number(TcpSeqNumber(ack as i32));
    fix_tcp(frame, seg, &seg.ack_number.to_be_bytes(), &ack.to_be_bytes());
}

/// Sets the sequence number of `seg` in `frame` to `seq`.
pub(crate) fn set_seq(frame: &mut [u8], seg: &Segment, seq: u32) {
    TcpPacket::new_unchecked(&mut frame[seg.tcp_at..seg.tcp_end]).set_seq_number(TcpSeqNumber(seq as i32));
    fix_tcp(frame, seg, &seg.seq_number.to_be_bytes(), &seq.to_be_bytes());
}

/// Raises the MSS option of the SYN `seg` in `frame` to `mss` when it is
/// lower; returns the MSS the peer announced (`None`: no MSS option, the
/// segment is left alone and smoltcp uses the default of 536).
pub(crate) fn raise_mss(frame: &mut [u8], seg: &Segment, mss: u16) -> Option<u16> {
    let tcp = TcpPacket::new_unchecked(&frame[seg.tcp_at..seg.tcp_end]);
    let options = tcp.options();
    let mut rest = options;
    let mut found = None;
    while !rest.is_empty() {
        let at = options.len() - rest.len();
        let Ok((next, option)) = TcpOption::parse(rest) else { return None };
        match option {
            TcpOption::EndOfList => break,
            TcpOption::MaxSegmentSize(v) => found = Some((at, v)),
            _ => {}
        }
        rest = next;
    }
    let (at, real) = found?;
    if real < mss {
        // Options start 20 bytes into the header; the value is 2 bytes into the option.
        let field = seg.tcp_at + 20 + at + 2;
        frame[field..field + 2].copy_from_slice(&mss.to_be_bytes());
        fix_tcp(frame, seg, &real.to_be_bytes(), &mss.to_be_bytes());
    }
    Some(real)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::Medium;
    use crate::wire::{Inspected, inspect};

    /// An IPv4 SYN from 10.0.0.1:1234 to 10.0.0.2:80, MSS 1460, valid checksums.
    fn syn() -> Vec<u8> {
        let mut p = vec![
            0x45, 0, 0, 44, 0, 0, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2, // IPv4
            0x04, 0xd2, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0x60, 0x02, 0xff, 0xff, 0, 0, 0, 0, // TCP
            2, 4, 0x05, 0xb4, // MSS 1460
        ];
        let mut ip = Ipv4Packet::new_unchecked(&mut p[..]);
        ip.fill_checksum();
        let (src, dst) = (ip.src_addr().into(), ip.dst_addr().into());
        TcpPacket::new_unchecked(&mut p[20..]).fill_checksum(&src, &dst);
        p
    }

    fn seg(p: &[u8]) -> Segment {
        match inspect(p, Medium::Ip, true) {
            Inspected::Tcp(s) => s,
            other => panic!("not a valid segment: {other:?}"),
        }
    }

    #[test]
    fn every_rewrite_keeps_checksums_valid() {
        let mut p = syn();
        let s = seg(&p);
        assert!(nat(&mut p, &s, false, "192.168.1.9:8080".parse().unwrap()));
        let s = seg(&p);
        assert!(nat(&mut p, &s, true, "172.16.0.3:4000".parse().unwrap()));
        let s = seg(&p);
        assert_eq!((s.src, s.dst), ("172.16.0.3:4000".parse().unwrap(), "192.168.1.9:8080".parse().unwrap()));
        assert!(!nat(&mut p, &s, true, "[::1]:1".parse().unwrap()), "families differ");
        set_ack(&mut p, &s, 0xdead_beef);
        assert_eq!(seg(&p).ack_number, 0xdead_beef);
        let s = seg(&p);
        set_seq(&mut p, &s, 0x0102_0304);
        assert_eq!(seg(&p).seq_number, 0x0102_0304);
        let s = seg(&p);
        assert_eq!(raise_mss(&mut p, &s, 65_000), Some(1460));
        let s = seg(&p);
        assert_eq!(raise_mss(&mut p, &s, 1000), Some(65_000), "raised, and never lowered");
        // `seg` above verified every checksum after each step.
    }

    #[test]
    fn no_mss_option_is_left_alone() {
        let mut p = syn();
        p[32] = 0x50; // header without the option: the MSS bytes become payload
        let mut ip = Ipv4Packet::new_unchecked(&mut p[..]);
        ip.fill_checksum();
        let (src, dst) = (ip.src_addr().into(), ip.dst_addr().into());
        TcpPacket::new_unchecked(&mut p[20..]).fill_checksum(&src, &dst);
        let before = p.clone();
        let s = seg(&p);
        assert_eq!(raise_mss(&mut p, &s, 9000), None);
        assert_eq!(p, before);
    }
}

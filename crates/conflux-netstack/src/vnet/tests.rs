//! Unit tests of the virtio net header: golden bytes, malformed headers,
//! the GSO partial-checksum conversion (completed and compared with the full
//! checksum), and arbitrary input.

use smoltcp::wire::{IpAddress, Ipv4Packet, Ipv6Packet, TcpPacket};

use super::*;

const SRC4: [u8; 4] = [10, 78, 0, 2];
const DST4: [u8; 4] = [10, 78, 0, 1];
const SRC6: [u8; 16] = [0xfd, 0x78, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
const DST6: [u8; 16] = [0xfd, 0x78, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];

/// A TCP segment (PSH|ACK, `payload` bytes of a pattern) over IPv4 or IPv6,
/// behind an Ethernet header if `eth`, every checksum complete.
fn tcp_frame(v6: bool, eth: bool, payload: usize) -> Vec<u8> {
    let l3 = if eth { 14 } else { 0 };
    let ip_hdr = if v6 { 40 } else { 20 };
    let mut f = vec![0u8; l3 + ip_hdr + 20 + payload];
    if eth {
        f[..6].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
        f[12..14].copy_from_slice(if v6 { &[0x86, 0xdd] } else { &[0x08, 0x00] });
    }
    let tcp_len = 20 + payload;
    for (i, b) in f[l3 + ip_hdr + 20..].iter_mut().enumerate() {
        *b = (i * 7 + i / 251) as u8;
    }
    let (src, dst): (IpAddress, IpAddress) = if v6 {
        let mut ip = Ipv6Packet::new_unchecked(&mut f[l3..]);
        ip.set_version(6);
        ip.set_payload_len(tcp_len as u16);
        ip.set_next_header(IpProtocol::Tcp);
        ip.set_hop_limit(64);
        ip.set_src_addr(SRC6.into());
        ip.set_dst_addr(DST6.into());
        (IpAddress::Ipv6(SRC6.into()), IpAddress::Ipv6(DST6.into()))
    } else {
        let mut ip = Ipv4Packet::new_unchecked(&mut f[l3..]);
        ip.set_version(4);
        ip.set_header_len(20);
        ip.set_total_len((20 + tcp_len) as u16);
        ip.set_hop_limit(64);
        ip.set_next_header(IpProtocol::Tcp);
        ip.set_dont_frag(true);
        ip.set_src_addr(SRC4.into());
        ip.set_dst_addr(DST4.into());
        ip.fill_checksum();
        (IpAddress::Ipv4(SRC4.into()), IpAddress::Ipv4(DST4.into()))
    };
    let mut tcp = TcpPacket::new_unchecked(&mut f[l3 + ip_hdr..]);
    tcp.set_src_port(40000);
    tcp.set_dst_port(5001);
    tcp.set_seq_number(smoltcp::wire::TcpSeqNumber(0x1234_5678));
    tcp.set_ack_number(smoltcp::wire::TcpSeqNumber(0x0abc_def0));
    tcp.set_header_len(20);
    tcp.set_ack(true);
    tcp.set_psh(true);
    tcp.set_window_len(0xffff);
    tcp.fill_checksum(&src, &dst);
    assert!(tcp.verify_checksum(&src, &dst));
    f
}

#[test]
fn golden_bytes_round_trip() {
    let hdr = VnetHdr {
        needs_csum: true,
        data_valid: false,
        gso: Gso::TcpV4,
        ecn: true,
        hdr_len: 66,
        gso_size: 1448,
        csum_start: 34,
        csum_offset: 16,
    };
    let golden = [0x01, 0x81, 66, 0, 0xa8, 0x05, 34, 0, 16, 0];
    assert_eq!(hdr.to_bytes(), golden);
    assert_eq!(VnetHdr::parse(&golden), Ok(hdr));
    // A 12-byte header: num_buffers ignored on parse, zeroed on emit.
    let mut twelve = [0xeeu8; HDR_LEN_V1];
    twelve[..HDR_LEN].copy_from_slice(&golden);
    assert_eq!(VnetHdr::parse(&twelve), Ok(hdr));
    hdr.emit(&mut twelve);
    assert_eq!(twelve[..HDR_LEN], golden);
    assert_eq!(twelve[HDR_LEN..], [0, 0]);

    let v6 = VnetHdr { gso: Gso::TcpV6, ecn: false, data_valid: true, needs_csum: false, ..hdr };
    let bytes = v6.to_bytes();
    assert_eq!(bytes[..2], [0x02, 0x04]);
    assert_eq!(VnetHdr::parse(&bytes), Ok(v6));
    assert_eq!(VnetHdr::default().to_bytes(), [0; HDR_LEN]);
    assert_eq!(VnetHdr::parse(&[0; HDR_LEN]), Ok(VnetHdr::default()));
}

#[test]
fn malformed_headers_are_typed_errors() {
    assert_eq!(VnetHdr::parse(&[]), Err(VnetError::Truncated { len: 0 }));
    assert_eq!(VnetHdr::parse(&[0; 9]), Err(VnetError::Truncated { len: 9 }));
    let with = |flags: u8, gso: u8, gso_size: u16| {
        let mut b = [0u8; HDR_LEN];
        b[0] = flags;
        b[1] = gso;
        b[4..6].copy_from_slice(&gso_size.to_le_bytes());
        VnetHdr::parse(&b)
    };
    assert_eq!(with(0x04, 0, 0), Err(VnetError::Flags(0x04)));
    assert_eq!(with(0x80, 0, 0), Err(VnetError::Flags(0x80)));
    assert_eq!(with(0, 3, 1400), Err(VnetError::GsoType(3)), "UDP (UFO) was never negotiated");
    assert_eq!(with(0, 5, 1400), Err(VnetError::GsoType(5)), "UDP_L4 was never negotiated");
    assert_eq!(with(0, 0x80, 0), Err(VnetError::GsoType(0x80)), "ECN without a GSO type");
    assert_eq!(with(1, 1, 0), Err(VnetError::GsoSize(Gso::TcpV4)));
    assert_eq!(with(1, 4, 0), Err(VnetError::GsoSize(Gso::TcpV6)));
    assert!(with(1, 0x84, 1).is_ok());
    // Each error names the wrong part.
    assert!(with(0, 3, 1).unwrap_err().to_string().contains("gso_type 0x03"));
}

#[test]
fn rx_state_follows_the_flags() {
    let frame = tcp_frame(false, true, 100);
    let partial = VnetHdr { needs_csum: true, csum_start: 34, csum_offset: 16, ..VnetHdr::default() };
    assert_eq!(partial.rx_state(&frame), Ok((RxCsumState::Partial, None)));
    let both = VnetHdr { data_valid: true, ..partial };
    assert_eq!(both.rx_state(&frame), Ok((RxCsumState::Partial, None)));
    let valid = VnetHdr { data_valid: true, ..VnetHdr::default() };
    assert_eq!(valid.rx_state(&frame), Ok((RxCsumState::Verified, None)));
    assert_eq!(VnetHdr::default().rx_state(&frame), Ok((RxCsumState::Unknown, None)));
    let gso = VnetHdr { gso: Gso::TcpV4, gso_size: 1448, ..partial };
    assert_eq!(gso.rx_state(&frame), Ok((RxCsumState::Partial, Some(1448))));
    // The checksum field must lie inside the frame.
    let out = VnetHdr { csum_start: 34, csum_offset: (frame.len() - 34 - 1) as u16, ..partial };
    assert_eq!(
        out.rx_state(&frame),
        Err(VnetError::CsumRange { start: 34, offset: out.csum_offset, len: frame.len() })
    );
    let huge = VnetHdr { csum_start: u16::MAX, csum_offset: u16::MAX, ..partial };
    assert!(huge.rx_state(&frame).is_err());
    assert!(partial.rx_state(&[]).is_err());
}

/// The partial form, completed as the kernel would, is the full checksum
/// again; nothing else in the frame changed.
#[test]
fn gso_conversion_completes_to_the_full_checksum() {
    for (v6, eth) in [(false, true), (true, true), (false, false), (true, false)] {
        for payload in [1449, 2896, 9000, 65535 - 60 - 20] {
            let full = tcp_frame(v6, eth, payload);
            let mut frame = full.clone();
            let hdr = gso_header(&mut frame, if eth { L2::Ethernet } else { L2::Ip }, 1448, 9000).unwrap();
            let l3 = if eth { 14 } else { 0 };
            let ip_hdr = if v6 { 40 } else { 20 };
            let expect = VnetHdr {
                needs_csum: true,
                data_valid: false,
                gso: if v6 { Gso::TcpV6 } else { Gso::TcpV4 },
                ecn: false,
                hdr_len: (l3 + ip_hdr + 20) as u16,
                gso_size: 1448,
                csum_start: (l3 + ip_hdr) as u16,
                csum_offset: 16,
            };
            assert_eq!(hdr, expect, "v6 {v6} eth {eth} payload {payload}");
            let at = l3 + ip_hdr + 16;
            assert_ne!(frame[at..at + 2], full[at..at + 2], "the field now holds the pseudo-header sum");
            assert_eq!(frame[..at], full[..at]);
            assert_eq!(frame[at + 2..], full[at + 2..]);
            complete_partial(&mut frame, hdr.csum_start, hdr.csum_offset).unwrap();
            assert_eq!(frame, full, "v6 {v6} eth {eth} payload {payload}");
            // And the header survives the wire.
            assert_eq!(VnetHdr::parse(&hdr.to_bytes()), Ok(hdr));
            assert_eq!(hdr.rx_state(&frame).map(|s| s.0), Ok(RxCsumState::Partial));
        }
    }
}

#[test]
fn one_segment_needs_no_header_and_cwr_sets_ecn() {
    let full = tcp_frame(false, true, 1448);
    let mut frame = full.clone();
    assert_eq!(gso_header(&mut frame, L2::Ethernet, 1448, 1500), Ok(VnetHdr::default()));
    assert_eq!(frame, full);

    let mut frame = tcp_frame(true, true, 3000);
    TcpPacket::new_unchecked(&mut frame[14 + 40..]).set_cwr(true);
    let hdr = gso_header(&mut frame, L2::Ethernet, 1000, 1500).unwrap();
    assert!(hdr.ecn);
    assert_eq!(hdr.to_bytes()[1], 0x84);
}

/// Segments never outgrow the MTU: TCP options (here 12 bytes) come off the
/// segment size.
#[test]
fn segments_fit_the_mtu_with_tcp_options() {
    for v6 in [false, true] {
        let ip_hdr = if v6 { 40 } else { 20 };
        let mut frame = tcp_frame(v6, true, 5000);
        TcpPacket::new_unchecked(&mut frame[14 + ip_hdr..]).set_header_len(32);
        let mss = 1500 - ip_hdr as u16 - 20;
        let hdr = gso_header(&mut frame, L2::Ethernet, mss, 1500).unwrap();
        assert_eq!(usize::from(hdr.gso_size), 1500 - ip_hdr - 32, "v6 {v6}");
        assert_eq!(usize::from(hdr.hdr_len), 14 + ip_hdr + 32);
        // A smaller MSS stays as it is.
        let mut frame = tcp_frame(v6, true, 5000);
        assert_eq!(gso_header(&mut frame, L2::Ethernet, 1000, 1500).unwrap().gso_size, 1000);
    }
    let mut frame = tcp_frame(false, true, 5000);
    assert_eq!(
        gso_header(&mut frame, L2::Ethernet, 1000, 40),
        Err(VnetError::Frame("the headers leave no payload within the MTU"))
    );
}

#[test]
fn frames_that_cannot_be_segmented_are_errors_and_untouched() {
    let check = |mut frame: Vec<u8>, l2: L2, what: &str| {
        let before = frame.clone();
        let err = gso_header(&mut frame, l2, 500, 1500).unwrap_err();
        assert!(err.to_string().contains(what), "{err} should say {what:?}");
        assert_eq!(frame, before);
    };
    let mut udp = tcp_frame(false, true, 2000);
    udp[14 + 9] = 17;
    check(udp, L2::Ethernet, "not TCP");
    let mut arp = tcp_frame(false, true, 2000);
    arp[12..14].copy_from_slice(&[0x08, 0x06]);
    check(arp, L2::Ethernet, "not IPv4 or IPv6");
    let mut frag = tcp_frame(false, true, 2000);
    frag[14 + 6] = 0x20; // more fragments
    check(frag, L2::Ethernet, "fragment");
    let mut short = tcp_frame(false, true, 2000);
    short.truncate(14 + 20 + 10);
    check(short, L2::Ethernet, "malformed IPv4");
    let mut ext = tcp_frame(true, false, 2000);
    ext[6] = 0; // hop-by-hop options first
    check(ext, L2::Ip, "not TCP");
    check(vec![0x45], L2::Ip, "IPv4");
    check(vec![], L2::Ip, "not IPv4 or IPv6");
    check(vec![0; 10], L2::Ethernet, "Ethernet");
    let mut bad_tcp = tcp_frame(false, false, 20);
    bad_tcp[20 + 12] = 0xf0; // data offset 60 bytes, beyond the 40-byte segment
    check(bad_tcp, L2::Ip, "TCP");
    assert_eq!(
        gso_header(&mut tcp_frame(false, true, 9000), L2::Ethernet, 0, 1500),
        Err(VnetError::GsoSize(Gso::TcpV4))
    );
    assert!(complete_partial(&mut [0; 4], 2, 1).is_err());
}

/// Arbitrary bytes never panic any decoder or conversion.
#[test]
fn arbitrary_bytes_never_panic() {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let templates = [tcp_frame(false, true, 3000), tcp_frame(true, true, 3000), tcp_frame(false, false, 300)];
    for i in 0..20_000 {
        let mut frame = templates[i % templates.len()].clone();
        let len = (next() as usize) % (frame.len() + 1);
        frame.truncate(len);
        for _ in 0..(next() % 4) {
            if !frame.is_empty() {
                let at = (next() as usize) % frame.len().min(80);
                frame[at] = next() as u8;
            }
        }
        let hdr_bytes = next().to_le_bytes();
        if let Ok(hdr) = VnetHdr::parse(&hdr_bytes[..(i % 11).min(8)]) {
            let _ = hdr.rx_state(&frame);
        }
        if let Ok(hdr) = VnetHdr::parse(&[hdr_bytes.as_slice(), &[0, 0]].concat()) {
            let _ = hdr.rx_state(&frame);
            let _ = complete_partial(&mut frame, hdr.csum_start, hdr.csum_offset);
        }
        let l2 = if i % 3 == 2 { L2::Ip } else { L2::Ethernet };
        let _ = gso_header(&mut frame, l2, (next() % 2000) as u16, (next() % 3000) as usize);
    }
}

#[test]
fn partial_header_leaves_the_kernel_a_checksum_it_completes_to_the_full_one() {
    for (v6, eth) in [(false, true), (true, true), (false, false), (true, false)] {
        let full = tcp_frame(v6, eth, 3000);
        let l3 = if eth { 14 } else { 0 };
        let at = l3 + if v6 { 40 } else { 20 } + usize::from(TCP_CSUM_OFFSET);
        // The stack's form with tcp_tx_csum: the field left 0.
        let mut frame = full.clone();
        frame[at..at + 2].copy_from_slice(&[0, 0]);
        let l2 = if eth { L2::Ethernet } else { L2::Ip };
        let hdr = partial_header(&mut frame, l2).expect("a TCP frame");
        assert!(hdr.needs_csum && !hdr.data_valid, "{hdr:?}");
        assert_eq!(hdr.gso, Gso::None);
        assert_eq!(usize::from(hdr.csum_start), at - usize::from(TCP_CSUM_OFFSET));
        assert_eq!(hdr.csum_offset, TCP_CSUM_OFFSET);
        complete_partial(&mut frame, hdr.csum_start, hdr.csum_offset).unwrap();
        assert_eq!(frame, full, "v6 {v6} eth {eth}: completed as the full checksum");
    }
}

#[test]
fn partial_header_leaves_frames_other_than_tcp_alone() {
    let mut frame = tcp_frame(false, true, 100);
    // Protocol UDP (the header checksum is not looked at here).
    frame[14 + 9] = 17;
    let before = frame.clone();
    assert_eq!(partial_header(&mut frame, L2::Ethernet), None);
    assert_eq!(frame, before);
    // ARP.
    let mut arp = vec![0u8; 42];
    arp[12..14].copy_from_slice(&[0x08, 0x06]);
    assert_eq!(partial_header(&mut arp, L2::Ethernet), None);
    // Truncated TCP header; an IPv4 total length that is not the frame's.
    let mut short = tcp_frame(false, false, 0);
    short.truncate(30);
    assert_eq!(partial_header(&mut short, L2::Ip), None);
    let mut long = tcp_frame(false, false, 10);
    long.push(0);
    assert_eq!(partial_header(&mut long, L2::Ip), None);
}

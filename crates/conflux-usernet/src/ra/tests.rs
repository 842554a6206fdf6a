//! Golden bytes of the advertisement (checksum computed here, not by
//! smoltcp) and answers to hand-built router solicitations.

use std::net::Ipv6Addr;
use std::time::Duration;

use super::*;

/// slirp's gateway MAC for 10.0.2.2.
const ROUTER: [u8; 6] = [0x52, 0x55, 0x0a, 0x00, 0x02, 0x02];

pub(crate) fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

/// The ICMPv6 checksum (RFC 4443 2.3) of the IPv6 packet in `frame` at 14.., set in place.
pub(crate) fn fix_checksum(frame: &mut [u8]) {
    let ip = &frame[14..];
    let len = u16::from_be_bytes([ip[4], ip[5]]) as usize;
    let mut sum: u32 = 0;
    let mut add = |b: &[u8]| {
        for c in b.chunks(2) {
            sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
        }
    };
    add(&ip[8..40]); // source and destination
    add(&(len as u32).to_be_bytes());
    add(&[0, 0, 0, 58]);
    let mut body = ip[40..40 + len].to_vec();
    body[2..4].copy_from_slice(&[0, 0]);
    add(&body);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let ck = !(sum as u16);
    frame[14 + 40 + 2..14 + 40 + 4].copy_from_slice(&ck.to_be_bytes());
}

/// The advertisement a default config's router at `ROUTER` sends to `dst` / `dst_mac`.
fn golden(dst_mac: &str, dst: &str) -> Vec<u8> {
    let mut f = hex(&format!(
        "{dst_mac} 5255 0a00 0202 86dd
         6000 0000 0058 3aff  fe80 0000 0000 0000 5055 0aff fe00 0202  {dst}
         8600 0000 4000 0708 0000 0000 0000 0000
         0101 5255 0a00 0202
         0501 0000 0000 05dc
         0304 40c0 0027 8d00 0009 3a80 0000 0000 fd00 0000 0000 0000 0000 0000 0000 0000
         1903 0000 0000 0708 fd00 0000 0000 0000 0000 0000 0000 0003"
    ));
    fix_checksum(&mut f);
    f
}

#[test]
fn the_unsolicited_advertisement_is_the_golden_frame() {
    let ra = RouterAdvertiser::new(&UsernetConfig::new(), ROUTER);
    assert_eq!(ra.link_local(), "fe80::5055:aff:fe00:202".parse::<Ipv6Addr>().unwrap());
    // To 33:33:00:00:00:01 / ff02::1; hop limit 255; RA with hop limit 64,
    // router lifetime 1800 s; options: source link-layer address, MTU 1500,
    // prefix fd00::/64 on-link and autonomous, valid 30 days, preferred 7 days,
    // and the DNS server fd00::3 (RFC 8106 RDNSS, lifetime 1800 s).
    let want = golden("3333 0000 0001", "ff02 0000 0000 0000 0000 0000 0000 0001");
    assert_eq!(ra.advertisement(), want);
}

/// A router solicitation from `GUEST` at `src` (hop limit `hop`) to ff02::2.
pub(crate) fn solicitation(src: &str, hop: u8) -> Vec<u8> {
    let src: Ipv6Addr = src.parse().unwrap();
    let mut f = hex("3333 0000 0002 5254 0012 3456 86dd 6000 0000 0010 3a00");
    f[21] = hop;
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&"ff02::2".parse::<Ipv6Addr>().unwrap().octets());
    f.extend_from_slice(&hex("8500 0000 0000 0000 0101 5254 0012 3456"));
    fix_checksum(&mut f);
    f
}

#[test]
fn a_solicitation_is_answered_to_the_soliciting_host() {
    let ra = RouterAdvertiser::new(&UsernetConfig::new(), ROUTER);
    let reply = ra.handle_frame(&solicitation("fe80::5054:ff:fe12:3456", 255)).expect("an answer");
    let want = golden("5254 0012 3456", "fe80 0000 0000 0000 5054 00ff fe12 3456");
    assert_eq!(reply, want);
    // From the unspecified address: to all nodes.
    assert_eq!(ra.handle_frame(&solicitation("::", 255)), Some(ra.advertisement()));
}

#[test]
fn anything_else_is_not_answered() {
    let ra = RouterAdvertiser::new(&UsernetConfig::new(), ROUTER);
    // Forwarded (hop limit below 255): RFC 4861 says drop.
    assert_eq!(ra.handle_frame(&solicitation("fe80::1", 64)), None);
    // A bad checksum.
    let mut bad = solicitation("fe80::1", 255);
    bad[14 + 40 + 2] ^= 1;
    assert_eq!(ra.handle_frame(&bad), None);
    // Our own advertisement, an ARP frame, a runt.
    assert_eq!(ra.handle_frame(&ra.advertisement()), None);
    assert_eq!(ra.handle_frame(&hex("ffff ffff ffff 5254 0012 3456 0806 0001 0800 0604 0001")), None);
    assert_eq!(ra.handle_frame(&[0x33; 10]), None);
}

#[test]
fn the_config_shapes_the_advertisement() {
    let mut config = UsernetConfig::new().mtu(65520);
    config.network6 = "fd42:1:2:3::/64".parse().unwrap();
    let ra = RouterAdvertiser::new(&config, ROUTER).router_lifetime(Duration::ZERO);
    let f = ra.advertisement();
    let icmp = &f[54..];
    assert_eq!(icmp[6..8], [0, 0], "router lifetime 0: not a default router");
    assert_eq!(icmp[16 + 8 + 4..16 + 8 + 8], 65520u32.to_be_bytes(), "the MTU option");
    assert_eq!(icmp[32 + 16..32 + 24], [0xfd, 0x42, 0, 1, 0, 2, 0, 3], "the prefix");
    assert_eq!(DEFAULT_ROUTER_LIFETIME, Duration::from_secs(1800));
    config.dns6 = "fd42:1:2:3::53".parse().unwrap();
    let f = RouterAdvertiser::new(&config, ROUTER).advertisement();
    assert_eq!(rdnss(&f), vec![(1800, "fd42:1:2:3::53".parse().unwrap())], "the config's DNS address");
    let capped = RouterAdvertiser::new(&config, ROUTER).router_lifetime(Duration::from_secs(100_000)).advertisement();
    assert_eq!(capped[54 + 6..54 + 8], 9000u16.to_be_bytes(), "at most 9000 s (RFC 4861)");
}

/// The RDNSS options (RFC 8106, type 25) of the router advertisement in
/// `frame`, as (lifetime, address) pairs, read with smoltcp's wire types:
/// the frame parses as an advertisement (checksum verified) with its
/// usual options, and each option is walked.
fn rdnss(frame: &[u8]) -> Vec<(u32, Ipv6Addr)> {
    use smoltcp::wire::{NdiscOption, NdiscOptionRepr};
    let eth = EthernetFrame::new_checked(frame).unwrap();
    let ip = Ipv6Packet::new_checked(eth.payload()).unwrap();
    let ip_repr = Ipv6Repr::parse(&ip).unwrap();
    let icmp = Icmpv6Packet::new_checked(ip.payload()).unwrap();
    let caps = ChecksumCapabilities::default();
    let repr = Icmpv6Repr::parse(&ip_repr.src_addr, &ip_repr.dst_addr, &icmp, &caps).expect("a valid ICMPv6 message");
    let Icmpv6Repr::Ndisc(NdiscRepr::RouterAdvert { mtu, prefix_info, .. }) = repr else { panic!("{repr:?}") };
    assert!(mtu.is_some() && prefix_info.is_some(), "the other options still parse");
    // The options after the 16-byte RA header.
    let mut options = &ip.payload()[16..];
    let mut found = Vec::new();
    while !options.is_empty() {
        let opt = NdiscOption::new_checked(options).unwrap();
        let len = usize::from(opt.data_len()) * 8;
        if let NdiscOptionRepr::Unknown { type_: 25, length, data } = NdiscOptionRepr::parse(&opt).unwrap() {
            assert_eq!(length, 3, "one address");
            let lifetime = u32::from_be_bytes(data[2..6].try_into().unwrap());
            found.push((lifetime, Ipv6Addr::from(<[u8; 16]>::try_from(&data[6..22]).unwrap())));
        }
        options = &options[len..];
    }
    found
}

#[test]
fn advertisements_name_the_dns_server_for_an_ipv6_only_guest() {
    let ra = RouterAdvertiser::new(&UsernetConfig::new(), ROUTER);
    let want = vec![(1800, "fd00::3".parse().unwrap())];
    assert_eq!(rdnss(&ra.advertisement()), want, "unsolicited");
    let reply = ra.handle_frame(&solicitation("fe80::5054:ff:fe12:3456", 255)).unwrap();
    assert_eq!(rdnss(&reply), want, "solicited");
}

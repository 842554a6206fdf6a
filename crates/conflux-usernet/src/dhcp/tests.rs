//! The server against a real client's DISCOVERs (busybox udhcpc 1.35,
//! captured on a veth) and hand-built REQUESTs, RELEASEs and INFORMs; the
//! replies are read back by a parser of this file, not by smoltcp.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use super::*;

/// busybox udhcpc 1.35.0's DISCOVER from 52:54:00:12:34:56 (xid 3206bc3f,
/// flags 0: unicast replies; options 53, 57 max size 576, 55 parameter
/// list 1 3 6 12 15 28 42, 60 "udhcp 1.35.0", 61 client id), 300 bytes.
pub(crate) const UDHCPC_DISCOVER: &str = "010106003206bc3f000000000000000000000000000000000000000052540012345600000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000638253633501013902024037070103060c0f1c2a3c0c756468637020312e33352e303d0701525400123456ff0000000000000000000000000000000000000000";

/// The same client asking for 10.0.2.100 (`udhcpc -r 10.0.2.100`: option 50), xid d9ef4543.
const UDHCPC_DISCOVER_REQUESTING: &str = "01010600d9ef45430000000000000000000000000000000000000000525400123456000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000006382536335010132040a0002643902024037070103060c0f1c2a3c0c756468637020312e33352e303d0701525400123456ff0000000000000000000000000000";

pub(crate) const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
const OTHER: [u8; 6] = [0x52, 0x54, 0x00, 0xaa, 0xbb, 0xcc];

pub(crate) fn hex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

/// A client message built by hand: BOOTREQUEST, Ethernet, then the options.
fn client_msg(kind: u8, xid: u32, mac: [u8; 6], ciaddr: Ipv4Addr, flags: u16, options: &[(u8, &[u8])]) -> Vec<u8> {
    let mut m = vec![0u8; 240];
    m[..4].copy_from_slice(&[1, 1, 6, 0]);
    m[4..8].copy_from_slice(&xid.to_be_bytes());
    m[10..12].copy_from_slice(&flags.to_be_bytes());
    m[12..16].copy_from_slice(&ciaddr.octets());
    m[28..34].copy_from_slice(&mac);
    m[236..240].copy_from_slice(&[0x63, 0x82, 0x53, 0x63]);
    m.extend_from_slice(&[53, 1, kind]);
    for (k, v) in options {
        m.push(*k);
        m.push(v.len() as u8);
        m.extend_from_slice(v);
    }
    m.push(255);
    m
}

fn request(xid: u32, mac: [u8; 6], requested: Option<Ipv4Addr>, server: Option<Ipv4Addr>, ciaddr: Ipv4Addr) -> Vec<u8> {
    let (r, s) = (requested.map(|a| a.octets()), server.map(|a| a.octets()));
    let mut opts: Vec<(u8, &[u8])> = Vec::new();
    if let Some(r) = &r {
        opts.push((50, r));
    }
    if let Some(s) = &s {
        opts.push((54, s));
    }
    client_msg(3, xid, mac, ciaddr, 0, &opts)
}

/// A reply read back: op, xid, ciaddr, yiaddr, flags, chaddr and options in order.
#[derive(Debug)]
struct Parsed {
    op: u8,
    xid: u32,
    flags: u16,
    ciaddr: Ipv4Addr,
    yiaddr: Ipv4Addr,
    chaddr: [u8; 6],
    options: Vec<(u8, Vec<u8>)>,
}

impl Parsed {
    fn option(&self, kind: u8) -> Option<&[u8]> {
        self.options.iter().find(|(k, _)| *k == kind).map(|(_, v)| &v[..])
    }
    fn kind(&self) -> u8 {
        self.option(53).unwrap()[0]
    }
}

fn parse(m: &[u8]) -> Parsed {
    assert!(m.len() >= 300, "BOOTP replies are at least 300 bytes, got {}", m.len());
    assert_eq!(m[1..4], [1, 6, 0], "htype Ethernet, hlen 6, hops 0");
    assert_eq!(m[236..240], [0x63, 0x82, 0x53, 0x63], "magic cookie");
    let mut options = Vec::new();
    let mut i = 240;
    while m[i] != 255 {
        if m[i] == 0 {
            i += 1;
            continue;
        }
        let len = m[i + 1] as usize;
        options.push((m[i], m[i + 2..i + 2 + len].to_vec()));
        i += 2 + len;
    }
    assert!(m[i + 1..].iter().all(|&b| b == 0), "only padding after the end option");
    let v4 = |at: usize| Ipv4Addr::new(m[at], m[at + 1], m[at + 2], m[at + 3]);
    Parsed {
        op: m[0],
        xid: u32::from_be_bytes(m[4..8].try_into().unwrap()),
        flags: u16::from_be_bytes([m[10], m[11]]),
        ciaddr: v4(12),
        yiaddr: v4(16),
        chaddr: m[28..34].try_into().unwrap(),
        options,
    }
}

fn server() -> DhcpServer {
    DhcpServer::new(&UsernetConfig::new())
}

#[test]
fn udhcpc_discover_gets_the_first_lease_with_every_option() {
    let mut s = server();
    let now = Instant::now();
    let reply = s.handle_input(now, &hex(UDHCPC_DISCOVER)).unwrap().expect("an offer");
    assert_eq!(reply.to, DhcpTo::Unicast { ip: ip("10.0.2.100"), mac: MAC }, "flags 0: unicast to the offer");
    let p = parse(&reply.payload);
    assert_eq!((p.op, p.xid, p.flags, p.chaddr), (2, 0x3206_bc3f, 0, MAC));
    assert_eq!((p.ciaddr, p.yiaddr), (Ipv4Addr::UNSPECIFIED, ip("10.0.2.100")));
    let want: Vec<(u8, Vec<u8>)> = vec![
        (53, vec![2]),                // OFFER
        (54, vec![10, 0, 2, 2]),      // server id: the gateway
        (3, vec![10, 0, 2, 2]),       // router
        (1, vec![255, 255, 255, 0]),  // subnet mask
        (51, vec![0, 0, 0x0e, 0x10]), // lease time 3600 s
        (6, vec![10, 0, 2, 3]),       // DNS: the forwarder
        (26, vec![0x05, 0xdc]),       // MTU 1500
    ];
    assert_eq!(p.options, want);
    // Golden bytes of the options area (after the magic cookie).
    let end = 240 + want.iter().map(|(_, v)| 2 + v.len()).sum::<usize>() + 1;
    assert_eq!(
        reply.payload[240..end],
        hex("3501023604 0a0002020304 0a000202010 4ffffff00330400000e1006040a0002031a0205dcff"
            .replace(' ', "")
            .as_str())
    );
    // Offered, not bound.
    assert_eq!(s.lease_of(MAC, now), None);
}

#[test]
fn discover_request_ack_and_the_lease_is_remembered_per_mac() {
    let mut s = server().lease_time(Duration::from_secs(600));
    let t0 = Instant::now();
    let offer = parse(&s.handle_input(t0, &hex(UDHCPC_DISCOVER)).unwrap().unwrap().payload);
    let req = request(0x3206_bc3f, MAC, Some(offer.yiaddr), Some(ip("10.0.2.2")), Ipv4Addr::UNSPECIFIED);
    let reply = s.handle_input(t0, &req).unwrap().unwrap();
    let ack = parse(&reply.payload);
    assert_eq!((ack.kind(), ack.yiaddr, ack.xid), (5, ip("10.0.2.100"), 0x3206_bc3f));
    assert_eq!(ack.option(51), Some(&600u32.to_be_bytes()[..]));
    assert_eq!(ack.option(26), Some(&[0x05, 0xdc][..]));
    assert_eq!(reply.to, DhcpTo::Unicast { ip: ip("10.0.2.100"), mac: MAC });
    assert_eq!(s.lease_of(MAC, t0), Some(ip("10.0.2.100")));
    // Another client gets the next address; the first one the same again.
    let other = client_msg(1, 7, OTHER, Ipv4Addr::UNSPECIFIED, 0, &[]);
    assert_eq!(parse(&s.handle_input(t0, &other).unwrap().unwrap().payload).yiaddr, ip("10.0.2.101"));
    assert_eq!(parse(&s.handle_input(t0, &hex(UDHCPC_DISCOVER)).unwrap().unwrap().payload).yiaddr, ip("10.0.2.100"));
    // Even after its lease expired, while nobody else took the address.
    let later = t0 + Duration::from_secs(601);
    assert_eq!(s.lease_of(MAC, later), None);
    assert_eq!(parse(&s.handle_input(later, &hex(UDHCPC_DISCOVER)).unwrap().unwrap().payload).yiaddr, ip("10.0.2.100"));
}

#[test]
fn a_request_for_a_foreign_address_is_naked_by_broadcast() {
    let mut s = server();
    let now = Instant::now();
    for foreign in ["192.168.1.5", "10.0.2.2", "10.0.2.3", "10.0.2.99", "10.0.2.255"] {
        let reply =
            s.handle_input(now, &request(9, MAC, Some(ip(foreign)), None, Ipv4Addr::UNSPECIFIED)).unwrap().unwrap();
        let nak = parse(&reply.payload);
        assert_eq!((nak.kind(), nak.yiaddr, reply.to), (6, Ipv4Addr::UNSPECIFIED, DhcpTo::Broadcast), "{foreign}");
        assert_eq!(nak.option(54), Some(&[10, 0, 2, 2][..]));
        assert_eq!(
            (nak.option(51), nak.option(1), nak.option(3)),
            (None, None, None),
            "a NAK carries no configuration"
        );
    }
    // An address bound to another client is foreign too.
    s.handle_input(now, &request(1, OTHER, Some(ip("10.0.2.100")), None, Ipv4Addr::UNSPECIFIED)).unwrap().unwrap();
    assert_eq!(s.lease_of(OTHER, now), Some(ip("10.0.2.100")));
    let reply =
        s.handle_input(now, &request(2, MAC, Some(ip("10.0.2.100")), None, Ipv4Addr::UNSPECIFIED)).unwrap().unwrap();
    assert_eq!(parse(&reply.payload).kind(), 6);
    // A client that asks for nothing at all is naked.
    let reply = s.handle_input(now, &request(3, MAC, None, None, Ipv4Addr::UNSPECIFIED)).unwrap().unwrap();
    assert_eq!(parse(&reply.payload).kind(), 6);
}

#[test]
fn init_reboot_renew_and_the_broadcast_flag() {
    let mut s = server();
    let now = Instant::now();
    // INIT-REBOOT after the server restarted: a free address in the pool is acked.
    let reply =
        s.handle_input(now, &request(1, MAC, Some(ip("10.0.2.150")), None, Ipv4Addr::UNSPECIFIED)).unwrap().unwrap();
    assert_eq!((parse(&reply.payload).kind(), parse(&reply.payload).yiaddr), (5, ip("10.0.2.150")));
    // RENEWING: ciaddr set, no option 50: unicast to ciaddr.
    let reply = s.handle_input(now, &request(2, MAC, None, None, ip("10.0.2.150"))).unwrap().unwrap();
    let ack = parse(&reply.payload);
    assert_eq!((ack.kind(), ack.ciaddr, ack.yiaddr), (5, ip("10.0.2.150"), ip("10.0.2.150")));
    assert_eq!(reply.to, DhcpTo::Unicast { ip: ip("10.0.2.150"), mac: MAC });
    // The broadcast flag: the offer is broadcast, with the flag echoed.
    let discover = client_msg(1, 3, OTHER, Ipv4Addr::UNSPECIFIED, 0x8000, &[]);
    let reply = s.handle_input(now, &discover).unwrap().unwrap();
    assert_eq!((reply.to, parse(&reply.payload).flags), (DhcpTo::Broadcast, 0x8000));
    // The requested-address option of a DISCOVER is honoured when free.
    let mut s = server();
    let discover = client_msg(1, 4, OTHER, Ipv4Addr::UNSPECIFIED, 0, &[(50, &[10, 0, 2, 120])]);
    assert_eq!(parse(&s.handle_input(now, &discover).unwrap().unwrap().payload).yiaddr, ip("10.0.2.120"));
    assert_eq!(
        parse(&s.handle_input(now, &hex(UDHCPC_DISCOVER_REQUESTING)).unwrap().unwrap().payload).yiaddr,
        ip("10.0.2.100")
    );
    // INFORM: configuration without an address or a lease time, to ciaddr.
    let inform = client_msg(8, 5, OTHER, ip("10.0.2.7"), 0, &[]);
    let reply = s.handle_input(now, &inform).unwrap().unwrap();
    let ack = parse(&reply.payload);
    assert_eq!(
        (ack.kind(), ack.yiaddr, ack.option(51), ack.option(1)),
        (5, Ipv4Addr::UNSPECIFIED, None, Some(&[255, 255, 255, 0][..]))
    );
    assert_eq!(reply.to, DhcpTo::Unicast { ip: ip("10.0.2.7"), mac: OTHER });
}

#[test]
fn a_request_for_another_server_frees_the_offer_and_release_frees_the_lease() {
    let mut s = server();
    let now = Instant::now();
    s.handle_input(now, &hex(UDHCPC_DISCOVER)).unwrap().unwrap();
    // The client chose another server: no reply, and .100 is free for OTHER.
    let req = request(1, MAC, Some(ip("10.0.2.100")), Some(ip("10.0.2.1")), Ipv4Addr::UNSPECIFIED);
    assert_eq!(s.handle_input(now, &req), Ok(None));
    let other = client_msg(1, 7, OTHER, Ipv4Addr::UNSPECIFIED, 0, &[]);
    assert_eq!(parse(&s.handle_input(now, &other).unwrap().unwrap().payload).yiaddr, ip("10.0.2.100"));
    // OTHER binds .100 and releases it: MAC gets .100.
    let req = request(2, OTHER, Some(ip("10.0.2.100")), Some(ip("10.0.2.2")), Ipv4Addr::UNSPECIFIED);
    assert_eq!(parse(&s.handle_input(now, &req).unwrap().unwrap().payload).kind(), 5);
    let release = client_msg(7, 3, OTHER, ip("10.0.2.100"), 0, &[(54, &[10, 0, 2, 2])]);
    assert_eq!(s.handle_input(now, &release), Ok(None));
    assert_eq!(s.lease_of(OTHER, now), None);
    assert_eq!(parse(&s.handle_input(now, &hex(UDHCPC_DISCOVER)).unwrap().unwrap().payload).yiaddr, ip("10.0.2.100"));
}

#[test]
fn the_pool_is_bounded_by_the_network_and_expired_leases_come_back() {
    let mut config = UsernetConfig::new();
    config.network4 = "10.0.2.96/29".parse().unwrap(); // .96 - .103: the pool is .100 - .102
    let mut s = DhcpServer::new(&config).lease_time(Duration::from_secs(60));
    let t0 = Instant::now();
    for (i, want) in ["10.0.2.100", "10.0.2.101", "10.0.2.102"].into_iter().enumerate() {
        let mac = [2, 0, 0, 0, 0, i as u8];
        let req = request(1, mac, Some(ip(want)), None, Ipv4Addr::UNSPECIFIED);
        assert_eq!(parse(&s.handle_input(t0, &req).unwrap().unwrap().payload).kind(), 5, "{want}");
    }
    let req = request(1, MAC, Some(ip("10.0.2.103")), None, Ipv4Addr::UNSPECIFIED);
    assert_eq!(
        parse(&s.handle_input(t0, &req).unwrap().unwrap().payload).kind(),
        6,
        "the broadcast address is not leased"
    );
    let err = s.handle_input(t0, &hex(UDHCPC_DISCOVER)).unwrap_err();
    assert_eq!(err, DhcpError::PoolExhausted { mac: Mac(MAC), size: 3 });
    assert!(err.to_string().contains("52:54:00:12:34:56"), "{err}");
    // A minute later the leases expired: the first address is offered again.
    let later = t0 + Duration::from_secs(61);
    assert_eq!(parse(&s.handle_input(later, &hex(UDHCPC_DISCOVER)).unwrap().unwrap().payload).yiaddr, ip("10.0.2.100"));
}

#[test]
fn malformed_datagrams_are_typed_errors() {
    let mut s = server();
    let now = Instant::now();
    assert_eq!(s.handle_input(now, &[1, 2, 3]), Err(DhcpError::Malformed { len: 3 }));
    let mut no_magic = hex(UDHCPC_DISCOVER);
    no_magic[236] = 0;
    assert_eq!(s.handle_input(now, &no_magic), Err(DhcpError::Malformed { len: 300 }));
    // A server's message (op 2) is not a client's.
    let mut reply = s.handle_input(now, &hex(UDHCPC_DISCOVER)).unwrap().unwrap().payload;
    assert!(s.handle_input(now, &reply).is_err());
    reply[0] = 1; // op 1 but message type OFFER: not a client message either
    assert!(s.handle_input(now, &reply).is_err());
    assert_eq!(Mac(MAC).to_string(), "52:54:00:12:34:56");
    assert_eq!((DHCP_SERVER_PORT, DHCP_CLIENT_PORT), (67, 68));
}

/// The ones' complement sum of `parts` (RFC 1071), folded.
fn csum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    for p in parts {
        for c in p.chunks(2) {
            sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// `payload` in UDP `sport -> dport`, IPv4 `src -> dst` (TTL 64, both
/// checksums computed here), Ethernet from `mac` to `dst_mac`.
pub(crate) fn udp_frame(
    mac: [u8; 6],
    dst_mac: [u8; 6],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ports: (u16, u16),
    payload: &[u8],
) -> Vec<u8> {
    let udp_len = (8 + payload.len()) as u16;
    let mut f = Vec::new();
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&[0x08, 0x00]);
    let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0];
    ip[2..4].copy_from_slice(&(20 + udp_len).to_be_bytes());
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    let ck = csum(&[&ip]);
    ip[10..12].copy_from_slice(&ck.to_be_bytes());
    let mut udp = Vec::new();
    udp.extend_from_slice(&ports.0.to_be_bytes());
    udp.extend_from_slice(&ports.1.to_be_bytes());
    udp.extend_from_slice(&udp_len.to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(payload);
    let ck = csum(&[&src.octets(), &dst.octets(), &[0, 17], &udp_len.to_be_bytes(), &udp]);
    udp[6..8].copy_from_slice(&ck.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&udp);
    f
}

const GATEWAY_MAC: [u8; 6] = [0x52, 0x55, 0x0a, 0x00, 0x02, 0x02];

#[test]
fn frames_from_the_guest_are_picked_out_and_answered_with_frames() {
    let mut s = server();
    let now = Instant::now();
    let discover = hex(UDHCPC_DISCOVER);
    let frame = udp_frame(MAC, [0xff; 6], Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST, (68, 67), &discover);
    let want_payload = s.clone().handle_input(now, &discover).unwrap().unwrap().payload;
    let DhcpFrame::Reply(reply) = s.handle_frame(now, &frame, GATEWAY_MAC) else { panic!("an answer") };
    // Ethernet: unicast to the client's MAC (udhcpc asked for unicast), from the gateway's.
    assert_eq!((&reply[..6], &reply[6..12], &reply[12..14]), (&MAC[..], &GATEWAY_MAC[..], &[0x08, 0x00][..]));
    let iph = &reply[14..34];
    assert_eq!((iph[0], iph[8], iph[9]), (0x45, 64, 17), "IPv4, TTL 64, UDP");
    assert_eq!((&iph[12..16], &iph[16..20]), (&[10, 0, 2, 2][..], &[10, 0, 2, 100][..]), "gateway to the offer");
    assert_eq!(csum(&[iph]), 0, "a valid IPv4 header checksum");
    let udp = &reply[34..];
    assert_eq!((&udp[..2], &udp[2..4]), (&67u16.to_be_bytes()[..], &68u16.to_be_bytes()[..]));
    assert_eq!(u16::from_be_bytes([udp[4], udp[5]]) as usize, udp.len());
    assert_eq!(
        csum(&[&[10, 0, 2, 2], &[10, 0, 2, 100], &[0, 17], &(udp.len() as u16).to_be_bytes(), udp]),
        0,
        "a valid UDP checksum"
    );
    assert_eq!(udp[8..], want_payload);
    // A NAK goes to the Ethernet and IP broadcast addresses.
    let nak = request(5, MAC, Some(ip("192.168.1.1")), None, Ipv4Addr::UNSPECIFIED);
    let frame = udp_frame(MAC, [0xff; 6], Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST, (68, 67), &nak);
    let DhcpFrame::Reply(reply) = s.handle_frame(now, &frame, GATEWAY_MAC) else { panic!("a NAK") };
    assert_eq!((&reply[..6], &reply[30..34]), (&[0xff; 6][..], &[255, 255, 255, 255][..]));
    // A RELEASE unicast to the server is consumed without an answer.
    let release = client_msg(7, 6, MAC, ip("10.0.2.100"), 0, &[]);
    let frame = udp_frame(MAC, GATEWAY_MAC, ip("10.0.2.100"), ip("10.0.2.2"), (68, 67), &release);
    assert_eq!(s.handle_frame(now, &frame, GATEWAY_MAC), DhcpFrame::NoReply);
    // Garbage to port 67 is a typed failure; other traffic is the stack's.
    let frame = udp_frame(MAC, [0xff; 6], Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST, (68, 67), &[1, 2, 3]);
    assert_eq!(s.handle_frame(now, &frame, GATEWAY_MAC), DhcpFrame::Failed(DhcpError::Malformed { len: 3 }));
    let dns = udp_frame(MAC, GATEWAY_MAC, ip("10.0.2.100"), ip("10.0.2.3"), (5353, 53), b"query");
    assert_eq!(s.handle_frame(now, &dns, GATEWAY_MAC), DhcpFrame::NotDhcp);
    let elsewhere = udp_frame(MAC, GATEWAY_MAC, ip("10.0.2.100"), ip("192.0.2.1"), (68, 67), &discover);
    assert_eq!(s.handle_frame(now, &elsewhere, GATEWAY_MAC), DhcpFrame::NotDhcp, "port 67 of another host");
    let mut bad = udp_frame(MAC, [0xff; 6], Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST, (68, 67), &discover);
    let last = bad.len() - 1;
    bad[last] ^= 0xff;
    assert_eq!(s.handle_frame(now, &bad, GATEWAY_MAC), DhcpFrame::NotDhcp, "a bad UDP checksum");
    assert_eq!(s.handle_frame(now, &[0; 20], GATEWAY_MAC), DhcpFrame::NotDhcp);
}

//! UDP over in-memory links: sockets both ways on IPv4 and IPv6, ports,
//! errors, the transparent receive (intercept) and its replies from the
//! original destination, bounded queues, corrupted frames, disconnect.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use conflux_netstack::{Faults, LinkConfig, NetStack, UdpError, link_pair};
use conflux_tcp::TcpStack;
use conflux_testkit::{TIMEOUT, payload, within};
use support::*;

fn sa(s: &str) -> SocketAddr {
    s.parse().expect("a socket address")
}

/// A routes everything it has no link for through B (v4 and v6).
fn routed_pair(link: LinkConfig) -> (NetStack, NetStack) {
    let (ea, eb) = link_pair(link);
    let a = NetStack::new(side(true).gateway_v4(B4.parse().unwrap()).gateway_v6(B6.parse().unwrap()), ea);
    let b = NetStack::new(side(false), eb);
    (a, b)
}

/// The futures may move to another task (`tokio::spawn`).
fn sendable<T: Send>(t: T) -> T {
    t
}

/// Nothing arrives at `sock` within a second (virtual time).
async fn nothing_for(sock: &conflux_netstack::UdpSocket) {
    let got = tokio::time::timeout(Duration::from_secs(1), sock.recv_from()).await;
    assert!(got.is_err(), "unexpected datagram: {got:?}");
}

#[tokio::test(start_paused = true)]
async fn send_to_and_recv_from_both_ways_v4_and_v6() {
    let offloaded = LinkConfig::ethernet().checksums(conflux_netstack::Checksums::Offloaded);
    for link in [LinkConfig::ethernet(), LinkConfig::ip(), offloaded] {
        let (a, b, _) = pair_with(link, |c| c);
        for (ours, theirs) in [(A4, B4), (A6, B6)] {
            let sa_ = a.udp_bind(addr(ours, 0)).unwrap();
            // B on the wildcard of the family ([::] takes both).
            let any = if theirs == B4 { "0.0.0.0" } else { "::" };
            let sb = b.udp_bind(addr(any, 0)).unwrap();
            assert_ne!(sa_.local_addr().port(), 0);
            let to_b = addr(theirs, sb.local_addr().port());
            for i in 0..3u8 {
                let data = payload(u64::from(i), 100 + usize::from(i) * 500);
                sendable(sa_.send_to(&data, to_b)).await.unwrap();
                let (got, from) = within("datagram at B", TIMEOUT, sendable(sb.recv_from())).await.unwrap();
                assert_eq!((&got[..], from), (&data[..], sa_.local_addr()), "{link:?} {ours}");
                sb.send_to(&got[..10], from).await.unwrap();
                let (back, from_b) = within("datagram at A", TIMEOUT, sa_.recv_from()).await.unwrap();
                assert_eq!((&back[..], from_b), (&data[..10], to_b));
            }
            // An empty datagram is a datagram.
            sa_.send_to(b"", to_b).await.unwrap();
            let (got, _) = within("empty datagram", TIMEOUT, sb.recv_from()).await.unwrap();
            assert!(got.is_empty());
        }
        // A [::] socket sends to IPv4 from our IPv4 address.
        let s6 = a.udp_bind(sa("[::]:0")).unwrap();
        let r4 = b.udp_bind(addr(B4, 0)).unwrap();
        s6.send_to(b"dual", r4.local_addr()).await.unwrap();
        let (_, from) = within("dual-stack", TIMEOUT, r4.recv_from()).await.unwrap();
        assert_eq!(from, addr(A4, s6.local_addr().port()));
    }
}

#[tokio::test(start_paused = true)]
async fn ports_are_distinct_taken_and_freed_on_drop() {
    let (a, b, _) = pair();
    assert_eq!(a.ports_in_use(), 0);
    let socks: Vec<_> = (0..50).map(|_| a.udp_bind(sa("0.0.0.0:0")).unwrap()).collect();
    let mut ports: Vec<u16> = socks.iter().map(|s| s.local_addr().port()).collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), 50, "ephemeral ports are distinct");
    assert_eq!(a.ports_in_use(), 50, "bound UDP ports are counted");
    drop(socks);
    assert_eq!(a.ports_in_use(), 0, "dropping a socket frees its port");

    let s = a.udp_bind(addr(A4, 5353)).unwrap();
    assert_eq!(s.local_addr(), addr(A4, 5353));
    for taken in [addr(A4, 5353), sa("0.0.0.0:5353"), sa("[::]:5353")] {
        assert_eq!(a.udp_bind(taken).unwrap_err(), UdpError::AddrInUse(taken));
    }
    let other_family = a.udp_bind(addr(A6, 5353)).expect("another address, same port");
    // A TCP listener may share the port (separate spaces).
    a.listen_on(addr(A4, 5353), None, |_| async {}).expect("TCP on the same port");
    assert!(a.unlisten_on(addr(A4, 5353)));
    drop((s, other_family));
    let again = a.udp_bind(sa("[::]:5353")).expect("the port was freed");
    assert_eq!(a.udp_bind(addr(A4, 5353)).unwrap_err(), UdpError::AddrInUse(addr(A4, 5353)), "[::] covers IPv4");
    drop(again);
    assert_eq!(a.ports_in_use(), 0);

    let foreign = sa("10.9.9.9:53");
    assert_eq!(a.udp_bind(foreign).unwrap_err(), UdpError::AddrNotAvailable(foreign));
    // The peer's address is not ours either.
    assert!(matches!(a.udp_bind(addr(B4, 0)), Err(UdpError::AddrNotAvailable(_))));
    drop(b);

    // A small range exhausts, and comes back as sockets go.
    let (ea, _eb) = link_pair(LinkConfig::ethernet());
    let small = NetStack::new(side(true).ephemeral_ports(50000..=50002), ea);
    let three: Vec<_> = (0..3).map(|_| small.udp_bind(sa("[::]:0")).unwrap()).collect();
    assert_eq!(small.udp_bind(addr(A4, 0)).unwrap_err(), UdpError::PortsExhausted);
    // A fixed port outside the range still binds.
    let fixed = small.udp_bind(addr(A4, 53)).unwrap();
    drop(three);
    assert!(small.udp_bind(addr(A4, 0)).unwrap().local_addr().port() >= 50000);
    drop(fixed);
}

#[tokio::test(start_paused = true)]
async fn too_large_bad_destinations_and_no_route() {
    let (a, b, _) = pair_with(LinkConfig::ethernet().mtu(1500), |c| c);
    let s4 = a.udp_bind(addr(A4, 0)).unwrap();
    let s6 = a.udp_bind(sa("[::]:0")).unwrap();
    let r = b.udp_bind(sa("[::]:0")).unwrap();
    let port = r.local_addr().port();
    let big = payload(9, 1473);
    assert_eq!(s4.send_to(&big, addr(B4, port)).await.unwrap_err(), UdpError::TooLarge { len: 1473, max: 1472 });
    assert_eq!(
        s6.send_to(&big[..1453], addr(B6, port)).await.unwrap_err(),
        UdpError::TooLarge { len: 1453, max: 1452 }
    );
    // The largest ones arrive whole.
    s4.send_to(&big[..1472], addr(B4, port)).await.unwrap();
    let (got, _) = within("1472 bytes", TIMEOUT, r.recv_from()).await.unwrap();
    assert_eq!(&got[..], &big[..1472]);
    s6.send_to(&big[..1452], addr(B6, port)).await.unwrap();
    let (got, _) = within("1452 bytes", TIMEOUT, r.recv_from()).await.unwrap();
    assert_eq!(&got[..], &big[..1452]);

    for bad in [addr(B4, 0), sa("0.0.0.0:53"), addr(B6, port)] {
        assert_eq!(s4.send_to(b"x", bad).await.unwrap_err(), UdpError::InvalidDestination(bad), "{bad}");
    }
    let far = sa("192.0.2.1:53");
    assert_eq!(s4.send_to(b"x", far).await.unwrap_err(), UdpError::NoRoute(far));
    assert_eq!(s6.send_to(b"x", far).await.unwrap_err(), UdpError::NoRoute(far));
}

#[tokio::test(start_paused = true)]
async fn intercept_reports_the_original_destination_and_replies_come_from_it() {
    for link in [LinkConfig::ethernet(), LinkConfig::ip()] {
        let (a, b) = routed_pair(link);
        let icpt = b.udp_intercept(Vec::new()).unwrap();
        let client = a.udp_bind(sa("[::]:0")).unwrap();
        let port = client.local_addr().port();
        for (dialled, src_ip) in [("203.0.113.7:53", A4), ("[2001:db8::7]:5353", A6), ("198.51.100.1:9", A4)] {
            let dialled = sa(dialled);
            let data = payload(3, 700);
            client.send_to(&data, dialled).await.unwrap();
            let d = within("intercepted datagram", TIMEOUT, sendable(icpt.recv())).await.unwrap();
            assert_eq!((&d.data[..], d.src, d.dst), (&data[..], addr(src_ip, port), dialled), "{link:?}");
            sendable(icpt.send_from(b"reply", d.dst, d.src)).await.unwrap();
            let (got, from) = within("reply at the client", TIMEOUT, client.recv_from()).await.unwrap();
            assert_eq!((&got[..], from), (&b"reply"[..], dialled), "the reply comes from the original destination");
        }
        // Our own addresses are not intercepted unless named.
        client.send_to(b"to B itself", addr(B4, 4444)).await.unwrap();
        assert!(tokio::time::timeout(Duration::from_secs(1), icpt.recv()).await.is_err(), "{link:?}");
        assert_eq!(
            icpt.send_from(b"x", sa("[::1]:1"), addr(A4, port)).await.unwrap_err(),
            UdpError::InvalidSource(sa("[::1]:1"))
        );
        assert_eq!(
            icpt.send_from(b"x", sa("1.2.3.4:0"), addr(A4, port)).await.unwrap_err(),
            UdpError::InvalidSource(sa("1.2.3.4:0"))
        );
        // Dropped: foreign datagrams are dropped again.
        drop(icpt);
        client.send_to(b"after", sa("203.0.113.7:53")).await.unwrap();
        nothing_for(&client).await;
    }
}

#[tokio::test(start_paused = true)]
async fn own_addresses_are_intercepted_unless_a_socket_is_bound() {
    let (a, b) = routed_pair(LinkConfig::ethernet());
    let icpt = b.udp_intercept(vec![support::ip(B4)]).unwrap();
    let bound = b.udp_bind(addr(B4, 7000)).unwrap();
    let wild = b.udp_bind(sa("0.0.0.0:7002")).unwrap();
    let client = a.udp_bind(addr(A4, 0)).unwrap();
    client.send_to(b"bound", addr(B4, 7000)).await.unwrap();
    client.send_to(b"wildcard", addr(B4, 7002)).await.unwrap();
    client.send_to(b"free port", addr(B4, 7001)).await.unwrap();
    let (got, _) = within("bound socket", TIMEOUT, bound.recv_from()).await.unwrap();
    assert_eq!(&got[..], b"bound", "the bound socket wins");
    let (got, _) = within("wildcard socket", TIMEOUT, wild.recv_from()).await.unwrap();
    assert_eq!(&got[..], b"wildcard", "a wildcard socket wins too");
    let d = within("intercepted", TIMEOUT, icpt.recv()).await.unwrap();
    assert_eq!((&d.data[..], d.dst), (&b"free port"[..], addr(B4, 7001)));
    // B6 is ours but not named: not intercepted.
    let c6 = a.udp_bind(addr(A6, 0)).unwrap();
    c6.send_to(b"v6", addr(B6, 7001)).await.unwrap();
    assert!(tokio::time::timeout(Duration::from_secs(1), icpt.recv()).await.is_err());
    // Replying from an own address works like any other.
    icpt.send_from(b"ok", d.dst, d.src).await.unwrap();
    let (got, from) = within("reply", TIMEOUT, client.recv_from()).await.unwrap();
    assert_eq!((&got[..], from), (&b"ok"[..], addr(B4, 7001)));

    // A second intercept replaces the first, which reports Closed.
    let second = b.udp_intercept(Vec::new()).unwrap();
    assert_eq!(within("closed", TIMEOUT, icpt.recv()).await.unwrap_err(), UdpError::Closed);
    client.send_to(b"free port", addr(B4, 7001)).await.unwrap();
    client.send_to(b"foreign", sa("203.0.113.9:1")).await.unwrap();
    let d = within("second intercept", TIMEOUT, second.recv()).await.unwrap();
    assert_eq!(d.dst, sa("203.0.113.9:1"), "B4 is no longer an own address");
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_drops_and_counts_instead_of_blocking() {
    let (a, b, _) = pair();
    let r = b.udp_bind(addr(B4, 0)).unwrap();
    let s = a.udp_bind(addr(A4, 0)).unwrap();
    let (a, b) = (a.clone(), b.clone());
    within("300 sends", TIMEOUT, async {
        for i in 0..300u32 {
            s.send_to(&i.to_be_bytes(), r.local_addr()).await.unwrap();
        }
    })
    .await;
    // Let them all arrive.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(r.dropped(), 300 - 256);
    for i in 0..256u32 {
        let (got, _) = within("queued", TIMEOUT, r.recv_from()).await.unwrap();
        assert_eq!(&got[..], &i.to_be_bytes(), "in order, the oldest kept");
    }
    nothing_for(&r).await;
    // The queue works again.
    s.send_to(b"again", r.local_addr()).await.unwrap();
    let (got, _) = within("after overflow", TIMEOUT, r.recv_from()).await.unwrap();
    assert_eq!(&got[..], b"again");
    // The intercept's queue is bounded the same way.
    let (ra, rb) = routed_pair(LinkConfig::ethernet());
    let icpt = rb.udp_intercept(Vec::new()).unwrap();
    let c = ra.udp_bind(addr(A4, 0)).unwrap();
    for i in 0..260u32 {
        c.send_to(&i.to_be_bytes(), sa("203.0.113.1:9")).await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(icpt.dropped(), 4);
    drop((a, b));
}

#[tokio::test(start_paused = true)]
async fn a_neighbour_that_never_answers_does_not_stall_sending() {
    let (a, b, _) = pair();
    let s = a.udp_bind(addr(A4, 0)).unwrap();
    let r = b.udp_bind(addr(B4, 0)).unwrap();
    // On the link, nobody there: ARP goes unanswered.
    s.send_to(b"lost", addr("10.0.0.99", 9)).await.unwrap();
    s.send_to(b"behind it", r.local_addr()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(a.udp_tx_dropped(), 1);
    s.send_to(b"later", r.local_addr()).await.unwrap();
    let (got, _) = within("after the stuck queue", TIMEOUT, r.recv_from()).await.unwrap();
    assert_eq!(&got[..], b"later");
}

#[tokio::test(start_paused = true)]
async fn corrupted_datagrams_are_never_delivered() {
    let faults = Faults { corrupt: 0.3, ..Faults::NONE };
    let (a, b, _) = pair_with(LinkConfig::ethernet().faults(faults), |c| c);
    let r = b.udp_bind(sa("[::]:0")).unwrap();
    let s = a.udp_bind(sa("[::]:0")).unwrap();
    let port = r.local_addr().port();
    let mut got = 0;
    for i in 0..200u64 {
        let to = if i % 2 == 0 { addr(B4, port) } else { addr(B6, port) };
        s.send_to(&payload(i, 200), to).await.unwrap();
        if let Ok(res) = tokio::time::timeout(Duration::from_millis(50), r.recv_from()).await {
            let (data, from) = res.unwrap();
            let seed = (0..=i).rev().find(|k| data[..] == payload(*k, 200)[..]);
            assert!(seed.is_some(), "datagram {i}: corrupted payload delivered");
            assert_eq!(from.port(), s.local_addr().port());
            got += 1;
        }
    }
    assert!(got > 50, "only {got} of 200 arrived");
}

#[tokio::test(start_paused = true)]
async fn disconnect_closes_sockets_and_refuses_binds() {
    let (a, _b, _) = pair();
    let s = a.udp_bind(addr(A4, 0)).unwrap();
    let icpt = a.udp_intercept(Vec::new()).unwrap();
    let pending = tokio::spawn(async move { s.recv_from().await.map(|_| ()) });
    tokio::task::yield_now().await;
    within("disconnect", TIMEOUT, a.disconnect()).await;
    assert_eq!(within("recv after disconnect", TIMEOUT, pending).await.unwrap(), Err(UdpError::Disconnected));
    assert_eq!(within("intercept", TIMEOUT, icpt.recv()).await.unwrap_err(), UdpError::Disconnected);
    assert_eq!(a.udp_bind(addr(A4, 0)).unwrap_err(), UdpError::Disconnected);
    assert_eq!(a.udp_intercept(Vec::new()).unwrap_err(), UdpError::Disconnected);
}

#[tokio::test(start_paused = true)]
async fn broadcasts_reach_wildcard_sockets_else_the_intercept_and_local_delivery_works() {
    let (a, b, _) = pair();
    let client = a.udp_bind(addr(A4, 0)).unwrap();
    let icpt = b.udp_intercept(Vec::new()).unwrap();
    // Nothing bound on B's port 67: the intercept takes the broadcast.
    client.send_to(b"discover", sa("255.255.255.255:67")).await.unwrap();
    let d = within("broadcast at the intercept", TIMEOUT, icpt.recv()).await.unwrap();
    assert_eq!((d.dst, d.src), (sa("255.255.255.255:67"), client.local_addr()));
    // A wildcard socket takes broadcasts (the link's and the subnet's) first;
    // a socket on B's address alone does not.
    let server = b.udp_bind(sa("0.0.0.0:67")).unwrap();
    let specific = b.udp_bind(addr(B4, 68)).unwrap();
    for bcast in ["255.255.255.255:67", "10.0.0.255:67"] {
        client.send_to(b"discover", sa(bcast)).await.unwrap();
        let (got, from) = within("broadcast at the wildcard socket", TIMEOUT, server.recv_from()).await.unwrap();
        assert_eq!((&got[..], from), (&b"discover"[..], client.local_addr()), "{bcast}");
    }
    client.send_to(b"to 68", sa("255.255.255.255:68")).await.unwrap();
    let d = within("broadcast to 68 at the intercept", TIMEOUT, icpt.recv()).await.unwrap();
    assert_eq!(d.dst, sa("255.255.255.255:68"));
    nothing_for(&specific).await;
    assert!(tokio::time::timeout(Duration::from_secs(1), icpt.recv()).await.is_err());
    // Local delivery: one socket of A to another of A (IPv6 too, which
    // smoltcp does not deliver locally on Ethernet).
    let other = a.udp_bind(sa("[::]:0")).unwrap();
    client.send_to(b"self", addr(A4, other.local_addr().port())).await.unwrap();
    let (got, from) = within("local delivery", TIMEOUT, other.recv_from()).await.unwrap();
    assert_eq!((&got[..], from), (&b"self"[..], client.local_addr()));
    let c6 = a.udp_bind(addr(A6, 0)).unwrap();
    c6.send_to(b"self6", addr(A6, other.local_addr().port())).await.unwrap();
    let (got, from) = within("local delivery (IPv6)", TIMEOUT, other.recv_from()).await.unwrap();
    assert_eq!((&got[..], from), (&b"self6"[..], c6.local_addr()));
    assert_eq!(a.udp_tx_dropped(), 0);
}

/// The one's complement sum of `data` folded to 16 bits (RFC 1071).
fn sum(data: &[u8], mut acc: u32) -> u32 {
    for c in data.chunks(2) {
        acc += u32::from(u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)]));
    }
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc
}

/// An IPv4 UDP datagram from 10.0.0.1:`sport` to 10.0.0.2:`dport` on an IP
/// link, valid checksums.
fn udp4(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let udp_len = 8 + payload.len();
    let mut p = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2];
    p[2..4].copy_from_slice(&((20 + udp_len) as u16).to_be_bytes());
    let ip_sum = !(sum(&p, 0) as u16);
    p[10..12].copy_from_slice(&ip_sum.to_be_bytes());
    p.extend_from_slice(&sport.to_be_bytes());
    p.extend_from_slice(&dport.to_be_bytes());
    p.extend_from_slice(&(udp_len as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(payload);
    let pseudo = sum(&p[12..20], 17 + udp_len as u32);
    let udp_sum = !(sum(&p[20..], pseudo) as u16);
    p[26..28].copy_from_slice(&(if udp_sum == 0 { 0xffff } else { udp_sum }).to_be_bytes());
    p
}

#[tokio::test(start_paused = true)]
async fn malformed_datagrams_are_dropped_and_the_rest_delivered_exactly() {
    let (ea, eb) = link_pair(LinkConfig::ip());
    let (merged, inject) = support::inject::Merge::new(eb);
    let _a = NetStack::new(side(true), ea);
    let b = NetStack::new(side(false), merged);
    let r = b.udp_bind(addr(B4, 53)).unwrap();
    let icpt = b.udp_intercept(vec![support::ip(B4)]).unwrap();
    let good = udp4(1000, 53, b"good");
    let mut bad = Vec::new();
    let mut f = good.clone();
    f[24..26].copy_from_slice(&40u16.to_be_bytes()); // UDP length beyond the packet
    bad.push(("UDP length too long", f));
    let mut f = good.clone();
    f[24..26].copy_from_slice(&7u16.to_be_bytes());
    bad.push(("UDP length below its header", f));
    let mut f = good.clone();
    f[31] ^= 0x40;
    bad.push(("a flipped payload bit", f));
    let mut f = udp4(1000, 53, b"frag");
    f[6] = 0x20; // more fragments (header checksum fixed below)
    f[10..12].copy_from_slice(&[0, 0]);
    let s = !(sum(&f[..20], 0) as u16);
    f[10..12].copy_from_slice(&s.to_be_bytes());
    bad.push(("a fragment", f));
    bad.push(("a truncated header", good[..25].to_vec()));
    let mut f = good.clone();
    f[2..4].copy_from_slice(&100u16.to_be_bytes());
    bad.push(("an IP length beyond the frame", f));
    for (what, frame) in bad {
        inject.send(frame).unwrap();
        inject.send(udp4(1001, 53, what.as_bytes())).unwrap();
        let (got, from) = within(what, TIMEOUT, r.recv_from()).await.unwrap();
        assert_eq!((&got[..], from.port()), (what.as_bytes(), 1001), "after {what}: only the good one");
    }
    // Trailing bytes after the IP packet and a UDP length shorter than the
    // IP payload: the payload is what the UDP length says.
    let mut f = good.clone();
    f.extend_from_slice(b"junk");
    inject.send(f).unwrap();
    let (got, _) = within("trailing junk", TIMEOUT, r.recv_from()).await.unwrap();
    assert_eq!(&got[..], b"good");
    // A zero checksum means none in IPv4.
    let mut f = udp4(1002, 54, b"no sum");
    f[26..28].copy_from_slice(&[0, 0]);
    inject.send(f).unwrap();
    let d = within("no checksum, to the intercept", TIMEOUT, icpt.recv()).await.unwrap();
    assert_eq!((&d.data[..], d.dst), (&b"no sum"[..], addr(B4, 54)));
    nothing_for(&r).await;
    assert!(tokio::time::timeout(Duration::from_secs(1), icpt.recv()).await.is_err());
}

/// Ping-pong on a 2-worker runtime (real time, an in-memory link): four
/// clients each wait for the echo of every datagram, through a socket and
/// through the intercept, so a lost wake-up stalls a client and fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_pong_on_two_threads_loses_no_wake_up() {
    let (a, b) = routed_pair(LinkConfig::ethernet());
    let server = std::sync::Arc::new(b.udp_bind(sa("[::]:7")).unwrap());
    let icpt = std::sync::Arc::new(b.udp_intercept(Vec::new()).unwrap());
    let echo = tokio::spawn({
        let server = server.clone();
        async move {
            while let Ok((data, from)) = server.recv_from().await {
                server.send_to(&data, from).await.unwrap();
            }
        }
    });
    let reflect = tokio::spawn({
        let icpt = icpt.clone();
        async move {
            while let Ok(d) = icpt.recv().await {
                icpt.send_from(&d.data, d.dst, d.src).await.unwrap();
            }
        }
    });
    let mut clients = Vec::new();
    for c in 0..4u64 {
        let a = a.clone();
        clients.push(tokio::spawn(async move {
            let sock = a.udp_bind(sa("[::]:0")).unwrap();
            let to = match c {
                0 => addr(B4, 7),
                1 => addr(B6, 7),
                2 => sa("203.0.113.3:7"),
                _ => sa("[2001:db8::3]:7"),
            };
            for i in 0..300u64 {
                let data = payload(c * 1000 + i, 64 + (i as usize % 900));
                sock.send_to(&data, to).await.unwrap();
                let (got, from) = within("the echo", TIMEOUT, sock.recv_from()).await.unwrap();
                assert_eq!((&got[..], from), (&data[..], to), "client {c}, datagram {i}");
            }
        }));
    }
    for c in clients {
        within("a client", Duration::from_secs(60), c).await.unwrap();
    }
    assert_eq!((server.dropped(), icpt.dropped()), (0, 0));
    echo.abort();
    reflect.abort();
}

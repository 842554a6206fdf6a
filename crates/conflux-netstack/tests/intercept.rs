//! Held SYNs ([`NetStack::intercept`]) over in-memory links, in virtual time.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use conflux_flow::FlowExt;
use conflux_netstack::{Checksums, HeldSyn, Intercept, LinkConfig, NetStack, link_pair};
use conflux_tcp::{ConnectError, ConnectOptions, TcpFlow, TcpStack};
use conflux_testkit::{TIMEOUT, payload, within};
use support::peer::{ACK, Peer, RST, SYN};
use support::*;

/// A guest (A, routing everything through B) and the intercepting side (B).
fn guest_and_gateway() -> (NetStack, NetStack) {
    let (ea, eb) = link_pair(LinkConfig::ethernet());
    let a = NetStack::new(side(true).gateway_v4(B4.parse().unwrap()).gateway_v6(B6.parse().unwrap()), ea);
    let b = NetStack::new(side(false), eb);
    (a, b)
}

fn sock(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

async fn next_held(i: &mut Intercept) -> HeldSyn {
    within("a held SYN", TIMEOUT, i.next()).await.expect("the intercept ended")
}

/// No further held SYN within `d` (virtual time).
async fn no_more(i: &mut Intercept, d: Duration) {
    if let Ok(got) = tokio::time::timeout(d, i.next()).await {
        panic!("expected no held SYN, got {got:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn accept_gives_a_flow_from_the_dialled_address_with_data_both_ways() {
    let (a, b) = guest_and_gateway();
    let mut intercept = b.intercept(Vec::new(), None).unwrap();
    for dialled in ["203.0.113.7:443", "[2001:db8::7]:8080"] {
        let dialled = sock(dialled);
        let connect = tokio::spawn({
            let a = a.clone();
            async move { a.create_connection(dialled, ConnectOptions::new()).await }
        });
        let held = next_held(&mut intercept).await;
        assert_eq!(held.dst(), dialled);
        let server = within("accept", TIMEOUT, held.accept()).await.expect("accept");
        let client = within("connect", TIMEOUT, connect).await.unwrap().expect("connect");
        assert_eq!(server.src(), dialled, "the flow reports what the peer dialled");
        assert_eq!(server.dst(), client.src(), "and the peer");
        assert_eq!(client.dst(), dialled);
        let (up, down) = (payload(3, 200_000), payload(4, 150_000));
        let ((mut cr, mut cw), (mut sr, mut sw)) = (client.split(), server.split());
        async fn read_all(r: &mut conflux_flow::ReadHalf<conflux_netstack::NetFlow>) -> Vec<u8> {
            let mut got = Vec::new();
            while let Some(c) = r.read().await.unwrap() {
                got.extend_from_slice(&c);
            }
            got
        }
        let (_, _, got_up, got_down) = within("both ways", TIMEOUT, async {
            tokio::join!(
                async {
                    cw.write(up.clone()).await.unwrap();
                    cw.shutdown().await.unwrap();
                },
                async {
                    sw.write(down.clone()).await.unwrap();
                    sw.shutdown().await.unwrap();
                },
                read_all(&mut sr),
                read_all(&mut cr),
            )
        })
        .await;
        assert_eq!(got_up, up);
        assert_eq!(got_down, down);
        cr.reunite(cw).expect("reunite").close().await.unwrap();
        sr.reunite(sw).expect("reunite").close().await.unwrap();
    }
    assert_eq!(b.open_flows(), 0);
}

#[tokio::test(start_paused = true)]
async fn refuse_fails_the_connect_at_once() {
    let (a, b) = guest_and_gateway();
    let mut intercept = b.intercept(Vec::new(), None).unwrap();
    let connect = tokio::spawn({
        let a = a.clone();
        async move { a.create_connection(sock("198.51.100.1:22"), ConnectOptions::new()).await }
    });
    let held = next_held(&mut intercept).await;
    assert_eq!(held.dst(), sock("198.51.100.1:22"));
    held.refuse();
    let got = within("refused", Duration::from_millis(100), connect).await.unwrap();
    assert!(matches!(got, Err(ConnectError::Refused { .. })), "{got:?}");
    assert_eq!(b.sockets(), 0, "a refused SYN leaves nothing");
}

#[tokio::test(start_paused = true)]
async fn nothing_is_answered_until_accept_and_a_retransmitted_syn_stays_one() {
    let (a, b) = guest_and_gateway();
    let mut intercept = b.intercept(Vec::new(), None).unwrap();
    let connect = tokio::spawn({
        let a = a.clone();
        async move { a.create_connection(sock("203.0.113.9:80"), ConnectOptions::new()).await }
    });
    let held = next_held(&mut intercept).await;
    // 7 s: the dialler retransmitted its SYN (1 s, 3 s); still no SYN-ACK.
    no_more(&mut intercept, Duration::from_secs(7)).await;
    assert!(!connect.is_finished(), "the SYN-ACK went out before accept");
    assert_eq!(b.sockets(), 1, "one held entry for the SYN and its retransmissions");
    let server = within("accept", TIMEOUT, held.accept()).await.expect("accept");
    let client = within("connect after accept", TIMEOUT, connect).await.unwrap().expect("connect");
    assert_eq!(client.dst(), server.src());
}

#[tokio::test(start_paused = true)]
async fn own_addresses_are_intercepted_on_every_port_unless_a_listener_is_there() {
    let (a, b) = guest_and_gateway();
    let listening = b
        .listen_on(addr(B4, 80), None, |mut f| async move {
            let _ = f.write("listener").await;
            let _ = f.close().await;
        })
        .unwrap();
    assert_eq!(listening.port(), 80);
    let mut intercept = b.intercept(vec![ip(B4)], None).unwrap();
    // A port of the gateway address: intercepted.
    let connect = tokio::spawn({
        let a = a.clone();
        async move { a.create_connection(addr(B4, 1234), ConnectOptions::new()).await }
    });
    let held = next_held(&mut intercept).await;
    assert_eq!(held.dst(), addr(B4, 1234));
    let mut server = within("accept", TIMEOUT, held.accept()).await.unwrap();
    assert_eq!(server.src(), addr(B4, 1234));
    let mut client = within("connect", TIMEOUT, connect).await.unwrap().unwrap();
    within("write", TIMEOUT, server.write("intercepted")).await.unwrap();
    server.close().await.unwrap();
    assert_eq!(within("read", TIMEOUT, client.read_to_end()).await.unwrap(), b"intercepted");
    // The listener's port: the listener wins.
    let mut f = within("connect", TIMEOUT, a.create_connection(addr(B4, 80), ConnectOptions::new())).await.unwrap();
    assert_eq!(within("read", TIMEOUT, f.read_to_end()).await.unwrap(), b"listener");
    no_more(&mut intercept, Duration::from_millis(100)).await;
    // An address of ours not in `own`: a closed port as before.
    let other = within("connect", TIMEOUT, a.create_connection(addr(B6, 1234), ConnectOptions::new())).await;
    assert!(matches!(other, Err(ConnectError::Refused { .. })), "{other:?}");
    no_more(&mut intercept, Duration::from_millis(100)).await;
    // An address not ours cannot be `own`.
    drop(intercept);
    let bad = b.intercept(vec![ip("10.9.9.9")], None);
    assert!(matches!(bad, Err(conflux_tcp::ListenError::AddrNotAvailable(a)) if a.ip() == ip("10.9.9.9")), "{bad:?}");
}

#[tokio::test(start_paused = true)]
async fn a_dropped_held_syn_is_refused() {
    let (a, b) = guest_and_gateway();
    let mut intercept = b.intercept(Vec::new(), None).unwrap();
    let connect = tokio::spawn({
        let a = a.clone();
        async move { a.create_connection(sock("203.0.113.1:80"), ConnectOptions::new()).await }
    });
    drop(next_held(&mut intercept).await);
    let got = within("refused", Duration::from_millis(100), connect).await.unwrap();
    assert!(matches!(got, Err(ConnectError::Refused { .. })), "{got:?}");
    assert_eq!(b.sockets(), 0);
}

#[tokio::test(start_paused = true)]
async fn dropping_the_intercept_stops_it() {
    let (a, b) = guest_and_gateway();
    let mut intercept = b.intercept(vec![ip(B4)], None).unwrap();
    let connect = tokio::spawn({
        let a = a.clone();
        async move { a.create_connection(sock("203.0.113.1:80"), ConnectOptions::new()).await }
    });
    let held = next_held(&mut intercept).await;
    drop(intercept);
    // The SYN still in our hands was refused with the intercept.
    let got = within("refused", Duration::from_millis(100), connect).await.unwrap();
    assert!(matches!(got, Err(ConnectError::Refused { .. })), "{got:?}");
    let late = within("accept", TIMEOUT, held.accept()).await;
    assert!(late.is_err(), "{late:?}");
    // New SYNs to `own` get an RST as for a closed port.
    let got =
        within("closed port", Duration::from_millis(100), a.create_connection(addr(B4, 1234), ConnectOptions::new()))
            .await;
    assert!(matches!(got, Err(ConnectError::Refused { .. })), "{got:?}");
    assert_eq!((b.sockets(), b.ports_in_use()), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn a_second_intercept_replaces_the_first() {
    let (a, b) = guest_and_gateway();
    let mut first = b.intercept(Vec::new(), None).unwrap();
    let mut second = b.intercept(Vec::new(), None).unwrap();
    assert!(within("end", TIMEOUT, first.next()).await.is_none(), "the first one ended");
    let connect = tokio::spawn({
        let a = a.clone();
        async move { a.create_connection(sock("203.0.113.1:80"), ConnectOptions::new()).await }
    });
    let _flow = next_held(&mut second).await.accept().await.unwrap();
    within("connect", TIMEOUT, connect).await.unwrap().unwrap();
    drop(first);
    assert_eq!(b.ports_in_use(), 2, "the second intercept's port and its flow's");
    drop(second);
    assert_eq!(b.ports_in_use(), 1, "the flow's");
}

#[tokio::test(start_paused = true)]
async fn a_held_syn_reset_by_its_peer_is_forgotten() {
    let (mut peer, stack) = Peer::new(40000, 80, Checksums::Compute);
    let mut intercept = stack.intercept(vec![ip(A4)], None).unwrap();
    peer.send(1000, 0, SYN, b"");
    peer.send(1000, 0, SYN, b"");
    let held = next_held(&mut intercept).await;
    assert_eq!((held.src(), held.dst()), (peer.me, peer.stack_addr));
    no_more(&mut intercept, Duration::from_millis(100)).await;
    assert_eq!(stack.sockets(), 1, "the repeated SYN made no second entry");
    // An RST that does not match the SYN is ignored.
    peer.send(5000, 0, RST, b"");
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(stack.sockets(), 1);
    peer.send(1001, 0, RST, b"");
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(stack.sockets(), 0, "the peer gave up: forgotten");
    let got = within("accept", TIMEOUT, held.accept()).await;
    assert!(got.is_err(), "{got:?}");
    assert!(peer.recv_within(Duration::from_millis(100)).await.is_none(), "nothing answered");
}

#[tokio::test(start_paused = true)]
async fn accept_times_out_when_the_peer_never_finishes_the_handshake() {
    // The handshake timeout (10 s) is shorter than the connect timeout (30 s).
    let (mut peer, stack) = Peer::new(40001, 81, Checksums::Compute);
    let mut intercept = stack.intercept(vec![ip(A4)], None).unwrap();
    peer.send(7000, 0, SYN, b"");
    let held = next_held(&mut intercept).await;
    let start = tokio::time::Instant::now();
    let accept = tokio::spawn(held.accept());
    let synack = peer.recv().await;
    assert_eq!(synack.flags & (SYN | ACK), SYN | ACK, "{synack:?}");
    assert_eq!(synack.ack, 7001);
    let got = within("accept", Duration::from_secs(60), accept).await.unwrap();
    assert!(matches!(got, Err(ConnectError::Timeout { .. })), "{got:?}");
    let took = start.elapsed();
    assert!(took >= Duration::from_secs(10) && took < Duration::from_secs(11), "the handshake timeout: {took:?}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!((stack.sockets(), stack.ports_in_use()), (0, 1), "only the intercept's port");
}

#[tokio::test(start_paused = true)]
async fn hundreds_of_accepted_and_refused_syns_leave_nothing() {
    let (a, b) = guest_and_gateway();
    let mut intercept = b.intercept(vec![ip(B4)], None).unwrap();
    let server = tokio::spawn(async move {
        let mut served = 0;
        while let Some(held) = intercept.next().await {
            if held.dst().port() % 2 == 0 {
                tokio::spawn(async move {
                    let mut f = held.accept().await.expect("accept");
                    let got = f.read_to_end().await.unwrap();
                    let _ = f.write(got).await;
                    let _ = f.close().await;
                });
            } else {
                held.refuse();
            }
            served += 1;
            if served == 400 {
                return intercept;
            }
        }
        panic!("the intercept ended");
    });
    for i in 0..400u16 {
        let dst = if i % 4 < 2 { addr("203.0.113.50", 1000 + i) } else { addr(B4, 1000 + i) };
        let res = within("connect", TIMEOUT, a.create_connection(dst, ConnectOptions::new())).await;
        if dst.port() % 2 == 0 {
            let mut f = res.expect("accepted");
            f.write(format!("{i}")).await.unwrap();
            f.shutdown(conflux_flow::Shutdown::Write).await.unwrap();
            assert_eq!(within("echo", TIMEOUT, f.read_to_end()).await.unwrap(), format!("{i}").as_bytes());
            f.close().await.unwrap();
        } else {
            assert!(matches!(res, Err(ConnectError::Refused { .. })), "{res:?}");
        }
    }
    let intercept = within("served", TIMEOUT, server).await.unwrap();
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert_eq!((b.sockets(), b.ports_in_use(), b.open_flows()), (0, 1, 0), "only the intercept's port");
    assert_eq!((a.sockets(), a.ports_in_use(), a.open_flows()), (0, 0, 0));
    drop(intercept);
    assert_eq!(b.ports_in_use(), 0);
}

#[tokio::test(start_paused = true)]
async fn intercept_and_listen_transparent_replace_each_other() {
    let (a, b) = guest_and_gateway();
    let listening = b
        .listen_transparent(None, |mut f| async move {
            let _ = f.write("transparent").await;
            let _ = f.close().await;
        })
        .unwrap();
    let mut intercept = b.intercept(Vec::new(), None).unwrap();
    assert!(!b.unlisten(listening.port()), "the transparent listener is gone");
    assert_eq!(b.ports_in_use(), 1, "only the intercept's port");
    let connect = tokio::spawn({
        let a = a.clone();
        async move { a.create_connection(sock("203.0.113.2:80"), ConnectOptions::new()).await }
    });
    // As a `Stream`.
    let held = within(
        "held",
        TIMEOUT,
        std::future::poll_fn(|cx| futures_core::Stream::poll_next(std::pin::Pin::new(&mut intercept), cx)),
    )
    .await
    .expect("a held SYN");
    let mut server = held.accept().await.unwrap();
    let mut client = within("connect", TIMEOUT, connect).await.unwrap().unwrap();
    server.write("held").await.unwrap();
    server.close().await.unwrap();
    assert_eq!(within("read", TIMEOUT, client.read_to_end()).await.unwrap(), b"held");
    // And back: the intercept ends.
    let _listening = b
        .listen_transparent(None, |mut f| async move {
            let _ = f.write("transparent").await;
            let _ = f.close().await;
        })
        .unwrap();
    assert!(within("end", TIMEOUT, intercept.next()).await.is_none(), "the intercept ended");
    let mut f =
        within("connect", TIMEOUT, a.create_connection(sock("203.0.113.2:81"), ConnectOptions::new())).await.unwrap();
    assert_eq!(within("read", TIMEOUT, f.read_to_end()).await.unwrap(), b"transparent");
}

/// A scripted peer at 10.0.0.2 dialling a stack at 10.0.0.1 whose config
/// `tweak` changes.
fn raw_peer(
    port: u16,
    tweak: impl Fn(conflux_netstack::StackConfig) -> conflux_netstack::StackConfig,
) -> (Peer, NetStack) {
    let (a, b) = link_pair(LinkConfig::ip().checksums(Checksums::Compute));
    let stack = NetStack::new(tweak(side(true)), a);
    (Peer { end: b, me: addr(B4, 40000), stack_addr: addr(A4, port), window: 0xffff }, stack)
}

#[tokio::test(start_paused = true)]
async fn dropping_the_intercept_resets_a_handshake_being_accepted() {
    let (mut peer, stack) = raw_peer(82, |c| c);
    let mut intercept = stack.intercept(vec![ip(A4)], None).unwrap();
    peer.send(3000, 0, SYN, b"");
    let accept = tokio::spawn(next_held(&mut intercept).await.accept());
    let synack = peer.recv().await;
    assert_eq!(synack.flags & (SYN | ACK), SYN | ACK, "{synack:?}");
    drop(intercept);
    let got = within("accept", TIMEOUT, accept).await.unwrap();
    assert!(matches!(got, Err(ConnectError::Refused { .. })), "{got:?}");
    let rst = peer.recv().await;
    assert_eq!(rst.flags & RST, RST, "{rst:?}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!((stack.sockets(), stack.ports_in_use()), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_leaves_the_syn_unanswered_for_its_retransmission() {
    // At most 2 SYNs held or in their handshake; the queue holds 2.
    let (mut peer, stack) = raw_peer(83, |c| c.max_half_open(2));
    let mut intercept = stack.intercept(vec![ip(A4)], None).unwrap();
    for port in [40001, 40002, 40003] {
        peer.me = addr(B4, port);
        peer.send(9000, 0, SYN, b"");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The third evicted the first (forgotten: still queued, skipped) and
    // found the queue full: forgotten unanswered.
    assert!(peer.recv_within(Duration::from_millis(100)).await.is_none(), "nothing answered, no RST");
    assert_eq!(stack.sockets(), 1, "only the second is held");
    let second = next_held(&mut intercept).await;
    assert_eq!(second.src(), addr(B4, 40002), "the evicted first one is skipped");
    no_more(&mut intercept, Duration::from_millis(100)).await;
    // The third's retransmission is held now.
    peer.send(9000, 0, SYN, b"");
    let third = next_held(&mut intercept).await;
    assert_eq!(third.src(), addr(B4, 40003));
    drop((second, third));
    let rsts = [peer.recv().await, peer.recv().await];
    assert!(rsts.iter().all(|s| s.flags & RST == RST), "dropped: refused: {rsts:?}");
    assert_eq!((stack.sockets(), stack.ports_in_use()), (0, 1));
}

#[tokio::test(start_paused = true)]
async fn accepted_flows_get_the_intercepts_keepalive() {
    let (ea, eb) = link_pair(LinkConfig::ethernet());
    let switch = ea.switch();
    let a = NetStack::new(side(true).gateway_v4(B4.parse().unwrap()), ea);
    let b = NetStack::new(side(false), eb);
    let ka = conflux_tcp::Keepalive::new(Duration::from_secs(10), Duration::from_secs(1), 3);
    let mut intercept = b.intercept(Vec::new(), Some(ka)).unwrap();
    let connect = tokio::spawn({
        let a = a.clone();
        async move { a.create_connection(sock("203.0.113.3:80"), ConnectOptions::new()).await }
    });
    let mut server = next_held(&mut intercept).await.accept().await.unwrap();
    let _client = within("connect", TIMEOUT, connect).await.unwrap().unwrap();
    switch.set_up(false);
    let start = tokio::time::Instant::now();
    let got = within("keepalive expiry", Duration::from_secs(30), server.read()).await;
    let took = start.elapsed();
    assert!(got.is_err() || matches!(got, Ok(None)), "{got:?}");
    assert!(took >= Duration::from_secs(12) && took <= Duration::from_secs(15), "after + probes * interval: {took:?}");
}

#[tokio::test(start_paused = true)]
async fn disconnect_ends_the_intercept_and_its_held_syns() {
    let (a, b) = guest_and_gateway();
    let mut intercept = b.intercept(Vec::new(), None).unwrap();
    let connect = tokio::spawn({
        let a = a.clone();
        async move { a.create_connection(sock("203.0.113.4:80"), ConnectOptions::new()).await }
    });
    let held = next_held(&mut intercept).await;
    within("disconnect", TIMEOUT, b.disconnect()).await;
    assert!(within("end", TIMEOUT, intercept.next()).await.is_none());
    let got = held.accept().await;
    assert!(matches!(got, Err(ConnectError::Disconnected)), "{got:?}");
    assert!(matches!(b.intercept(Vec::new(), None), Err(conflux_tcp::ListenError::Disconnected)));
    connect.abort();
}

#[tokio::test(start_paused = true)]
async fn an_undecided_syn_expires_after_the_connect_timeout() {
    let (mut peer, stack) = raw_peer(84, |c| c.connect_timeout(Duration::from_secs(20)));
    let mut intercept = stack.intercept(vec![ip(A4)], None).unwrap();
    peer.send(1000, 0, SYN, b"");
    let held = next_held(&mut intercept).await;
    tokio::time::sleep(Duration::from_secs(19)).await;
    assert_eq!(stack.sockets(), 1, "still held after 19 s (past the 10 s handshake timeout)");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!((stack.sockets(), stack.ports_in_use()), (0, 1), "forgotten after 20 s");
    let got = held.accept().await;
    assert!(matches!(got, Err(ConnectError::Other { .. })), "{got:?}");
    assert!(peer.recv_within(Duration::from_millis(100)).await.is_none(), "nothing answered");
    // The peer's next retransmission is a new held SYN.
    peer.send(1000, 0, SYN, b"");
    let again = next_held(&mut intercept).await;
    assert_eq!(again.src(), peer.me);
}

/// Dials `n` connections at once through `a` to foreign addresses that `b`
/// intercepts, each decided after a delay of its own (a forwarder's connect
/// elsewhere); every third refused. Returns (accepted, refused).
async fn parallel_round(a: &NetStack, intercept: &mut Intercept, n: u16) -> (usize, usize) {
    let mut dials = tokio::task::JoinSet::new();
    for i in 0..n {
        let a = a.clone();
        dials.spawn(async move {
            let dst = addr("198.51.100.77", 2000 + i);
            match a.create_connection(dst, ConnectOptions::new()).await {
                Ok(mut f) => {
                    f.write(format!("{i}")).await.unwrap();
                    f.shutdown(conflux_flow::Shutdown::Write).await.unwrap();
                    assert_eq!(f.read_to_end().await.unwrap(), format!("{i}").as_bytes());
                    f.close().await.unwrap();
                    (1, 0)
                }
                Err(ConnectError::Refused { .. }) => {
                    assert_eq!(i % 3, 0, "refused only when decided so");
                    (0, 1)
                }
                Err(e) => panic!("connection {i}: {e}"),
            }
        });
    }
    let mut decisions = tokio::task::JoinSet::new();
    for _ in 0..n {
        let held = next_held(intercept).await;
        decisions.spawn(async move {
            let i = held.dst().port() - 2000;
            tokio::time::sleep(Duration::from_millis(u64::from(i % 7) * 3)).await;
            if i % 3 == 0 {
                held.refuse();
            } else {
                let mut f = held.accept().await.expect("accept");
                let got = f.read_to_end().await.unwrap();
                f.write(got).await.unwrap();
                f.close().await.unwrap();
            }
        });
    }
    let (mut accepted, mut refused) = (0, 0);
    while let Some(r) = within("dials", TIMEOUT, dials.join_next()).await {
        let (a, r) = r.unwrap();
        accepted += a;
        refused += r;
    }
    while let Some(r) = within("decisions", TIMEOUT, decisions.join_next()).await {
        r.unwrap();
    }
    (accepted, refused)
}

#[tokio::test(start_paused = true)]
async fn concurrent_held_syns_decided_in_any_order() {
    let (a, b) = guest_and_gateway();
    let mut intercept = b.intercept(Vec::new(), None).unwrap();
    let (accepted, refused) = parallel_round(&a, &mut intercept, 60).await;
    assert_eq!((accepted, refused), (40, 20));
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert_eq!((a.sockets(), b.sockets(), b.ports_in_use(), b.open_flows()), (0, 0, 1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_held_syns_on_two_threads() {
    let (a, b) = guest_and_gateway();
    let mut intercept = b.intercept(Vec::new(), None).unwrap();
    for _ in 0..4 {
        let (accepted, refused) = parallel_round(&a, &mut intercept, 48).await;
        assert_eq!((accepted, refused), (32, 16));
    }
    assert_eq!(b.open_flows(), 0);
}

/// Over a fault-free in-memory link `accept` sends the SYN-ACK from the
/// accepting task itself: the peer's ACK comes back in that same round,
/// so the accept is done by its second poll without yielding, before any
/// driver ran (a driver woken to send the SYN-ACK needs the task to yield
/// first: a wake-up and a driver round more per accepted connection).
#[tokio::test]
async fn accept_answers_the_syn_in_its_own_round() {
    use std::future::Future;
    use std::task::{Context, Poll, Waker};

    let (a, b) = guest_and_gateway();
    let mut intercept = b.intercept(Vec::new(), None).unwrap();
    let dialled = sock("203.0.113.7:443");
    let connect = tokio::spawn({
        let a = a.clone();
        async move { a.create_connection(dialled, ConnectOptions::new()).await }
    });
    let held = next_held(&mut intercept).await;
    let mut accept = std::pin::pin!(held.accept());
    let mut cx = Context::from_waker(Waker::noop());
    let polled = match accept.as_mut().poll(&mut cx) {
        Poll::Pending => accept.as_mut().poll(&mut cx),
        ready => ready,
    };
    let Poll::Ready(accepted) = polled else { panic!("the accept waits for a driver round") };
    let mut server = accepted.expect("accept");
    let mut client = within("connect", TIMEOUT, connect).await.unwrap().expect("connect");
    client.write("ping").await.unwrap();
    assert_eq!(within("ping", TIMEOUT, server.read()).await.unwrap().as_deref(), Some(&b"ping"[..]));
}

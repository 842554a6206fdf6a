//! The last segment of a connection the shell let go (an abort's RST, a
//! close's FIN) after a long silence: on an Ethernet link the neighbour
//! entry expired (smoltcp keeps one 60 s), smoltcp asks again (ARP, NDP)
//! and drops the segment meanwhile; the core keeps the socket until it went
//! out. And the orphan timeout counts from the release, not from the last
//! segment heard.

use super::*;

const A6: &str = "fd00::1";
const B6: &str = "fd00::2";

/// Two cores on an Ethernet link, IPv4 or IPv6 only.
fn ethernet(v6: bool) -> Pair {
    let caps = DeviceCaps::new(Medium::Ethernet, 1500);
    let config = |a: bool| {
        let c = StackConfig::new().mac([2, 0, 0, 0, 0, if a { 1 } else { 2 }]).seed(7).buffers(8 * 1024, 8 * 1024);
        match (v6, a) {
            (false, true) => c.ipv4(A.parse().unwrap(), 24),
            (false, false) => c.ipv4(B.parse().unwrap(), 24),
            (true, true) => c.ipv6(A6.parse().unwrap(), 64),
            (true, false) => c.ipv6(B6.parse().unwrap(), 64),
        }
    };
    Pair {
        a: Core::new(config(true), caps, FramePool::new(), Instant::ZERO),
        b: Core::new(config(false), caps, FramePool::new(), Instant::ZERO),
        now: Instant::ZERO,
        ea: Vec::new(),
        eb: Vec::new(),
        link_up: true,
    }
}

/// A connection from A to a listener on B's port 80, then `idle` of silence.
fn connected_then_idle(p: &mut Pair, v6: bool, idle: Duration) -> (ConnId, ConnId) {
    let (a, b) = if v6 { (A6, B6) } else { (A, B) };
    let (key, owns) = p.b.reserve(addr(b, 80)).unwrap();
    p.b.listen(key, 1, None, owns);
    let (ca, _) = p.a.connect(a.parse().unwrap(), addr(b, 80), None).unwrap();
    p.run();
    assert!(p.ea.iter().any(|e| matches!(e, Event::Established(id) if *id == ca)), "{:?}", p.ea);
    let cb = p.accepted().expect("accepted on B");
    p.b.unlisten(key, 1);
    p.advance(idle);
    (ca, cb)
}

fn reset(p: &mut Pair, cb: ConnId) -> bool {
    matches!(p.b.recv(cb, usize::MAX, |_, _| {}), Recv::Closed(End { reset: true, .. }))
}

#[test]
fn an_abort_after_the_neighbour_entry_expired_still_resets_the_peer() {
    for v6 in [false, true] {
        for idle in [59, 61, 200] {
            let mut p = ethernet(v6);
            let (ca, cb) = connected_then_idle(&mut p, v6, Duration::from_secs(idle));
            p.a.release(ca, true, false);
            p.run();
            assert!(reset(&mut p, cb), "v6 {v6}, idle {idle} s: the peer heard no reset");
            assert_eq!((p.a.sockets(), p.a.ports_in_use(), p.a.resets_abandoned), (0, 0, 0), "v6 {v6}, idle {idle} s");
        }
    }
}

#[test]
fn a_close_after_a_long_silence_sends_a_fin_not_a_reset() {
    // Ethernet over IPv4 and IPv6 (neighbour entries expired), and an IP
    // link: more than the 60 s orphan timeout of silence before the close.
    for (v6, ip) in [(false, false), (true, false), (false, true)] {
        let mut p = if ip { Pair::new() } else { ethernet(v6) };
        let (ca, cb) = if ip {
            let ids = p.connected(80);
            p.advance(Duration::from_secs(61));
            ids
        } else {
            connected_then_idle(&mut p, v6, Duration::from_secs(61))
        };
        p.a.release(ca, false, false);
        p.run();
        let read = p.b.recv(cb, usize::MAX, |_, _| {});
        assert!(matches!(read, Recv::Finished), "v6 {v6}, ip {ip}: {read:?}, not the FIN");
        p.b.release(cb, false, false);
        p.advance(Duration::from_secs(11));
        assert_eq!((p.a.sockets(), p.b.sockets(), p.a.ports_in_use()), (0, 0, 0), "v6 {v6}, ip {ip}");
    }
}

#[test]
fn an_orphan_whose_peer_vanished_is_aborted_an_orphan_timeout_after_its_release() {
    let mut p = ethernet(false);
    let (ca, _cb) = connected_then_idle(&mut p, false, Duration::from_secs(100));
    p.link_up = false;
    p.a.release(ca, false, false);
    p.advance(Duration::from_secs(59));
    assert_eq!(p.a.sockets(), 1, "its FIN is still retried");
    // 60 s after the release it is aborted; its RST (no neighbour) is
    // given up on 3 s later.
    p.advance(Duration::from_secs(1) + RESET_PATIENCE + Duration::from_millis(100));
    assert_eq!((p.a.sockets(), p.a.ports_in_use(), p.a.resets_abandoned), (0, 0, 1));
}

#[test]
fn an_abort_waits_for_a_late_neighbour_answer_and_gives_up_on_none() {
    // The first neighbour request is lost; the one smoltcp sends after its
    // 1 s of silence is answered: the RST goes then.
    let mut p = ethernet(false);
    let (ca, cb) = connected_then_idle(&mut p, false, Duration::from_secs(61));
    p.link_up = false;
    p.a.release(ca, true, false);
    p.advance(Duration::from_millis(500));
    assert_eq!((p.a.sockets(), p.a.ports_in_use()), (1, 1), "kept while its RST is owed");
    p.link_up = true;
    p.advance(Duration::from_secs(1));
    assert!(reset(&mut p, cb), "the peer heard no reset");
    assert_eq!((p.a.sockets(), p.a.ports_in_use(), p.a.resets_abandoned), (0, 0, 0));

    // No answer at all: given up within the bound, counted, all released.
    let mut p = ethernet(false);
    let (ca, cb) = connected_then_idle(&mut p, false, Duration::from_secs(61));
    p.link_up = false;
    p.a.release(ca, true, false);
    p.advance(RESET_PATIENCE + Duration::from_millis(100));
    assert_eq!((p.a.sockets(), p.a.ports_in_use(), p.a.resets_abandoned), (0, 0, 1));
    p.link_up = true;
    p.advance(Duration::from_secs(1));
    assert!(!reset(&mut p, cb));
}

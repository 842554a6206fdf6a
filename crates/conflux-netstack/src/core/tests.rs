//! Two cores joined in a loop, no runtime: frames move between them and
//! virtual time advances only when a test says so.

use std::time::Duration;

use super::*;

mod neighbour;

const A: &str = "10.0.0.1";
const B: &str = "10.0.0.2";

fn config(ip: &str) -> StackConfig {
    StackConfig::new()
        .ipv4(ip.parse().unwrap(), 24)
        .gateway_v4(if ip == A { B } else { A }.parse().unwrap())
        .seed(7)
        .buffers(8 * 1024, 8 * 1024)
        .user_timeout(Duration::from_secs(3))
        .max_half_open(256)
}

/// Two cores on an IP link (checksums computed and verified), the time, and
/// every event each one gave.
struct Pair {
    a: Core,
    b: Core,
    now: Instant,
    ea: Vec<Event>,
    eb: Vec<Event>,
    /// While false, frames are lost in both directions.
    link_up: bool,
}

impl Pair {
    fn new() -> Pair {
        let caps = DeviceCaps::new(Medium::Ip, 1500);
        Pair {
            a: Core::new(config(A), caps, FramePool::new(), Instant::ZERO),
            b: Core::new(config(B), caps, FramePool::new(), Instant::ZERO),
            now: Instant::ZERO,
            ea: Vec::new(),
            eb: Vec::new(),
            link_up: true,
        }
    }

    /// Moves frames both ways until neither core has anything to send.
    fn run(&mut self) {
        for _ in 0..10_000 {
            let (mut ab, mut ba) = (Vec::new(), Vec::new());
            self.a.handle_timeout(self.now);
            self.a.poll_transmit(self.now, &mut ab);
            self.b.handle_timeout(self.now);
            self.b.poll_transmit(self.now, &mut ba);
            self.ea.extend(std::iter::from_fn(|| self.a.poll_event()));
            self.eb.extend(std::iter::from_fn(|| self.b.poll_event()));
            if ab.is_empty() && ba.is_empty() && !self.a.has_work() && !self.b.has_work() {
                return;
            }
            if !self.link_up {
                ab.clear();
                ba.clear();
            }
            self.b.handle_frames(self.now, &mut ab);
            self.a.handle_frames(self.now, &mut ba);
        }
        panic!("the cores never went quiet");
    }

    /// Advances virtual time by `d` in steps of at most the nearer deadline.
    fn advance(&mut self, d: Duration) {
        let end = self.now + d.into();
        loop {
            self.run();
            let next = [self.a.poll_timeout(), self.b.poll_timeout()].into_iter().flatten().min();
            match next {
                Some(t) if t <= end => self.now = t.max(self.now + smoltcp::time::Duration::from_micros(1)),
                _ => break,
            }
        }
        self.now = end;
        self.run();
    }

    /// A listener on B's `port` (id 1) and a connect from A, handshake done.
    fn connected(&mut self, port: u16) -> (ConnId, ConnId) {
        let (key, owns) = self.b.reserve(addr(B, port)).unwrap();
        self.b.listen(key, 1, None, owns);
        let (ca, _) = self.a.connect(A.parse().unwrap(), addr(B, port), None).unwrap();
        self.run();
        assert!(self.ea.iter().any(|e| matches!(e, Event::Established(id) if *id == ca)), "{:?}", self.ea);
        let cb = self.accepted().expect("accepted on B");
        (ca, cb)
    }

    fn accepted(&mut self) -> Option<ConnId> {
        let at = self.eb.iter().position(|e| matches!(e, Event::Accepted { .. }))?;
        match self.eb.remove(at) {
            Event::Accepted { id, .. } => Some(id),
            _ => unreachable!(),
        }
    }
}

fn addr(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse().unwrap(), port)
}

fn read_all(core: &mut Core, id: ConnId) -> Vec<u8> {
    let mut got = Vec::new();
    while let Recv::Data(n) = core.recv(id, usize::MAX, |b, _| got.extend_from_slice(b)) {
        assert!(n > 0);
    }
    got
}

#[test]
fn handshake_data_both_ways_close_and_reap() {
    let mut p = Pair::new();
    let (ca, cb) = p.connected(80);
    assert_eq!(p.a.send(ca, b"hello").unwrap(), 5);
    p.run();
    assert!(p.eb.iter().any(|e| matches!(e, Event::Readable(id) if *id == cb)));
    assert_eq!(read_all(&mut p.b, cb), b"hello");
    // More than the 8 KiB buffers: written as room appears.
    let data: Vec<u8> = (0..40_000u32).map(|i| i as u8).collect();
    let (mut sent, mut got) = (0, Vec::new());
    while got.len() < data.len() {
        if let Ok(n) = p.b.send(cb, &data[sent..]) {
            sent += n;
        }
        // Delayed ACKs go out as time passes.
        p.advance(Duration::from_millis(20));
        got.extend(read_all(&mut p.a, ca));
    }
    assert_eq!(got, data);
    p.a.close_write(ca);
    p.run();
    assert!(matches!(p.b.recv(cb, usize::MAX, |_, _| {}), Recv::Finished));
    p.b.release(cb, false, false);
    p.a.release(ca, false, true);
    p.run();
    assert_eq!(p.b.sockets(), 0, "B's side closed on the last ACK");
    assert_eq!(p.a.sockets(), 1, "A is in TIME_WAIT");
    p.advance(Duration::from_secs(11));
    assert_eq!((p.a.sockets(), p.a.ports_in_use()), (0, 0), "reaped, port freed");
}

#[test]
fn a_window_reopened_after_a_close_in_close_wait_is_heard() {
    // A half-closed first (B is in CLOSE-WAIT), then B filled A's window
    // (A reads nothing) and closed with bytes still unsent. smoltcp 0.14
    // in LAST-ACK answers a bare window update (an ACK acknowledging
    // nothing new) with a challenge ACK and ignores its window, so if
    // B's close put it there, B would sit on a zero window until its
    // zero-window probe, an RTO (1 s) later: the 2-worker bulk stall.
    let mut p = Pair::new();
    let (ca, cb) = p.connected(80);
    p.a.close_write(ca);
    p.run();
    assert!(matches!(p.b.recv(cb, usize::MAX, |_, _| {}), Recv::Finished));
    // A's 8 KiB receive buffer fills, 4 KiB wait in B's send buffer.
    let data: Vec<u8> = (0..12 * 1024u32).map(|i| (i % 251) as u8).collect();
    let mut sent = 0;
    for _ in 0..10 {
        if let Ok(n) = p.b.send(cb, &data[sent..]) {
            sent += n;
        }
        // Delayed ACKs go out (far below the 1 s RTO).
        p.advance(Duration::from_millis(20));
    }
    assert_eq!(sent, data.len());
    assert_eq!(p.b.send_queue(cb), 4 * 1024, "A's window is zero: the rest waits");
    p.b.close_write(cb);
    p.advance(Duration::from_millis(20));
    let mut got = read_all(&mut p.a, ca);
    assert_eq!(got.len(), 8 * 1024);
    // A's read reopened its window: the rest and B's FIN come well before
    // a zero-window probe would (an RTO: 1 s).
    p.advance(Duration::from_millis(100));
    got.extend(read_all(&mut p.a, ca));
    assert_eq!(got.len(), data.len(), "the rest came after the window update, not after a probe");
    assert_eq!(got, data);
    assert!(matches!(p.a.recv(ca, usize::MAX, |_, _| {}), Recv::Finished), "B's FIN followed");
    p.a.release(ca, false, true);
    p.b.release(cb, false, true);
    p.run();
    assert_eq!(p.b.sockets(), 0, "B closed on the ACK of its FIN");
}

#[test]
fn an_abort_resets_the_peer() {
    let mut p = Pair::new();
    let (ca, cb) = p.connected(80);
    p.a.release(ca, true, false);
    p.run();
    assert!(p.eb.iter().any(|e| matches!(e, Event::Closed(id) if *id == cb)), "{:?}", p.eb);
    assert!(matches!(p.b.recv(cb, usize::MAX, |_, _| {}), Recv::Closed(End { reset: true, .. })));
    assert_eq!(p.b.send(cb, b"x"), Err(SendRefused::Closed(End { reset: true, timed_out: false })));
    assert_eq!(p.a.sockets(), 0);
}

#[test]
fn a_syn_to_no_listener_is_refused() {
    let mut p = Pair::new();
    let (ca, _) = p.a.connect(A.parse().unwrap(), addr(B, 81), None).unwrap();
    p.run();
    assert_eq!(p.a.connect_state(ca), ConnectState::Failed);
    assert_eq!(p.a.end(ca), End { reset: true, timed_out: false });
}

#[test]
fn held_syns_wait_for_accept_or_refuse() {
    let mut p = Pair::new();
    let (key, owns) = p.b.reserve(addr(B, 80)).unwrap();
    p.b.listen(key, 1, None, owns);
    p.b.set_hold(key, true);
    let (ca, _) = p.a.connect(A.parse().unwrap(), addr(B, 80), None).unwrap();
    p.run();
    let held = match p.eb.as_slice() {
        [Event::Syn { id, listen: 1, local, .. }] if *local == addr(B, 80) => *id,
        other => panic!("expected one held SYN: {other:?}"),
    };
    assert_eq!(p.a.connect_state(ca), ConnectState::Pending, "nothing answered yet");
    p.advance(Duration::from_secs(1));
    assert_eq!(p.a.connect_state(ca), ConnectState::Pending, "the retransmitted SYN is held too");
    p.b.accept_syn(p.now, held);
    p.run();
    assert_eq!(p.a.connect_state(ca), ConnectState::Established);
    assert_eq!(p.accepted(), Some(held));

    p.eb.clear();
    let (refused, _) = p.a.connect(A.parse().unwrap(), addr(B, 80), None).unwrap();
    p.run();
    let Some(Event::Syn { id, .. }) = p.eb.pop() else { panic!("a held SYN") };
    p.b.refuse_syn(p.now, id);
    p.run();
    assert_eq!(p.a.connect_state(refused), ConnectState::Failed, "refused with an RST");
    assert_eq!(p.b.sockets(), 1, "only the accepted connection is left");

    // Undecided for the connect timeout (longer than the handshake timeout): forgotten.
    // (A's SYN retransmissions meanwhile are the same held SYN.)
    p.eb.clear();
    let (late, _) = p.a.connect(A.parse().unwrap(), addr(B, 80), None).unwrap();
    p.run();
    let Some(&Event::Syn { id: first, .. }) = p.eb.last() else { panic!("{:?}", p.eb) };
    p.advance(Duration::from_secs(29));
    assert_eq!(p.eb.len(), 1, "held for the connect timeout (30 s): {:?}", p.eb);
    assert_eq!(p.b.sockets(), 2);
    p.advance(Duration::from_millis(1500));
    assert!(matches!(p.eb[1], Event::Closed(id) if id == first), "{:?}", p.eb);
    assert_eq!(p.b.sockets(), 1);
    assert_eq!(p.a.connect_state(late), ConnectState::Pending, "never answered");
}

#[test]
fn the_transparent_listener_takes_foreign_and_own_addresses() {
    let mut p = Pair::new();
    let (key, owns) = p.b.reserve(conflux_tcp::any_addr(0)).unwrap();
    p.b.listen(key, 9, None, owns);
    p.b.set_transparent(Some(Transparent { port: key.port(), own: vec![B.parse().unwrap()] }));
    for dst in [addr("192.168.5.5", 443), addr(B, 9999)] {
        let (ca, _) = p.a.connect(A.parse().unwrap(), dst, None).unwrap();
        p.run();
        assert_eq!(p.a.connect_state(ca), ConnectState::Established, "to {dst}");
        let at = p.eb.iter().position(|e| matches!(e, Event::Accepted { .. })).expect("accepted");
        let Event::Accepted { id, listen: 9, local, .. } = p.eb.remove(at) else { panic!() };
        assert_eq!(local, dst, "the flow reports what the peer dialled");
        p.a.send(ca, b"via nat").unwrap();
        p.run();
        assert_eq!(read_all(&mut p.b, id), b"via nat");
        p.b.send(id, b"back").unwrap();
        p.run();
        assert_eq!(read_all(&mut p.a, ca), b"back", "egress rewritten back to {dst}");
    }
}

/// A holding listener on B's `port` (id `listen`) and a connect from A to
/// it: A's connect and B's held SYN.
fn held(p: &mut Pair, port: u16, listen: ListenId) -> (ConnId, ConnId) {
    if !p.b.is_listening(addr(B, port)) {
        let (key, owns) = p.b.reserve(addr(B, port)).unwrap();
        p.b.listen(key, listen, None, owns);
        p.b.set_hold(key, true);
    }
    p.eb.clear();
    let (ca, _) = p.a.connect(A.parse().unwrap(), addr(B, port), None).unwrap();
    p.run();
    match p.eb.as_slice() {
        [Event::Syn { id, .. }] => (ca, *id),
        other => panic!("expected one held SYN: {other:?}"),
    }
}

#[test]
fn a_held_syn_abandoned_in_any_phase_ends_and_its_peer_hears_of_it() {
    let mut p = Pair::new();
    // Held: refused.
    let (ca, hb) = held(&mut p, 80, 1);
    assert_eq!(p.b.handshake_state(hb), ConnectState::Pending);
    p.b.abandon_syn(p.now, hb);
    p.run();
    assert_eq!(p.a.connect_state(ca), ConnectState::Failed);
    assert_eq!(p.b.handshake_state(hb), ConnectState::Failed);
    assert!(!p.b.accept_syn(p.now, hb), "gone: nothing to accept");
    // Accepted and established: reset.
    let (ca, hb) = held(&mut p, 80, 1);
    assert!(p.b.accept_syn(p.now, hb));
    assert!(!p.b.accept_syn(p.now, hb), "accepted once");
    p.run();
    assert_eq!(p.b.handshake_state(hb), ConnectState::Established);
    assert_eq!(p.accepted(), Some(hb));
    p.b.abandon_syn(p.now, hb);
    p.run();
    assert_eq!(p.a.end(ca), End { reset: true, timed_out: false }, "reset");
    // Forgotten: the peer's retransmission is held again, as a new SYN.
    let (ca, hb) = held(&mut p, 80, 1);
    p.b.forget_syn(hb);
    assert_eq!(p.b.handshake_state(hb), ConnectState::Failed);
    p.eb.clear();
    p.advance(Duration::from_millis(1500));
    let again = match p.eb.as_slice() {
        [Event::Syn { id, .. }] => *id,
        other => panic!("expected the retransmitted SYN held: {other:?}"),
    };
    assert_ne!(again, hb);
    assert_eq!(p.a.connect_state(ca), ConnectState::Pending);
    // The listener goes, refusing what it held.
    p.b.unlisten_refusing(p.now, addr(B, 80), 1);
    p.run();
    assert_eq!(p.a.connect_state(ca), ConnectState::Failed, "refused at once");
    assert!(p.eb.iter().any(|e| matches!(e, Event::Closed(id) if *id == again)), "{:?}", p.eb);
    p.advance(Duration::from_secs(70));
    assert_eq!((p.b.sockets(), p.b.ports_in_use()), (0, 0));
}

#[test]
fn an_accepted_handshake_that_never_finishes_is_closed_after_the_handshake_timeout_from_accept() {
    let mut p = Pair::new();
    let (_, hb) = held(&mut p, 80, 1);
    // Held for 8 s of the 10 s handshake timeout, then accepted with the
    // link down: the handshake gets its own 10 s.
    p.link_up = false;
    p.advance(Duration::from_secs(8));
    assert!(p.b.accept_syn(p.now, hb));
    p.eb.clear();
    p.advance(Duration::from_secs(9));
    assert_eq!(p.b.handshake_state(hb), ConnectState::Pending, "not before 10 s from accept");
    p.advance(Duration::from_secs(2));
    assert_eq!(p.b.handshake_state(hb), ConnectState::Failed);
    assert!(p.eb.iter().any(|e| matches!(e, Event::Closed(id) if *id == hb)), "the shell hears it: {:?}", p.eb);
}

#[test]
fn the_transparent_port_is_no_port_of_our_addresses_outside_own() {
    let mut p = Pair::new();
    let (key, owns) = p.b.reserve(conflux_tcp::any_addr(0)).unwrap();
    p.b.listen(key, 9, None, owns);
    p.b.set_transparent(Some(Transparent { port: key.port(), own: Vec::new() }));
    let (ca, _) = p.a.connect(A.parse().unwrap(), addr(B, key.port()), None).unwrap();
    p.run();
    assert_eq!(p.a.connect_state(ca), ConnectState::Failed, "B's address is not `own`: a closed port");
    assert!(!p.eb.iter().any(|e| matches!(e, Event::Accepted { .. })), "{:?}", p.eb);
}

#[test]
fn the_user_timeout_fails_a_flow_whose_data_goes_unacknowledged() {
    let mut p = Pair::new();
    let (ca, _) = p.connected(80);
    p.advance(Duration::from_secs(60));
    assert_eq!(p.a.end(ca), End::default(), "idle is not a timeout");
    p.link_up = false;
    p.a.send(ca, b"lost").unwrap();
    p.advance(Duration::from_secs(2));
    assert_eq!(p.a.end(ca), End::default());
    p.advance(Duration::from_secs(2));
    assert_eq!(p.a.end(ca), End { reset: false, timed_out: true });
    assert!(p.ea.iter().any(|e| matches!(e, Event::Closed(id) if *id == ca)));
}

#[test]
fn idle_connections_cost_nothing_per_round() {
    let mut p = Pair::new();
    let (key, owns) = p.b.reserve(addr(B, 80)).unwrap();
    p.b.listen(key, 1, None, owns);
    for _ in 0..200 {
        p.a.connect(A.parse().unwrap(), addr(B, 80), None).unwrap();
    }
    p.run();
    assert_eq!(p.b.sockets(), 200);
    p.advance(Duration::from_secs(1));
    // Nothing is due or dirty: a round touches no connection.
    assert!(!p.a.has_work() && !p.b.has_work());
    assert!(p.a.dirty.is_empty() && p.b.timers.is_empty(), "no timer for an idle connection");
}

/// With `DeviceCaps::tso`, smoltcp is shown a larger MSS: A sends
/// super-segments tagged with the peer's real MSS for the device to cut.
#[test]
fn segmentation_offload_sends_tagged_super_segments() {
    let mut p = Pair::new();
    let caps = DeviceCaps { tso: Some(16_000), ..DeviceCaps::new(Medium::Ip, 1500) };
    p.a = Core::new(config(A).buffers(64 * 1024, 64 * 1024), caps, FramePool::new(), Instant::ZERO);
    let (ca, cb) = p.connected(80);
    let data = vec![7u8; 30_000];
    assert_eq!(p.a.send(ca, &data), Ok(30_000));
    let mut ab = Vec::new();
    p.a.poll_transmit(p.now, &mut ab);
    let big: Vec<_> = ab.iter().filter(|f| f.len() > 1500).collect();
    assert!(!big.is_empty(), "super-segments: {:?}", ab.iter().map(|f| f.len()).collect::<Vec<_>>());
    assert!(big.iter().all(|f| f.len() <= 16_000 && f.meta.gso_mss == Some(1460)), "tagged with the real MSS");
    // The peer (no offload) takes them whole here: the data arrives.
    p.b.handle_frames(p.now, &mut ab);
    let mut got = 0;
    for _ in 0..100 {
        p.advance(Duration::from_millis(50));
        got += read_all(&mut p.b, cb).len();
    }
    assert_eq!(got, 30_000);
}

/// The TCP payload bytes in `frames`.
fn payload(frames: &[FrameBuf]) -> usize {
    frames
        .iter()
        .map(|f| match wire::inspect(f, Medium::Ip, true) {
            Inspected::Tcp(seg) => seg.payload_len,
            _ => 0,
        })
        .sum()
}

/// A (segmentation offload: smoltcp shown up to 16,000 bytes, 64 KiB
/// buffers) connected to B (no offload, `b_buffers`-byte buffers), past
/// slow start's first window (smoltcp's congestion window opens at 2 KiB):
/// 80,000 bytes sent, acknowledged and read.
fn offload_pair(b_buffers: usize) -> (Pair, ConnId, ConnId) {
    let mut p = Pair::new();
    let caps = DeviceCaps { tso: Some(16_000), ..DeviceCaps::new(Medium::Ip, 1500) };
    p.a = Core::new(config(A).buffers(64 * 1024, 64 * 1024), caps, FramePool::new(), Instant::ZERO);
    let plain = DeviceCaps::new(Medium::Ip, 1500);
    p.b = Core::new(config(B).buffers(b_buffers, b_buffers), plain, FramePool::new(), Instant::ZERO);
    let (ca, cb) = p.connected(80);
    for _ in 0..4 {
        assert_eq!(p.a.send(ca, &[6u8; 20_000]), Ok(20_000));
        p.advance(Duration::from_millis(100));
        assert_eq!(read_all(&mut p.b, cb).len(), 20_000);
        p.advance(Duration::from_millis(100));
    }
    (p, ca, cb)
}

/// With `DeviceCaps::tso`, Nagle's algorithm counts real segments: a
/// super-segment shorter than the MSS smoltcp was shown but at least one
/// real MSS long leaves at once beside data in flight (before, the second
/// of two waited for the first's ACK); less than one real MSS still waits.
#[test]
fn segmentation_offload_holds_only_what_is_short_of_a_real_segment() {
    let (mut p, ca, cb) = offload_pair(64 * 1024);
    assert_eq!(p.a.send(ca, &[7u8; 30_000]), Ok(30_000));
    let mut ab = Vec::new();
    p.a.poll_transmit(p.now, &mut ab);
    let lens: Vec<_> = ab.iter().map(|f| f.len()).collect();
    assert!(lens.iter().filter(|&&n| n > 1500).count() >= 2, "two super-segments: {lens:?}");
    assert_eq!(payload(&ab), 30_000, "all of it, no ACK awaited");
    // 100 bytes beside 30,000 in flight: Nagle holds them.
    assert_eq!(p.a.send(ca, &[8u8; 100]), Ok(100));
    let mut more = Vec::new();
    p.a.poll_transmit(p.now, &mut more);
    assert_eq!(payload(&more), 0, "less than a real MSS waits for the ACK");
    p.b.handle_frames(p.now, &mut ab);
    p.run();
    assert_eq!(read_all(&mut p.b, cb).len(), 30_100, "sent once acknowledged");
    assert_eq!(p.a.set_nagle(ca, true), Some(true), "Nagle back on after the poll");
}

/// The same rule when an ACK frees room: a partial ACK that lets at least
/// one real MSS (but less than smoltcp's raised one) go out, with data
/// still in flight, sends it in that round, not after the rest is
/// acknowledged.
#[test]
fn segmentation_offload_sends_on_a_partial_ack() {
    let (mut p, ca, cb) = offload_pair(30_000);
    // B's window (30,000) takes less than this: the rest waits for room.
    assert_eq!(p.a.send(ca, &[7u8; 50_000]), Ok(50_000));
    let mut ab = Vec::new();
    p.a.poll_transmit(p.now, &mut ab);
    assert_eq!(payload(&ab), 30_000, "a window's worth");
    // B takes the first segment only, reads 8,000 bytes of it (its window
    // opens by that much: more than a real MSS, less than 16,000) and
    // acknowledges it; the second segment is still in flight.
    let mut first = vec![ab.remove(0)];
    p.b.handle_frames(p.now, &mut first);
    let mut got = 0;
    let _ = p.b.recv(cb, 8_000, |b, _| got += b.len());
    assert_eq!(got, 8_000);
    let mut ba = Vec::new();
    for _ in 0..50 {
        p.b.handle_timeout(p.now);
        p.b.poll_transmit(p.now, &mut ba);
        if !ba.is_empty() {
            break;
        }
        p.now += smoltcp::time::Duration::from_millis(1);
    }
    assert!(!ba.is_empty(), "B's ACK");
    p.a.handle_frames(p.now, &mut ba);
    let mut more = Vec::new();
    p.a.poll_transmit(p.now, &mut more);
    assert_eq!(payload(&more), 8_000, "sent on the partial ACK");
}

/// A closed connection's socket goes back to the pool (at once when reaped,
/// and from TIME_WAIT, which the core then keeps without it): the next
/// connection reuses it, and the wait still answers a retransmitted FIN.
#[test]
fn sockets_are_reused_and_time_wait_keeps_answering_without_one() {
    let mut p = Pair::new();
    let (ca, cb) = p.connected(80);
    p.b.set_nagle(cb, false);
    p.a.close_write(ca);
    p.run();
    assert!(matches!(p.b.recv(cb, usize::MAX, |_, _| {}), Recv::Finished));
    p.b.release(cb, false, false);
    let mut ba = Vec::new();
    p.b.poll_transmit(p.now, &mut ba);
    let copies: Vec<Vec<u8>> = ba.iter().map(|f| f.to_vec()).collect();
    let fin = copies
        .iter()
        .find_map(|f| match wire::inspect(f, Medium::Ip, true) {
            Inspected::Tcp(seg) if seg.fin => Some(seg),
            _ => None,
        })
        .expect("B's FIN");
    p.a.handle_frames(p.now, &mut ba);
    p.a.release(ca, false, true);
    p.run();
    assert_eq!((p.a.sockets(), p.b.sockets()), (1, 0), "A waits, B reaped");
    assert!(p.a.conns.values().all(|c| c.time_wait.is_some()), "A's wait is the core's");
    assert_eq!((p.a.pool_sockets.len(), p.b.pool_sockets.len()), (1, 1), "both sockets pooled");

    // The FIN again (our ACK was lost): acknowledged, checksums right.
    let mut again: Vec<FrameBuf> = copies.into_iter().map(FrameBuf::from_vec).collect();
    p.a.handle_frames(p.now, &mut again);
    let mut out = Vec::new();
    p.a.poll_transmit(p.now, &mut out);
    let acks: Vec<_> = out
        .iter()
        .filter_map(|f| match wire::inspect(f, Medium::Ip, true) {
            Inspected::Tcp(seg) => Some(seg),
            _ => None,
        })
        .collect();
    assert_eq!(acks.len(), 1, "{acks:?}");
    let ack = acks[0];
    assert!(ack.ack && !ack.fin && !ack.rst && !ack.syn && ack.payload_len == 0, "{ack:?}");
    assert_eq!((ack.src, ack.dst, ack.ack_number), (fin.dst, fin.src, fin.seq_end()));
    // A pure ACK at RCV.NXT gets no answer (no ACK loop).
    p.b.handle_frames(p.now, &mut out);
    p.run();

    // The next connections reuse the pooled sockets and work.
    let (c2, _) = p.a.connect(A.parse().unwrap(), addr(B, 80), None).unwrap();
    assert_eq!(p.a.pool_sockets.len(), 0);
    p.run();
    let d2 = p.accepted().expect("accepted on B");
    assert_eq!(p.b.pool_sockets.len(), 0);
    assert_eq!(p.a.send(c2, b"again").unwrap(), 5);
    p.run();
    assert_eq!(read_all(&mut p.b, d2), b"again");
    assert_eq!(p.b.set_nagle(d2, true), Some(true), "Nagle back at its default");

    // The wait ends after 10 s; the new connection stays.
    p.advance(Duration::from_secs(11));
    assert_eq!(p.a.sockets(), 1);
    assert!(p.a.conns.values().all(|c| c.time_wait.is_none()));
}

/// The pool of reaped sockets is capped (4 MiB of buffers: 32 sockets of
/// 64 KiB + 64 KiB here); the rest are freed.
/// `n` connections between two cores with `buf`-byte buffers each way, all
/// reset and reaped: how many sockets each side's pool kept.
fn pooled_after(n: usize, buf: usize) -> (usize, usize) {
    let mut p = Pair::new();
    let caps = DeviceCaps::new(Medium::Ip, 1500);
    p.a = Core::new(config(A).buffers(buf, buf), caps, FramePool::new(), Instant::ZERO);
    p.b = Core::new(config(B).buffers(buf, buf), caps, FramePool::new(), Instant::ZERO);
    let (key, owns) = p.b.reserve(addr(B, 80)).unwrap();
    p.b.listen(key, 1, None, owns);
    let ids: Vec<ConnId> = (0..n).map(|_| p.a.connect(A.parse().unwrap(), addr(B, 80), None).unwrap().0).collect();
    p.run();
    assert_eq!(p.b.sockets(), n);
    for id in ids {
        p.a.release(id, true, false);
    }
    p.run();
    while let Some(id) = p.accepted() {
        p.b.release(id, false, false);
    }
    p.run();
    assert_eq!((p.a.sockets(), p.b.sockets()), (0, 0), "reset and reaped on both sides");
    (p.a.pool_sockets.len(), p.b.pool_sockets.len())
}

#[test]
fn the_socket_pool_is_capped() {
    // 4 MiB of 64 KiB + 64 KiB sockets.
    assert_eq!(pooled_after(100, 64 * 1024), (32, 32));
}

#[test]
fn the_socket_pool_keeps_16_large_sockets() {
    // 4 MiB holds only 4 sockets of 512 KiB + 512 KiB: the floor keeps 16.
    assert_eq!(pooled_after(20, 512 * 1024), (16, 16));
}

/// With `DeviceCaps::tcp_tx_csum` the core leaves every TCP checksum 0 for
/// the device to complete (here B takes A's frames as a TAP's kernel
/// would: partial), and still checks the frames it receives.
#[test]
fn a_device_completing_tcp_checksums_gets_them_zero_and_received_ones_are_still_checked() {
    let mut p = Pair::new();
    let caps = DeviceCaps { tcp_tx_csum: true, ..DeviceCaps::new(Medium::Ip, 1500) };
    p.a = Core::new(config(A), caps, FramePool::new(), Instant::ZERO);
    let (key, owns) = p.b.reserve(addr(B, 80)).unwrap();
    p.b.listen(key, 1, None, owns);
    let (ca, _) = p.a.connect(A.parse().unwrap(), addr(B, 80), None).unwrap();
    let (mut tcp_frames, mut cb, mut got) = (0, None, Vec::new());
    for round in 0..200 {
        if round == 2 {
            assert_eq!(p.a.send(ca, &[5u8; 3000]), Ok(3000));
        }
        let (mut ab, mut ba) = (Vec::new(), Vec::new());
        p.a.poll_transmit(p.now, &mut ab);
        p.b.poll_transmit(p.now, &mut ba);
        for f in &mut ab {
            if let Inspected::Tcp(seg) = wire::inspect(f, Medium::Ip, false) {
                tcp_frames += 1;
                assert_eq!(&f[20 + 16..20 + 18], &[0, 0], "the field left 0");
                assert!(!matches!(wire::inspect(f, Medium::Ip, true), Inspected::Tcp(_)), "{seg:?} is not complete");
                f.meta.csum = RxCsum::Partial;
            }
        }
        p.b.handle_frames(p.now, &mut ab);
        p.a.handle_frames(p.now, &mut ba);
        p.ea.extend(std::iter::from_fn(|| p.a.poll_event()));
        p.eb.extend(std::iter::from_fn(|| p.b.poll_event()));
        cb = cb.or_else(|| p.accepted());
        if let Some(cb) = cb {
            got.extend(read_all(&mut p.b, cb));
        }
        p.now += smoltcp::time::Duration::from_millis(10);
        p.a.handle_timeout(p.now);
        p.b.handle_timeout(p.now);
    }
    assert!(tcp_frames >= 3, "SYN, ACK, data: {tcp_frames}");
    assert_eq!(got, vec![5u8; 3000], "the data arrived");
    // A still checks what it receives: a corrupted segment from B is dropped.
    let cb = cb.unwrap();
    assert_eq!(p.b.send(cb, b"abc"), Ok(3));
    let mut ba = Vec::new();
    p.b.poll_transmit(p.now, &mut ba);
    let last = ba.last_mut().expect("B's data");
    let n = last.len();
    last[n - 1] ^= 0xff;
    p.a.handle_frames(p.now, &mut ba);
    assert!(read_all(&mut p.a, ca).is_empty(), "a corrupted segment is not taken");
}

/// The connection-id hasher spreads consecutive ids over buckets (low bits)
/// and tags (the top 7 bits hashbrown compares first).
#[test]
fn consecutive_connection_ids_hash_apart() {
    use std::hash::{BuildHasher, BuildHasherDefault};
    let build = BuildHasherDefault::<IdHasher>::default();
    let hashes: Vec<u64> = (1..=1024u64).map(|id| build.hash_one(id)).collect();
    let buckets: std::collections::HashSet<u64> = hashes.iter().map(|h| h & 1023).collect();
    let tags: std::collections::HashSet<u64> = hashes.iter().map(|h| h >> 57).collect();
    assert_eq!(buckets.len(), 1024, "every id its own bucket of 1024");
    assert_eq!(tags.len(), 128, "every tag used");
}

/// The TCP segments among `frames` (checksums checked).
fn segments(frames: &[FrameBuf]) -> Vec<Segment> {
    frames
        .iter()
        .filter_map(|f| match wire::inspect(f, Medium::Ip, true) {
            Inspected::Tcp(seg) => Some(seg),
            _ => None,
        })
        .collect()
}

/// A connection that exchanged a request and a response, then A's bare FIN
/// delivered to B (B's answer, if any, returned undelivered).
fn fin_delivered(p: &mut Pair) -> (ConnId, ConnId, Segment, Vec<FrameBuf>) {
    let (ca, cb) = p.connected(80);
    assert_eq!(p.a.send(ca, &[1; 1024]).unwrap(), 1024);
    p.run();
    assert_eq!(read_all(&mut p.b, cb).len(), 1024);
    assert_eq!(p.b.send(cb, &[2; 1024]).unwrap(), 1024);
    p.advance(Duration::from_millis(50));
    assert_eq!(read_all(&mut p.a, ca).len(), 1024);
    p.a.close_write(ca);
    let mut ab = Vec::new();
    p.a.poll_transmit(p.now, &mut ab);
    let fin = segments(&ab).into_iter().find(|s| s.fin).expect("A's FIN");
    assert_eq!(fin.payload_len, 0, "a bare FIN");
    p.b.handle_frames(p.now, &mut ab);
    p.b.handle_timeout(p.now);
    let mut ba = Vec::new();
    p.b.poll_transmit(p.now, &mut ba);
    p.eb.extend(std::iter::from_fn(|| p.b.poll_event()));
    assert!(p.eb.iter().any(|e| matches!(e, Event::Readable(id) if *id == cb)), "{:?}", p.eb);
    assert!(matches!(p.b.recv(cb, usize::MAX, |_, _| {}), Recv::Finished));
    (ca, cb, fin, ba)
}

/// The peer's bare FIN is not acknowledged alone when our FIN follows
/// within the ACK delay: the FIN carries the ACK (one frame, not two).
#[test]
fn the_ack_of_a_bare_fin_rides_on_our_prompt_fin() {
    let mut p = Pair::new();
    let (ca, cb, fin, ba) = fin_delivered(&mut p);
    assert!(segments(&ba).is_empty(), "no bare ACK at once: {:?}", segments(&ba));
    let due = p.b.poll_timeout().expect("a deadline for the ACK");
    assert!(due > p.now && due <= p.now + smoltcp::time::Duration::from_millis(10), "{due} at {}", p.now);
    // The application closes 1 ms later.
    p.now += smoltcp::time::Duration::from_millis(1);
    p.b.handle_timeout(p.now);
    let mut ba = Vec::new();
    p.b.poll_transmit(p.now, &mut ba);
    assert!(ba.is_empty(), "still waiting at 1 ms");
    p.b.release(cb, false, false);
    p.b.poll_transmit(p.now, &mut ba);
    let segs = segments(&ba);
    assert_eq!(segs.len(), 1, "{segs:?}");
    let ours = segs[0];
    assert!(ours.fin && ours.ack && ours.payload_len == 0, "{ours:?}");
    assert_eq!(ours.ack_number, fin.seq_end(), "our FIN acknowledges theirs");
    p.a.handle_frames(p.now, &mut ba);
    p.a.release(ca, false, true);
    p.run();
    assert_eq!((p.a.sockets(), p.b.sockets()), (1, 0), "A in TIME_WAIT, B reaped on A's last ACK");
    // Nothing more from B later: its ACK went with its FIN.
    let mut late = Vec::new();
    p.now += smoltcp::time::Duration::from_millis(20);
    p.b.handle_timeout(p.now);
    p.b.poll_transmit(p.now, &mut late);
    assert!(late.is_empty());
}

/// When the application does not close, the FIN's ACK still goes out by
/// itself once the ACK delay passed (and data written meanwhile carries it
/// at once).
#[test]
fn the_ack_of_a_bare_fin_goes_alone_within_the_ack_delay() {
    let mut p = Pair::new();
    let (ca, cb, fin, ba) = fin_delivered(&mut p);
    assert!(segments(&ba).is_empty());
    let start = p.now;
    let mut acks = Vec::new();
    while p.now < start + smoltcp::time::Duration::from_millis(50) {
        let due = p.b.poll_timeout().expect("a deadline for the ACK");
        p.now = due.max(p.now + smoltcp::time::Duration::from_micros(1));
        p.b.handle_timeout(p.now);
        let mut ba = Vec::new();
        p.b.poll_transmit(p.now, &mut ba);
        if !ba.is_empty() {
            acks = segments(&ba);
            p.a.handle_frames(p.now, &mut ba);
            break;
        }
    }
    assert_eq!(acks.len(), 1, "{acks:?}");
    let ack = acks[0];
    assert!(ack.ack && !ack.fin && ack.payload_len == 0, "{ack:?}");
    assert_eq!(ack.ack_number, fin.seq_end());
    assert!(p.now <= start + smoltcp::time::Duration::from_millis(10), "ACK at {} (FIN at {start})", p.now);
    p.run();
    assert_eq!(p.a.conns[&ca].socket().state(), tcp::State::FinWait2, "A heard the ACK");
    // B can still write after the peer's FIN; then it closes.
    assert_eq!(p.b.send(cb, b"late").unwrap(), 4);
    p.run();
    assert_eq!(read_all(&mut p.a, ca), b"late");
    p.b.release(cb, false, false);
    p.a.release(ca, false, true);
    p.advance(Duration::from_millis(50));
    assert_eq!((p.a.sockets(), p.b.sockets()), (1, 0));
}

/// Data written after a bare FIN arrived carries the FIN's ACK at once.
#[test]
fn data_after_a_bare_fin_carries_its_ack_at_once() {
    let mut p = Pair::new();
    let (_ca, cb, fin, ba) = fin_delivered(&mut p);
    assert!(segments(&ba).is_empty());
    assert_eq!(p.b.send(cb, b"tail").unwrap(), 4);
    let mut ba = Vec::new();
    p.b.poll_transmit(p.now, &mut ba);
    let segs = segments(&ba);
    assert_eq!(segs.len(), 1, "{segs:?}");
    assert!(segs[0].ack && segs[0].payload_len == 4 && segs[0].ack_number == fin.seq_end(), "{:?}", segs[0]);
}

/// The first full-sized data segments of a connection are acknowledged at
/// once (quick ACK): the sender's first window (one segment, smoltcp's
/// initial congestion window) does not wait out the ACK delay. A small
/// segment keeps the delay (its ACK rides on the answer).
#[test]
fn a_connections_first_full_segments_are_acknowledged_at_once() {
    let mut p = Pair::new();
    let (ca, cb) = p.connected(80);
    let ack_of = |p: &mut Pair, payload: &[u8]| {
        assert_eq!(p.a.send(ca, payload).unwrap(), payload.len());
        let mut ab = Vec::new();
        p.a.poll_transmit(p.now, &mut ab);
        let sent = segments(&ab);
        assert_eq!(sent.len(), 1, "{sent:?}");
        p.b.handle_frames(p.now, &mut ab);
        let mut ba = Vec::new();
        p.b.poll_transmit(p.now, &mut ba);
        let acks = segments(&ba);
        p.a.handle_frames(p.now, &mut ba);
        (sent[0], acks)
    };
    let (seg, acks) = ack_of(&mut p, &[7; 4000]);
    assert_eq!(seg.payload_len, 1460, "one full segment (the initial window)");
    assert_eq!(acks.len(), 1, "{acks:?}");
    assert!(acks[0].ack && acks[0].ack_number == seg.seq_end(), "{:?}", acks[0]);
    p.advance(Duration::from_millis(50));
    assert_eq!(read_all(&mut p.b, cb).len(), 4000);
    let (_, acks) = ack_of(&mut p, b"small");
    assert!(acks.is_empty(), "a small segment's ACK waits: {acks:?}");
}

fn ms(n: u64) -> smoltcp::time::Duration {
    smoltcp::time::Duration::from_millis(n)
}

/// A segment whose ACK smoltcp delays takes no egress pass: the receiver
/// has nothing for `poll_transmit`, its deadline is the ACK delay's (filed
/// as the segment was received), and the ACK goes out alone then.
#[test]
fn a_delayed_ack_takes_no_egress_pass_and_leaves_at_its_deadline() {
    let mut p = Pair::new();
    let (ca, cb) = p.connected(80);
    p.advance(Duration::from_millis(50));
    assert_eq!(p.a.send(ca, &[7; 64]).unwrap(), 64);
    let mut ab = Vec::new();
    p.a.poll_transmit(p.now, &mut ab);
    let data = segments(&ab);
    assert!(data.len() == 1 && data[0].payload_len == 64, "{data:?}");
    let rto = p.a.poll_timeout().expect("A's retransmission deadline");
    assert!(rto >= p.now + ms(1000), "{rto} at {}", p.now);
    let sent_at = p.now;
    p.b.handle_frames(p.now, &mut ab);
    p.eb.extend(std::iter::from_fn(|| p.b.poll_event()));
    assert!(p.eb.iter().any(|e| matches!(e, Event::Readable(id) if *id == cb)), "{:?}", p.eb);
    assert!(!p.b.has_work(), "nothing for egress: the ACK is delayed");
    assert_eq!(p.b.poll_timeout(), Some(sent_at + ms(10)), "the ACK delay is B's deadline");
    // Nothing leaves before it.
    p.now += ms(5);
    p.b.handle_timeout(p.now);
    let mut ba = Vec::new();
    p.b.poll_transmit(p.now, &mut ba);
    assert!(ba.is_empty(), "{:?}", segments(&ba));
    p.now = sent_at + ms(10);
    p.b.handle_timeout(p.now);
    p.b.poll_transmit(p.now, &mut ba);
    let acks = segments(&ba);
    assert_eq!(acks.len(), 1, "{acks:?}");
    assert!(acks[0].ack && acks[0].payload_len == 0 && acks[0].ack_number == data[0].seq_end(), "{acks:?}");
    p.a.handle_frames(p.now, &mut ba);
    assert_eq!(p.a.send_queue(ca), 0, "acknowledged");
    assert_eq!(read_all(&mut p.b, cb), [7; 64]);
}

/// A ping-pong's round trip polls smoltcp's egress once per side: the
/// request's and the answer's segment (each carrying the other's ACK).
/// Neither the delivery of a segment whose ACK is delayed nor the send of
/// one segment takes another, empty, poll (the deadline comes from
/// `poll_at`).
#[test]
fn a_ping_pong_round_trip_polls_egress_once_per_side() {
    let mut p = Pair::new();
    let (ca, cb) = p.connected(80);
    p.advance(Duration::from_millis(50));
    let polls = |p: &Pair| p.a.egress_polls + p.b.egress_polls;
    let start = polls(&p);
    const ROUND_TRIPS: usize = 50;
    for i in 0..ROUND_TRIPS {
        p.now += smoltcp::time::Duration::from_micros(3);
        // The request: A writes, its round sends; B receives (its round
        // runs egress too, as the driver's does).
        assert_eq!(p.a.send(ca, &[i as u8; 64]).unwrap(), 64);
        let mut ab = Vec::new();
        p.a.poll_transmit(p.now, &mut ab);
        assert_eq!(ab.len(), 1);
        p.b.handle_frames(p.now, &mut ab);
        p.b.poll_transmit(p.now, &mut ab);
        assert!(ab.is_empty(), "B's ACK waits for its answer");
        // The answer, echoed.
        let got = read_all(&mut p.b, cb);
        assert_eq!(got, [i as u8; 64]);
        assert_eq!(p.b.send(cb, &got).unwrap(), 64);
        let mut ba = Vec::new();
        p.b.poll_transmit(p.now, &mut ba);
        let seg = segments(&ba);
        assert!(seg.len() == 1 && seg[0].payload_len == 64 && seg[0].ack, "{seg:?}");
        p.a.handle_frames(p.now, &mut ba);
        p.a.poll_transmit(p.now, &mut ba);
        assert!(ba.is_empty());
        assert_eq!(read_all(&mut p.a, ca), [i as u8; 64]);
        assert_eq!(p.a.send_queue(ca), 0, "the answer acknowledged the request");
    }
    assert_eq!(polls(&p) - start, 2 * ROUND_TRIPS, "one egress poll per side per round trip");
    // The last answer's ACK still leaves, alone, after the ACK delay.
    p.advance(Duration::from_millis(20));
    assert_eq!(p.b.send_queue(cb), 0);
}

//! Robustness against bad segments: corrupted frames on a checksummed link
//! never stall a connection (a soak over many seeds, in virtual time),
//! single forged or corrupted segments with an acknowledgment ahead of what
//! we sent leave the connection working, and SYN floods leave room for
//! legitimate clients.

mod support;

use std::time::Duration;

use bytes::Bytes;
use conflux_flow::{FlowExt, Shutdown};
use conflux_netstack::{Checksums, Faults, FrameDevice, LinkConfig};
use conflux_tcp::{ConnectOptions, TcpStack};
use conflux_testkit::within;
use support::peer::{ACK, PSH, Peer};
use support::{B4, addr, pair_with};

const SECOND: Duration = Duration::from_secs(1);

/// Echoes 1 MB through a server on B from a client on A over a link with
/// `faults`; `Err` says what did not complete within `limit` of virtual
/// time. Returns the virtual time it took.
async fn echo_1mb(link: LinkConfig, limit: Duration) -> Result<Duration, String> {
    let start = tokio::time::Instant::now();
    const TOTAL: usize = 1 << 20;
    let (a, b, _switch) = pair_with(link, |c| c);
    let port = b
        .listen(0, None, |mut f| async move {
            while let Ok(Some(buf)) = f.read().await {
                if f.write(buf).await.is_err() {
                    return;
                }
            }
            let _ = f.shutdown(Shutdown::Write).await;
        })
        .map_err(|e| format!("listen: {e}"))?
        .port();
    let progress = std::sync::atomic::AtomicUsize::new(0);
    let run = async {
        let c =
            a.create_connection(addr(B4, port), ConnectOptions::new()).await.map_err(|e| format!("connect: {e}"))?;
        let data = conflux_testkit::payload(7, TOTAL);
        let (mut r, mut w) = c.split();
        let writer = async {
            for chunk in data.chunks(8192) {
                w.write(Bytes::copy_from_slice(chunk)).await.map_err(|e| format!("write: {e}"))?;
            }
            w.shutdown().await.map_err(|e| format!("shutdown: {e}"))
        };
        let reader = async {
            let mut got = Vec::with_capacity(TOTAL);
            while let Some(buf) = r.read().await.map_err(|e| format!("read after {} bytes: {e}", got.len()))? {
                got.extend_from_slice(&buf);
                progress.store(got.len(), std::sync::atomic::Ordering::Relaxed);
            }
            Ok::<_, String>(got)
        };
        let ((), got) = tokio::try_join!(writer, reader)?;
        if got != data {
            return Err(format!("echo differs ({} of {TOTAL} bytes)", got.len()));
        }
        Ok(())
    };
    let res = match tokio::time::timeout(limit, run).await {
        Ok(r) => r.map(|()| start.elapsed()),
        Err(_) => Err(format!(
            "stalled: not done within {limit:?} of virtual time ({} of {TOTAL} bytes echoed)",
            progress.load(std::sync::atomic::Ordering::Relaxed)
        )),
    };
    drop((a, b));
    res
}

/// Virtual time a 1 MB echo may take under corruption. smoltcp recovers
/// from a lost segment by fast retransmit or, with too few duplicate ACKs in
/// flight, by its retransmission timeout (backed off when the retransmission
/// is lost too): at 5% loss each way an echo takes from a few seconds to
/// about two virtual minutes. A stall never finishes.
const SOAK_LIMIT: Duration = Duration::from_secs(600);

async fn soak(rate: f64, seeds: u64) {
    let mut failed = Vec::new();
    let mut slowest = (Duration::ZERO, 0);
    for seed in 1..=seeds {
        let faults = Faults { corrupt: rate, seed, ..Faults::NONE };
        match echo_1mb(LinkConfig::ethernet().faults(faults), SOAK_LIMIT).await {
            Ok(took) => slowest = slowest.max((took, seed)),
            Err(e) => {
                eprintln!("corruption {rate}: seed {seed} failed: {e}");
                failed.push((seed, e));
            }
        }
    }
    eprintln!("corruption {rate}: slowest seed {} took {:?} of virtual time", slowest.1, slowest.0);
    assert!(failed.is_empty(), "{} of {seeds} seeds failed at {rate} corruption: {failed:?}", failed.len());
}

#[tokio::test(start_paused = true)]
async fn corruption_soak_1_percent_40_seeds() {
    soak(0.01, 40).await;
}

#[tokio::test(start_paused = true)]
async fn corruption_soak_5_percent_40_seeds() {
    soak(0.05, 40).await;
}

/// After the stack sent `ping` and the peer acknowledged it, one ACK-only
/// segment acknowledging 1000 bytes beyond SND.NXT arrives (its checksum
/// broken when `corrupt`); then the peer sends data with the right ACK. The
/// data must arrive and the stack's reply must go out: on the old driver the
/// bogus ACK was recorded as the highest seen and every later segment was
/// rewritten to it, so smoltcp dropped them all (a silent stall).
async fn ack_beyond_snd_nxt(corrupt: bool) {
    let (mut peer, stack) = Peer::new(4100, 90, Checksums::Compute);
    let (seq, theirs, mut flow) = peer.handshake(&stack).await;
    flow.write("ping").await.unwrap();
    let d = peer.recv_data_within(5 * SECOND).await.expect("ping");
    assert_eq!(d.payload, b"ping");
    let snd_nxt = theirs.wrapping_add(4);
    peer.send(seq, snd_nxt, ACK, b"");

    let mut bogus = peer.segment(seq, snd_nxt.wrapping_add(1000), ACK, b"");
    if corrupt {
        bogus[36] ^= 0xff; // the TCP checksum
    }
    peer.end.send(bogus.into()).unwrap();
    tokio::time::sleep(SECOND).await;

    peer.send(seq, snd_nxt, ACK | PSH, b"hello");
    let got = within("read after the bogus ACK", 5 * SECOND, flow.read()).await.unwrap();
    assert_eq!(got.as_deref(), Some(&b"hello"[..]));
    flow.write("back").await.unwrap();
    let d = peer.recv_data_within(5 * SECOND).await.expect("the reply after the bogus ACK");
    assert_eq!((d.seq, d.payload.as_slice()), (snd_nxt, &b"back"[..]));
}

#[tokio::test(start_paused = true)]
async fn an_ack_beyond_snd_nxt_with_a_bad_checksum_leaves_the_connection_working() {
    ack_beyond_snd_nxt(true).await;
}

#[tokio::test(start_paused = true)]
async fn an_ack_beyond_snd_nxt_with_a_good_checksum_leaves_the_connection_working() {
    ack_beyond_snd_nxt(false).await;
}

/// With the peer's window closed, written bytes wait unsent in the socket.
/// A forged ACK into those unsent bytes (beyond SND.NXT, within the send
/// buffer) must not make the stack drop them: once the window opens the peer
/// receives every byte, in order.
#[tokio::test(start_paused = true)]
async fn an_ack_into_unsent_data_loses_nothing() {
    let (mut peer, stack) = Peer::new(4101, 91, Checksums::Compute);
    let (seq, theirs, mut flow) = peer.handshake(&stack).await;
    peer.window = 0;
    peer.send(seq, theirs, ACK, b"");
    tokio::time::sleep(SECOND).await;
    let data: Vec<u8> = (0..100u8).collect();
    flow.write(data.clone()).await.unwrap();
    tokio::time::sleep(SECOND).await;
    peer.send(seq, theirs.wrapping_add(50), ACK, b"");
    tokio::time::sleep(SECOND).await;
    peer.window = 0xffff;
    peer.send(seq, theirs, ACK, b"");
    let mut got = Vec::new();
    let mut next = theirs;
    while got.len() < data.len() {
        let d = peer
            .recv_data_within(10 * SECOND)
            .await
            .unwrap_or_else(|| panic!("only {} of 100 bytes arrived", got.len()));
        if d.seq == next {
            got.extend_from_slice(&d.payload);
            next = next.wrapping_add(d.payload.len() as u32);
            peer.send(seq, next, ACK, b"");
        }
    }
    assert_eq!(got, data);
}

/// Stack A (listening, echoing one read) behind a [`Merge`] device that
/// takes flood frames, and stack B, the legitimate client, on an Ethernet
/// link. A's half-open cap is the default (64); its gateway never answers.
struct Flood {
    a: conflux_netstack::NetStack,
    b: conflux_netstack::NetStack,
    port: u16,
    inject: tokio::sync::mpsc::UnboundedSender<Vec<u8>>,
    rng: u64,
    sent: u64,
    clients: usize,
}

impl Flood {
    fn new() -> Flood {
        let (ea, eb) = conflux_netstack::link_pair(LinkConfig::ethernet());
        let (merged, inject) = support::inject::Merge::new(ea);
        let a = conflux_netstack::NetStack::new(support::side(true).gateway_v4("10.0.0.254".parse().unwrap()), merged);
        let b = conflux_netstack::NetStack::new(support::side(false), eb);
        let port = a
            .listen(0, None, |mut f| async move {
                if let Ok(Some(buf)) = f.read().await {
                    let _ = f.write(buf).await;
                }
            })
            .unwrap()
            .port();
        Flood { a, b, port, inject, rng: 0x9e37_79b9_7f4a_7c15, sent: 0, clients: 0 }
    }

    fn random(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    /// One SYN to A's listener from a random source, on the subnet (every
    /// other one) or off it, in an Ethernet frame from a random MAC.
    fn syn(&mut self) {
        let r = self.random();
        let src = if self.sent.is_multiple_of(2) {
            std::net::Ipv4Addr::new(10, 0, 0, 3 + (r % 250) as u8)
        } else {
            std::net::Ipv4Addr::new(198, 18, (r >> 8) as u8, (r >> 16) as u8)
        };
        let src = std::net::SocketAddr::from((src, 1024 + (r >> 24) as u16 % 60000));
        let ip = support::peer::build(
            src,
            addr(support::A4, self.port),
            (r >> 32) as u32,
            0,
            support::peer::SYN,
            0xffff,
            b"",
        );
        let mut frame = vec![2, 0, 0, 0, 0, 1, 2, (r >> 40) as u8, (r >> 48) as u8, 9, 9, (r >> 56) as u8, 0x08, 0x00];
        frame.extend_from_slice(&ip);
        let _ = self.inject.send(frame);
        self.sent += 1;
    }

    /// B connects to A and echoes a byte, within one second of virtual time.
    async fn legitimate_client(&mut self) {
        self.clients += 1;
        let mut c = within("a legitimate connect under the flood", SECOND, async {
            self.b.create_connection(addr(support::A4, self.port), ConnectOptions::new()).await
        })
        .await
        .expect("connect");
        c.write("x").await.unwrap();
        let got = within("echo", SECOND, c.read()).await.unwrap();
        assert_eq!(got.as_deref(), Some(&b"x"[..]));
        // At most the cap's 64 half-open sockets, plus one per legitimate
        // connection so far (closing or in TIME_WAIT).
        let bound = 64 + self.clients;
        assert!(self.a.sockets() <= bound, "the half-open cap holds: {} sockets > {bound}", self.a.sockets());
    }
}

#[tokio::test(start_paused = true)]
async fn a_burst_of_10000_syns_leaves_room_for_a_legitimate_client() {
    let mut flood = Flood::new();
    for _ in 0..10_000 {
        flood.syn();
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
    flood.legitimate_client().await;
}

/// SYNs at `per_second` for `secs` seconds, a legitimate client connecting
/// every few seconds meanwhile (after the cap has long been reached and
/// while handshakes expire).
async fn sustained(per_second: u64, secs: u64) {
    let mut flood = Flood::new();
    let interval = Duration::from_micros(1_000_000 / per_second);
    let mut ticks = tokio::time::interval(interval);
    for i in 0..per_second * secs {
        ticks.tick().await;
        flood.syn();
        if i > 0 && i % (per_second * 3) == 0 {
            flood.legitimate_client().await;
        }
    }
    flood.legitimate_client().await;
}

#[tokio::test(start_paused = true)]
async fn a_sustained_100_syns_per_second_leaves_room_for_a_legitimate_client() {
    sustained(100, 15).await;
}

#[tokio::test(start_paused = true)]
async fn a_sustained_1000_syns_per_second_leaves_room_for_a_legitimate_client() {
    sustained(1000, 12).await;
}

/// With a cap of N: N handshakes are admitted; the SYN after them evicts the
/// oldest (whose client's ACK is then refused); that client's retried SYN is
/// admitted again and its handshake completes.
#[tokio::test(start_paused = true)]
async fn the_half_open_cap_admits_n_evicts_the_oldest_and_takes_a_retry() {
    const N: u16 = 4;
    let (a, b) = conflux_netstack::link_pair(LinkConfig::ip().checksums(Checksums::Compute));
    let stack = conflux_netstack::NetStack::new(support::side(true).max_half_open(usize::from(N)), a);
    let mut peer = Peer { end: b, me: addr(B4, 5000), stack_addr: addr(support::A4, 92), window: 0xffff };
    let (_, mut accepted) = support::listen_into(&stack, 92, None).unwrap();
    let mut synack_of = std::collections::HashMap::new();
    for i in 0..=N {
        peer.me = addr(B4, 5000 + i);
        peer.send(100, 0, support::peer::SYN, b"");
        let s = peer.recv().await;
        assert_eq!(s.flags & (support::peer::SYN | ACK), support::peer::SYN | ACK, "SYN {i} answered");
        synack_of.insert(5000 + i, s.seq);
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(stack.sockets(), usize::from((i + 1).min(N)), "after SYN {i}");
    }
    // The oldest (port 5000) was evicted: its ACK finds no socket (RST).
    peer.me = addr(B4, 5000);
    peer.send(101, synack_of[&5000].wrapping_add(1), ACK, b"");
    let r = peer.recv().await;
    assert_eq!(r.flags & support::peer::RST, support::peer::RST, "{r:?}");
    assert_eq!(stack.sockets(), usize::from(N));
    // Its retry gets in (evicting the next oldest) and completes.
    peer.send(100, 0, support::peer::SYN, b"");
    let s = peer.recv().await;
    assert_eq!(s.flags & (support::peer::SYN | ACK), support::peer::SYN | ACK);
    peer.send(101, s.seq.wrapping_add(1), ACK, b"");
    let flow = within("accept after the retry", SECOND, accepted.recv()).await.expect("a flow");
    drop(flow);
    // The newest ones are still there: 5002..=5004 half-open, 5000 open.
    assert_eq!(stack.sockets(), usize::from(N));
}

/// Found by the `netstack_frames` fuzz target: one segment with a valid
/// checksum, in window and overlapping data already received, injected into
/// an established connection (its sequence and acknowledgment numbers one
/// below the client's last segment, 127 bytes of data) desynchronizes the two
/// ends: the server takes bytes the client never sent and acknowledges past
/// what the client sent, so every later segment of either side is refused by
/// the other. TCP cannot repair that, and smoltcp retransmits forever; the
/// user timeout turns the silent stall into a timed-out error.
#[tokio::test(start_paused = true)]
async fn a_desynchronizing_injection_ends_in_a_timeout_not_a_silent_stall() {
    let (ea, eb) = conflux_netstack::link_pair(LinkConfig::ip());
    let last = support::inject::Last::default();
    let (merged, inject) = support::inject::Merge::watching(ea, last.clone());
    let a = conflux_netstack::NetStack::new(support::side(true), merged);
    let b = conflux_netstack::NetStack::new(support::side(false), eb);
    a.listen(80, None, |mut f| async move {
        while let Ok(Some(buf)) = f.read().await {
            if f.write(buf).await.is_err() {
                return;
            }
        }
    })
    .unwrap();
    let server = addr(support::A4, 80);
    let mut c = b.create_connection(server, ConnectOptions::new()).await.unwrap();
    c.write("data").await.unwrap();
    assert_eq!(within("echo", SECOND, c.read()).await.unwrap().as_deref(), Some(&b"data"[..]));
    tokio::time::sleep(Duration::from_millis(50)).await;

    let (seq, ack) = *last.lock().unwrap();
    let client = conflux_tcp::TcpFlow::src(&c);
    let bogus =
        support::peer::build(client, server, seq.wrapping_sub(1), ack.wrapping_sub(1), ACK, 0xffff, &[0xff; 127]);
    inject.send(bogus).unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;

    let started = tokio::time::Instant::now();
    let probe = async {
        c.write("probe").await?;
        let mut got = 0;
        while got < 5 {
            match c.read().await? {
                Some(b) => got += b.len(),
                None => return Ok(None),
            }
        }
        Ok::<_, conflux_flow::FlowError>(Some(got))
    };
    let outcome = tokio::time::timeout(Duration::from_secs(300), probe).await.expect("a silent stall");
    match outcome {
        Ok(Some(_)) => {}
        Ok(None) => {}
        Err(e) => assert!(e.is_timed_out() || e.is_reset(), "{e}"),
    }
    assert!(started.elapsed() <= Duration::from_secs(125), "ended only after {:?}", started.elapsed());
    drop(c);
    // The listener still serves a fresh connection.
    let mut fresh =
        within("a fresh connect", SECOND, b.create_connection(server, ConnectOptions::new())).await.unwrap();
    fresh.write("again").await.unwrap();
    assert_eq!(within("fresh echo", SECOND, fresh.read()).await.unwrap().as_deref(), Some(&b"again"[..]));
}

/// A peer that stops acknowledging (its link goes down for good) while we
/// have data in flight: the flow fails with a timed-out error at the user
/// timeout instead of waiting forever.
#[tokio::test(start_paused = true)]
async fn unacknowledged_data_times_out_at_the_user_timeout() {
    let (a, b, switch) = pair_with(LinkConfig::ethernet(), |c| c.user_timeout(Duration::from_secs(30)));
    a.listen(81, None, |f| async move {
        let _keep = f;
        std::future::pending::<()>().await;
    })
    .unwrap();
    let mut c = b.create_connection(addr(support::A4, 81), ConnectOptions::new()).await.unwrap();
    switch.set_up(false);
    let started = tokio::time::Instant::now();
    c.write("into the void").await.unwrap();
    let err = within("the user timeout", Duration::from_secs(60), c.read()).await.expect_err("a timed-out error");
    assert!(err.is_timed_out(), "{err}");
    let took = started.elapsed();
    assert!(took >= Duration::from_secs(30) && took < Duration::from_secs(32), "timed out after {took:?}");
}

/// Every input the `netstack_frames` fuzzer found (and a run of the harness
/// on its own) replayed: no silent stall, and the listener still serves.
#[test]
fn the_fuzzer_findings_replay_clean() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz-regressions/netstack_frames");
    let mut inputs: Vec<_> =
        std::fs::read_dir(&dir).expect("the regression inputs").map(|e| e.unwrap().path()).collect();
    inputs.sort();
    assert!(!inputs.is_empty());
    for path in inputs {
        let input = std::fs::read(&path).unwrap();
        eprintln!("replaying {}", path.display());
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
        rt.block_on(support::frames::run(&input));
    }
}

//! The stack over in-memory links: connects, listeners, errors, leaks.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use conflux_conformance::{echo, echo_back};
use conflux_flow::FlowExt;
use conflux_netstack::LinkConfig;
use conflux_tcp::{ConnectError, ConnectOptions, TcpFlow, TcpStack};
use conflux_testkit::{TIMEOUT, payload, within};
use support::*;

#[tokio::test(start_paused = true)]
async fn connect_and_echo_over_ethernet_v4_and_v6() {
    let (a, b, _) = pair();
    let port = b.listen(7, None, echo).unwrap().port();
    for dst in [B4, B6] {
        let f = within("connect", TIMEOUT, a.create_connection(addr(dst, port), ConnectOptions::new()))
            .await
            .expect("connect");
        assert_eq!(f.dst(), addr(dst, port));
        let data = payload(1, 300_000);
        let (mut f, got) = echo_back(f, data.clone()).await;
        let got = got.unwrap();
        assert_eq!(got.len(), data.len());
        assert_eq!(got, data);
        f.close().await.unwrap();
    }
    assert_eq!(a.open_flows(), 0);
}

#[tokio::test(start_paused = true)]
async fn concurrent_syns_each_get_a_socket() {
    let (a, b, _) = pair();
    let accepted = Arc::new(AtomicUsize::new(0));
    let n = accepted.clone();
    let port = b
        .listen(0, None, move |mut f| {
            n.fetch_add(1, Ordering::SeqCst);
            async move {
                let _ = f.write("hi").await;
                let _ = f.close().await;
            }
        })
        .unwrap()
        .port();
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let a = a.clone();
        tasks.push(tokio::spawn(async move {
            let mut f = a.create_connection(addr(B4, port), ConnectOptions::new()).await.expect("connect");
            f.read_to_end().await.expect("read")
        }));
    }
    for t in tasks {
        assert_eq!(within("client", TIMEOUT, t).await.unwrap(), b"hi");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 20);
}

#[tokio::test(start_paused = true)]
async fn refused_timeout_and_no_route_are_told_apart() {
    let (a, _b, _) = pair();
    let refused = a.create_connection(addr(B4, 9), ConnectOptions::new()).await;
    assert!(matches!(refused, Err(ConnectError::Refused { .. })), "{refused:?}");
    let timeout =
        a.create_connection(addr("10.0.0.99", 9), ConnectOptions::new().timeout(Duration::from_secs(3))).await;
    assert!(matches!(timeout, Err(ConnectError::Timeout { .. })), "{timeout:?}");
    let no_route = a.create_connection(addr("192.168.7.7", 9), ConnectOptions::new()).await;
    assert!(matches!(no_route, Err(ConnectError::NoRoute { .. })), "{no_route:?}");
}

#[tokio::test(start_paused = true)]
async fn ephemeral_ports_exhaust_and_come_back() {
    let (a, b) = conflux_netstack::link_pair(LinkConfig::ethernet());
    let a = conflux_netstack::NetStack::new(side(true).ephemeral_ports(50000..=50002), a);
    let b = conflux_netstack::NetStack::new(side(false), b);
    b.listen(80, None, |f| async move { drop(f) }).unwrap();
    let mut flows = Vec::new();
    for _ in 0..3 {
        flows.push(a.create_connection(addr(B4, 80), ConnectOptions::new()).await.expect("connect"));
    }
    let err = a.create_connection(addr(B4, 80), ConnectOptions::new()).await;
    assert!(matches!(err, Err(ConnectError::Other { .. })), "{err:?}");
    // The error names the address; its cause (the source chain) says why.
    let err = err.unwrap_err();
    let mut chain = err.to_string();
    let mut cause = std::error::Error::source(&err);
    while let Some(c) = cause {
        chain = format!("{chain}: {c}");
        cause = c.source();
    }
    assert!(chain.contains("10.0.0.2:80") && chain.contains("exhausted"), "{chain}");
    drop(flows);
    // The server closes first, so our sockets pass no TIME_WAIT... either way
    // they are reaped within TIME_WAIT (10 s) plus a bit.
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert_eq!(a.sockets(), 0);
    assert_eq!(a.ports_in_use(), 0);
    a.create_connection(addr(B4, 80), ConnectOptions::new()).await.expect("a port again");
}

#[tokio::test(start_paused = true)]
async fn half_open_cap_drops_extra_syns_silently() {
    let (a, b, _) = pair_with(LinkConfig::ethernet(), |c| c.max_half_open(0));
    b.listen(80, None, |f| async move { drop(f) }).unwrap();
    let res = a.create_connection(addr(B4, 80), ConnectOptions::new().timeout(Duration::from_secs(5))).await;
    assert!(matches!(res, Err(ConnectError::Timeout { .. })), "dropped, not refused: {res:?}");
}

#[tokio::test(start_paused = true)]
async fn local_delivery_reaches_our_own_listeners() {
    for (link, dst) in [(LinkConfig::ip(), A4), (LinkConfig::ip(), A6), (LinkConfig::ethernet(), A4)] {
        let (a, _peer) = conflux_netstack::link_pair(link);
        let a = conflux_netstack::NetStack::new(side(true), a);
        let port = a
            .listen(0, None, |mut f| async move {
                let _ = f.write("self").await;
            })
            .unwrap()
            .port();
        let mut f = within("connect to self", TIMEOUT, a.create_connection(addr(dst, port), ConnectOptions::new()))
            .await
            .unwrap_or_else(|e| panic!("{link:?} {dst}: {e}"));
        assert_eq!(within("read", TIMEOUT, f.read_to_end()).await.unwrap(), b"self");
    }
}

/// Listeners keyed by (address, port): `0.0.0.0` takes our IPv4 address
/// only, a specific address shares its port, a foreign address is refused,
/// and the port goes back to the allocator with the last listener on it.
#[tokio::test(start_paused = true)]
async fn listeners_are_keyed_by_address_and_port() {
    let (a, _peer) = conflux_netstack::link_pair(LinkConfig::ip());
    let a = conflux_netstack::NetStack::new(side(true), a);
    let hello = |mut f: conflux_netstack::NetFlow| async move {
        let _ = f.write(f.src().to_string()).await;
        let _ = f.close().await;
    };
    let foreign = addr("10.9.9.9", 80);
    match a.listen_on(foreign, None, hello) {
        Err(conflux_tcp::ListenError::AddrNotAvailable(x)) => assert_eq!(x, foreign),
        other => panic!("listen_on a foreign address: {other:?}"),
    }
    let any4 = a.listen_on(addr("0.0.0.0", 0), None, hello).expect("listen_on 0.0.0.0");
    let port = any4.port();
    assert_eq!(any4.local_addr(), addr("0.0.0.0", port));
    let greet = |dst: std::net::SocketAddr| {
        let a = a.clone();
        async move {
            let mut f = within("connect", TIMEOUT, a.create_connection(dst, ConnectOptions::new())).await?;
            Ok::<_, ConnectError>(String::from_utf8(within("read", TIMEOUT, f.read_to_end()).await.unwrap()).unwrap())
        }
    };
    assert_eq!(greet(addr(A4, port)).await.expect("0.0.0.0 takes IPv4"), addr(A4, port).to_string());
    assert!(matches!(greet(addr(A6, port)).await, Err(ConnectError::Refused { .. })), "0.0.0.0 took IPv6");
    a.listen_on(addr(A6, port), None, hello).expect("a second address on the same port");
    assert_eq!(greet(addr(A6, port)).await.expect("the IPv6 listener"), addr(A6, port).to_string());
    assert!(a.unlisten_on(addr("0.0.0.0", port)));
    assert!(matches!(greet(addr(A4, port)).await, Err(ConnectError::Refused { .. })));
    assert_eq!(greet(addr(A6, port)).await.expect("the IPv6 listener outlives the other"), addr(A6, port).to_string());
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert_eq!(a.ports_in_use(), 1, "only the IPv6 listener's port is taken (TIME_WAIT is over)");
    assert!(a.unlisten_on(addr(A6, port)));
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert_eq!((a.sockets(), a.ports_in_use()), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn transparent_listening_reports_the_original_destination() {
    let (ea, eb) = conflux_netstack::link_pair(LinkConfig::ethernet());
    // A routes everything through B; B accepts whatever A dials.
    let a =
        conflux_netstack::NetStack::new(side(true).gateway_v4(B4.parse().unwrap()).gateway_v6(B6.parse().unwrap()), ea);
    let b = conflux_netstack::NetStack::new(side(false), eb);
    let listening = b
        .listen_transparent(None, |mut f| async move {
            let line = format!("{} {}", f.src(), f.dst());
            let _ = f.read_to_end().await;
            let _ = f.write(line).await;
            let _ = f.close().await;
        })
        .unwrap();
    for dialled in ["203.0.113.7:443", "[2001:db8::7]:8080", "198.51.100.1:80"] {
        let dialled: std::net::SocketAddr = dialled.parse().unwrap();
        let mut f = within("connect", TIMEOUT, a.create_connection(dialled, ConnectOptions::new()))
            .await
            .expect("connect through the transparent listener");
        assert_eq!(f.dst(), dialled);
        within("write", TIMEOUT, f.write(payload(5, 100_000))).await.unwrap();
        within("shutdown", TIMEOUT, f.shutdown(conflux_flow::Shutdown::Write)).await.unwrap();
        let reply = within("reply", TIMEOUT, f.read_to_end()).await.unwrap();
        assert_eq!(String::from_utf8(reply).unwrap(), format!("{dialled} {}", f.src()));
    }
    // Our own addresses still go to per-port listeners only.
    let refused = a.create_connection(addr(B4, 9), ConnectOptions::new()).await;
    assert!(matches!(refused, Err(ConnectError::Refused { .. })), "{refused:?}");
    assert!(b.unlisten(listening.port()));
    // Without it, segments to addresses that are not ours are ignored.
    let after = a
        .create_connection("203.0.113.7:443".parse().unwrap(), ConnectOptions::new().timeout(Duration::from_secs(3)))
        .await;
    assert!(matches!(after, Err(ConnectError::Timeout { .. })), "after unlisten: {after:?}");
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert_eq!((a.sockets(), b.sockets(), b.ports_in_use()), (0, 0, 0));
}

/// Whether a pcap file holds a TCP SYN (Ethernet or raw IP link type).
fn pcap_has_syn(file: &[u8]) -> bool {
    let linktype = u32::from_le_bytes(file[20..24].try_into().unwrap());
    let mut at = 24;
    while at + 16 <= file.len() {
        let len = u32::from_le_bytes(file[at + 8..at + 12].try_into().unwrap()) as usize;
        let frame = &file[(at + 16).min(file.len())..(at + 16 + len).min(file.len())];
        at += 16 + len;
        let ip = match linktype {
            1 if frame.len() > 14 && frame[12..14] == [0x08, 0x00] => &frame[14..],
            101 => frame,
            _ => continue,
        };
        if ip.len() >= 40 && ip[0] >> 4 == 4 && ip[9] == 6 {
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            if ip.get(ihl + 13).is_some_and(|f| f & 0x02 != 0) {
                return true;
            }
        }
    }
    false
}

#[tokio::test]
async fn pcap_captures_the_handshake_of_an_in_memory_link() {
    for link in [LinkConfig::ethernet(), LinkConfig::ip()] {
        let tmp = conflux_testkit::TempDir::new("pcap");
        let path = tmp.path().join(format!("{:?}.pcap", link.medium));
        let (ea, eb) = conflux_netstack::link_pair(link);
        let a = conflux_netstack::NetStack::new(side(true), conflux_netstack::Pcap::new(ea, &path).unwrap());
        let b = conflux_netstack::NetStack::new(side(false), eb);
        let port = b.listen(0, None, |f| async move { drop(f) }).unwrap().port();
        let f = within("connect", TIMEOUT, a.create_connection(addr(B4, port), ConnectOptions::new())).await.unwrap();
        drop(f);
        let capture = std::fs::read(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        assert!(pcap_has_syn(&capture), "no SYN in the {:?} capture ({} bytes)", link.medium, capture.len());
    }
}

/// The first connect to a new neighbour on Ethernet goes out as soon as ARP
/// (or NDP) answers, not at smoltcp's 1 s neighbour retry: the answer lands
/// in one socket set and must wake the set of the waiting socket. (Virtual
/// time: the retry would show as exactly 1 s.)
#[tokio::test(start_paused = true)]
async fn the_first_connect_does_not_wait_for_the_neighbour_retry() {
    for dst in [B4, B6] {
        let (a, b, _) = pair();
        let port = b.listen(0, None, |f| async move { drop(f) }).unwrap().port();
        let started = tokio::time::Instant::now();
        let f = within("connect", TIMEOUT, a.create_connection(addr(dst, port), ConnectOptions::new())).await.unwrap();
        let took = started.elapsed();
        assert!(took < Duration::from_millis(100), "the first connect to {dst} took {took:?}");
        drop(f);
    }
}

/// A device that records being dropped.
struct DropFlag(conflux_netstack::LinkEnd, Arc<std::sync::atomic::AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.1.store(true, Ordering::SeqCst);
    }
}

impl conflux_netstack::FrameDevice for DropFlag {
    fn caps(&self) -> conflux_netstack::DeviceCaps {
        self.0.caps()
    }
    fn poll_recv(
        &mut self,
        cx: &mut std::task::Context<'_>,
        frames: &mut Vec<conflux_netstack::FrameBuf>,
        max: usize,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.0.poll_recv(cx, frames, max)
    }
    fn poll_send_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        self.0.poll_send_ready(cx)
    }
    fn send(&mut self, frame: conflux_netstack::FrameBuf) -> std::io::Result<()> {
        self.0.send(frame)
    }
}

/// A connection from `a` to `to`, its accepted side taken from `accepted`,
/// then 61 s of silence (virtual time): past smoltcp's 60 s neighbour
/// lifetime and the 60 s orphan timeout.
async fn silent_minute(
    a: &conflux_netstack::NetStack,
    accepted: &mut tokio::sync::mpsc::UnboundedReceiver<conflux_netstack::NetFlow>,
    to: std::net::SocketAddr,
) -> (conflux_netstack::NetFlow, conflux_netstack::NetFlow) {
    let c = within("connect", TIMEOUT, a.create_connection(to, ConnectOptions::new())).await.expect("connect");
    let s = within("accept", TIMEOUT, accepted.recv()).await.expect("accepted");
    tokio::time::sleep(Duration::from_secs(61)).await;
    (c, s)
}

/// An abort after more than a minute of silence over Ethernet: smoltcp's
/// neighbour entry expired (60 s), its RST waits for the new ARP/NDP
/// answer instead of being dropped with the released socket. The peer
/// hears the reset over IPv4 and IPv6, and both stacks let everything go.
#[tokio::test(start_paused = true)]
async fn an_abort_after_a_minute_of_silence_resets_the_peer() {
    let (a, b, _) = pair();
    let (port, mut accepted) = listen_into(&b, 0, None).unwrap();
    for dst in [B4, B6] {
        let (mut c, mut s) = silent_minute(&a, &mut accepted, addr(dst, port)).await;
        within("abort", TIMEOUT, c.abort()).await.unwrap();
        let err = within("the reset", TIMEOUT, s.read()).await.expect_err("a reset, not data or Eof");
        assert!(err.is_reset(), "{dst}: {err}");
        drop(s);
    }
    b.unlisten(port);
    within("sockets released", TIMEOUT, async {
        while a.sockets() + b.sockets() + a.ports_in_use() + b.ports_in_use() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert_eq!((a.open_flows(), b.open_flows()), (0, 0));
}

/// A close after more than the 60 s orphan timeout of silence: the peer
/// reads the end of the stream, not a reset (the timeout counts from the
/// close, not from the last segment heard), over IPv4 and IPv6 Ethernet.
#[tokio::test(start_paused = true)]
async fn a_close_after_a_minute_of_silence_ends_the_stream() {
    let (a, b, _) = pair();
    let (port, mut accepted) = listen_into(&b, 0, None).unwrap();
    for dst in [B4, B6] {
        let (mut c, mut s) = silent_minute(&a, &mut accepted, addr(dst, port)).await;
        within("close", TIMEOUT, c.close()).await.unwrap();
        assert_eq!(within("the FIN", TIMEOUT, s.read()).await.map_err(|e| e.to_string()), Ok(None), "{dst}");
        within("close", TIMEOUT, s.close()).await.unwrap();
    }
    b.unlisten(port);
    // TIME_WAIT (10 s) included.
    within("sockets released", Duration::from_secs(20), async {
        while a.sockets() + b.sockets() + a.ports_in_use() + b.ports_in_use() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

/// An abort whose neighbour never answers: the RST waits at most 3 s, is
/// then given up on and counted, and the socket and port are released.
#[tokio::test(start_paused = true)]
async fn an_abort_with_no_neighbour_answer_is_given_up_on_and_counted() {
    let (a, b, switch) = pair();
    let (port, mut accepted) = listen_into(&b, 0, None).unwrap();
    let mut c =
        within("connect", TIMEOUT, a.create_connection(addr(B4, port), ConnectOptions::new())).await.expect("connect");
    let s = within("accept", TIMEOUT, accepted.recv()).await.expect("accepted");
    b.unlisten(port);
    tokio::time::sleep(Duration::from_secs(61)).await;
    switch.set_up(false);
    within("abort", TIMEOUT, c.abort()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!((a.sockets(), a.ports_in_use(), a.tcp_resets_abandoned()), (1, 1, 0), "waiting for the neighbour");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!((a.sockets(), a.ports_in_use(), a.tcp_resets_abandoned()), (0, 0, 1), "given up");
    switch.set_up(true);
    drop(s);
    within("B released", TIMEOUT, async {
        while b.sockets() + b.ports_in_use() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

/// Once the last handle is gone the driver stops and drops the device at
/// once (a TAP must be free for the next opener), not at its next frame or
/// timer; a weak handle sees the stack gone, and its `stopped` resolves
/// once the device was dropped.
#[tokio::test]
async fn dropping_the_last_handle_releases_the_device_at_once() {
    let (ea, _eb) = conflux_netstack::link_pair(LinkConfig::ethernet());
    let dropped = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stack = conflux_netstack::NetStack::new(side(true), DropFlag(ea, dropped.clone()));
    let weak = stack.downgrade();
    // Let the driver start and go idle.
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(weak.upgrade().map(|s| s.addrs()), Some(stack.addrs()));
    assert!(!dropped.load(Ordering::SeqCst));
    assert!(
        tokio::time::timeout(Duration::from_millis(50), weak.stopped()).await.is_err(),
        "`stopped` waits while the stack lives"
    );
    drop(stack);
    assert!(weak.upgrade().is_none());
    within("the driver to stop", Duration::from_millis(500), weak.stopped()).await;
    assert!(dropped.load(Ordering::SeqCst), "`stopped` resolves only once the device was dropped");
    // And at once when asked again.
    within("stopped, again", Duration::from_millis(10), weak.stopped()).await;
}

/// `poll_read_into` (straight from the socket's ring into the caller's
/// buffer) and `read` (owned chunks) see one stream, in any mix: a stream
/// longer than the buffers (the ring wraps, so reads span both of its
/// parts), read in buffers of odd sizes and chunks in turn, arrives whole;
/// Eof is sticky on both.
#[tokio::test(start_paused = true)]
async fn read_into_and_chunked_reads_see_one_stream() {
    use conflux_flow::Flow;
    use tokio::io::ReadBuf;

    let (a, b, _) = pair();
    let data = payload(7, 700_000);
    let sent = data.clone();
    let port = b
        .listen(9, None, move |mut f| {
            let sent = sent.clone();
            async move {
                f.write(sent).await.unwrap();
                let _ = f.close().await;
            }
        })
        .unwrap()
        .port();
    let mut f =
        within("connect", TIMEOUT, a.create_connection(addr(B4, port), ConnectOptions::new())).await.expect("connect");
    let mut got = Vec::new();
    let mut storage = vec![0u8; 70_001];
    let sizes = [1, 1_000, 70_001, 4_095];
    let mut turn = 0usize;
    within("read", TIMEOUT, async {
        loop {
            turn += 1;
            if turn.is_multiple_of(3) {
                match f.read().await.unwrap() {
                    Some(chunk) => got.extend_from_slice(&chunk),
                    None => break,
                }
                continue;
            }
            let size = sizes[turn % sizes.len()];
            let mut buf = ReadBuf::new(&mut storage[..size]);
            let mut rest = bytes::Bytes::new();
            std::future::poll_fn(|cx| f.poll_read_into(cx, &mut buf, &mut rest)).await.unwrap();
            assert!(rest.is_empty(), "nothing is left over");
            if buf.filled().is_empty() {
                break;
            }
            got.extend_from_slice(buf.filled());
        }
    })
    .await;
    assert_eq!(got.len(), data.len());
    assert!(got == data[..], "the bytes arrive in order");
    let mut buf = ReadBuf::new(&mut storage[..10]);
    std::future::poll_fn(|cx| f.poll_read_into(cx, &mut buf, &mut bytes::Bytes::new())).await.unwrap();
    assert!(buf.filled().is_empty(), "Eof is sticky");
    assert_eq!(f.read().await.unwrap(), None);
    f.close().await.unwrap();
}

/// A read builds its chunk in the previous chunk's allocation once that
/// chunk was dropped: chunks the reader keeps are never written again.
#[tokio::test(start_paused = true)]
async fn kept_chunks_are_never_written_again() {
    let (a, b, _) = pair();
    let port = b
        .listen(0, None, |mut f| async move {
            for i in 0..8u8 {
                let _ = f.write(vec![i; 1000]).await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let _ = f.close().await;
        })
        .unwrap()
        .port();
    let mut f =
        within("connect", TIMEOUT, a.create_connection(addr(B4, port), ConnectOptions::new())).await.expect("connect");
    let (mut kept, mut all) = (Vec::new(), Vec::new());
    while let Some(chunk) = within("read", TIMEOUT, f.read()).await.expect("read") {
        all.extend_from_slice(&chunk);
        // Every other chunk kept (with a copy), the others dropped at once.
        if all.len() / 1000 % 2 == 0 {
            kept.push((chunk.to_vec(), chunk));
        }
    }
    let want: Vec<u8> = (0..8u8).flat_map(|i| [i; 1000]).collect();
    assert_eq!(all, want);
    assert!(kept.len() >= 3, "{} chunks kept", kept.len());
    for (copy, chunk) in &kept {
        assert_eq!(&copy[..], &chunk[..], "a kept chunk changed");
    }
}

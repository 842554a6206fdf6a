//! Raw and framed flows over real sockets: vector 5 on the wire, the Go and
//! OCaml peer models in both roles, faults, the sock_stress-style fault model,
//! and AF_VSOCK smoke tests that need no peer.

#[macro_use]
mod common;
mod peers;

use std::time::Duration;

use bytes::Bytes;
use conflux_flow::{Flow, FlowExt, Shutdown};
use conflux_hvsock::testing::{FaultFamily, Faults, MemAddr, MemFamily};
use conflux_hvsock::{
    FramingConfig, HybridAddr, HybridFamily, HyperkitAddr, HyperkitFamily, Listener, RawFlow, RetryPolicy, Socket,
    UnixAddr, UnixFamily, connect, connect_retry,
};
use conflux_testkit::{TIMEOUT, payload, within};
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use common::{hybrid_pair, mem_pair, pair_via, unix_pair};
use conflux_testkit::TempDir;
use peers::{C_TO_S, CLOSE, S_TO_C, go_peer, ocaml_peer};

fn cfg() -> FramingConfig {
    FramingConfig::new().close_timeout(Duration::from_secs(5))
}

/// Sends everything, then half-closes; reads everything back; both sides' bytes compared.
async fn exchange<F: Flow>(mut a: F, mut b: F, size: usize) {
    let data = payload(7, size);
    let expect = data.clone();
    let writer = async move {
        a.write(data).await.unwrap();
        a.shutdown(Shutdown::Write).await.unwrap();
        let back = a.read_to_end().await.unwrap();
        a.close().await.unwrap();
        back
    };
    let echo = async move {
        let got = b.read_to_end().await.unwrap();
        b.write(got.clone()).await.unwrap();
        b.close().await.unwrap();
        got
    };
    let (back, got) = within("exchange", TIMEOUT, async { tokio::join!(writer, echo) }).await;
    assert_eq!(got, expect);
    assert_eq!(back, expect);
}

/// Frames already read come out of one framed read as one chunk, so the
/// reader's next write (a relay's, an echo's) is one syscall, not one per
/// 4 KiB frame.
#[tokio::test]
async fn one_framed_read_gives_every_frame_already_read() {
    let dir = TempDir::new("coalesce");
    let (a, b) = unix_pair(&dir).await;
    let (mut a, mut b) = (a.into_framed(cfg()), b.into_framed(cfg()));
    let data = payload(11, 12 * 4096);
    within("write", TIMEOUT, a.write(data.clone())).await.unwrap();
    within("shutdown", TIMEOUT, a.shutdown(Shutdown::Write)).await.unwrap();
    let first = within("read", TIMEOUT, b.read()).await.unwrap().expect("data");
    assert_eq!(first.len(), data.len(), "12 frames in the socket, one read");
    assert_eq!(first, data);
    assert_eq!(within("eof", TIMEOUT, b.read()).await.unwrap(), None);
    let (ra, rb) = within("close", TIMEOUT, async { tokio::join!(a.close(), b.close()) }).await;
    ra.unwrap();
    rb.unwrap();
}

#[tokio::test]
async fn raw_and_framed_over_every_family() {
    let dir = TempDir::new("fam");
    let (a, b) = unix_pair(&dir).await;
    exchange(a, b, 300_000).await;
    let (a, b) = unix_pair(&TempDir::new("fam2")).await;
    exchange(a.into_framed(cfg()), b.into_framed(cfg()), 300_000).await;

    let (a, b) = mem_pair().await;
    exchange(a, b, 300_000).await;
    let (a, b) = mem_pair().await;
    exchange(a.into_framed(cfg()), b.into_framed(cfg()), 300_000).await;

    let (a, b, _vmm) = hybrid_pair(&dir).await;
    exchange(a, b, 300_000).await;
    let dir2 = TempDir::new("fam3");
    let (a, b, _vmm2) = hybrid_pair(&dir2).await;
    exchange(a.into_framed(cfg()), b.into_framed(cfg()), 300_000).await;

    // Hyperkit-style: the host dials <dir>/connect (played here by a listener on that path).
    let hk = TempDir::new("hk");
    let connect_sock = tokio::net::UnixListener::bind(hk.path().join("connect")).unwrap();
    let addr = HyperkitAddr::new(hk.path(), 0x50);
    let (client, accepted) =
        tokio::join!(conflux_hvsock::Family::connect(&HyperkitFamily, &addr, None), connect_sock.accept());
    let (mut vmm_side, _) = accepted.unwrap();
    let mut line = [0u8; 18];
    vmm_side.read_exact(&mut line).await.unwrap();
    assert_eq!(&line, b"00000003.00000050\n");
    let (a, b) = (RawFlow::new(client.unwrap()), conflux_flow::FromTokio::new(vmm_side));
    let mut a = a;
    let mut b = b;
    a.write("x").await.unwrap();
    assert_eq!(b.read().await.unwrap().unwrap(), "x");
    // And its listener path for guest-initiated connections.
    let listener = Listener::bind(&HyperkitFamily, &addr).unwrap();
    assert!(hk.path().join("00000002.00000050").exists());
    drop(listener);
}

#[tokio::test]
async fn vector_5_on_the_wire_both_roles() {
    // We are C; the peer (a raw socket) is S following the vector byte for byte.
    let dir = TempDir::new("v5");
    let path = dir.path().join("s");
    let l = tokio::net::UnixListener::bind(&path).unwrap();
    let ours = connect(&UnixFamily, &UnixAddr::new(&path), None);
    let (ours, peer) = tokio::join!(ours, l.accept());
    let mut c = ours.unwrap().into_framed(cfg());
    let (mut s, _) = peer.unwrap();
    c.write("hello").await.unwrap();
    c.shutdown(Shutdown::Write).await.unwrap();
    let mut got = [0u8; 13];
    s.read_exact(&mut got).await.unwrap();
    assert_eq!(got, C_TO_S);
    s.write_all(&S_TO_C).await.unwrap();
    assert_eq!(c.read().await.unwrap().unwrap(), "world");
    assert_eq!(c.read().await.unwrap(), None);
    let mut ack = [0u8; 4];
    s.read_exact(&mut ack).await.unwrap();
    assert_eq!(ack, CLOSE);
    drop(s); // S closes after the ack
    within("C's close", Duration::from_secs(4), c.close()).await.unwrap();
    assert!(c.is_socket_closed() && !c.close_timed_out());

    // We are S; the peer is C.
    let path = dir.path().join("s2");
    let l = tokio::net::UnixListener::bind(&path).unwrap();
    let (client, accepted) = tokio::join!(UnixStream::connect(&path), l.accept());
    let mut c = client.unwrap();
    let mut s = conflux_hvsock::RawFlow::new(conflux_hvsock::UnixSocket::from_tokio(accepted.unwrap().0).unwrap())
        .into_framed(cfg());
    c.write_all(&C_TO_S).await.unwrap();
    assert_eq!(s.read_to_end().await.unwrap(), b"hello");
    s.write("world").await.unwrap();
    let closing = tokio::spawn(async move {
        s.close().await.unwrap();
        s
    });
    let mut got = [0u8; 13];
    c.read_exact(&mut got).await.unwrap();
    assert_eq!(got, S_TO_C);
    c.write_all(&CLOSE).await.unwrap();
    let s = within("S's close", Duration::from_secs(4), closing).await.unwrap();
    assert!(!s.close_timed_out());
    let mut rest = Vec::new();
    c.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty(), "C's read returns Eof");
}

#[tokio::test]
async fn go_and_ocaml_peers_complete_vector_5_in_both_roles() {
    for (peer, name) in [(0, "go"), (1, "ocaml")] {
        for we_are_c in [true, false] {
            let dir = TempDir::new(name);
            let path = dir.path().join("s");
            let l = tokio::net::UnixListener::bind(&path).unwrap();
            let (ours, theirs) = tokio::join!(connect(&UnixFamily, &UnixAddr::new(&path), None), l.accept());
            let mut ours = ours.unwrap().into_framed(cfg());
            let sock = theirs.unwrap().0;
            let peer_task = tokio::spawn(async move {
                if peer == 0 { go_peer(sock, !we_are_c).await } else { ocaml_peer(sock, !we_are_c).await }
            });
            let started = std::time::Instant::now();
            within(&format!("{name} peer, we are C: {we_are_c}"), TIMEOUT, async {
                if we_are_c {
                    ours.write("hello").await.unwrap();
                    ours.shutdown(Shutdown::Write).await.unwrap();
                    assert_eq!(ours.read_to_end().await.unwrap(), b"world");
                    ours.close().await.unwrap();
                    assert_eq!(peer_task.await.unwrap(), b"hello");
                } else {
                    assert_eq!(ours.read_to_end().await.unwrap(), b"hello");
                    ours.write("world").await.unwrap();
                    ours.close().await.unwrap();
                    assert_eq!(peer_task.await.unwrap(), b"world");
                }
            })
            .await;
            assert!(!ours.close_timed_out(), "{name}: the peer acknowledged (we are C: {we_are_c})");
            assert!(started.elapsed() < Duration::from_secs(4), "{name}: no wait for the 5 s close timeout");
        }
    }
}

#[tokio::test]
async fn chunked_transport_still_frames_correctly() {
    let dir = TempDir::new("chunk");
    let family = FaultFamily::new(UnixFamily, Faults::new().chunk(3).seed(1));
    let (a, b) = pair_via(&family, &UnixAddr::new(dir.path().join("s"))).await;
    exchange(a.into_framed(cfg()), b.into_framed(cfg()), 20_000).await;
    let (a, b) = pair_via(&FaultFamily::new(MemFamily::new(), Faults::new().chunk(5)), &MemAddr::from("c")).await;
    exchange(a, b, 20_000).await;
}

#[tokio::test]
async fn eof_mid_header_and_mid_payload_are_reported_truncations() {
    for (cut, what) in [(2u64, "header"), (6, "payload")] {
        let family = FaultFamily::new(MemFamily::new(), Faults::new().eof_after(cut));
        let (a, b) = pair_via(&family, &MemAddr::from("t")).await;
        let (mut a, mut b) = (a.into_framed(cfg()), b.into_framed(cfg()));
        a.write("hello").await.unwrap();
        let e = within("truncated read", TIMEOUT, b.read_to_end()).await.unwrap_err();
        assert!(e.is_protocol(), "{what}: {e}");
        assert!(e.to_string().contains("truncated"), "{what}: {e}");
        assert!(b.read().await.is_err(), "latched");

        // Upstream's view: the same reads as Eof.
        let (a2, b2) = pair_via(&family, &MemAddr::from("t2")).await;
        let (mut a2, mut b2) = (a2.into_framed(cfg()), b2.into_framed(cfg().errors_as_eof(true)));
        a2.write("hello").await.unwrap();
        let got = within("eof view", TIMEOUT, b2.read_to_end()).await.unwrap();
        assert!(got.len() < 5);
        drop(a);
    }
}

#[tokio::test]
async fn injected_reset_is_a_reset_not_eof() {
    let family = FaultFamily::new(MemFamily::new(), Faults::new().reset_after(3));
    let (a, b) = pair_via(&family, &MemAddr::from("r")).await;
    let (mut a, mut b) = (a.into_framed(cfg()), b.into_framed(cfg()));
    a.write("hello").await.unwrap();
    let e = within("reset", TIMEOUT, b.read_to_end()).await.unwrap_err();
    assert!(e.is_reset(), "{e}");

    let (mut a, mut b) = pair_via(&family, &MemAddr::from("r2")).await;
    a.write("hello").await.unwrap();
    let e = within("raw reset", TIMEOUT, b.read_to_end()).await.unwrap_err();
    assert!(e.is_reset(), "{e}");
}

/// The framing has no reset marker: a framed peer that drops or aborts its
/// flow (no ShutdownWrite, no Close) reads as a reset on our side, after the
/// data it did send; after a ShutdownWrite the same loss is a clean Eof.
#[tokio::test]
async fn a_peer_gone_without_a_marker_is_a_reset() {
    for abort in [false, true] {
        let (a, b) = mem_pair().await;
        let (mut a, mut b) = (a.into_framed(cfg()), b.into_framed(cfg()));
        a.write("partial").await.unwrap();
        if abort {
            a.abort().await.unwrap();
        } else {
            drop(a);
        }
        if !abort {
            // (An abort of the in-memory socket drops what is in flight, as an RST does.)
            assert_eq!(within("data before the loss", TIMEOUT, b.read()).await.unwrap().unwrap(), "partial");
        }
        let e = within("the loss", TIMEOUT, b.read_to_end()).await.unwrap_err();
        assert!(e.is_reset(), "abort {abort}: {e}");
    }
    let (a, b) = mem_pair().await;
    let (mut a, mut b) = (a.into_framed(cfg()), b.into_framed(cfg()));
    a.write("whole").await.unwrap();
    a.shutdown(Shutdown::Write).await.unwrap();
    drop(a);
    assert_eq!(within("after ShutdownWrite", TIMEOUT, b.read_to_end()).await.unwrap(), b"whole");
}

#[tokio::test]
async fn bad_lengths_from_the_peer_are_protocol_errors() {
    let dir = TempDir::new("bad");
    let path = dir.path().join("s");
    let l = tokio::net::UnixListener::bind(&path).unwrap();
    let (ours, theirs) = tokio::join!(connect(&UnixFamily, &UnixAddr::new(&path), None), l.accept());
    let mut ours = ours.unwrap().into_framed(cfg());
    let mut sock = theirs.unwrap().0;
    sock.write_all(&[0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]).await.unwrap();
    let e = within("bad length", TIMEOUT, ours.read()).await.unwrap_err();
    assert!(e.is_protocol() && e.to_string().contains("0xffffffff"), "{e}");
}

/// One sock_stress-style run: `conns` parallel connections, random sizes sent
/// in 4 KiB writes, shutdown(Write), echoed back, compared by SHA-256.
/// Returns (bytes sent, bytes echoed back intact, connections fully intact).
async fn sock_stress(framed: bool, family: FaultFamily<UnixFamily>, dir: &TempDir) -> (u64, u64, usize) {
    let addr = UnixAddr::new(dir.path().join(if framed { "framed" } else { "raw" }));
    let listener = Listener::bind(&family, &addr).unwrap();
    let conns = 6;
    let server = tokio::spawn(async move {
        let mut incoming = listener.incoming();
        let mut tasks = Vec::new();
        for _ in 0..conns {
            let flow = incoming.next().await.unwrap().unwrap();
            tasks.push(tokio::spawn(async move {
                if framed { echo(flow.into_framed(cfg())).await } else { echo(flow).await }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
    let mut clients = Vec::new();
    for i in 0..conns {
        let family = family.clone();
        let addr = addr.clone();
        clients.push(tokio::spawn(async move {
            let flow = connect(&family, &addr, None).await.unwrap();
            let size = 200_000 + (payload(i as u64, 4)[0] as usize) * 3_000;
            let data = payload(100 + i as u64, size);
            let sent_sha = Sha256::digest(&data);
            let received = if framed { client(flow.into_framed(cfg()), data).await } else { client(flow, data).await };
            let intact = Sha256::digest(&received) == sent_sha;
            (size as u64, received.len() as u64, intact)
        }));
    }
    let (mut sent, mut back, mut intact) = (0, 0, 0);
    for c in clients {
        let (s, b, ok) = within("sock_stress client", Duration::from_secs(30), c).await.unwrap();
        sent += s;
        back += b;
        intact += usize::from(ok);
    }
    within("sock_stress server", Duration::from_secs(30), server).await.unwrap();
    (sent, back, intact)
}

async fn echo<F: Flow>(mut flow: F) {
    while let Ok(Some(chunk)) = flow.read().await {
        if flow.write(chunk).await.is_err() {
            break;
        }
    }
    let _ = flow.close().await;
}

async fn client<F: Flow>(flow: F, data: Bytes) -> Vec<u8> {
    let (mut r, mut w) = flow.split();
    let writer = tokio::spawn(async move {
        let mut rest = data;
        while !rest.is_empty() {
            let chunk = rest.split_to(rest.len().min(4096));
            if w.write(chunk).await.is_err() {
                break;
            }
        }
        let _ = w.shutdown().await;
        w
    });
    let mut got = Vec::new();
    while let Ok(Some(chunk)) = r.read().await {
        got.extend_from_slice(&chunk);
    }
    let w = writer.await.unwrap();
    if let Ok(mut flow) = r.reunite(w) {
        let _ = flow.close().await;
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_model_unframed_loses_data_framed_delivers_everything() {
    let dir = TempDir::new("stress");
    let faults = Faults::new().discard_unread(true);

    let raw_family = FaultFamily::new(UnixFamily, faults);
    let (sent, back, intact) = sock_stress(false, raw_family.clone(), &dir).await;
    assert!(raw_family.discarded() > 0, "the injector discarded nothing");
    assert!(back < sent, "the unframed flow should visibly lose data: sent {sent}, got back {back}");
    assert!(intact < 6);

    let framed_family = FaultFamily::new(UnixFamily, faults);
    let (sent, back, intact) = sock_stress(true, framed_family.clone(), &dir).await;
    assert_eq!(framed_family.discarded(), 0, "the framing never leaves unread bytes behind a shutdown or close");
    assert_eq!((back, intact), (sent, 6), "every byte echoed intact");
}

#[tokio::test(start_paused = true)]
async fn close_timeout_on_the_in_memory_family_is_virtual_time() {
    let (a, b) = MemFamily::new().pair();
    let mut ours = RawFlow::new(a).into_framed(FramingConfig::new().close_timeout(Duration::from_secs(30)));
    let started = tokio::time::Instant::now();
    ours.close().await.unwrap(); // the peer never reads, never acknowledges
    assert_eq!(started.elapsed(), Duration::from_secs(30));
    assert!(ours.close_timed_out() && ours.is_socket_closed());
    drop(b);
}

/// A peer that broke the framing will never acknowledge a Close: the close
/// returns at once instead of waiting out its timeout.
#[tokio::test(start_paused = true)]
async fn close_after_a_protocol_error_returns_at_once() {
    let (a, b) = MemFamily::new().pair();
    let mut ours = RawFlow::new(a).into_framed(FramingConfig::new().close_timeout(Duration::from_secs(30)));
    let mut theirs = RawFlow::new(b);
    theirs.write(Bytes::from_static(&[0xff, 0xff, 0xff, 0xff])).await.unwrap();
    let e = ours.read().await.unwrap_err();
    assert!(e.is_protocol(), "{e}");
    let started = tokio::time::Instant::now();
    ours.close().await.unwrap();
    assert_eq!(started.elapsed(), Duration::ZERO, "no wait for a broken peer");
    assert!(!ours.close_timed_out() && ours.is_socket_closed());
    drop(theirs);
}

#[tokio::test]
async fn close_wakes_a_read_pending_on_the_other_half() {
    let (a, b) = mem_pair().await;
    let ours = a.into_framed(FramingConfig::new().close_timeout(Duration::from_millis(200)));
    let (mut r, mut w) = ours.into_split();
    let reader = tokio::spawn(async move { r.read().await });
    tokio::task::yield_now().await;
    within("close", TIMEOUT, w.close()).await.unwrap();
    let got = within("the pending read", TIMEOUT, reader).await.unwrap();
    assert!(matches!(got, Ok(None)), "{got:?}");
    drop(b);
}

#[tokio::test]
async fn api_addresses_incoming_and_retry() {
    let dir = TempDir::new("api");
    let addr = UnixAddr::new(dir.path().join("l"));
    let listener = Listener::bind(&UnixFamily, &addr).unwrap();
    assert_eq!(listener.local_addr().unwrap(), addr);
    let c = connect_retry(&UnixFamily, &addr, RetryPolicy::default()).await.unwrap();
    let (s, _) = listener.accept().await.unwrap();
    assert_eq!(c.peer_addr().unwrap(), addr);
    assert_eq!(s.local_addr().unwrap(), addr);
    use std::os::fd::AsFd;
    let _ = c.as_fd();

    // Nobody listening yet: retries until the listener appears.
    let late = UnixAddr::new(dir.path().join("late"));
    let late2 = late.clone();
    let policy = RetryPolicy { attempts: 50, initial_delay: Duration::from_millis(20), ..RetryPolicy::default() };
    let dialer = tokio::spawn(async move { connect_retry(&UnixFamily, &late2, policy).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let l2 = Listener::bind(&UnixFamily, &late).unwrap();
    let _ = l2.accept().await.unwrap();
    within("retry", TIMEOUT, dialer).await.unwrap().unwrap();

    // A family without a listener fails with the last error.
    let e =
        connect_retry(&MemFamily::new(), &MemAddr::from("none"), RetryPolicy { attempts: 2, ..RetryPolicy::default() })
            .await
            .unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused);

    // Hybrid: a refused port closes the handshake.
    let vmm = conflux_hvsock::testing::FakeVmm::start(dir.path().join("v.sock")).unwrap();
    let e = conflux_hvsock::Family::connect(&HybridFamily, &vmm.addr(99), None).await.unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");
    // Hybrid guest-initiated listener path.
    let hl = Listener::bind(&HybridFamily, &HybridAddr::new(dir.path().join("v.sock"), 1024)).unwrap();
    assert!(dir.path().join("v.sock_1024").exists());
    drop(hl);
}

#[tokio::test]
async fn raw_flow_shutdowns_are_real() {
    let dir = TempDir::new("rawsd");
    let (mut a, mut b) = unix_pair(&dir).await;
    a.write("abc").await.unwrap();
    a.shutdown(Shutdown::Write).await.unwrap();
    a.shutdown(Shutdown::Write).await.unwrap();
    assert!(a.write("x").await.unwrap_err().is_closed());
    assert_eq!(b.read_to_end().await.unwrap(), b"abc");
    b.write("back").await.unwrap();
    assert_eq!(a.read().await.unwrap().unwrap(), "back");
    a.shutdown(Shutdown::Read).await.unwrap();
    assert_eq!(a.read().await.unwrap(), None);
    a.close().await.unwrap();
    a.close().await.unwrap();
    assert!(a.get_ref().local_addr().is_err(), "socket released");
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn vsock_smoke_without_a_peer() {
    use conflux_hvsock::{FamilyListener, VsockAddr, VsockListener, local_cid};
    if !std::path::Path::new("/dev/vsock").exists() {
        conflux_testkit::skip!(NoVsockLoopback, "no /dev/vsock on this machine");
    }
    let l = VsockListener::bind(&VsockAddr::any(VsockAddr::PORT_ANY), 16).expect("bind any/any and listen");
    let local = l.local_addr().unwrap();
    assert_ne!(local.port, VsockAddr::PORT_ANY, "the kernel picked a port");
    let cid = local_cid().expect("local CID from /dev/vsock");
    // Never assert a particular CID; only that it is not a wildcard.
    assert_ne!(cid, VsockAddr::CID_ANY);
    let fd_flags = {
        use std::os::fd::AsRawFd;
        std::fs::read_to_string(format!("/proc/self/fdinfo/{}", std::os::fd::AsFd::as_fd(&l).as_raw_fd())).unwrap()
    };
    let flags = fd_flags.lines().find_map(|l| l.strip_prefix("flags:")).unwrap().trim();
    let flags = u32::from_str_radix(flags, 8).unwrap();
    assert_ne!(flags & libc::O_CLOEXEC as u32, 0, "CLOEXEC");
    assert_ne!(flags & libc::O_NONBLOCK as u32, 0, "non-blocking");
}

/// Writes `data` through `poll_write_borrowed` (hyper's way: offer the rest
/// again after a partial take) while `reader` reads it all; returns what was
/// read and whether some write was only partly taken.
async fn borrowed_exchange<F: Flow>(mut writer: F, mut reader: F, data: &[u8]) -> (Vec<u8>, bool) {
    let write = async move {
        let (mut at, mut partial) = (0, false);
        while at < data.len() {
            let half = (data.len() - at) / 2;
            let slices = [std::io::IoSlice::new(&data[at..at + half]), std::io::IoSlice::new(&data[at + half..])];
            let n = std::future::poll_fn(|cx| writer.poll_write_borrowed(cx, &slices)).await.unwrap();
            assert!(n > 0, "a ready borrowed write takes something");
            partial |= n < data.len() - at;
            at += n;
        }
        writer.shutdown(Shutdown::Write).await.unwrap();
        partial
    };
    let (partial, got) = within("borrowed writes", TIMEOUT, async { tokio::join!(write, reader.read_to_end()) }).await;
    (got.unwrap(), partial)
}

/// The raw flow writes a caller's borrowed slices straight to the socket:
/// a 16 MiB write over a Unix socket is partly taken (the socket buffer is
/// smaller), the rest offered again, and every byte arrives in order.
#[tokio::test]
async fn a_borrowed_write_to_a_raw_unix_flow_is_partly_taken_and_completes() {
    let dir = TempDir::new("borrowed");
    let (a, b) = unix_pair(&dir).await;
    assert!(a.is_write_borrowed());
    let data = payload(11, 16 << 20);
    let (got, partial) = borrowed_exchange(a, b, &data).await;
    assert!(partial, "a Unix socket buffer takes less than 16 MiB at once");
    assert!(got == data[..], "every byte in order");
}

/// Each `poll_writev` call's slices, as (address, length).
type Calls = std::sync::Arc<std::sync::Mutex<Vec<Vec<(usize, usize)>>>>;

/// A socket that records each `poll_writev` call's slices and takes at most
/// `room` bytes a call.
struct Recording {
    room: usize,
    calls: Calls,
}

impl Socket for Recording {
    type Addr = UnixAddr;
    fn poll_read_buf(
        &mut self,
        _cx: &mut std::task::Context<'_>,
        _buf: &mut bytes::BytesMut,
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::task::Poll::Ready(Ok(0))
    }
    fn poll_writev(
        &mut self,
        _cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.calls.lock().unwrap().push(bufs.iter().map(|b| (b.as_ptr() as usize, b.len())).collect());
        std::task::Poll::Ready(Ok(bufs.iter().map(|b| b.len()).sum::<usize>().min(self.room)))
    }
    inert_socket_ends!();
}

/// A borrowed vectored write is one `writev` of the caller's own non-empty
/// slices (no copy), and a partial take is reported as such.
#[test]
fn a_borrowed_vectored_write_is_one_writev_of_the_callers_slices() {
    let calls = Calls::default();
    let mut flow = RawFlow::new(Recording { room: 6, calls: calls.clone() });
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let (head, body) = (b"head".to_vec(), b"body".to_vec());
    let slices = [std::io::IoSlice::new(&head), std::io::IoSlice::new(b""), std::io::IoSlice::new(&body)];
    let wrote = flow.poll_write_borrowed(&mut cx, &slices);
    assert!(matches!(wrote, std::task::Poll::Ready(Ok(6))), "partly taken: {wrote:?}");
    let calls = calls.lock().unwrap();
    assert_eq!(*calls, [vec![(head.as_ptr() as usize, 4), (body.as_ptr() as usize, 4)]]);
}

/// The framed flow frames a caller's borrowed slices and writes them straight
/// to the socket too: a 16 MiB write over a Unix socket is partly taken (a
/// frame cut mid-way goes out first, copied), every byte arrives in order.
#[tokio::test]
async fn a_borrowed_write_to_a_framed_unix_flow_is_partly_taken_and_completes() {
    let dir = TempDir::new("borrowed-framed");
    let (a, b) = unix_pair(&dir).await;
    let (a, b) = (a.into_framed(cfg()), b.into_framed(cfg()));
    assert!(a.is_write_borrowed());
    let data = payload(12, 16 << 20);
    let (got, partial) = borrowed_exchange(a, b, &data).await;
    assert!(partial, "a Unix socket buffer takes less than 16 MiB at once");
    assert!(got == data[..], "every byte in order");
}

/// A borrowed framed write is one `writev` of header, slice, header, slice
/// (the caller's own slices); a frame the socket cut is accepted whole, and
/// its rest (copied) goes out before anything else.
#[test]
fn a_borrowed_framed_write_is_one_writev_and_a_cut_frame_is_finished_first() {
    let calls = Calls::default();
    let mut flow = RawFlow::new(Recording { room: 6, calls: calls.clone() }).into_framed(cfg());
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let (head, body) = (b"head".to_vec(), b"body".to_vec());
    let slices = [std::io::IoSlice::new(&head), std::io::IoSlice::new(b""), std::io::IoSlice::new(&body)];
    let wrote = flow.poll_write_borrowed(&mut cx, &slices);
    assert!(matches!(wrote, std::task::Poll::Ready(Ok(4))), "the cut first frame counts whole: {wrote:?}");
    let calls = calls.lock().unwrap();
    let first = &calls[0];
    assert_eq!(first.iter().map(|c| c.1).collect::<Vec<_>>(), [4, 4, 4, 4], "header, head, header, body");
    assert_eq!((first[1].0, first[3].0), (head.as_ptr() as usize, body.as_ptr() as usize), "the caller's slices");
    assert_eq!(calls[1].len(), 1, "then the rest of the cut frame: {calls:?}");
    assert_eq!(calls[1][0].1, 2, "two bytes of `head` were left");
}

/// Polls `poll_read_into` once with `room` bytes of room: what it put in the
/// buffer (`None` while pending) and what it left in `rest`.
async fn read_into<F: Flow>(flow: &mut F, room: usize) -> (Vec<u8>, Bytes) {
    let mut mem = vec![0u8; room];
    let mut rest = Bytes::new();
    let mut buf = tokio::io::ReadBuf::new(&mut mem);
    within("poll_read_into", TIMEOUT, std::future::poll_fn(|cx| flow.poll_read_into(cx, &mut buf, &mut rest)))
        .await
        .expect("poll_read_into");
    (buf.filled().to_vec(), rest)
}

/// The raw Unix flow reads straight into the caller's buffer: a small
/// buffer takes a prefix and the socket keeps the rest (nothing left in
/// `rest`, no chunk in between); chunk reads and direct reads mix on one
/// stream; Eof is an empty fill, sticky; a shutdown(Read) reads as Eof.
#[tokio::test]
async fn the_raw_unix_flow_reads_into_the_callers_buffer() {
    let dir = TempDir::new("hv-read-into");
    let (mut a, mut b) = unix_pair(&dir).await;
    a.write(Bytes::from_static(b"hello, world")).await.unwrap();
    let (got, rest) = read_into(&mut b, 5).await;
    assert_eq!((&got[..], rest.len()), (&b"hello"[..], 0), "a prefix, nothing spilled");
    let chunk = b.read().await.unwrap().unwrap();
    assert_eq!(&chunk[..], b", world", "the socket kept the rest for the next read, of either kind");
    a.shutdown(Shutdown::Write).await.unwrap();
    for _ in 0..2 {
        let (got, rest) = read_into(&mut b, 64).await;
        assert!(got.is_empty() && rest.is_empty(), "Eof, sticky");
    }
    let (mut c, mut d) = unix_pair(&TempDir::new("hv-read-into-shut")).await;
    c.write(Bytes::from_static(b"unread")).await.unwrap();
    d.shutdown(Shutdown::Read).await.unwrap();
    assert!(read_into(&mut d, 64).await.0.is_empty(), "after shutdown(Read): Eof");
}

/// A socket without direct reads (the in-memory one): the raw flow reads a
/// chunk and copies what fits; the rest comes back in `rest`, in order.
#[tokio::test]
async fn the_raw_flow_over_a_chunk_socket_spills_into_rest() {
    let (mut a, mut b) = mem_pair().await;
    a.write(Bytes::from_static(b"hello, world")).await.unwrap();
    let (got, rest) = read_into(&mut b, 5).await;
    assert_eq!((&got[..], &rest[..]), (&b"hello"[..], &b", world"[..]));
    a.shutdown(Shutdown::Write).await.unwrap();
    assert!(read_into(&mut b, 5).await.0.is_empty(), "then Eof");
}

/// tokio's `AsyncRead` over the raw Unix flow (`FlowIo`, what hyper and
/// axum read through) with a buffer smaller than what is waiting: every
/// byte arrives, in order.
#[tokio::test]
async fn flowio_reads_a_raw_unix_flow_into_small_buffers() {
    let dir = TempDir::new("hv-flowio-small");
    let (mut a, b) = unix_pair(&dir).await;
    let data = payload(0x5a, 300_000);
    let expect = data.clone();
    let writer = async move {
        a.write(data).await.unwrap();
        a.shutdown(Shutdown::Write).await.unwrap();
        a
    };
    let reader = async move {
        let mut io = b.into_tokio();
        let (mut got, mut small) = (Vec::new(), [0u8; 1000]);
        loop {
            let n = io.read(&mut small).await.unwrap();
            if n == 0 {
                break got;
            }
            got.extend_from_slice(&small[..n]);
        }
    };
    let (_a, got) = within("300 kB through FlowIo", TIMEOUT, async { tokio::join!(writer, reader) }).await;
    assert!(got == expect, "{} bytes back of {}", got.len(), expect.len());
}

/// One `poll_read_into` with a `cap`-byte (uninitialised) buffer: the bytes
/// appended (none: Eof). `rest` must stay empty: the framed flow copies
/// what fits and keeps the rest in its own buffer.
async fn framed_read_into<F: Flow>(flow: &mut F, cap: usize) -> Result<Vec<u8>, conflux_flow::FlowError> {
    std::future::poll_fn(|cx| {
        let mut mem = vec![std::mem::MaybeUninit::<u8>::uninit(); cap];
        let mut buf = tokio::io::ReadBuf::uninit(&mut mem);
        let mut rest = Bytes::new();
        let polled = flow.poll_read_into(cx, &mut buf, &mut rest);
        assert!(rest.is_empty(), "the framed flow leaves nothing in rest");
        polled.map_ok(|()| buf.filled().to_vec())
    })
    .await
}

/// `framed_read_into` until Eof: everything, in `cap`-byte reads.
async fn framed_read_into_to_end<F: Flow>(flow: &mut F, cap: usize) -> Result<Vec<u8>, conflux_flow::FlowError> {
    let mut all = Vec::new();
    loop {
        let got = within("framed_read_into", TIMEOUT, framed_read_into(flow, cap)).await?;
        if got.is_empty() {
            return Ok(all);
        }
        assert!(got.len() <= cap);
        all.extend_from_slice(&got);
    }
}

/// `framed_read_into` while something is there without waiting: what it gave, and whether Eof came.
fn framed_read_into_ready<F: Flow>(flow: &mut F, cap: usize, into: &mut Vec<u8>) -> bool {
    use futures_util::FutureExt;
    while let Some(r) = framed_read_into(flow, cap).now_or_never() {
        let got = r.expect("no error before the stream ends");
        if got.is_empty() {
            return true;
        }
        into.extend_from_slice(&got);
    }
    false
}

/// The wire of "hello" (one frame), an empty frame, "abc", a 300-byte frame, ShutdownWrite.
fn split_wire() -> (Vec<u8>, Vec<u8>) {
    let big = payload(5, 300);
    let mut wire = b"\x05\0\0\0hello\0\0\0\0\x03\0\0\0abc\x2c\x01\0\0".to_vec();
    wire.extend_from_slice(&big);
    wire.extend_from_slice(&[0xad, 0xde, 0xef, 0xbe]);
    let mut data = b"helloabc".to_vec();
    data.extend_from_slice(&big);
    (wire, data)
}

/// The stream cut at every offset (inside headers, payloads, markers), read
/// with `poll_read_into` into buffers smaller and larger than a frame: the
/// same bytes, then Eof, whatever the cut and the buffer.
#[tokio::test]
async fn read_into_frames_split_at_every_offset() {
    let (wire, data) = split_wire();
    for cap in [1, 3, 200, 4096] {
        for cut in 0..wire.len() {
            let (mut a, b) = mem_pair().await;
            let mut b = b.into_framed(cfg());
            let mut got = Vec::new();
            within("write", TIMEOUT, a.write(Bytes::copy_from_slice(&wire[..cut]))).await.unwrap();
            assert!(!framed_read_into_ready(&mut b, cap, &mut got), "cut {cut}, cap {cap}: Eof before the marker");
            within("write", TIMEOUT, a.write(Bytes::copy_from_slice(&wire[cut..]))).await.unwrap();
            got.extend(framed_read_into_to_end(&mut b, cap).await.unwrap());
            assert!(got == data, "cut {cut}, cap {cap}: {} bytes, want {}", got.len(), data.len());
            // Eof is sticky.
            assert_eq!(within("eof", TIMEOUT, framed_read_into(&mut b, cap)).await.unwrap(), b"");
        }
    }
}

/// Reads into buffers smaller and larger than a frame over a Unix socket,
/// mixed with chunk reads (one stream either way); with 4 KiB frames and
/// with 1 MiB frames (the payload then goes from the socket straight into
/// the caller's buffer).
#[tokio::test]
async fn read_into_buffers_smaller_and_larger_than_a_frame() {
    for max in [4096, 1 << 20] {
        for cap in [1000, 4096, 5000, 64 * 1024, 300_000] {
            let dir = TempDir::new("read-into");
            let (a, b) = unix_pair(&dir).await;
            let config = cfg().max_frame(max);
            let (mut a, mut b) = (a.into_framed(config), b.into_framed(config));
            let data = payload(cap as u64, 2 * 1024 * 1024 + 77);
            let writer = async {
                a.write(data.clone()).await.unwrap();
                a.shutdown(Shutdown::Write).await.unwrap();
                a
            };
            let reader = async {
                let mut got = within("framed_read_into", TIMEOUT, framed_read_into(&mut b, cap)).await.unwrap();
                // A chunk read in the middle sees the next bytes of the same stream.
                got.extend_from_slice(&within("read", TIMEOUT, b.read()).await.unwrap().expect("data"));
                got.extend(framed_read_into_to_end(&mut b, cap).await.unwrap());
                got
            };
            let (mut a, got) = within("exchange", TIMEOUT, async { tokio::join!(writer, reader) }).await;
            assert!(got == data, "max {max}, cap {cap}: {} bytes, want {}", got.len(), data.len());
            let (ra, rb) = within("close", TIMEOUT, async { tokio::join!(a.close(), b.close()) }).await;
            ra.unwrap();
            rb.unwrap();
        }
    }
}

/// A marker right after the data in the same read: the data, then Eof
/// (ShutdownWrite), or the data, then Eof and our acknowledgement (Close).
#[tokio::test]
async fn read_into_marker_right_after_data() {
    for cap in [2, 5, 64] {
        for (marker, acked) in [(&[0xad, 0xde, 0xef, 0xbe], false), (&CLOSE, true)] {
            let (mut a, b) = mem_pair().await;
            let mut b = b.into_framed(cfg());
            let mut wire = b"\x05\0\0\0hello".to_vec();
            wire.extend_from_slice(marker);
            within("write", TIMEOUT, a.write(Bytes::from(wire))).await.unwrap();
            let got = framed_read_into_to_end(&mut b, cap).await.unwrap();
            assert_eq!(got, b"hello", "cap {cap}");
            assert_eq!(within("eof", TIMEOUT, framed_read_into(&mut b, cap)).await.unwrap(), b"", "Eof is sticky");
            if acked {
                let ack = within("ack", TIMEOUT, a.read()).await.unwrap().expect("the acknowledgement");
                assert_eq!(&ack[..], &CLOSE);
            }
        }
    }
}

/// The transport ends inside a frame (in a payload, in a header): the bytes
/// that came, then a protocol error naming the truncation, latched.
#[tokio::test]
async fn read_into_truncated_frame_is_a_protocol_error() {
    for (wire, want, what) in [
        (&b"\x0a\0\0\0abc"[..], &b"abc"[..], "7 payload bytes missing"),
        (&b"\x03\0\0\0abc\x05\0"[..], &b"abc"[..], "after 2 of 4 header bytes"),
    ] {
        let dir = TempDir::new("read-into-trunc");
        let (mut a, b) = unix_pair(&dir).await;
        let mut b = b.into_framed(cfg());
        within("write", TIMEOUT, a.write(Bytes::copy_from_slice(wire))).await.unwrap();
        within("close", TIMEOUT, a.close()).await.unwrap();
        let mut got = Vec::new();
        let e = loop {
            match within("framed_read_into", TIMEOUT, framed_read_into(&mut b, 64)).await {
                Ok(d) => {
                    assert!(!d.is_empty(), "{what}: Eof instead of an error");
                    got.extend(d);
                }
                Err(e) => break e,
            }
        };
        assert_eq!(got, want, "{what}");
        assert!(e.is_protocol() && e.to_string().contains("truncated"), "{what}: {e}");
        assert!(e.to_string().contains(what.split(' ').next().unwrap()), "{what}: {e}");
        let again = within("framed_read_into", TIMEOUT, framed_read_into(&mut b, 64)).await.unwrap_err();
        assert!(again.is_protocol(), "latched: {again}");
    }
}

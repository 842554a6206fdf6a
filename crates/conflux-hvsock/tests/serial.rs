//! Timing-sensitive tests (run with `--test-threads=1` by xtask): close and
//! connect timeouts on kernel sockets, and real vsock data transfer, which
//! probes the loopback transport once and skips when it is missing.

mod common;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use conflux_flow::{FlowExt, Shutdown};
use conflux_hvsock::{FramingConfig, UnixAddr, UnixFamily, connect};
use conflux_testkit::{TIMEOUT, payload, within};
use tokio::io::AsyncReadExt;

use conflux_testkit::TempDir;

#[tokio::test]
async fn close_returns_by_its_timeout_when_the_peer_never_acknowledges() {
    let dir = TempDir::new("noack");
    let path = dir.path().join("s");
    let l = tokio::net::UnixListener::bind(&path).unwrap();
    let (ours, theirs) = tokio::join!(connect(&UnixFamily, &UnixAddr::new(&path), None), l.accept());
    let mut ours = ours.unwrap().into_framed(FramingConfig::new().close_timeout(Duration::from_millis(300)));
    let (mut peer, _) = theirs.unwrap();
    ours.write("bye").await.unwrap();

    let started = Instant::now();
    within("close", Duration::from_secs(5), ours.close()).await.unwrap();
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(250), "close waited for the ack: {took:?}");
    assert!(took < Duration::from_secs(2), "close is bounded: {took:?}");
    assert!(ours.close_timed_out() && ours.is_socket_closed());

    // The peer got the data and the Close, then Eof (the socket was closed).
    let mut got = Vec::new();
    within("peer read", TIMEOUT, peer.read_to_end(&mut got)).await.unwrap();
    assert_eq!(got, [3, 0, 0, 0, b'b', b'y', b'e', 0xad, 0xde, 0xad, 0xde]);
}

#[tokio::test]
async fn acknowledged_close_does_not_wait_for_the_timeout() {
    let dir = TempDir::new("ack");
    let (a, b) = common::unix_pair(&dir).await;
    let cfg = FramingConfig::new().close_timeout(Duration::from_secs(10));
    let (mut a, mut b) = (a.into_framed(cfg), b.into_framed(cfg));
    let started = Instant::now();
    let peer = tokio::spawn(async move {
        assert_eq!(b.read().await.unwrap(), None);
        b.close().await.unwrap();
        b.close_timed_out()
    });
    a.close().await.unwrap();
    assert!(!within("peer", TIMEOUT, peer).await.unwrap());
    assert!(!a.close_timed_out());
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[cfg(target_os = "linux")]
mod vsock {
    use super::*;
    use conflux_hvsock::{Family, FamilyListener, Listener, VsockAddr, VsockFamily, VsockListener};

    /// Whether vsock loopback (CID 1) carries data here: probed once per run
    /// with a 300 ms connect timeout.
    fn loopback() -> Result<(), String> {
        static PROBE: OnceLock<Result<(), String>> = OnceLock::new();
        PROBE
            .get_or_init(|| {
                // Its own thread and runtime: the caller may be inside one.
                std::thread::spawn(|| {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(|e| e.to_string())?;
                    rt.block_on(async {
                        let l =
                            VsockListener::bind(&VsockAddr::any(VsockAddr::PORT_ANY), 4).map_err(|e| e.to_string())?;
                        let port = l.local_addr().map_err(|e| e.to_string())?.port;
                        let addr = VsockAddr::new(VsockAddr::CID_LOCAL, port);
                        match VsockFamily.connect(&addr, Some(Duration::from_millis(300))).await {
                            Ok(_) => Ok(()),
                            Err(e) => Err(format!("connect to {addr} failed: {e}")),
                        }
                    })
                })
                .join()
                .unwrap_or_else(|_| Err("the probe panicked".into()))
            })
            .clone()
    }

    #[tokio::test]
    async fn connect_to_cid_1_with_a_300ms_timeout_fails_cleanly_or_connects() {
        if !std::path::Path::new("/dev/vsock").exists() {
            conflux_testkit::skip!(NoVsockLoopback, "no /dev/vsock on this machine");
        }
        // Nobody listens on this port: with loopback the kernel refuses at once,
        // without it the connect times out. Either way: an error, promptly.
        let started = Instant::now();
        let r = VsockFamily
            .connect(&VsockAddr::new(VsockAddr::CID_LOCAL, 0x7fff_fff0), Some(Duration::from_millis(300)))
            .await;
        let took = started.elapsed();
        let e = r.expect_err("nobody listens there");
        assert!(took < Duration::from_millis(1500), "bounded by the timeout: {took:?} ({e})");
        assert!(!e.to_string().is_empty());
        // A retry needs (and gets) a fresh socket: a second attempt behaves the same.
        let again = VsockFamily
            .connect(&VsockAddr::new(VsockAddr::CID_LOCAL, 0x7fff_fff0), Some(Duration::from_millis(300)))
            .await;
        assert!(again.is_err());
    }

    #[tokio::test]
    async fn raw_and_framed_data_over_vsock_loopback() {
        if let Err(why) = loopback() {
            conflux_testkit::skip!(NoVsockLoopback, "{why}");
        }
        for framed in [false, true] {
            let listener = Listener::bind(&VsockFamily, &VsockAddr::any(VsockAddr::PORT_ANY)).unwrap();
            let port = listener.local_addr().unwrap().port;
            let addr = VsockAddr::new(VsockAddr::CID_LOCAL, port);
            let (c, s) = tokio::join!(connect(&VsockFamily, &addr, Some(Duration::from_secs(1))), listener.accept());
            let (c, s) = (c.unwrap(), s.unwrap().0);
            let data = payload(5, 1 << 20);
            let cfg = FramingConfig::new();
            let result = if framed {
                let (mut c, mut s) = (c.into_framed(cfg), s.into_framed(cfg));
                let d = data.clone();
                let w = tokio::spawn(async move {
                    c.write(d).await.unwrap();
                    c.shutdown(Shutdown::Write).await.unwrap();
                    c.close().await.unwrap();
                });
                let got = within("vsock read", TIMEOUT, s.read_to_end()).await.unwrap();
                s.close().await.unwrap();
                w.await.unwrap();
                got
            } else {
                let (mut c, mut s) = (c, s);
                let d = data.clone();
                let w = tokio::spawn(async move {
                    c.write(d).await.unwrap();
                    c.close().await.unwrap();
                });
                let got = within("vsock read", TIMEOUT, s.read_to_end()).await.unwrap();
                w.await.unwrap();
                got
            };
            assert_eq!(result, data, "framed: {framed}");
        }
    }
}

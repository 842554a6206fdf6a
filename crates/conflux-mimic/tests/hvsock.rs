//! The hvsock binding: `unix://` and `fc-vsock://` (through conflux-hvsock's
//! fake VMM) resolved to raw and framed flows against echo servers in a temp dir.
#![forbid(unsafe_code)]

mod fixtures;

use std::time::Duration;

use conflux_flow::BoxFlow;
use conflux_flow::{Flow, FlowError, FlowExt, Shutdown};
use conflux_hvsock::testing::FakeVmm;
use conflux_hvsock::{
    FamilyListener, FramedFlow, FramingConfig, HybridAddr, Listener, RawFlow, UnixAddr, UnixFamily, UnixSocket,
};
use conflux_mimic::report::AttemptOutcome;
use conflux_mimic::{RegisterOptions, Registry, UriKeys, register_hvsock};
use conflux_testkit::TempDir;
use conflux_testkit::{TIMEOUT, within};

/// Reads to Eof, echoes it back, closes; returns what it read.
async fn echo(mut flow: impl Flow) -> Result<Vec<u8>, FlowError> {
    let got = flow.read_to_end().await?;
    flow.write(got.clone()).await?;
    flow.close().await?;
    Ok(got)
}

/// Writes `msg`, half-closes, reads the echo, closes.
async fn ping(mut flow: BoxFlow, msg: &'static str) {
    flow.write(msg).await.unwrap();
    flow.shutdown(Shutdown::Write).await.unwrap();
    assert_eq!(within("echo", TIMEOUT, flow.read_to_end()).await.unwrap(), msg.as_bytes());
    within("close", TIMEOUT, flow.close()).await.unwrap();
}

fn registry() -> (Registry, conflux_mimic::Hvsock) {
    let registry = Registry::new();
    let hv = register_hvsock(&registry, RegisterOptions::new(), FramingConfig::new());
    (registry, hv)
}

#[tokio::test]
async fn unix_uri_resolves_to_the_raw_flow_and_framing_to_the_framed_flow() {
    let dir = TempDir::new("unix");
    let path = dir.path().join("echo.sock");
    let listener = Listener::bind(&UnixFamily, &UnixAddr::new(&path)).unwrap();
    let server = tokio::spawn(async move {
        let (raw, _) = listener.accept().await?;
        let first = echo(raw).await?;
        let (raw, _) = listener.accept().await?;
        let second = echo(raw.into_framed(FramingConfig::new())).await?;
        Ok::<_, FlowError>((first, second))
    });
    let (registry, hv) = registry();

    let ctx = registry.ctx_from_uri(&format!("unix://{}", path.display()).parse().unwrap()).unwrap();
    let flow = within("resolve", TIMEOUT, registry.resolve(&ctx)).await.unwrap();
    assert!(hv.unix.raw_handle.is(&flow), "{flow:?}");
    assert!(!hv.unix.framed_handle.is(&flow));
    ping(flow, "raw").await;

    let ctx = registry.ctx_from_uri(&format!("unix://{}?framing=shutdown", path.display()).parse().unwrap()).unwrap();
    let flow = within("resolve", TIMEOUT, registry.resolve(&ctx)).await.unwrap();
    assert!(hv.unix.framed_handle.is(&flow), "{flow:?}");
    let framed: FramedFlow<UnixSocket> = hv.unix.framed_handle.downcast(flow).unwrap();
    ping(BoxFlow::new(framed), "framed").await;

    let (first, second) = within("server", TIMEOUT, server).await.unwrap().unwrap();
    assert_eq!((first.as_slice(), second.as_slice()), (&b"raw"[..], &b"framed"[..]));
}

#[tokio::test]
async fn fc_vsock_uri_goes_through_the_vmm_raw_and_framed() {
    let dir = TempDir::new("fc");
    let vmm = FakeVmm::start(dir.path().join("v.sock")).unwrap();
    let guest = vmm.guest_listener(52, 16);
    let server = tokio::spawn(async move {
        let (sock, _) = guest.accept().await.map_err(FlowError::from)?;
        let first = echo(RawFlow::new(sock)).await?;
        let (sock, _) = guest.accept().await.map_err(FlowError::from)?;
        let second = echo(FramedFlow::new(sock, FramingConfig::new())).await?;
        Ok::<_, FlowError>((first, second))
    });
    let (registry, hv) = registry();
    let base = format!("fc-vsock://{}?port=52", vmm.path().display());

    let ctx = registry.ctx_from_uri(&base.parse().unwrap()).unwrap();
    let flow = within("resolve", TIMEOUT, registry.resolve(&ctx)).await.unwrap();
    let raw: &RawFlow<UnixSocket<HybridAddr>> = hv.fc_vsock.raw_handle.downcast_ref(&flow).unwrap();
    assert_eq!(raw.peer_addr().unwrap(), vmm.addr(52));
    ping(flow, "raw vsock").await;

    let ctx = registry.ctx_from_uri(&format!("{base}&framing=shutdown").parse().unwrap()).unwrap();
    let flow = within("resolve", TIMEOUT, registry.resolve(&ctx)).await.unwrap();
    assert!(hv.fc_vsock.framed_handle.is(&flow), "{flow:?}");
    assert!(hv.unix.framed_handle.downcast_ref(&flow).is_none(), "another family's flow type");
    ping(flow, "framed vsock").await;

    let (first, second) = within("server", TIMEOUT, server).await.unwrap().unwrap();
    assert_eq!((first.as_slice(), second.as_slice()), (&b"raw vsock"[..], &b"framed vsock"[..]));
}

#[tokio::test]
async fn a_refused_port_is_reported_with_the_protocol_and_the_timeout_reaches_the_endpoint() {
    let dir = TempDir::new("refused");
    let vmm = FakeVmm::start(dir.path().join("v.sock")).unwrap();
    let (registry, hv) = registry();
    let uri = format!("fc-vsock://{}?port=99&connect_timeout=1500ms", vmm.path().display());
    let ctx = registry.ctx_from_uri(&uri.parse().unwrap()).unwrap();
    let unfolded = registry.unfold(&ctx).await.unwrap();
    let e = unfolded.find(&hv.fc_vsock.raw).unwrap();
    assert_eq!((e.addr(), e.timeout()), (&vmm.addr(99), Some(Duration::from_millis(1500))));
    assert!(unfolded.find(&hv.fc_vsock.framed).is_none(), "framed only with framing=shutdown");

    let err = within("resolve", TIMEOUT, registry.resolve(&ctx)).await.unwrap_err();
    let report = err.not_found().unwrap_or_else(|| panic!("{err}"));
    let attempts: Vec<_> = report.attempts().iter().map(|a| (a.protocol(), a.outcome())).collect();
    assert!(matches!(attempts[..], [("fc-vsock", AttemptOutcome::Failed(_))]), "{err}");

    // A framing value added to the context picks the framed protocol.
    let ctx = ctx.add(&UriKeys::get().framing, conflux_uri::Framing::Shutdown);
    let err = within("resolve", TIMEOUT, registry.resolve(&ctx)).await.unwrap_err();
    assert!(err.to_string().contains("fc-vsock+framing"), "{err}");
}

#[tokio::test]
async fn hyperkit_uri_dials_the_connect_socket_with_cid_and_port() {
    let dir = TempDir::new("hk");
    let listener = tokio::net::UnixListener::bind(dir.path().join("connect")).unwrap();
    // Hyperkit's side: one `CID.PORT\n` line in hex, then the stream itself.
    let server = tokio::spawn(async move {
        let (s, _) = listener.accept().await?;
        let mut flow = RawFlow::new(UnixSocket::from_tokio(s)?);
        let mut got = flow.read_to_end().await?;
        let rest = got.split_off(18);
        flow.write(rest).await?;
        flow.close().await?;
        Ok::<_, FlowError>(String::from_utf8(got).unwrap())
    });
    let (registry, hv) = registry();
    let ctx = registry.ctx_from_uri(&format!("hyperkit://:80{}", dir.path().display()).parse().unwrap()).unwrap();
    let flow = within("resolve", TIMEOUT, registry.resolve(&ctx)).await.unwrap();
    assert!(hv.hyperkit.raw_handle.is(&flow), "{flow:?}");
    ping(flow, "hyperkit").await;
    assert_eq!(within("server", TIMEOUT, server).await.unwrap().unwrap(), "00000003.00000050\n");
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn vsock_uri_resolves_over_loopback_when_the_host_has_it() {
    use conflux_hvsock::{Family, VsockAddr, VsockFamily};
    let listener = match Listener::bind(&VsockFamily, &VsockAddr::any(VsockAddr::PORT_ANY)) {
        Ok(l) => l,
        Err(e) => conflux_testkit::skip!(NoVsockLoopback, "cannot bind AF_VSOCK: {e}"),
    };
    let port = listener.local_addr().unwrap().port;
    // Probe once, directly: without vsock loopback (CID 1) the registry has nothing to prove here.
    let probe = VsockFamily.connect(&VsockAddr::new(VsockAddr::CID_LOCAL, port), Some(Duration::from_millis(300)));
    let (probe, accepted) =
        tokio::join!(probe, async { tokio::time::timeout(Duration::from_millis(300), listener.accept()).await });
    if let Err(e) = probe {
        conflux_testkit::skip!(NoVsockLoopback, "connect to CID 1 failed: {e}");
    }
    drop(accepted);
    let server = tokio::spawn(async move {
        let (flow, _) = listener.accept().await?;
        echo(flow).await
    });
    let (registry, hv) = registry();
    let ctx = registry.ctx_from_uri(&format!("vsock://local:{port}?connect_timeout=1s").parse().unwrap()).unwrap();
    let flow = within("resolve", TIMEOUT, registry.resolve(&ctx)).await.unwrap();
    assert!(hv.vsock.raw_handle.is(&flow), "{flow:?}");
    ping(flow, "vsock").await;
    assert_eq!(within("server", TIMEOUT, server).await.unwrap().unwrap(), b"vsock");
}

//! The flow conformance kit over pairs made by listening and dialling
//! through one [`Registry`] ([`register_all`]): `Registry::listen` on a
//! listen URI, `Registry::dial` on its `local_uri()`, the accepted flow as
//! the other end. Every scheme that runs here: tcp raw and framed, tls (a
//! certificate made by rcgen), unix raw and framed, fc-vsock (the
//! `<path>_<port>` listener, and dialling through conflux-hvsock's fake VMM),
//! hyperkit, and vsock when the host has a loopback transport (a visible
//! `no-vsock-loopback` skip otherwise).
//!
//! Framed factories put a short framing close timeout in the context: the
//! kit's C5 waits for it when the peer never closes.
#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use conflux_conformance::{Caps, CaseId, FlowFactory, PairFuture, flow_conformance};
use conflux_flow::{BoxFlow, FlowError};
use conflux_hvsock::FramingConfig;
use conflux_hvsock::testing::FakeVmm;
use conflux_mimic::{Ctx, FramingKeys, Registry, register_all};
use conflux_testkit::{TIMEOUT, TempDir, within};
use conflux_uri::{Target, Uri};

/// The framing's close timeout in the framed factories.
const CLOSE_TIMEOUT: Duration = Duration::from_millis(500);

fn framed_ctx() -> Ctx {
    Ctx::new().add(&FramingKeys::get().config, FramingConfig::new().close_timeout(CLOSE_TIMEOUT))
}

fn other(e: impl std::fmt::Display) -> FlowError {
    FlowError::other(e.to_string())
}

/// What the framing changes in a transport's capabilities (as conflux-hvsock's kit says).
fn framed(base: Caps) -> Caps {
    Caps { peer_sees_read_shutdown: false, close_waits_for_peer: true, ..base }
}

/// Unix sockets have no reset (only with unread data).
fn unix() -> Caps {
    Caps { abort_resets: false, ..Caps::kernel() }
}

/// How the client side of a pair gets its URI from the listener's.
type ToDial = fn(&Uri, &TempDir) -> Uri;

/// A pair: listen on `listen` (with `{n}` replaced by a fresh number and
/// `{dir}` by a temporary directory), dial what `to_dial` makes of its
/// `local_uri()`, accept.
struct ListenDial {
    registry: Registry,
    dir: TempDir,
    n: AtomicU32,
    listen: &'static str,
    to_dial: ToDial,
    ctx: Ctx,
    caps: Caps,
}

impl ListenDial {
    fn new(listen: &'static str, caps: Caps) -> ListenDial {
        let registry = Registry::new();
        register_all(&registry);
        let ctx = if listen.contains("framing=") { framed_ctx() } else { Ctx::new() };
        ListenDial {
            registry,
            dir: TempDir::new("listen-kit"),
            n: AtomicU32::new(0),
            listen,
            to_dial: |local, _| local.clone(),
            ctx,
            caps,
        }
    }

    fn dialling(mut self, to_dial: ToDial) -> ListenDial {
        self.to_dial = to_dial;
        self
    }
}

impl FlowFactory for ListenDial {
    type Flow = BoxFlow;
    fn caps(&self) -> Caps {
        self.caps
    }
    fn pair(&self) -> PairFuture<'_, BoxFlow> {
        Box::pin(async move {
            let n = self.n.fetch_add(1, Ordering::Relaxed);
            let dir = self.dir.path().display().to_string();
            if self.listen.contains("hyperkit") {
                std::fs::create_dir_all(format!("{dir}/hk{n}")).map_err(FlowError::from)?;
            }
            let text = self.listen.replace("{n}", &n.to_string()).replace("{dir}", &dir);
            let uri: Uri = text.parse().map_err(other)?;
            let mut listener = self.registry.listen_with(&uri, &self.ctx).await.map_err(other)?;
            let target = (self.to_dial)(listener.local_uri(), &self.dir);
            let (client, server) =
                tokio::join!(self.registry.dial_with(&target, &self.ctx), within("accept", TIMEOUT, listener.accept()));
            Ok((client.map_err(other)?, server.map_err(FlowError::from)?.flow))
        })
    }
}

/// A self-signed certificate for `localhost` and 127.0.0.1, written as PEM
/// files `cert.pem` and `key.pem` into `dir`.
fn write_cert(dir: &std::path::Path) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    std::fs::write(dir.join("cert.pem"), cert.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), cert.key_pair.serialize_pem()).unwrap();
}

/// `tls-listen://127.0.0.1:0?cert=..&key=..`, dialled with `ca=` the same certificate.
fn tls(extra: &'static str) -> ListenDial {
    let f = ListenDial::new(
        if extra.is_empty() {
            "tls-listen://127.0.0.1:0?cert={dir}/cert.pem&key={dir}/key.pem"
        } else {
            "tls-listen://127.0.0.1:0?cert={dir}/cert.pem&key={dir}/key.pem&framing=shutdown"
        },
        if extra.is_empty() { Caps::kernel() } else { framed(Caps::kernel()) },
    )
    .dialling(|local, dir| {
        let Target::Tls { host, port, .. } = local.target() else { panic!("{local}") };
        let ca = Some(dir.path().join("cert.pem"));
        let target = Target::Tls {
            host: host.clone(),
            port: *port,
            sni: None,
            ca,
            cert: None,
            key: None,
            alpn: Vec::new(),
            over: None,
        };
        Uri::new(target).with_options(*local.options())
    });
    write_cert(f.dir.path());
    f
}

flow_conformance!(tcp_raw, ListenDial::new("tcp-listen://:0", Caps::kernel()));
flow_conformance!(tcp_framed, ListenDial::new("tcp-listen://:0?framing=shutdown", framed(Caps::kernel())));
flow_conformance!(tls_over_tcp, tls(""));
flow_conformance!(tls_over_framed_tcp, tls("framing"));
flow_conformance!(unix_raw, ListenDial::new("unix-listen://{dir}/s{n}.sock", unix()));
flow_conformance!(unix_framed, ListenDial::new("unix-listen://{dir}/s{n}.sock?framing=shutdown", framed(unix())));
// The `<path>_<port>` listener, dialled as a Firecracker VMM does: its Unix path.
flow_conformance!(fc_vsock_listen_raw, ListenDial::new("fc-vsock-listen://{dir}/v{n}.sock?port=52", unix()));
flow_conformance!(
    fc_vsock_listen_framed,
    ListenDial::new("fc-vsock-listen://{dir}/v{n}.sock?port=52&framing=shutdown", framed(unix()))
);
// The `<dir>/00000002.<port>` listener, dialled as hyperkit does: its Unix path.
flow_conformance!(hyperkit_listen_raw, ListenDial::new("hyperkit-listen://:80{dir}/hk{n}", unix()));
flow_conformance!(
    hyperkit_listen_framed,
    ListenDial::new("hyperkit-listen://:80{dir}/hk{n}?framing=shutdown", framed(unix()))
);

/// `fc-vsock://` dialled through the registry to a fake VMM; the other end
/// is the VMM's in-process guest listener (raw, or framed with the same config).
struct FcVsockDial {
    registry: Registry,
    dir: TempDir,
    n: AtomicU32,
    framed: bool,
}

impl FcVsockDial {
    fn new(framed: bool) -> FcVsockDial {
        let registry = Registry::new();
        register_all(&registry);
        FcVsockDial { registry, dir: TempDir::new("listen-kit-fc"), n: AtomicU32::new(0), framed }
    }
}

impl FlowFactory for FcVsockDial {
    type Flow = BoxFlow;
    fn caps(&self) -> Caps {
        if self.framed { framed(unix()) } else { unix() }
    }
    fn pair(&self) -> PairFuture<'_, BoxFlow> {
        Box::pin(async move {
            use conflux_hvsock::{FamilyListener, RawFlow};
            let path = self.dir.path().join(format!("vmm{}.sock", self.n.fetch_add(1, Ordering::Relaxed)));
            let vmm = FakeVmm::start(&path).map_err(FlowError::from)?;
            let guest = vmm.guest_listener(52, 4);
            let framing = if self.framed { "&framing=shutdown" } else { "" };
            let uri: Uri = format!("fc-vsock://{}?port=52{framing}", path.display()).parse().map_err(other)?;
            let ctx = framed_ctx();
            let (client, accepted) = tokio::join!(self.registry.dial_with(&uri, &ctx), guest.accept());
            drop(vmm);
            let _ = std::fs::remove_file(&path);
            let raw = RawFlow::new(accepted.map_err(FlowError::from)?.0);
            let server = if self.framed {
                BoxFlow::new(raw.into_framed(FramingConfig::new().close_timeout(CLOSE_TIMEOUT)))
            } else {
                BoxFlow::new(raw)
            };
            Ok((client.map_err(other)?, server))
        })
    }
}

flow_conformance!(fc_vsock_dial_raw, FcVsockDial::new(false));
flow_conformance!(fc_vsock_dial_framed, FcVsockDial::new(true));

/// Whether this host can connect AF_VSOCK to itself (CID 1); `Err` says why not.
#[cfg(target_os = "linux")]
fn vsock_loopback() -> Result<(), String> {
    use conflux_hvsock::{Family, FamilyListener, VsockAddr, VsockFamily};
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let listener = VsockFamily
            .listen(&VsockAddr::new(VsockAddr::CID_LOCAL, VsockAddr::PORT_ANY), 4)
            .map_err(|e| format!("cannot bind AF_VSOCK on CID 1: {e}"))?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port;
        let probe = VsockFamily.connect(&VsockAddr::new(VsockAddr::CID_LOCAL, port), Some(Duration::from_millis(300)));
        let (probe, _) =
            tokio::join!(probe, async { tokio::time::timeout(Duration::from_millis(300), listener.accept()).await });
        probe.map(drop).map_err(|e| format!("connect to CID 1 failed: {e}"))
    })
}

/// `vsock-listen://1:0` (port 0 picks one) dialled at its `local_uri()`, raw
/// and framed: every case of the kit, when the host has vsock loopback.
#[cfg(target_os = "linux")]
#[test]
fn vsock_loopback_runs_the_kit() {
    if let Err(why) = vsock_loopback() {
        conflux_testkit::skip!(NoVsockLoopback, "{why}");
    }
    for f in [
        ListenDial::new("vsock-listen://1:0", Caps { abort_resets: false, ..Caps::kernel() }),
        ListenDial::new("vsock-listen://1:0?framing=shutdown", framed(Caps { abort_resets: false, ..Caps::kernel() })),
    ] {
        for case in CaseId::ALL {
            conflux_conformance::run_case(&f, *case);
        }
    }
}

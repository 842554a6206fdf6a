//! The flow conformance kit over the raw and the framed flow, on the Unix,
//! in-memory and hybrid-vsock families, plus G5 (the framed flow closes the
//! socket under it) which the kit does not have yet.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use conflux_conformance::{Caps, FlowFactory, PairFuture, flow_conformance};
use conflux_flow::{FlowError, FlowExt, Shutdown};
use conflux_hvsock::testing::{FakeVmm, MemFamily, MemSocket};
use conflux_hvsock::{
    Family, FamilyListener, FramedFlow, FramingConfig, HybridAddr, HybridFamily, RawFlow, UnixAddr, UnixFamily,
    UnixSocket,
};
use conflux_testkit::{TIMEOUT, within};

use conflux_testkit::TempDir;

/// The close timeout the framed factories use. C5 waits for it when the peer
/// never closes; D1 needs it short: a framed peer's close drains our data until
/// its timeout (we never read its Close), so our writes fail only once it gave up.
const CLOSE_TIMEOUT: Duration = Duration::from_millis(500);

fn framing() -> FramingConfig {
    FramingConfig::new().close_timeout(CLOSE_TIMEOUT)
}

/// Which flow a factory hands out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Raw,
    Framed,
}

/// What the framing changes in the kit's capabilities.
fn framed_caps(base: Caps) -> Caps {
    Caps {
        // Our ShutdownRead marker only reaches a peer that reads.
        peer_sees_read_shutdown: false,
        close_waits_for_peer: true,
        ..base
    }
}

fn io(e: std::io::Error) -> FlowError {
    FlowError::from(e)
}

struct UnixPairs {
    dir: TempDir,
    n: AtomicU32,
}

impl UnixPairs {
    fn new() -> UnixPairs {
        UnixPairs { dir: TempDir::new("kit-unix"), n: AtomicU32::new(0) }
    }

    async fn raw(&self) -> Result<(RawFlow<UnixSocket>, RawFlow<UnixSocket>), FlowError> {
        let addr = UnixAddr::new(self.dir.path().join(format!("s{}", self.n.fetch_add(1, Ordering::Relaxed))));
        let listener = UnixFamily.listen(&addr, 4).map_err(io)?;
        let (c, s) = tokio::join!(UnixFamily.connect(&addr, None), listener.accept());
        let _ = std::fs::remove_file(addr.path().unwrap_or(std::path::Path::new("")));
        Ok((RawFlow::new(c.map_err(io)?), RawFlow::new(s.map_err(io)?.0)))
    }
}

/// Unix sockets have no reset on close (only with unread data), so `abort_resets` is off.
fn unix_caps() -> Caps {
    Caps { abort_resets: false, ..Caps::kernel() }
}

struct RawUnix(UnixPairs);

impl FlowFactory for RawUnix {
    type Flow = RawFlow<UnixSocket>;
    fn caps(&self) -> Caps {
        unix_caps()
    }
    fn pair(&self) -> PairFuture<'_, Self::Flow> {
        Box::pin(self.0.raw())
    }
}

struct FramedUnix(UnixPairs);

impl FlowFactory for FramedUnix {
    type Flow = FramedFlow<UnixSocket>;
    fn caps(&self) -> Caps {
        framed_caps(unix_caps())
    }
    fn pair(&self) -> PairFuture<'_, Self::Flow> {
        Box::pin(async move {
            let (a, b) = self.0.raw().await?;
            Ok((a.into_framed(framing()), b.into_framed(framing())))
        })
    }
}

/// In-memory pairs: deterministic, under tokio's paused clock.
struct Mem(Kind);

fn mem_caps() -> Caps {
    Caps { peer_sees_read_shutdown: true, ..Caps::in_memory() }
}

impl FlowFactory for Mem {
    type Flow = conflux_flow::BoxFlow;
    fn caps(&self) -> Caps {
        if self.0 == Kind::Raw { mem_caps() } else { framed_caps(mem_caps()) }
    }
    fn pair(&self) -> PairFuture<'_, Self::Flow> {
        let kind = self.0;
        Box::pin(async move {
            let (a, b): (MemSocket, MemSocket) = MemFamily::with_capacity(64 * 1024).pair();
            let (a, b) = (RawFlow::new(a), RawFlow::new(b));
            Ok(match kind {
                Kind::Raw => (a.boxed(), b.boxed()),
                Kind::Framed => (a.into_framed(framing()).boxed(), b.into_framed(framing()).boxed()),
            })
        })
    }
}

type HybridSock = UnixSocket<HybridAddr>;

/// Host side through a fake VMM, guest side from its in-process listener.
struct Hybrid {
    dir: TempDir,
    n: AtomicU32,
    kind: Kind,
}

impl Hybrid {
    fn new(kind: Kind) -> Hybrid {
        Hybrid { dir: TempDir::new("kit-hybrid"), n: AtomicU32::new(0), kind }
    }
}

impl FlowFactory for Hybrid {
    type Flow = conflux_flow::BoxFlow;
    fn caps(&self) -> Caps {
        if self.kind == Kind::Raw { unix_caps() } else { framed_caps(unix_caps()) }
    }
    fn pair(&self) -> PairFuture<'_, Self::Flow> {
        Box::pin(async move {
            let path = self.dir.path().join(format!("v{}.sock", self.n.fetch_add(1, Ordering::Relaxed)));
            let vmm = FakeVmm::start(&path).map_err(io)?;
            let guest = vmm.guest_listener(52, 4);
            let (h, g) = tokio::join!(HybridFamily.connect(&vmm.addr(52), None), guest.accept());
            drop(vmm);
            let _ = std::fs::remove_file(&path);
            let (h, g): (RawFlow<HybridSock>, RawFlow<HybridSock>) =
                (RawFlow::new(h.map_err(io)?), RawFlow::new(g.map_err(io)?.0));
            Ok(match self.kind {
                Kind::Raw => (h.boxed(), g.boxed()),
                Kind::Framed => (h.into_framed(framing()).boxed(), g.into_framed(framing()).boxed()),
            })
        })
    }
}

flow_conformance!(raw_unix, RawUnix(UnixPairs::new()));
flow_conformance!(framed_unix, FramedUnix(UnixPairs::new()));
flow_conformance!(raw_mem, Mem(Kind::Raw));
flow_conformance!(framed_mem, Mem(Kind::Framed));
flow_conformance!(raw_hybrid, Hybrid::new(Kind::Raw));
flow_conformance!(framed_hybrid, Hybrid::new(Kind::Framed));

/// G5: the framed flow closes the socket under it on close, and once the
/// close handshake ends after both directions were shut down.
#[tokio::test]
async fn g5_framed_flow_closes_its_socket() {
    let pairs = UnixPairs::new();
    let before = conflux_testkit::open_fds();
    let (a, b) = pairs.raw().await.unwrap();
    let (mut a, mut b) = (a.into_framed(framing()), b.into_framed(framing()));
    a.shutdown(Shutdown::Both).await.unwrap();
    b.shutdown(Shutdown::Both).await.unwrap();
    assert!(!a.is_socket_closed(), "shut down is not closed: the close handshake still needs the socket");
    let (ra, rb) = within("both closes", TIMEOUT, async { tokio::join!(a.close(), b.close()) }).await;
    ra.unwrap();
    rb.unwrap();
    assert!(a.is_socket_closed() && b.is_socket_closed());
    assert!(!a.close_timed_out() && !b.close_timed_out());
    drop((a, b));
    // Other tests of this binary open sockets in parallel: allow for them, but
    // this pair's two descriptors must be gone.
    let after = conflux_testkit::open_fds();
    assert!(after <= before + 8, "descriptors leaked: {before} -> {after}");

    // On close alone (no shutdown first), with a peer that only reads.
    let (a, b) = pairs.raw().await.unwrap();
    let (mut a, mut b) = (a.into_framed(framing()), b.into_framed(framing()));
    let peer = tokio::spawn(async move {
        assert_eq!(b.read().await.unwrap(), None);
        b.close().await.unwrap();
        b.is_socket_closed()
    });
    within("close", TIMEOUT, a.close()).await.unwrap();
    assert!(a.is_socket_closed());
    assert!(within("peer", TIMEOUT, peer).await.unwrap());
}

//! The TCP conformance kit (feature `tcp`): the cases every
//! [`TcpStack`] backend must pass, over a [`TcpFixture`] the backend provides.
//!
//! Each case is an `async fn(&F)` to call from a test on a tokio runtime with
//! time and I/O enabled. Every case checks at its end that the stacks it made
//! have 0 open flows and that the fixture's OS-level resource count (open
//! descriptors, for kernel sockets) is back to where it started, so run the
//! cases where nothing else opens descriptors meanwhile: the `serial` test
//! target (one thread). A case whose fixture lacks a piece (no root for the
//! black hole, say) is reported as a visible skip through `conflux-testkit`.
//!
//! Timing-sensitive cases ([`connect_timeout_black_hole`],
//! [`write_nodelay_waits_for_ack`], [`keepalive_detects_cut_link`]) assert
//! wall-clock bounds: a 300 ms connect timeout returns within 300 +/- 150 ms; a
//! keepalive expiry is seen within the fixture's deadline +/- 1 s.
//!
//! The cases on listeners keyed by address ([`specific_address_takes_only_its_own`],
//! [`unlisten_takes_the_listen_key`], [`two_addresses_share_a_port`],
//! [`specific_address_beside_wildcard`]) are in `tcp/addr.rs`.
//!
//! ```text
//! // In a backend's serial test binary:
//! use conflux_conformance::tcp as kit;
//! #[tokio::test]
//! async fn refused_on_closed_port() {
//!     kit::refused_on_closed_port(&MyFixture::new()).await
//! }
//! ```

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::echo;
use bytes::Bytes;
use conflux_flow::{BoxFlow, FlowError, FlowExt, Shutdown};
use conflux_testkit::{SkipKind, TIMEOUT, current_test_name, payload, report_skip, within};
use tokio::sync::mpsc;

use conflux_tcp::{ConnectError, ConnectOptions, Keepalive, TcpFlow, TcpFlowExt, TcpStack};

mod addr;

pub use addr::{
    specific_address_beside_wildcard, specific_address_takes_only_its_own, two_addresses_share_a_port,
    unlisten_takes_the_listen_key,
};

/// The flow type of a fixture's stacks.
pub type FlowOf<F> = <<F as TcpFixture>::Stack as TcpStack>::Flow;

/// A piece of a fixture that cannot be had here, and why: the case is skipped
/// visibly with this kind and reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailable {
    /// The skip kind (`Root`, `Netns`, `Iproute2`, ...).
    pub kind: SkipKind,
    /// What was missing.
    pub reason: String,
}

impl Unavailable {
    /// A missing piece.
    pub fn new(kind: SkipKind, reason: impl Into<String>) -> Unavailable {
        Unavailable { kind, reason: reason.into() }
    }
}

/// What a backend provides to run the kit.
pub trait TcpFixture: Send + Sync + 'static {
    /// The stack under test.
    type Stack: TcpStack;

    /// A fresh stack (a case makes the ones it needs and disconnects them).
    fn new_stack(&self) -> Self::Stack;

    /// The address at which a stack reaches its own listeners (127.0.0.1, ::1).
    fn local_ip(&self) -> IpAddr;

    /// Another address at which a stack reaches itself (127.0.0.2 beside
    /// 127.0.0.1, say), for the cases on listeners keyed by address.
    fn other_local_ip(&self) -> Result<IpAddr, Unavailable>;

    /// Whether a listener on [`local_ip`](TcpFixture::local_ip) may share a
    /// port with the stack's wildcard listener (`[::]`). The userspace stack
    /// allows it; Linux refuses it (`AddrInUse`), so the kernel backend does.
    fn specific_beside_wildcard(&self) -> bool;

    /// OS-level resources held right now (open descriptors for kernel
    /// sockets), or `None` if the backend holds none.
    fn open_resources(&self) -> Option<usize>;

    /// Bytes written on `flow` that its peer has not acknowledged.
    fn unacked(&self, flow: &FlowOf<Self>) -> Result<usize, FlowError>;

    /// A flow of `stack` with a send buffer of at least 4 MiB, connected to a
    /// peer with a 64 KiB receive buffer that nobody reads until the case
    /// reads the returned peer flow.
    fn slow_reader_pair(
        &self,
        stack: &Self::Stack,
    ) -> impl Future<Output = Result<(FlowOf<Self>, BoxFlow), Unavailable>> + Send;

    /// An address whose SYNs leave and are never answered.
    fn black_hole_addr(&self) -> Result<SocketAddr, Unavailable>;

    /// An address with no route: a connect fails at once.
    fn no_route_addr(&self) -> Result<SocketAddr, Unavailable>;

    /// Our address on the link [`cut_link`](TcpFixture::cut_link) cuts.
    fn link_ip(&self) -> Result<IpAddr, Unavailable>;

    /// Makes a peer across the cuttable link connect to `addr` and echo what it
    /// reads until the connection ends.
    fn remote_connect(&self, addr: SocketAddr) -> impl Future<Output = Result<(), Unavailable>> + Send;

    /// Cuts the link: from now on nothing crosses it, in either direction, and
    /// the peer sends nothing (no RST, no FIN).
    fn cut_link(&self) -> impl Future<Output = ()> + Send;

    /// When this backend declares a silent peer dead under `keepalive`,
    /// counted from the last segment received.
    fn keepalive_deadline(&self, keepalive: &Keepalive) -> Duration;
}

fn skip(u: Unavailable) {
    report_skip(u.kind, &current_test_name("conflux_conformance::tcp"), &u.reason);
}

/// Checks at the end of a case that nothing leaked.
struct LeakCheck {
    resources: Option<usize>,
}

impl LeakCheck {
    fn start<F: TcpFixture>(fx: &F) -> LeakCheck {
        LeakCheck { resources: fx.open_resources() }
    }

    /// [`finish`](LeakCheck::finish) for a case's one stack, then
    /// disconnects it.
    async fn end<F: TcpFixture>(self, fx: &F, stack: &F::Stack) {
        self.finish(fx, &[stack]).await;
        stack.disconnect().await;
    }

    /// Waits (bounded) until every stack has 0 open flows and the OS-level
    /// count is back to its start; panics otherwise.
    async fn finish<F: TcpFixture>(self, fx: &F, stacks: &[&F::Stack]) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let flows: Vec<usize> = stacks.iter().map(|s| s.open_flows()).collect();
            let now = fx.open_resources();
            let resources_ok = match (self.resources, now) {
                (Some(before), Some(now)) => now <= before,
                _ => true,
            };
            if flows.iter().all(|&n| n == 0) && resources_ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "leak: open flows per stack {flows:?}, OS resources {now:?} (before the case: {:?})",
                self.resources
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// A callback that sends every accepted flow to the case.
fn forward<Fl: Send + 'static>()
-> (impl Fn(Fl) -> std::future::Ready<()> + Send + Sync + 'static, mpsc::UnboundedReceiver<Fl>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (
        move |flow| {
            let _ = tx.send(flow);
            std::future::ready(())
        },
        rx,
    )
}

async fn connect<F: TcpFixture>(stack: &F::Stack, addr: SocketAddr) -> FlowOf<F> {
    within("connect", TIMEOUT, stack.create_connection(addr, ConnectOptions::new()))
        .await
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"))
}

/// Listens on port 0 of `stack` and connects to it: the port, the client's
/// flow and the accepted one.
async fn accepted_pair<F: TcpFixture>(fx: &F, stack: &F::Stack) -> (u16, FlowOf<F>, FlowOf<F>) {
    let (cb, mut rx) = forward::<FlowOf<F>>();
    let port = stack.listen(0, None, cb).expect("listen").port();
    let client = connect::<F>(stack, SocketAddr::new(fx.local_ip(), port)).await;
    let server = within("accept", TIMEOUT, rx.recv()).await.expect("a flow");
    (port, client, server)
}

async fn ping<Fl: TcpFlow>(flow: &mut Fl, msg: &'static str) {
    within("write", TIMEOUT, flow.write(msg)).await.expect("write");
    let mut got = Vec::new();
    while got.len() < msg.len() {
        match within("echo", TIMEOUT, flow.read()).await {
            Ok(Some(chunk)) => got.extend_from_slice(&chunk),
            other => panic!("echo of {msg:?} ended early: {other:?}"),
        }
    }
    assert_eq!(got, msg.as_bytes());
}

/// The listener's callback reads exactly the bytes the client wrote; `dst`
/// and `src` agree on both sides.
pub async fn connect_read_exact_and_dst<F: TcpFixture>(fx: &F) {
    let leaks = LeakCheck::start(fx);
    let stack = fx.new_stack();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let listening = stack
        .listen(0, None, move |mut flow: FlowOf<F>| {
            let tx = tx.clone();
            async move {
                let (src, dst) = (flow.src(), flow.dst());
                let data = flow.read_to_end().await;
                let _ = flow.write("done").await;
                let _ = flow.close().await;
                let _ = tx.send((src, dst, data));
            }
        })
        .expect("listen");
    let addr = SocketAddr::new(fx.local_ip(), listening.port());
    let mut client = connect::<F>(&stack, addr).await;
    assert_eq!(client.dst(), addr);
    assert_eq!(client.src().ip(), fx.local_ip());
    let data = payload(3, 200_000);
    within("write", TIMEOUT, client.write(data.clone())).await.expect("write");
    within("shutdown", TIMEOUT, client.shutdown(Shutdown::Write)).await.expect("shutdown");
    let (src, dst, got) = within("callback", TIMEOUT, rx.recv()).await.expect("callback ran");
    assert_eq!(got.expect("server read"), data, "the callback read different bytes");
    assert_eq!(dst, client.src(), "the server's dst is the client's src");
    assert_eq!(src, addr, "the server's src is the address the client dialled");
    assert_eq!(within("reply", TIMEOUT, client.read_to_end()).await.expect("read"), b"done");
    client.close().await.expect("close");
    assert!(stack.unlisten(listening.port()));
    drop(client);
    leaks.end(fx, &stack).await;
}

/// A connect to a port nobody listens on fails with `Refused`.
pub async fn refused_on_closed_port<F: TcpFixture>(fx: &F) {
    let leaks = LeakCheck::start(fx);
    let stack = fx.new_stack();
    let port = stack.listen(0, None, |_flow: FlowOf<F>| async {}).expect("listen").port();
    assert!(stack.unlisten(port));
    let addr = SocketAddr::new(fx.local_ip(), port);
    match within("connect", TIMEOUT, stack.create_connection(addr, ConnectOptions::new())).await {
        Err(e @ ConnectError::Refused { .. }) => {
            assert_eq!(e.addr(), Some(addr), "the error names the address dialled");
            assert!(e.to_string().contains(&addr.to_string()), "{e}");
        }
        Err(e) => panic!("expected Refused, got {e:?}"),
        Ok(_) => panic!("connected to a closed port"),
    }
    leaks.end(fx, &stack).await;
}

/// Connects from a fresh stack to `addr` with `timeout`; returns the
/// result, how long it took, and the stack with its leak check, for the
/// caller to finish.
async fn timed_connect<F: TcpFixture>(
    fx: &F,
    addr: SocketAddr,
    timeout: Duration,
) -> (Result<FlowOf<F>, ConnectError>, Duration, F::Stack, LeakCheck) {
    let leaks = LeakCheck::start(fx);
    let stack = fx.new_stack();
    let started = Instant::now();
    let res = within("connect", TIMEOUT, stack.create_connection(addr, ConnectOptions::new().timeout(timeout))).await;
    (res, started.elapsed(), stack, leaks)
}

/// Against a black hole, a 300 ms connect timeout fails with `Timeout`
/// within 300 +/- 150 ms.
pub async fn connect_timeout_black_hole<F: TcpFixture>(fx: &F) {
    let addr = match fx.black_hole_addr() {
        Ok(a) => a,
        Err(u) => return skip(u),
    };
    let (res, took, stack, leaks) = timed_connect(fx, addr, Duration::from_millis(300)).await;
    match res {
        Err(ConnectError::Timeout { addr: named }) => assert_eq!(named, addr, "the error names the address dialled"),
        other => panic!("expected Timeout, got {:?}", other.err()),
    }
    assert!(
        (Duration::from_millis(150)..=Duration::from_millis(450)).contains(&took),
        "a 300 ms connect timeout took {took:?}"
    );
    leaks.end(fx, &stack).await;
}

/// A connect to an address without a route fails at once with `NoRoute`.
pub async fn no_route_fails_at_once<F: TcpFixture>(fx: &F) {
    let addr = match fx.no_route_addr() {
        Ok(a) => a,
        Err(u) => return skip(u),
    };
    let (res, took, stack, leaks) = timed_connect(fx, addr, Duration::from_secs(5)).await;
    match res {
        Err(ConnectError::NoRoute { addr: named }) => assert_eq!(named, addr, "the error names the address dialled"),
        other => panic!("expected NoRoute, got {:?}", other.err()),
    }
    assert!(took < Duration::from_millis(500), "no route took {took:?}");
    leaks.end(fx, &stack).await;
}

/// Listening on port 0 picks a port, reported by the handle; connects reach it.
pub async fn listen_on_port_zero<F: TcpFixture>(fx: &F) {
    let leaks = LeakCheck::start(fx);
    let stack = fx.new_stack();
    let listening = stack.listen(0, None, echo::<FlowOf<F>>).expect("listen");
    assert_ne!(listening.port(), 0);
    assert_eq!(listening.local_addr().port(), listening.port());
    let mut client = connect::<F>(&stack, SocketAddr::new(fx.local_ip(), listening.port())).await;
    ping(&mut client, "zero").await;
    client.close().await.expect("close");
    drop(client);
    stack.unlisten(listening.port());
    leaks.end(fx, &stack).await;
}

/// The accept-style [`Incoming`](conflux_tcp::Incoming): flows come out of
/// `accept` with the right addresses, a full backlog
/// holds the next flows until accepted (none lost), and dropping it stops
/// the listener (a new connect is refused).
pub async fn incoming_accepts_in_order_and_unlistens_on_drop<F: TcpFixture>(fx: &F) {
    let leaks = LeakCheck::start(fx);
    let stack = fx.new_stack();
    let mut incoming = conflux_tcp::Incoming::bind(&stack, SocketAddr::new(fx.local_ip(), 0), None, 1).expect("listen");
    let addr = incoming.local_addr();
    assert_ne!(addr.port(), 0);
    // Three clients with a backlog of one: two wait beyond the queue.
    let mut clients = Vec::new();
    for msg in ["one", "two", "three"] {
        let mut c = connect::<F>(&stack, addr).await;
        within("write", TIMEOUT, c.write(msg)).await.expect("write");
        clients.push((c, msg));
    }
    let mut seen = Vec::new();
    for _ in 0..clients.len() {
        let mut served = within("accept", TIMEOUT, incoming.accept()).await.expect("a flow");
        assert_eq!(served.src(), addr, "the accepted flow's src is the listening address");
        let chunk = within("read", TIMEOUT, served.read()).await.expect("read").expect("data");
        let (_, msg) = clients.iter().find(|(c, _)| c.src() == served.dst()).expect("a client with this address");
        assert_eq!(&chunk[..], msg.as_bytes());
        seen.push(*msg);
        served.close().await.expect("close");
    }
    seen.sort();
    assert_eq!(seen, ["one", "three", "two"], "every queued flow was accepted once");
    drop(incoming);
    match within("connect", TIMEOUT, stack.create_connection(addr, ConnectOptions::new())).await {
        Err(ConnectError::Refused { .. }) => {}
        Err(e) => panic!("expected Refused once the Incoming was dropped, got {e:?}"),
        Ok(_) => panic!("connected after the Incoming was dropped"),
    }
    for (mut c, _) in clients {
        let _ = c.close().await;
    }
    leaks.end(fx, &stack).await;
}

/// Listening again on a port replaces the listener: only the new callback
/// sees new flows.
pub async fn listeners_replace_each_other<F: TcpFixture>(fx: &F) {
    let leaks = LeakCheck::start(fx);
    let stack = fx.new_stack();
    let (first, mut first_rx) = forward::<FlowOf<F>>();
    let port = stack.listen(0, None, first).expect("listen").port();
    let (second, mut second_rx) = forward::<FlowOf<F>>();
    let again = stack.listen(port, None, second).expect("listen again on the same port");
    assert_eq!(again.port(), port);
    let client = connect::<F>(&stack, SocketAddr::new(fx.local_ip(), port)).await;
    let served = within("the new callback", TIMEOUT, second_rx.recv()).await.expect("a flow");
    assert_eq!(served.dst(), client.src());
    assert!(first_rx.try_recv().is_err(), "the replaced listener's callback saw a flow");
    drop((client, served));
    assert!(stack.unlisten(port));
    assert!(!stack.unlisten(port), "a second unlisten finds nothing");
    leaks.end(fx, &stack).await;
}

/// `unlisten` keeps established flows running, refuses new connections, and
/// no callback fires after it returns.
pub async fn unlisten_keeps_established_refuses_new<F: TcpFixture>(fx: &F) {
    let leaks = LeakCheck::start(fx);
    let stack = fx.new_stack();
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let port = stack
        .listen(0, None, move |flow: FlowOf<F>| {
            c.fetch_add(1, Ordering::SeqCst);
            echo(flow)
        })
        .expect("listen")
        .port();
    let addr = SocketAddr::new(fx.local_ip(), port);
    let mut established = connect::<F>(&stack, addr).await;
    ping(&mut established, "before").await;
    assert!(stack.unlisten(port));
    let calls_at_unlisten = calls.load(Ordering::SeqCst);
    assert_eq!(calls_at_unlisten, 1);
    ping(&mut established, "after unlisten").await;
    match within("connect", TIMEOUT, stack.create_connection(addr, ConnectOptions::new())).await {
        Err(ConnectError::Refused { .. }) => {}
        Err(e) => panic!("expected Refused after unlisten, got {e:?}"),
        Ok(_) => panic!("connected after unlisten"),
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(calls.load(Ordering::SeqCst), calls_at_unlisten, "a callback fired after unlisten returned");
    ping(&mut established, "still").await;
    established.close().await.expect("close");
    drop(established);
    leaks.end(fx, &stack).await;
}

/// listen -> disconnect -> listen on the same port (on a new stack) works;
/// the disconnected stack refuses connects and listens with `Disconnected`,
/// and its flows were closed gracefully.
pub async fn listen_disconnect_listen_same_port<F: TcpFixture>(fx: &F) {
    let leaks = LeakCheck::start(fx);
    let stack = fx.new_stack();
    let port = stack.listen(0, None, echo::<FlowOf<F>>).expect("listen").port();
    let addr = SocketAddr::new(fx.local_ip(), port);
    let mut client = connect::<F>(&stack, addr).await;
    ping(&mut client, "one").await;
    within("disconnect", TIMEOUT, stack.disconnect()).await;
    // Our flow was shut down gracefully: Eof (or an error), never data, never a hang.
    match within("read after disconnect", TIMEOUT, client.read()).await {
        Ok(None) | Err(_) => {}
        Ok(Some(chunk)) => panic!("read {chunk:?} after disconnect"),
    }
    drop(client);
    match stack.create_connection(addr, ConnectOptions::new()).await {
        Err(ConnectError::Disconnected) => {}
        other => panic!("expected Disconnected, got {:?}", other.err()),
    }
    assert!(matches!(stack.listen(0, None, echo::<FlowOf<F>>), Err(conflux_tcp::ListenError::Disconnected)));

    let again = fx.new_stack();
    let listening = again.listen(port, None, echo::<FlowOf<F>>).expect("listen again on the same port");
    assert_eq!(listening.port(), port);
    let mut client = connect::<F>(&again, addr).await;
    ping(&mut client, "two").await;
    client.close().await.expect("close");
    drop(client);
    within("disconnect", TIMEOUT, again.disconnect()).await;
    leaks.finish(fx, &[&stack, &again]).await;
}

/// A callback that panics has its flow closed; the stack keeps serving.
pub async fn panicking_callback_closes_its_flow<F: TcpFixture>(fx: &F) {
    let leaks = LeakCheck::start(fx);
    let stack = fx.new_stack();
    let port = stack
        .listen(0, None, |mut flow: FlowOf<F>| async move {
            let first = flow.read().await;
            if matches!(&first, Ok(Some(b)) if b.starts_with(b"panic")) {
                panic!("a listen callback panicking on purpose (conflux-tcp kit)");
            }
            if let Ok(Some(chunk)) = first {
                let _ = flow.write(chunk).await;
            }
            echo(flow).await
        })
        .expect("listen")
        .port();
    let addr = SocketAddr::new(fx.local_ip(), port);
    let mut doomed = connect::<F>(&stack, addr).await;
    within("write", TIMEOUT, doomed.write("panic")).await.expect("write");
    match within("read from a flow whose callback panicked", TIMEOUT, doomed.read()).await {
        Ok(None) | Err(_) => {}
        Ok(Some(chunk)) => panic!("read {chunk:?} from a flow whose callback panicked"),
    }
    drop(doomed);
    let mut fine = connect::<F>(&stack, addr).await;
    ping(&mut fine, "still serving").await;
    fine.close().await.expect("close");
    drop(fine);
    stack.unlisten(port);
    leaks.end(fx, &stack).await;
}

/// A write after `shutdown(Write)` is `Closed`; the peer reads everything
/// before, then Eof, which is not an expiry.
pub async fn write_after_shutdown_is_closed<F: TcpFixture>(fx: &F) {
    let leaks = LeakCheck::start(fx);
    let stack = fx.new_stack();
    let (port, mut client, mut server) = accepted_pair(fx, &stack).await;
    client.write("last words").await.expect("write");
    client.shutdown(Shutdown::Write).await.expect("shutdown");
    let err = client.write("more").await.expect_err("a write after shutdown(Write)");
    assert!(err.is_closed(), "expected Closed, got {err}");
    assert_eq!(within("read", TIMEOUT, server.read_to_end()).await.expect("read"), b"last words");
    assert!(!server.expired(), "the peer's FIN read as a keepalive expiry");
    drop((client, server));
    stack.unlisten(port);
    leaks.end(fx, &stack).await;
}

/// A peer's abort reaches us as an error with `is_reset()`, never as Eof.
pub async fn peer_abort_is_reset<F: TcpFixture>(fx: &F) {
    let leaks = LeakCheck::start(fx);
    let stack = fx.new_stack();
    let (port, mut client, mut server) = accepted_pair(fx, &stack).await;
    client.write("x").await.expect("write");
    assert_eq!(within("read", TIMEOUT, server.read()).await.expect("read").as_deref(), Some(&b"x"[..]));
    server.abort().await.expect("abort");
    let err = within("read after the peer's abort", TIMEOUT, client.read()).await.expect_err("a reset, not Eof");
    assert!(err.is_reset(), "expected a reset, got {err}");
    drop((client, server));
    stack.unlisten(port);
    leaks.end(fx, &stack).await;
}

/// `write_nodelay` completes only once the peer acknowledged every byte (a
/// stub that returns when the bytes are accepted fails this).
///
/// Shape: the peer has a 64 KiB receive buffer and does not read, our send
/// buffer is >= 4 MiB. A plain 1 MiB write returns at once with unacknowledged
/// bytes; a 1 MiB `write_nodelay` is still pending after 200 ms and completes,
/// with nothing unacknowledged, once the peer drains.
pub async fn write_nodelay_waits_for_ack<F: TcpFixture>(fx: &F) {
    let leaks = LeakCheck::start(fx);
    let stack = fx.new_stack();
    let (mut ours, mut peer) = match fx.slow_reader_pair(&stack).await {
        Ok(pair) => pair,
        Err(u) => return skip(u),
    };
    const MIB: usize = 1 << 20;
    let started = Instant::now();
    within("a plain 1 MiB write", Duration::from_secs(1), ours.write(payload(10, MIB))).await.expect("write");
    let took = started.elapsed();
    let unacked = fx.unacked(&ours).expect("unacked");
    assert!(took < Duration::from_millis(200), "a plain 1 MiB write into a 4 MiB buffer took {took:?}");
    assert!(unacked > 0, "the peer does not read, yet nothing is unacknowledged");

    let nodelay = ours.write_nodelay(payload(11, MIB));
    tokio::pin!(nodelay);
    let early = tokio::time::timeout(Duration::from_millis(200), &mut nodelay).await;
    assert!(early.is_err(), "write_nodelay returned {early:?} while the peer had not read");

    let drain = async {
        let mut n = 0;
        while n < 2 * MIB {
            match peer.read().await {
                Ok(Some(chunk)) => n += chunk.len(),
                other => panic!("peer read ended after {n} bytes: {other:?}"),
            }
        }
        n
    };
    let (res, drained) =
        within("write_nodelay once the peer drains", TIMEOUT, async { tokio::join!(&mut nodelay, drain) }).await;
    res.expect("write_nodelay");
    assert_eq!(drained, 2 * MIB);
    assert_eq!(fx.unacked(&ours).expect("unacked"), 0, "write_nodelay returned with unacknowledged bytes");
    // An empty write_nodelay waits for nothing.
    within("empty write_nodelay", TIMEOUT, ours.write_nodelay(Bytes::new())).await.expect("empty write_nodelay");
    ours.close().await.expect("close");
    drop((ours, peer));
    leaks.end(fx, &stack).await;
}

/// Keepalive detects a cut link for real: keepalive (1 s, 1 s, 3), the link
/// is cut, the blocked read returns Eof (and the flow says it `expired`) and
/// a write returns `Closed`, within the fixture's deadline +/- 1 s.
pub async fn keepalive_detects_cut_link<F: TcpFixture>(fx: &F) {
    let link_ip = match fx.link_ip() {
        Ok(ip) => ip,
        Err(u) => return skip(u),
    };
    let leaks = LeakCheck::start(fx);
    let stack = fx.new_stack();
    let ka = Keepalive::new(Duration::from_secs(1), Duration::from_secs(1), 3);
    let (cb, mut rx) = forward::<FlowOf<F>>();
    let port = stack.listen(0, Some(ka), cb).expect("listen").port();
    if let Err(u) = fx.remote_connect(SocketAddr::new(link_ip, port)).await {
        stack.disconnect().await;
        return skip(u);
    }
    let mut flow = within("the remote's connection", TIMEOUT, rx.recv()).await.expect("a flow");
    stack.unlisten(port);
    ping(&mut flow, "alive?").await;
    fx.cut_link().await;
    let cut_at = Instant::now();
    let deadline = fx.keepalive_deadline(&ka);
    let res = within("the keepalive expiry", deadline + Duration::from_secs(10), flow.read()).await;
    let took = cut_at.elapsed();
    assert!(matches!(res, Ok(None)), "expected Eof on keepalive expiry, got {res:?}");
    assert!(flow.expired(), "the keepalive expiry's Eof not told apart from a FIN");
    let lo = deadline.saturating_sub(Duration::from_secs(1));
    let hi = deadline + Duration::from_secs(1);
    assert!((lo..=hi).contains(&took), "keepalive expiry after {took:?}, expected {deadline:?} +/- 1 s");
    let err = flow.write("anyone?").await.expect_err("a write after keepalive expiry");
    assert!(err.is_closed(), "expected Closed, got {err}");
    drop(flow);
    leaks.end(fx, &stack).await;
}

//! A stack whose device fails (its receive or its send returns an error, as a
//! removed TAP or a closed hypervisor carrier does) stops at once: a flow
//! blocked in read or write, a connect in progress, an `Incoming` and a UDP
//! socket waiting on it all fail promptly with the device's error; later
//! connects, listens, binds and sends fail at once; bytes received before
//! the failure are still read first. In virtual time, each wait bounded: a
//! stack that never wakes its waiters fails these tests instead of hanging.

mod support;

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use conflux_flow::{FlowError, FlowExt};
use conflux_netstack::StackConfig;
use conflux_netstack::{
    DeviceCaps, DeviceError, DhcpWaitError, FrameBuf, FrameDevice, FramePool, LinkConfig, LinkEnd, NetFlow, NetStack,
    UdpError, link_pair,
};
use conflux_tcp::{ConnectError, ConnectOptions, Incoming, ListenError, TcpFlowExt, TcpStack};
use support::{B4, addr, listen_into, side};

/// How long anything may take once the device failed (virtual time: the
/// fixed stack answers at once; one that never wakes its waiters runs into it).
const PROMPT: Duration = Duration::from_millis(100);
/// The text every error must name.
const CAUSE: &str = "the test pulled the plug";

/// Which of the device's polls fails once the plug is pulled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fails {
    Recv,
    Send,
}

#[derive(Default)]
struct PlugState {
    pulled: Option<Fails>,
    /// Received frames are dropped.
    deaf: bool,
    /// The driver's last waker, woken when the plug is pulled.
    waker: Option<Waker>,
}

/// The test's handle on a [`Pluggable`] device.
#[derive(Clone, Default)]
struct Plug(Arc<Mutex<PlugState>>);

impl Plug {
    /// From now on the device's `which` poll fails.
    fn pull(&self, which: Fails) {
        let mut st = self.0.lock().unwrap();
        st.pulled = Some(which);
        if let Some(w) = st.waker.take() {
            w.wake();
        }
    }

    /// From now on received frames are dropped (the device itself still works).
    fn deafen(&self) {
        self.0.lock().unwrap().deaf = true;
    }

    fn is_deaf(&self) -> bool {
        self.0.lock().unwrap().deaf
    }

    fn check(&self, cx: &Context<'_>, poll: Fails) -> io::Result<()> {
        let mut st = self.0.lock().unwrap();
        st.waker = Some(cx.waker().clone());
        match st.pulled {
            Some(which) if which == poll => Err(io::Error::new(io::ErrorKind::BrokenPipe, CAUSE)),
            _ => Ok(()),
        }
    }
}

/// A memory link's end whose receive or send fails once its [`Plug`] is pulled.
struct Pluggable {
    inner: LinkEnd,
    plug: Plug,
}

impl FrameDevice for Pluggable {
    fn caps(&self) -> DeviceCaps {
        self.inner.caps()
    }
    fn set_pool(&mut self, pool: FramePool) {
        self.inner.set_pool(pool)
    }
    fn poll_recv(&mut self, cx: &mut Context<'_>, frames: &mut Vec<FrameBuf>, max: usize) -> Poll<io::Result<()>> {
        self.plug.check(cx, Fails::Recv)?;
        if self.plug.is_deaf() {
            let mut dropped = Vec::new();
            while let Poll::Ready(r) = self.inner.poll_recv(cx, &mut dropped, 64) {
                r?;
                dropped.clear();
            }
            return Poll::Pending;
        }
        self.inner.poll_recv(cx, frames, max)
    }
    fn poll_send_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.plug.check(cx, Fails::Send)?;
        self.inner.poll_send_ready(cx)
    }
    fn send(&mut self, frame: FrameBuf) -> io::Result<()> {
        self.inner.send(frame)
    }
    fn poll_send_batch(&mut self, cx: &mut Context<'_>, frames: &mut VecDeque<FrameBuf>) -> Poll<io::Result<()>> {
        self.plug.check(cx, Fails::Send)?;
        self.inner.poll_send_batch(cx, frames)
    }
}

/// Stack A (10.0.0.1) on a pluggable device, stack B (10.0.0.2) on a plain
/// one, B listening: its accepted flows go to the returned receiver.
fn setup() -> (NetStack, NetStack, Plug, u16, tokio::sync::mpsc::UnboundedReceiver<NetFlow>) {
    let (a, b) = link_pair(LinkConfig::ethernet());
    let plug = Plug::default();
    let a = NetStack::new(side(true), Pluggable { inner: a, plug: plug.clone() });
    let b = NetStack::new(side(false), b);
    let (port, rx) = listen_into(&b, 0, None).unwrap();
    (a, b, plug, port, rx)
}

/// `fut`'s output within [`PROMPT`], or a failure naming `what`.
async fn prompt<F: std::future::Future>(what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(PROMPT, fut).await {
        Ok(out) => out,
        Err(_) => panic!("{what}: still waiting {PROMPT:?} after the device failed"),
    }
}

/// The error is a reset whose source is the device's error, naming its cause.
fn assert_device_flow_error(e: &FlowError) {
    assert!(e.is_reset(), "a reset: {e:?}");
    assert!(e.to_string().contains(CAUSE), "names the cause: {e}");
    let dev = e.get_ref().and_then(|s| s.downcast_ref::<DeviceError>()).expect("the DeviceError as the source");
    assert_eq!(dev.kind, io::ErrorKind::BrokenPipe);
}

fn assert_names_device(e: &dyn std::error::Error) {
    let chain: Vec<String> = std::iter::successors(Some(e), |e| e.source()).map(ToString::to_string).collect();
    let all = chain.join(": ");
    assert!(all.contains("device failed") && all.contains(CAUSE), "names the device's failure: {all}");
}

#[tokio::test(start_paused = true)]
async fn a_blocked_read_fails_after_the_bytes_already_received() {
    let (a, _b, plug, port, mut accepted) = setup();
    let mut flow = a.create_connection(addr(B4, port), ConnectOptions::new()).await.unwrap();
    let mut idle = a.create_connection(addr(B4, port), ConnectOptions::new()).await.unwrap();
    let mut server = accepted.recv().await.unwrap();
    let _idle_server = accepted.recv().await.unwrap();
    server.write(Bytes::from_static(b"delivered")).await.unwrap();
    // Acknowledged by A: the bytes sit in A's receive buffer.
    while server.unacked().unwrap() > 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // A read blocked on a flow with nothing to read.
    let blocked = tokio::spawn(async move { idle.read().await });
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(!blocked.is_finished());

    let a2 = a.clone();
    let told = tokio::spawn(async move { a2.device_error().await });
    plug.pull(Fails::Recv);
    let e = prompt("the blocked read", blocked).await.unwrap().unwrap_err();
    assert_device_flow_error(&e);
    let dev = prompt("device_error", told).await.unwrap();
    assert_eq!((dev.kind, dev.message.as_str()), (io::ErrorKind::BrokenPipe, CAUSE));
    assert_eq!(dev.to_string(), format!("the stack's device failed: {CAUSE}"));
    assert_eq!(prompt("device_error again", a.device_error()).await, dev);
    // The bytes received before the failure first, then the error, again on the next read.
    let got = prompt("the buffered bytes", flow.read()).await.unwrap();
    assert_eq!(got.as_deref(), Some(&b"delivered"[..]));
    assert_device_flow_error(&prompt("the read after them", flow.read()).await.unwrap_err());
    assert_device_flow_error(&prompt("a second read", flow.read()).await.unwrap_err());
    // Writes fail at once; closing is still fine.
    assert_device_flow_error(&prompt("a write", flow.write(Bytes::from_static(b"x"))).await.unwrap_err());
    prompt("close", flow.close()).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_blocked_write_fails() {
    let (a, _b, plug, port, mut accepted) = setup();
    let mut flow = a.create_connection(addr(B4, port), ConnectOptions::new()).await.unwrap();
    // The server never reads: its window and then our send buffer fill.
    let _server = accepted.recv().await.unwrap();
    let writer = tokio::spawn(async move {
        let chunk = Bytes::from(vec![7u8; 64 * 1024]);
        loop {
            if let Err(e) = flow.write(chunk.clone()).await {
                return e;
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!writer.is_finished(), "the write is blocked");

    plug.pull(Fails::Recv);
    assert_device_flow_error(&prompt("the blocked write", writer).await.unwrap());
}

#[tokio::test(start_paused = true)]
async fn write_nodelay_waiting_for_its_acknowledgment_fails() {
    let (a, _b, plug, port, mut accepted) = setup();
    let mut flow = a.create_connection(addr(B4, port), ConnectOptions::new()).await.unwrap();
    let _server = accepted.recv().await.unwrap();
    // Nothing reaches A any more: its bytes stay unacknowledged.
    plug.deafen();
    let waiting = tokio::spawn(async move { flow.write_nodelay(Bytes::from_static(b"ack me")).await });
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(!waiting.is_finished(), "waits for the acknowledgment");
    plug.pull(Fails::Recv);
    assert_device_flow_error(&prompt("write_nodelay", waiting).await.unwrap().unwrap_err());
}

#[tokio::test(start_paused = true)]
async fn a_dhcp_lease_waiter_fails() {
    let (ours, _theirs) = link_pair(LinkConfig::ethernet());
    let plug = Plug::default();
    let stack = NetStack::new(
        StackConfig::new().mac([2, 0, 0, 0, 0, 1]).dhcpv4(),
        Pluggable { inner: ours, plug: plug.clone() },
    );
    let s = stack.clone();
    // No server answers: the waiter waits.
    let waiting = tokio::spawn(async move { s.wait_dhcpv4_lease().await });
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(!waiting.is_finished());
    plug.pull(Fails::Recv);
    let e = prompt("the lease waiter", waiting).await.unwrap().unwrap_err();
    assert!(matches!(e, DhcpWaitError::DeviceFailed(_)), "{e:?}");
    assert_names_device(&e);
    assert!(matches!(prompt("a later wait", stack.wait_dhcpv4_lease()).await, Err(DhcpWaitError::DeviceFailed(_))));
}

#[tokio::test(start_paused = true)]
async fn a_failing_send_stops_the_stack_too() {
    let (a, _b, plug, port, mut accepted) = setup();
    let flow = a.create_connection(addr(B4, port), ConnectOptions::new()).await.unwrap();
    let _server = accepted.recv().await.unwrap();
    let (mut r, mut w) = flow.split();
    let blocked = tokio::spawn(async move { r.read().await });
    tokio::time::sleep(Duration::from_millis(10)).await;
    plug.pull(Fails::Send);
    // The next frame out fails the device (this write was accepted before).
    w.write(Bytes::from_static(b"into the void")).await.unwrap();
    assert_device_flow_error(&prompt("the blocked read", blocked).await.unwrap().unwrap_err());
    assert_device_flow_error(&prompt("a write", w.write(Bytes::from_static(b"x"))).await.unwrap_err());
}

#[tokio::test(start_paused = true)]
async fn a_connect_in_progress_fails_and_later_ones_fail_at_once() {
    let (a, _b, plug, port, _accepted) = setup();
    // An address on the link that nobody has: no ARP answer, the SYN waits.
    let a2 = a.clone();
    let unanswered =
        tokio::spawn(
            async move { a2.create_connection(addr("10.0.0.77", port), ConnectOptions::new()).await.map(drop) },
        );
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(!unanswered.is_finished());
    plug.pull(Fails::Recv);
    let e = prompt("the connect in progress", unanswered).await.unwrap().unwrap_err();
    assert!(matches!(e, ConnectError::Other { .. }), "{e:?}");
    assert_names_device(&e);

    let e = prompt("a new connect", a.create_connection(addr(B4, port), ConnectOptions::new())).await.unwrap_err();
    assert!(matches!(e, ConnectError::Other { .. }), "{e:?}");
    assert_names_device(&e);
    assert_eq!(e.addr(), Some(addr(B4, port)));
}

#[tokio::test(start_paused = true)]
async fn listening_after_the_failure_errors_and_a_waiting_incoming_ends() {
    let (a, _b, plug, _port, _accepted) = setup();
    let mut incoming = Incoming::bind(&a, addr("0.0.0.0", 8080), None, 8).unwrap();
    let waiting = tokio::spawn(async move { incoming.accept().await.is_none() });
    let mut intercept = a.intercept(Vec::new(), None).unwrap();
    let intercepting = tokio::spawn(async move { intercept.next().await.is_none() });
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(!waiting.is_finished() && !intercepting.is_finished());
    plug.pull(Fails::Recv);
    assert!(prompt("the waiting accept", waiting).await.unwrap(), "the listener ended: accept returns None");
    assert!(prompt("the intercept", intercepting).await.unwrap(), "the intercept ended: next returns None");
    let e = a.listen(8081, None, |_flow| async {}).unwrap_err();
    assert!(matches!(e, ListenError::Other(_)), "{e:?}");
    assert_names_device(&e);
    let e = a.intercept(Vec::new(), None).unwrap_err();
    assert_names_device(&e);
}

#[tokio::test(start_paused = true)]
async fn udp_receives_what_came_then_fails_and_sends_fail() {
    let (a, b, plug, _port, _accepted) = setup();
    let sock = Arc::new(a.udp_bind(addr("0.0.0.0", 5000)).unwrap());
    let other = a.udp_bind(addr("0.0.0.0", 5001)).unwrap();
    let peer = b.udp_bind(addr("0.0.0.0", 0)).unwrap();
    peer.send_to(b"came before", addr(support::A4, 5001)).await.unwrap();
    let s = sock.clone();
    let blocked = tokio::spawn(async move { s.recv_from().await });
    // The datagram to 5001 arrives and waits in its queue.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!blocked.is_finished());

    plug.pull(Fails::Recv);
    let e = prompt("the blocked receive", blocked).await.unwrap().unwrap_err();
    assert!(matches!(&e, UdpError::DeviceFailed(d) if d.message == CAUSE), "{e:?}");
    assert_names_device(&e);
    let (data, _) = prompt("the queued datagram", other.recv_from()).await.unwrap();
    assert_eq!(&data[..], b"came before");
    assert!(matches!(prompt("a receive after it", other.recv_from()).await, Err(UdpError::DeviceFailed(_))));
    let sent = prompt("a send", sock.send_to(b"x", addr(B4, 9))).await;
    assert!(matches!(sent, Err(UdpError::DeviceFailed(_))), "{sent:?}");
    assert!(matches!(a.udp_bind(addr("0.0.0.0", 0)), Err(UdpError::DeviceFailed(_))));
}

#[tokio::test(start_paused = true)]
async fn a_held_syns_accept_in_its_handshake_fails() {
    let (a, b) = link_pair(LinkConfig::ethernet());
    let plug = Plug::default();
    let a = NetStack::new(side(true), Pluggable { inner: a, plug: plug.clone() });
    // B routes everything else through A.
    let b = NetStack::new(side(false).gateway_v4(support::A4.parse().unwrap()), b);
    let mut intercept = a.intercept(Vec::new(), None).unwrap();
    let b2 = b.clone();
    let _dialling =
        tokio::spawn(async move { b2.create_connection(addr("192.0.2.1", 80), ConnectOptions::new()).await });
    let syn = prompt("the held SYN", intercept.next()).await.expect("a held SYN");
    // B's answer to our SYN-ACK never arrives: the handshake stays open.
    plug.deafen();
    let accepting = tokio::spawn(syn.accept());
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(!accepting.is_finished(), "the handshake is under way");
    plug.pull(Fails::Recv);
    let e = prompt("the accept", accepting).await.unwrap().unwrap_err();
    assert!(matches!(e, ConnectError::Other { .. }), "{e:?}");
    assert_names_device(&e);
}

//! The TCP forwarder against the host kernel on 127.0.0.1: a guest flow (an
//! in-memory pipe end standing in for the userspace stack's flow) to the
//! gateway reaches a server on the host's loopback.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use conflux_flow::{FlowExt, Shutdown, pipe};
use conflux_tcp_host::HostStack;
use conflux_testkit::within;
use conflux_usernet::{FlowEnd, ForwardError, Policy, Refusal, Stats, TcpForwarder, UsernetConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

fn forwarder() -> TcpForwarder<HostStack> {
    let config = UsernetConfig::new().host_loopback(true).allow("127.0.0.0/8".parse().unwrap());
    TcpForwarder::new(Policy::new(&config), HostStack::new(), Arc::new(Stats::default()))
}

/// The gateway address on the port of `server`.
fn via_gateway(server: SocketAddr) -> SocketAddr {
    SocketAddr::from(([10, 0, 2, 2], server.port()))
}

const GUEST: &str = "10.0.2.100:40000";

#[tokio::test]
async fn data_and_half_close_pass_both_ways() {
    let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = server.local_addr().unwrap();
    // The host-side server reads to Eof, then answers and closes.
    let served = tokio::spawn(async move {
        let (mut s, _) = server.accept().await.unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        s.write_all(format!("got {} bytes", got.len()).as_bytes()).await.unwrap();
        got
    });
    let fwd = Arc::new(forwarder());
    let (mut guest, stack_side) = pipe(64 * 1024);
    let host_flow = within("connect", Duration::from_secs(5), fwd.connect(GUEST.parse().unwrap(), via_gateway(addr)))
        .await
        .expect("the gateway reaches the host's loopback");
    let relay = tokio::spawn({
        let fwd = fwd.clone();
        async move { fwd.relay(stack_side, host_flow, GUEST.parse().unwrap(), via_gateway(addr)).await }
    });
    assert_eq!(fwd.stats().snapshot().refused, 0);
    guest.write(vec![7u8; 100_000]).await.unwrap();
    guest.shutdown(Shutdown::Write).await.unwrap();
    // The guest's FIN reached the server as Eof; its answer still comes back.
    let answer = within("answer", Duration::from_secs(5), guest.read_to_end()).await.unwrap();
    assert_eq!(answer, b"got 100000 bytes");
    assert_eq!(within("server", Duration::from_secs(5), served).await.unwrap(), vec![7u8; 100_000]);
    let relayed = within("relay", Duration::from_secs(5), relay).await.unwrap();
    assert!(matches!(relayed.end, FlowEnd::Closed), "{:?}", relayed.end);
    assert_eq!((relayed.out, relayed.inn), (100_000, 16));
    let s = fwd.stats().snapshot();
    assert_eq!((s.flows_open, s.flows_total, s.bytes_out, s.bytes_in), (0, 1, 100_000, 16));
}

#[tokio::test]
async fn a_closed_host_port_is_refused_at_once() {
    // A port nothing listens on: bound, then dropped.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let fwd = forwarder();
    let err = within("connect", Duration::from_secs(5), fwd.connect(GUEST.parse().unwrap(), via_gateway(closed)))
        .await
        .expect_err("nothing listens");
    assert!(matches!(err, ForwardError::Connect(conflux_tcp::ConnectError::Refused { .. })), "{err}");
    assert_eq!(fwd.stats().snapshot().refused, 1);
}

#[tokio::test]
async fn the_policy_refuses_before_anything_is_dialled() {
    let fwd = forwarder();
    // Outside --allow: refused by the policy, never dialled (192.0.2.0/24 is
    // TEST-NET-1; the forwarder must not even try).
    let dst: SocketAddr = "192.0.2.1:80".parse().unwrap();
    let err = fwd.connect(GUEST.parse().unwrap(), dst).await.expect_err("outside --allow");
    assert!(matches!(err, ForwardError::Refused(Refusal::NotAllowed { .. })), "{err}");
    assert!(err.to_string().contains("192.0.2.1:80"), "{err}");
    // Without --host-loopback, the gateway is closed.
    let closed = TcpForwarder::new(Policy::new(&UsernetConfig::new()), HostStack::new(), Arc::new(Stats::default()));
    let err = closed.connect(GUEST.parse().unwrap(), "10.0.2.2:22".parse().unwrap()).await.expect_err("gateway");
    assert!(matches!(err, ForwardError::Refused(Refusal::Gateway { .. })), "{err}");
    assert_eq!((fwd.stats().snapshot().refused, closed.stats().snapshot().refused), (1, 1));
}

#[tokio::test]
async fn a_host_reset_reaches_the_guest_as_a_reset() {
    let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = server.local_addr().unwrap();
    tokio::spawn(async move {
        let (s, _) = server.accept().await.unwrap();
        let mut buf = [0u8; 5];
        let mut s = s;
        s.read_exact(&mut buf).await.unwrap();
        // Linger 0: close sends an RST.
        socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO)).unwrap();
        drop(s);
    });
    let fwd = Arc::new(forwarder());
    let (mut guest, stack_side) = pipe(64 * 1024);
    let host_flow = fwd.connect(GUEST.parse().unwrap(), via_gateway(addr)).await.unwrap();
    let relay = tokio::spawn({
        let fwd = fwd.clone();
        async move { fwd.relay(stack_side, host_flow, GUEST.parse().unwrap(), via_gateway(addr)).await }
    });
    guest.write("hello").await.unwrap();
    let err = within("read", Duration::from_secs(5), guest.read()).await.expect_err("a reset, not Eof");
    assert!(err.is_reset(), "{err}");
    let relayed = within("relay", Duration::from_secs(5), relay).await.unwrap();
    assert!(matches!(&relayed.end, FlowEnd::Failed(e) if e.source.is_reset()), "{:?}", relayed.end);
    assert_eq!(fwd.stats().snapshot().flows_open, 0);
}

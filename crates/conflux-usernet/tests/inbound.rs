//! Inbound port forwards: a kernel client on 127.0.0.1 reaches a server on
//! a guest stack (an in-memory link between two userspace stacks: the
//! forwarder's at the gateway address, the guest's at 10.0.2.100).

use std::sync::Arc;
use std::time::Duration;

use conflux_flow::FlowExt;
use conflux_netstack::{LinkConfig, NetStack, StackConfig, link_pair};
use conflux_tcp::TcpStack;
use conflux_tcp_host::HostStack;
use conflux_testkit::within;
use conflux_usernet::{Stats, TcpPortForward};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// (the forwarder's stack at 10.0.2.2, the guest's at 10.0.2.100).
fn stacks() -> (NetStack, NetStack) {
    let (a, b) = link_pair(LinkConfig::ethernet());
    let gateway = NetStack::new(StackConfig::new().ipv4("10.0.2.2".parse().unwrap(), 24).mac([2, 0, 0, 0, 0, 2]), a);
    let guest = NetStack::new(StackConfig::new().ipv4("10.0.2.100".parse().unwrap(), 24).mac([2, 0, 0, 0, 0, 0x64]), b);
    (gateway, guest)
}

/// A forward from an ephemeral port on 127.0.0.1 to `to` through `gateway`.
fn forward(gateway: NetStack, to: &str) -> (TcpPortForward<HostStack, NetStack>, Arc<Stats>) {
    let stats = Arc::new(Stats::default());
    let fwd = TcpPortForward::bind(
        &HostStack::new(),
        "127.0.0.1:0".parse().unwrap(),
        gateway,
        to.parse().unwrap(),
        stats.clone(),
    )
    .unwrap();
    (fwd, stats)
}

#[tokio::test]
async fn a_host_connection_reaches_the_guest_server_and_half_closes() {
    let (gateway, guest) = stacks();
    // The guest's server: reads to Eof, answers with the count, closes.
    guest
        .listen(80, None, |mut flow| async move {
            let got = flow.read_to_end().await.unwrap_or_default();
            let _ = flow.write(format!("guest got {}", got.len())).await;
            let _ = flow.close().await;
        })
        .unwrap();
    let (fwd, stats) = forward(gateway, "10.0.2.100:80");
    let addr = fwd.local_addr();
    assert!(addr.ip().is_loopback() && addr.port() != 0);
    let serving = tokio::spawn(fwd.serve());
    for round in 0..3 {
        let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
        client.write_all(&vec![1u8; 50_000]).await.unwrap();
        client.shutdown().await.unwrap();
        let mut answer = String::new();
        within("answer", Duration::from_secs(10), client.read_to_string(&mut answer)).await.unwrap();
        assert_eq!(answer, "guest got 50000", "round {round}");
    }
    within("flows closed", Duration::from_secs(10), async {
        while stats.snapshot().flows_open != 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let s = stats.snapshot();
    assert_eq!((s.flows_total, s.bytes_in, s.bytes_out, s.refused), (3, 150_000, 45, 0));
    serving.abort();
}

#[tokio::test]
async fn a_refusing_guest_port_resets_the_host_connection() {
    let (gateway, _guest) = stacks();
    let (fwd, stats) = forward(gateway, "10.0.2.100:81");
    let addr = fwd.local_addr();
    let serving = tokio::spawn(fwd.serve());
    let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut buf = [0u8; 16];
    let read = within("read", Duration::from_secs(10), client.read(&mut buf)).await;
    let err = read.expect_err("a reset, not a clean end");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
    assert_eq!(stats.snapshot().refused, 1);
    serving.abort();
}

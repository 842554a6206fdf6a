//! Inbound port forwards: a kernel client on 127.0.0.1 reaches a server on
//! a guest stack (an in-memory link between two userspace stacks: the
//! forwarder's at the gateway address, the guest's at 10.0.2.100), over
//! TCP and UDP.

use std::sync::Arc;
use std::time::Duration;

use conflux_flow::FlowExt;
use conflux_netstack::{LinkConfig, NetStack, StackConfig, link_pair};
use conflux_tcp::TcpStack;
use conflux_tcp_host::HostStack;
use conflux_testkit::within;
use conflux_usernet::{Stats, TcpPortForward, Usernet, UsernetConfig};
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
        None,
        gateway,
        to.parse().unwrap(),
        None,
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

/// `-p udp:PORT:5353` through a whole forwarder ([`Usernet::spawn`]): each
/// host peer's datagrams reach the guest from a gateway port of its own,
/// the same one for every datagram of that peer, and the guest's answers
/// go back to the peer that asked; the counters see both ways.
#[tokio::test]
async fn a_udp_forward_gives_each_host_peer_its_own_gateway_port() {
    let (ours, theirs) = link_pair(LinkConfig::ethernet());
    let guest =
        NetStack::new(StackConfig::new().ipv4("10.0.2.100".parse().unwrap(), 24).mac([2, 0, 0, 0, 0, 0x64]), theirs);
    let echo = guest.udp_bind("10.0.2.100:5353".parse().unwrap()).unwrap();
    // The guest's server answers each datagram with who sent it.
    let serving = tokio::spawn(async move {
        while let Ok((data, from)) = echo.recv_from().await {
            let answer = format!("{from} sent {}", String::from_utf8_lossy(&data));
            let _ = echo.send_to(answer.as_bytes(), from).await;
        }
    });
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let host = taken.local_addr().unwrap();
    drop(taken);
    let config = UsernetConfig::new()
        .dns_upstream("127.0.0.1:53".parse().unwrap())
        .forward(format!("udp:{}:5353", host.port()).parse().unwrap());
    let usernet = Usernet::spawn(config, ours).unwrap();
    let a = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let b = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let a1 = ask(&a, host, "a1").await;
    let b1 = ask(&b, host, "b1").await;
    let a2 = ask(&a, host, "a2").await;
    let port_of = |answer: &str| -> u16 {
        let (from, _) = answer.split_once(" sent ").unwrap();
        let from: std::net::SocketAddr = from.parse().unwrap();
        assert_eq!(from.ip().to_string(), "10.0.2.2", "{answer}: the guest sees the gateway");
        from.port()
    };
    assert!(a1.ends_with(" sent a1") && b1.ends_with(" sent b1") && a2.ends_with(" sent a2"), "{a1} / {b1} / {a2}");
    assert_eq!(port_of(&a1), port_of(&a2), "one peer, one gateway port");
    assert_ne!(port_of(&a1), port_of(&b1), "two peers, two gateway ports");
    let s = usernet.stats();
    let answered = (a1.len() + b1.len() + a2.len()) as u64;
    assert_eq!((s.bytes_in, s.bytes_out), (6, answered), "{s}");
    usernet.shutdown().await;
    serving.abort();
}

/// Sends `text` from `peer` to `to`; the one answer, from `to`.
async fn ask(peer: &tokio::net::UdpSocket, to: std::net::SocketAddr, text: &str) -> String {
    peer.send_to(text.as_bytes(), to).await.unwrap();
    let mut buf = [0u8; 128];
    let (n, from) = within("the guest's answer", Duration::from_secs(10), peer.recv_from(&mut buf)).await.unwrap();
    assert_eq!(from, to, "the answer comes from the forward's address");
    String::from_utf8(buf[..n].to_vec()).unwrap()
}

//! Shared helpers: two stacks joined by an in-memory link.

#![allow(dead_code, unreachable_pub)]

pub mod frames;
pub mod inject;
pub mod peer;
pub mod tapns;

use std::net::{IpAddr, SocketAddr};

use std::future::Future;
use std::sync::Mutex;

use conflux_flow::{FlowError, FlowExt};
use conflux_netstack::{LinkConfig, LinkSwitch, NetFlow, NetStack, StackConfig, link_pair};
use conflux_tcp::{ConnectOptions, Keepalive, ListenError, TcpStack};
use conflux_testkit::{TIMEOUT, payload, within};
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

pub const A4: &str = "10.0.0.1";
pub const B4: &str = "10.0.0.2";
pub const A6: &str = "fd00::1";
pub const B6: &str = "fd00::2";

pub fn ip(s: &str) -> IpAddr {
    s.parse().expect("an IP")
}

pub fn addr(ip_s: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip(ip_s), port)
}

/// The config of side A (`a = true`) or B of a pair.
pub fn side(a: bool) -> StackConfig {
    let (v4, v6, mac) = if a { (A4, A6, 1) } else { (B4, B6, 2) };
    StackConfig::new()
        .ipv4(v4.parse().unwrap(), 24)
        .ipv6(v6.parse().unwrap(), 64)
        .mac([2, 0, 0, 0, 0, mac])
        .seed(u64::from(mac))
}

/// Stacks A and B on the two ends of a link built from `link`, with
/// `tweak` applied to both configs; and the link's switch.
pub fn pair_with(link: LinkConfig, tweak: impl Fn(StackConfig) -> StackConfig) -> (NetStack, NetStack, LinkSwitch) {
    let (a, b) = link_pair(link);
    let switch = a.switch();
    (NetStack::new(tweak(side(true)), a), NetStack::new(tweak(side(false)), b), switch)
}

/// Stacks A and B on a plain Ethernet link.
pub fn pair() -> (NetStack, NetStack, LinkSwitch) {
    pair_with(LinkConfig::ethernet(), |c| c)
}

/// A connected pair of flows (client on A, server on B) between two fresh
/// stacks over `link`; the stacks are kept in `keep` (a flow factory's, for
/// its open-flow count).
pub async fn flow_pair(link: LinkConfig, keep: &Mutex<Vec<NetStack>>) -> Result<(NetFlow, NetFlow), FlowError> {
    let (a, b, _) = pair_with(link, |c| c);
    let (port, mut rx) = listen_into(&b, 0, None).map_err(FlowError::other)?;
    let client = a.create_connection(addr(B4, port), ConnectOptions::new()).await.map_err(FlowError::other)?;
    let server = rx.recv().await.ok_or_else(FlowError::closed)?;
    b.unlisten(port);
    keep.lock().unwrap().extend([a, b]);
    Ok((client, server))
}

/// 3 MB each way between a fresh pair of flows over `link`, written in
/// chunks (50 kB up, 70 kB down) and shut down, read to the end on the other
/// side; asserts every byte arrived in order. How long it took (real time).
pub async fn bulk_both_ways(link: LinkConfig) -> std::time::Duration {
    let start = std::time::Instant::now();
    let keep = Mutex::new(Vec::new());
    let (client, server) = within("flow pair", TIMEOUT, flow_pair(link, &keep)).await.expect("pair");
    let (up, down) = (payload(7, 3_000_000), payload(8, 3_000_000));
    let (mut cr, mut cw) = client.split();
    let (mut sr, mut sw) = server.split();
    let (u, d) = (up.clone(), down.clone());
    let writers = tokio::spawn(async move {
        tokio::join!(
            async {
                for c in u.chunks(50_000) {
                    cw.write(bytes::Bytes::copy_from_slice(c)).await.expect("write");
                }
                cw.shutdown().await.expect("shutdown");
            },
            async {
                for c in d.chunks(70_000) {
                    sw.write(bytes::Bytes::copy_from_slice(c)).await.expect("write");
                }
                sw.shutdown().await.expect("shutdown");
            }
        );
    });
    let (got_up, got_down) = within("both directions", TIMEOUT, async {
        tokio::join!(
            async {
                let mut got = Vec::new();
                while let Some(c) = sr.read().await.expect("read up") {
                    got.extend_from_slice(&c);
                }
                got
            },
            async {
                let mut got = Vec::new();
                while let Some(c) = cr.read().await.expect("read down") {
                    got.extend_from_slice(&c);
                }
                got
            }
        )
    })
    .await;
    let took = start.elapsed();
    assert_eq!(got_up, up);
    assert_eq!(got_down, down);
    within("writers", TIMEOUT, writers).await.expect("writers");
    took
}

/// Listens on `port` of `stack` (0: an ephemeral one) with `keepalive`;
/// returns the bound port and the receiver each accepted flow is sent to (at
/// once, from the listener's callback).
pub fn listen_into(
    stack: &NetStack,
    port: u16,
    keepalive: Option<Keepalive>,
) -> Result<(u16, UnboundedReceiver<NetFlow>), ListenError> {
    let (tx, rx) = unbounded_channel();
    let listening = stack.listen(port, keepalive, move |f| {
        let _ = tx.send(f);
        async {}
    })?;
    Ok((listening.port(), rx))
}

/// Listens on `port` of `stack` (0: an ephemeral one): `serve` runs on each
/// accepted flow and what it returns is sent to the receiver returned with
/// the bound port.
pub fn serve_into<T, S, Fut>(stack: &NetStack, port: u16, serve: S) -> Result<(u16, UnboundedReceiver<T>), ListenError>
where
    T: Send + 'static,
    S: Fn(NetFlow) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = T> + Send + 'static,
{
    let (tx, rx) = unbounded_channel();
    let listening = stack.listen(port, None, move |f| {
        let tx = tx.clone();
        let served = serve(f);
        async move {
            let _ = tx.send(served.await);
        }
    })?;
    Ok((listening.port(), rx))
}

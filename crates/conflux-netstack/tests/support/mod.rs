//! Shared helpers: two stacks joined by an in-memory link.

#![allow(dead_code, unreachable_pub)]

pub mod frames;
pub mod inject;
pub mod peer;
pub mod tapns;

use std::net::{IpAddr, SocketAddr};

use std::future::Future;
use std::sync::Mutex;

use conflux_flow::FlowError;
use conflux_netstack::{LinkConfig, LinkSwitch, NetFlow, NetStack, StackConfig, link_pair};
use conflux_tcp::{ConnectOptions, Keepalive, ListenError, TcpStack};
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

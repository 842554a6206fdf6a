//! Timing-sensitive and root tests: the TCP kit over the in-memory link (in
//! real time), and the TAP, namespace, ping, kernel-interop and iperf3
//! tests. xtask runs this target with `--test-threads=1`.

mod support;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::Duration;

use conflux_flow::{BoxFlow, FlowError, FlowExt};
use conflux_netstack::{LinkConfig, LinkSwitch, NetFlow, NetStack, keepalive_deadline, link_pair};
use conflux_tcp::kit::{self, TcpFixture, Unavailable};
use conflux_tcp::{ConnectOptions, Keepalive, TcpStack};

/// A current-thread runtime with I/O and time.
fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

/// Each new stack gets a peer stack across its own in-memory (IP) link; the
/// fixture keeps the latest peer and the link's switch.
struct MemFixture {
    peer: Mutex<Option<(NetStack, LinkSwitch)>>,
}

impl MemFixture {
    fn new() -> MemFixture {
        MemFixture { peer: Mutex::new(None) }
    }

    fn peer(&self) -> Result<(NetStack, LinkSwitch), Unavailable> {
        self.peer
            .lock()
            .unwrap()
            .clone()
            .ok_or_else(|| Unavailable::new(conflux_testkit::SkipKind::Capability, "no stack made yet"))
    }
}

impl TcpFixture for MemFixture {
    type Stack = NetStack;

    fn new_stack(&self) -> NetStack {
        let (a, b) = link_pair(LinkConfig::ip());
        let switch = a.switch();
        let ours =
            NetStack::new(support::side(true).buffers(256 * 1024, 4 << 20).disconnect_grace(Duration::from_secs(2)), a);
        let peer = NetStack::new(support::side(false).buffers(64 * 1024, 256 * 1024), b);
        *self.peer.lock().unwrap() = Some((peer, switch));
        ours
    }

    fn local_ip(&self) -> IpAddr {
        support::ip(support::A4)
    }

    fn open_resources(&self) -> Option<usize> {
        None
    }

    fn unacked(&self, flow: &NetFlow) -> Result<usize, FlowError> {
        flow.unacked()
    }

    fn slow_reader_pair(
        &self,
        stack: &NetStack,
    ) -> impl Future<Output = Result<(NetFlow, BoxFlow), Unavailable>> + Send {
        let peer = self.peer();
        let stack = stack.clone();
        async move {
            let (peer, _) = peer?;
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let port = peer
                .listen(0, None, move |f| {
                    let _ = tx.send(f);
                    async {}
                })
                .expect("listen")
                .port();
            let ours = stack
                .create_connection(support::addr(support::B4, port), ConnectOptions::new())
                .await
                .expect("connect");
            let theirs = rx.recv().await.expect("accepted");
            peer.unlisten(port);
            Ok((ours, theirs.boxed()))
        }
    }

    fn black_hole_addr(&self) -> Result<SocketAddr, Unavailable> {
        Ok(support::addr("10.0.0.99", 9))
    }

    fn no_route_addr(&self) -> Result<SocketAddr, Unavailable> {
        Ok(support::addr("192.0.2.1", 9))
    }

    fn link_ip(&self) -> Result<IpAddr, Unavailable> {
        Ok(support::ip(support::A4))
    }

    fn remote_connect(&self, addr: SocketAddr) -> impl Future<Output = Result<(), Unavailable>> + Send {
        let peer = self.peer();
        async move {
            let (peer, _) = peer?;
            let mut flow = peer.create_connection(addr, ConnectOptions::new()).await.expect("remote connect");
            tokio::spawn(async move {
                while let Ok(Some(chunk)) = flow.read().await {
                    if flow.write(chunk).await.is_err() {
                        break;
                    }
                }
            });
            Ok(())
        }
    }

    fn cut_link(&self) -> impl Future<Output = ()> + Send {
        if let Ok((_, switch)) = self.peer() {
            switch.set_up(false);
        }
        std::future::ready(())
    }

    fn keepalive_deadline(&self, keepalive: &Keepalive) -> Duration {
        keepalive_deadline(keepalive)
    }
}

macro_rules! kit_cases {
    ($($case:ident),* $(,)?) => {
        mod kit_mem {
            use super::*;
            $( #[test] fn $case() { rt().block_on(kit::$case(&MemFixture::new())) } )*
        }
    };
}

kit_cases!(
    connect_read_exact_and_dst,
    refused_on_closed_port,
    connect_timeout_black_hole,
    no_route_fails_at_once,
    listen_on_port_zero,
    listeners_replace_each_other,
    unlisten_keeps_established_refuses_new,
    listen_disconnect_listen_same_port,
    panicking_callback_closes_its_flow,
    write_after_shutdown_is_closed,
    peer_abort_is_reset,
    write_nodelay_waits_for_ack,
    keepalive_detects_cut_link,
);

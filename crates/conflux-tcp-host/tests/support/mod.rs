//! The kernel backend's fixture for the TCP kit, and test namespaces.

pub(crate) mod broken;
pub(crate) mod netns;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use conflux_conformance::tcp::{FlowOf, TcpFixture, Unavailable};
use conflux_flow::{BoxFlow, FlowError, FlowExt, FromTokio};
use conflux_tcp::{ConnectOptions, Keepalive, TcpStack};
use conflux_tcp_host::{HostConfig, HostFlow, HostStack, keepalive_deadline};
use conflux_testkit::SkipKind;

/// Serialises the tests of this binary even under a plain multi-threaded
/// `cargo test` (xtask runs it with one thread anyway): the cases count this
/// process's descriptors and measure wall-clock time.
pub(crate) fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A current-thread runtime with I/O and time.
pub(crate) fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

/// The kernel backend on loopback, or inside a test namespace (see [`netns`]).
pub(crate) struct HostFixture {
    ip: IpAddr,
    ns: Option<netns::Child>,
}

impl HostFixture {
    /// Loopback at `ip` (127.0.0.1 or ::1); no black hole, no cuttable link.
    pub(crate) fn loopback(ip: &str) -> HostFixture {
        HostFixture { ip: ip.parse().expect("an IP"), ns: None }
    }

    /// Inside namespace A of a [`Netns`] pair (we are its re-executed child).
    pub(crate) fn in_netns(child: netns::Child) -> HostFixture {
        HostFixture { ip: "127.0.0.1".parse().expect("an IP"), ns: Some(child) }
    }

    fn ns(&self) -> Result<&netns::Child, Unavailable> {
        self.ns.as_ref().ok_or_else(|| Unavailable::new(SkipKind::Netns, "this fixture runs on loopback only"))
    }
}

impl TcpFixture for HostFixture {
    type Stack = HostStack;

    fn new_stack(&self) -> HostStack {
        HostStack::with_config(
            HostConfig::new().send_buffer_size(Some(4 << 20)).disconnect_grace(Duration::from_secs(2)),
        )
    }

    fn local_ip(&self) -> IpAddr {
        self.ip
    }

    fn other_local_ip(&self) -> Result<IpAddr, Unavailable> {
        // Linux routes all of 127.0.0.0/8 to lo; ::1 is the only IPv6 one.
        Ok(if self.ip.is_ipv4() { IpAddr::from([127, 0, 0, 2]) } else { IpAddr::from([127, 0, 0, 1]) })
    }

    fn specific_beside_wildcard(&self) -> bool {
        false
    }

    fn open_resources(&self) -> Option<usize> {
        Some(conflux_testkit::open_fds())
    }

    fn unacked(&self, flow: &FlowOf<Self>) -> Result<usize, FlowError> {
        HostFlow::unacked(flow)
    }

    async fn slow_reader_pair(&self, stack: &HostStack) -> Result<(HostFlow, BoxFlow), Unavailable> {
        let addr = SocketAddr::new(self.ip, 0);
        let sock =
            socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None).expect("socket");
        sock.set_recv_buffer_size(64 * 1024).expect("SO_RCVBUF");
        sock.bind(&addr.into()).expect("bind");
        sock.listen(1).expect("listen");
        sock.set_nonblocking(true).expect("nonblocking");
        let listener = tokio::net::TcpListener::from_std(sock.into()).expect("listener");
        let addr = listener.local_addr().expect("addr");
        let (ours, accepted) = tokio::join!(stack.create_connection(addr, ConnectOptions::new()), listener.accept());
        let ours = ours.expect("connect");
        let (peer, _) = accepted.expect("accept");
        Ok((ours, FromTokio::new(peer).boxed()))
    }

    fn black_hole_addr(&self) -> Result<SocketAddr, Unavailable> {
        Ok(SocketAddr::new(self.ns()?.black_hole, 9))
    }

    fn no_route_addr(&self) -> Result<SocketAddr, Unavailable> {
        Ok(SocketAddr::new(self.ns()?.no_route, 9))
    }

    fn link_ip(&self) -> Result<IpAddr, Unavailable> {
        Ok(self.ns()?.ip_a)
    }

    async fn remote_connect(&self, addr: SocketAddr) -> Result<(), Unavailable> {
        self.ns()?.remote_echo_client(addr)
    }

    async fn cut_link(&self) {
        self.ns().expect("cut_link needs the namespaces").cut_link();
    }

    fn keepalive_deadline(&self, keepalive: &Keepalive) -> Duration {
        keepalive_deadline(keepalive)
    }
}

//! Deliberately broken stacks, each with one defect, to show the TCP kit
//! rejects them: a kit that cannot fail proves nothing.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use conflux_conformance::tcp::{FlowOf, TcpFixture, Unavailable};
use conflux_flow::{BoxFlow, Flow, FlowError, Shutdown};
use conflux_tcp::{ConnectError, ConnectOptions, Keepalive, ListenError, Listening, TcpFlow, TcpStack, any_addr};
use conflux_tcp_host::{HostFlow, HostStack};

use super::HostFixture;

/// The one thing a broken stack gets wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Defect {
    /// `write_nodelay` returns once the bytes are accepted (a stub).
    StubNodelay,
    /// `abort` closes gracefully: the peer reads Eof, not a reset.
    AbortIsClose,
    /// `unlisten` says yes and keeps listening.
    UnlistenKeepsListening,
    /// Closed and dropped flows are kept open.
    LeakFlows,
    /// `listen_on` listens on every address (`[::]`), whatever it was given.
    ListenIgnoresAddress,
}

#[derive(Clone)]
pub(crate) struct BrokenStack {
    inner: HostStack,
    defect: Defect,
    leaked: Arc<Mutex<Vec<HostFlow>>>,
}

pub(crate) struct BrokenFlow {
    inner: Option<HostFlow>,
    defect: Defect,
    leaked: Arc<Mutex<Vec<HostFlow>>>,
}

impl BrokenFlow {
    fn flow(&mut self) -> &mut HostFlow {
        self.inner.as_mut().expect("present until drop")
    }
}

impl Drop for BrokenFlow {
    fn drop(&mut self) {
        if self.defect == Defect::LeakFlows
            && let Some(flow) = self.inner.take()
        {
            self.leaked.lock().unwrap().push(flow);
        }
    }
}

impl Flow for BrokenFlow {
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, FlowError>> {
        self.flow().poll_read(cx)
    }
    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &mut Bytes) -> Poll<Result<(), FlowError>> {
        self.flow().poll_write(cx, buf)
    }
    fn poll_shutdown(&mut self, cx: &mut Context<'_>, how: Shutdown) -> Poll<Result<(), FlowError>> {
        self.flow().poll_shutdown(cx, how)
    }
    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), FlowError>> {
        if self.defect == Defect::LeakFlows { Poll::Ready(Ok(())) } else { self.flow().poll_close(cx) }
    }
    fn poll_abort(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), FlowError>> {
        if self.defect == Defect::AbortIsClose { self.flow().poll_close(cx) } else { self.flow().poll_abort(cx) }
    }
}

impl TcpFlow for BrokenFlow {
    fn dst(&self) -> SocketAddr {
        self.inner.as_ref().expect("present").dst()
    }
    fn src(&self) -> SocketAddr {
        self.inner.as_ref().expect("present").src()
    }
    fn set_nodelay(&mut self, nodelay: bool) -> Result<(), FlowError> {
        self.flow().set_nodelay(nodelay)
    }
    fn poll_writev_nodelay(&mut self, cx: &mut Context<'_>, bufs: &mut [Bytes]) -> Poll<Result<(), FlowError>> {
        if self.defect == Defect::StubNodelay {
            self.flow().poll_writev(cx, bufs)
        } else {
            self.flow().poll_writev_nodelay(cx, bufs)
        }
    }
}

impl BrokenStack {
    fn wrap(&self, flow: HostFlow) -> BrokenFlow {
        BrokenFlow { inner: Some(flow), defect: self.defect, leaked: self.leaked.clone() }
    }
}

impl TcpStack for BrokenStack {
    type Flow = BrokenFlow;

    fn create_connection(
        &self,
        addr: SocketAddr,
        options: ConnectOptions,
    ) -> impl Future<Output = Result<BrokenFlow, ConnectError>> + Send {
        let this = self.clone();
        async move { Ok(this.wrap(this.inner.create_connection(addr, options).await?)) }
    }

    fn listen_on<C, Fut>(
        &self,
        addr: SocketAddr,
        keepalive: Option<Keepalive>,
        callback: C,
    ) -> Result<Listening, ListenError>
    where
        C: Fn(BrokenFlow) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let this = self.clone();
        if self.defect == Defect::ListenIgnoresAddress {
            let l = self.inner.listen_on(any_addr(addr.port()), keepalive, move |flow| callback(this.wrap(flow)))?;
            return Ok(Listening::new(SocketAddr::new(addr.ip(), l.port())));
        }
        self.inner.listen_on(addr, keepalive, move |flow| callback(this.wrap(flow)))
    }

    fn unlisten_on(&self, addr: SocketAddr) -> bool {
        match self.defect {
            Defect::UnlistenKeepsListening => true,
            Defect::ListenIgnoresAddress => self.inner.unlisten_on(any_addr(addr.port())),
            _ => self.inner.unlisten_on(addr),
        }
    }

    fn disconnect(&self) -> impl Future<Output = ()> + Send {
        self.inner.disconnect()
    }

    fn open_flows(&self) -> usize {
        self.inner.open_flows()
    }
}

/// The loopback fixture with a defect.
pub(crate) struct BrokenFixture {
    inner: HostFixture,
    defect: Defect,
}

impl BrokenFixture {
    pub(crate) fn new(defect: Defect) -> BrokenFixture {
        BrokenFixture { inner: HostFixture::loopback("127.0.0.1"), defect }
    }
}

impl TcpFixture for BrokenFixture {
    type Stack = BrokenStack;

    fn new_stack(&self) -> BrokenStack {
        BrokenStack { inner: self.inner.new_stack(), defect: self.defect, leaked: Arc::default() }
    }
    fn local_ip(&self) -> IpAddr {
        self.inner.local_ip()
    }
    fn other_local_ip(&self) -> Result<IpAddr, Unavailable> {
        self.inner.other_local_ip()
    }
    fn specific_beside_wildcard(&self) -> bool {
        self.inner.specific_beside_wildcard()
    }
    fn open_resources(&self) -> Option<usize> {
        self.inner.open_resources()
    }
    fn unacked(&self, flow: &FlowOf<Self>) -> Result<usize, FlowError> {
        flow.inner.as_ref().ok_or_else(FlowError::closed)?.unacked()
    }
    async fn slow_reader_pair(&self, stack: &BrokenStack) -> Result<(BrokenFlow, BoxFlow), Unavailable> {
        let (ours, peer) = self.inner.slow_reader_pair(&stack.inner).await?;
        Ok((stack.wrap(ours), peer))
    }
    fn black_hole_addr(&self) -> Result<SocketAddr, Unavailable> {
        self.inner.black_hole_addr()
    }
    fn no_route_addr(&self) -> Result<SocketAddr, Unavailable> {
        self.inner.no_route_addr()
    }
    fn link_ip(&self) -> Result<IpAddr, Unavailable> {
        self.inner.link_ip()
    }
    async fn remote_connect(&self, addr: SocketAddr) -> Result<(), Unavailable> {
        self.inner.remote_connect(addr).await
    }
    async fn cut_link(&self) {
        self.inner.cut_link().await
    }
    fn keepalive_deadline(&self, keepalive: &Keepalive) -> Duration {
        self.inner.keepalive_deadline(keepalive)
    }
}

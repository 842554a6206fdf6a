//! The stack and flow contracts: [`TcpStack`], [`TcpFlow`] and their options.

use std::future::Future;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use conflux_flow::{Flow, FlowError};

use crate::{ConnectError, Keepalive, ListenError};

/// Options of one [`create_connection`](TcpStack::create_connection).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnectOptions {
    /// Keepalive for the new flow; `None` leaves keepalive off.
    pub keepalive: Option<Keepalive>,
    /// Give up with [`ConnectError::Timeout`] after this long; `None` uses the
    /// stack's default (every backend has a finite one).
    pub timeout: Option<Duration>,
}

impl ConnectOptions {
    /// Keepalive off, the stack's default timeout.
    pub fn new() -> ConnectOptions {
        ConnectOptions::default()
    }

    /// Sets the keepalive.
    pub fn keepalive(mut self, keepalive: Keepalive) -> ConnectOptions {
        self.keepalive = Some(keepalive);
        self
    }

    /// Sets the connect timeout.
    pub fn timeout(mut self, timeout: Duration) -> ConnectOptions {
        self.timeout = Some(timeout);
        self
    }
}

/// What [`listen_on`](TcpStack::listen_on) returns: the address listened on
/// and the port actually bound.
///
/// Dropping it does nothing; [`unlisten_on`](TcpStack::unlisten_on) stops the listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Listening {
    local_addr: SocketAddr,
}

impl Listening {
    /// A handle for a listener bound to `local_addr`.
    pub fn new(local_addr: SocketAddr) -> Listening {
        Listening { local_addr }
    }

    /// The address listened on, with the bound port (for the port-only
    /// `listen`, `[::]:port`): the key [`unlisten_on`](TcpStack::unlisten_on) takes.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The bound port (the ephemeral port picked when listening on port 0).
    pub fn port(&self) -> u16 {
        self.local_addr.port()
    }
}

/// A TCP stack: MirageOS's `Tcpip.Tcp.S`.
///
/// Cloning gives another handle to the same stack. Methods that start tasks
/// (`listen_on`, `listen`) must be called within a tokio runtime.
pub trait TcpStack: Clone + Send + Sync + 'static {
    /// The stack's flows.
    type Flow: TcpFlow;

    /// Opens a connection to `addr`. Errors tell [`Timeout`](ConnectError::Timeout),
    /// [`Refused`](ConnectError::Refused), [`NoRoute`](ConnectError::NoRoute) and
    /// [`Disconnected`](ConnectError::Disconnected) apart. With a keepalive, an
    /// unanswered peer ends the flow: reads return Eof, writes `Closed`.
    fn create_connection(
        &self,
        addr: SocketAddr,
        options: ConnectOptions,
    ) -> impl Future<Output = Result<Self::Flow, ConnectError>> + Send;

    /// Runs `callback` for every flow established on `addr`, each in its own
    /// task, with `keepalive` applied before the callback runs.
    ///
    /// `addr` is the listener's key: an address of this stack (only
    /// connections to that address are taken) or an unspecified one
    /// (`0.0.0.0`: every IPv4 address of the stack; `[::]`: every address of
    /// both families), and a port. Port 0 picks an ephemeral port, reported by
    /// the returned [`Listening`]; the key is then `addr` with that port.
    /// Where a listener on a specific address and one on an unspecified
    /// address share a port, the specific one takes the connections to its
    /// address. Whether both may exist is the backend's: the kernel backend
    /// follows Linux, which refuses the second with
    /// [`AddrInUse`](ListenError::AddrInUse); the userspace stack allows it.
    ///
    /// Listening again under the same key replaces the old listener (upstream
    /// parity): the old callback sees no new flow. A callback that panics is
    /// logged and its flow closed; the stack keeps serving.
    ///
    /// The callback itself is called (its future then spawned) while the
    /// listener is held current, which is what lets `unlisten_on` promise that
    /// no callback fires after it returns: so the callback must not call
    /// `unlisten_on` for its own key *before* returning its future (inside the
    /// future is fine).
    fn listen_on<C, Fut>(
        &self,
        addr: SocketAddr,
        keepalive: Option<Keepalive>,
        callback: C,
    ) -> Result<Listening, ListenError>
    where
        C: Fn(Self::Flow) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static;

    /// Stops the listener under the key `addr` (as given to
    /// [`listen_on`](TcpStack::listen_on), with the port filled in when it was
    /// 0) at once: new connection attempts are refused, half-open handshakes
    /// dropped, **established flows keep running**, and no callback fires
    /// after `unlisten_on` returns. Listeners under other keys (another
    /// address on the same port) keep listening. Returns whether a listener
    /// was stopped.
    fn unlisten_on(&self, addr: SocketAddr) -> bool;

    /// MirageOS's port-only `listen`: [`listen_on`](TcpStack::listen_on) the
    /// unspecified address `[::]` (every address of the stack, both
    /// families) and `port`.
    ///
    /// New code that does not mean to serve other hosts should listen on
    /// loopback instead: `listen_on((Ipv4Addr::LOCALHOST, port).into(), ..)`.
    fn listen<C, Fut>(&self, port: u16, keepalive: Option<Keepalive>, callback: C) -> Result<Listening, ListenError>
    where
        C: Fn(Self::Flow) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.listen_on(any_addr(port), keepalive, callback)
    }

    /// Stops the listener of [`listen`](TcpStack::listen) on `port`: the
    /// same as [`unlisten_on`](TcpStack::unlisten_on) `[::]:port`.
    fn unlisten(&self, port: u16) -> bool {
        self.unlisten_on(any_addr(port))
    }

    /// Closes every flow gracefully (FIN after what was written), stops every
    /// listener, waits for the callback tasks for a grace period, then aborts
    /// the rest. Later connects and listens fail with `Disconnected`. Never fails.
    fn disconnect(&self) -> impl Future<Output = ()> + Send;

    /// The number of flows of this stack that are open (neither closed nor dropped).
    fn open_flows(&self) -> usize;
}

/// A flow of a [`TcpStack`]: the flow contract plus TCP's extras.
pub trait TcpFlow: Flow {
    /// The peer's address. IPv4-mapped IPv6 peers are reported as IPv4.
    fn dst(&self) -> SocketAddr;

    /// Our own address. IPv4-mapped IPv6 addresses are reported as IPv4.
    fn src(&self) -> SocketAddr;

    /// Turns Nagle's algorithm off (`true`) or on for every later write.
    fn set_nodelay(&mut self, nodelay: bool) -> Result<(), FlowError>;

    /// As [`poll_writev`](Flow::poll_writev) with buffering minimised (Nagle off
    /// for it), but ready only once **every byte written so far was acknowledged
    /// by the peer**. With nothing left in `bufs`, it waits for the
    /// acknowledgements alone.
    fn poll_writev_nodelay(&mut self, cx: &mut Context<'_>, bufs: &mut [Bytes]) -> Poll<Result<(), FlowError>>;

    /// Whether the connection ended because the peer stopped answering (a
    /// keepalive expiry, which a read reports as Eof) rather than with the
    /// peer's FIN: `true` once a read returned that Eof. A relay asks it to
    /// pass a dead peer on as a reset, not as a clean end of the stream. The
    /// default, for a stack that cannot tell, is `false`.
    fn expired(&self) -> bool {
        false
    }
}

/// Async methods for every [`TcpFlow`].
pub trait TcpFlowExt: TcpFlow {
    /// Writes `buf` with Nagle off and completes once the peer acknowledged
    /// every byte written so far.
    fn write_nodelay(&mut self, buf: impl Into<Bytes>) -> WriteNodelayFuture<'_, Self> {
        WriteNodelayFuture { flow: self, bufs: vec![buf.into()] }
    }

    /// As [`write_nodelay`](TcpFlowExt::write_nodelay) for a sequence of buffers.
    fn writev_nodelay(&mut self, bufs: Vec<Bytes>) -> WriteNodelayFuture<'_, Self> {
        WriteNodelayFuture { flow: self, bufs }
    }
}

impl<F: TcpFlow + ?Sized> TcpFlowExt for F {}

/// Future of [`TcpFlowExt::write_nodelay`] and [`TcpFlowExt::writev_nodelay`].
#[must_use = "futures do nothing unless polled"]
#[derive(Debug)]
pub struct WriteNodelayFuture<'a, F: ?Sized> {
    flow: &'a mut F,
    bufs: Vec<Bytes>,
}

impl<F: TcpFlow + ?Sized> Future for WriteNodelayFuture<'_, F> {
    type Output = Result<(), FlowError>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        this.flow.poll_writev_nodelay(cx, &mut this.bufs)
    }
}

/// `[::]:port`, the key of the port-only [`listen`](TcpStack::listen): every
/// address of the stack, both families.
pub fn any_addr(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port)
}

/// `addr` with an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) turned into
/// plain IPv4, as [`TcpFlow::dst`] and [`TcpFlow::src`] report it.
pub fn canonical_addr(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => addr,
        },
        SocketAddr::V4(_) => addr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_addresses_become_ipv4() {
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:80".parse().unwrap();
        assert_eq!(canonical_addr(mapped), "127.0.0.1:80".parse().unwrap());
        let v6: SocketAddr = "[::1]:80".parse().unwrap();
        assert_eq!(canonical_addr(v6), v6);
    }

    #[test]
    fn options_build() {
        let ka = Keepalive::new(Duration::from_secs(1), Duration::from_secs(1), 3);
        let o = ConnectOptions::new().keepalive(ka).timeout(Duration::from_millis(300));
        assert_eq!(o.keepalive, Some(ka));
        assert_eq!(o.timeout, Some(Duration::from_millis(300)));
    }
}

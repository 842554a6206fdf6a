//! [`HostStack`]: the TCP contract on the host kernel.

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use conflux_tcp::{
    Callback, ConnectError, ConnectOptions, Keepalive, ListenError, Listener, Listeners, Listening, StopFn, TcpStack,
};
use socket2::{Domain, Protocol, SockRef, Socket, Type};
use tokio::net::{TcpListener, TcpStream};

use crate::tuning::{Deferred, Tuning, set_keepalive};
use crate::{HostConfig, HostFlow, flow::FlowTable};

/// The host kernel's TCP as a [`TcpStack`].
///
/// - A listener binds exactly the address it is given, with `SO_REUSEADDR`
///   and the configured backlog: `127.0.0.1` takes loopback only, `[::]`
///   (the port-only `listen`) is dual-stack (`IPV6_V6ONLY` off; `0.0.0.0`
///   where the host has no IPv6), a specific IPv6 address is IPv6 only.
///   Linux refuses a specific address beside a wildcard listener on the same
///   port (and the reverse): that `listen_on` fails with `AddrInUse`.
/// - Keepalive goes through the kernel (`SO_KEEPALIVE`, `TCP_KEEPIDLE`,
///   `TCP_KEEPINTVL`, `TCP_KEEPCNT`), rounded by
///   [`kernel_keepalive`](crate::kernel_keepalive); a silent peer is declared
///   dead at [`keepalive_deadline`](crate::keepalive_deadline) (Linux timing:
///   `after + probes * interval`).
/// - With [`HostConfig::defer_options`] a connection whose handshake
///   completed within its `connect` call gets its keepalive and user
///   timeout once it has lived that long (a short one never does).
/// - `unlisten` shuts the listening socket down at once (`shutdown(SHUT_RD)`
///   on a listening socket: queued and new connection attempts get a RST).
/// - Listening again on a port stops the old listener before binding the new
///   one (two sockets cannot both listen); if that bind fails, the port has
///   no listener and the error is returned.
/// - Cloning gives another handle to the same stack.
#[derive(Clone, Debug)]
pub struct HostStack {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: HostConfig,
    listeners: Listeners<HostFlow>,
    flows: Arc<FlowTable>,
    /// Connections whose options wait ([`HostConfig::defer_options`]).
    deferred: Arc<Deferred>,
    disconnected: AtomicBool,
}

impl Default for HostStack {
    fn default() -> Self {
        HostStack::new()
    }
}

fn connect_error(addr: SocketAddr, e: io::Error) -> ConnectError {
    match e.raw_os_error() {
        Some(libc::ECONNREFUSED) => ConnectError::Refused { addr },
        Some(libc::ENETUNREACH | libc::EHOSTUNREACH) => ConnectError::NoRoute { addr },
        Some(libc::ETIMEDOUT) => ConnectError::Timeout { addr },
        _ => ConnectError::other(addr, e),
    }
}

fn listen_error(addr: SocketAddr, e: io::Error) -> ListenError {
    match e.raw_os_error() {
        Some(libc::EADDRINUSE) => ListenError::AddrInUse(addr),
        Some(libc::EACCES | libc::EPERM) => ListenError::PermissionDenied(addr),
        Some(libc::EADDRNOTAVAIL) => ListenError::AddrNotAvailable(addr),
        _ => ListenError::Other(e.into()),
    }
}

/// A non-blocking connect after its first system call.
enum Connecting {
    /// Connected already (a peer on this machine: the kernel ran the whole
    /// handshake inside the `connect` call).
    Done(TcpStream),
    /// The handshake is under way: wait for the socket to be writable.
    Pending(TcpStream),
}

/// Starts connecting `sock` to `addr` and, when the kernel said "in
/// progress", asks once more (a second `connect`: 0 once established,
/// `EALREADY` while under way, the error if it failed). A loopback peer
/// completes the handshake within the first call, so the answer is known
/// at once, without waiting for the socket to become writable (a trip
/// through the runtime's event loop) and `SO_ERROR`.
fn connect_now(sock: Socket, addr: SocketAddr) -> io::Result<Connecting> {
    let to = socket2::SockAddr::from(addr);
    let pending = match sock.connect(&to) {
        Ok(()) => false,
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => match sock.connect(&to) {
            Ok(()) => false,
            Err(e) if e.raw_os_error() == Some(libc::EISCONN) => false,
            Err(e) if matches!(e.raw_os_error(), Some(libc::EALREADY | libc::EINPROGRESS)) => true,
            Err(e) => return Err(e),
        },
        Err(e) => return Err(e),
    };
    let stream = TcpStream::from_std(std::net::TcpStream::from(sock))?;
    Ok(if pending { Connecting::Pending(stream) } else { Connecting::Done(stream) })
}

/// Waits for a pending connect's outcome (what tokio's own connect does).
async fn finish_connect(stream: TcpStream) -> io::Result<TcpStream> {
    stream.writable().await?;
    if let Some(e) = stream.take_error()? {
        return Err(e);
    }
    Ok(stream)
}

impl HostStack {
    /// A stack with the default [`HostConfig`].
    pub fn new() -> HostStack {
        HostStack::with_config(HostConfig::default())
    }

    /// A stack with `config`.
    pub fn with_config(config: HostConfig) -> HostStack {
        HostStack {
            inner: Arc::new(Inner {
                config,
                listeners: Listeners::new(),
                flows: Arc::new(FlowTable::default()),
                deferred: Arc::new(Deferred::default()),
                disconnected: AtomicBool::new(false),
            }),
        }
    }

    /// The stack's settings.
    pub fn config(&self) -> &HostConfig {
        &self.inner.config
    }

    /// The buffer sizes (before connect or listen).
    fn size_buffers(&self, sock: &Socket) -> io::Result<()> {
        let c = &self.inner.config;
        if let Some(n) = c.send_buffer_size {
            sock.set_send_buffer_size(n)?;
        }
        if let Some(n) = c.recv_buffer_size {
            sock.set_recv_buffer_size(n)?;
        }
        Ok(())
    }

    async fn connect(&self, addr: SocketAddr, options: ConnectOptions) -> Result<HostFlow, ConnectError> {
        if self.inner.disconnected.load(Ordering::Acquire) {
            return Err(ConnectError::Disconnected);
        }
        let timeout = options.timeout.unwrap_or(self.inner.config.connect_timeout);
        let sock = Socket::new(Domain::for_address(addr), Type::STREAM.nonblocking(), Some(Protocol::TCP))
            .map_err(|e| ConnectError::other(addr, e))?;
        self.size_buffers(&sock).map_err(|e| ConnectError::other(addr, e))?;
        let c = &self.inner.config;
        let tuning = Tuning { user_timeout: c.user_timeout, keepalive: options.keepalive };
        let defer = c.defer_options.filter(|_| !tuning.is_empty());
        if defer.is_none() {
            tuning.apply(SockRef::from(&sock)).map_err(|e| ConnectError::other(addr, e))?;
        }
        let (stream, defer) = match connect_now(sock, addr).map_err(|e| connect_error(addr, e))? {
            Connecting::Done(stream) => (stream, defer),
            Connecting::Pending(stream) => {
                // A handshake under way (a peer elsewhere): the options
                // now, as without the deferral (the user timeout bounds
                // the SYN's retransmissions too).
                if defer.is_some() {
                    tuning.apply(SockRef::from(&stream)).map_err(|e| ConnectError::other(addr, e))?;
                }
                match tokio::time::timeout(timeout, finish_connect(stream)).await {
                    Err(_) => return Err(ConnectError::Timeout { addr }),
                    Ok(Err(e)) => return Err(connect_error(addr, e)),
                    Ok(Ok(stream)) => (stream, None),
                }
            }
        };
        if self.inner.disconnected.load(Ordering::Acquire) {
            return Err(ConnectError::Disconnected);
        }
        let flow = HostFlow::new(stream, addr, &self.inner.flows, c.read_chunk, c.ack_timeout)
            .map_err(|e| connect_error(addr, e))?;
        if let Some(delay) = defer
            && let Some(io) = flow.stream()
        {
            self.inner.deferred.push(io, tuning, delay);
        }
        Ok(flow)
    }

    /// A bound, listening, non-blocking socket on exactly `addr`; for `[::]`
    /// a dual-stack one (or `0.0.0.0` on a host without IPv6).
    fn bind(&self, addr: SocketAddr) -> io::Result<Socket> {
        let (sock, addr) = if addr.ip() == IpAddr::V6(Ipv6Addr::UNSPECIFIED) {
            let v6 = || -> io::Result<Socket> {
                let sock = Socket::new(Domain::IPV6, Type::STREAM.nonblocking(), Some(Protocol::TCP))?;
                sock.set_only_v6(false)?;
                Ok(sock)
            };
            match v6() {
                Ok(sock) => (sock, addr),
                Err(e) if e.raw_os_error() == Some(libc::EAFNOSUPPORT) => (
                    Socket::new(Domain::IPV4, Type::STREAM.nonblocking(), Some(Protocol::TCP))?,
                    SocketAddr::from((Ipv4Addr::UNSPECIFIED, addr.port())),
                ),
                Err(e) => return Err(e),
            }
        } else {
            let sock = Socket::new(Domain::for_address(addr), Type::STREAM.nonblocking(), Some(Protocol::TCP))?;
            if addr.is_ipv6() {
                sock.set_only_v6(true)?;
            }
            (sock, addr)
        };
        sock.set_reuse_address(true)?;
        // Accepted connections inherit the user timeout and the buffer sizes.
        if let Some(ut) = self.inner.config.user_timeout {
            sock.set_tcp_user_timeout(Some(ut))?;
        }
        self.size_buffers(&sock)?;
        sock.bind(&addr.into())?;
        sock.listen(i32::try_from(self.inner.config.backlog).unwrap_or(i32::MAX))?;
        Ok(sock)
    }
}

/// Accepts until the listener is stopped, handing each flow to the callback.
async fn accept_loop(
    listener: Arc<TcpListener>,
    handle: Listener<HostFlow>,
    keepalive: Option<Keepalive>,
    flows: Arc<FlowTable>,
    config: HostConfig,
) {
    let stopped = handle.stopped();
    tokio::pin!(stopped);
    loop {
        let accepted = tokio::select! {
            biased;
            () = &mut stopped => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                if let Some(ka) = &keepalive
                    && let Err(e) = set_keepalive(SockRef::from(&stream), ka)
                {
                    tracing::debug!(%peer, error = %e, "cannot set keepalive; dropping the connection");
                    continue;
                }
                match HostFlow::new(stream, peer, &flows, config.read_chunk, config.ack_timeout) {
                    Ok(flow) => {
                        if let Err(mut flow) = handle.dispatch(flow) {
                            let _ = conflux_flow::FlowExt::abort(&mut flow).await;
                        }
                    }
                    Err(e) => tracing::debug!(%peer, error = %e, "accepted connection already gone"),
                }
            }
            Err(_) if handle.is_stopped() => break,
            Err(e) => {
                // Out of descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

impl TcpStack for HostStack {
    type Flow = HostFlow;

    fn create_connection(
        &self,
        addr: SocketAddr,
        options: ConnectOptions,
    ) -> impl Future<Output = Result<HostFlow, ConnectError>> + Send {
        self.connect(addr, options)
    }

    fn listen_on<C, Fut>(
        &self,
        addr: SocketAddr,
        keepalive: Option<Keepalive>,
        callback: C,
    ) -> Result<Listening, ListenError>
    where
        C: Fn(HostFlow) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(ListenError::Other("listen must be called within a tokio runtime".into()));
        }
        if self.inner.disconnected.load(Ordering::Acquire) {
            return Err(ListenError::Disconnected);
        }
        let mut bound = None;
        let (listening, handle) = self.inner.listeners.listen(addr, Callback::new(callback), |addr| {
            let sock = self.bind(addr).map_err(|e| listen_error(addr, e))?;
            let addr = sock
                .local_addr()
                .ok()
                .and_then(|a| a.as_socket())
                .ok_or_else(|| ListenError::Other("the listening socket has no address".into()))?;
            let listener = Arc::new(
                TcpListener::from_std(std::net::TcpListener::from(sock)).map_err(|e| ListenError::Other(e.into()))?,
            );
            let on_stop = listener.clone();
            let stop: StopFn = Box::new(move || {
                // On Linux this ends listening at once: queued and new SYNs get a RST.
                if let Err(e) = SockRef::from(&*on_stop).shutdown(std::net::Shutdown::Read) {
                    tracing::debug!(error = %e, "shutting the listening socket down");
                }
            });
            bound = Some(listener);
            Ok((addr, stop))
        })?;
        let Some(listener) = bound else {
            return Err(ListenError::Other("the listener was not bound".into()));
        };
        tracing::trace!(addr = %listening.local_addr(), "listening");
        let flows = self.inner.flows.clone();
        tokio::spawn(accept_loop(listener, handle, keepalive, flows, self.inner.config.clone()));
        Ok(listening)
    }

    fn unlisten_on(&self, addr: SocketAddr) -> bool {
        self.inner.listeners.unlisten(addr)
    }

    fn disconnect(&self) -> impl Future<Output = ()> + Send {
        let inner = self.inner.clone();
        async move {
            inner.disconnected.store(true, Ordering::Release);
            let flows = inner.flows.clone();
            inner.listeners.disconnect(inner.config.disconnect_grace, move || flows.shutdown_all()).await;
        }
    }

    fn open_flows(&self) -> usize {
        self.inner.flows.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_errors_map_to_typed_errors() {
        let os = io::Error::from_raw_os_error;
        let a = SocketAddr::from(([127, 0, 0, 1], 80));
        assert!(matches!(connect_error(a, os(libc::ECONNREFUSED)), ConnectError::Refused { addr } if addr == a));
        assert!(matches!(connect_error(a, os(libc::ENETUNREACH)), ConnectError::NoRoute { addr } if addr == a));
        assert!(matches!(connect_error(a, os(libc::EHOSTUNREACH)), ConnectError::NoRoute { addr } if addr == a));
        assert!(matches!(connect_error(a, os(libc::ETIMEDOUT)), ConnectError::Timeout { addr } if addr == a));
        assert!(matches!(connect_error(a, os(libc::EMFILE)), ConnectError::Other { addr, .. } if addr == a));
        assert!(matches!(listen_error(a, os(libc::EADDRINUSE)), ListenError::AddrInUse(x) if x == a));
        assert!(matches!(listen_error(a, os(libc::EACCES)), ListenError::PermissionDenied(x) if x == a));
        assert!(matches!(listen_error(a, os(libc::EADDRNOTAVAIL)), ListenError::AddrNotAvailable(x) if x == a));
    }

    #[test]
    fn listen_outside_a_runtime_is_an_error_not_a_panic() {
        let err = HostStack::new().listen(0, None, |_flow| async {}).expect_err("no runtime");
        assert!(err.to_string().contains("tokio runtime"), "{err}");
    }

    /// The keepalive, its three timings and the user timeout of `flow`'s
    /// socket, as the kernel reports them.
    fn options(flow: &HostFlow) -> (bool, Option<(Duration, Duration, u32)>, Option<Duration>) {
        let sock = SockRef::from(&**flow.stream().expect("open"));
        let on = sock.keepalive().unwrap();
        let timings = (sock.tcp_keepalive_time().unwrap(), sock.tcp_keepalive_interval().unwrap());
        let timings = on.then(|| (timings.0, timings.1, sock.tcp_keepalive_retries().unwrap()));
        (on, timings, sock.tcp_user_timeout().unwrap())
    }

    /// Deferred, a connection to a peer on this machine has neither
    /// keepalive nor user timeout in its first moments, and both once it
    /// has lived the delay (within 1.5 times it); the stack's task ends
    /// once nothing waits (a connection closed before its turn is skipped).
    /// Not deferred (the default) they are there from the start.
    #[tokio::test]
    async fn deferred_options_come_once_a_connection_has_lived_the_delay() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let ka = Keepalive::new(Duration::from_secs(7), Duration::from_secs(3), 4);
        let connect = ConnectOptions { keepalive: Some(ka), ..ConnectOptions::new() };
        let ut = Duration::from_secs(5);
        let set = (true, Some((Duration::from_secs(7), Duration::from_secs(3), 4)), Some(ut));

        let eager = HostStack::with_config(HostConfig::new().user_timeout(Some(ut)));
        let flow = eager.create_connection(addr, connect).await.unwrap();
        assert_eq!(options(&flow), set);
        assert!(!eager.inner.deferred.sweeping());

        let delay = Duration::from_millis(300);
        let lazy = HostStack::with_config(HostConfig::new().user_timeout(Some(ut)).defer_options(Some(delay)));
        let start = tokio::time::Instant::now();
        let short = lazy.create_connection(addr, connect).await.unwrap();
        let long = lazy.create_connection(addr, connect).await.unwrap();
        assert_eq!(options(&long), (false, None, None), "nothing set yet");
        assert_eq!(lazy.inner.deferred.waiting(), 2);
        drop(short);
        while options(&long) != set {
            assert!(start.elapsed() < Duration::from_secs(5), "never set: {:?}", options(&long));
            assert_eq!(options(&long), (false, None, None), "set partly");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let took = start.elapsed();
        assert!(took >= delay, "set after {took:?}, before the delay");
        while lazy.inner.deferred.sweeping() {
            assert!(start.elapsed() < Duration::from_secs(5), "the task goes on");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(lazy.inner.deferred.waiting(), 0);
        // A connection after the task ended starts it again.
        let again = lazy.create_connection(addr, connect).await.unwrap();
        assert!(lazy.inner.deferred.sweeping());
        while options(&again) != set {
            assert!(start.elapsed() < Duration::from_secs(10), "never set: {:?}", options(&again));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn a_disconnected_stack_refuses_work() {
        let stack = HostStack::new();
        stack.disconnect().await;
        let addr = SocketAddr::from(([127, 0, 0, 1], 9));
        assert!(matches!(stack.create_connection(addr, ConnectOptions::new()).await, Err(ConnectError::Disconnected)));
        assert!(matches!(stack.listen(0, None, |_flow| async {}), Err(ListenError::Disconnected)));
        assert_eq!(stack.open_flows(), 0);
    }
}

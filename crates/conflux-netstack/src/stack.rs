//! [`NetStack`]: the handle, the driver task and the `TcpStack` contract.

use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::net::{IpAddr, SocketAddr};
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::Poll;
use std::time::Duration;

use conflux_tcp::{Callback, ConnectError, ConnectOptions, Keepalive, ListenError, Listeners, Listening, TcpStack};
use smoltcp::socket::tcp;
use tokio::sync::Notify;

use crate::config::StackConfig;
use crate::core::{Accepted, ConnId, Core, Phase};
use crate::device::{FrameBuf, FrameDevice, FramePool};
use crate::flow::NetFlow;

/// What flows and the driver share.
pub(crate) struct Shared {
    core: Mutex<Core>,
    kick: Arc<Notify>,
    pub(crate) listeners: Listeners<NetFlow>,
    open_flows: AtomicUsize,
    base: tokio::time::Instant,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Core> {
        self.core.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Wakes the driver (something to send, a window to update, a close).
    pub(crate) fn kick(&self) {
        self.kick.notify_one();
    }

    /// The stack's clock: tokio's, so a paused runtime drives it.
    pub(crate) fn now(&self) -> smoltcp::time::Instant {
        smoltcp::time::Instant::from_micros(self.base.elapsed().as_micros().min(i64::MAX as u128) as i64)
    }

    fn instant(&self, t: smoltcp::time::Instant) -> tokio::time::Instant {
        self.base + Duration::from_micros(t.total_micros().max(0) as u64)
    }

    pub(crate) fn flow_opened(&self) {
        self.open_flows.fetch_add(1, Ordering::SeqCst);
    }

    pub(crate) fn flow_closed(&self) {
        self.open_flows.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // The driver holds the stack weakly: wake it so it sees the last
        // handle gone and releases the device now, not at its next frame or
        // timer (a TAP stays busy for another opener until then).
        self.kick.notify_one();
    }
}

/// A userspace TCP/IP stack over one [`FrameDevice`], driven by a tokio task.
///
/// Cloning gives another handle to the same stack. The driver task runs
/// while any handle or flow exists (a listen callback that captures a handle
/// keeps its stack alive until [`disconnect`](TcpStack::disconnect) drops the
/// listeners).
#[derive(Clone)]
pub struct NetStack {
    shared: Arc<Shared>,
}

/// A reference to a [`NetStack`] that does not keep it alive
/// ([`NetStack::downgrade`]): what a table of stacks shared by name holds.
#[derive(Clone, Debug)]
pub struct WeakNetStack(Weak<Shared>);

impl WeakNetStack {
    /// The stack, while any handle or flow of it exists.
    pub fn upgrade(&self) -> Option<NetStack> {
        self.0.upgrade().map(|shared| NetStack { shared })
    }
}

impl std::fmt::Debug for NetStack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetStack").field("addrs", &self.addrs()).field("open_flows", &self.open_flows()).finish()
    }
}

impl NetStack {
    /// A stack with `config` over `device`; spawns the driver task, so it must
    /// be called within a tokio runtime.
    pub fn new<D: FrameDevice>(config: StackConfig, mut device: D) -> NetStack {
        let base = tokio::time::Instant::now();
        let pool = FramePool::new();
        device.set_pool(pool.clone());
        let core = Core::new(config, device.caps(), pool, smoltcp::time::Instant::ZERO);
        let kick = Arc::new(Notify::new());
        let shared = Arc::new(Shared {
            core: Mutex::new(core),
            kick: kick.clone(),
            listeners: Listeners::new(),
            open_flows: AtomicUsize::new(0),
            base,
        });
        tokio::spawn(drive(Arc::downgrade(&shared), kick, device));
        NetStack { shared }
    }

    /// A reference that does not keep the stack alive. Once the last handle
    /// and flow are gone the driver stops and closes the device.
    pub fn downgrade(&self) -> WeakNetStack {
        WeakNetStack(Arc::downgrade(&self.shared))
    }

    /// Our addresses (IPv4, global IPv6, link-local IPv6).
    pub fn addrs(&self) -> Vec<IpAddr> {
        self.shared.lock().addrs.clone()
    }

    /// Sockets the stack holds right now, whether or not a flow owns them:
    /// open, half-open, closing and in TIME_WAIT (10 s). Reaped sockets
    /// are gone from this count and their ports are free again.
    pub fn sockets(&self) -> usize {
        self.shared.lock().sockets()
    }

    /// Ephemeral and listening ports taken right now.
    pub fn ports_in_use(&self) -> usize {
        self.shared.lock().ports.in_use()
    }

    /// Transparent ("any-address") listening, as tun2socks- and vpnkit-style
    /// users need: accepts connections to **any address that is not ours**,
    /// on any port, and runs `callback` for each as `listen` does. A flow's
    /// [`src`](conflux_tcp::TcpFlow::src) is the original destination (the
    /// address and port the peer dialled), [`dst`](conflux_tcp::TcpFlow::dst)
    /// the peer. Connections to our own addresses still go to the per-port
    /// listeners.
    ///
    /// The stack rewrites those segments to one of its own addresses (of the
    /// same family) and a fresh local port, and back on the way out
    /// (checksums adjusted), because smoltcp only accepts packets to its own
    /// addresses. The returned handle names the port the listener is
    /// registered under: [`unlisten`](TcpStack::unlisten) it to stop. A
    /// second transparent listener replaces the first.
    pub fn listen_transparent<C, Fut>(
        &self,
        keepalive: Option<Keepalive>,
        callback: C,
    ) -> Result<Listening, ListenError>
    where
        C: Fn(NetFlow) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let old = self.shared.lock().transparent_port;
        if let Some(port) = old {
            self.unlisten(port);
        }
        let listening = self.listen(0, keepalive, callback)?;
        let mut core = self.shared.lock();
        if core.listens.contains_key(&listening.local_addr()) {
            core.transparent_port = Some(listening.port());
        }
        Ok(listening)
    }

    fn stop_fn(&self, key: SocketAddr, generation: u64) -> conflux_tcp::StopFn {
        let weak = Arc::downgrade(&self.shared);
        Box::new(move || {
            if let Some(shared) = weak.upgrade() {
                shared.lock().remove_listen(key, generation);
                shared.kick();
            }
        })
    }
}

/// Aborts a connection attempt whose future was dropped or failed.
struct ConnectGuard<'a> {
    shared: &'a Arc<Shared>,
    id: Option<ConnId>,
}

impl Drop for ConnectGuard<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            let mut core = self.shared.lock();
            if let Some(c) = core.conns.get(&id) {
                let (shard, handle) = (c.shard, c.handle);
                core.socket(shard, handle).abort();
            }
            core.orphan(id);
            drop(core);
            self.shared.kick();
        }
    }
}

impl TcpStack for NetStack {
    type Flow = NetFlow;

    async fn create_connection(&self, addr: SocketAddr, options: ConnectOptions) -> Result<NetFlow, ConnectError> {
        let addr = conflux_tcp::canonical_addr(addr);
        let (id, shard, handle, local, timeout) = {
            let mut core = self.shared.lock();
            if core.disconnected {
                return Err(ConnectError::Disconnected);
            }
            if addr.port() == 0 || addr.ip().is_unspecified() || addr.ip().is_multicast() {
                return Err(ConnectError::other(addr, "not an address one can connect to"));
            }
            let src = core.source_for(addr.ip()).ok_or(ConnectError::NoRoute { addr })?;
            let timeout = options.timeout.unwrap_or(core.config.connect_timeout);
            let (id, shard, handle, local) =
                core.connect(src, addr, options.keepalive).map_err(|e| ConnectError::other(addr, e))?;
            (id, shard, handle, local, timeout)
        };
        self.shared.kick();
        let mut guard = ConnectGuard { shared: &self.shared, id: Some(id) };
        let established = poll_fn(|cx| {
            let mut core = self.shared.lock();
            let rst = core.conns.get(&id).is_some_and(|c| c.rst_seen);
            let sock = core.socket(shard, handle);
            match sock.state() {
                tcp::State::SynSent | tcp::State::SynReceived => {
                    sock.register_send_waker(cx.waker());
                    Poll::Pending
                }
                tcp::State::Closed if rst => Poll::Ready(Err(ConnectError::Refused { addr })),
                tcp::State::Closed | tcp::State::Listen => Poll::Ready(Err(ConnectError::Refused { addr })),
                _ => {
                    if let Some(c) = core.conns.get_mut(&id) {
                        c.phase = Phase::Open;
                    }
                    Poll::Ready(Ok(()))
                }
            }
        });
        match tokio::time::timeout(timeout, established).await {
            Ok(Ok(())) => {
                guard.id = None;
                Ok(NetFlow::new(self.shared.clone(), id, shard, handle, local, addr))
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(ConnectError::Timeout { addr }),
        }
    }

    fn listen_on<C, Fut>(
        &self,
        addr: SocketAddr,
        keepalive: Option<Keepalive>,
        callback: C,
    ) -> Result<Listening, ListenError>
    where
        C: Fn(NetFlow) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let mut owns_port = false;
        let mut generation = 0;
        let (listening, listener) = self.shared.listeners.listen(addr, Callback::new(callback), |addr| {
            let mut core = self.shared.lock();
            if core.disconnected {
                return Err(ListenError::Disconnected);
            }
            if !addr.ip().is_unspecified() && !core.addrs.contains(&addr.ip()) {
                return Err(ListenError::AddrNotAvailable(addr));
            }
            let port = addr.port();
            let port = if port == 0 {
                owns_port = true;
                core.ports
                    .allocate()
                    .ok_or_else(|| ListenError::Other("the ephemeral port range is exhausted".into()))?
            } else {
                owns_port = core.ports.take(port);
                port
            };
            generation = core.new_listen_generation();
            drop(core);
            let key = SocketAddr::new(addr.ip(), port);
            Ok((key, self.stop_fn(key, generation)))
        })?;
        let mut core = self.shared.lock();
        if listener.is_stopped() {
            // Replaced or unlistened before we got here (or disconnected).
            if owns_port {
                core.ports.free(listening.port());
            }
        } else {
            core.add_listen(listening.local_addr(), Arc::new(listener), keepalive, generation, owns_port);
        }
        Ok(listening)
    }

    fn unlisten_on(&self, addr: SocketAddr) -> bool {
        self.shared.listeners.unlisten(addr)
    }

    async fn disconnect(&self) {
        let grace = self.shared.lock().config.disconnect_grace;
        self.shared
            .listeners
            .disconnect(grace, || {
                self.shared.lock().close_all();
                self.shared.kick();
            })
            .await;
    }

    fn open_flows(&self) -> usize {
        self.shared.open_flows.load(Ordering::SeqCst)
    }
}

/// Hands finished handshakes to their listeners (outside the lock).
fn dispatch(shared: &Arc<Shared>, accepted: Vec<Accepted>) {
    for a in accepted {
        let flow = NetFlow::new(shared.clone(), a.id, a.shard, a.handle, a.local, a.remote);
        if let Err(flow) = a.listener.dispatch(flow) {
            drop(flow);
        }
    }
}

/// Frames received per driver round before the stack processes them.
const RX_BATCH: usize = 256;

/// The driver: owns the device; each round takes the lock once to process
/// received frames and timers, then sends outside the lock and sleeps on
/// the device, a kick, or the next smoltcp deadline.
async fn drive<D: FrameDevice>(weak: Weak<Shared>, kick: Arc<Notify>, mut device: D) {
    let mut rx: Vec<FrameBuf> = Vec::new();
    let mut produced: Vec<FrameBuf> = Vec::new();
    let mut tx: VecDeque<FrameBuf> = VecDeque::new();
    let far = || tokio::time::Instant::now() + Duration::from_secs(3600);
    let mut sleep = pin!(tokio::time::sleep_until(far()));
    loop {
        let notified = kick.notified();
        let mut notified = pin!(notified);
        notified.as_mut().enable();
        {
            let Some(shared) = weak.upgrade() else { return };
            let now = shared.now();
            let (accepted, deadline) = {
                let mut core = shared.lock();
                let accepted = core.process(now, &mut rx, &mut produced, !tx.is_empty());
                (accepted, core.next_deadline())
            };
            tx.extend(produced.drain(..));
            dispatch(&shared, accepted);
            let wake_at = match deadline {
                Some(t) if tx.is_empty() => shared.instant(t),
                _ => far(),
            };
            sleep.as_mut().reset(wake_at);
        }
        let backlog = !tx.is_empty();
        let alive = poll_fn(|cx| {
            if !tx.is_empty()
                && let Poll::Ready(Err(e)) = device.poll_send_batch(cx, &mut tx)
            {
                tracing::warn!(error = %e, "device failed: the stack stops");
                return Poll::Ready(false);
            }
            if rx.len() < RX_BATCH {
                let room = RX_BATCH - rx.len();
                match device.poll_recv(cx, &mut rx, room) {
                    Poll::Ready(Ok(())) | Poll::Pending => {}
                    Poll::Ready(Err(e)) => {
                        tracing::debug!(error = %e, "device closed: the stack stops");
                        return Poll::Ready(false);
                    }
                }
            }
            if !rx.is_empty() || (backlog && tx.is_empty()) {
                return Poll::Ready(true);
            }
            if notified.as_mut().poll(cx).is_ready() || sleep.as_mut().poll(cx).is_ready() {
                return Poll::Ready(true);
            }
            Poll::Pending
        })
        .await;
        if !alive {
            return;
        }
    }
}

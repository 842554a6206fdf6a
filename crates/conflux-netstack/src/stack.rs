//! [`NetStack`]: the handle, the shell's shared state and the `TcpStack`
//! contract. The shell moves bytes and wakers: the core decides.

use std::cell::Cell;
use std::collections::{HashMap, VecDeque};
use std::future::{Future, poll_fn};
use std::hash::BuildHasherDefault;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use conflux_tcp::{
    Callback, ConnectError, ConnectOptions, Keepalive, ListenError, Listener, Listeners, Listening, TcpStack,
};
use tokio::sync::{Notify, watch};

use crate::config::StackConfig;
use crate::core::{BindRefused, ConnId, ConnectState, Core, Event, IdHasher, ListenId, ListenKey, Transparent};
use crate::device::{DirectSend, FrameBuf, FrameDevice, FramePool, InlineReceiver};
use crate::flow::NetFlow;
use crate::intercept::{HeldSyn, Intercept};

/// A flow's (or connect future's) wakers.
#[derive(Default)]
struct Wakers {
    read: Option<Waker>,
    write: Option<Waker>,
}

fn store(slot: &mut Option<Waker>, waker: &Waker) {
    match slot {
        Some(w) if w.will_wake(waker) => {}
        _ => *slot = Some(waker.clone()),
    }
}

/// Why a stack's device failed or closed (a TAP removed, a hypervisor's
/// carrier closed, a bad frame): its `io::Error`'s kind and text. The stack
/// stops with its device; from then on every operation on it and its flows
/// fails with this error (carried as the source of a [`FlowError`](conflux_flow::FlowError),
/// a [`ConnectError::Other`], a [`ListenError::Other`] or
/// [`UdpError::DeviceFailed`](crate::UdpError::DeviceFailed)).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the stack's device failed: {message}")]
pub struct DeviceError {
    /// The device error's kind.
    pub kind: io::ErrorKind,
    /// The device error's text.
    pub message: String,
}

impl DeviceError {
    fn from_io(e: &io::Error) -> DeviceError {
        DeviceError { kind: e.kind(), message: e.to_string() }
    }

    /// What a flow's read or write returns: a reset (the connection is
    /// gone, as after an abort; never a clean Eof) whose source is this.
    pub(crate) fn flow_error(&self) -> conflux_flow::FlowError {
        conflux_flow::FlowError::reset().with_source(self.clone())
    }
}

/// How many times an inline round feeds the other stack's inline answers
/// back to its core and sends again (`run_inline`); later answers go to
/// the driver.
const ANSWER_PASSES: usize = 4;

/// What the lock guards: the core, the wakers of its connections and the
/// listeners by id.
pub(crate) struct State {
    pub(crate) core: Core,
    /// Looked up per event: hashed as the core's own id map is.
    wakers: HashMap<ConnId, Wakers, BuildHasherDefault<IdHasher>>,
    /// Each listener with the key its registry knows it by.
    listens: HashMap<ListenId, (SocketAddr, Arc<Listener<NetFlow>>)>,
    next_listen: ListenId,
    /// The intercept, if any: its holding listener and its queue.
    pub(crate) intercept: Option<InterceptReg>,
    /// Held SYNs whose `accept` runs: `true` once their handshake finished
    /// (the accepting future makes the flow).
    pub(crate) accepting: HashMap<ConnId, bool>,
    /// The DHCPv4 lease as published to waiters (`dhcp.rs`).
    pub(crate) dhcp: crate::dhcp::LeaseWatch,
    /// Set once the device failed: the driver is gone, nothing moves.
    pub(crate) dead: Option<DeviceError>,
    /// Frames made and not yet handed to the device, oldest first: what
    /// the shared transmit side could not take, or what waits behind the
    /// driver's backlog (`driver_sending`). The driver takes them.
    pub(crate) out: VecDeque<FrameBuf>,
    /// The driver holds frames the device has not taken yet: frames made
    /// meanwhile queue in `out` behind them (their order is kept).
    pub(crate) driver_sending: bool,
    /// The deadline the driver's sleep is armed for (`None`: none). A
    /// task running egress itself wakes the driver only when the core's
    /// next deadline is earlier.
    pub(crate) armed: Option<smoltcp::time::Instant>,
    /// Set by each inline round, taken by the driver's: the stack is busy,
    /// so the driver keeps a short sleep (`driver::HORIZON`).
    pub(crate) inline_active: bool,
    /// Reused by inline rounds for the frames egress makes.
    scratch: Vec<FrameBuf>,
    /// The time of the last round (driver's or inline): rounds never see
    /// the clock go back (a round may run with a time read before another
    /// thread's round, e.g. an inline delivery's sender's).
    pub(crate) clock: smoltcp::time::Instant,
}

/// The registered intercept.
pub(crate) struct InterceptReg {
    pub(crate) id: ListenId,
    pub(crate) key: ListenKey,
    tx: tokio::sync::mpsc::Sender<HeldSyn>,
}

/// What the driver hands out once the lock is released: a handshake that
/// finished on a listener (made into a flow), or a held SYN for the
/// intercept's queue.
pub(crate) enum Accepted {
    Flow { listener: Arc<Listener<NetFlow>>, id: ConnId, local: SocketAddr, remote: SocketAddr },
    Held { tx: tokio::sync::mpsc::Sender<HeldSyn>, id: ConnId, local: SocketAddr, remote: SocketAddr },
}

impl State {
    pub(crate) fn register_read(&mut self, id: ConnId, waker: &Waker) {
        store(&mut self.wakers.entry(id).or_default().read, waker);
    }

    pub(crate) fn register_write(&mut self, id: ConnId, waker: &Waker) {
        store(&mut self.wakers.entry(id).or_default().write, waker);
    }

    /// Drops connection `id`'s wakers, waking them (a read or write pending
    /// elsewhere sees the flow closed).
    pub(crate) fn forget_wakers(&mut self, id: ConnId) {
        if let Some(w) = self.wakers.remove(&id) {
            w.read.into_iter().chain(w.write).for_each(Waker::wake);
        }
    }

    /// Turns the core's events into wakers to wake and flows to dispatch
    /// (both done by the caller once the lock is released).
    pub(crate) fn drain_events(
        &mut self,
        now: smoltcp::time::Instant,
        wake: &mut Vec<Waker>,
        accepted: &mut Vec<Accepted>,
    ) {
        while let Some(event) = self.core.poll_event() {
            let (id, read, write) = match event {
                Event::Readable(id) => (id, true, false),
                Event::Writable(id) => (id, false, true),
                Event::Established(id) | Event::Closed(id) => (id, true, true),
                Event::Accepted { id, listen, local, remote } => {
                    if let Some(done) = self.accepting.get_mut(&id) {
                        // A held SYN's `accept` waits for this.
                        *done = true;
                        (id, true, true)
                    } else {
                        match self.listens.get(&listen) {
                            Some((_, l)) => accepted.push(Accepted::Flow { listener: l.clone(), id, local, remote }),
                            None => self.core.release(id, true, true),
                        }
                        continue;
                    }
                }
                Event::Syn { id, listen, local, remote } => {
                    match &self.intercept {
                        Some(reg) if reg.id == listen => {
                            accepted.push(Accepted::Held { tx: reg.tx.clone(), id, local, remote });
                        }
                        _ => {
                            tracing::debug!(listen, %local, %remote, "SYN for no intercept refused");
                            self.core.refuse_syn(now, id);
                        }
                    }
                    continue;
                }
            };
            if let Some(w) = self.wakers.get_mut(&id) {
                wake.extend(read.then(|| w.read.take()).flatten());
                wake.extend(write.then(|| w.write.take()).flatten());
            }
        }
        self.dhcp.publish(&self.core);
    }

    /// Marks the stack dead with `error`: every waker to wake and every
    /// listener's key to stop go to the caller (done once the lock is
    /// released). The intercept's queue ends (its `next` returns `None`
    /// once the SYNs already queued were taken).
    fn fail(&mut self, error: DeviceError) -> (Vec<Waker>, Vec<SocketAddr>) {
        self.dead = Some(error);
        self.intercept = None;
        self.dhcp.wake();
        let wake = self.wakers.drain().flat_map(|(_, w)| w.read.into_iter().chain(w.write)).collect();
        let keys = self.listens.values().map(|(key, _)| *key).collect();
        (wake, keys)
    }

    /// `Err` with the device's error once the stack is dead.
    pub(crate) fn alive(&self) -> Result<(), &DeviceError> {
        self.dead.as_ref().map_or(Ok(()), Err)
    }
}

/// The driver's last act when its device failed (or closed) with `error`:
/// the stack is marked dead, every flow, connect, accept and UDP socket
/// waiting on it woken (each then fails with the device's error) and its
/// listeners stopped (an `Incoming` on one ends).
pub(crate) fn device_failed(weak: &Weak<Shared>, error: &io::Error) {
    let Some(shared) = weak.upgrade() else { return };
    let (wake, keys) = shared.lock().fail(DeviceError::from_io(error));
    wake.into_iter().for_each(Waker::wake);
    shared.died.notify_waiters();
    shared.udp.wake_all();
    for key in keys {
        shared.listeners.unlisten(key);
    }
}

/// The driver's wake-up: a flag and the driver's waker. Cheaper than a
/// `Notify`, whose waiter list costs a lock to enable and to drop on every
/// driver round; a kick while one is pending is a single atomic swap.
#[derive(Default)]
pub(crate) struct Kick {
    pending: AtomicBool,
    waker: Mutex<Option<Waker>>,
    /// The driver holds received frames it has not fed to the core yet
    /// (set before it takes them from the device, cleared once fed, under
    /// the lock): an inline delivery now would overtake them, so it is
    /// refused and the frames queue behind them.
    pub(crate) rx_held: AtomicBool,
}

impl Kick {
    /// Asks the driver for a round.
    fn kick(&self) {
        if !self.pending.swap(true, Ordering::AcqRel) {
            let waker = self.waker.lock().unwrap_or_else(PoisonError::into_inner).take();
            if let Some(w) = waker {
                w.wake();
            }
        }
    }

    /// Takes the pending kick (at the start of a round: kicks from now on
    /// ask for the next one): whether there was one.
    pub(crate) fn take(&self) -> bool {
        self.pending.swap(false, Ordering::AcqRel)
    }

    /// Ready once kicked since the last [`take`](Kick::take).
    pub(crate) fn poll(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.pending.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        store(&mut self.waker.lock().unwrap_or_else(PoisonError::into_inner), cx.waker());
        // A kick between the load and the store found no waker: see it now.
        if self.pending.load(Ordering::Acquire) { Poll::Ready(()) } else { Poll::Pending }
    }
}

/// What flows and the driver share.
pub(crate) struct Shared {
    state: Mutex<State>,
    kick: Arc<Kick>,
    pub(crate) listeners: Listeners<NetFlow>,
    open_flows: AtomicUsize,
    base: tokio::time::Instant,
    /// UDP sockets' wake-ups (`udp.rs`).
    pub(crate) udp: crate::udp::UdpShell,
    /// Woken once the device failed ([`NetStack::device_error`]).
    died: Notify,
    /// The device's transmit side, if tasks other than the driver may use
    /// it ([`FrameDevice::direct_send`]).
    pub(crate) direct: Option<Arc<dyn DirectSend>>,
    /// The runtime the driver runs on: inline rounds run only there (their
    /// wake-ups and dispatched flows belong to it).
    runtime: tokio::runtime::Id,
    /// Closed once the driver returned and dropped the device
    /// ([`WeakNetStack::stopped`]); no value is ever sent.
    stopped: watch::Receiver<()>,
}

thread_local! {
    /// Set while this thread runs an inline delivery: a stack answering
    /// from inside one queues its frames for the other's driver instead of
    /// delivering them inline too (one level deep, no recursion).
    static DELIVERING: Cell<bool> = const { Cell::new(false) };
    /// Wake-ups of inline deliveries, left for the sender to run once it
    /// released its own lock ([`wake_deferred`]).
    static DEFERRED: std::cell::RefCell<Vec<Waker>> = const { std::cell::RefCell::new(Vec::new()) };
    /// While a stack hands frames to its shared transmit side, its lock
    /// held ([`send_direct`]; it wakes what deliveries defer): the time its
    /// round ran at, which an inline delivery of them runs at too (one
    /// clock read for the sender's round and the delivery; the frames
    /// took no time on the way), and the sender's runtime, which this
    /// thread runs (a stack sends only from its own: its driver, or an
    /// inline round that checked).
    static SENT: Cell<Option<(tokio::time::Instant, tokio::runtime::Id)>> = const { Cell::new(None) };
    /// While an inline round (not a delivery, not the driver) hands its
    /// frames to the shared transmit side: that stack's address, tagged
    /// with 1 once [`ANSWER`] holds frames for it (0: none).
    static ANSWER_TO: Cell<usize> = const { Cell::new(0) };
    /// The frames the other stack answered that round's delivery with,
    /// which the round takes itself ([`take_answer`]) instead of queuing
    /// them for its driver.
    static ANSWER: std::cell::RefCell<VecDeque<FrameBuf>> = const { std::cell::RefCell::new(VecDeque::new()) };
    /// An empty list kept for its allocation: an inline round's wake-ups
    /// are collected in it (a round inside a round takes a fresh one).
    static WAKE: std::cell::RefCell<Vec<Waker>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Gives `list` (emptied) back to `slot` for its allocation, unless the
/// slot already holds one.
fn keep_allocation(slot: &'static std::thread::LocalKey<std::cell::RefCell<Vec<Waker>>>, mut list: Vec<Waker>) {
    list.clear();
    slot.with_borrow_mut(|kept| {
        if kept.capacity() == 0 {
            *kept = list;
        }
    });
}

/// Hands `out`, made by a round at `at`, to the shared transmit side, the
/// stack's lock held: the caller runs [`wake_deferred`] once it released
/// it.
pub(crate) fn send_direct(
    shared: &Shared,
    direct: &dyn DirectSend,
    out: &mut VecDeque<FrameBuf>,
    at: tokio::time::Instant,
) {
    // Restored, not cleared: a delivery's own answer is sent from inside
    // this call (and queued, one level deep).
    let sent = SENT.replace(Some((at, shared.runtime)));
    direct.try_send(out);
    SENT.set(sent);
}

/// Wakes what inline deliveries from this thread left (see `DEFERRED`):
/// called by a sender once its lock is released.
pub(crate) fn wake_deferred() {
    let mut wake = DEFERRED.with_borrow_mut(std::mem::take);
    if wake.capacity() == 0 {
        return;
    }
    wake.drain(..).for_each(Waker::wake);
    // What wakers deferred meanwhile stays for the next call.
    keep_allocation(&DEFERRED, wake);
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Wakes the driver (something to send, a window to update, a close).
    pub(crate) fn kick(&self) {
        self.kick.kick();
    }

    /// The stack's clock: tokio's, so a paused runtime drives it.
    pub(crate) fn now(&self) -> smoltcp::time::Instant {
        self.time(tokio::time::Instant::now())
    }

    /// The stack's time at `at` (read off tokio's clock).
    pub(crate) fn time(&self, at: tokio::time::Instant) -> smoltcp::time::Instant {
        let since = at.saturating_duration_since(self.base);
        smoltcp::time::Instant::from_micros(since.as_micros().min(i64::MAX as u128) as i64)
    }

    pub(crate) fn instant(&self, t: smoltcp::time::Instant) -> tokio::time::Instant {
        self.base + Duration::from_micros(t.total_micros().max(0) as u64)
    }

    /// After a flow operation that may have made something to send (data,
    /// a window update, a FIN, a SYN): with a shared transmit side the
    /// calling task runs egress itself and hands the frames to the device
    /// (a round trip then needs no driver round); otherwise, or off the
    /// stack's runtime (a flow dropped after its runtime, or used from
    /// another), the driver is woken.
    pub(crate) fn flush(self: &Arc<Self>, st: MutexGuard<'_, State>) {
        if self.direct.is_none() || !self.on_own_runtime() {
            drop(st);
            self.kick();
            return;
        }
        self.run_inline(st, None, None);
    }

    /// Whether the calling thread runs the stack's runtime.
    fn on_own_runtime(&self) -> bool {
        tokio::runtime::Handle::try_current().is_ok_and(|h| h.id() == self.runtime)
    }

    /// A round in the calling task: `rx` into the core, egress, the frames
    /// to the shared transmit side (when the driver holds none and there is
    /// one; else queued for the driver), events into wake-ups. The driver
    /// is woken when frames wait for it or the core's next deadline is
    /// earlier than its sleep. Timers stay the driver's. The round runs at
    /// `at` (an inline delivery's sender's time) or, without one, reads
    /// the clock.
    fn run_inline(
        self: &Arc<Self>,
        mut guard: MutexGuard<'_, State>,
        rx: Option<&mut VecDeque<FrameBuf>>,
        at: Option<tokio::time::Instant>,
    ) {
        let st = &mut *guard;
        if st.dead.is_some() {
            return;
        }
        let at = at.unwrap_or_else(tokio::time::Instant::now);
        let now = self.time(at).max(st.clock);
        st.clock = now;
        if let Some(rx) = rx {
            // The sender's queue as a vector and back: no frame moved
            // (at most rotated to the allocation's front).
            let mut frames = Vec::from(std::mem::take(rx));
            st.core.handle_frames(now, &mut frames);
            *rx = VecDeque::from(frames);
        }
        let mut produced = std::mem::take(&mut st.scratch);
        // The other stack's answers to our frames (ACKs, window updates)
        // come back here when delivered inline (`take_answer`): fed to the
        // core in this round, and what they free sent, a few times at
        // most (each pass needs the other side's answer to make room).
        let answers = !DELIVERING.get();
        for pass in 0..=ANSWER_PASSES {
            // Unconditional: a delivery whose ACK smoltcp delays leaves no
            // connection dirty, so the pass is cheap. Skipping it when
            // `has_work` is false measured 10-15% slower on
            // netstack-mem-lo, for no reason found but perhaps code layout
            // (docs/netstack-profile.md: the `rtt3` section, and the
            // mem-1500 section at the end, where layout alone moves it).
            st.core.poll_transmit(now, &mut produced);
            if st.out.is_empty() {
                // The round's frames become the queue, the empty queue's
                // allocation the next pass's vector: no frame moved.
                let spare = std::mem::replace(&mut st.out, VecDeque::from(std::mem::take(&mut produced)));
                produced = Vec::from(spare);
            } else {
                st.out.extend(produced.drain(..));
            }
            if st.driver_sending || st.out.is_empty() {
                break;
            }
            let Some(direct) = &self.direct else { break };
            let take = answers && pass < ANSWER_PASSES;
            if take {
                ANSWER_TO.set(Arc::as_ptr(self) as usize);
            }
            send_direct(self, &**direct, &mut st.out, at);
            if !take || ANSWER_TO.replace(0) & 1 == 0 {
                break;
            }
            // The answer as a vector (drained by the core) and back: no
            // frame moved, the allocation kept.
            let mut rx = Vec::from(ANSWER.with_borrow_mut(std::mem::take));
            st.core.handle_frames(now, &mut rx);
            ANSWER.with_borrow_mut(|answer| *answer = VecDeque::from(rx));
        }
        st.scratch = produced;
        let mut kick = !st.out.is_empty();
        st.inline_active = true;
        let mut wake = WAKE.with_borrow_mut(std::mem::take);
        let (mut accepted, mut udp_wake) = (Vec::new(), crate::udp::Wake::default());
        st.drain_events(now, &mut wake, &mut accepted);
        udp_wake.collect(&mut st.core);
        kick |= st.core.poll_timeout().is_some_and(|d| st.armed.is_none_or(|armed| d < armed));
        drop(guard);
        udp_wake.wake(self);
        if DELIVERING.get() {
            // Inside an inline delivery the sending stack's lock is held:
            // nothing that may run user code (a listener's callback, run as
            // it is dispatched; a waker) runs here, where touching that
            // stack would deadlock. The sender wakes these.
            DEFERRED.with_borrow_mut(|d| d.append(&mut wake));
            if !accepted.is_empty() {
                let shared = self.clone();
                tokio::spawn(async move { dispatch(&shared, &mut accepted) });
            }
        } else {
            wake.drain(..).for_each(Waker::wake);
            wake_deferred();
            dispatch(self, &mut accepted);
        }
        keep_allocation(&WAKE, wake);
        if kick {
            self.kick();
        }
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
        self.kick.kick();
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
pub struct WeakNetStack {
    shared: Weak<Shared>,
    stopped: watch::Receiver<()>,
}

impl WeakNetStack {
    /// The stack, while any handle or flow of it exists.
    pub fn upgrade(&self) -> Option<NetStack> {
        self.shared.upgrade().map(|shared| NetStack { shared })
    }

    /// Resolves once the stack's driver has stopped and closed the device
    /// (at once if it already has): a TAP device is then gone, or free for
    /// the next opener. The driver stops soon after the last handle and
    /// flow are gone ([`upgrade`](WeakNetStack::upgrade) gives `None` from
    /// that moment, a little earlier), or when its runtime shuts down.
    pub async fn stopped(&self) {
        let mut stopped = self.stopped.clone();
        // Nothing is ever sent: `changed` ends only with the sender.
        while stopped.changed().await.is_ok() {}
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
        let kick = Arc::new(Kick::default());
        let state = State {
            core,
            wakers: HashMap::default(),
            listens: HashMap::new(),
            next_listen: 1,
            intercept: None,
            accepting: HashMap::new(),
            dhcp: crate::dhcp::LeaseWatch::new(),
            dead: None,
            out: VecDeque::new(),
            driver_sending: false,
            armed: None,
            inline_active: false,
            scratch: Vec::new(),
            clock: smoltcp::time::Instant::ZERO,
        };
        let direct = device.direct_send();
        let (stopped_tx, stopped) = watch::channel(());
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            kick: kick.clone(),
            listeners: Listeners::new(),
            open_flows: AtomicUsize::new(0),
            base,
            udp: Default::default(),
            died: Notify::new(),
            direct,
            runtime: tokio::runtime::Handle::current().id(),
            stopped,
        });
        device.set_inline_receiver(InlineReceiver { shared: Arc::downgrade(&shared) });
        let weak = Arc::downgrade(&shared);
        tokio::spawn(async move {
            // `drive` owns the device: it is closed once this returns.
            crate::driver::drive(weak, kick, device).await;
            drop(stopped_tx);
        });
        NetStack { shared }
    }

    /// The shared state (for the shell's other modules: `udp.rs`).
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// A reference that does not keep the stack alive. Once the last handle
    /// and flow are gone the driver stops and closes the device.
    pub fn downgrade(&self) -> WeakNetStack {
        WeakNetStack { shared: Arc::downgrade(&self.shared), stopped: self.shared.stopped.clone() }
    }

    /// Resolves once the stack's device failed or closed, with why (at
    /// once if it already has); never while the device works. From then
    /// on every operation fails with this error.
    pub async fn device_error(&self) -> DeviceError {
        loop {
            let mut died = std::pin::pin!(self.shared.died.notified());
            died.as_mut().enable();
            if let Err(e) = self.shared.lock().alive() {
                return e.clone();
            }
            died.await;
        }
    }

    /// Our addresses (IPv4, global IPv6, link-local IPv6).
    pub fn addrs(&self) -> Vec<IpAddr> {
        self.shared.lock().core.addrs().to_vec()
    }

    /// Sockets the stack holds right now, whether or not a flow owns them:
    /// open, half-open, closing and in TIME_WAIT (10 s). Reaped sockets
    /// are gone from this count and their ports are free again.
    pub fn sockets(&self) -> usize {
        self.shared.lock().core.sockets()
    }

    /// Ports taken right now: TCP's ephemeral and listening ones plus bound
    /// UDP ones (separate spaces, both counted).
    pub fn ports_in_use(&self) -> usize {
        self.shared.lock().core.ports_in_use()
    }

    /// TCP resets given up on so far: a connection let go with an RST
    /// (aborted, or timed out) keeps its socket until the RST left, which
    /// on Ethernet may wait for the neighbour's answer (ARP, NDP); with no
    /// answer for 3 s the RST is dropped and counted here.
    pub fn tcp_resets_abandoned(&self) -> u64 {
        self.shared.lock().core.resets_abandoned()
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
        self.stop_intercept();
        let old = self.shared.lock().core.transparent_port();
        if let Some(port) = old {
            self.unlisten(port);
        }
        let listening = self.listen(0, keepalive, callback)?;
        let mut st = self.shared.lock();
        if st.core.is_listening(listening.local_addr()) {
            st.core.set_transparent(Some(Transparent { port: listening.port(), own: Vec::new() }));
        }
        Ok(listening)
    }

    /// Transparent listening where each SYN waits for a decision: the
    /// returned [`Intercept`] yields a [`HeldSyn`] per SYN to any address
    /// not ours (any port), and to every port of the addresses in `own` (a
    /// gateway's: they must be ours) unless a listener exists on that
    /// address and port. Nothing is answered until the held SYN is
    /// [accepted](HeldSyn::accept) (SYN-ACK, then the flow, whose
    /// [`src`](conflux_tcp::TcpFlow::src) is what the peer dialled) or
    /// [refused](HeldSyn::refuse) (RST); dropping it undecided refuses it.
    /// A SYN the peer retransmits while it is held is the same held SYN; a
    /// held SYN the peer resets, or one left undecided for the connect
    /// timeout ([`StackConfig::connect_timeout`](crate::StackConfig::connect_timeout),
    /// or the handshake timeout when longer), is forgotten (its `accept`
    /// fails; the peer's next retransmission is a new held SYN). At most
    /// [`max_half_open`](crate::StackConfig::max_half_open) SYNs are held or
    /// in their handshake at once (a new one evicts the oldest); the queue
    /// of the `Intercept` holds as many: a SYN finding it full is forgotten
    /// unanswered, so its peer retransmits it (as a kernel does with a full
    /// accept queue).
    ///
    /// A second intercept (or [`listen_transparent`](NetStack::listen_transparent))
    /// replaces the first. Dropping the `Intercept` stops intercepting: SYNs
    /// still held (queued or in the caller's hands) are refused with an RST,
    /// handshakes whose `accept` still runs are reset (that `accept`
    /// fails), and later SYNs are answered as for a closed port. Flows
    /// already accepted are not affected.
    ///
    /// Errors: [`ListenError::AddrNotAvailable`] when an `own` address is
    /// not one of ours, [`ListenError::Disconnected`] after
    /// [`disconnect`](TcpStack::disconnect), [`ListenError::Other`] (a
    /// [`DeviceError`]) once the device failed, which also ends the queue.
    ///
    /// The usernet pattern: decide after connecting to the original
    /// destination elsewhere.
    ///
    /// ```
    /// use conflux_flow::FlowExt;
    /// use conflux_netstack::{LinkConfig, NetStack, StackConfig, link_pair};
    /// use conflux_tcp::{ConnectOptions, TcpFlow, TcpStack};
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let (a, b) = link_pair(LinkConfig::ethernet());
    /// let guest = NetStack::new(
    ///     StackConfig::new().ipv4("10.0.2.100".parse().unwrap(), 24).gateway_v4("10.0.2.2".parse().unwrap()),
    ///     a,
    /// );
    /// let gateway = NetStack::new(StackConfig::new().ipv4("10.0.2.2".parse().unwrap(), 24).mac([2, 0, 0, 0, 0, 2]), b);
    /// let mut intercept = gateway.intercept(vec!["10.0.2.2".parse().unwrap()], None).unwrap();
    /// tokio::spawn(async move {
    ///     while let Some(syn) = intercept.next().await {
    ///         // Connect to `syn.dst()` elsewhere first; here: port 80 is "up", others refused.
    ///         if syn.dst().port() != 80 {
    ///             syn.refuse();
    ///             continue;
    ///         }
    ///         tokio::spawn(async move {
    ///             let Ok(mut flow) = syn.accept().await else { return };
    ///             let to = flow.src();
    ///             let _ = flow.write(format!("you dialled {to}")).await;
    ///             let _ = flow.close().await;
    ///         });
    ///     }
    /// });
    /// let mut flow = guest.create_connection("93.184.215.14:80".parse().unwrap(), ConnectOptions::new()).await.unwrap();
    /// assert_eq!(flow.read_to_end().await.unwrap(), b"you dialled 93.184.215.14:80");
    /// let refused = guest.create_connection("10.0.2.2:22".parse().unwrap(), ConnectOptions::new()).await;
    /// assert!(matches!(refused, Err(conflux_tcp::ConnectError::Refused { .. })));
    /// # });
    /// ```
    pub fn intercept(&self, own: Vec<IpAddr>, keepalive: Option<Keepalive>) -> Result<Intercept, ListenError> {
        self.stop_intercept();
        let old = self.shared.lock().core.transparent_port();
        if let Some(port) = old {
            // A transparent listener (`listen_transparent`) goes.
            self.unlisten(port);
        }
        let now = self.shared.now();
        let mut st = self.shared.lock();
        st.alive().map_err(|e| ListenError::Other(Box::new(e.clone())))?;
        if let Some(ip) = own.iter().find(|ip| !st.core.addrs().contains(ip)) {
            return Err(ListenError::AddrNotAvailable(SocketAddr::new(*ip, 0)));
        }
        let (key, owns) = st.core.reserve(conflux_tcp::any_addr(0)).map_err(|e| match e {
            BindRefused::Disconnected => ListenError::Disconnected,
            BindRefused::NotOurs(a) => ListenError::AddrNotAvailable(a),
            BindRefused::Exhausted => ListenError::Other("the ephemeral port range is exhausted".into()),
        })?;
        // Another intercept registered meanwhile (a race of two callers):
        // the last one wins, as with two calls in a row.
        if let Some(reg) = st.intercept.take() {
            st.core.unlisten_refusing(now, reg.key, reg.id);
        }
        let id = st.next_listen;
        st.next_listen += 1;
        st.core.listen(key, id, keepalive, owns);
        st.core.set_hold(key, true);
        st.core.set_transparent(Some(Transparent { port: key.port(), own }));
        let (tx, rx) = tokio::sync::mpsc::channel(st.core.config().max_half_open.max(1));
        st.intercept = Some(InterceptReg { id, key, tx });
        drop(st);
        self.shared.kick();
        Ok(Intercept::new(self.shared.clone(), id, rx))
    }

    /// Stops the intercept, if any (its held SYNs are refused).
    fn stop_intercept(&self) {
        let now = self.shared.now();
        let mut st = self.shared.lock();
        if let Some(reg) = st.intercept.take() {
            st.core.unlisten_refusing(now, reg.key, reg.id);
            drop(st);
            self.shared.kick();
        }
    }

    fn stop_fn(&self, key: SocketAddr, id: ListenId) -> conflux_tcp::StopFn {
        let weak = Arc::downgrade(&self.shared);
        Box::new(move || {
            if let Some(shared) = weak.upgrade() {
                let mut st = shared.lock();
                st.core.unlisten(key, id);
                st.listens.remove(&id);
                drop(st);
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
            let mut st = self.shared.lock();
            st.forget_wakers(id);
            st.core.release(id, true, true);
            drop(st);
            self.shared.kick();
        }
    }
}

impl TcpStack for NetStack {
    type Flow = NetFlow;

    async fn create_connection(&self, addr: SocketAddr, options: ConnectOptions) -> Result<NetFlow, ConnectError> {
        let addr = conflux_tcp::canonical_addr(addr);
        let (id, local, timeout) = {
            let mut st = self.shared.lock();
            if st.core.is_disconnected() {
                return Err(ConnectError::Disconnected);
            }
            st.alive().map_err(|e| ConnectError::other(addr, e.clone()))?;
            if addr.port() == 0 || addr.ip().is_unspecified() || addr.ip().is_multicast() {
                return Err(ConnectError::other(addr, "not an address one can connect to"));
            }
            let src = st.core.source_for(addr.ip()).ok_or(ConnectError::NoRoute { addr })?;
            let timeout = options.timeout.unwrap_or(st.core.config().connect_timeout);
            let (id, local) =
                st.core.connect(src, addr, options.keepalive).map_err(|e| ConnectError::other(addr, e))?;
            self.shared.flush(st);
            (id, local, timeout)
        };
        let mut guard = ConnectGuard { shared: &self.shared, id: Some(id) };
        let established = poll_fn(|cx| {
            let mut st = self.shared.lock();
            if let Err(e) = st.alive() {
                return Poll::Ready(Err(ConnectError::other(addr, e.clone())));
            }
            match st.core.connect_state(id) {
                ConnectState::Pending => {
                    st.register_write(id, cx.waker());
                    Poll::Pending
                }
                ConnectState::Failed => Poll::Ready(Err(ConnectError::Refused { addr })),
                ConnectState::Established => Poll::Ready(Ok(())),
            }
        });
        match tokio::time::timeout(timeout, established).await {
            Ok(Ok(())) => {
                guard.id = None;
                Ok(NetFlow::new(self.shared.clone(), id, local, addr))
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
        let mut id = 0;
        let (listening, listener) = self.shared.listeners.listen(addr, Callback::new(callback), |addr| {
            let mut st = self.shared.lock();
            st.alive().map_err(|e| ListenError::Other(Box::new(e.clone())))?;
            let (key, owns) = st.core.reserve(addr).map_err(|e| match e {
                BindRefused::Disconnected => ListenError::Disconnected,
                BindRefused::NotOurs(a) => ListenError::AddrNotAvailable(a),
                BindRefused::Exhausted => ListenError::Other("the ephemeral port range is exhausted".into()),
            })?;
            owns_port = owns;
            id = st.next_listen;
            st.next_listen += 1;
            drop(st);
            Ok((key, self.stop_fn(key, id)))
        })?;
        let mut st = self.shared.lock();
        if listener.is_stopped() {
            // Replaced or unlistened before we got here (or disconnected).
            if owns_port {
                st.core.unreserve(listening.port());
            }
        } else {
            st.listens.insert(id, (listening.local_addr(), Arc::new(listener)));
            st.core.listen(listening.local_addr(), id, keepalive, owns_port);
        }
        Ok(listening)
    }

    fn unlisten_on(&self, addr: SocketAddr) -> bool {
        self.shared.listeners.unlisten(addr)
    }

    async fn disconnect(&self) {
        let grace = self.shared.lock().core.config().disconnect_grace;
        self.shared
            .listeners
            .disconnect(grace, || {
                let mut st = self.shared.lock();
                st.core.close_all();
                // The intercept's queue ends (its `next` returns `None`).
                st.intercept = None;
                drop(st);
                self.shared.kick();
            })
            .await;
    }

    fn open_flows(&self) -> usize {
        self.shared.open_flows.load(Ordering::SeqCst)
    }
}

/// [`InlineReceiver::try_deliver`]: `frames` into the stack in the
/// calling task, unless this thread is already delivering (the answer to
/// an inline delivery goes to the driver), the stack is gone or dead, its
/// lock is held elsewhere, or the thread does not run the stack's runtime.
pub(crate) fn deliver_inline(weak: &Weak<Shared>, frames: &mut VecDeque<FrameBuf>) -> bool {
    if DELIVERING.get() {
        return take_answer(weak, frames);
    }
    let Some(shared) = weak.upgrade() else { return false };
    // From a stack's send, this thread runs the sender's runtime: the
    // same one, or not ours (no second look at the thread's runtime).
    let sent = SENT.get();
    let own = match sent {
        Some((_, runtime)) => runtime == shared.runtime,
        None => shared.on_own_runtime(),
    };
    if !own {
        return false;
    }
    let Ok(st) = shared.state.try_lock() else { return false };
    if st.dead.is_some() || shared.kick.rx_held.load(Ordering::SeqCst) {
        return false;
    }
    DELIVERING.set(true);
    shared.run_inline(st, Some(frames), sent.map(|(at, _)| at));
    DELIVERING.set(false);
    if sent.is_none() {
        // Not called by a stack's send (a device's own use): nothing of
        // ours is locked here, and nobody else would wake these.
        wake_deferred();
    }
    true
}

/// An inline delivery's answer, addressed to the stack whose round sent
/// the frames being delivered: kept for that round, which holds its lock
/// and feeds them to its core once the delivery returned (`run_inline`),
/// instead of queuing them and waking its driver (on a multi_thread
/// runtime that driver is often on the other worker: each bulk delivery's
/// ACKs cost a cross-thread wake-up and a driver round). Refused (queued
/// as before) when that round does not take answers or its driver holds
/// received frames these would overtake.
fn take_answer(weak: &Weak<Shared>, frames: &mut VecDeque<FrameBuf>) -> bool {
    if frames.is_empty() {
        // A round that made nothing (the transmit side is handed every
        // round's frames, none included): no answer to take.
        return false;
    }
    let to = ANSWER_TO.get();
    if to == 0 || to & !1 != weak.as_ptr() as usize {
        return false;
    }
    // The sender's round holds its lock and a handle: it is alive.
    let Some(shared) = weak.upgrade() else { return false };
    if shared.kick.rx_held.load(Ordering::SeqCst) {
        return false;
    }
    ANSWER.with_borrow_mut(|answer| answer.append(frames));
    ANSWER_TO.set(to | 1);
    true
}

/// Hands finished handshakes to their listeners (outside the lock).
pub(crate) fn dispatch(shared: &Arc<Shared>, accepted: &mut Vec<Accepted>) {
    for a in accepted.drain(..) {
        match a {
            Accepted::Flow { listener, id, local, remote } => {
                let flow = NetFlow::new(shared.clone(), id, local, remote);
                if let Err(flow) = listener.dispatch(flow) {
                    drop(flow);
                }
            }
            Accepted::Held { tx, id, local, remote } => {
                use tokio::sync::mpsc::error::TrySendError;
                match tx.try_send(HeldSyn::new(shared.clone(), id, remote, local)) {
                    Ok(()) => {}
                    Err(TrySendError::Full(held)) => {
                        tracing::debug!(%local, %remote, "intercept queue full: SYN left unanswered");
                        held.forget();
                    }
                    // The intercept is gone: refused as it drops.
                    Err(TrySendError::Closed(held)) => drop(held),
                }
            }
        }
    }
}

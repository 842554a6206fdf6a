//! [`Intercept`] and [`HeldSyn`]: transparent listening where each SYN
//! waits for the caller's decision ([`NetStack::intercept`](crate::NetStack::intercept)).
//!
//! The core holds the SYN (nothing answered); the driver hands it to the
//! intercept's bounded queue outside the lock; `accept` lets the core's
//! handshake proceed and waits for it, `refuse` (or drop) answers RST.

use std::future::poll_fn;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use conflux_tcp::ConnectError;
use tokio::sync::mpsc;

use crate::core::{ConnId, ConnectState, ListenId};
use crate::flow::NetFlow;
use crate::stack::Shared;

/// The SYNs a [`NetStack::intercept`](crate::NetStack::intercept) holds,
/// one [`HeldSyn`] each, in arrival order: a [`Stream`](futures_core::Stream)
/// and [`next`](Intercept::next). Ends (`None`) once replaced by another
/// intercept or after [`disconnect`](conflux_tcp::TcpStack::disconnect).
/// Dropping it stops intercepting (see `NetStack::intercept`).
pub struct Intercept {
    shared: Arc<Shared>,
    id: ListenId,
    rx: mpsc::Receiver<HeldSyn>,
}

impl std::fmt::Debug for Intercept {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Intercept").field("queued", &self.rx.len()).finish_non_exhaustive()
    }
}

impl Intercept {
    pub(crate) fn new(shared: Arc<Shared>, id: ListenId, rx: mpsc::Receiver<HeldSyn>) -> Intercept {
        Intercept { shared, id, rx }
    }

    /// The next held SYN (SYNs forgotten while queued, by their peer's
    /// reset or the handshake timeout, are skipped); `None` once the
    /// intercept ended.
    pub async fn next(&mut self) -> Option<HeldSyn> {
        poll_fn(|cx| self.poll_held(cx)).await
    }

    fn poll_held(&mut self, cx: &mut Context<'_>) -> Poll<Option<HeldSyn>> {
        loop {
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some(mut held)) => {
                    if held.is_held() {
                        return Poll::Ready(Some(held));
                    }
                    held.decided = true;
                }
                other => return other,
            }
        }
    }
}

impl futures_core::Stream for Intercept {
    type Item = HeldSyn;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<HeldSyn>> {
        self.get_mut().poll_held(cx)
    }
}

impl Drop for Intercept {
    fn drop(&mut self) {
        let now = self.shared.now();
        let mut st = self.shared.lock();
        if st.intercept.as_ref().is_some_and(|reg| reg.id == self.id) {
            let reg = st.intercept.take().expect("checked");
            st.core.unlisten_refusing(now, reg.key, reg.id);
        }
        drop(st);
        self.shared.kick();
        // The queue's SYNs are refused as `rx` drops them (outside the lock).
        self.rx.close();
    }
}

/// A SYN waiting for a decision: nothing was answered yet.
/// [`accept`](HeldSyn::accept) it or [`refuse`](HeldSyn::refuse) it;
/// dropped undecided, it is refused.
pub struct HeldSyn {
    shared: Arc<Shared>,
    id: ConnId,
    src: SocketAddr,
    dst: SocketAddr,
    decided: bool,
}

impl std::fmt::Debug for HeldSyn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeldSyn").field("src", &self.src).field("dst", &self.dst).finish_non_exhaustive()
    }
}

/// Gives up on an `accept` whose future was dropped or failed.
struct AcceptGuard<'a> {
    shared: &'a Arc<Shared>,
    id: Option<ConnId>,
}

impl Drop for AcceptGuard<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            let now = self.shared.now();
            let mut st = self.shared.lock();
            st.accepting.remove(&id);
            st.forget_wakers(id);
            st.core.abandon_syn(now, id);
            drop(st);
            self.shared.kick();
        }
    }
}

impl HeldSyn {
    pub(crate) fn new(shared: Arc<Shared>, id: ConnId, src: SocketAddr, dst: SocketAddr) -> HeldSyn {
        HeldSyn { shared, id, src, dst, decided: false }
    }

    /// The peer (who sent the SYN).
    pub fn src(&self) -> SocketAddr {
        self.src
    }

    /// What the peer dialled (the original destination).
    pub fn dst(&self) -> SocketAddr {
        self.dst
    }

    fn is_held(&self) -> bool {
        self.shared.lock().core.handshake_state(self.id) == ConnectState::Pending
    }

    /// Answers the SYN (SYN-ACK) and waits for the handshake: the flow
    /// once established ([`src`](conflux_tcp::TcpFlow::src) = [`dst`](HeldSyn::dst),
    /// [`dst`](conflux_tcp::TcpFlow::dst) = [`src`](HeldSyn::src)). Bounded
    /// by the stack's [`handshake_timeout`](crate::StackConfig::handshake_timeout)
    /// (counted from `accept`) and [`connect_timeout`](crate::StackConfig::connect_timeout),
    /// whichever is shorter (`Timeout`, the handshake is reset). `Refused` when the handshake
    /// failed (the peer reset it); `Other` when the SYN was no longer held
    /// (the peer reset it, it expired or was evicted, the intercept
    /// stopped, or, with a [`DeviceError`](crate::DeviceError) as its
    /// source, the stack's device failed); `Disconnected` after
    /// `disconnect`. Dropping the future resets the handshake.
    pub async fn accept(mut self) -> Result<NetFlow, ConnectError> {
        self.decided = true;
        let (id, src, dst) = (self.id, self.src, self.dst);
        let shared = self.shared.clone();
        let now = shared.now();
        let timeout = {
            let mut st = shared.lock();
            if st.core.is_disconnected() {
                return Err(ConnectError::Disconnected);
            }
            st.alive().map_err(|e| ConnectError::other(src, e.clone()))?;
            if !st.core.accept_syn(now, id) {
                return Err(ConnectError::other(src, "the SYN is no longer held (reset, expired or evicted)"));
            }
            st.accepting.insert(id, false);
            let timeouts = (st.core.config().connect_timeout, st.core.config().handshake_timeout);
            // The SYN-ACK from this task when it can (a shared transmit
            // side, the stack's runtime), not a driver round woken for it.
            shared.flush(st);
            timeouts
        };
        let (timeout, handshake_timeout) = timeout;
        let start = tokio::time::Instant::now();
        let mut guard = AcceptGuard { shared: &shared, id: Some(id) };
        let established = poll_fn(|cx| {
            let mut st = shared.lock();
            if st.accepting.get(&id) == Some(&true) {
                return Poll::Ready(Ok(()));
            }
            if let Err(e) = st.alive() {
                return Poll::Ready(Err(ConnectError::other(src, e.clone())));
            }
            match st.core.handshake_state(id) {
                ConnectState::Failed if st.core.is_disconnected() => Poll::Ready(Err(ConnectError::Disconnected)),
                // The core gave up on the handshake (its timeout).
                ConnectState::Failed if start.elapsed() >= handshake_timeout => {
                    Poll::Ready(Err(ConnectError::Timeout { addr: src }))
                }
                ConnectState::Failed => Poll::Ready(Err(ConnectError::Refused { addr: src })),
                // Established in the core: the Accepted event (which
                // marks it) is drained in the same round.
                ConnectState::Pending | ConnectState::Established => {
                    st.register_write(id, cx.waker());
                    Poll::Pending
                }
            }
        });
        match tokio::time::timeout(timeout, established).await {
            Ok(Ok(())) => {
                guard.id = None;
                shared.lock().accepting.remove(&id);
                Ok(NetFlow::new(shared.clone(), id, dst, src))
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(ConnectError::Timeout { addr: src }),
        }
    }

    /// Refuses the SYN: an RST goes to the peer (its connect fails at once,
    /// as for a closed port).
    pub fn refuse(self) {
        // An undecided `HeldSyn` refuses as it drops.
        drop(self);
    }

    /// Forgets the SYN unanswered (its peer will retransmit it).
    pub(crate) fn forget(mut self) {
        self.decided = true;
        self.shared.lock().core.forget_syn(self.id);
    }
}

impl Drop for HeldSyn {
    fn drop(&mut self) {
        if self.decided {
            return;
        }
        let now = self.shared.now();
        let mut st = self.shared.lock();
        st.core.refuse_syn(now, self.id);
        drop(st);
        self.shared.kick();
    }
}

//! UDP: [`UdpSocket`] (bind, `send_to`, `recv_from`) and [`UdpIntercept`]
//! (the transparent receive a user-mode forwarder needs: every datagram to
//! an address that is not ours, reported with its original destination, and
//! replies sent from any address). The shell side: handles, wake-ups and
//! error mapping; the datagrams, queues and frames are the core's
//! (`core/udp.rs`).
//!
//! Limits (documented, not bugs): a datagram fits the device's MTU (no IP
//! fragmentation either way: [`UdpError::TooLarge`] beyond it, received
//! fragments are dropped); a receive queue holds at most 256 datagrams or
//! 1 MiB of payload (more are dropped and counted, as a kernel socket's
//! full buffer drops them); no ICMP port unreachable for a port nothing is
//! bound on.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::pin::pin;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use tokio::sync::Notify;

use crate::core::{Core, UdpId, UdpRecv, UdpRefused};
use crate::stack::{DeviceError, NetStack, Shared};

/// Why a UDP operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UdpError {
    /// Another UDP socket is bound on the address (or a wildcard covering it).
    #[error("UDP address {0} is in use")]
    AddrInUse(SocketAddr),
    /// The address to bind (or send from) is not one of this stack's.
    #[error("UDP address {0} is not an address of this stack")]
    AddrNotAvailable(SocketAddr),
    /// The datagram does not fit the device's MTU (no IP fragmentation).
    #[error("a UDP datagram of {len} bytes does not fit the MTU: at most {max} bytes")]
    TooLarge {
        /// The payload's length.
        len: usize,
        /// The largest payload for the destination's family.
        max: usize,
    },
    /// Nothing can be sent there: port 0, an unspecified address, or a family
    /// other than the socket's (or than the source's).
    #[error("{0} is not an address a UDP datagram can go to from here")]
    InvalidDestination(SocketAddr),
    /// `send_from`'s source is unspecified, multicast, port 0 or of the other family.
    #[error("{0} is not an address a UDP datagram can come from")]
    InvalidSource(SocketAddr),
    /// No route to the destination (not on a link of ours, no gateway).
    #[error("no route to {0}")]
    NoRoute(SocketAddr),
    /// No ephemeral port is free.
    #[error("the ephemeral UDP port range is exhausted")]
    PortsExhausted,
    /// The intercept was replaced by another.
    #[error("the UDP socket is closed")]
    Closed,
    /// The stack was disconnected.
    #[error("the stack was disconnected")]
    Disconnected,
    /// The stack's device failed: nothing is sent or received any more
    /// (datagrams received before are still returned).
    #[error(transparent)]
    DeviceFailed(DeviceError),
}

impl UdpError {
    fn refused(e: UdpRefused, addr: SocketAddr, len: usize) -> UdpError {
        match e {
            UdpRefused::Disconnected => UdpError::Disconnected,
            UdpRefused::NotOurs => UdpError::AddrNotAvailable(addr),
            UdpRefused::InUse => UdpError::AddrInUse(addr),
            UdpRefused::Exhausted => UdpError::PortsExhausted,
            UdpRefused::TooLarge { max } => UdpError::TooLarge { len, max },
            // Callers wait for room instead.
            UdpRefused::Full => UdpError::Closed,
        }
    }
}

/// A received datagram reported by [`UdpIntercept::recv`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    /// The payload.
    pub data: Bytes,
    /// Who sent it.
    pub src: SocketAddr,
    /// Where it was going (the original destination).
    pub dst: SocketAddr,
}

/// The shell's UDP state (in the stack's shared part, beside the core's
/// lock, never held with it): each socket's wake-up.
#[derive(Default)]
pub(crate) struct UdpShell {
    notify: Mutex<HashMap<UdpId, Arc<Notify>>>,
    /// Woken when the transmit queue has room again.
    tx_room: Notify,
}

impl UdpShell {
    fn sockets(&self) -> std::sync::MutexGuard<'_, HashMap<UdpId, Arc<Notify>>> {
        self.notify.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Wakes every socket and sender (the device failed: each sees it).
    pub(crate) fn wake_all(&self) {
        self.sockets().values().for_each(|n| n.notify_waiters());
        self.tx_room.notify_waiters();
    }
}

/// The driver's UDP wake-ups of one round: collected from the core under its
/// lock, woken once it is released. (A socket registers its wake-up after
/// binding: a datagram queued meanwhile is found by its first receive, which
/// looks at the queue before it waits.)
#[derive(Default)]
pub(crate) struct Wake {
    ready: Vec<UdpId>,
    writable: bool,
}

impl Wake {
    /// Takes the core's UDP news.
    pub(crate) fn collect(&mut self, core: &mut Core) {
        while let Some(id) = core.udp_poll_ready() {
            self.ready.push(id);
        }
        self.writable |= core.udp_take_writable();
    }

    /// Wakes the sockets with news (and the senders waiting for room).
    pub(crate) fn wake(&mut self, shared: &Shared) {
        if !self.ready.is_empty() {
            let sockets = shared.udp.sockets();
            for id in self.ready.drain(..) {
                if let Some(n) = sockets.get(&id) {
                    n.notify_waiters();
                }
            }
        }
        if std::mem::take(&mut self.writable) {
            shared.udp.tx_room.notify_waiters();
        }
    }
}

/// What a socket and an intercept share: the stack, the id, the wake-ups.
struct Handle {
    shared: Arc<Shared>,
    id: UdpId,
    notify: Arc<Notify>,
}

impl Handle {
    fn new(shared: &Arc<Shared>, id: UdpId) -> Handle {
        let notify = Arc::new(Notify::new());
        shared.udp.sockets().insert(id, notify.clone());
        Handle { shared: shared.clone(), id, notify }
    }

    async fn recv(&self) -> Result<(Bytes, SocketAddr, SocketAddr), UdpError> {
        loop {
            let mut notified = pin!(self.notify.notified());
            notified.as_mut().enable();
            {
                let mut st = self.shared.lock();
                match st.core.udp_recv(self.id) {
                    UdpRecv::Datagram(r) => return Ok((r.data, r.src, r.dst)),
                    // Datagrams received before the device failed come first.
                    UdpRecv::Empty => st.alive().map_err(|e| UdpError::DeviceFailed(e.clone()))?,
                    UdpRecv::Closed => return Err(UdpError::Closed),
                    UdpRecv::Disconnected => return Err(UdpError::Disconnected),
                }
            }
            notified.await;
        }
    }

    /// Queues a datagram, waiting for room in the transmit queue.
    async fn send(&self, data: &[u8], from: SocketAddr, to: SocketAddr) -> Result<(), UdpError> {
        loop {
            let mut room = pin!(self.shared.udp.tx_room.notified());
            room.as_mut().enable();
            {
                let now = self.shared.now();
                let mut st = self.shared.lock();
                st.alive().map_err(|e| UdpError::DeviceFailed(e.clone()))?;
                match st.core.udp_send(now, from, to, data) {
                    Ok(()) => {
                        drop(st);
                        self.shared.kick();
                        return Ok(());
                    }
                    Err(UdpRefused::Full) => {}
                    Err(e) => return Err(UdpError::refused(e, to, data.len())),
                }
            }
            room.await;
        }
    }

    fn dropped(&self) -> u64 {
        self.shared.lock().core.udp_dropped(self.id)
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.lock().core.udp_close(self.id);
        self.shared.udp.sockets().remove(&self.id);
    }
}

/// Checks a destination: a port, a specified unicast or broadcast address.
fn check_to(to: SocketAddr) -> Result<SocketAddr, UdpError> {
    let to = conflux_tcp::canonical_addr(to);
    if to.port() == 0 || to.ip().is_unspecified() {
        return Err(UdpError::InvalidDestination(to));
    }
    Ok(to)
}

/// A UDP socket on a [`NetStack`] ([`NetStack::udp_bind`]). Dropping it
/// frees its port. Methods take `&self`: share it (in an `Arc`) to send and
/// receive from different tasks.
pub struct UdpSocket {
    handle: Handle,
    local: SocketAddr,
}

impl std::fmt::Debug for UdpSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdpSocket").field("local", &self.local).finish()
    }
}

impl UdpSocket {
    /// The bound address (its port is the allocated one when bound on port
    /// 0; the address stays unspecified when bound so).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Sends `data` as one datagram to `to`, from the bound address (from
    /// our address towards `to` when bound on an unspecified one). Waits
    /// only while the stack's transmit queue is full.
    pub async fn send_to(&self, data: &[u8], to: SocketAddr) -> Result<(), UdpError> {
        let to = check_to(to)?;
        let ip = self.local.ip();
        let from_ip = if ip.is_unspecified() {
            if ip.is_ipv4() && !to.is_ipv4() {
                return Err(UdpError::InvalidDestination(to));
            }
            self.handle.shared.lock().core.udp_source(to.ip()).ok_or(UdpError::NoRoute(to))?
        } else {
            if ip.is_ipv4() != to.is_ipv4() {
                return Err(UdpError::InvalidDestination(to));
            }
            if self.handle.shared.lock().core.udp_source(to.ip()).is_none() {
                return Err(UdpError::NoRoute(to));
            }
            ip
        };
        self.handle.send(data, SocketAddr::new(from_ip, self.local.port()), to).await
    }

    /// The next datagram and its sender. Cancel-safe: a datagram is taken
    /// only when returned.
    pub async fn recv_from(&self) -> Result<(Bytes, SocketAddr), UdpError> {
        self.handle.recv().await.map(|(data, src, _)| (data, src))
    }

    /// Datagrams dropped so far because the receive queue was full.
    pub fn dropped(&self) -> u64 {
        self.handle.dropped()
    }
}

/// The transparent UDP receive of a [`NetStack`] ([`NetStack::udp_intercept`]).
/// Dropping it stops the interception.
pub struct UdpIntercept {
    handle: Handle,
}

impl std::fmt::Debug for UdpIntercept {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdpIntercept").finish_non_exhaustive()
    }
}

impl UdpIntercept {
    /// The next intercepted datagram, with its original destination.
    /// Cancel-safe. [`UdpError::Closed`] once another intercept replaced this one.
    pub async fn recv(&self) -> Result<Datagram, UdpError> {
        self.handle.recv().await.map(|(data, src, dst)| Datagram { data, src, dst })
    }

    /// Sends `data` from `from`, any address of the family of `to` (the
    /// reply to an intercepted datagram comes from its original
    /// destination), to `to`, which must be reachable (on a link of ours,
    /// through a gateway, or the IPv4 broadcast).
    pub async fn send_from(&self, data: &[u8], from: SocketAddr, to: SocketAddr) -> Result<(), UdpError> {
        let to = check_to(to)?;
        let from = conflux_tcp::canonical_addr(from);
        if from.port() == 0 || from.ip().is_unspecified() || from.ip().is_multicast() || from.is_ipv4() != to.is_ipv4()
        {
            return Err(UdpError::InvalidSource(from));
        }
        if self.handle.shared.lock().core.udp_source(to.ip()).is_none() {
            return Err(UdpError::NoRoute(to));
        }
        self.handle.send(data, from, to).await
    }

    /// Datagrams dropped so far because the receive queue was full.
    pub fn dropped(&self) -> u64 {
        self.handle.dropped()
    }
}

impl NetStack {
    /// A UDP socket on one of our addresses, or on an unspecified one
    /// (`0.0.0.0`: every IPv4 address of ours; `[::]`: every address). Port
    /// 0 takes an ephemeral port from the stack's allocator (UDP ports are a
    /// space apart from TCP's). [`UdpError::AddrInUse`] when another socket
    /// is bound on that address and port, or a wildcard overlaps.
    pub fn udp_bind(&self, addr: SocketAddr) -> Result<UdpSocket, UdpError> {
        let addr = conflux_tcp::canonical_addr(addr);
        let shared = self.shared();
        let mut st = shared.lock();
        st.alive().map_err(|e| UdpError::DeviceFailed(e.clone()))?;
        let (id, local) = st.core.udp_bind(addr).map_err(|e| UdpError::refused(e, addr, 0))?;
        drop(st);
        Ok(UdpSocket { handle: Handle::new(shared, id), local })
    }

    /// Transparent UDP: every datagram to an address that is not ours
    /// (multicast excluded), and to the ports of the `own` addresses that no
    /// [`UdpSocket`] is bound on, is reported with its original destination
    /// ([`UdpIntercept::recv`]); replies go out with
    /// [`UdpIntercept::send_from`]. One at a time: a second intercept
    /// replaces the first (whose `recv` then fails with
    /// [`UdpError::Closed`]). An `own` address that is not ours changes
    /// nothing: datagrams to it are intercepted anyway.
    ///
    /// A forwarder's stack answering a guest from the address it asked:
    ///
    /// ```
    /// use conflux_netstack::{LinkConfig, NetStack, StackConfig, link_pair};
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let (a, b) = link_pair(LinkConfig::ethernet());
    /// // The guest routes everything through the forwarder's stack (10.0.2.2).
    /// let guest = NetStack::new(
    ///     StackConfig::new().ipv4("10.0.2.100".parse().unwrap(), 24).gateway_v4("10.0.2.2".parse().unwrap()),
    ///     a,
    /// );
    /// let forwarder =
    ///     NetStack::new(StackConfig::new().ipv4("10.0.2.2".parse().unwrap(), 24).mac([2, 0, 0, 0, 0, 2]), b);
    /// let intercept = forwarder.udp_intercept(vec!["10.0.2.2".parse().unwrap()]).unwrap();
    ///
    /// let sock = guest.udp_bind("0.0.0.0:0".parse().unwrap()).unwrap();
    /// sock.send_to(b"query", "192.0.2.53:53".parse().unwrap()).await.unwrap();
    /// let d = intercept.recv().await.unwrap();
    /// assert_eq!(d.dst, "192.0.2.53:53".parse().unwrap());
    /// // (A forwarder would ask d.dst from a host socket here.)
    /// intercept.send_from(b"answer", d.dst, d.src).await.unwrap();
    /// let (answer, from) = sock.recv_from().await.unwrap();
    /// assert_eq!((&answer[..], from), (&b"answer"[..], d.dst));
    /// # });
    /// ```
    pub fn udp_intercept(&self, own: Vec<IpAddr>) -> Result<UdpIntercept, UdpError> {
        let shared = self.shared();
        let unspecified = SocketAddr::from(([0, 0, 0, 0], 0));
        let mut st = shared.lock();
        st.alive().map_err(|e| UdpError::DeviceFailed(e.clone()))?;
        let (id, old) = st.core.udp_intercept(own).map_err(|e| UdpError::refused(e, unspecified, 0))?;
        drop(st);
        if let Some(old) = old.and_then(|old| shared.udp.sockets().get(&old).cloned()) {
            old.notify_waiters();
        }
        Ok(UdpIntercept { handle: Handle::new(shared, id) })
    }

    /// UDP transmit queues dropped so far because a neighbour (ARP, NDP)
    /// never answered for 3 s.
    pub fn udp_tx_dropped(&self) -> u64 {
        self.shared().lock().core.udp_tx_dropped()
    }
}

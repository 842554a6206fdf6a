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
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::Notify;

use crate::core::{UdpId, UdpRecv, UdpRefused};
use crate::stack::{NetStack, Shared, State};

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

/// The shell's UDP state (under the stack's lock): each socket's wake-up.
#[derive(Default)]
pub(crate) struct UdpShell {
    notify: HashMap<UdpId, Arc<Notify>>,
    /// Woken when the transmit queue has room again.
    tx_room: Arc<Notify>,
}

/// Collects the wake-ups the core's UDP news calls for (notified by the
/// caller once the lock is released).
pub(crate) fn drain(st: &mut State, wake: &mut Vec<Arc<Notify>>) {
    while let Some(id) = st.core.udp_poll_ready() {
        if let Some(n) = st.udp.notify.get(&id) {
            wake.push(n.clone());
        }
    }
    if st.core.udp_take_writable() {
        wake.push(st.udp.tx_room.clone());
    }
}

/// What a socket and an intercept share: the stack, the id, the wake-ups.
struct Handle {
    shared: Arc<Shared>,
    id: UdpId,
    notify: Arc<Notify>,
    tx_room: Arc<Notify>,
}

impl Handle {
    fn new(shared: &Arc<Shared>, st: &mut State, id: UdpId) -> Handle {
        let notify = Arc::new(Notify::new());
        st.udp.notify.insert(id, notify.clone());
        Handle { shared: shared.clone(), id, notify, tx_room: st.udp.tx_room.clone() }
    }

    async fn recv(&self) -> Result<(Bytes, SocketAddr, SocketAddr), UdpError> {
        loop {
            let mut notified = pin!(self.notify.notified());
            notified.as_mut().enable();
            match self.shared.lock().core.udp_recv(self.id) {
                UdpRecv::Datagram(r) => return Ok((r.data, r.src, r.dst)),
                UdpRecv::Empty => {}
                UdpRecv::Closed => return Err(UdpError::Closed),
                UdpRecv::Disconnected => return Err(UdpError::Disconnected),
            }
            notified.await;
        }
    }

    /// Queues a datagram, waiting for room in the transmit queue.
    async fn send(&self, data: &[u8], from: SocketAddr, to: SocketAddr) -> Result<(), UdpError> {
        loop {
            let mut room = pin!(self.tx_room.notified());
            room.as_mut().enable();
            {
                let now = self.shared.now();
                let mut st = self.shared.lock();
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
        let mut st = self.shared.lock();
        st.core.udp_close(self.id);
        st.udp.notify.remove(&self.id);
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
        let (id, local) = st.core.udp_bind(addr).map_err(|e| UdpError::refused(e, addr, 0))?;
        let handle = Handle::new(shared, &mut st, id);
        Ok(UdpSocket { handle, local })
    }

    /// Transparent UDP: every datagram to an address that is not ours
    /// (multicast excluded), and to the ports of the `own` addresses that no
    /// [`UdpSocket`] is bound on, is reported with its original destination
    /// ([`UdpIntercept::recv`]); replies go out with
    /// [`UdpIntercept::send_from`]. One at a time: a second intercept
    /// replaces the first (whose `recv` then fails with
    /// [`UdpError::Closed`]).
    pub fn udp_intercept(&self, own: Vec<IpAddr>) -> Result<UdpIntercept, UdpError> {
        let shared = self.shared();
        let mut st = shared.lock();
        let unspecified = SocketAddr::from(([0, 0, 0, 0], 0));
        let (id, old) = st.core.udp_intercept(own).map_err(|e| UdpError::refused(e, unspecified, 0))?;
        let old = old.and_then(|old| st.udp.notify.get(&old).cloned());
        let handle = Handle::new(shared, &mut st, id);
        drop(st);
        if let Some(old) = old {
            old.notify_waiters();
        }
        Ok(UdpIntercept { handle })
    }

    /// UDP transmit queues dropped so far because a neighbour (ARP, NDP)
    /// never answered for 3 s.
    pub fn udp_tx_dropped(&self) -> u64 {
        self.shared().lock().core.udp_tx_dropped()
    }
}

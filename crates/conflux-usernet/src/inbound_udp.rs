//! Inbound UDP port forwards (`-p udp:HOST_PORT:GUEST_PORT`): a host UDP
//! socket whose datagrams go to the guest through the stack, each host peer
//! from its own gateway port (slirp4netns's and docker's habit: the guest
//! sees the gateway as the sender), the guest's answers back to that peer.
//!
//! Per host peer one association: a stack socket bound on the gateway's
//! address (an ephemeral port) and the task carrying the guest's replies,
//! in the same bounded, idle-timed table the outbound side uses
//! ([`UdpTable`]). Only datagrams from the guest's forwarded address count
//! as replies; anything else sent to that gateway port is dropped.

use std::net::{SocketAddr, UdpSocket as StdUdpSocket};
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use conflux_netstack::{NetStack, UdpSocket as StackSocket};
use tokio::net::UdpSocket;

use crate::nat::{UdpKey, UdpTable};
use crate::stats::Stats;
use crate::udp::{Association, IDLE, MAX_DATAGRAM, SWEEP, Table, lock};

/// Host peers one forward keeps associations for at most.
const TABLE_CAP: usize = 1024;

/// One UDP port forward: datagrams to the host address go to `to` (the
/// guest's address and port) through the stack, from `gateway` (an
/// ephemeral port per host peer); the guest's answers go back to the peer.
pub(crate) struct UdpPortForward {
    host: Arc<UdpSocket>,
    stack: NetStack,
    gateway: SocketAddr,
    to: SocketAddr,
    stats: Arc<Stats>,
}

impl UdpPortForward {
    /// Binds the host address (port 0 picks one); call within a tokio
    /// runtime.
    pub(crate) fn bind(
        host: SocketAddr,
        stack: NetStack,
        gateway: SocketAddr,
        to: SocketAddr,
        stats: Arc<Stats>,
    ) -> std::io::Result<UdpPortForward> {
        let socket = StdUdpSocket::bind(host)?;
        socket.set_nonblocking(true)?;
        let host = Arc::new(UdpSocket::from_std(socket)?);
        Ok(UdpPortForward { host, stack, gateway, to, stats })
    }

    /// The host address listened on.
    pub(crate) fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.host.local_addr()
    }

    /// Relays until dropped (dropping closes every association) or the
    /// host socket fails.
    pub(crate) async fn serve(self) {
        let host = self.host.clone();
        let table: Table<StackSocket> = Arc::new(Mutex::new(UdpTable::new(TABLE_CAP, IDLE)));
        let mut sweep = tokio::time::interval(SWEEP);
        let mut buf = vec![0u8; MAX_DATAGRAM];
        loop {
            let (n, peer) = tokio::select! {
                got = host.recv_from(&mut buf) => match got {
                    Ok(got) => got,
                    // An earlier reply's ICMP port unreachable: that peer is gone.
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => continue,
                    Err(e) => {
                        tracing::warn!(to = %self.to, error = %e, "UDP port forward: the host socket failed");
                        return;
                    }
                },
                _ = sweep.tick() => {
                    for (key, _) in lock(&table).expire(Instant::now()) {
                        tracing::debug!(peer = %key.dst, to = %self.to, "UDP port forward: association idle, closed");
                    }
                    continue;
                }
            };
            let key = UdpKey { guest: self.to, dst: peer };
            let known = lock(&table).get(&key, Instant::now()).map(|a| a.socket.clone());
            let socket = match known {
                Some(socket) => socket,
                None => match self.open(key, &host, &table) {
                    Some(socket) => socket,
                    None => continue,
                },
            };
            match socket.send_to(&buf[..n], self.to).await {
                Ok(()) => self.stats.bytes(0, n as u64),
                Err(e) => {
                    tracing::debug!(%peer, to = %self.to, error = %e, "UDP port forward: send to the guest failed")
                }
            }
        }
    }

    /// A new association for the peer in `key`: a stack socket on a fresh
    /// gateway port and its reply task. `None` (logged) when the stack
    /// refuses the socket.
    fn open(&self, key: UdpKey, host: &Arc<UdpSocket>, table: &Table<StackSocket>) -> Option<Arc<StackSocket>> {
        let socket = match self.stack.udp_bind(self.gateway) {
            Ok(s) => Arc::new(s),
            Err(e) => {
                tracing::warn!(peer = %key.dst, to = %self.to, error = %e, "UDP port forward: no stack socket");
                return None;
            }
        };
        tracing::debug!(peer = %key.dst, to = %self.to, from = %socket.local_addr(), "UDP port forward: association opened");
        let replies =
            tokio::spawn(relay_replies(key, socket.clone(), host.clone(), Arc::downgrade(table), self.stats.clone()));
        let evicted = lock(table).insert(key, Association { socket: socket.clone(), replies }, Instant::now());
        if let Some((old, _)) = evicted {
            tracing::debug!(peer = %old.dst, "UDP port forward: table full, least recently used association closed");
        }
        Some(socket)
    }
}

/// The guest's datagrams to the association's gateway port, back to the
/// host peer; only those from the forwarded address (`key.guest`), each
/// keeping the association alive. Holds the table weakly: the table owns
/// (and aborts) this task.
async fn relay_replies(
    key: UdpKey,
    socket: Arc<StackSocket>,
    host: Arc<UdpSocket>,
    table: Weak<Mutex<UdpTable<Association<StackSocket>>>>,
    stats: Arc<Stats>,
) {
    loop {
        let (data, from) = match socket.recv_from().await {
            Ok(got) => got,
            Err(e) => {
                tracing::debug!(peer = %key.dst, error = %e, "UDP port forward: the stack socket ended");
                return;
            }
        };
        if from != key.guest {
            tracing::debug!(peer = %key.dst, %from, "UDP port forward: a datagram from elsewhere dropped");
            continue;
        }
        let Some(table) = table.upgrade() else { return };
        lock(&table).touch(&key, Instant::now());
        drop(table);
        match host.send_to(&data, key.dst).await {
            Ok(n) => stats.bytes(n as u64, 0),
            Err(e) => tracing::debug!(peer = %key.dst, error = %e, "UDP port forward: reply to the host peer failed"),
        }
    }
}

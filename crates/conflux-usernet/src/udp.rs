//! The forwarder's UDP side: every guest datagram the stack intercepts goes
//! out through a kernel UDP socket per (guest source, destination) in the
//! bounded [`UdpTable`]; what that socket receives goes back to the guest
//! from the original destination. DNS to the forwarder's address is the
//! same path: the [`Policy`] maps it to the upstream resolver.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use conflux_netstack::UdpIntercept;
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

use crate::nat::{UdpKey, UdpTable};
use crate::policy::Policy;
use crate::stats::Stats;

/// Associations the table holds at most.
const TABLE_CAP: usize = 4096;
/// An association without a datagram either way for this long is closed
/// (here and in the inbound UDP forwards).
pub(crate) const IDLE: Duration = Duration::from_secs(60);
/// How often idle associations are looked for.
pub(crate) const SWEEP: Duration = Duration::from_secs(1);
/// The largest datagram read from a host socket.
pub(crate) const MAX_DATAGRAM: usize = 65535;

/// One association: its socket (here the host socket connected to the
/// host-side destination; in an inbound forward the stack socket a host
/// peer is seen from) and the task relaying what comes back, which the
/// association owns and aborts.
pub(crate) struct Association<S> {
    pub(crate) socket: Arc<S>,
    pub(crate) replies: JoinHandle<()>,
}

impl<S> Drop for Association<S> {
    fn drop(&mut self) {
        self.replies.abort();
    }
}

/// A table of associations, shared with their reply tasks (weakly).
pub(crate) type Table<S> = Arc<Mutex<UdpTable<Association<S>>>>;

pub(crate) fn lock<S>(table: &Table<S>) -> std::sync::MutexGuard<'_, UdpTable<Association<S>>> {
    table.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Forwards the guest's intercepted datagrams until the intercept ends;
/// dropping the future closes every host socket.
pub(crate) async fn serve(intercept: UdpIntercept, policy: Policy, stats: Arc<Stats>) {
    let intercept = Arc::new(intercept);
    let table: Table<UdpSocket> = Arc::new(Mutex::new(UdpTable::new(TABLE_CAP, IDLE)));
    let mut sweep = tokio::time::interval(SWEEP);
    loop {
        let datagram = tokio::select! {
            d = intercept.recv() => match d {
                Ok(d) => d,
                Err(e) => {
                    tracing::debug!(error = %e, "UDP intercept ended");
                    break;
                }
            },
            _ = sweep.tick() => {
                let expired = lock(&table).expire(Instant::now());
                for (key, _) in &expired {
                    tracing::debug!(guest = %key.guest, dst = %key.dst, "UDP association idle: closed");
                }
                drop(expired);
                stats.set_udp_entries(lock(&table).len());
                continue;
            }
        };
        let key = UdpKey { guest: datagram.src, dst: datagram.dst };
        let known = lock(&table).get(&key, Instant::now()).map(|a| a.socket.clone());
        let socket = match known {
            Some(socket) => socket,
            None => match open(&key, &policy, &intercept, &table, &stats).await {
                Some(socket) => socket,
                None => continue,
            },
        };
        match socket.send(&datagram.data).await {
            Ok(n) => stats.bytes(n as u64, 0),
            Err(e) => tracing::debug!(guest = %key.guest, dst = %key.dst, error = %e, "UDP send failed"),
        }
    }
}

/// A new association for `key`: the policy's host-side destination, a
/// kernel socket connected to it and its reply task; `None` (counted,
/// logged) when refused or the socket fails.
async fn open(
    key: &UdpKey,
    policy: &Policy,
    intercept: &Arc<UdpIntercept>,
    table: &Table<UdpSocket>,
    stats: &Arc<Stats>,
) -> Option<Arc<UdpSocket>> {
    let host = match policy.route(key.dst) {
        Ok(host) => host,
        Err(refusal) => {
            stats.refused();
            tracing::debug!(guest = %key.guest, dst = %key.dst, %refusal, "UDP datagram refused");
            return None;
        }
    };
    let any: SocketAddr =
        if host.is_ipv4() { (Ipv4Addr::UNSPECIFIED, 0).into() } else { (Ipv6Addr::UNSPECIFIED, 0).into() };
    let socket = match UdpSocket::bind(any).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "UDP: cannot open a host socket");
            return None;
        }
    };
    if let Err(e) = socket.connect(host).await {
        stats.refused();
        tracing::debug!(guest = %key.guest, dst = %key.dst, %host, error = %e, "UDP connect failed");
        return None;
    }
    let socket = Arc::new(socket);
    tracing::debug!(guest = %key.guest, dst = %key.dst, %host, "UDP association opened");
    let replies =
        tokio::spawn(relay_replies(*key, socket.clone(), intercept.clone(), Arc::downgrade(table), stats.clone()));
    let evicted = lock(table).insert(*key, Association { socket: socket.clone(), replies }, Instant::now());
    if let Some((old, _)) = evicted {
        tracing::debug!(guest = %old.guest, dst = %old.dst, "UDP table full: least recently used association closed");
    }
    stats.set_udp_entries(lock(table).len());
    Some(socket)
}

/// The host socket's datagrams back to the guest, from the destination it
/// dialled; each one keeps the association alive. Holds the table weakly:
/// the table owns (and aborts) this task.
async fn relay_replies(
    key: UdpKey,
    socket: Arc<UdpSocket>,
    intercept: Arc<UdpIntercept>,
    table: Weak<Mutex<UdpTable<Association<UdpSocket>>>>,
    stats: Arc<Stats>,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let n = match socket.recv(&mut buf).await {
            Ok(n) => n,
            // ICMP errors (port unreachable) surface here: keep listening.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => continue,
            Err(e) => {
                tracing::debug!(guest = %key.guest, dst = %key.dst, error = %e, "UDP receive failed");
                return;
            }
        };
        let Some(table) = table.upgrade() else { return };
        lock(&table).touch(&key, Instant::now());
        drop(table);
        match intercept.send_from(&buf[..n], key.dst, key.guest).await {
            Ok(()) => stats.bytes(0, n as u64),
            Err(e) => tracing::debug!(guest = %key.guest, dst = %key.dst, error = %e, "UDP reply to the guest failed"),
        }
    }
}

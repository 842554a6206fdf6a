//! The UDP NAT table: one entry (a host socket, in the forwarder) per guest
//! source and destination, bounded, with an idle timeout.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// A guest's UDP association: its source and the destination it sent to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UdpKey {
    /// The guest's address and port.
    pub guest: SocketAddr,
    /// The destination the guest sent to (before the policy's mapping).
    pub dst: SocketAddr,
}

struct Entry<V> {
    value: V,
    /// The position in `order`: the last use and a tie-breaker.
    at: (Instant, u64),
}

/// A bounded table of UDP associations, least recently used first out, no
/// I/O and no clock: every call takes `now`.
///
/// The forwarder looks a guest's datagram up ([`get`](UdpTable::get)), and
/// on a miss opens a host socket and [`insert`](UdpTable::insert)s it,
/// closing the entry the table evicts to make room; a datagram either way
/// (a [`touch`](UdpTable::touch)) keeps an entry alive. It calls
/// [`expire`](UdpTable::expire) at [`poll_timeout`](UdpTable::poll_timeout)
/// and closes what comes back. Each operation is O(log n).
pub struct UdpTable<V> {
    entries: HashMap<UdpKey, Entry<V>>,
    order: BTreeMap<(Instant, u64), UdpKey>,
    next: u64,
    cap: usize,
    idle: Duration,
}

impl<V> std::fmt::Debug for UdpTable<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdpTable").field("len", &self.entries.len()).field("cap", &self.cap).finish_non_exhaustive()
    }
}

impl<V> UdpTable<V> {
    /// A table of at most `cap` (at least 1) entries, each dropped after
    /// `idle` without a datagram either way (slirp4netns and vpnkit use 60 s).
    pub fn new(cap: usize, idle: Duration) -> UdpTable<V> {
        UdpTable { entries: HashMap::new(), order: BTreeMap::new(), next: 0, cap: cap.max(1), idle }
    }

    /// Entries in the table.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn stamp(&mut self, now: Instant) -> (Instant, u64) {
        self.next += 1;
        (now, self.next)
    }

    /// The entry of `key`, its idle time restarted at `now`.
    pub fn get(&mut self, key: &UdpKey, now: Instant) -> Option<&mut V> {
        self.touch(key, now);
        self.entries.get_mut(key).map(|e| &mut e.value)
    }

    /// Restarts `key`'s idle time at `now` (a datagram from the host side);
    /// false if there is no such entry.
    pub fn touch(&mut self, key: &UdpKey, now: Instant) -> bool {
        let at = self.stamp(now);
        let Some(entry) = self.entries.get_mut(key) else { return false };
        self.order.remove(&entry.at);
        entry.at = at;
        self.order.insert(at, *key);
        true
    }

    /// Adds (or replaces) `key`'s entry. At the cap, the least recently used
    /// entry makes room and is returned, for the caller to close.
    pub fn insert(&mut self, key: UdpKey, value: V, now: Instant) -> Option<(UdpKey, V)> {
        let replaced = self.remove(&key);
        let evicted = if replaced.is_none() && self.entries.len() >= self.cap {
            let (_, oldest) = self.order.pop_first()?;
            self.entries.remove(&oldest).map(|e| (oldest, e.value))
        } else {
            replaced.map(|v| (key, v))
        };
        let at = self.stamp(now);
        self.order.insert(at, key);
        self.entries.insert(key, Entry { value, at });
        evicted
    }

    /// Removes `key`'s entry.
    pub fn remove(&mut self, key: &UdpKey) -> Option<V> {
        let entry = self.entries.remove(key)?;
        self.order.remove(&entry.at);
        Some(entry.value)
    }

    /// Removes and returns the entries idle for the table's timeout at `now`.
    pub fn expire(&mut self, now: Instant) -> Vec<(UdpKey, V)> {
        let mut out = Vec::new();
        while let Some((&(last, _), _)) = self.order.first_key_value() {
            if now.saturating_duration_since(last) < self.idle {
                break;
            }
            let (_, key) = self.order.pop_first().expect("a first entry");
            if let Some(entry) = self.entries.remove(&key) {
                out.push((key, entry.value));
            }
        }
        out
    }

    /// When the next entry expires (`None`: the table is empty).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.order.first_key_value().map(|(&(last, _), _)| last + self.idle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u16) -> UdpKey {
        UdpKey { guest: SocketAddr::from(([10, 0, 2, 100], 40000 + n)), dst: SocketAddr::from(([127, 0, 0, 1], 53)) }
    }

    #[test]
    fn entries_expire_after_the_idle_time_and_traffic_keeps_them() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut table = UdpTable::new(8, 60 * s);
        assert_eq!(table.poll_timeout(), None);
        assert!(table.insert(key(1), "a", t0).is_none());
        assert!(table.insert(key(2), "b", t0 + s).is_none());
        assert_eq!(table.poll_timeout(), Some(t0 + 60 * s));
        // Traffic on 1 at 30 s keeps it until 90 s.
        assert_eq!(table.get(&key(1), t0 + 30 * s), Some(&mut "a"));
        assert_eq!(table.poll_timeout(), Some(t0 + 61 * s), "2 is next");
        assert!(table.expire(t0 + 60 * s).is_empty(), "nothing idle for 60 s yet");
        assert_eq!(table.expire(t0 + 61 * s), [(key(2), "b")]);
        assert!(table.touch(&key(1), t0 + 80 * s), "a reply from the host side");
        assert!(!table.touch(&key(2), t0 + 80 * s), "gone");
        assert!(table.expire(t0 + 139 * s).is_empty());
        assert_eq!(table.expire(t0 + 140 * s), [(key(1), "a")]);
        assert!(table.is_empty());
        assert_eq!(table.poll_timeout(), None);
    }

    #[test]
    fn a_full_table_evicts_the_least_recently_used() {
        let t0 = Instant::now();
        let ms = Duration::from_millis(1);
        let mut table = UdpTable::new(3, Duration::from_secs(60));
        for n in 0..3 {
            assert!(table.insert(key(n), n, t0 + u32::from(n) * ms).is_none());
        }
        table.get(&key(0), t0 + 10 * ms);
        // 1 is now the least recently used.
        assert_eq!(table.insert(key(3), 3, t0 + 11 * ms), Some((key(1), 1)));
        assert_eq!(table.len(), 3);
        // Replacing an entry evicts nothing else.
        assert_eq!(table.insert(key(3), 30, t0 + 12 * ms), Some((key(3), 3)));
        assert_eq!(table.len(), 3);
        assert_eq!(table.remove(&key(2)), Some(2));
        assert!(table.insert(key(4), 4, t0 + 13 * ms).is_none(), "room again");
        // Same instant: insertion order breaks the tie.
        let mut same = UdpTable::new(2, Duration::from_secs(1));
        same.insert(key(0), 0, t0);
        same.insert(key(1), 1, t0);
        assert_eq!(same.insert(key(2), 2, t0), Some((key(0), 0)));
    }

    #[test]
    fn a_table_holds_at_most_cap_entries_under_any_sequence() {
        use proptest::prelude::*;
        proptest!(|(ops in proptest::collection::vec((0u16..20, 0u8..3, 0u64..5), 0..200))| {
            let t0 = Instant::now();
            let mut table = UdpTable::new(5, Duration::from_secs(10));
            let mut now = t0;
            for (k, op, dt) in ops {
                now += Duration::from_secs(dt);
                match op {
                    0 => { table.insert(key(k), k, now); }
                    1 => { table.get(&key(k), now); }
                    _ => {
                        for (_, v) in table.expire(now) { prop_assert!(v < 20); }
                        if let Some(t) = table.poll_timeout() { prop_assert!(t > now); }
                    }
                }
                prop_assert!(table.len() <= 5);
                prop_assert_eq!(table.order.len(), table.entries.len());
            }
        });
    }
}

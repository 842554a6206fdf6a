//! The forwarder's counters: what `conflux usernet` prints on SIGUSR1 and at
//! exit, and what a test or a library user reads.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of a forwarder, updated by its tasks without a lock; read with
/// [`snapshot`](Stats::snapshot). Share it behind an `Arc`.
#[derive(Debug, Default)]
pub struct Stats {
    flows_open: AtomicU64,
    flows_total: AtomicU64,
    refused: AtomicU64,
    bytes_out: AtomicU64,
    bytes_in: AtomicU64,
    udp_entries: AtomicU64,
    flows_failed: AtomicU64,
    flows_timed_out: AtomicU64,
}

/// The counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// TCP flows open now (guest side accepted, host side connected).
    pub flows_open: u64,
    /// TCP flows opened since the start.
    pub flows_total: u64,
    /// Guest connections and datagrams refused (policy or host connect).
    pub refused: u64,
    /// Bytes the guest sent out (to the host side).
    pub bytes_out: u64,
    /// Bytes the guest received (from the host side).
    pub bytes_in: u64,
    /// UDP associations in the NAT table now.
    pub udp_entries: u64,
    /// TCP flows that ended with a reset, a timeout or another error on
    /// one side (the other side aborted), not with both sides' FINs.
    pub flows_failed: u64,
    /// Of the failed flows, those whose peer on one side stopped answering
    /// (vanished without a reset: a VM killed, a link or a host gone): data
    /// left unacknowledged for the user timeout (120 s on the guest's
    /// side), or an idle flow's keepalive expiring (on either side; 120 s
    /// after the last segment heard with the default keepalives).
    pub flows_timed_out: u64,
}

impl Stats {
    /// A flow was opened.
    pub fn flow_opened(&self) {
        self.flows_open.fetch_add(1, Ordering::Relaxed);
        self.flows_total.fetch_add(1, Ordering::Relaxed);
    }

    /// A flow ended after moving `out` bytes from the guest and `inn` to it.
    pub fn flow_closed(&self, out: u64, inn: u64) {
        self.flows_open.fetch_sub(1, Ordering::Relaxed);
        self.bytes(out, inn);
    }

    /// A flow ended with an error (`timed_out`: a timeout) rather than
    /// both sides' FINs; counted besides its [`flow_closed`](Stats::flow_closed).
    pub fn flow_failed(&self, timed_out: bool) {
        self.flows_failed.fetch_add(1, Ordering::Relaxed);
        if timed_out {
            self.flows_timed_out.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Bytes moved outside a flow's end (datagrams).
    pub fn bytes(&self, out: u64, inn: u64) {
        self.bytes_out.fetch_add(out, Ordering::Relaxed);
        self.bytes_in.fetch_add(inn, Ordering::Relaxed);
    }

    /// A connection or datagram was refused.
    pub fn refused(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    /// The UDP table now holds `n` entries.
    pub fn set_udp_entries(&self, n: usize) {
        self.udp_entries.store(n as u64, Ordering::Relaxed);
    }

    /// The counters now.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            flows_open: self.flows_open.load(Ordering::Relaxed),
            flows_total: self.flows_total.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            bytes_out: self.bytes_out.load(Ordering::Relaxed),
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            udp_entries: self.udp_entries.load(Ordering::Relaxed),
            flows_failed: self.flows_failed.load(Ordering::Relaxed),
            flows_timed_out: self.flows_timed_out.load(Ordering::Relaxed),
        }
    }
}

impl std::fmt::Display for StatsSnapshot {
    /// One line: `flows open 2 (total 10), refused 1, bytes out 300 in 4000,
    /// udp entries 3, failed 2 (timed out 1)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "flows open {} (total {}), refused {}, bytes out {} in {}, udp entries {}, failed {} (timed out {})",
            self.flows_open,
            self.flows_total,
            self.refused,
            self.bytes_out,
            self.bytes_in,
            self.udp_entries,
            self.flows_failed,
            self.flows_timed_out
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_add_up_and_print_on_one_line() {
        let stats = Stats::default();
        stats.flow_opened();
        stats.flow_opened();
        stats.flow_closed(100, 2000);
        stats.refused();
        stats.bytes(200, 2000);
        stats.set_udp_entries(3);
        stats.flow_failed(false);
        stats.flow_failed(true);
        let s = stats.snapshot();
        assert_eq!(
            s,
            StatsSnapshot {
                flows_open: 1,
                flows_total: 2,
                refused: 1,
                bytes_out: 300,
                bytes_in: 4000,
                udp_entries: 3,
                flows_failed: 2,
                flows_timed_out: 1
            }
        );
        assert_eq!(
            s.to_string(),
            "flows open 1 (total 2), refused 1, bytes out 300 in 4000, udp entries 3, failed 2 (timed out 1)"
        );
        assert!(!s.to_string().contains('\n'));
    }
}

//! Stall detector: bulk both ways between two stacks on a 2-worker
//! multi_thread runtime, repeated and timed in real time. Before the fix
//! up to 1 run in 5 took a second instead of tens of milliseconds: a close
//! in CLOSE-WAIT behind a zero window put smoltcp in LAST-ACK, which
//! ignores the window update (see `Conn::close` in core.rs; the
//! deterministic tests are in inline.rs and the core's).

use std::time::Duration;

use conflux_netstack::{Faults, LinkConfig};

use super::multi_thread::rt_mt;
use super::support::bulk_both_ways;

/// Runs per link: with the old code 1 to 5 of 25 stalled (five tries of
/// both tests: each try failed at least one of them, four failed both).
const RUNS: usize = 25;

/// A run takes 20-70 ms here (median and 90th percentile of 200, a test
/// build on a 2-core machine) and was seen at 400 ms under a load of 8; a
/// stall waits for a retransmission or zero-window-probe timeout, and
/// smoltcp's RTO is never under 1 s (each stalled run took 1.01-1.09 s).
/// 900 ms tells them apart: this catches stalls, it is no speed goal.
const STALL: Duration = Duration::from_millis(900);

/// Runs the bulk `RUNS` times on fresh 2-worker runtimes: the runs that
/// stalled, with their times.
fn stalls(link: LinkConfig) -> Vec<Duration> {
    (0..RUNS).map(|_| rt_mt().block_on(bulk_both_ways(link))).filter(|t| *t >= STALL).collect()
}

#[test]
fn bulk_both_ways_on_two_workers_never_stalls_inline() {
    let stalled = stalls(LinkConfig::ethernet());
    assert!(stalled.is_empty(), "{} of {RUNS} runs stalled: {stalled:?}", stalled.len());
}

#[test]
fn bulk_both_ways_on_two_workers_never_stalls_through_the_drivers() {
    // A fault that never fires takes the inline path away.
    let faults = Faults { corrupt: 1e-12, ..Faults::NONE };
    let stalled = stalls(LinkConfig::ethernet().faults(faults));
    assert!(stalled.is_empty(), "{} of {RUNS} runs stalled: {stalled:?}", stalled.len());
}

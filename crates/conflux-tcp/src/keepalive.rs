//! Keepalive configuration and upstream's pure keepalive schedule.

use std::time::Duration;

/// TCP keepalive: after `after` of silence, probe every `interval`; when
/// `probes` probes go unanswered the flow dies (pending and later reads return
/// Eof, writes return `Closed`). Any received segment resets the timer.
///
/// Backends differ in *when* the flow dies; each documents its timing:
/// Linux (the kernel backend) closes at `after + probes * interval`, upstream's
/// direct stack (and [`next`]) at `after + (probes + 1) * interval`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Keepalive {
    /// Silence before the first probe.
    pub after: Duration,
    /// Time between probes.
    pub interval: Duration,
    /// Unanswered probes before the flow is closed.
    pub probes: u32,
}

impl Keepalive {
    /// A keepalive configuration.
    pub const fn new(after: Duration, interval: Duration, probes: u32) -> Keepalive {
        Keepalive { after, interval, probes }
    }

    /// Linux's defaults: 7200 s, 75 s, 9 probes.
    pub const LINUX_DEFAULT: Keepalive = Keepalive::new(Duration::from_secs(7200), Duration::from_secs(75), 9);
}

/// What a keepalive timer should do next (the result of [`next`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeepaliveAction {
    /// Nothing to do for this long (then call [`next`] again).
    Wait(Duration),
    /// Send one probe now.
    SendProbe,
    /// Too many probes went unanswered: close the flow.
    Close,
}

/// The schedule's memory between calls: how many probes were sent since the
/// last received segment. A received segment resets it ([`KeepaliveState::ALIVE`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct KeepaliveState {
    probes_sent: u32,
}

impl KeepaliveState {
    /// The state right after a segment was received: no probe sent.
    pub const ALIVE: KeepaliveState = KeepaliveState { probes_sent: 0 };

    /// Probes sent since the last received segment.
    pub fn probes_sent(&self) -> u32 {
        self.probes_sent
    }
}

/// Upstream's (mirage-tcpip) keepalive schedule, a pure function.
///
/// `since_last_rx` is the time since the last received segment. If it is
/// below `after`, wait for the rest. Otherwise with
/// `k = (since_last_rx - after) / interval`: `k > probes` closes; `k >
/// probes_sent` sends *one* probe (never a catch-up burst: a timer that fires
/// late skips the probes it missed); else wait to the next interval boundary.
///
/// The flow thus closes at `after + (probes + 1) * interval`. A zero
/// `interval` counts as one nanosecond.
///
/// ```
/// use std::time::Duration;
/// use conflux_tcp::{Keepalive, KeepaliveAction, KeepaliveState, keepalive_next};
///
/// let ka = Keepalive::new(Duration::from_secs(10), Duration::from_secs(1), 3);
/// let (action, _) = keepalive_next(&ka, Duration::from_secs(4), KeepaliveState::ALIVE);
/// assert_eq!(action, KeepaliveAction::Wait(Duration::from_secs(6)));
/// ```
pub fn next(config: &Keepalive, since_last_rx: Duration, state: KeepaliveState) -> (KeepaliveAction, KeepaliveState) {
    if since_last_rx < config.after {
        return (KeepaliveAction::Wait(config.after - since_last_rx), KeepaliveState::ALIVE);
    }
    let interval = config.interval.max(Duration::from_nanos(1)).as_nanos();
    let past = (since_last_rx - config.after).as_nanos();
    let k = past / interval;
    if k > u128::from(config.probes) {
        (KeepaliveAction::Close, state)
    } else if k > u128::from(state.probes_sent) {
        // k <= probes <= u32::MAX here.
        let probes_sent = u32::try_from(k).unwrap_or(u32::MAX);
        (KeepaliveAction::SendProbe, KeepaliveState { probes_sent })
    } else {
        let to_boundary = interval - past % interval;
        let wait = Duration::from_nanos(u64::try_from(to_boundary).unwrap_or(u64::MAX));
        (KeepaliveAction::Wait(wait), state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Drives the schedule from `start` with no segment ever received;
    /// returns (probes sent, time of close).
    fn simulate(config: &Keepalive, start: Duration) -> (u32, Duration) {
        let mut now = start;
        let mut state = KeepaliveState::ALIVE;
        let mut probes = 0;
        for _ in 0..10_000 {
            let (action, s) = next(config, now, state);
            state = s;
            match action {
                KeepaliveAction::Wait(d) => {
                    assert!(d > Duration::ZERO, "a zero wait would spin");
                    now += d;
                }
                KeepaliveAction::SendProbe => probes += 1,
                KeepaliveAction::Close => return (probes, now),
            }
        }
        panic!("the schedule never closed");
    }

    #[test]
    fn linux_defaults_give_exactly_nine_probes_then_close() {
        let ka = Keepalive::LINUX_DEFAULT;
        let (probes, closed_at) = simulate(&ka, Duration::ZERO);
        assert_eq!(probes, 9);
        assert_eq!(closed_at, ka.after + ka.interval * (ka.probes + 1));
    }

    #[test]
    fn starting_two_intervals_late_gives_fewer_probes() {
        let ka = Keepalive::LINUX_DEFAULT;
        let (probes, _) = simulate(&ka, ka.after + ka.interval * 2);
        assert!(probes < 9, "{probes} probes");
        // One probe at once (no catch-up burst), then one per remaining interval.
        assert_eq!(probes, 8);
    }

    #[test]
    fn starting_past_the_end_gives_zero_probes_and_close() {
        let ka = Keepalive::LINUX_DEFAULT;
        let late = ka.after + ka.interval * (ka.probes + 2);
        assert_eq!(next(&ka, late, KeepaliveState::ALIVE).0, KeepaliveAction::Close);
        assert_eq!(simulate(&ka, late).0, 0);
    }

    #[test]
    fn zero_interval_and_huge_values_do_not_panic() {
        let ka = Keepalive::new(Duration::ZERO, Duration::ZERO, u32::MAX);
        let _ = next(&ka, Duration::MAX, KeepaliveState::ALIVE);
        let ka = Keepalive::new(Duration::MAX, Duration::MAX, 0);
        assert_eq!(next(&ka, Duration::ZERO, KeepaliveState::ALIVE).0, KeepaliveAction::Wait(Duration::MAX));
    }
}

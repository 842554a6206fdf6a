//! The policy of a connect race, without I/O and without a clock: which
//! candidate starts when, which attempt has run past its deadline, and the
//! next instant anything changes. [`Race`](super::race::Race) drives it.
//!
//! Call order, each round (time is an argument):
//! 1. [`expired`](Schedule::expired): past the overall deadline, stop;
//! 2. [`handle_timeout`](Schedule::handle_timeout): the attempts that timed
//!    out (and the stagger, which may allow a start);
//! 3. [`poll_start`](Schedule::poll_start) until `None`: the candidates to start now;
//! 4. the driver polls the running connects and reports each failure with
//!    [`handle_end`](Schedule::handle_end) (a success ends the race);
//! 5. when nothing runs and nothing is left, [`is_done`](Schedule::is_done);
//!    otherwise wait until [`poll_timeout`](Schedule::poll_timeout).
//!
//! Sequential (no race delay): the next candidate starts when the running one
//! ended. Staggered: it also starts `delay` after the last start, and at once
//! when any attempt ends.

use std::time::Duration;

use tokio::time::Instant;

use crate::registry::ResolveOptions;

#[derive(Debug)]
pub(super) struct Schedule {
    len: usize,
    next: usize,
    attempt_timeout: Duration,
    race: Option<Duration>,
    deadline: Instant,
    /// Running attempts: candidate index and its deadline.
    running: Vec<(usize, Instant)>,
    /// When the next candidate starts in a staggered race.
    stagger_at: Option<Instant>,
    /// An attempt ended (or the stagger passed) in a staggered race: the next starts at once.
    kick: bool,
}

impl Schedule {
    /// A schedule for `len` candidates, ending at `deadline` overall.
    pub(super) fn new(len: usize, options: ResolveOptions, deadline: Instant) -> Schedule {
        Schedule {
            len,
            next: 0,
            attempt_timeout: options.attempt_timeout,
            race: options.race,
            deadline,
            running: Vec::new(),
            stagger_at: None,
            kick: false,
        }
    }

    /// The bound on one attempt.
    pub(super) fn attempt_timeout(&self) -> Duration {
        self.attempt_timeout
    }

    /// True once the overall deadline has passed.
    pub(super) fn expired(&self, now: Instant) -> bool {
        now >= self.deadline
    }

    /// The attempts whose deadline has passed, in start order; they no longer run.
    pub(super) fn handle_timeout(&mut self, now: Instant) -> Vec<usize> {
        let mut timed_out = Vec::new();
        self.running.retain(|&(i, at)| {
            let keep = at > now;
            if !keep {
                timed_out.push(i);
            }
            keep
        });
        let stagger = self.stagger_at.is_some_and(|at| at <= now);
        if stagger {
            self.stagger_at = None;
        }
        if self.race.is_some() && (stagger || !timed_out.is_empty()) {
            self.kick = true;
        }
        timed_out
    }

    /// The candidate to start now, if any (it counts as running from `now`).
    pub(super) fn poll_start(&mut self, now: Instant) -> Option<usize> {
        if self.next >= self.len || !(self.running.is_empty() || self.kick) {
            return None;
        }
        self.kick = false;
        let i = self.next;
        self.next += 1;
        self.running.push((i, now + self.attempt_timeout));
        self.stagger_at = match self.race {
            Some(delay) if self.next < self.len => Some(now + delay),
            _ => None,
        };
        Some(i)
    }

    /// Attempt `i` failed: it no longer runs.
    pub(super) fn handle_end(&mut self, i: usize) {
        self.running.retain(|&(j, _)| j != i);
        if self.race.is_some() {
            self.kick = true;
        }
    }

    /// Every candidate was started and has ended.
    pub(super) fn is_done(&self) -> bool {
        self.next >= self.len && self.running.is_empty()
    }

    /// The next instant something changes: the earliest attempt deadline, the
    /// stagger (while candidates are left), or the overall deadline.
    pub(super) fn poll_timeout(&self) -> Instant {
        let mut at = self.deadline;
        for &(_, d) in &self.running {
            at = at.min(d);
        }
        if let Some(s) = self.stagger_at.filter(|_| self.next < self.len) {
            at = at.min(s);
        }
        at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(race: Option<u64>) -> ResolveOptions {
        let o = ResolveOptions::new().attempt_timeout(Duration::from_secs(10));
        match race {
            Some(ms) => o.race(Duration::from_millis(ms)),
            None => o,
        }
    }

    #[test]
    fn sequential_starts_the_next_only_when_the_running_one_ends() {
        let t0 = Instant::now();
        let mut s = Schedule::new(2, opts(None), t0 + Duration::from_secs(30));
        assert_eq!(s.poll_start(t0), Some(0));
        assert_eq!(s.poll_start(t0), None);
        assert_eq!(s.poll_timeout(), t0 + Duration::from_secs(10));
        s.handle_end(0);
        assert_eq!(s.poll_start(t0), Some(1));
        // Its own deadline passes.
        assert_eq!(s.handle_timeout(t0 + Duration::from_secs(10)), [1]);
        assert!(s.is_done() && s.poll_start(t0).is_none());
    }

    #[test]
    fn a_staggered_race_starts_the_next_after_the_delay_or_when_one_fails() {
        let t0 = Instant::now();
        let mut s = Schedule::new(3, opts(Some(250)), t0 + Duration::from_secs(30));
        assert_eq!(s.poll_start(t0), Some(0));
        assert_eq!(s.poll_start(t0), None);
        let t1 = t0 + Duration::from_millis(250);
        assert_eq!(s.poll_timeout(), t1);
        assert!(s.handle_timeout(t1).is_empty());
        assert_eq!(s.poll_start(t1), Some(1));
        // One fails before the next delay: the last starts at once.
        s.handle_end(0);
        assert_eq!(s.poll_start(t1), Some(2));
        assert_eq!(s.poll_timeout(), t1 + Duration::from_secs(10), "no stagger once all started");
        assert!(!s.is_done());
        assert!(s.expired(t0 + Duration::from_secs(30)));
    }
}

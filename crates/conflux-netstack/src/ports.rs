//! The ephemeral port allocator: a range, a random start, ports in use
//! (TIME_WAIT included) skipped, an error on exhaustion.

use std::collections::HashSet;
use std::ops::RangeInclusive;

/// Hands out local ports for outgoing connections and listeners on port 0.
#[derive(Debug)]
pub(crate) struct Ports {
    range: RangeInclusive<u16>,
    next: u16,
    used: HashSet<u16>,
}

impl Ports {
    /// An allocator over `range`, starting at a point derived from `seed`.
    pub(crate) fn new(range: RangeInclusive<u16>, seed: u64) -> Ports {
        let span = u64::from(range.end().saturating_sub(*range.start())) + 1;
        let next = *range.start() + (seed % span) as u16;
        Ports { range, next, used: HashSet::new() }
    }

    /// A free port from the range, now taken; `None` when all are taken.
    pub(crate) fn allocate(&mut self) -> Option<u16> {
        let (lo, hi) = (*self.range.start(), *self.range.end());
        if lo > hi {
            return None;
        }
        let span = usize::from(hi - lo) + 1;
        for _ in 0..span {
            let port = self.next;
            self.next = if port >= hi { lo } else { port + 1 };
            if self.used.insert(port) {
                return Some(port);
            }
        }
        None
    }

    /// Marks `port` taken (a listener on a fixed port); false if it already was.
    pub(crate) fn take(&mut self, port: u16) -> bool {
        self.used.insert(port)
    }

    /// Frees `port`.
    pub(crate) fn free(&mut self, port: u16) {
        self.used.remove(&port);
    }

    /// Ports taken right now.
    pub(crate) fn in_use(&self) -> usize {
        self.used.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exhausts_then_reuses_freed_ports() {
        let mut p = Ports::new(100..=103, 7);
        let mut got: Vec<u16> = (0..4).map(|_| p.allocate().expect("a port")).collect();
        assert_eq!(p.allocate(), None, "exhausted");
        got.sort_unstable();
        assert_eq!(got, [100, 101, 102, 103]);
        p.free(102);
        assert_eq!(p.allocate(), Some(102));
        assert_eq!(p.in_use(), 4);
    }

    #[test]
    fn skips_taken_ports_and_starts_at_random() {
        let mut p = Ports::new(1000..=1999, 123_456);
        assert!(p.take(1456));
        assert_eq!(p.allocate(), Some(1457));
        assert!(!p.take(1457));
        #[allow(clippy::reversed_empty_ranges)]
        let mut empty = Ports::new(5..=4, 0);
        assert_eq!(empty.allocate(), None);
    }
}

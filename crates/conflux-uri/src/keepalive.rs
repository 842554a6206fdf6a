//! Constructors of [`Keepalive`], the one keepalive type of the workspace
//! (conflux-tcp re-exports it for its stacks).

use std::time::Duration;

use crate::Keepalive;

impl Keepalive {
    /// After `after` of silence, probe every `interval`; when `probes` probes
    /// go unanswered the flow dies (for a TCP flow: pending and later reads
    /// return Eof, writes return `Closed`). Any received segment resets the
    /// timer. Each TCP backend documents when exactly it declares the peer
    /// dead (Linux: `after + probes * interval`).
    pub const fn new(after: Duration, interval: Duration, probes: u32) -> Keepalive {
        Keepalive { after, interval, probes }
    }

    /// Linux's defaults: 7200 s, 75 s, 9 probes.
    pub const LINUX_DEFAULT: Keepalive = Keepalive::new(Duration::from_secs(7200), Duration::from_secs(75), 9);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_keeps_the_fields() {
        let ka = Keepalive::new(Duration::from_secs(1), Duration::from_secs(2), 3);
        assert_eq!((ka.after, ka.interval, ka.probes), (Duration::from_secs(1), Duration::from_secs(2), 3));
        assert_eq!(Keepalive::LINUX_DEFAULT.probes, 9);
    }
}

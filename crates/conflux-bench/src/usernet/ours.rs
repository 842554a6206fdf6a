//! Our side: `conflux_usernet::Usernet::spawn_netns` on a namespace path,
//! served on a current_thread runtime in a thread of its own.
//!
//! Not in this build yet: conflux-usernet has no forwarder runtime
//! (`Usernet`) on this branch, so [`available`] skips every scenario of the
//! group with that reason and no figure is written.

use std::path::Path;

use crate::Skip;

/// Skips while there is no forwarder to measure.
pub(super) fn available() -> Result<(), Skip> {
    Err(Skip::new("conflux-usernet: no forwarder runtime (Usernet::spawn_netns) in this build"))
}

/// Our forwarder serving one namespace (none can exist in this build).
#[expect(dead_code, reason = "conflux-usernet has no forwarder runtime to construct it from yet")]
pub(super) struct Ours {
    never: (),
}

impl Ours {
    /// Serves the namespace at `netns` with MTU `mtu`.
    pub(super) fn spawn(netns: &Path, mtu: usize) -> Result<Ours, String> {
        Err(format!("conflux-usernet: no forwarder runtime to serve {} (MTU {mtu})", netns.display()))
    }

    /// Panics if the forwarder has stopped.
    pub(super) fn check_alive(&mut self) {}
}

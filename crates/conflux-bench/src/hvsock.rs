//! The `hvsock` benchmark scenario group.

use crate::Scenario;

/// The scenarios of the `hvsock` group, in the order they run.
pub fn scenarios() -> Vec<Scenario> {
    Vec::new()
}

//! The `tcp-host` benchmark scenario group.

use crate::Scenario;

/// The scenarios of the `tcp-host` group, in the order they run.
pub fn scenarios() -> Vec<Scenario> {
    Vec::new()
}

//! The `mimic` benchmark scenario group.

use crate::Scenario;

/// The scenarios of the `mimic` group, in the order they run.
pub fn scenarios() -> Vec<Scenario> {
    Vec::new()
}

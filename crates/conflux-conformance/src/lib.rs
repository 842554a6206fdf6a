//! Conformance kits for conflux flows (being written).
#![forbid(unsafe_code)]

//! Test-only helpers shared by every conflux crate's tests.
//!
//! What it does:
//!
//! - makes skips visible: [`skip!`] prints `SKIP <test>: <kind>: <detail>` to
//!   stderr, appends one JSON line to the skip log (see [`skip_log_path`]) and
//!   returns from the enclosing test; [`report_skip`] does the same without
//!   returning, for conformance kits that skip one case and go on;
//! - deterministic payloads ([`payload`]), a test timeout ([`within`],
//!   [`TIMEOUT`]) and probes of the environment ([`is_root`],
//!   [`have_command`], [`open_fds`]);
//! - test network namespaces ([`Netns`]: made through iproute2's `ip`,
//!   removed with every process left in them on drop; their
//!   `/etc/netns/<name>/` files, [`NetnsEtcFile`], removed with the
//!   directories made for them) and [`ip`];
//! - the external programs serial tests drive ([`tools`]: iperf3 with its
//!   JSON read, a dnsmasq answering one name, dig).
//!
//! What it does not do: it never installs anything, never changes process
//! state (no `setns`: commands run inside a namespace through `ip netns
//! exec`; no environment mutation) and never decides whether a
//! skip is acceptable; `cargo xtask ci` reads the skip log and decides that
//! (see [`SkipKind::required_in_ci`]).
//!
//! ```
//! use conflux_testkit::{skip, is_root};
//!
//! fn needs_root() {
//!     if !is_root() {
//!         skip!(Root, "needs CAP_NET_ADMIN to create {}", "a namespace");
//!     }
//!     // ... the real test ...
//! }
//! # let _ = needs_root; // not called: a doctest must not add to the skip log
//! ```
#![forbid(unsafe_code)]

mod env;
mod netns;
mod payload;
mod skip;
mod tempdir;
mod time;
pub mod tools;

pub use crate::env::{have_command, is_root, open_fds};
pub use crate::netns::{Netns, NetnsEtcFile, ip, unique_name};
pub use crate::payload::payload;
pub use crate::skip::{
    ParseSkipKindError, SkipKind, SkipReturn, current_test_name, qualified_test_name, report_skip, skip_log_path,
};
pub use crate::tempdir::TempDir;
pub use crate::time::{TIMEOUT, within};

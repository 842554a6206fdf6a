//! The flow conformance kit: one suite of cases (A1-J3 of the flow contract), run against
//! every flow the workspace ships; and, with the `tcp` feature, the TCP
//! conformance kit every `TcpStack` backend runs (module `tcp`, feature `tcp`).
//!
//! A transport implements [`FlowFactory`] (connected pairs plus [`Caps`], its
//! capability flags) and instantiates the suite with [`flow_conformance!`], which
//! generates one plain `#[test]` per [`CaseId`]. Each test builds its own tokio
//! runtime (current-thread with a paused clock for [`Caps::virtual_time`],
//! two workers otherwise), runs the case under [`Caps::case_timeout`] so a hang
//! fails with the case id, and panics with the case id and the reason on failure.
//! A case the capabilities exclude is reported as a visible `capability` skip
//! through [`conflux_testkit::report_skip`], never passed silently; so is an
//! excluded part of a case.
//!
//! Payloads come from the seeded PRNG of `conflux-testkit`; reads are compared
//! as byte concatenations, never by chunk boundaries; every read is checked to be
//! non-empty.
//!
//! What is here: sections A-F and J of the spec, plus G1 and G2. What is not:
//! G3 and G4 (codec and hyper over a flow) are tests of the `conflux-tests`
//! package; G5 (a layered flow closes its lower flow) joins with the first
//! layered flow, and H (registry) with the registry (see [`CaseId`]).
//!
//! For the tests of crates that carry a stream end to end: [`echo`], a
//! listener's callback that echoes, and [`echo_back`], its client side.
//!
//! The kit can fail: [`broken`] holds deliberately broken flows, and the crate's
//! tests check that each one is rejected by the right case (and that the good
//! factories pass those same cases).
//!
//! ```
//! use conflux_conformance::{Boxed, PipeFactory, flow_conformance};
//!
//! flow_conformance!(pipe, PipeFactory::new());
//! flow_conformance!(boxed_pipe, Boxed(PipeFactory::new()));
//! ```
//!
//! For a single case without panicking (what negative tests use):
//!
//! ```
//! use conflux_conformance::{CaseId, Outcome, PipeFactory, check_case};
//! # tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap().block_on(async {
//! assert_eq!(check_case(&PipeFactory::new(), CaseId::B9).await, Ok(Outcome::Passed));
//! # });
//! ```
#![forbid(unsafe_code)]

pub mod broken;
mod caps;
mod case;
mod cases;
mod echo;
mod factories;
mod factory;
#[cfg(feature = "tcp")]
pub mod tcp;
mod util;

pub use crate::{
    caps::Caps,
    case::{CaseFailure, CaseId, Outcome, ParseCaseIdError, check_case, run_case},
    echo::{echo, echo_back},
    factories::{DuplexFactory, PipeFactory},
    factory::{Boxed, FlowFactory, PairFuture},
};

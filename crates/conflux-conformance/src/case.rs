//! Case ids, outcomes and the two entry points: [`check_case`] and [`run_case`].

use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Mutex;
use std::task::{Context, Poll};

use conflux_testkit::{SkipKind, current_test_name, report_skip};

use crate::cases;
use crate::util::{PROMPT, bounded};
use crate::{Caps, FlowFactory};

macro_rules! case_ids {
    ($($id:ident => $title:literal,)+) => {
        /// One conformance case of `spec/flow.md`.
        ///
        /// Present: A1-A6, B1-B9, C1-C7, D1-D4, E1-E4, F1-F3, G1, G2 and J1-J3.
        /// Elsewhere: G3 (codec) and G4 (hyper) are tests of the `conflux-tests`
        /// package. Later: G5 (a layered flow closes its lower flow) joins with the
        /// first layered flow (the vsock framing): it needs a way to observe the
        /// lower flow, which a layered factory will provide through a new optional
        /// `FlowFactory` method returning the lower flow's state; H1/H2 join with the
        /// registry. Neither is faked here.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum CaseId {
            $(#[doc = $title] $id,)+
        }

        impl CaseId {
            /// Every case, in spec order.
            pub const ALL: &'static [CaseId] = &[$(CaseId::$id,)+];

            /// The id as written in the spec: `"A1"`.
            pub const fn name(self) -> &'static str {
                match self { $(CaseId::$id => stringify!($id),)+ }
            }

            /// What the case checks, in one line.
            pub const fn title(self) -> &'static str {
                match self { $(CaseId::$id => $title,)+ }
            }
        }
    };
}

case_ids! {
    A1 => "bytes written by one side are read by the other, equal concatenation, sizes 1 B to 1 MiB",
    A2 => "read never yields an empty buffer",
    A3 => "empty write: Ok, the peer observes nothing, no spurious Eof",
    A4 => "writev keeps order, skips empty elements; writev of nothing is Ok",
    A5 => "1024 x 16 KiB writev with a concurrent reader: exactly 16 MiB arrive",
    A6 => "backpressure: with no reader a large write stays pending, completes once the peer reads",
    B1 => "peer writes N bytes then shutdown(Write): we read exactly N bytes, then Eof",
    B2 => "Eof is sticky (after the peer's Eof and after our shutdown(Read))",
    B3 => "after reading the peer's Eof we can still write and the peer reads it",
    B4 => "after our shutdown(Write) writes return Closed; the peer reads everything before, then Eof",
    B5 => "after our shutdown(Write) we still read everything the peer sends",
    B6 => "shutdown(Write) flushes: data accepted before it is delivered before the Eof",
    B7 => "our shutdown(Read): next read returns Eof at once; writes still work",
    B8 => "shutdown(Write) then shutdown(Read) behaves as Both",
    B9 => "shutdown is idempotent; the peer sees one Eof",
    C1 => "after close: read gives Eof or an error, never data, never a hang; write gives Closed",
    C2 => "double close returns promptly, no panic, no error",
    C3 => "close while another task waits in read on the read half: that read completes",
    C4 => "peer closes: drain then Eof, our writes fail; peer aborts: an error with is_reset()",
    C5 => "close returns within a bound even if the peer never closes",
    C6 => "close after shutdown(Both) completes promptly, no extra signal on the wire",
    C7 => "bytes whose write returned Ok before close reach the peer before its Eof",
    D1 => "after a write error all later writes fail",
    D2 => "after a read error no later read yields data",
    D3 => "Closed may follow partial acceptance; never reordering or duplication",
    D4 => "every error's Display is non-empty and meaningful",
    E1 => "full duplex: both sides write 8 MiB while reading 8 MiB concurrently",
    E2 => "SharedWriter clones writing whole messages never interleave",
    E3 => "read is cancel-safe: drop a pending read, read again, no byte lost",
    E4 => "dropping a pending write never panics; the peer sees a prefix of the stream",
    F1 => "drop without close: the peer's read ends within the timeout",
    F2 => "drop the write half only: the peer sees Eof; our read half still works",
    F3 => "no leaks: resources return to zero after drop or close",
    G1 => "tokio adapter: read_to_end, copy, shutdown gives Eof, second shutdown Ok, empty write Ok(0)",
    G2 => "copy_bidirectional over two adapted flows with one side half-closing",
    J1 => "copy: stats, Eof ends with Ok, the destination stays open",
    J2 => "proxy: Eof in one direction shuts down that direction only; stats; errors name the side",
    J3 => "stats print without panicking for a zero duration and tiny sizes",
}

impl fmt::Display for CaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is not a [`CaseId`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseCaseIdError(String);

impl fmt::Display for ParseCaseIdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown conformance case {:?}", self.0)
    }
}

impl std::error::Error for ParseCaseIdError {}

impl FromStr for CaseId {
    type Err = ParseCaseIdError;

    /// Parses `"A1"` (case-insensitive).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CaseId::ALL.iter().copied().find(|c| c.name().eq_ignore_ascii_case(s)).ok_or_else(|| ParseCaseIdError(s.into()))
    }
}

/// How a case that did not fail ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every part ran and held.
    Passed,
    /// The case ran and held, but parts of it were excluded by the transport's
    /// capabilities (each entry says which part and why).
    PassedWithSkips(Vec<String>),
    /// The whole case was excluded by the transport's capabilities.
    Skipped(String),
}

/// A case that failed: which case and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseFailure {
    /// The failing case.
    pub case: CaseId,
    /// What went wrong (a hang reads "timed out after ...").
    pub reason: String,
}

impl fmt::Display for CaseFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "flow conformance case {} ({}) failed: {}", self.case, self.case.title(), self.reason)
    }
}

impl std::error::Error for CaseFailure {}

/// What a running case sees: the factory, its capabilities, and where parts
/// skipped for lack of a capability are noted.
pub(crate) struct Kit<'a, F> {
    pub(crate) factory: &'a F,
    pub(crate) caps: Caps,
    skipped: Mutex<Vec<String>>,
}

impl<F: FlowFactory> Kit<'_, F> {
    /// A fresh connected pair.
    pub(crate) async fn pair(&self) -> Result<(F::Flow, F::Flow), String> {
        bounded("the factory's pair()", PROMPT * 5, self.factory.pair())
            .await?
            .map_err(|e| format!("the factory's pair() failed: {e}"))
    }

    /// Notes a part of the case not run for lack of a capability.
    pub(crate) fn skip_part(&self, what: &str) {
        self.skipped.lock().unwrap_or_else(|p| p.into_inner()).push(what.to_owned());
    }
}

/// Why the transport's capabilities exclude `case` entirely, if they do.
fn excluded<F: FlowFactory>(factory: &F, caps: &Caps, case: CaseId) -> Option<&'static str> {
    use CaseId::*;
    match case {
        A6 if !caps.bounded_buffer => Some("needs bounded_buffer (backpressure)"),
        B1 | B2 | B3 | B4 | B5 | B6 | B9 | F2 | G1 | G2 | J1 | J2 if !caps.half_close => Some("needs half_close"),
        B7 if !caps.read_shutdown => Some("needs read_shutdown"),
        B8 if !(caps.half_close && caps.read_shutdown) => Some("needs half_close and read_shutdown"),
        D2 if !caps.abort_resets => Some("needs abort_resets: no other way to provoke a read error"),
        F3 if factory.open_resources().is_none() && !caps.kernel_fds => {
            Some("no resource counter (FlowFactory::open_resources) and no kernel descriptors to count")
        }
        _ => None,
    }
}

/// Runs one case against `factory` without panicking.
///
/// Needs a tokio runtime with time enabled (the case runs under
/// [`Caps::case_timeout`]; a hang fails as "timed out"). Panics inside the case
/// or the flow are caught and reported as failures. [`run_case`] is the
/// panicking wrapper that also builds the right runtime.
pub async fn check_case<F: FlowFactory>(factory: &F, case: CaseId) -> Result<Outcome, CaseFailure> {
    let caps = factory.caps();
    if let Some(why) = excluded(factory, &caps, case) {
        return Ok(Outcome::Skipped(format!("{case}: {why}")));
    }
    let kit = Kit { factory, caps, skipped: Mutex::new(Vec::new()) };
    let run = CatchUnwind(Box::pin(tokio::time::timeout(caps.case_timeout, cases::dispatch(&kit, case))));
    let reason = match run.await {
        Ok(Ok(Ok(()))) => {
            let skipped = kit.skipped.into_inner().unwrap_or_else(|p| p.into_inner());
            return Ok(if skipped.is_empty() { Outcome::Passed } else { Outcome::PassedWithSkips(skipped) });
        }
        Ok(Ok(Err(reason))) => reason,
        Ok(Err(_)) => format!("timed out after {:?} (a hang)", caps.case_timeout),
        Err(panic) => format!("panicked: {panic}"),
    };
    Err(CaseFailure { case, reason })
}

/// Runs one case on a runtime of its own and panics with the case id and reason
/// if it fails; capability skips are reported through
/// [`conflux_testkit::report_skip`]. What [`flow_conformance!`](crate::flow_conformance) calls.
///
/// The runtime is current-thread with a paused clock when the factory declares
/// [`Caps::virtual_time`], multi-thread with two workers otherwise.
pub fn run_case<F: FlowFactory>(factory: &F, case: CaseId) {
    let caps = factory.caps();
    let mut builder = if caps.virtual_time {
        let mut b = tokio::runtime::Builder::new_current_thread();
        b.start_paused(true);
        b
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(2);
        b
    };
    let runtime = builder.enable_all().build().expect("build the case's tokio runtime");
    let outcome = runtime.block_on(check_case(factory, case));
    // Tasks a failed case left behind must not keep the test alive.
    runtime.shutdown_background();
    let test = current_test_name(case.name());
    match outcome {
        Ok(Outcome::Passed) => {}
        Ok(Outcome::PassedWithSkips(parts)) => {
            for part in parts {
                report_skip(SkipKind::Capability, &test, &format!("{case} (part): {part}"));
            }
        }
        Ok(Outcome::Skipped(why)) => report_skip(SkipKind::Capability, &test, &why),
        Err(failure) => panic!("{failure}"),
    }
}

/// Catches a panic of the wrapped future (the case or the flow under test).
struct CatchUnwind<Fut>(Pin<Box<Fut>>);

impl<Fut: Future> Future for CatchUnwind<Fut> {
    type Output = Result<Fut::Output, String>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let fut = self.0.as_mut();
        match std::panic::catch_unwind(AssertUnwindSafe(|| fut.poll(cx))) {
            Ok(Poll::Ready(out)) => Poll::Ready(Ok(out)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(payload) => Poll::Ready(Err(crate::util::panic_message(payload))),
        }
    }
}

/// Generates a module of plain `#[test]`s, one per [`CaseId`], each running the
/// case against a factory through [`run_case`](crate::run_case).
///
/// `$factory` is evaluated in each test, inside a module that sees the caller's
/// items (`use super::*`). No tokio test macro is needed in the calling crate.
///
/// ```
/// use conflux_conformance::{PipeFactory, flow_conformance};
/// flow_conformance!(pipes, PipeFactory::new());
/// ```
#[macro_export]
macro_rules! flow_conformance {
    ($name:ident, $factory:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            $crate::flow_conformance!(@cases $factory;
                a1_round_trip => A1, a2_never_empty => A2, a3_empty_write => A3, a4_writev_order => A4,
                a5_writev_16mib => A5, a6_backpressure => A6,
                b1_read_then_eof => B1, b2_eof_sticky => B2, b3_write_after_eof => B3,
                b4_write_after_shutdown => B4, b5_read_after_shutdown => B5, b6_shutdown_flushes => B6,
                b7_shutdown_read => B7, b8_write_then_read_is_both => B8, b9_shutdown_idempotent => B9,
                c1_use_after_close => C1, c2_double_close => C2, c3_close_wakes_reader => C3,
                c4_peer_close_and_abort => C4, c5_close_bounded => C5, c6_close_after_shutdown_both => C6,
                c7_graceful_close => C7,
                d1_write_error_sticky => D1, d2_read_error_sticky => D2, d3_partial_then_closed => D3,
                d4_error_display => D4,
                e1_full_duplex => E1, e2_shared_writer => E2, e3_read_cancel_safe => E3,
                e4_write_cancel => E4,
                f1_drop_ends_peer => F1, f2_drop_write_half => F2, f3_no_leaks => F3,
                g1_tokio_adapter => G1, g2_copy_bidirectional => G2,
                j1_copy => J1, j2_proxy => J2, j3_stats_display => J3,
            );
        }
    };
    (@cases $factory:expr; $($test:ident => $case:ident,)+) => {
        $(
            #[test]
            fn $test() {
                $crate::run_case(&$factory, $crate::CaseId::$case);
            }
        )+
    };
}

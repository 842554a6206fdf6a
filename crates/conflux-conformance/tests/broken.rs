//! The kit can fail: each deliberately broken flow is rejected by the case
//! that names its fault, and the good factories pass those same cases.

use conflux_conformance::broken::{Breakage, BrokenFactory};
use conflux_conformance::{Boxed, CaseId, DuplexFactory, FlowFactory, Outcome, PipeFactory, check_case};

fn runtime(virtual_time: bool) -> tokio::runtime::Runtime {
    let mut b = if virtual_time {
        let mut b = tokio::runtime::Builder::new_current_thread();
        b.start_paused(true);
        b
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(2);
        b
    };
    b.enable_all().build().unwrap()
}

fn check<F: FlowFactory>(factory: &F, case: CaseId) -> Result<Outcome, conflux_conformance::CaseFailure> {
    runtime(factory.caps().virtual_time).block_on(check_case(factory, case))
}

/// `breakage` fails each of its cases with that case's id, and the good
/// factories pass them all.
fn rejected(breakage: Breakage) {
    for &case in breakage.caught_by() {
        match check(&BrokenFactory(breakage), case) {
            Err(failure) => {
                assert_eq!(failure.case, case, "{breakage:?}: the failure names another case: {failure}");
                // The fault itself is named, not just noticed as a hang.
                assert!(!failure.reason.contains("timed out"), "{breakage:?}: {case} only timed out: {failure}");
                eprintln!("{breakage:?} rejected as expected: {failure}");
            }
            Ok(outcome) => panic!("{breakage:?} passed {case} ({outcome:?}): the kit cannot see this fault"),
        }
        assert_eq!(check(&PipeFactory::new(), case), Ok(Outcome::Passed), "the pipe fails {case}");
        assert_eq!(check(&Boxed(PipeFactory::new()), case), Ok(Outcome::Passed), "the boxed pipe fails {case}");
        let duplex = check(&DuplexFactory::new(), case);
        assert!(matches!(duplex, Ok(Outcome::Passed | Outcome::PassedWithSkips(_))), "duplex fails {case}: {duplex:?}");
    }
}

#[test]
fn empty_chunks_fail_a2() {
    rejected(Breakage::EmptyChunks);
}

#[test]
fn dropping_the_last_chunk_on_shutdown_fails_b1_b6_c7() {
    rejected(Breakage::DropsLastChunkOnShutdown);
}

#[test]
fn eof_that_is_not_sticky_fails_b2() {
    rejected(Breakage::EofNotSticky);
}

#[test]
fn a_second_shutdown_that_errors_fails_b9() {
    rejected(Breakage::SecondShutdownErrors);
}

#[test]
fn a_read_that_is_not_cancel_safe_fails_e3() {
    rejected(Breakage::ReadNotCancelSafe);
}

#[test]
fn writes_accepted_after_shutdown_fail_b4() {
    rejected(Breakage::WritesAfterShutdown);
}

#[test]
fn every_breakage_is_tested() {
    assert_eq!(Breakage::ALL.len(), 6);
    for b in Breakage::ALL {
        assert!(!b.caught_by().is_empty(), "{b:?} names no case");
    }
}

#[test]
fn case_ids_print_and_parse() {
    assert_eq!(CaseId::ALL.len(), 38);
    for &case in CaseId::ALL {
        assert_eq!(case.to_string().parse::<CaseId>(), Ok(case));
        assert!(!case.title().is_empty());
    }
    assert_eq!(CaseId::A1.to_string(), "A1");
    assert!("G5".parse::<CaseId>().is_err());
}

#[test]
fn a_hang_fails_with_the_case_id() {
    // A factory whose pairs never connect: the kit's bounds turn the hang into a failure.
    struct Never;
    impl FlowFactory for Never {
        type Flow = conflux_flow::Pipe;
        fn caps(&self) -> conflux_conformance::Caps {
            conflux_conformance::Caps::in_memory()
        }
        fn pair(&self) -> conflux_conformance::PairFuture<'_, Self::Flow> {
            Box::pin(std::future::pending())
        }
    }
    let failure = check(&Never, CaseId::C2).unwrap_err();
    assert_eq!(failure.case, CaseId::C2);
    assert!(failure.to_string().contains("C2"), "{failure}");
}

#[test]
fn capability_exclusions_are_skips_not_passes() {
    let factory = Boxed(DuplexFactory::new());
    assert!(matches!(check(&factory, CaseId::D2), Ok(Outcome::Skipped(why)) if why.contains("abort_resets")));
    assert!(matches!(check(&factory, CaseId::C4), Ok(Outcome::PassedWithSkips(parts)) if parts.len() == 1));
}

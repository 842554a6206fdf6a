//! Each deliberate improvement over upstream mimic, with its own test: cycles,
//! the NotFound report, once-per-resolve functions, timeouts, the staggered
//! race, the no-fallback guard and plans (tracing: `tests/tracing.rs`).
#![forbid(unsafe_code)]

mod fixtures;

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use conflux_mimic::report::{AttemptOutcome, FnOutcome, Reason};
use conflux_mimic::{Ctx, Key, RegisterOptions, Registry, ResolveOptions, all, dft, map, opt, protocol_fn, req};
use fixtures::{Fixtures, IntFlow, IntProto};
use tokio::time::Instant;

/// Sets its flag when dropped: shows a pending connect was cancelled.
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Registers a protocol whose connect never completes; its flag tells whether it was dropped.
fn hanging(registry: &Registry, name: &str, opts: RegisterOptions) -> (Key<()>, Arc<AtomicBool>) {
    let dropped = Arc::new(AtomicBool::new(false));
    let flag = dropped.clone();
    let (key, _) = registry.register_with(
        name,
        opts,
        protocol_fn(move |_: ()| {
            let guard = DropFlag(flag.clone());
            async move {
                let _guard = guard;
                std::future::pending::<Result<IntFlow, io::Error>>().await
            }
        }),
    );
    (key, dropped)
}

fn failing(registry: &Registry, name: &str, opts: RegisterOptions) -> Key<()> {
    registry
        .register_with(
            name,
            opts,
            protocol_fn(|_: ()| async {
                Err::<IntFlow, _>(io::Error::new(io::ErrorKind::ConnectionRefused, "refused"))
            }),
        )
        .0
}

// ---- Cycles ----

#[tokio::test]
async fn a_three_key_cycle_is_reported_with_its_keys() {
    let fx = Fixtures::new();
    let a: Key<i64> = Key::new("a");
    let b: Key<i64> = Key::new("b");
    let c: Key<i64> = Key::new("c");
    // Through opt, dft and map: none of them is a required argument.
    let ctx = Ctx::new()
        .fold(&a, opt(&b), |b| b)
        .fold(&b, map(dft(&c, 0), |c| c + 1), Some)
        .fold(&c, all(&a), |a| a.first().copied())
        .fold(&fx.int, req(&a), Some)
        .add(&a, 1);
    let err = fx.registry.resolve(&ctx).await.unwrap_err();
    let cycle = err.cycle().expect("a cycle");
    let mut keys = cycle.keys().to_vec();
    keys.sort();
    assert_eq!(keys, ["a", "b", "c"]);
    let text = err.to_string();
    assert!(text.starts_with("dependency cycle between context keys:"), "{text}");
    assert!(fx.registry.unfold(&ctx).await.is_err());
    assert!(fx.registry.plan(&ctx).is_err());
}

#[tokio::test]
async fn a_key_computed_from_itself_is_a_cycle() {
    let fx = Fixtures::new();
    let ctx = Ctx::new().add(&fx.int, 1).fold(&fx.int, dft(&fx.int, 0), |i| Some(i + 1));
    let err = fx.registry.resolve(&ctx).await.unwrap_err();
    assert_eq!(err.cycle().unwrap().keys(), ["int"]);
}

// ---- The NotFound report ----

#[tokio::test]
async fn not_found_names_the_missing_key_and_every_attempt() {
    let registry = Registry::new();
    let refused = failing(&registry, "refused", RegisterOptions::new().priority(5));
    let (int, _) = registry.register("int", Some(10), IntProto);
    let config: Key<String> = Key::new("config");
    let port: Key<u16> = Key::new("port");
    let ctx = Ctx::new().add(&refused, ()).fold(&int, (req(&config), dft(&port, 0)), |(_, p)| Some(i64::from(p))).fold(
        &port,
        (),
        |()| None::<u16>,
    );
    let err = registry.resolve(&ctx).await.unwrap_err();
    let report = err.not_found().unwrap();
    assert_eq!(report.reason(), &Reason::Exhausted);
    assert_eq!(report.missing_keys(), ["config"]);
    assert_eq!(report.attempts().len(), 1);
    let attempt = &report.attempts()[0];
    assert_eq!((attempt.protocol(), attempt.priority()), ("refused", Some(5)));
    assert!(matches!(attempt.outcome(), AttemptOutcome::Failed(e) if e.to_string() == "refused"));
    let outcomes: Vec<_> = report.functions().iter().map(|f| (f.key().to_string(), f.outcome().clone())).collect();
    assert!(outcomes.contains(&("port".into(), FnOutcome::ReturnedNone)), "{outcomes:?}");
    assert!(outcomes.contains(&("int".into(), FnOutcome::Dropped { missing: "config".into(), provided: false })));
    let text = err.to_string();
    for needle in [
        "all 1 candidate(s) failed",
        "1. refused (priority 5): failed after",
        ": refused",
        "int <- (req config, dft port): dropped: required key `config` was never provided",
        "port <- (): returned nothing",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
}

#[tokio::test]
async fn an_empty_context_says_so() {
    let fx = Fixtures::new();
    let err = fx.registry.resolve(&Ctx::new()).await.unwrap_err();
    assert_eq!(err.not_found().unwrap().reason(), &Reason::EmptyContext);
    assert!(err.to_string().contains("the context is empty"), "{err}");
}

#[tokio::test]
async fn a_provided_key_without_value_is_told_apart() {
    let fx = Fixtures::new();
    let a: Key<i64> = Key::new("a");
    let ctx = Ctx::new().fold(&a, (), |()| None).fold(&fx.int, req(&a), Some);
    let err = fx.registry.resolve(&ctx).await.unwrap_err();
    assert!(err.to_string().contains("required key `a` has no value"), "{err}");
    assert_eq!(err.not_found().unwrap().reason(), &Reason::NoCandidates);
}

// ---- Functions run once ----

#[tokio::test]
async fn each_function_runs_at_most_once_per_resolve() {
    let fx = Fixtures::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let (root, b, c): (Key<i64>, Key<i64>, Key<i64>) = (Key::new("root"), Key::new("b"), Key::new("c"));
    let counted = calls.clone();
    // A diamond: int <- (b, c), b <- root, c <- root, root <- counted function.
    let ctx = Ctx::new()
        .fold(&fx.int, (req(&b), req(&c), opt(&root)), |(b, c, _)| Some(b + c))
        .fold(&b, req(&root), Some)
        .fold(&c, map(req(&root), |r| r * 10), Some)
        .fold(&root, (), move |()| {
            counted.fetch_add(1, Ordering::SeqCst);
            Some(1)
        });
    let flow = fx.registry.resolve(&ctx).await.unwrap();
    assert_eq!(fx.int_h.downcast(flow).unwrap(), IntFlow(11));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    fx.registry.resolve(&ctx).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 2, "once per resolve");
}

// ---- Timeouts ----

#[tokio::test(start_paused = true)]
async fn a_hanging_attempt_times_out_and_the_next_is_tried() {
    let registry = Registry::with_options(ResolveOptions::new().attempt_timeout(Duration::from_secs(2)));
    let (slow, dropped) = hanging(&registry, "slow", RegisterOptions::new().priority(1));
    let (int, h) = registry.register("int", Some(2), IntProto);
    let started = Instant::now();
    let flow = registry.resolve(&Ctx::new().add(&slow, ()).add(&int, 3)).await.unwrap();
    assert_eq!(h.downcast(flow).unwrap(), IntFlow(3));
    assert_eq!(started.elapsed(), Duration::from_secs(2));
    assert!(dropped.load(Ordering::SeqCst), "the timed-out connect was dropped");
}

#[tokio::test(start_paused = true)]
async fn a_lone_candidate_is_bounded_like_one_in_a_race() {
    // One candidate takes a path of its own (no race to run): the same
    // deadlines, outcomes and report as a candidate among several.
    let attempt =
        ResolveOptions::new().attempt_timeout(Duration::from_secs(2)).overall_timeout(Duration::from_secs(30));
    let overall =
        ResolveOptions::new().attempt_timeout(Duration::from_secs(10)).overall_timeout(Duration::from_secs(3));
    for (opts, racing) in [(attempt, false), (attempt.race(Duration::from_secs(1)), true), (overall, false)] {
        let registry = Registry::with_options(opts);
        let (one, dropped) = hanging(&registry, "one", RegisterOptions::new().priority(1));
        let started = Instant::now();
        let err = registry.resolve(&Ctx::new().add(&one, ())).await.unwrap_err();
        let report = err.not_found().unwrap();
        assert_eq!(report.attempts().len(), 1, "{err}");
        let a = &report.attempts()[0];
        assert!(dropped.load(Ordering::SeqCst), "the pending connect was dropped");
        if opts == overall {
            assert_eq!(started.elapsed(), Duration::from_secs(3));
            assert_eq!(report.reason(), &Reason::OverallTimeout(Duration::from_secs(3)));
            assert!(matches!(a.outcome(), AttemptOutcome::Cancelled), "{err}");
        } else {
            assert_eq!(started.elapsed(), Duration::from_secs(2), "racing: {racing}");
            assert_eq!(report.reason(), &Reason::Exhausted);
            assert!(matches!(a.outcome(), AttemptOutcome::TimedOut(t) if *t == Duration::from_secs(2)), "{err}");
        }
        assert_eq!(a.elapsed(), started.elapsed(), "{err}");
        assert_eq!((a.protocol(), a.priority()), ("one", Some(1)));
    }
    // A failure is reported with its error, and a fallback-forbidding lone
    // candidate still names the candidates it cut off.
    let registry = Registry::new();
    let tls = failing(&registry, "tls", RegisterOptions::new().priority(1).no_fallback());
    let tcp = failing(&registry, "tcp", RegisterOptions::new().priority(2));
    let err = registry.resolve(&Ctx::new().add(&tls, ()).add(&tcp, ())).await.unwrap_err();
    let report = err.not_found().unwrap();
    assert_eq!(report.reason(), &Reason::FallbackForbidden { protocol: "tls".into() });
    assert!(matches!(report.attempts()[0].outcome(), AttemptOutcome::Failed(e) if e.to_string() == "refused"), "{err}");
    assert!(matches!(report.attempts()[1].outcome(), AttemptOutcome::NotTried), "{err}");
}

#[tokio::test(start_paused = true)]
async fn the_overall_timeout_bounds_the_whole_resolve() {
    let opts = ResolveOptions::new().attempt_timeout(Duration::from_secs(10)).overall_timeout(Duration::from_secs(3));
    let registry = Registry::with_options(opts);
    let (one, _) = hanging(&registry, "one", RegisterOptions::new().priority(1));
    let (two, _) = hanging(&registry, "two", RegisterOptions::new().priority(2));
    let started = Instant::now();
    let err = registry.resolve(&Ctx::new().add(&one, ()).add(&two, ())).await.unwrap_err();
    assert_eq!(started.elapsed(), Duration::from_secs(3));
    let report = err.not_found().unwrap();
    assert_eq!(report.reason(), &Reason::OverallTimeout(Duration::from_secs(3)));
    assert!(matches!(report.attempts()[0].outcome(), AttemptOutcome::Cancelled));
    assert!(matches!(report.attempts()[1].outcome(), AttemptOutcome::NotTried));
    assert!(err.to_string().contains("overall timeout of 3s"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn an_async_function_is_bounded_too() {
    let registry = Registry::with_options(ResolveOptions::new().attempt_timeout(Duration::from_secs(1)));
    let fx = Fixtures::in_registry(registry);
    let ctx = Ctx::new().fold_async(&fx.int, (), |()| std::future::pending::<Option<i64>>());
    let err = fx.registry.resolve(&ctx).await.unwrap_err();
    let f = &err.not_found().unwrap().functions()[0];
    assert_eq!(f.outcome(), &FnOutcome::TimedOut(Duration::from_secs(1)));
    let ctx = Ctx::new().fold_async(&fx.int, (), |()| async { vec![4, 5] });
    let unfolded = fx.registry.unfold(&ctx).await.unwrap();
    assert_eq!(unfolded.values(&fx.int).collect::<Vec<_>>(), [&4, &5], "the function's order is kept");
}

// ---- The staggered race ----

#[tokio::test(start_paused = true)]
async fn a_hanging_candidate_is_beaten_by_the_race() {
    let opts = ResolveOptions::new().attempt_timeout(Duration::from_secs(10)).race(Duration::from_millis(250));
    let registry = Registry::with_options(opts);
    let (slow, dropped) = hanging(&registry, "slow", RegisterOptions::new().priority(1));
    let (int, h) = registry.register("int", Some(2), IntProto);
    let ctx = Ctx::new().add(&slow, ()).add(&int, 8);

    let started = Instant::now();
    let flow = registry.resolve(&ctx).await.unwrap();
    assert_eq!(h.downcast(flow).unwrap(), IntFlow(8));
    assert_eq!(started.elapsed(), Duration::from_millis(250), "the second started after the stagger delay");
    assert!(dropped.load(Ordering::SeqCst), "the loser was cancelled");

    // Sequentially, the same context waits for the whole attempt timeout.
    let started = Instant::now();
    registry.resolve_with(&ctx, opts.sequential()).await.unwrap();
    assert_eq!(started.elapsed(), Duration::from_secs(10));
}

#[tokio::test(start_paused = true)]
async fn a_race_starts_the_next_at_once_when_one_fails() {
    let registry = Registry::with_options(ResolveOptions::new().race(Duration::from_secs(5)));
    let refused = failing(&registry, "refused", RegisterOptions::new().priority(1));
    let (int, h) = registry.register("int", Some(2), IntProto);
    let started = Instant::now();
    let flow = registry.resolve(&Ctx::new().add(&refused, ()).add(&int, 1)).await.unwrap();
    assert!(h.is(&flow));
    assert_eq!(started.elapsed(), Duration::ZERO);
}

// ---- The no-fallback guard ----

#[tokio::test]
async fn a_guarded_tls_failure_does_not_fall_back_to_tcp() {
    for guarded in [true, false] {
        let registry = Registry::new();
        let mut tls_opts = RegisterOptions::new().priority(10);
        if guarded {
            tls_opts = tls_opts.no_fallback();
        }
        let tls = failing(&registry, "tls", tls_opts);
        let (tcp, h) = registry.register("tcp", Some(20), IntProto);
        let ctx = Ctx::new().add(&tls, ()).add(&tls, ()).add(&tcp, 443);
        let res = registry.resolve(&ctx).await;
        if guarded {
            let err = res.unwrap_err();
            let report = err.not_found().unwrap();
            assert_eq!(report.reason(), &Reason::FallbackForbidden { protocol: "tls".into() });
            let outcomes: Vec<_> = report.attempts().iter().map(|a| (a.protocol(), a.outcome())).collect();
            assert_eq!(outcomes.len(), 3, "{outcomes:?}");
            assert!(matches!(outcomes[0], ("tls", AttemptOutcome::Failed(_))), "every TLS endpoint is still tried");
            assert!(matches!(outcomes[1], ("tls", AttemptOutcome::Failed(_))));
            assert!(matches!(outcomes[2], ("tcp", AttemptOutcome::NotTried)));
            assert!(err.to_string().contains("protocol `tls` failed and forbids falling back past it"), "{err}");
        } else {
            assert_eq!(h.downcast(res.unwrap()).unwrap(), IntFlow(443), "unguarded: falls back");
        }
    }
}

// ---- Plans ----

#[test]
fn plan_shows_functions_and_candidates_without_running_anything() {
    let registry = Registry::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let (tls, _) = registry.register_with("tls", RegisterOptions::new().priority(10).no_fallback(), IntProto);
    let (tcp, _) = registry.register("tcp", Some(20), IntProto);
    let (unused, _) = registry.register("unused", None, IntProto);
    let host: Key<String> = Key::new("host");
    let config: Key<String> = Key::new("config");
    let counted = calls.clone();
    let ctx = Ctx::new()
        .add(&host, "example.test".into())
        .fold(&tcp, req(&host), move |_| {
            counted.fetch_add(1, Ordering::SeqCst);
            Some(1)
        })
        .fold(&tls, (req(&host), req(&config)), |_| Some(2))
        .add(&tls, 3);
    let _ = unused;
    let plan = registry.plan(&ctx).unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 0, "no function ran");
    let text = plan.to_string();
    for needle in [
        "tcp <- (req host): may run",
        "tls <- (req host, req config): dropped: required key `config` is never available",
        "1. tls (priority 10, no fallback past it): 1 plain value(s), 0 function(s)",
        "2. tcp (priority 20): 0 plain value(s), 1 function(s)",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
    assert!(!text.contains("unused"), "{text}");
    let dot = plan.to_dot();
    assert!(dot.starts_with("digraph mimic {") && dot.trim_end().ends_with('}'), "{dot}");
    assert!(dot.contains("candidate #1") && dot.contains("style=\"dashed\""), "{dot}");
}

#[tokio::test(start_paused = true)]
async fn racing_attempts_each_time_out_at_their_own_deadline() {
    let opts = ResolveOptions::new().attempt_timeout(Duration::from_secs(2)).race(Duration::from_secs(1));
    let registry = Registry::with_options(opts);
    let keys: Vec<Key<()>> =
        (1..=3).map(|p| hanging(&registry, &format!("h{p}"), RegisterOptions::new().priority(p)).0).collect();
    let ctx = keys.iter().fold(Ctx::new(), |ctx, k| ctx.add(k, ()));
    let started = Instant::now();
    let err = registry.resolve(&ctx).await.unwrap_err();
    // Started at 0, 1 and 2 s; each gives up 2 s after its start.
    assert_eq!(started.elapsed(), Duration::from_secs(4));
    let report = err.not_found().unwrap();
    assert_eq!(report.reason(), &Reason::Exhausted);
    for a in report.attempts() {
        assert!(matches!(a.outcome(), AttemptOutcome::TimedOut(t) if *t == Duration::from_secs(2)), "{err}");
        assert_eq!(a.elapsed(), Duration::from_secs(2), "{err}");
    }
}

//! Registry semantics found by probing it as a user would (issue 13): merges
//! of contexts sharing a base, functions returning `Result`, panics, cycles
//! nothing needs, and NotFound reports that say why there was no candidate.
#![forbid(unsafe_code)]

mod fixtures;

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use conflux_mimic::report::{AttemptOutcome, FnOutcome, Reason};
use conflux_mimic::{Ctx, Key, Registry, map, opt, protocol_fn, req};
use fixtures::{Fixtures, IntFlow, StrFlow};

/// A protocol whose connect always fails, counting its dials.
fn refusing(registry: &Registry, name: &str, priority: u32) -> (Key<()>, Arc<AtomicUsize>) {
    let dials = Arc::new(AtomicUsize::new(0));
    let d = dials.clone();
    let (key, _) = registry.register(
        name,
        Some(priority),
        protocol_fn(move |_: ()| {
            d.fetch_add(1, Ordering::SeqCst);
            async { Err::<IntFlow, _>(io::Error::new(io::ErrorKind::ConnectionRefused, "refused")) }
        }),
    );
    (key, dials)
}

#[tokio::test]
async fn merging_contexts_built_from_one_base_runs_its_functions_and_dials_its_endpoints_once() {
    let fx = Fixtures::new();
    let (refused, dials) = refusing(&fx.registry, "refused", 1);
    let runs = Arc::new(AtomicUsize::new(0));
    let r = runs.clone();
    let base = Ctx::new()
        .fold(&fx.int, (), move |()| {
            r.fetch_add(1, Ordering::SeqCst);
            Some(7)
        })
        .add(&refused, ());
    let a: Key<u8> = Key::new("a");
    let b: Key<u8> = Key::new("b");
    for ctx in [base.add(&a, 1).merge(&base.add(&b, 2)), base.merge(&base)] {
        runs.store(0, Ordering::SeqCst);
        dials.store(0, Ordering::SeqCst);
        let flow = fx.registry.resolve(&ctx).await.unwrap();
        assert_eq!(fx.int_h.downcast(flow).unwrap(), IntFlow(7));
        assert_eq!(runs.load(Ordering::SeqCst), 1, "the base's function ran twice");
        assert_eq!(dials.load(Ordering::SeqCst), 1, "the base's endpoint was dialled twice");
        assert_eq!(fx.registry.unfold(&ctx).await.unwrap().values(&fx.int).count(), 1);
    }
}

#[tokio::test]
async fn a_function_returning_an_error_keeps_it_in_the_report() {
    let fx = Fixtures::new();
    let ctx = Ctx::new().fold(&fx.int, (), |()| Err::<i64, _>("no route to the moon"));
    let err = fx.registry.resolve(&ctx).await.unwrap_err();
    let report = err.not_found().unwrap();
    let f = &report.functions()[0];
    assert_eq!((f.key(), f.outcome()), ("int", &FnOutcome::Failed("no route to the moon".into())));
    assert!(err.to_string().contains("int <- (): returned an error: no route to the moon"), "{err}");
    // `Ok(None)` is "not applicable", `Ok(Some)` a value.
    let ctx = Ctx::new().fold(&fx.int, (), |()| Ok::<_, io::Error>(Some(3)));
    assert_eq!(fx.int_h.downcast(fx.registry.resolve(&ctx).await.unwrap()).unwrap(), IntFlow(3));
}

#[tokio::test]
async fn a_panic_in_a_function_a_map_or_a_connect_is_that_attempts_failure() {
    let fx = Fixtures::new();
    let boom: Key<()> = fx
        .registry
        .register(
            "boom",
            Some(1),
            protocol_fn(|_: ()| async {
                if true { panic!("connect boom") } else { Ok::<IntFlow, io::Error>(IntFlow(0)) }
            }),
        )
        .0;
    let a: Key<i64> = Key::new("a");
    let fallback = Ctx::new().add(&fx.string, "fallback".to_string());
    let broken = [
        Ctx::new().fold(&fx.int, (), |()| -> Option<i64> { panic!("function boom") }),
        Ctx::new().add(&a, 1).fold(&fx.int, map(req(&a), |_: i64| -> i64 { panic!("map boom") }), Some),
        Ctx::new().add(&boom, ()),
    ];
    for (ctx, message) in broken.iter().zip(["function boom", "map boom", "connect boom"]) {
        // With a working fallback, the fallback wins.
        let flow = fx.registry.resolve(&ctx.merge(&fallback)).await.unwrap();
        assert_eq!(fx.string_h.downcast(flow).unwrap(), StrFlow("fallback".into()));
        // Alone, the report says what panicked.
        let err = fx.registry.resolve(ctx).await.unwrap_err();
        let report = err.not_found().unwrap();
        let panicked = report.functions().iter().any(|f| f.outcome() == &FnOutcome::Panicked(message.into()))
            || report.attempts().iter().any(|a| matches!(a.outcome(), AttemptOutcome::Panicked(m) if m == message));
        assert!(panicked, "{err}");
        let text = err.to_string();
        assert!(text.contains("panicked") && text.contains(message), "{text}");
    }
}

#[tokio::test]
async fn a_cycle_among_keys_no_endpoint_needs_does_not_fail_the_resolve() {
    let fx = Fixtures::new();
    let a: Key<i64> = Key::new("a");
    let b: Key<i64> = Key::new("b");
    let ctx = Ctx::new().fold(&a, opt(&b), |b| b).fold(&b, opt(&a), |a| a).add(&fx.int, 5);
    let flow = fx.registry.resolve(&ctx).await.unwrap();
    assert_eq!(fx.int_h.downcast(flow).unwrap(), IntFlow(5));
    let unfolded = fx.registry.unfold(&ctx).await.unwrap();
    assert!(unfolded.functions().iter().all(|f| f.outcome() == &FnOutcome::InCycle));
    let plan = fx.registry.plan(&ctx).unwrap();
    assert!(plan.functions.iter().all(|f| f.in_cycle) && plan.candidates.len() == 1, "{plan}");
    // Once an endpoint needs a key on it, the cycle fails the resolve.
    let needy = ctx.fold(&fx.int, req(&a), Some);
    assert!(fx.registry.resolve(&needy).await.unwrap_err().cycle().is_some());
}

#[tokio::test]
async fn no_candidates_says_why_and_lists_the_keys_present() {
    let host: Key<String> = Key::new("host");
    let port: Key<u16> = Key::new("port");
    let plain = Ctx::new().add(&host, "example.test".into()).add(&port, 80);

    // An empty registry.
    let err = Registry::new().resolve(&plain).await.unwrap_err();
    assert_eq!(err.not_found().unwrap().reason(), &Reason::NoProtocols);
    assert!(err.to_string().contains("no protocol registered"), "{err}");
    assert!(err.to_string().contains("keys present: host, port"), "{err}");

    // Another registry's endpoint key.
    let fx = Fixtures::new();
    let other = Fixtures::new();
    let err = fx.registry.resolve(&plain.add(&other.int, 1)).await.unwrap_err();
    assert_eq!(err.not_found().unwrap().reason(), &Reason::ForeignEndpoints { protocols: vec!["int".into()] });
    assert!(err.to_string().contains("another registry's protocols (int)"), "{err}");

    // Plain keys only.
    let err = fx.registry.resolve(&plain).await.unwrap_err();
    let report = err.not_found().unwrap();
    assert_eq!(report.reason(), &Reason::NoCandidates);
    assert_eq!(report.keys(), ["host", "port"]);
    assert!(err.to_string().contains("keys present: host, port"), "{err}");
}

#[tokio::test]
async fn keys_and_protocols_of_the_same_name_are_told_apart() {
    let registry = Registry::new();
    let (tcp1, _) = refusing(&registry, "tcp", 1);
    let (tcp2, _) = refusing(&registry, "tcp", 2);
    let port1: Key<u16> = Key::new("port");
    let port2: Key<u16> = Key::new("port");
    let ctx = Ctx::new().add(&port2, 80).fold(&tcp1, req(&port1), |_| Some(())).add(&tcp1, ()).add(&tcp2, ());
    let text = registry.resolve(&ctx).await.unwrap_err().to_string();
    for needle in [
        format!("1. tcp#{} (priority 1)", tcp1.id()),
        format!("2. tcp#{} (priority 2)", tcp2.id()),
        format!(
            "tcp#{} <- (req port#{}): dropped: required key `port#{}` was never provided",
            tcp1.id(),
            port1.id(),
            port1.id()
        ),
    ] {
        assert!(text.contains(&needle), "missing {needle:?} in:\n{text}");
    }
}

#[tokio::test]
async fn a_cycle_through_keys_of_the_same_name_tells_them_apart() {
    let fx = Fixtures::new();
    let a1: Key<i64> = Key::new("a");
    let a2: Key<i64> = Key::new("a");
    let ctx = Ctx::new().fold(&a1, opt(&a2), |v| v).fold(&a2, opt(&a1), |v| v).fold(&fx.int, req(&a1), Some);
    let err = fx.registry.resolve(&ctx).await.unwrap_err();
    let mut keys = err.cycle().unwrap().keys().to_vec();
    keys.sort();
    // Sorted as text on both sides: key ids come from a process-wide counter,
    // so "a#11" may sort before "a#9".
    let mut want = vec![format!("a#{}", a1.id()), format!("a#{}", a2.id())];
    want.sort();
    assert_eq!(keys, want);
}

/// Each binding of an unfolded context names its key (and, for an
/// endpoint, its protocol).
#[tokio::test]
async fn bindings_name_their_key() {
    let fx = Fixtures::new();
    let a: Key<u8> = Key::new("a-key");
    let unfolded = fx.registry.unfold(&Ctx::new().add(&a, 1).add(&fx.int, 7)).await.unwrap();
    let mut names: Vec<&str> = unfolded.iter().map(|b| b.key_name()).collect();
    names.sort_unstable();
    let mut want = vec!["a-key", fx.int.name()];
    want.sort_unstable();
    assert_eq!(names, want);
}

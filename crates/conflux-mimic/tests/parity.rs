//! Upstream mimic's test suite (its 7 cases) and the extra cases the project's
//! registry specification adds, in Rust form.
#![forbid(unsafe_code)]

mod fixtures;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use conflux_flow::{FlowExt, OutputBuffer};
use conflux_mimic::{Ctx, Key, Registry, dft, map, opt, protocol_fn, req};
use fixtures::{Fixtures, FloatFlow, IntFlow, IntProto, StrFlow};

#[tokio::test]
async fn case1_input_string() {
    let fx = Fixtures::new();
    let ctx = Ctx::new().add(&fx.memory, ("Hello World!".to_string(), OutputBuffer::zeroed(0)));
    let flow = fx.registry.resolve(&ctx).await.unwrap();
    let mut flow = fx.memory_h.downcast(flow).unwrap();
    assert_eq!(flow.read().await.unwrap().unwrap(), "Hello World!");
    assert!(flow.read().await.unwrap().is_none(), "then Eof");
    assert!(flow.write("Hello").await.unwrap_err().is_closed(), "a write after Eof gives Closed");
}

#[tokio::test]
async fn case2_output_string() {
    let fx = Fixtures::new();
    let out = OutputBuffer::zeroed(12);
    let ctx = Ctx::new().add(&fx.memory, (String::new(), out.clone()));
    let mut flow = fx.registry.resolve(&ctx).await.unwrap();
    for chunk in ["Hell", "o Wo", "rld!", "?!?!"] {
        flow.write(chunk).await.unwrap();
    }
    assert!(flow.read().await.unwrap().is_none());
    assert_eq!(out.contents(), b"Hello World!");
}

#[tokio::test]
async fn case3_values() {
    let fx = Fixtures::new();
    let flow = fx.registry.resolve(&Ctx::new().add(&fx.int, 42)).await.unwrap();
    assert_eq!(fx.int_h.downcast(flow).unwrap(), IntFlow(42));
    let flow = fx.registry.resolve(&Ctx::new().add(&fx.string, "Hello World!".into())).await.unwrap();
    assert_eq!(fx.string_h.downcast(flow).unwrap(), StrFlow("Hello World!".into()));
    let flow = fx.registry.resolve(&Ctx::new().add(&fx.float, 0.42)).await.unwrap();
    assert_eq!(fx.float_h.downcast(flow).unwrap(), FloatFlow(0.42));
}

#[tokio::test]
async fn case4_functions() {
    let fx = Fixtures::new();
    let a: Key<i64> = Key::new("a");
    let b: Key<i64> = Key::new("b");
    let fold_first = Ctx::new().fold(&fx.int, (req(&a), req(&b)), |(a, b)| Some(a + b)).add(&a, 2).add(&b, 3);
    let add_first = Ctx::new().add(&a, 2).add(&b, 3).fold(&fx.int, (req(&a), req(&b)), |(a, b)| Some(a + b));
    for ctx in [fold_first, add_first] {
        let flow = fx.registry.resolve(&ctx).await.unwrap();
        assert_eq!(fx.int_h.downcast(flow).unwrap(), IntFlow(5));
    }

    let kint: Key<i64> = Key::new("kint");
    let ctx = Ctx::new().fold(&fx.string, dft(&kint, 42), |i| Some(i.to_string()));
    let flow = fx.registry.resolve(&ctx).await.unwrap();
    assert_eq!(fx.string_h.downcast(flow).unwrap(), StrFlow("42".into()));
    let flow = fx.registry.resolve(&ctx.add(&kint, 51)).await.unwrap();
    assert_eq!(fx.string_h.downcast(flow).unwrap(), StrFlow("51".into()));
}

#[tokio::test]
async fn case5_topological() {
    let fx = Fixtures::new();
    let kint01: Key<i64> = Key::new("kint01");
    let kint02: Key<i64> = Key::new("kint02");
    let ctx =
        Ctx::new().fold(&fx.string, req(&kint01), |i| Some(i.to_string())).fold(&kint01, req(&kint02), |i| Some(i + 1));
    let flow = fx.registry.resolve(&ctx.add(&kint01, 5)).await.unwrap();
    assert_eq!(fx.string_h.downcast(flow).unwrap(), StrFlow("5".into()));
    let flow = fx.registry.resolve(&ctx.add(&kint02, 4)).await.unwrap();
    assert_eq!(fx.string_h.downcast(flow).unwrap(), StrFlow("5".into()), "chain 4 -> 5 -> \"5\"");
    let err = fx.registry.resolve(&ctx).await.unwrap_err();
    assert!(err.not_found().is_some(), "neither: NotFound, got {err}");
}

#[tokio::test]
async fn case6_priority() {
    let registry = Registry::new();
    let (int0, h) = registry.register("int0", Some(10), IntProto);
    let (int1, _) = registry.register("int1", Some(20), IntProto);
    let (int2, _) = registry.register("int2", None, IntProto);
    let (int3, _) = registry.register("int3", Some(20), IntProto);
    let winner = |ctx: Ctx| {
        let registry = registry.clone();
        let h = h.clone();
        async move { h.downcast(registry.resolve(&ctx).await.unwrap()).unwrap().0 }
    };
    assert_eq!(winner(Ctx::new().add(&int0, 1).add(&int1, 2)).await, 1);
    assert_eq!(winner(Ctx::new().add(&int1, 2).add(&int0, 1)).await, 1);
    assert_eq!(winner(Ctx::new().add(&int1, 2).add(&int2, 3)).await, 2);
    assert_eq!(winner(Ctx::new().add(&int2, 3).add(&int1, 2)).await, 2);
    assert_eq!(winner(Ctx::new().add(&int2, 3).add(&int1, 2).add(&int0, 1)).await, 1);
    assert_eq!(winner(Ctx::new().add(&int1, 2).add(&int3, 4)).await, 4, "the most recent registration wins a tie");
    assert_eq!(winner(Ctx::new().add(&int3, 4).add(&int1, 2)).await, 4);
}

#[tokio::test]
async fn case7_recent_values() {
    let fx = Fixtures::new();
    let flow = fx.registry.resolve(&Ctx::new().add(&fx.int, 5).add(&fx.int, 6)).await.unwrap();
    assert_eq!(fx.int_h.downcast(flow).unwrap(), IntFlow(6));
}

// ---- The extra cases of the spec ----

#[tokio::test]
async fn a_function_returning_none_yields_no_candidate() {
    let fx = Fixtures::new();
    let a: Key<i64> = Key::new("a");
    let ctx = Ctx::new().add(&a, 1).fold(&fx.int, req(&a), |_| None);
    let unfolded = fx.registry.unfold(&ctx).await.unwrap();
    assert!(unfolded.find(&fx.int).is_none());
    let err = fx.registry.resolve(&ctx).await.unwrap_err();
    assert!(err.to_string().contains("returned nothing"), "{err}");
    let flow = fx.registry.resolve(&ctx.add(&fx.string, "s".into())).await.unwrap();
    assert!(fx.string_h.is(&flow));
}

#[tokio::test]
async fn a_failing_connect_falls_through_to_the_next_candidate() {
    let registry = Registry::new();
    let (broken, _) = registry.register(
        "broken",
        Some(1),
        protocol_fn(|_: ()| async { Err::<IntFlow, _>(std::io::Error::other("refused")) }),
    );
    let (int, h) = registry.register("int", Some(2), IntProto);
    let flow = registry.resolve(&Ctx::new().add(&broken, ()).add(&int, 7)).await.unwrap();
    assert_eq!(h.downcast(flow).unwrap(), IntFlow(7));
}

#[tokio::test]
async fn opt_passes_none_or_some() {
    let fx = Fixtures::new();
    let k: Key<i64> = Key::new("k");
    let ctx = Ctx::new().fold(&fx.string, opt(&k), |v| Some(format!("{v:?}")));
    let flow = fx.registry.resolve(&ctx).await.unwrap();
    assert_eq!(fx.string_h.downcast(flow).unwrap().0, "None");
    let flow = fx.registry.resolve(&ctx.add(&k, 3)).await.unwrap();
    assert_eq!(fx.string_h.downcast(flow).unwrap().0, "Some(3)");
}

#[tokio::test]
async fn map_computes_an_argument() {
    let fx = Fixtures::new();
    let k: Key<i64> = Key::new("k");
    let ctx = Ctx::new().add(&k, 20).fold(&fx.int, (map(req(&k), |k| k * 2), dft(&k, 0)), |(a, b)| Some(a + b));
    let flow = fx.registry.resolve(&ctx).await.unwrap();
    assert_eq!(fx.int_h.downcast(flow).unwrap(), IntFlow(60));
}

#[tokio::test]
async fn merge_makes_the_second_contexts_values_newer() {
    let fx = Fixtures::new();
    let a = Ctx::new().add(&fx.int, 1);
    let b = Ctx::new().add(&fx.int, 2);
    let flow = fx.registry.resolve(&a.merge(&b)).await.unwrap();
    assert_eq!(fx.int_h.downcast(flow).unwrap(), IntFlow(2));
    let flow = fx.registry.resolve(&b.merge(&a)).await.unwrap();
    assert_eq!(fx.int_h.downcast(flow).unwrap(), IntFlow(1));
    assert_eq!(a.merge(&b).get(&fx.int), Some(&2));
}

#[tokio::test]
async fn replace_drops_older_values_and_keeps_functions() {
    let fx = Fixtures::new();
    let k: Key<i64> = Key::new("k");
    let ctx = Ctx::new().add(&k, 1).add(&k, 2).fold(&fx.int, req(&k), |k| Some(k * 10));
    let replaced = ctx.replace(&k, 3);
    let unfolded = fx.registry.unfold(&replaced).await.unwrap();
    assert_eq!(unfolded.values(&k).collect::<Vec<_>>(), [&3]);
    assert_eq!(unfolded.find(&fx.int), Some(&30));
    let kept = replaced.replace(&fx.int, 5);
    let unfolded = fx.registry.unfold(&kept).await.unwrap();
    assert_eq!(unfolded.values(&fx.int).count(), 2, "the function stays: {unfolded:?}");
    assert_eq!(ctx.get(&k), Some(&2), "the original context is unchanged");
}

#[tokio::test]
async fn unfold_lists_plain_and_intermediate_values() {
    let fx = Fixtures::new();
    let a: Key<i64> = Key::new("a");
    let b: Key<i64> = Key::new("b");
    let ctx = Ctx::new().add(&a, 1).fold(&b, req(&a), |a| Some(a + 1)).fold(&fx.int, req(&b), |b| Some(b + 1));
    let unfolded = fx.registry.unfold(&ctx).await.unwrap();
    assert_eq!(unfolded.len(), 3);
    assert_eq!(unfolded.bindings()[0].get(&fx.int), Some(&3), "the protocol endpoint comes first");
    assert_eq!(unfolded.bindings()[0].protocol(), Some("int"));
    assert_eq!(unfolded.find(&a), Some(&1));
    assert_eq!(unfolded.find(&b), Some(&2));
    let b_binding = unfolded.iter().find(|x| x.is(&b)).unwrap();
    assert_eq!(b_binding.computed_by(), Some("b <- (req a)"));
    assert!(unfolded.iter().find(|x| x.is(&a)).unwrap().computed_by().is_none());
}

#[tokio::test]
async fn connect_of_unfold_behaves_like_resolve() {
    let fx = Fixtures::new();
    let ctx = Ctx::new().add(&fx.int, 1).add(&fx.string, "x".into()).add(&fx.int, 2);
    let unfolded = fx.registry.unfold(&ctx).await.unwrap();
    let via_connect = fx.registry.connect(&unfolded).await.unwrap();
    let via_resolve = fx.registry.resolve(&ctx).await.unwrap();
    assert_eq!(via_connect.type_name(), via_resolve.type_name());
    // Neither has a priority: the most recently registered protocol (string) comes first.
    assert_eq!(fx.string_h.downcast(via_connect).unwrap(), fx.string_h.downcast(via_resolve).unwrap());
    let empty = fx.registry.unfold(&Ctx::new()).await.unwrap();
    let a = fx.registry.connect(&empty).await.unwrap_err().to_string();
    let b = fx.registry.resolve(&Ctx::new()).await.unwrap_err().to_string();
    assert_eq!(a.split(" (after").next(), b.split(" (after").next());
}

#[tokio::test]
async fn inject_then_downcast_and_another_handle_fails() {
    let fx = Fixtures::new();
    let flow = fx.int_h.inject(IntFlow(9));
    assert!(fx.string_h.downcast_ref(&flow).is_none());
    let flow = fx.string_h.downcast(flow).unwrap_err();
    assert_eq!(fx.int_h.downcast(flow).unwrap(), IntFlow(9));
}

#[tokio::test]
async fn keys_with_the_same_name_are_different() {
    let fx = Fixtures::new();
    let a1: Key<i64> = Key::new("a");
    let a2: Key<i64> = Key::new("a");
    assert_ne!(a1, a2);
    let ctx = Ctx::new().add(&a1, 1);
    assert_eq!(ctx.get(&a1), Some(&1));
    assert_eq!(ctx.get(&a2), None);
    let unfolded = fx.registry.unfold(&ctx).await.unwrap();
    assert!(unfolded.bindings()[0].get(&a2).is_none());
}

#[tokio::test]
async fn registries_are_independent() {
    let one = Fixtures::new();
    let two = Fixtures::new();
    let err = one.registry.resolve(&Ctx::new().add(&two.int, 1)).await.unwrap_err();
    assert!(err.to_string().contains("another registry's protocols (int)"), "{err}");
    let (other, _) = two.registry.register("int", None, IntProto);
    assert_ne!(other, two.int);
}

#[test]
fn functions_are_shared_not_copied_when_contexts_are_cloned() {
    let calls = Arc::new(AtomicUsize::new(0));
    let fx = Fixtures::new();
    let c = calls.clone();
    let ctx = Ctx::new().fold(&fx.int, (), move |()| {
        c.fetch_add(1, Ordering::SeqCst);
        Some(1)
    });
    let copies: Vec<Ctx> = (0..3).map(|_| ctx.clone()).collect();
    assert_eq!(copies.len(), 3);
    assert_eq!(calls.load(Ordering::SeqCst), 0, "nothing runs before unfold");
}

//! The tracing of a resolve: one span per resolve, one event per function and
//! per connect attempt. Alone in its test binary: tracing caches callsite
//! interest process-wide, and tests without a subscriber running on other
//! threads at the same time would race with the thread-local one installed here.
#![forbid(unsafe_code)]

mod fixtures;

use std::io;
use std::sync::{Arc, Mutex};

use conflux_mimic::{Ctx, Key, RegisterOptions, Registry, protocol_fn, req};
use fixtures::{IntFlow, IntProto};

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

#[derive(Clone, Default)]
struct Seen {
    spans: Arc<Mutex<Vec<&'static str>>>,
    events: Arc<Mutex<Vec<&'static str>>>,
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Seen {
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        _id: &tracing::span::Id,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        self.spans.lock().unwrap().push(attrs.metadata().name());
    }
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: tracing_subscriber::layer::Context<'_, S>) {
        self.events.lock().unwrap().push(event.metadata().target());
    }
}

#[test]
fn a_span_per_resolve_and_an_event_per_function_and_attempt() {
    use tracing_subscriber::layer::SubscriberExt;
    let seen = Seen::default();
    let subscriber = tracing_subscriber::registry().with(seen.clone());
    tracing::subscriber::with_default(subscriber, || {
        fixtures::rt().block_on(async {
            let registry = Registry::new();
            let refused = failing(&registry, "refused", RegisterOptions::new().priority(1));
            let (int, _) = registry.register("int", Some(2), IntProto);
            let a: Key<i64> = Key::new("a");
            let ctx = Ctx::new().add(&refused, ()).fold(&int, req(&a), Some).fold(&a, (), |()| Some(1));
            registry.resolve(&ctx).await.unwrap();
            registry.resolve(&ctx).await.unwrap();
        });
    });
    let spans = seen.spans.lock().unwrap().clone();
    assert_eq!(spans.iter().filter(|s| **s == "resolve").count(), 2, "{spans:?}");
    let events = seen.events.lock().unwrap().clone();
    let count = |t: &str| events.iter().filter(|e| **e == t).count();
    assert_eq!(count("conflux_mimic::attempt"), 4, "two attempts per resolve: {events:?}");
    assert_eq!(count("conflux_mimic::function"), 4, "two functions per resolve: {events:?}");
}

//! smoltcp's `log` records arrive in a `tracing` subscriber (its own test
//! binary: the global subscriber and callsite interest are process-wide).

mod support;

use std::sync::{Arc, Mutex};

use conflux_tcp::{ConnectOptions, TcpStack};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::Registry;

/// Records the target and message of every event.
struct Capture(Arc<Mutex<Vec<(String, String)>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        struct Msg(String);
        impl tracing::field::Visit for Msg {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                if field.name() == "message" {
                    self.0 = format!("{value:?}");
                }
            }
        }
        let mut msg = Msg(String::new());
        event.record(&mut msg);
        self.0.lock().unwrap().push((event.metadata().target().to_owned(), msg.0));
    }
}

#[test]
fn a_smoltcp_record_reaches_the_tracing_subscriber() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    tracing::subscriber::set_global_default(Registry::default().with(Capture(seen.clone()))).expect("subscriber");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap();
    rt.block_on(async {
        let (a, _b, _) = support::pair();
        // Nobody listens: smoltcp logs while it answers with a RST.
        let res = a.create_connection(support::addr(support::B4, 9), ConnectOptions::new()).await;
        assert!(res.is_err());
    });
    let seen = seen.lock().unwrap();
    assert!(
        seen.iter().any(|(target, msg)| target == "smoltcp" && !msg.is_empty()),
        "no smoltcp record among {} events: {:?}",
        seen.len(),
        seen.iter().take(5).collect::<Vec<_>>()
    );
}

//! After a stack is built, `try_init` of a subscriber succeeds (the stack
//! set no global logger), and smoltcp's `log` records reach it through
//! `tracing-log` (its own test binary: the global subscriber is
//! process-wide).

mod support;

use std::sync::{Arc, Mutex};

use conflux_tcp::{ConnectOptions, TcpStack};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

/// Records the target of every event (for a forwarded `log` record, the
/// record's own target, which `tracing-log` puts in the `log.target` field).
struct Capture(Arc<Mutex<Vec<String>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        struct LogTarget(Option<String>);
        impl tracing::field::Visit for LogTarget {
            fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
                if field.name() == "log.target" {
                    self.0 = Some(value.to_owned());
                }
            }
            fn record_debug(&mut self, _: &tracing::field::Field, _: &dyn std::fmt::Debug) {}
        }
        let mut t = LogTarget(None);
        event.record(&mut t);
        self.0.lock().unwrap().push(t.0.unwrap_or_else(|| event.metadata().target().to_owned()));
    }
}

#[test]
fn a_subscriber_installs_after_a_stack_and_sees_smoltcp_records() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap();
    rt.block_on(async {
        let (a, _b, _) = support::pair();
        tracing_subscriber::registry()
            .with(Capture(seen.clone()))
            .with(tracing_subscriber::filter::LevelFilter::TRACE)
            .try_init()
            .expect("no global logger or subscriber was taken by the stack");
        // Nobody listens: smoltcp logs while it answers with a RST.
        let res = a.create_connection(support::addr(support::B4, 9), ConnectOptions::new()).await;
        assert!(res.is_err());
    });
    let seen = seen.lock().unwrap();
    assert!(
        seen.iter().any(|target| target.starts_with("smoltcp")),
        "no smoltcp record among {} events: {:?}",
        seen.len(),
        seen.iter().take(5).collect::<Vec<_>>()
    );
}

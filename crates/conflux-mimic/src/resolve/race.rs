//! The connect race as a future: a thin driver of [`Schedule`] (the policy)
//! that launches connects, polls them and keeps one timer.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use conflux_flow::BoxFlow;
use tokio::time::{Instant, Sleep};

use super::schedule::Schedule;
use crate::catch::{self, CatchPanic};
use crate::key::{BoxError, BoxFuture, ProtocolEntry};
use crate::registry::ResolveOptions;
use crate::report::{Attempt, AttemptOutcome};
use crate::unfold::Binding;

/// One candidate: a binding of an endpoint key of this registry.
pub(super) struct Cand<'a> {
    pub(super) entry: &'a Arc<ProtocolEntry>,
    pub(super) binding: &'a Binding,
}

impl Cand<'_> {
    pub(super) fn attempt(&self, outcome: AttemptOutcome, elapsed: Duration) -> Attempt {
        Attempt {
            protocol: self.entry.name.clone(),
            priority: self.entry.priority,
            outcome,
            elapsed,
            computed_by: self.binding.computed_by().map(str::to_owned),
            key: self.binding.key.clone(),
        }
    }
}

/// A connect that panicked before giving a future.
#[derive(Debug)]
struct Panic(String);

impl std::fmt::Display for Panic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Panic {}

/// A connect in progress; a panic while polling it is `Err(message)`.
type Connecting = Pin<Box<CatchPanic<dyn Future<Output = Result<BoxFlow, BoxError>> + Send>>>;

struct Slot {
    started: Option<Instant>,
    outcome: Option<AttemptOutcome>,
    elapsed: Duration,
}

/// What polling the running connects gave.
enum Polled {
    Won(BoxFlow),
    /// At least one attempt failed: the schedule may start another.
    Ended,
    Pending,
}

/// The candidates' attempts, as the [`Schedule`] says.
///
/// One timer serves every deadline (each attempt's, the overall one, the
/// stagger): it is set to the earliest, and made only once some attempt has
/// to wait, so a connect that completes at once costs no timer registration.
pub(super) struct Race<'a> {
    cands: &'a [Cand<'a>],
    schedule: Schedule,
    slots: Vec<Slot>,
    running: Vec<(usize, Connecting)>,
    timer: Option<Pin<Box<Sleep>>>,
    pub(super) expired: bool,
}

impl<'a> Race<'a> {
    pub(super) fn new(cands: &'a [Cand<'a>], options: ResolveOptions, deadline: Instant) -> Race<'a> {
        Race {
            cands,
            schedule: Schedule::new(cands.len(), options, deadline),
            slots: cands.iter().map(|_| Slot { started: None, outcome: None, elapsed: Duration::ZERO }).collect(),
            running: Vec::new(),
            timer: None,
            expired: false,
        }
    }

    fn launch(&mut self, i: usize, now: Instant) {
        let c = &self.cands[i];
        self.slots[i].started = Some(now);
        let fut: BoxFuture<Result<BoxFlow, BoxError>> = match catch::call(|| (c.entry.connect)(&c.binding.value)) {
            Ok(fut) => fut,
            Err(message) => Box::pin(std::future::ready(Err(Box::new(Panic(message)) as BoxError))),
        };
        self.running.push((i, Box::pin(CatchPanic::new(fut))));
    }

    fn elapsed(&self, i: usize) -> Duration {
        self.slots[i].started.map_or(Duration::ZERO, |s| s.elapsed())
    }

    fn trace(&self, i: usize, outcome: &dyn std::fmt::Display) {
        let c = &self.cands[i];
        tracing::trace!(
            target: "conflux_mimic::attempt",
            protocol = %c.entry.name,
            priority = c.entry.priority,
            outcome = %outcome,
            elapsed_us = self.elapsed(i).as_micros() as u64,
            "connect attempt"
        );
    }

    fn finish(&mut self, i: usize, outcome: AttemptOutcome) {
        self.trace(i, &outcome_label(&outcome));
        self.slots[i].elapsed = self.elapsed(i);
        self.slots[i].outcome = Some(outcome);
    }

    /// Drops the connect of attempt `i` (closing whatever it opened).
    fn stop(&mut self, i: usize) {
        self.running.retain(|(j, _)| *j != i);
    }

    fn cancel_running(&mut self) {
        for (i, fut) in std::mem::take(&mut self.running) {
            drop(fut);
            self.finish(i, AttemptOutcome::Cancelled);
        }
    }

    fn poll_running(&mut self, cx: &mut Context<'_>) -> Polled {
        let mut ended = false;
        let mut k = 0;
        while k < self.running.len() {
            let (i, fut) = &mut self.running[k];
            let i = *i;
            let outcome = match fut.as_mut().poll(cx) {
                Poll::Pending => {
                    k += 1;
                    continue;
                }
                Poll::Ready(Ok(Ok(flow))) => {
                    drop(self.running.swap_remove(k));
                    self.trace(i, &"connected");
                    // Losers are cancelled: dropping a pending connect closes whatever it opened.
                    self.cancel_running();
                    return Polled::Won(flow);
                }
                Poll::Ready(Ok(Err(e))) => match e.downcast::<Panic>() {
                    Ok(p) => AttemptOutcome::Panicked(p.0),
                    Err(e) => AttemptOutcome::Failed(e),
                },
                Poll::Ready(Err(message)) => AttemptOutcome::Panicked(message),
            };
            drop(self.running.swap_remove(k));
            self.finish(i, outcome);
            self.schedule.handle_end(i);
            ended = true;
        }
        if ended { Polled::Ended } else { Polled::Pending }
    }

    /// Waits for the schedule's next instant on the one timer.
    fn poll_timer(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let at = self.schedule.poll_timeout();
        let timer = match &mut self.timer {
            Some(t) => {
                if t.deadline() != at {
                    t.as_mut().reset(at);
                }
                t
            }
            None => self.timer.insert(Box::pin(tokio::time::sleep_until(at))),
        };
        let fired = timer.as_mut().poll(cx);
        if fired.is_ready() {
            // Made anew for the next wait: an elapsed timer stays ready.
            self.timer = None;
        }
        fired
    }

    pub(super) fn into_attempts(self) -> Vec<Attempt> {
        self.slots
            .into_iter()
            .zip(self.cands)
            .map(|(s, c)| c.attempt(s.outcome.unwrap_or(AttemptOutcome::NotTried), s.elapsed))
            .collect()
    }
}

fn outcome_label(o: &AttemptOutcome) -> String {
    match o {
        AttemptOutcome::Failed(e) => format!("failed: {e}"),
        AttemptOutcome::TimedOut(d) => format!("timed out after {d:?}"),
        AttemptOutcome::Cancelled => "cancelled".into(),
        AttemptOutcome::NotTried => "not tried".into(),
        AttemptOutcome::Panicked(m) => format!("panicked: {m}"),
    }
}

impl Future for Race<'_> {
    /// The winning flow, or `None` when every candidate failed or time ran out.
    type Output = Option<BoxFlow>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        loop {
            let now = Instant::now();
            if this.schedule.expired(now) {
                this.expired = true;
                this.cancel_running();
                return Poll::Ready(None);
            }
            for i in this.schedule.handle_timeout(now) {
                this.stop(i);
                this.finish(i, AttemptOutcome::TimedOut(this.schedule.attempt_timeout()));
            }
            while let Some(i) = this.schedule.poll_start(now) {
                this.launch(i, now);
            }
            match this.poll_running(cx) {
                Polled::Won(flow) => return Poll::Ready(Some(flow)),
                Polled::Ended => continue,
                Polled::Pending => {}
            }
            if this.schedule.is_done() {
                return Poll::Ready(None);
            }
            if this.poll_timer(cx).is_pending() {
                return Poll::Pending;
            }
        }
    }
}

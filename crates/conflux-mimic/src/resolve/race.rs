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
use crate::ctx::FnDef;
use crate::key::{AnyRef, BoxError, Connect, KeyInfo, ProtocolEntry, Rank};
use crate::registry::ResolveOptions;
use crate::report::{Attempt, AttemptOutcome};

/// One candidate: a value of an endpoint key of this registry.
pub(super) struct Cand<'a> {
    pub(super) entry: &'a ProtocolEntry,
    pub(super) key: &'a Arc<KeyInfo>,
    pub(super) value: AnyRef<'a>,
    /// The function that computed the value (`None` for a plain value).
    pub(super) origin: Option<&'a FnDef>,
    /// Its place in candidate order (sorted by, stably).
    pub(super) order: (Rank, usize),
}

impl<'a> Cand<'a> {
    pub(super) fn attempt(&self, outcome: AttemptOutcome, elapsed: Duration) -> Attempt {
        Attempt {
            protocol: self.entry.name.clone(),
            priority: self.entry.priority,
            outcome,
            elapsed,
            computed_by: self.origin.map(|d| d.label.clone()),
            key: self.key.clone(),
        }
    }

    /// Starts the connect; a panic before it gives a future is its failure.
    fn launch(&self) -> Connecting<'a> {
        let fut: Connect<'a> = match catch::call(|| self.entry.connect.connect(self.value)) {
            Ok(fut) => fut,
            Err(message) => Box::pin(std::future::ready(Err::<BoxFlow, BoxError>(Box::new(Panic(message))))),
        };
        CatchPanic::new(fut)
    }

    /// The trace event of an attempt that ended (`elapsed` is read only when it is enabled).
    fn trace(&self, elapsed: impl FnOnce() -> Duration, outcome: &dyn std::fmt::Display) {
        tracing::trace!(
            target: "conflux_mimic::attempt",
            protocol = %self.entry.name,
            priority = self.entry.priority,
            outcome = %outcome,
            elapsed_us = elapsed().as_micros() as u64,
            "connect attempt"
        );
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
type Connecting<'a> = CatchPanic<dyn crate::key::Connecting + Send + 'a>;

/// What a finished connect gave: the flow, or the attempt's failure.
fn outcome_of(result: Result<Result<BoxFlow, BoxError>, String>) -> Result<BoxFlow, AttemptOutcome> {
    match result {
        Ok(Ok(flow)) => Ok(flow),
        Ok(Err(e)) => Err(match e.downcast::<Panic>() {
            Ok(p) => AttemptOutcome::Panicked(p.0),
            Err(e) => AttemptOutcome::Failed(e),
        }),
        Err(message) => Err(AttemptOutcome::Panicked(message)),
    }
}

/// Connects to `c`, the only candidate: what a [`Race`] of one does (same
/// deadlines, same outcomes, same trace events), without its bookkeeping.
/// `now`: the time, when the caller has just read it. On failure, the
/// attempt and whether the overall deadline ran out.
pub(super) async fn single(
    c: &Cand<'_>,
    options: ResolveOptions,
    now: Option<Instant>,
    deadline: Instant,
) -> Result<BoxFlow, (Attempt, bool)> {
    let started = now.unwrap_or_else(Instant::now);
    if started >= deadline {
        return Err((c.attempt(AttemptOutcome::NotTried, Duration::ZERO), true));
    }
    let mut connecting = c.launch();
    // Polled once at once, as a race polls an attempt it starts.
    let first = std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut connecting).poll(cx))).await;
    let result = match first {
        Poll::Ready(r) => outcome_of(r),
        // Boxed: the wait's state (a timer) is not carried by the future of
        // every resolve, only by one whose connect did not complete at once.
        Poll::Pending => Box::pin(wait(&mut connecting, started + options.attempt_timeout, options, deadline)).await,
    };
    // Dropping a pending connect closes whatever it opened.
    drop(connecting);
    match result {
        Ok(flow) => {
            c.trace(|| started.elapsed(), &"connected");
            Ok(flow)
        }
        Err(outcome) => {
            let elapsed = started.elapsed();
            c.trace(|| elapsed, &outcome_label(&outcome));
            let expired = matches!(outcome, AttemptOutcome::Cancelled);
            Err((c.attempt(outcome, elapsed), expired))
        }
    }
}

/// Waits for a lone candidate's pending connect, until `attempt_deadline`
/// or the overall `deadline`.
async fn wait(
    connecting: &mut Connecting<'_>,
    attempt_deadline: Instant,
    options: ResolveOptions,
    deadline: Instant,
) -> Result<BoxFlow, AttemptOutcome> {
    // A connect that did not complete at once (a kernel connect, even on
    // loopback) often has by the runtime's next look at I/O: let it look
    // once before making the attempt's timer, which a connect done by then
    // never needs (a timer that becomes the runtime's earliest costs it a
    // wake-up, a system call). The deadlines stay as they were, counted
    // from the attempt's start.
    tokio::task::yield_now().await;
    let mut timer = std::pin::pin!(None::<Sleep>);
    std::future::poll_fn(|cx| {
        loop {
            // The connect first: one done by now reads no clock.
            if let Poll::Ready(r) = Pin::new(&mut *connecting).poll(cx) {
                return Poll::Ready(outcome_of(r));
            }
            if let Some(t) = timer.as_mut().as_pin_mut()
                && t.poll(cx).is_pending()
            {
                return Poll::Pending;
            }
            // No timer yet, or it fired: which deadline, if any, has passed?
            let now = Instant::now();
            if now >= deadline {
                return Poll::Ready(Err(AttemptOutcome::Cancelled));
            }
            if now >= attempt_deadline {
                return Poll::Ready(Err(AttemptOutcome::TimedOut(options.attempt_timeout)));
            }
            timer.set(Some(tokio::time::sleep_until(attempt_deadline.min(deadline))));
        }
    })
    .await
}

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
    running: Vec<(usize, Connecting<'a>)>,
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
        self.slots[i].started = Some(now);
        self.running.push((i, self.cands[i].launch()));
    }

    fn elapsed(&self, i: usize) -> Duration {
        self.slots[i].started.map_or(Duration::ZERO, |s| s.elapsed())
    }

    fn trace(&self, i: usize, outcome: &dyn std::fmt::Display) {
        self.cands[i].trace(|| self.elapsed(i), outcome);
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
            let outcome = match Pin::new(fut).poll(cx) {
                Poll::Pending => {
                    k += 1;
                    continue;
                }
                Poll::Ready(r) => match outcome_of(r) {
                    Ok(flow) => {
                        drop(self.running.swap_remove(k));
                        self.trace(i, &"connected");
                        // Losers are cancelled: dropping a pending connect closes whatever it opened.
                        self.cancel_running();
                        return Polled::Won(flow);
                    }
                    Err(outcome) => outcome,
                },
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

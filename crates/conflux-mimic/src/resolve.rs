//! `resolve` = `unfold` then `connect`: candidates tried in order or raced,
//! each attempt bounded, every outcome kept for the report.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use conflux_flow::BoxFlow;
use tokio::time::{Instant, Sleep};
use tracing::Instrument;

use crate::catch::{self, CatchPanic};
use crate::ctx::{BoxFuture, Ctx};
use crate::registry::{BoxError, ProtocolEntry, Registry, ResolveOptions};
use crate::report::{Attempt, AttemptOutcome, Cycle, NotFound, Reason, ResolveError};
use crate::unfold::{Binding, Unfolded, unfold};

impl Registry {
    /// Resolves `ctx` to a flow: [`unfold`](Registry::unfold) then
    /// [`connect`](Registry::connect), with this registry's [`ResolveOptions`].
    ///
    /// One tracing span `resolve` per call, with an event per function applied
    /// (target `conflux_mimic::function`) and per connect attempt (target
    /// `conflux_mimic::attempt`), all at trace level.
    pub async fn resolve(&self, ctx: &Ctx) -> Result<BoxFlow, ResolveError> {
        self.resolve_with(ctx, self.options()).await
    }

    /// As [`resolve`](Registry::resolve) with other options.
    pub async fn resolve_with(&self, ctx: &Ctx, options: ResolveOptions) -> Result<BoxFlow, ResolveError> {
        let span = tracing::trace_span!("resolve", registry = self.inner.id, keys = ctx.len());
        async move {
            let start = Instant::now();
            let deadline = start + options.overall_timeout;
            let unfolded = unfold(self, ctx, options.attempt_timeout, deadline).await?;
            connect(self, &unfolded, options, start, deadline).await.map_err(ResolveError::NotFound)
        }
        .instrument(span)
        .await
    }

    /// Applies the context's functions (each at most once, after the keys it
    /// reads) and lists every binding, plain and computed, in candidate order.
    /// Asynchronous functions are bounded by the per-attempt and overall timeouts.
    pub async fn unfold(&self, ctx: &Ctx) -> Result<Unfolded, Cycle> {
        let options = self.options();
        let span = tracing::trace_span!("unfold", registry = self.inner.id, keys = ctx.len());
        unfold(self, ctx, options.attempt_timeout, Instant::now() + options.overall_timeout).instrument(span).await
    }

    /// Connects to the first candidate of `unfolded` that succeeds (or races
    /// them, see [`ResolveOptions::race`]); `connect(&unfold(ctx)?)` behaves
    /// exactly like `resolve(ctx)`.
    pub async fn connect(&self, unfolded: &Unfolded) -> Result<BoxFlow, Box<NotFound>> {
        let options = self.options();
        let span = tracing::trace_span!("connect", registry = self.inner.id, bindings = unfolded.len());
        let start = Instant::now();
        connect(self, unfolded, options, start, start + options.overall_timeout).instrument(span).await
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

struct Cand<'a> {
    entry: &'a Arc<ProtocolEntry>,
    binding: &'a Binding,
}

async fn connect(
    registry: &Registry,
    unfolded: &Unfolded,
    options: ResolveOptions,
    start: Instant,
    deadline: Instant,
) -> Result<BoxFlow, Box<NotFound>> {
    let not_found = |reason, attempts| {
        Box::new(NotFound {
            reason,
            attempts,
            functions: unfolded.functions.clone(),
            elapsed: start.elapsed(),
            keys: unfolded.keys.clone(),
        })
    };
    if unfolded.keys.is_empty() {
        return Err(not_found(Reason::EmptyContext, Vec::new()));
    }
    let mut cands: Vec<Cand<'_>> = unfolded
        .bindings
        .iter()
        .filter_map(|b| b.protocol_entry().filter(|p| registry.owns(p)).map(|entry| Cand { entry, binding: b }))
        .collect();
    if cands.is_empty() {
        let mut foreign: Vec<String> = Vec::new();
        for p in unfolded.bindings.iter().filter_map(|b| b.protocol_entry()) {
            if !foreign.iter().any(|n| **n == *p.name) {
                foreign.push(p.name.to_string());
            }
        }
        let reason = if unfolded.overall_expired.is_some() {
            Reason::OverallTimeout(options.overall_timeout)
        } else if registry.inner.protocols.lock().unwrap_or_else(|p| p.into_inner()).is_empty() {
            Reason::NoProtocols
        } else if !foreign.is_empty() {
            Reason::ForeignEndpoints { protocols: foreign }
        } else {
            Reason::NoCandidates
        };
        return Err(not_found(reason, Vec::new()));
    }
    // A guard: nothing after the last candidate of the first no-fallback protocol is ever used.
    let mut cut: Vec<Cand<'_>> = Vec::new();
    let mut guard = None;
    if let Some(first) = cands.iter().position(|c| c.entry.no_fallback) {
        let seq = cands[first].entry.seq;
        let end = cands[first..].iter().position(|c| c.entry.seq != seq).map_or(cands.len(), |p| first + p);
        cut = cands.split_off(end);
        if !cut.is_empty() {
            guard = Some(cands[first].entry.name.to_string());
        }
    }
    let mut race = Race::new(&cands, options, deadline);
    let won = (&mut race).await;
    if let Some((_, flow)) = won {
        return Ok(flow);
    }
    let expired = race.expired || unfolded.overall_expired.is_some();
    let mut attempts = race.into_attempts();
    for c in &cut {
        attempts.push(attempt_of(c, AttemptOutcome::NotTried, Duration::ZERO));
    }
    let reason = if expired {
        Reason::OverallTimeout(options.overall_timeout)
    } else if let Some(protocol) = guard {
        Reason::FallbackForbidden { protocol }
    } else {
        Reason::Exhausted
    };
    Err(not_found(reason, attempts))
}

fn attempt_of(c: &Cand<'_>, outcome: AttemptOutcome, elapsed: Duration) -> Attempt {
    Attempt {
        protocol: c.entry.name.clone(),
        priority: c.entry.priority,
        outcome,
        elapsed,
        computed_by: c.binding.computed_by().map(str::to_owned),
        key: c.binding.key.clone(),
    }
}

/// A connect in progress.
type Connecting = Pin<Box<CatchPanic<dyn Future<Output = Result<BoxFlow, BoxError>> + Send>>>;

/// A running attempt: its connect and its deadline.
struct Running {
    index: usize,
    /// The connect; a panic while polling it is `Err(message)`.
    fut: Connecting,
    deadline: Instant,
}

struct Slot {
    started: Option<Instant>,
    outcome: Option<AttemptOutcome>,
    elapsed: Duration,
}

/// The candidates' attempts: sequential (the next starts when the last one
/// failed) or staggered (the next also starts after the race delay).
///
/// One timer serves every deadline (each attempt's, the overall one, the
/// stagger): it is set to the earliest, and made only once some attempt has
/// to wait, so a connect that completes at once costs no timer registration
/// and a pending one costs one.
struct Race<'a> {
    cands: &'a [Cand<'a>],
    options: ResolveOptions,
    slots: Vec<Slot>,
    running: Vec<Running>,
    next: usize,
    /// When the next candidate starts in a staggered race.
    stagger_at: Option<Instant>,
    deadline: Instant,
    timer: Option<Pin<Box<Sleep>>>,
    expired: bool,
}

impl<'a> Race<'a> {
    fn new(cands: &'a [Cand<'a>], options: ResolveOptions, deadline: Instant) -> Race<'a> {
        Race {
            cands,
            options,
            slots: cands.iter().map(|_| Slot { started: None, outcome: None, elapsed: Duration::ZERO }).collect(),
            running: Vec::new(),
            next: 0,
            stagger_at: None,
            deadline,
            timer: None,
            expired: false,
        }
    }

    fn start_next(&mut self) {
        let i = self.next;
        self.next += 1;
        let c = &self.cands[i];
        let now = Instant::now();
        self.slots[i].started = Some(now);
        let fut: BoxFuture<Result<BoxFlow, BoxError>> = match catch::call(|| (c.entry.connect)(&c.binding.value)) {
            Ok(fut) => fut,
            Err(message) => Box::pin(std::future::ready(Err(Box::new(Panic(message)) as BoxError))),
        };
        let fut = Box::pin(CatchPanic::new(fut));
        self.running.push(Running { index: i, fut, deadline: now + self.options.attempt_timeout });
        self.stagger_at = match self.options.race {
            Some(delay) if self.next < self.cands.len() => Some(now + delay),
            _ => None,
        };
    }

    fn finish(&mut self, i: usize, outcome: AttemptOutcome) {
        let elapsed = self.slots[i].started.map_or(Duration::ZERO, |s| s.elapsed());
        let c = &self.cands[i];
        tracing::trace!(
            target: "conflux_mimic::attempt",
            protocol = %c.entry.name,
            priority = c.entry.priority,
            outcome = %outcome_label(&outcome),
            elapsed_us = elapsed.as_micros() as u64,
            "connect attempt"
        );
        self.slots[i].elapsed = elapsed;
        self.slots[i].outcome = Some(outcome);
    }

    fn cancel_running(&mut self) {
        for r in std::mem::take(&mut self.running) {
            let i = r.index;
            drop(r);
            self.finish(i, AttemptOutcome::Cancelled);
        }
    }

    fn into_attempts(self) -> Vec<Attempt> {
        self.slots
            .into_iter()
            .zip(self.cands)
            .map(|(s, c)| attempt_of(c, s.outcome.unwrap_or(AttemptOutcome::NotTried), s.elapsed))
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
    type Output = Option<(usize, BoxFlow)>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let n = this.cands.len();
        loop {
            if this.running.is_empty() {
                if this.next >= n {
                    return Poll::Ready(None);
                }
                this.start_next();
            }
            let mut freed = false;
            let mut k = 0;
            while k < this.running.len() {
                let i = this.running[k].index;
                match this.running[k].fut.as_mut().poll(cx) {
                    Poll::Pending => k += 1,
                    Poll::Ready(Ok(Ok(flow))) => {
                        drop(this.running.swap_remove(k));
                        let elapsed = this.slots[i].started.map_or(Duration::ZERO, |s| s.elapsed());
                        tracing::trace!(
                            target: "conflux_mimic::attempt",
                            protocol = %this.cands[i].entry.name,
                            priority = this.cands[i].entry.priority,
                            outcome = "connected",
                            elapsed_us = elapsed.as_micros() as u64,
                            "connect attempt"
                        );
                        // Losers are cancelled: dropping a pending connect closes whatever it opened.
                        this.cancel_running();
                        return Poll::Ready(Some((i, flow)));
                    }
                    Poll::Ready(Ok(Err(e))) => {
                        drop(this.running.swap_remove(k));
                        let outcome = match e.downcast::<Panic>() {
                            Ok(p) => AttemptOutcome::Panicked(p.0),
                            Err(e) => AttemptOutcome::Failed(e),
                        };
                        this.finish(i, outcome);
                        freed = true;
                    }
                    Poll::Ready(Err(message)) => {
                        drop(this.running.swap_remove(k));
                        this.finish(i, AttemptOutcome::Panicked(message));
                        freed = true;
                    }
                }
            }
            let mut stagger_fired = false;
            if !freed {
                // Everything running waits: arm the one timer for the earliest deadline.
                let mut wake_at = this.deadline;
                for r in &this.running {
                    wake_at = wake_at.min(r.deadline);
                }
                if let Some(at) = this.stagger_at.filter(|_| this.next < n) {
                    wake_at = wake_at.min(at);
                }
                let timer = match &mut this.timer {
                    Some(t) => {
                        if t.deadline() != wake_at {
                            t.as_mut().reset(wake_at);
                        }
                        t
                    }
                    None => this.timer.insert(Box::pin(tokio::time::sleep_until(wake_at))),
                };
                if timer.as_mut().poll(cx).is_ready() {
                    let now = Instant::now();
                    if now >= this.deadline {
                        this.expired = true;
                        this.cancel_running();
                        return Poll::Ready(None);
                    }
                    let mut k = 0;
                    while k < this.running.len() {
                        if this.running[k].deadline <= now {
                            let i = this.running.swap_remove(k).index;
                            this.finish(i, AttemptOutcome::TimedOut(this.options.attempt_timeout));
                            freed = true;
                        } else {
                            k += 1;
                        }
                    }
                    if this.stagger_at.is_some_and(|at| at <= now) {
                        this.stagger_at = None;
                        stagger_fired = true;
                    }
                    if !(freed || stagger_fired) {
                        // Woken early (the timer's granularity): wait again.
                        continue;
                    }
                }
            }
            if this.next < n {
                let raced = this.options.race.is_some() && (freed || stagger_fired);
                if raced || this.running.is_empty() {
                    this.start_next();
                    continue;
                }
            } else if this.running.is_empty() {
                return Poll::Ready(None);
            }
            if freed {
                // An attempt ended: the deadlines changed, re-arm the timer.
                continue;
            }
            return Poll::Pending;
        }
    }
}

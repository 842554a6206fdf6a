//! `resolve` = `unfold` then `connect`: candidates tried in order or raced,
//! each attempt bounded, every outcome kept for the report.

mod race;
mod schedule;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use conflux_flow::BoxFlow;
use tokio::time::Instant;
use tracing::Instrument;

use crate::ctx::Ctx;
use crate::key::{KeyInfo, ProtocolEntry};
use crate::registry::{Registry, ResolveOptions};
use crate::report::{AttemptOutcome, Cycle, FnReport, NotFound, Reason};
use crate::unfold::{OTHER, Unfolded, Unfolding, unfold};
use race::{Cand, Race, single};

/// Why [`Registry::resolve`](crate::Registry::resolve) (or `unfold`, `connect`, `plan`) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ResolveError {
    /// The context's functions depend on each other in a circle.
    #[error(transparent)]
    Cycle(#[from] Cycle),
    /// No candidate connected; the report says what was tried and why each failed.
    #[error(transparent)]
    NotFound(Box<NotFound>),
}

impl ResolveError {
    /// The NotFound report, if that is what this is.
    pub fn not_found(&self) -> Option<&NotFound> {
        match self {
            ResolveError::NotFound(r) => Some(r),
            ResolveError::Cycle(_) => None,
        }
    }

    /// The cycle, if that is what this is.
    pub fn cycle(&self) -> Option<&Cycle> {
        match self {
            ResolveError::Cycle(c) => Some(c),
            ResolveError::NotFound(_) => None,
        }
    }
}

impl Registry {
    /// Resolves `ctx` to a flow: [`unfold`](Registry::unfold) then
    /// [`connect`](Registry::connect), with this registry's [`ResolveOptions`].
    ///
    /// One tracing span `resolve` per call, with an event per function applied
    /// (target `conflux_mimic::function`) and per connect attempt (target
    /// `conflux_mimic::attempt`), all at trace level.
    //
    // Not `async fn`: the future is the instrumented one itself, not one more
    // state machine around it (each layer is moved, and polled, once more).
    pub fn resolve(&self, ctx: &Ctx) -> impl Future<Output = Result<BoxFlow, ResolveError>> {
        self.resolve_with(ctx, self.options())
    }

    /// As [`resolve`](Registry::resolve) with other options.
    pub fn resolve_with(
        &self,
        ctx: &Ctx,
        options: ResolveOptions,
    ) -> impl Future<Output = Result<BoxFlow, ResolveError>> {
        let span = tracing::trace_span!("resolve", registry = self.id(), keys = ctx.len());
        async move {
            let start = Instant::now();
            let deadline = start + options.overall_timeout;
            // The unfold borrows the context: nothing is copied out of it
            // unless a report needs it.
            let unfolding = unfold(self, ctx, options.attempt_timeout, deadline).await?;
            // An unfold that waited for nothing took no time worth a second
            // clock read: the first attempt starts at `start`.
            let now = (!unfolding.waited).then_some(start);
            connect(self, &unfolding, options, start, now, deadline).await.map_err(ResolveError::NotFound)
        }
        .instrument(span)
    }

    /// Applies the context's functions (each at most once, after the keys it
    /// reads) and lists every binding, plain and computed, in candidate order.
    /// Asynchronous functions are bounded by the per-attempt and overall timeouts.
    pub async fn unfold(&self, ctx: &Ctx) -> Result<Unfolded, Cycle> {
        let options = self.options();
        let span = tracing::trace_span!("unfold", registry = self.id(), keys = ctx.len());
        unfold(self, ctx, options.attempt_timeout, Instant::now() + options.overall_timeout)
            .instrument(span)
            .await
            .map(Unfolding::into_unfolded)
    }

    /// Connects to the first candidate of `unfolded` that succeeds (or races
    /// them, see [`ResolveOptions::race`]); `connect(&unfold(ctx)?)` behaves
    /// exactly like `resolve(ctx)`.
    pub async fn connect(&self, unfolded: &Unfolded) -> Result<BoxFlow, Box<NotFound>> {
        let options = self.options();
        let span = tracing::trace_span!("connect", registry = self.id(), bindings = unfolded.len());
        let start = Instant::now();
        connect(self, unfolded, options, start, Some(start), start + options.overall_timeout).instrument(span).await
    }
}

/// What [`connect`] needs of an unfold: the candidates, and what a NotFound
/// report says about the unfold (built only when nothing connected).
trait Source {
    /// True when the context holds nothing.
    fn is_empty_ctx(&self) -> bool;
    /// True when the overall timeout ran out while unfolding.
    fn overall_expired(&self) -> bool;
    /// Every endpoint value of `registry`'s protocols, in any order:
    /// [`Cand::order`] sorts them into candidate order.
    fn candidates<'a>(&'a self, registry: &'a Registry) -> impl Iterator<Item = Cand<'a>>;
    /// The protocols of every endpoint value (of any registry), in candidate order.
    fn protocols(&self) -> impl Iterator<Item = &ProtocolEntry>;
    /// The functions' reports.
    fn functions(&self) -> Vec<FnReport>;
    /// The context's keys, in creation order.
    fn keys(&self) -> Vec<Arc<KeyInfo>>;
}

impl Source for Unfolding<'_> {
    fn is_empty_ctx(&self) -> bool {
        self.ctx.is_empty()
    }
    fn overall_expired(&self) -> bool {
        self.overall_expired.is_some()
    }
    fn candidates<'a>(&'a self, registry: &'a Registry) -> impl Iterator<Item = Cand<'a>> {
        // A slot's rank says whether its key is an endpoint of this
        // registry's protocols: the others' keys are not even looked at.
        self.slots.iter().filter(|s| s.rank != OTHER).filter_map(|s| {
            let key = self.key(s);
            let entry = key.protocol.as_deref().filter(|p| registry.owns(p))?;
            Some(Cand { entry, key, value: s.value.get(), origin: self.origin(s), order: s.order() })
        })
    }
    fn protocols(&self) -> impl Iterator<Item = &ProtocolEntry> {
        let mut slots: Vec<_> = self.slots.iter().collect();
        slots.sort_by_key(|s| s.order());
        slots.into_iter().filter_map(|s| self.key(s).protocol.as_deref())
    }
    fn functions(&self) -> Vec<FnReport> {
        self.reports()
    }
    fn keys(&self) -> Vec<Arc<KeyInfo>> {
        self.ctx.keys()
    }
}

impl Source for Unfolded {
    fn is_empty_ctx(&self) -> bool {
        self.ctx.is_empty()
    }
    fn overall_expired(&self) -> bool {
        self.overall_expired.is_some()
    }
    fn candidates<'a>(&'a self, registry: &'a Registry) -> impl Iterator<Item = Cand<'a>> {
        // The bindings are in candidate order already: their position is the order.
        self.bindings.iter().enumerate().filter_map(|(i, b)| {
            let entry = b.protocol_entry().map(|p| &**p).filter(|p| registry.owns(p))?;
            Some(Cand { entry, key: &b.key, value: &*b.value, origin: b.origin.as_deref(), order: (OTHER, i) })
        })
    }
    fn protocols(&self) -> impl Iterator<Item = &ProtocolEntry> {
        self.bindings.iter().filter_map(|b| b.protocol_entry().map(|p| &**p))
    }
    fn functions(&self) -> Vec<FnReport> {
        self.functions.clone()
    }
    fn keys(&self) -> Vec<Arc<KeyInfo>> {
        self.ctx.keys()
    }
}

/// Tries the candidates of `unfolded`: this registry's endpoints, in order,
/// up to the first no-fallback protocol's last one. `now`: the time, when
/// the caller has just read it (a lone candidate's attempt starts then).
async fn connect(
    registry: &Registry,
    unfolded: &impl Source,
    options: ResolveOptions,
    start: Instant,
    now: Option<Instant>,
    deadline: Instant,
) -> Result<BoxFlow, Box<NotFound>> {
    let not_found = |reason, attempts| {
        Box::new(NotFound {
            reason,
            attempts,
            functions: unfolded.functions(),
            elapsed: start.elapsed(),
            keys: unfolded.keys(),
        })
    };
    if unfolded.is_empty_ctx() {
        return Err(not_found(Reason::EmptyContext, Vec::new()));
    }
    let mut found = unfolded.candidates(registry);
    let (first, second) = (found.next(), found.next());
    let (expired, mut attempts, cut, guard) = match (first, second) {
        (None, _) => {
            let mut foreign: Vec<String> = Vec::new();
            for p in unfolded.protocols() {
                if !foreign.iter().any(|n| **n == *p.name) {
                    foreign.push(p.name.to_string());
                }
            }
            let reason = if unfolded.overall_expired() {
                Reason::OverallTimeout(options.overall_timeout)
            } else if !registry.has_protocols() {
                Reason::NoProtocols
            } else if !foreign.is_empty() {
                Reason::ForeignEndpoints { protocols: foreign }
            } else {
                Reason::NoCandidates
            };
            return Err(not_found(reason, Vec::new()));
        }
        // One candidate (a `tcp://` URI with an IP address): no race to run,
        // and nothing after it for a guard to cut off.
        (Some(only), None) => match single(&only, options, now, deadline).await {
            Ok(flow) => return Ok(flow),
            Err((attempt, expired)) => (expired, vec![attempt], Vec::new(), None),
        },
        (Some(first), Some(second)) => {
            let mut cands: Vec<Cand<'_>> = [first, second].into_iter().chain(found).collect();
            // Candidate order (a stable sort: within a key, newest first).
            cands.sort_by_key(|c| c.order);
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
            let (expired, attempts) = if let [only] = &cands[..] {
                match single(only, options, None, deadline).await {
                    Ok(flow) => return Ok(flow),
                    Err((attempt, expired)) => (expired, vec![attempt]),
                }
            } else {
                // Boxed: a race's state is not carried by every resolve's future.
                let mut race = Box::pin(Race::new(&cands, options, deadline));
                if let Some(flow) = race.as_mut().await {
                    return Ok(flow);
                }
                let race = *std::pin::Pin::into_inner(race);
                (race.expired, race.into_attempts())
            };
            (expired, attempts, cut, guard)
        }
    };
    let expired = expired || unfolded.overall_expired();
    for c in &cut {
        attempts.push(c.attempt(AttemptOutcome::NotTried, Duration::ZERO));
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

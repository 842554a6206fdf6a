//! Unfolding a context: order its functions by dependency (detecting cycles),
//! run each once, and list every binding in candidate order.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::args::{DepKind, Env, Missing, Slot, Val};
use crate::catch::{self, CatchPanic};
use crate::ctx::{Bind, Ctx, FnDef, Step, index_of};
use crate::key::{Key, KeyInfo, ProtocolEntry, Rank, Value};
use crate::registry::Registry;
use crate::report::{Cycle, FnOutcome, FnReport};

/// One binding of an unfolded context: a key and one of its values, plain or
/// computed by a function.
#[derive(Clone)]
pub struct Binding {
    pub(crate) key: Arc<KeyInfo>,
    pub(crate) value: Value,
    pub(crate) origin: Option<Arc<FnDef>>,
}

impl Binding {
    /// True when this binds `key` (key equality, upstream's `equal`).
    pub fn is<T>(&self, key: &Key<T>) -> bool {
        self.key.id == key.id
    }

    /// The value, when this binds `key`.
    pub fn get<T: 'static>(&self, key: &Key<T>) -> Option<&T> {
        if self.is(key) { self.value.downcast_ref::<T>() } else { None }
    }

    /// The key's name.
    pub fn key_name(&self) -> &str {
        &self.key.name
    }

    /// The protocol name, when the key is a protocol's endpoint key.
    pub fn protocol(&self) -> Option<&str> {
        self.key.protocol.as_ref().map(|p| &*p.name)
    }

    /// The protocol's priority, when there is one.
    pub fn priority(&self) -> Option<u32> {
        self.key.protocol.as_ref().and_then(|p| p.priority)
    }

    /// The label of the function that computed this value (`None` for a plain value).
    pub fn computed_by(&self) -> Option<&str> {
        self.origin.as_ref().map(|d| &*d.label)
    }

    pub(crate) fn protocol_entry(&self) -> Option<&Arc<ProtocolEntry>> {
        self.key.protocol.as_ref()
    }
}

impl fmt::Debug for Binding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Binding");
        d.field("key", &self.key);
        if let Some(p) = &self.key.protocol {
            d.field("protocol", &p.describe());
        }
        if let Some(o) = &self.origin {
            d.field("computed_by", &o.label);
        }
        d.finish()
    }
}

/// Every binding of an unfolded context, in candidate order: endpoints of
/// this registry's protocols with a priority (lower first), then those
/// without, then every other key (plain values and intermediates); for one key
/// the newest value first.
#[derive(Debug, Clone, Default)]
pub struct Unfolded {
    pub(crate) bindings: Vec<Binding>,
    pub(crate) functions: Vec<FnReport>,
    /// The context unfolded (its keys go into a report).
    pub(crate) ctx: Ctx,
    pub(crate) overall_expired: Option<Duration>,
}

impl Unfolded {
    /// The bindings, in candidate order.
    pub fn bindings(&self) -> &[Binding] {
        &self.bindings
    }

    /// Iterates over the bindings.
    pub fn iter(&self) -> std::slice::Iter<'_, Binding> {
        self.bindings.iter()
    }

    /// How many bindings.
    pub fn len(&self) -> usize {
        self.bindings.len()
    }

    /// True when nothing is bound.
    pub fn is_empty(&self) -> bool {
        self.bindings.is_empty()
    }

    /// The preferred value of `key` (the first in candidate order).
    pub fn find<T: 'static>(&self, key: &Key<T>) -> Option<&T> {
        self.bindings.iter().find_map(|b| b.get(key))
    }

    /// Every value of `key`, preferred first.
    pub fn values<'a, T: 'static>(&'a self, key: &'a Key<T>) -> impl Iterator<Item = &'a T> + 'a {
        self.bindings.iter().filter_map(move |b| b.get(key))
    }

    /// Keeps the bindings for which `f` is true (to connect to a subset).
    pub fn retain(&mut self, f: impl FnMut(&Binding) -> bool) {
        self.bindings.retain(f);
    }

    /// Every function of the context with its outcome, in evaluation order.
    pub fn functions(&self) -> &[FnReport] {
        &self.functions
    }
}

impl<'a> IntoIterator for &'a Unfolded {
    type Item = &'a Binding;
    type IntoIter = std::slice::Iter<'a, Binding>;
    fn into_iter(self) -> Self::IntoIter {
        self.bindings.iter()
    }
}

/// The rank of every key that is not an endpoint of this registry's protocols.
pub(crate) const OTHER: Rank = (2, 0, std::cmp::Reverse(0));

/// Candidate rank of a binding's key, for this registry.
pub(crate) fn rank(registry: &Registry, key: &KeyInfo) -> Rank {
    match &key.protocol {
        Some(p) if registry.owns(p) => p.rank(),
        _ => OTHER,
    }
}

/// A function that produced no value, and why, as an unfold records it (a
/// public [`FnReport`] is made of it only for a report or [`Unfolded`]). A
/// function that produced values has no record: its values' slots name it,
/// and they are its outcome (a resolve that connects records nothing).
pub(crate) struct FnRecord {
    /// The function's index in [`Order::fns`](crate::ctx::Order) (evaluation order).
    pub(crate) function: usize,
    pub(crate) outcome: FnOutcome,
    pub(crate) missing: Option<Arc<KeyInfo>>,
}

/// An unfolded context that borrows it: what `resolve` connects from. The
/// context's own values are not cloned out of it, and the public
/// [`Unfolded`] (or a report) is made of it only when asked for.
pub(crate) struct Unfolding<'c> {
    pub(crate) ctx: &'c Ctx,
    /// Every value, keys in evaluation order, each key's values newest
    /// first; [`Slot::order`] sorts them into candidate order (see [`Unfolded`]).
    pub(crate) slots: Vec<Slot<'c>>,
    /// The context's functions, in evaluation order ([`Slot::origin`] indexes it).
    pub(crate) fns: &'c [Arc<FnDef>],
    /// The functions that gave no value, in evaluation order.
    pub(crate) records: Vec<FnRecord>,
    pub(crate) overall_expired: Option<Duration>,
    /// Whether some asynchronous function was run (waited for, or found the
    /// overall deadline passed).
    pub(crate) waited: bool,
}

impl<'c> Unfolding<'c> {
    /// The key a slot binds.
    pub(crate) fn key(&self, slot: &Slot<'_>) -> &'c Arc<KeyInfo> {
        &self.ctx.entries()[slot.key].key
    }

    /// The function that computed a slot's value.
    pub(crate) fn origin(&self, slot: &Slot<'_>) -> Option<&'c FnDef> {
        let fns = self.fns;
        slot.origin.map(|f| &*fns[f])
    }

    /// The functions' reports, in evaluation order: a recorded outcome, or
    /// else (the function ran and produced) as many values as name it.
    pub(crate) fn reports(&self) -> Vec<FnReport> {
        let mut records = self.records.iter().peekable();
        self.fns
            .iter()
            .enumerate()
            .map(|(f, def)| match records.next_if(|r| r.function == f) {
                Some(r) => FnReport { def: def.clone(), outcome: r.outcome.clone(), missing: r.missing.clone() },
                None => {
                    let n = self.slots.iter().filter(|s| s.origin == Some(f)).count();
                    FnReport { def: def.clone(), outcome: FnOutcome::Produced(n), missing: None }
                }
            })
            .collect()
    }

    /// The public form, owning (sharing) what it holds.
    pub(crate) fn into_unfolded(mut self) -> Unfolded {
        let functions = self.reports();
        let mut slots = std::mem::take(&mut self.slots);
        // Candidate order; within a rank, key order, and within a key newest first (a stable sort).
        slots.sort_by_key(Slot::order);
        let entries = self.ctx.entries();
        let bindings = slots
            .into_iter()
            .map(|s| Binding {
                key: entries[s.key].key.clone(),
                value: s.value.into_owned(),
                origin: s.origin.map(|f| functions[f].def.clone()),
            })
            .collect();
        Unfolded { bindings, functions, ctx: self.ctx.clone(), overall_expired: self.overall_expired }
    }
}

impl Drop for Unfolding<'_> {
    /// The values' vector goes back to this thread's spare (see [`spare_slots`]).
    fn drop(&mut self) {
        let mut slots = std::mem::take(&mut self.slots);
        if slots.capacity() == 0 || slots.capacity() > SPARE_MAX {
            return;
        }
        slots.clear();
        // Emptied, it holds no borrow: the same allocation as a vector of
        // any lifetime (an in-place collect that keeps the buffer).
        #[allow(clippy::unnecessary_filter_map, reason = "a `filter` would keep the borrowing type")]
        let slots: Vec<Slot<'static>> = slots.into_iter().filter_map(|_| None).collect();
        let _ = SPARE.try_with(|spare| spare.set(slots));
    }
}

/// The largest vector of values kept for the next unfold.
const SPARE_MAX: usize = 64;

thread_local! {
    /// An empty vector of values with room, left by the last unfold on this
    /// thread: the next one fills it instead of allocating (one allocation
    /// less per resolve).
    static SPARE: std::cell::Cell<Vec<Slot<'static>>> = const { std::cell::Cell::new(Vec::new()) };
}

/// An empty vector for `n` values: this thread's spare if it has one.
fn spare_slots<'c>(n: usize) -> Vec<Slot<'c>> {
    let mut slots: Vec<Slot<'c>> = SPARE.try_with(|spare| spare.take()).unwrap_or_default();
    slots.reserve(n);
    slots
}

/// Unfolds `ctx`: each function runs once, after the keys it reads.
pub(crate) async fn unfold<'c>(
    registry: &Registry,
    ctx: &'c Ctx,
    attempt_timeout: Duration,
    deadline: Instant,
) -> Result<Unfolding<'c>, Cycle> {
    let entries = ctx.entries();
    let order = ctx.order();
    let cyclic = order
        .cyclic(entries, |k| k.protocol.as_ref().is_some_and(|p| registry.owns(p)))
        .map_err(|keys| Cycle { keys })?;
    // Every value, newest first within a key, each with the function that
    // made it; keys in evaluation order, each key's values contiguous.
    let mut values = spare_slots(entries.iter().map(|e| e.binds.len()).sum::<usize>() + 4);
    // Only the functions that gave no value: none, when a resolve connects.
    let mut records: Vec<FnRecord> = Vec::new();
    let mut function = 0;
    let mut overall_expired = None;
    let mut waited = false;
    for &i in &order.keys {
        let rank = if entries[i].endpoint { rank(registry, &entries[i].key) } else { OTHER };
        // Oldest first while collecting; reversed to newest first below.
        let start = values.len();
        for bind in &entries[i].binds {
            let def = match bind {
                Bind::Value(v) => {
                    values.push(Slot { value: Val::Ctx(v), origin: None, key: i, id: entries[i].id, rank });
                    continue;
                }
                Bind::Fun(def) => def,
            };
            // Its index in `order.fns`: the same walk, keys in order, each key's functions oldest first.
            let f = function;
            function += 1;
            if cyclic.get(i).copied().unwrap_or(false) {
                records.push(FnRecord { function: f, outcome: FnOutcome::InCycle, missing: None });
                continue;
            }
            // A panic in the function (or an argument's `map`) is its failure.
            let mut missing = None;
            let step = catch::call(|| (def.run)(&Env::new(&values, entries[i].id)));
            let outcome = match step {
                Err(message) => FnOutcome::Panicked(message),
                Ok(Err(Missing { key })) => {
                    let provided = index_of(entries, key.id).is_some();
                    let name = key.name.to_string();
                    missing = Some(key);
                    FnOutcome::Dropped { missing: name, provided }
                }
                Ok(Ok(step)) => {
                    let produced = match step {
                        Step::Ready(v) => Ok(v),
                        Step::Pending(fut) => {
                            waited = true;
                            let now = Instant::now();
                            if overall_expired.is_some() || now >= deadline {
                                overall_expired = Some(deadline - now.min(deadline));
                                Err(FnOutcome::NotRun)
                            } else {
                                let limit = attempt_timeout.min(deadline - now);
                                // Boxed: the timer's state is not carried by
                                // every unfold's future, only by one that waits.
                                match Box::pin(tokio::time::timeout(limit, CatchPanic::new(fut))).await {
                                    Ok(Ok(v)) => Ok(v),
                                    Ok(Err(message)) => Err(FnOutcome::Panicked(message)),
                                    Err(_) => Err(FnOutcome::TimedOut(limit)),
                                }
                            }
                        }
                    };
                    match produced {
                        Ok(Err(message)) => FnOutcome::Failed(message),
                        Ok(Ok(v)) if v.is_empty() => FnOutcome::ReturnedNone,
                        Ok(Ok(v)) => {
                            let n = v.len();
                            let origin = Some(f);
                            v.for_each_rev(|value| {
                                values.push(Slot { value: Val::Made(value), origin, key: i, id: entries[i].id, rank })
                            });
                            FnOutcome::Produced(n)
                        }
                        Err(o) => o,
                    }
                }
            };
            tracing::trace!(
                target: "conflux_mimic::function",
                function = %def.label,
                outcome = ?outcome,
                "function applied"
            );
            if !matches!(outcome, FnOutcome::Produced(_)) {
                records.push(FnRecord { function: f, outcome, missing });
            }
        }
        values[start..].reverse();
    }
    // Left in evaluation order: what is sorted into candidate order is only
    // what is asked for (a resolve's candidates, or the public form).
    debug_assert_eq!(function, order.fns.len(), "the unfold walks the functions as Order::fns lists them");
    Ok(Unfolding { ctx, slots: values, fns: &order.fns, records, overall_expired, waited })
}

/// Whether a dependency kind is required (used by plans).
pub(crate) fn is_required(kind: DepKind) -> bool {
    kind == DepKind::Req
}

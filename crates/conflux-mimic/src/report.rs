//! What a resolve tried: the structured [`NotFound`] report (each attempt,
//! each function), dependency [`Cycle`]s, and their Display.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::ctx::FnDef;
use crate::key::{BoxError, KeyInfo};

/// A dependency cycle between keys computed by functions (upstream declares
/// `Cycle` but never produces it). Arguments of every kind count: `req`, `opt`,
/// `dft`, `all`, and those inside `map`. Only a cycle that an endpoint needs
/// (directly or through other functions) fails a resolve; the functions of
/// any other cycle just do not run ([`FnOutcome::InCycle`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("dependency cycle between context keys: {}", self.display_path())]
pub struct Cycle {
    pub(crate) keys: Vec<String>,
}

impl Cycle {
    /// The keys on the cycle, in dependency order: each is computed from the next,
    /// the last from the first. A name two keys of the context share is written `name#id`.
    pub fn keys(&self) -> &[String] {
        &self.keys
    }

    fn display_path(&self) -> String {
        let mut s = self.keys.join(" <- ");
        if let Some(first) = self.keys.first() {
            s.push_str(" <- ");
            s.push_str(first);
        }
        s
    }
}

/// Why no candidate gave a flow.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reason {
    /// The context holds nothing at all.
    EmptyContext,
    /// The registry has no protocol at all.
    NoProtocols,
    /// The context holds endpoints, but only of protocols registered in
    /// another registry (this one never connects through those).
    ForeignEndpoints {
        /// Those protocols' names.
        protocols: Vec<String>,
    },
    /// No endpoint of a protocol of this registry could be built: the context
    /// holds other keys only, or its functions gave no endpoint (see
    /// [`NotFound::functions`] and [`NotFound::keys`]).
    NoCandidates,
    /// Every candidate was tried and failed.
    Exhausted,
    /// A protocol registered with `no_fallback` failed; the candidates after it were not tried.
    FallbackForbidden {
        /// That protocol's name.
        protocol: String,
    },
    /// The overall timeout ran out.
    OverallTimeout(Duration),
}

/// How one connect attempt ended.
#[derive(Debug)]
#[non_exhaustive]
pub enum AttemptOutcome {
    /// The connect failed with this error.
    Failed(BoxError),
    /// The per-attempt timeout ran out.
    TimedOut(Duration),
    /// Another candidate won the race (or the overall timeout ran out) first.
    Cancelled,
    /// Never started (a guard stopped the fallback, or the overall timeout ran out).
    NotTried,
    /// The connect panicked (with this message); the panic was contained and
    /// the next candidate tried.
    Panicked(String),
}

/// One candidate and what became of it.
#[derive(Debug)]
pub struct Attempt {
    pub(crate) protocol: Arc<str>,
    pub(crate) priority: Option<u32>,
    pub(crate) outcome: AttemptOutcome,
    pub(crate) elapsed: Duration,
    pub(crate) computed_by: Option<String>,
    /// The protocol's endpoint key (tells apart protocols of the same name).
    pub(crate) key: Arc<KeyInfo>,
}

impl Attempt {
    /// The protocol's name.
    pub fn protocol(&self) -> &str {
        &self.protocol
    }

    /// The protocol's priority.
    pub fn priority(&self) -> Option<u32> {
        self.priority
    }

    /// How it ended.
    pub fn outcome(&self) -> &AttemptOutcome {
        &self.outcome
    }

    /// How long it ran (zero when not tried).
    pub fn elapsed(&self) -> Duration {
        self.elapsed
    }
}

/// What became of one function of the context.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FnOutcome {
    /// It ran and gave this many values.
    Produced(usize),
    /// It ran and gave nothing ("not applicable").
    ReturnedNone,
    /// It ran and returned an error, with this message.
    Failed(String),
    /// It panicked (in the function or in a `map` of its arguments), with
    /// this message; the panic was contained.
    Panicked(String),
    /// It did not run: its key is on a dependency cycle that no endpoint
    /// needs (a cycle an endpoint needs fails the resolve with [`Cycle`]).
    InCycle,
    /// It did not run: a required key had no value.
    Dropped {
        /// The key's name.
        missing: String,
        /// False when the key was never in the context at all.
        provided: bool,
    },
    /// An asynchronous function did not finish within the per-attempt timeout.
    TimedOut(Duration),
    /// The overall timeout ran out before it could run.
    NotRun,
}

/// One function of the context and its outcome.
#[derive(Debug, Clone)]
pub struct FnReport {
    pub(crate) def: Arc<FnDef>,
    pub(crate) outcome: FnOutcome,
    /// For `Dropped`: the missing key (tells apart keys of the same name).
    pub(crate) missing: Option<Arc<KeyInfo>>,
}

impl FnReport {
    /// `key <- (req a, opt b)`.
    pub fn label(&self) -> &str {
        &self.def.label
    }

    /// The key it computes.
    pub fn key(&self) -> &str {
        &self.def.key.name
    }

    /// What became of it.
    pub fn outcome(&self) -> &FnOutcome {
        &self.outcome
    }
}

/// The structured NotFound report: every candidate tried (protocol, priority,
/// error or timeout, elapsed), every function that gave nothing or was dropped
/// (naming the missing key), and an explicit note when the context is empty.
#[derive(Debug)]
pub struct NotFound {
    pub(crate) reason: Reason,
    pub(crate) attempts: Vec<Attempt>,
    pub(crate) functions: Vec<FnReport>,
    pub(crate) elapsed: Duration,
    /// The context's keys, in creation order.
    pub(crate) keys: Vec<Arc<KeyInfo>>,
}

impl NotFound {
    /// Why nothing connected.
    pub fn reason(&self) -> &Reason {
        &self.reason
    }

    /// The candidates in the order they were to be tried.
    pub fn attempts(&self) -> &[Attempt] {
        &self.attempts
    }

    /// Every function of the context with its outcome, in evaluation order.
    pub fn functions(&self) -> &[FnReport] {
        &self.functions
    }

    /// The keys that functions needed and did not get, each once.
    pub fn missing_keys(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for f in &self.functions {
            if let FnOutcome::Dropped { missing, .. } = &f.outcome
                && !out.contains(&missing.as_str())
            {
                out.push(missing);
            }
        }
        out
    }

    /// How long the whole resolve took.
    pub fn elapsed(&self) -> Duration {
        self.elapsed
    }

    /// The keys the context holds, in creation order; a name two different
    /// keys of the report share is written `name#id`.
    pub fn keys(&self) -> Vec<String> {
        let names = Names::of(self);
        self.keys.iter().map(|k| names.name(k)).collect()
    }
}

/// Key names as a report writes them: `name`, or `name#id` when two
/// different keys (or protocols) of the report share the name.
struct Names<'a> {
    ambiguous: HashSet<&'a str>,
}

impl<'a> Names<'a> {
    fn of(report: &'a NotFound) -> Names<'a> {
        let mut seen: HashMap<&'a str, u64> = HashMap::new();
        let mut ambiguous = HashSet::new();
        let mut note = |k: &'a KeyInfo| {
            if *seen.entry(&k.name).or_insert(k.id) != k.id {
                ambiguous.insert(&*k.name);
            }
        };
        report.keys.iter().for_each(|k| note(k));
        report.attempts.iter().for_each(|a| note(&a.key));
        for f in &report.functions {
            note(&f.def.key);
            f.def.deps.iter().for_each(|d| note(&d.key));
        }
        Names { ambiguous }
    }

    fn name(&self, key: &KeyInfo) -> String {
        if self.ambiguous.contains(&*key.name) { format!("{}#{}", key.name, key.id) } else { key.name.to_string() }
    }
}

impl fmt::Display for NotFound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = Names::of(self);
        match &self.reason {
            Reason::EmptyContext => return f.write_str("not found: the context is empty (no values, no functions)"),
            Reason::NoProtocols => f.write_str("not found: this registry has no protocol registered")?,
            Reason::ForeignEndpoints { protocols } => write!(
                f,
                "not found: the context holds endpoints only of another registry's protocols ({}); \
                 this registry never connects through them",
                protocols.join(", ")
            )?,
            Reason::NoCandidates => {
                f.write_str("not found: no endpoint of a protocol of this registry could be built")?
            }
            Reason::Exhausted => write!(f, "not found: all {} candidate(s) failed", self.attempts.len())?,
            Reason::FallbackForbidden { protocol } => {
                write!(f, "not found: protocol `{protocol}` failed and forbids falling back past it")?
            }
            Reason::OverallTimeout(d) => write!(f, "not found: overall timeout of {d:?} ran out")?,
        }
        write!(f, " (after {:?})", self.elapsed)?;
        if matches!(self.reason, Reason::NoProtocols | Reason::ForeignEndpoints { .. } | Reason::NoCandidates) {
            let keys: Vec<String> = self.keys.iter().map(|k| names.name(k)).collect();
            write!(f, "\nkeys present: {}", keys.join(", "))?;
        }
        if !self.attempts.is_empty() {
            f.write_str("\ncandidates:")?;
            for (i, a) in self.attempts.iter().enumerate() {
                let prio = a.priority.map_or_else(|| "no priority".to_string(), |p| format!("priority {p}"));
                write!(f, "\n  {}. {} ({prio})", i + 1, names.name(&a.key))?;
                if let Some(by) = &a.computed_by {
                    write!(f, " from `{by}`")?;
                }
                match &a.outcome {
                    AttemptOutcome::Failed(e) => {
                        // The whole chain: each error's Display says its own part only.
                        write!(f, ": failed after {:?}: {e}", a.elapsed)?;
                        let mut source = e.source();
                        while let Some(s) = source {
                            write!(f, ": {s}")?;
                            source = s.source();
                        }
                    }
                    AttemptOutcome::TimedOut(d) => write!(f, ": timed out after {d:?}")?,
                    AttemptOutcome::Cancelled => write!(f, ": cancelled after {:?}", a.elapsed)?,
                    AttemptOutcome::NotTried => f.write_str(": not tried")?,
                    AttemptOutcome::Panicked(m) => write!(f, ": panicked after {:?}: {m}", a.elapsed)?,
                }
            }
        }
        let notable: Vec<&FnReport> =
            self.functions.iter().filter(|r| !matches!(r.outcome, FnOutcome::Produced(_))).collect();
        if !notable.is_empty() {
            f.write_str("\nfunctions:")?;
            for r in notable {
                write!(f, "\n  {}: ", r.def.render(|k| names.name(k)))?;
                let missing = |m: &str| r.missing.as_ref().map_or_else(|| m.to_string(), |k| names.name(k));
                match &r.outcome {
                    FnOutcome::Produced(n) => write!(f, "gave {n} value(s)")?,
                    FnOutcome::ReturnedNone => f.write_str("returned nothing")?,
                    FnOutcome::Failed(m) => write!(f, "returned an error: {m}")?,
                    FnOutcome::Panicked(m) => write!(f, "panicked: {m}")?,
                    FnOutcome::InCycle => f.write_str("not run: its key is on a dependency cycle")?,
                    FnOutcome::Dropped { missing: m, provided: true } => {
                        write!(f, "dropped: required key `{}` has no value", missing(m))?
                    }
                    FnOutcome::Dropped { missing: m, provided: false } => {
                        write!(f, "dropped: required key `{}` was never provided", missing(m))?
                    }
                    FnOutcome::TimedOut(d) => write!(f, "timed out after {d:?}")?,
                    FnOutcome::NotRun => f.write_str("not run (overall timeout)")?,
                }
            }
        }
        Ok(())
    }
}

impl std::error::Error for NotFound {}

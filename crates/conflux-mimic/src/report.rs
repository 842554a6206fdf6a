//! What a resolve tried: the structured NotFound report, cycles, and their Display.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::ctx::FnDef;
use crate::registry::BoxError;

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

/// A dependency cycle between keys computed by functions (upstream declares
/// `Cycle` but never produces it). Arguments of every kind count: `req`, `opt`,
/// `dft`, `all`, and those inside `map`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("dependency cycle between context keys: {}", self.display_path())]
pub struct Cycle {
    pub(crate) keys: Vec<String>,
}

impl Cycle {
    /// The keys on the cycle, in dependency order: each is computed from the next,
    /// the last from the first.
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
    /// No endpoint of a protocol of this registry could be built.
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
}

/// One candidate and what became of it.
#[derive(Debug)]
pub struct Attempt {
    pub(crate) protocol: Arc<str>,
    pub(crate) priority: Option<u32>,
    pub(crate) outcome: AttemptOutcome,
    pub(crate) elapsed: Duration,
    pub(crate) computed_by: Option<String>,
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
}

impl fmt::Display for NotFound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.reason {
            Reason::EmptyContext => return f.write_str("not found: the context is empty (no values, no functions)"),
            Reason::NoCandidates => f.write_str("not found: no endpoint of a registered protocol could be built")?,
            Reason::Exhausted => write!(f, "not found: all {} candidate(s) failed", self.attempts.len())?,
            Reason::FallbackForbidden { protocol } => {
                write!(f, "not found: protocol `{protocol}` failed and forbids falling back past it")?
            }
            Reason::OverallTimeout(d) => write!(f, "not found: overall timeout of {d:?} ran out")?,
        }
        write!(f, " (after {:?})", self.elapsed)?;
        if !self.attempts.is_empty() {
            f.write_str("\ncandidates:")?;
            for (i, a) in self.attempts.iter().enumerate() {
                let prio = a.priority.map_or_else(|| "no priority".to_string(), |p| format!("priority {p}"));
                write!(f, "\n  {}. {} ({prio})", i + 1, a.protocol)?;
                if let Some(by) = &a.computed_by {
                    write!(f, " from `{by}`")?;
                }
                match &a.outcome {
                    AttemptOutcome::Failed(e) => write!(f, ": failed after {:?}: {e}", a.elapsed)?,
                    AttemptOutcome::TimedOut(d) => write!(f, ": timed out after {d:?}")?,
                    AttemptOutcome::Cancelled => write!(f, ": cancelled after {:?}", a.elapsed)?,
                    AttemptOutcome::NotTried => f.write_str(": not tried")?,
                }
            }
        }
        let notable: Vec<&FnReport> =
            self.functions.iter().filter(|r| !matches!(r.outcome, FnOutcome::Produced(_))).collect();
        if !notable.is_empty() {
            f.write_str("\nfunctions:")?;
            for r in notable {
                write!(f, "\n  {}: ", r.def.label)?;
                match &r.outcome {
                    FnOutcome::Produced(n) => write!(f, "gave {n} value(s)")?,
                    FnOutcome::ReturnedNone => f.write_str("returned nothing")?,
                    FnOutcome::Dropped { missing, provided: true } => {
                        write!(f, "dropped: required key `{missing}` has no value")?
                    }
                    FnOutcome::Dropped { missing, provided: false } => {
                        write!(f, "dropped: required key `{missing}` was never provided")?
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

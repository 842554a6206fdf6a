//! `plan`: what a resolve would do, without running any function or connect.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};

use crate::ctx::{Bind, Ctx};
use crate::registry::Registry;
use crate::report::Cycle;
use crate::unfold::{is_required, rank};

/// One function in a [`Plan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedFn {
    /// `key <- (req a, opt b)`.
    pub label: String,
    /// The key it computes.
    pub key: String,
    /// The keys it reads, with whether each is required.
    pub reads: Vec<(String, bool)>,
    /// The first required key that can never have a value, if any (the function would be dropped).
    pub blocked_by: Option<String>,
    /// Its key is on a dependency cycle that no endpoint needs: it will not run.
    pub in_cycle: bool,
    key_id: u64,
    read_ids: Vec<u64>,
}

/// One reachable candidate protocol in a [`Plan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedCandidate {
    /// The protocol's name.
    pub protocol: String,
    /// Its priority.
    pub priority: Option<u32>,
    /// Plain endpoint values in the context.
    pub values: usize,
    /// Functions that may compute endpoints.
    pub functions: usize,
    /// Whether it forbids falling back past it.
    pub no_fallback: bool,
    key_id: u64,
}

/// What [`Registry::plan`] found: the functions in evaluation order and the
/// candidates reachable, in the order they would be tried. Displays as text;
/// [`to_dot`](Plan::to_dot) gives Graphviz.
///
/// A function counts as runnable when every key it requires has a value or a
/// runnable function; whether it then returns a value is only known by running it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The functions, in evaluation order.
    pub functions: Vec<PlannedFn>,
    /// Reachable candidates, in the order they would be tried.
    pub candidates: Vec<PlannedCandidate>,
    /// `(key, plain values, available)` for every key mentioned, in creation order.
    pub keys: Vec<(String, usize, bool)>,
    key_ids: Vec<u64>,
}

impl Registry {
    /// The plan of a resolve of `ctx`, without side effects: no function runs,
    /// nothing connects.
    ///
    /// ```
    /// use conflux_mimic::{Ctx, Key, Registry, req};
    /// let registry = Registry::new();
    /// let a: Key<u16> = Key::new("a");
    /// let b: Key<u16> = Key::new("b");
    /// let plan = registry.plan(&Ctx::new().fold(&b, req(&a), |a| Some(a + 1))).unwrap();
    /// assert_eq!(plan.functions[0].blocked_by.as_deref(), Some("a"));
    /// assert!(plan.to_dot().starts_with("digraph mimic {"));
    /// ```
    pub fn plan(&self, ctx: &Ctx) -> Result<Plan, Cycle> {
        let entries = ctx.entries();
        let order = ctx.order();
        let cyclic = order
            .cyclic(entries, |k| k.protocol.as_ref().is_some_and(|p| self.owns(p)))
            .map_err(|keys| Cycle { keys })?;
        // key id -> (name, plain values, available)
        let mut keys: BTreeMap<u64, (String, usize, bool)> = BTreeMap::new();
        for e in entries {
            let values = e.binds.iter().filter(|b| matches!(b, Bind::Value(_))).count();
            keys.insert(e.key.id, (e.key.name.to_string(), values, values > 0));
        }
        let mut functions = Vec::new();
        let mut runnable_per_key: BTreeMap<u64, usize> = BTreeMap::new();
        for &i in &order.keys {
            let e = &entries[i];
            for b in &e.binds {
                let Bind::Fun(def) = b else { continue };
                let mut reads = Vec::new();
                let mut read_ids = Vec::new();
                let mut blocked_by = None;
                for dep in &def.deps {
                    let required = is_required(dep.kind);
                    reads.push((dep.key.name.to_string(), required));
                    read_ids.push(dep.key.id);
                    keys.entry(dep.key.id).or_insert_with(|| (dep.key.name.to_string(), 0, false));
                    let available = keys.get(&dep.key.id).is_some_and(|k| k.2);
                    if required && !available && blocked_by.is_none() {
                        blocked_by = Some(dep.key.name.to_string());
                    }
                }
                let in_cycle = cyclic.get(i).copied().unwrap_or(false);
                if blocked_by.is_none() && !in_cycle {
                    *runnable_per_key.entry(e.key.id).or_default() += 1;
                }
                functions.push(PlannedFn {
                    label: def.label.clone(),
                    key: e.key.name.to_string(),
                    reads,
                    blocked_by,
                    in_cycle,
                    key_id: e.key.id,
                    read_ids,
                });
            }
            if runnable_per_key.contains_key(&e.key.id)
                && let Some(k) = keys.get_mut(&e.key.id)
            {
                k.2 = true;
            }
        }
        let mut reachable: Vec<_> = entries
            .iter()
            .filter(|e| e.key.protocol.as_ref().is_some_and(|p| self.owns(p)))
            .filter(|e| keys.get(&e.key.id).is_some_and(|k| k.2))
            .collect();
        reachable.sort_by_key(|e| rank(self, &e.key));
        let candidates = reachable
            .iter()
            .filter_map(|e| {
                let p = e.key.protocol.as_ref()?;
                Some(PlannedCandidate {
                    protocol: p.name.to_string(),
                    priority: p.priority,
                    values: keys.get(&e.key.id).map_or(0, |k| k.1),
                    functions: runnable_per_key.get(&e.key.id).copied().unwrap_or(0),
                    no_fallback: p.no_fallback,
                    key_id: e.key.id,
                })
            })
            .collect();
        let key_ids = keys.keys().copied().collect();
        Ok(Plan { functions, candidates, keys: keys.into_values().collect(), key_ids })
    }
}

impl Plan {
    /// The plan as a Graphviz digraph: keys are boxes (bold for candidates,
    /// dashed when never available), functions are ellipses; a dashed edge is
    /// an optional argument.
    pub fn to_dot(&self) -> String {
        let mut s = String::from("digraph mimic {\n  rankdir=LR;\n");
        let key_id = |id: u64| self.key_ids.iter().position(|k| *k == id).unwrap_or(usize::MAX);
        for (i, ((name, values, available), id)) in self.keys.iter().zip(&self.key_ids).enumerate() {
            let cand = self.candidates.iter().position(|c| c.key_id == *id);
            let mut label = format!("{name}\\n{values} value(s)");
            let mut style = Vec::new();
            if let Some(n) = cand {
                let _ = write!(label, "\\ncandidate #{}", n + 1);
                style.push("bold");
            }
            if !available {
                style.push("dashed");
            }
            let _ = writeln!(s, "  k{i} [shape=box label=\"{}\" style=\"{}\"];", escape(&label), style.join(","));
        }
        for (f, func) in self.functions.iter().enumerate() {
            let style = if func.blocked_by.is_some() || func.in_cycle { "dashed" } else { "solid" };
            let _ = writeln!(s, "  f{f} [shape=ellipse label=\"{}\" style=\"{style}\"];", escape(&func.label));
            for ((_, required), id) in func.reads.iter().zip(&func.read_ids) {
                let edge = if *required { "solid" } else { "dashed" };
                let _ = writeln!(s, "  k{} -> f{f} [style={edge}];", key_id(*id));
            }
            let _ = writeln!(s, "  f{f} -> k{};", key_id(func.key_id));
        }
        s.push_str("}\n");
        s
    }
}

fn escape(s: &str) -> String {
    s.replace('"', "\\\"")
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "plan: {} key(s), {} function(s)", self.keys.len(), self.functions.len())?;
        if !self.functions.is_empty() {
            f.write_str("functions, in evaluation order:\n")?;
            for (i, func) in self.functions.iter().enumerate() {
                match &func.blocked_by {
                    _ if func.in_cycle => {
                        writeln!(f, "  {}. {}: not run: its key is on a dependency cycle", i + 1, func.label)?
                    }
                    None => writeln!(f, "  {}. {}: may run", i + 1, func.label)?,
                    Some(k) => {
                        writeln!(f, "  {}. {}: dropped: required key `{k}` is never available", i + 1, func.label)?
                    }
                }
            }
        }
        if self.candidates.is_empty() {
            f.write_str("candidates: none reachable\n")
        } else {
            f.write_str("candidates, in the order they would be tried:\n")?;
            for (i, c) in self.candidates.iter().enumerate() {
                let prio = c.priority.map_or_else(|| "no priority".to_string(), |p| format!("priority {p}"));
                let guard = if c.no_fallback { ", no fallback past it" } else { "" };
                writeln!(
                    f,
                    "  {}. {} ({prio}{guard}): {} plain value(s), {} function(s)",
                    i + 1,
                    c.protocol,
                    c.values,
                    c.functions
                )?;
            }
            Ok(())
        }
    }
}

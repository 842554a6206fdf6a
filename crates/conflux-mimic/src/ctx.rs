//! The context: for each key an ordered list of plain values and functions.

use std::fmt;
use std::future::Future;
use std::sync::{Arc, OnceLock};

use crate::args::{Args, Dep, Env, KEY_MARK, Missing};
use crate::key::{BoxFuture, Key, KeyInfo, Value};

/// What a function gave: its values, or the text of the error it returned.
pub(crate) type Produced = Result<Values, String>;

/// A function's values, most preferred first; one (the usual case) without
/// a vector of its own.
pub(crate) enum Values {
    One(Value),
    Many(Vec<Value>),
}

impl Values {
    /// Appends a less preferred value.
    fn push(&mut self, value: Value) {
        match self {
            Values::Many(v) if v.is_empty() => *self = Values::One(value),
            Values::Many(v) => v.push(value),
            Values::One(_) => {
                if let Values::One(first) = std::mem::replace(self, Values::Many(Vec::new())) {
                    *self = Values::Many(vec![first, value]);
                }
            }
        }
    }

    pub(crate) fn len(&self) -> usize {
        match self {
            Values::One(_) => 1,
            Values::Many(v) => v.len(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Hands each value to `f`, least preferred first.
    pub(crate) fn for_each_rev(self, mut f: impl FnMut(Value)) {
        match self {
            Values::One(v) => f(v),
            Values::Many(v) => v.into_iter().rev().for_each(f),
        }
    }
}

/// What applying a function gave: values at once, or a future of them.
pub(crate) enum Step {
    Ready(Produced),
    Pending(BoxFuture<Produced>),
}

/// What a context function returns: any number of values, most preferred
/// first (`Option<T>`, `Vec<T>`), or the same in a `Result` whose error is
/// kept in the NotFound report (function, key and message).
///
/// None (or an empty `Vec`) means "not applicable here".
pub trait FnOutput<T>: Send + 'static {
    #[doc(hidden)]
    fn into_values(self) -> Result<Vec<T>, String>;
    /// Hands each value to `f`, most preferred first (a single value needs
    /// no vector of its own).
    #[doc(hidden)]
    fn for_each_value(self, f: &mut dyn FnMut(T)) -> Result<(), String>
    where
        Self: Sized,
    {
        self.into_values().map(|v| v.into_iter().for_each(f))
    }
}

impl<T: Send + 'static> FnOutput<T> for Option<T> {
    fn into_values(self) -> Result<Vec<T>, String> {
        Ok(self.into_iter().collect())
    }
    fn for_each_value(self, f: &mut dyn FnMut(T)) -> Result<(), String> {
        self.into_iter().for_each(f);
        Ok(())
    }
}

impl<T: Send + 'static> FnOutput<T> for Vec<T> {
    fn into_values(self) -> Result<Vec<T>, String> {
        Ok(self)
    }
}

impl<T: Send + 'static, E: fmt::Display + Send + 'static> FnOutput<T> for Result<T, E> {
    fn into_values(self) -> Result<Vec<T>, String> {
        self.map(|v| vec![v]).map_err(|e| e.to_string())
    }
    fn for_each_value(self, f: &mut dyn FnMut(T)) -> Result<(), String> {
        self.map(f).map_err(|e| e.to_string())
    }
}

impl<T: Send + 'static, E: fmt::Display + Send + 'static> FnOutput<T> for Result<Option<T>, E> {
    fn into_values(self) -> Result<Vec<T>, String> {
        self.map(|v| v.into_iter().collect()).map_err(|e| e.to_string())
    }
    fn for_each_value(self, f: &mut dyn FnMut(T)) -> Result<(), String> {
        self.map(|v| v.into_iter().for_each(f)).map_err(|e| e.to_string())
    }
}

impl<T: Send + 'static, E: fmt::Display + Send + 'static> FnOutput<T> for Result<Vec<T>, E> {
    fn into_values(self) -> Result<Vec<T>, String> {
        self.map_err(|e| e.to_string())
    }
}

/// A function's output as shared values: one value without a vector.
fn to_values<T: Send + Sync + 'static>(out: impl FnOutput<T>) -> Produced {
    let mut values = Values::Many(Vec::new());
    out.for_each_value(&mut |v| values.push(Arc::new(v)))?;
    Ok(values)
}

type RunFn = dyn Fn(&Env<'_>) -> Result<Step, Missing> + Send + Sync;

/// A function of a context: "key can be computed from these arguments".
pub(crate) struct FnDef {
    pub(crate) key: Arc<KeyInfo>,
    /// `key <- (req a, opt b)`, for reports and plans.
    pub(crate) label: String,
    /// The label with [`KEY_MARK`](crate::args::KEY_MARK) for each key name:
    /// first `key`, then each of `deps` in order (reports that must tell
    /// apart keys of the same name fill it with `name#id`).
    pub(crate) template: String,
    pub(crate) deps: Vec<Dep>,
    pub(crate) run: Box<RunFn>,
}

impl fmt::Debug for FnDef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label)
    }
}

#[derive(Clone)]
pub(crate) enum Bind {
    Value(Value),
    Fun(Arc<FnDef>),
}

impl Bind {
    /// The very same value or function (one `add` or `fold`), not an equal one.
    fn same(&self, other: &Bind) -> bool {
        match (self, other) {
            (Bind::Value(a), Bind::Value(b)) => Arc::ptr_eq(a, b),
            (Bind::Fun(a), Bind::Fun(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl FnDef {
    /// The label with each key written by `name`.
    pub(crate) fn render(&self, name: impl Fn(&KeyInfo) -> String) -> String {
        let mut keys = std::iter::once(&self.key).chain(self.deps.iter().map(|d| &d.key));
        let mut out = String::with_capacity(self.template.len());
        for (i, part) in self.template.split(KEY_MARK).enumerate() {
            if i > 0
                && let Some(k) = keys.next()
            {
                out.push_str(&name(k));
            }
            out.push_str(part);
        }
        out
    }
}

#[derive(Clone)]
pub(crate) struct Entry {
    /// `key.id`, and whether the key is a protocol's endpoint key, kept
    /// here too: an unfold walks the entries without a trip to each `KeyInfo`.
    pub(crate) id: u64,
    pub(crate) endpoint: bool,
    pub(crate) key: Arc<KeyInfo>,
    /// Oldest first.
    pub(crate) binds: Vec<Bind>,
}

/// A persistent context of typed values and functions (upstream's `ctx`).
///
/// For each [`Key`], an ordered list of plain values and functions. Every
/// update returns a new context and leaves the old one as it was; cloning is
/// one reference count, an update copies the key table (contexts hold a
/// handful of keys; values are shared, never copied).
///
/// ```
/// use conflux_mimic::{Ctx, Key, req};
/// let a: Key<u32> = Key::new("a");
/// let sum: Key<u32> = Key::new("sum");
/// let ctx = Ctx::new().add(&a, 1).add(&a, 2);
/// assert_eq!(ctx.get(&a), Some(&2), "the newest value");
/// let ctx2 = ctx.fold(&sum, req(&a), |a| Some(a + 40));
/// assert!(ctx.get(&sum).is_none() && ctx2.get(&sum).is_none(), "functions run at resolve time");
/// assert_eq!(ctx2.replace(&a, 9).get(&a), Some(&9));
/// ```
#[derive(Clone, Default)]
pub struct Ctx {
    pub(crate) inner: Arc<CtxInner>,
}

#[derive(Default)]
pub(crate) struct CtxInner {
    /// The keys' entries, sorted by key id (creation order): a small sorted
    /// vector, cheaper to copy, search and walk than a tree at this size.
    pub(crate) map: Vec<Entry>,
    /// The evaluation order of the keys and their cycles, computed by the
    /// first unfold or plan of this context and kept: a context never changes.
    order: OnceLock<Order>,
}

impl Ctx {
    fn from_entries(map: Vec<Entry>) -> Ctx {
        Ctx { inner: Arc::new(CtxInner { map, order: OnceLock::new() }) }
    }

    /// The entries, in key order.
    pub(crate) fn entries(&self) -> &[Entry] {
        &self.inner.map
    }

    /// The keys, in creation order (what a NotFound report lists).
    pub(crate) fn keys(&self) -> Vec<Arc<KeyInfo>> {
        self.inner.map.iter().map(|e| e.key.clone()).collect()
    }

    /// The keys in evaluation order and the cycles among them (computed once per context).
    pub(crate) fn order(&self) -> &Order {
        self.inner.order.get_or_init(|| Order::new(&self.inner.map))
    }

    /// The empty context.
    pub fn new() -> Ctx {
        Ctx::default()
    }

    /// The empty context (upstream's name).
    pub fn empty() -> Ctx {
        Ctx::default()
    }

    /// True when no key has a value or a function.
    pub fn is_empty(&self) -> bool {
        self.inner.map.is_empty()
    }

    /// How many keys have a value or a function.
    pub fn len(&self) -> usize {
        self.inner.map.len()
    }

    fn update(&self, key: &Arc<KeyInfo>, f: impl FnOnce(&mut Vec<Bind>)) -> Ctx {
        let mut map = self.inner.map.clone();
        let i = match map.binary_search_by_key(&key.id, |e| e.id) {
            Ok(i) => i,
            Err(i) => {
                map.insert(
                    i,
                    Entry { id: key.id, endpoint: key.protocol.is_some(), key: key.clone(), binds: Vec::new() },
                );
                i
            }
        };
        f(&mut map[i].binds);
        Ctx::from_entries(map)
    }

    /// Appends `value` to `key`'s list: it becomes the newest value.
    pub fn add<T: Clone + Send + Sync + 'static>(&self, key: &Key<T>, value: T) -> Ctx {
        self.update(&key.info, |b| b.push(Bind::Value(Arc::new(value))))
    }

    /// Drops `key`'s plain values (its functions stay) and adds `value`.
    pub fn replace<T: Clone + Send + Sync + 'static>(&self, key: &Key<T>, value: T) -> Ctx {
        self.update(&key.info, |b| {
            b.retain(|b| matches!(b, Bind::Fun(_)));
            b.push(Bind::Value(Arc::new(value)));
        })
    }

    /// The newest plain value of `key` (functions are not run: see
    /// [`Registry::unfold`](crate::Registry::unfold)).
    pub fn get<T: Clone + Send + Sync + 'static>(&self, key: &Key<T>) -> Option<&T> {
        let entry = self.entry(key.id)?;
        entry.binds.iter().rev().find_map(|b| match b {
            Bind::Value(v) => v.downcast_ref::<T>(),
            Bind::Fun(_) => None,
        })
    }

    /// Appends a function: `key` can be computed by `f` from `args` (a single
    /// [`req`](crate::req)/[`opt`](crate::opt)/[`dft`](crate::dft)/[`map`](crate::map)/[`all`](crate::all)
    /// or a tuple of them). `f` returns any number of values (an `Option` or a
    /// `Vec`, see [`FnOutput`]), most preferred first; none means "not
    /// applicable here"; an `Err` is kept in the report.
    ///
    /// Functions run when the context is unfolded, each at most once, after
    /// every function of the keys it reads. A panic in `f` (or in a
    /// [`map`](crate::map) of its arguments) is that function's failure,
    /// reported; the resolve goes on without its values.
    pub fn fold<T, A, R, F>(&self, key: &Key<T>, args: A, f: F) -> Ctx
    where
        T: Clone + Send + Sync + 'static,
        A: Args,
        R: FnOutput<T>,
        F: Fn(A::Out) -> R + Send + Sync + 'static,
    {
        let shape = shape(&args);
        let run = move |env: &Env<'_>| -> Result<Step, Missing> {
            let out = args.extract(env)?;
            Ok(Step::Ready(to_values(f(out))))
        };
        self.push_fn(key, shape, Box::new(run))
    }

    /// As [`fold`](Ctx::fold) for an asynchronous function (a DNS lookup, say).
    /// Its wait is bounded by the resolve's per-attempt timeout.
    pub fn fold_async<T, A, R, Fut, F>(&self, key: &Key<T>, args: A, f: F) -> Ctx
    where
        T: Clone + Send + Sync + 'static,
        A: Args,
        R: FnOutput<T>,
        Fut: Future<Output = R> + Send + 'static,
        F: Fn(A::Out) -> Fut + Send + Sync + 'static,
    {
        let shape = shape(&args);
        let run = move |env: &Env<'_>| -> Result<Step, Missing> {
            let fut = f(args.extract(env)?);
            Ok(Step::Pending(Box::pin(async move { to_values(fut.await) })))
        };
        self.push_fn(key, shape, Box::new(run))
    }

    fn push_fn<T>(&self, key: &Key<T>, (deps, args): (Vec<Dep>, String), run: Box<RunFn>) -> Ctx {
        let template = format!("{KEY_MARK} <- ({args})");
        let mut def = FnDef { key: key.info.clone(), label: String::new(), template, deps, run };
        def.label = def.render(|k| k.name.to_string());
        let def = Arc::new(def);
        self.update(&key.info, |b| b.push(Bind::Fun(def)))
    }

    /// Concatenates the two contexts key by key; `other`'s values and
    /// functions count as newer.
    ///
    /// A value or function both contexts share (both built from one base
    /// context, or a context merged with itself) is kept once, where `self`
    /// has it: merging never makes a function run twice or an endpoint be
    /// dialled twice.
    pub fn merge(&self, other: &Ctx) -> Ctx {
        if self.is_empty() {
            return other.clone();
        }
        if Arc::ptr_eq(&self.inner, &other.inner) {
            return self.clone();
        }
        let mut map = self.inner.map.clone();
        for entry in other.inner.map.iter() {
            match map.binary_search_by_key(&entry.id, |e| e.id) {
                Ok(i) => {
                    for bind in &entry.binds {
                        if !map[i].binds.iter().any(|b| b.same(bind)) {
                            map[i].binds.push(bind.clone());
                        }
                    }
                }
                Err(i) => map.insert(i, entry.clone()),
            }
        }
        Ctx::from_entries(map)
    }

    fn entry(&self, id: u64) -> Option<&Entry> {
        let map = &self.inner.map;
        map.binary_search_by_key(&id, |e| e.id).ok().map(|i| &map[i])
    }
}

/// The dependencies and label of `args`.
fn shape<A: Args>(args: &A) -> (Vec<Dep>, String) {
    let mut deps = Vec::new();
    let mut label = String::new();
    args.deps(&mut deps);
    args.label(&mut label);
    (deps, label)
}

impl fmt::Debug for Ctx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut m = f.debug_map();
        for e in self.inner.map.iter() {
            let values = e.binds.iter().filter(|b| matches!(b, Bind::Value(_))).count();
            let funs: Vec<&str> = e
                .binds
                .iter()
                .filter_map(|b| match b {
                    Bind::Fun(d) => Some(&*d.label),
                    Bind::Value(_) => None,
                })
                .collect();
            m.entry(&format_args!("{:?}", e.key), &format_args!("{values} value(s), functions {funs:?}"));
        }
        m.finish()
    }
}

/// The keys of a context in evaluation order (every key after the keys its
/// functions read), with the dependency cycles found on the way.
#[derive(Debug)]
pub(crate) struct Order {
    /// Entry indices, in evaluation order.
    pub(crate) keys: Vec<usize>,
    /// Each cycle's entry indices, in dependency order (each computed from the next).
    pub(crate) cycles: Vec<Vec<usize>>,
    /// Every function, in evaluation order (the keys' order, then each key's
    /// functions oldest first): an unfold names a function by its index here.
    pub(crate) fns: Vec<Arc<FnDef>>,
}

impl Order {
    fn new(entries: &[Entry]) -> Order {
        struct Walk<'a> {
            entries: &'a [Entry],
            state: Vec<u8>,
            path: Vec<usize>,
            order: Order,
        }
        impl Walk<'_> {
            fn visit(&mut self, i: usize) {
                match self.state[i] {
                    2 => return,
                    1 => {
                        // A back edge: the path from `i` on is a cycle; the walk goes on past it.
                        let from = self.path.iter().position(|&p| p == i).unwrap_or(0);
                        self.order.cycles.push(self.path[from..].to_vec());
                        return;
                    }
                    _ => {}
                }
                self.state[i] = 1;
                self.path.push(i);
                let entries = self.entries;
                for bind in &entries[i].binds {
                    if let Bind::Fun(def) = bind {
                        for dep in &def.deps {
                            if let Some(j) = index_of(entries, dep.key.id) {
                                self.visit(j);
                            }
                        }
                    }
                }
                self.path.pop();
                self.state[i] = 2;
                self.order.keys.push(i);
            }
        }
        let mut walk = Walk {
            entries,
            state: vec![0; entries.len()],
            path: Vec::new(),
            order: Order { keys: Vec::with_capacity(entries.len()), cycles: Vec::new(), fns: Vec::new() },
        };
        for i in 0..entries.len() {
            walk.visit(i);
        }
        let mut order = walk.order;
        for &i in &order.keys {
            for bind in &entries[i].binds {
                if let Bind::Fun(def) = bind {
                    order.fns.push(def.clone());
                }
            }
        }
        order
    }

    /// The keys on some cycle, by entry index (empty when the context has
    /// no cycle at all: an index past the end is not on one); or the names of the keys of
    /// the first cycle that an endpoint of `owns`'s protocols needs (it reads,
    /// directly or through other functions, a key on it): that one fails the
    /// resolve, the others only keep their functions from running.
    pub(crate) fn cyclic(&self, entries: &[Entry], owns: impl Fn(&KeyInfo) -> bool) -> Result<Vec<bool>, Vec<String>> {
        if self.cycles.is_empty() {
            // No cycle: nothing to mark, nothing allocated.
            return Ok(Vec::new());
        }
        let mut cyclic = vec![false; entries.len()];
        // Every key some endpoint needs: the endpoints, then what their functions read.
        let mut needed = vec![false; entries.len()];
        let mut stack: Vec<usize> = (0..entries.len()).filter(|&i| owns(&entries[i].key)).collect();
        while let Some(i) = stack.pop() {
            if std::mem::replace(&mut needed[i], true) {
                continue;
            }
            for bind in &entries[i].binds {
                if let Bind::Fun(def) = bind {
                    stack.extend(def.deps.iter().filter_map(|d| index_of(entries, d.key.id)));
                }
            }
        }
        for cycle in &self.cycles {
            if cycle.iter().any(|&i| needed[i]) {
                // A name two keys of the context share is written `name#id`.
                let shared = |k: &KeyInfo| entries.iter().filter(|e| e.key.name == k.name).count() > 1;
                return Err(cycle
                    .iter()
                    .map(|&i| &entries[i].key)
                    .map(|k| if shared(k) { format!("{}#{}", k.name, k.id) } else { k.name.to_string() })
                    .collect());
            }
            for &i in cycle {
                cyclic[i] = true;
            }
        }
        Ok(cyclic)
    }
}

/// The index of the entry of key `id`.
pub(crate) fn index_of(entries: &[Entry], id: u64) -> Option<usize> {
    entries.binary_search_by_key(&id, |e| e.id).ok()
}

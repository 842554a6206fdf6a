//! The context: for each key an ordered list of plain values and functions.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};

use crate::args::{Args, Dep, Env, Missing};
use crate::key::{Key, KeyInfo, Value};
use crate::report::Cycle;

pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// What applying a function gave: values at once, or a future of them.
pub(crate) enum Step {
    Ready(Vec<Value>),
    Pending(BoxFuture<Vec<Value>>),
}

type RunFn = dyn Fn(&Env<'_>) -> Result<Step, Missing> + Send + Sync;

/// A function of a context: "key can be computed from these arguments".
pub(crate) struct FnDef {
    pub(crate) key: Arc<KeyInfo>,
    /// `key <- (req a, opt b)`, for reports and plans.
    pub(crate) label: String,
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

#[derive(Clone)]
pub(crate) struct Entry {
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
    /// The evaluation order of the keys (or the cycle), computed by the
    /// first unfold or plan of this context and kept: a context never changes.
    order: OnceLock<Result<Vec<usize>, Cycle>>,
}

impl Ctx {
    fn from_entries(map: Vec<Entry>) -> Ctx {
        Ctx { inner: Arc::new(CtxInner { map, order: OnceLock::new() }) }
    }

    /// The entries, in key order.
    pub(crate) fn entries(&self) -> &[Entry] {
        &self.inner.map
    }

    /// The keys in evaluation order, or the first cycle (computed once per context).
    pub(crate) fn order(&self) -> Result<&[usize], Cycle> {
        match self.inner.order.get_or_init(|| crate::unfold::order(&self.inner.map)) {
            Ok(order) => Ok(order),
            Err(cycle) => Err(cycle.clone()),
        }
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
        let i = match map.binary_search_by_key(&key.id, |e| e.key.id) {
            Ok(i) => i,
            Err(i) => {
                map.insert(i, Entry { key: key.clone(), binds: Vec::new() });
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
        let entry = self.entry(key.info.id)?;
        entry.binds.iter().rev().find_map(|b| match b {
            Bind::Value(v) => v.downcast_ref::<T>(),
            Bind::Fun(_) => None,
        })
    }

    /// Appends a function: `key` can be computed by `f` from `args` (a single
    /// [`req`](crate::req)/[`opt`](crate::opt)/[`dft`](crate::dft)/[`map`](crate::map)/[`all`](crate::all)
    /// or a tuple of them). `f` returns any number of values (an `Option` or a
    /// `Vec`), most preferred first; none means "not applicable here".
    ///
    /// Functions run when the context is unfolded, each at most once, after
    /// every function of the keys it reads.
    pub fn fold<T, A, R, F>(&self, key: &Key<T>, args: A, f: F) -> Ctx
    where
        T: Clone + Send + Sync + 'static,
        A: Args,
        R: IntoIterator<Item = T>,
        F: Fn(A::Out) -> R + Send + Sync + 'static,
    {
        let shape = shape(&args);
        let run = move |env: &Env<'_>| -> Result<Step, Missing> {
            let out = args.extract(env)?;
            Ok(Step::Ready(f(out).into_iter().map(|v| Arc::new(v) as Value).collect()))
        };
        self.push_fn(key, shape, Box::new(run))
    }

    /// As [`fold`](Ctx::fold) for an asynchronous function (a DNS lookup, say).
    /// Its wait is bounded by the resolve's per-attempt timeout.
    pub fn fold_async<T, A, R, Fut, F>(&self, key: &Key<T>, args: A, f: F) -> Ctx
    where
        T: Clone + Send + Sync + 'static,
        A: Args,
        R: IntoIterator<Item = T>,
        Fut: Future<Output = R> + Send + 'static,
        F: Fn(A::Out) -> Fut + Send + Sync + 'static,
    {
        let shape = shape(&args);
        let run = move |env: &Env<'_>| -> Result<Step, Missing> {
            let fut = f(args.extract(env)?);
            Ok(Step::Pending(Box::pin(async move {
                fut.await.into_iter().map(|v| Arc::new(v) as Value).collect::<Vec<Value>>()
            })))
        };
        self.push_fn(key, shape, Box::new(run))
    }

    fn push_fn<T>(&self, key: &Key<T>, (deps, label): (Vec<Dep>, String), run: Box<RunFn>) -> Ctx {
        let label = format!("{} <- ({label})", key.name());
        let def = Arc::new(FnDef { key: key.info.clone(), label, deps, run });
        self.update(&key.info, |b| b.push(Bind::Fun(def)))
    }

    /// Concatenates the two contexts key by key; `other`'s values and
    /// functions count as newer.
    pub fn merge(&self, other: &Ctx) -> Ctx {
        if self.is_empty() {
            return other.clone();
        }
        let mut map = self.inner.map.clone();
        for entry in other.inner.map.iter() {
            match map.binary_search_by_key(&entry.key.id, |e| e.key.id) {
                Ok(i) => map[i].binds.extend(entry.binds.iter().cloned()),
                Err(i) => map.insert(i, entry.clone()),
            }
        }
        Ctx::from_entries(map)
    }

    /// The names of the keys present, in creation order.
    pub fn key_names(&self) -> impl Iterator<Item = &str> + '_ {
        self.inner.map.iter().map(|e| &*e.key.name)
    }

    fn entry(&self, id: u64) -> Option<&Entry> {
        let map = &self.inner.map;
        map.binary_search_by_key(&id, |e| e.key.id).ok().map(|i| &map[i])
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

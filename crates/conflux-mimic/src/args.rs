//! Function arguments: `req`, `opt`, `dft`, `map` and `all`, combined as tuples
//! with typed arity.

use std::fmt;
use std::sync::Arc;

use crate::key::{AnyRef, Key, KeyInfo, Rank, Value};

/// A value while unfolding: one the context holds (borrowed, not cloned:
/// a resolve that connects copies nothing out of its context) or one a
/// function made.
pub(crate) enum Val<'c> {
    Ctx(&'c Value),
    Made(Value),
}

impl Val<'_> {
    pub(crate) fn get(&self) -> AnyRef<'_> {
        match self {
            Val::Ctx(v) => &***v,
            Val::Made(v) => &**v,
        }
    }

    pub(crate) fn into_owned(self) -> Value {
        match self {
            Val::Ctx(v) => v.clone(),
            Val::Made(v) => v,
        }
    }
}

/// One value of a key while unfolding.
pub(crate) struct Slot<'c> {
    pub(crate) value: Val<'c>,
    /// The index, among the unfold's functions, of the one that computed it
    /// (`None` for a plain value).
    pub(crate) origin: Option<usize>,
    /// The key's index among the context's entries.
    pub(crate) key: usize,
    /// The key's id.
    pub(crate) id: u64,
    /// The key's candidate rank (see [`ProtocolEntry::rank`](crate::key::ProtocolEntry::rank)).
    pub(crate) rank: Rank,
}

impl Slot<'_> {
    /// Where the slot goes in candidate order: by rank, then key, then (a
    /// stable sort keeps it) newest first within a key.
    pub(crate) fn order(&self) -> (Rank, usize) {
        (self.rank, self.key)
    }
}

impl fmt::Debug for Slot<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Slot").field("key", &self.key).field("origin", &self.origin).finish_non_exhaustive()
    }
}

/// The values a function can read while a context is being unfolded: for each
/// key, its values in preference order (newest first).
pub struct Env<'a> {
    /// The values of the keys unfolded so far, each key's values contiguous
    /// (a context holds a handful of keys: a scan, no index to allocate).
    values: &'a [Slot<'a>],
    /// The id of the key whose functions are running: its own values are not read.
    current: u64,
}

impl fmt::Debug for Env<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Env").field("values", &self.values).field("current", &self.current).finish()
    }
}

impl<'a> Env<'a> {
    pub(crate) fn new(values: &'a [Slot<'a>], current: u64) -> Env<'a> {
        Env { values, current }
    }

    /// The values of the key with id `key`.
    fn values(&self, key: u64) -> &'a [Slot<'a>] {
        if key == self.current {
            return &[];
        }
        let Some(start) = self.values.iter().position(|s| s.id == key) else { return &[] };
        let len = self.values[start..].iter().take_while(|s| s.id == key).count();
        &self.values[start..start + len]
    }

    fn newest<T: Clone + 'static>(&self, key: u64) -> Option<T> {
        if key == self.current {
            return None;
        }
        // A key's values are contiguous, newest first: its first slot is the newest.
        self.values.iter().find(|s| s.id == key).and_then(|s| s.value.get().downcast_ref::<T>()).cloned()
    }
}

/// A required argument was not available; names the key (internal: unnameable outside the crate).
#[derive(Debug, Clone)]
pub struct Missing {
    pub(crate) key: Arc<KeyInfo>,
}

/// Stands for a key's name in a function's label template.
pub(crate) const KEY_MARK: char = '\u{1}';

/// How a function depends on a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DepKind {
    /// `req`: the function is dropped without it.
    Req,
    /// `opt`, `dft`, `all`: the function runs either way.
    Soft,
}

/// One key a function reads.
#[derive(Debug, Clone)]
pub struct Dep {
    pub(crate) key: Arc<KeyInfo>,
    pub(crate) kind: DepKind,
}

mod sealed {
    pub trait Sealed {}
}

/// One argument of a context function: [`req`], [`opt`], [`dft`], [`map`] or [`all`].
///
/// Sealed: the five constructors are the whole vocabulary.
pub trait Arg: sealed::Sealed + Send + Sync + 'static {
    /// What the function receives for this argument.
    type Out;
    #[doc(hidden)]
    fn deps(&self, out: &mut Vec<Dep>);
    #[doc(hidden)]
    fn label(&self, out: &mut String);
    #[doc(hidden)]
    fn extract(&self, env: &Env<'_>) -> Result<Self::Out, Missing>;
}

/// The arguments of a context function: one [`Arg`] or a tuple of up to eight;
/// the function receives the tuple of their outputs.
pub trait Args: sealed::Sealed + Send + Sync + 'static {
    /// What the function receives.
    type Out;
    #[doc(hidden)]
    fn deps(&self, out: &mut Vec<Dep>);
    #[doc(hidden)]
    fn label(&self, out: &mut String);
    #[doc(hidden)]
    fn extract(&self, env: &Env<'_>) -> Result<Self::Out, Missing>;
}

/// A required argument: see [`req`].
pub struct Req<T>(Key<T>);
/// An optional argument: see [`opt`].
pub struct Opt<T>(Key<T>);
/// An argument with a default: see [`dft`].
pub struct Dft<T>(Key<T>, T);
/// Every value of a key: see [`all`].
pub struct All<T>(Key<T>);
/// A computed argument: see [`map`].
pub struct Map<A, F>(A, F);

/// The newest value of `key`; without one the function is dropped (and the
/// NotFound report names `key`).
pub fn req<T: Clone + Send + Sync + 'static>(key: &Key<T>) -> Req<T> {
    Req(key.clone())
}

/// `Some(newest value of key)` or `None`; the function runs either way.
pub fn opt<T: Clone + Send + Sync + 'static>(key: &Key<T>) -> Opt<T> {
    Opt(key.clone())
}

/// The newest value of `key`, or `default`.
pub fn dft<T: Clone + Send + Sync + 'static>(key: &Key<T>, default: T) -> Dft<T> {
    Dft(key.clone(), default)
}

/// Every value of `key`, newest first (possibly none): how one function sees
/// all the addresses a DNS lookup produced.
pub fn all<T: Clone + Send + Sync + 'static>(key: &Key<T>) -> All<T> {
    All(key.clone())
}

/// An argument computed by `f` from `args`; dropped like `args` is (a missing
/// `req` inside still drops the function).
pub fn map<A: Args, U, F>(args: A, f: F) -> Map<A, F>
where
    F: Fn(A::Out) -> U + Send + Sync + 'static,
{
    Map(args, f)
}

impl<T> fmt::Debug for Req<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "req {}", self.0.name())
    }
}
impl<T> fmt::Debug for Opt<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "opt {}", self.0.name())
    }
}
impl<T> fmt::Debug for Dft<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "dft {}", self.0.name())
    }
}
impl<T> fmt::Debug for All<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "all {}", self.0.name())
    }
}
impl<A, F> fmt::Debug for Map<A, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("map(..)")
    }
}

impl<T> sealed::Sealed for Req<T> {}
impl<T> sealed::Sealed for Opt<T> {}
impl<T> sealed::Sealed for Dft<T> {}
impl<T> sealed::Sealed for All<T> {}
impl<A, F> sealed::Sealed for Map<A, F> {}

impl<T: Clone + Send + Sync + 'static> Arg for Req<T> {
    type Out = T;
    fn deps(&self, out: &mut Vec<Dep>) {
        out.push(Dep { key: self.0.info.clone(), kind: DepKind::Req });
    }
    fn label(&self, out: &mut String) {
        out.push_str("req ");
        out.push(KEY_MARK);
    }
    fn extract(&self, env: &Env<'_>) -> Result<T, Missing> {
        env.newest(self.0.id).ok_or_else(|| Missing { key: self.0.info.clone() })
    }
}

impl<T: Clone + Send + Sync + 'static> Arg for Opt<T> {
    type Out = Option<T>;
    fn deps(&self, out: &mut Vec<Dep>) {
        out.push(Dep { key: self.0.info.clone(), kind: DepKind::Soft });
    }
    fn label(&self, out: &mut String) {
        out.push_str("opt ");
        out.push(KEY_MARK);
    }
    fn extract(&self, env: &Env<'_>) -> Result<Option<T>, Missing> {
        Ok(env.newest(self.0.id))
    }
}

impl<T: Clone + Send + Sync + 'static> Arg for Dft<T> {
    type Out = T;
    fn deps(&self, out: &mut Vec<Dep>) {
        out.push(Dep { key: self.0.info.clone(), kind: DepKind::Soft });
    }
    fn label(&self, out: &mut String) {
        out.push_str("dft ");
        out.push(KEY_MARK);
    }
    fn extract(&self, env: &Env<'_>) -> Result<T, Missing> {
        Ok(env.newest(self.0.id).unwrap_or_else(|| self.1.clone()))
    }
}

impl<T: Clone + Send + Sync + 'static> Arg for All<T> {
    type Out = Vec<T>;
    fn deps(&self, out: &mut Vec<Dep>) {
        out.push(Dep { key: self.0.info.clone(), kind: DepKind::Soft });
    }
    fn label(&self, out: &mut String) {
        out.push_str("all ");
        out.push(KEY_MARK);
    }
    fn extract(&self, env: &Env<'_>) -> Result<Vec<T>, Missing> {
        Ok(env.values(self.0.id).iter().filter_map(|s| s.value.get().downcast_ref::<T>()).cloned().collect())
    }
}

/// Every value of a key, as [`all`] gives them but without a vector for a
/// lone value (crate-internal: a `tcp://` URI with an IP address has one).
/// Its dependency and label are `all`'s: plans and reports read the same.
#[cfg(feature = "tcp")]
pub(crate) struct Few<T>(All<T>);

/// See [`Few`].
#[cfg(feature = "tcp")]
pub(crate) fn few<T: Clone + Send + Sync + 'static>(key: &Key<T>) -> Few<T> {
    Few(all(key))
}

/// The values of a [`Few`] argument, newest first.
#[cfg(feature = "tcp")]
pub(crate) enum FewValues<T> {
    One(T),
    /// None, or more than one.
    Many(Vec<T>),
}

#[cfg(feature = "tcp")]
impl<T> IntoIterator for FewValues<T> {
    type Item = T;
    type IntoIter = std::iter::Chain<std::option::IntoIter<T>, std::vec::IntoIter<T>>;
    fn into_iter(self) -> Self::IntoIter {
        let (one, many) = match self {
            FewValues::One(v) => (Some(v), Vec::new()),
            FewValues::Many(v) => (None, v),
        };
        one.into_iter().chain(many)
    }
}

#[cfg(feature = "tcp")]
impl<T> sealed::Sealed for Few<T> {}

#[cfg(feature = "tcp")]
impl<T: Clone + Send + Sync + 'static> Arg for Few<T> {
    type Out = FewValues<T>;
    fn deps(&self, out: &mut Vec<Dep>) {
        Arg::deps(&self.0, out);
    }
    fn label(&self, out: &mut String) {
        Arg::label(&self.0, out);
    }
    fn extract(&self, env: &Env<'_>) -> Result<FewValues<T>, Missing> {
        let mut values = env.values(self.0.0.id).iter().filter_map(|s| s.value.get().downcast_ref::<T>());
        Ok(match (values.next(), values.next()) {
            (None, _) => FewValues::Many(Vec::new()),
            (Some(one), None) => FewValues::One(one.clone()),
            (Some(a), Some(b)) => FewValues::Many([a, b].into_iter().chain(values).cloned().collect()),
        })
    }
}

impl<A, U, F> Arg for Map<A, F>
where
    A: Args,
    F: Fn(A::Out) -> U + Send + Sync + 'static,
{
    type Out = U;
    fn deps(&self, out: &mut Vec<Dep>) {
        self.0.deps(out);
    }
    fn label(&self, out: &mut String) {
        out.push_str("map(");
        self.0.label(out);
        out.push(')');
    }
    fn extract(&self, env: &Env<'_>) -> Result<U, Missing> {
        self.0.extract(env).map(&self.1)
    }
}

impl<A: Arg> Args for A {
    type Out = A::Out;
    fn deps(&self, out: &mut Vec<Dep>) {
        Arg::deps(self, out);
    }
    fn label(&self, out: &mut String) {
        Arg::label(self, out);
    }
    fn extract(&self, env: &Env<'_>) -> Result<A::Out, Missing> {
        Arg::extract(self, env)
    }
}

impl sealed::Sealed for () {}
impl Args for () {
    type Out = ();
    fn deps(&self, _out: &mut Vec<Dep>) {}
    fn label(&self, _out: &mut String) {}
    fn extract(&self, _env: &Env<'_>) -> Result<(), Missing> {
        Ok(())
    }
}

macro_rules! tuple_args {
    ($($name:ident $idx:tt),+) => {
        impl<$($name: Arg),+> sealed::Sealed for ($($name,)+) {}
        impl<$($name: Arg),+> Args for ($($name,)+) {
            type Out = ($($name::Out,)+);
            fn deps(&self, out: &mut Vec<Dep>) {
                $(self.$idx.deps(out);)+
            }
            fn label(&self, out: &mut String) {
                let mut first = true;
                $(
                    if !first { out.push_str(", "); }
                    first = false;
                    self.$idx.label(out);
                )+
                let _ = first;
            }
            fn extract(&self, env: &Env<'_>) -> Result<Self::Out, Missing> {
                Ok(($(self.$idx.extract(env)?,)+))
            }
        }
    };
}

tuple_args!(A 0);
tuple_args!(A 0, B 1);
tuple_args!(A 0, B 1, C 2);
tuple_args!(A 0, B 1, C 2, D 3);
tuple_args!(A 0, B 1, C 2, D 3, E 4);
tuple_args!(A 0, B 1, C 2, D 3, E 4, F 5);
tuple_args!(A 0, B 1, C 2, D 3, E 4, F 5, G 6);
tuple_args!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7);

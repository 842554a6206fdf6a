//! Typed keys (upstream's witnesses): every [`Key::new`] is a new key, never
//! equal to another even with the same name and value type.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use conflux_flow::BoxFlow;

pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// The error a protocol's connect gives, kept as is in reports.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A key's place in candidate order: protocols with a priority (lower
/// first), then those without, then every other key; on a tie the most
/// recently registered protocol first.
pub(crate) type Rank = (u8, u32, std::cmp::Reverse<u64>);

/// A type-erased value held by a context.
pub(crate) type Value = Arc<dyn Any + Send + Sync>;

/// A value by reference, whoever holds it (a context, or an unfold that computed it).
pub(crate) type AnyRef<'a> = &'a (dyn Any + Send + Sync);

/// A connect in progress, borrowing the protocol that started it: the
/// protocol's own future, boxed as it is (no async block around it, which
/// would hold it twice: as captured and as awaited).
pub(crate) type Connect<'a> = Pin<Box<dyn Connecting + Send + 'a>>;

/// A protocol's connect future, its flow boxed as it completes.
pub(crate) trait Connecting {
    /// Polls the connect; its flow comes out as a [`BoxFlow`].
    fn poll_connect(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<BoxFlow, BoxError>>;
}

impl<F: Future> Connecting for F
where
    F::Output: IntoFlow,
{
    fn poll_connect(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<BoxFlow, BoxError>> {
        self.poll(cx).map(IntoFlow::into_flow)
    }
}

impl Future for dyn Connecting + Send + '_ {
    type Output = Result<BoxFlow, BoxError>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.poll_connect(cx)
    }
}

/// A connect's outcome, with its flow boxed and its error made a [`BoxError`].
pub(crate) trait IntoFlow {
    fn into_flow(self) -> Result<BoxFlow, BoxError>;
}

impl<F: conflux_flow::Flow, E: Into<BoxError>> IntoFlow for Result<F, E> {
    fn into_flow(self) -> Result<BoxFlow, BoxError> {
        self.map(BoxFlow::new).map_err(Into::into)
    }
}

/// Key identities come from one process-wide counter so keys made by different
/// registries or threads never collide. This is an identity source, not a registry.
static NEXT_KEY: AtomicU64 = AtomicU64::new(1);

/// What every key carries, whatever its value type.
pub(crate) struct KeyInfo {
    pub(crate) id: u64,
    pub(crate) name: Arc<str>,
    /// Set for a protocol's endpoint key (made by `Registry::register`).
    pub(crate) protocol: Option<Arc<ProtocolEntry>>,
}

/// A registered protocol's connect, not generic over the protocol.
pub(crate) trait Connector: Send + Sync {
    /// Starts a connect to `endpoint` (a value of the protocol's endpoint type).
    /// The future borrows the protocol: no reference count per connect.
    fn connect<'a>(&'a self, endpoint: AnyRef<'_>) -> Connect<'a>;
}

/// A registered protocol, as endpoint keys and handles carry it.
pub(crate) struct ProtocolEntry {
    pub(crate) registry: u64,
    /// Registration sequence number: the most recent wins a priority tie.
    pub(crate) seq: u64,
    pub(crate) name: Arc<str>,
    pub(crate) priority: Option<u32>,
    pub(crate) no_fallback: bool,
    pub(crate) connect: Box<dyn Connector>,
}

impl fmt::Debug for ProtocolEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Protocol")
            .field("name", &self.name)
            .field("priority", &self.priority)
            .field("seq", &self.seq)
            .field("no_fallback", &self.no_fallback)
            .finish()
    }
}

impl ProtocolEntry {
    /// Candidate order: protocols with a priority (lower first), then those
    /// without; the most recently registered first on a tie.
    pub(crate) fn rank(&self) -> Rank {
        match self.priority {
            Some(p) => (0, p, std::cmp::Reverse(self.seq)),
            None => (1, 0, std::cmp::Reverse(self.seq)),
        }
    }

    pub(crate) fn describe(&self) -> String {
        match self.priority {
            Some(p) => format!("{} (priority {p})", self.name),
            None => format!("{} (no priority)", self.name),
        }
    }
}

impl KeyInfo {
    pub(crate) fn new(name: &str, protocol: Option<Arc<ProtocolEntry>>) -> Arc<KeyInfo> {
        Arc::new(KeyInfo { id: NEXT_KEY.fetch_add(1, Ordering::Relaxed), name: name.into(), protocol })
    }
}

impl fmt::Debug for KeyInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.name, self.id)
    }
}

/// A typed key of a [`Ctx`](crate::Ctx): upstream mimic's witness (`make ~name`).
///
/// Several keys may share a value type (a host name and a scheme are both
/// strings); two keys are equal only when one is a clone of the other, never
/// because their names match. Cloning is cheap (one reference count).
///
/// A key returned by [`Registry::register`](crate::Registry::register) is a
/// protocol's *endpoint key*: a value bound to it (plain or computed) is a
/// candidate that [`Registry::resolve`](crate::Registry::resolve) can connect to.
///
/// ```
/// use conflux_mimic::Key;
/// let host: Key<String> = Key::new("host");
/// let other: Key<String> = Key::new("host");
/// assert_ne!(host, other);
/// assert_eq!(host, host.clone());
/// assert_eq!(host.name(), "host");
/// ```
pub struct Key<T> {
    pub(crate) info: Arc<KeyInfo>,
    /// `info.id`, kept here too: reading a function's arguments while
    /// unfolding compares ids without a trip to each key's `KeyInfo`.
    pub(crate) id: u64,
    _value: PhantomData<fn() -> T>,
}

impl<T: Clone + Send + Sync + 'static> Key<T> {
    /// A new key named `name` (the name is for reports and plans only).
    pub fn new(name: &str) -> Key<T> {
        Key::from_info(KeyInfo::new(name, None))
    }
}

impl<T> Key<T> {
    pub(crate) fn from_info(info: Arc<KeyInfo>) -> Key<T> {
        Key { id: info.id, info, _value: PhantomData }
    }

    /// The name given at creation.
    pub fn name(&self) -> &str {
        &self.info.name
    }

    /// A process-unique number identifying this key (shown in reports as `name#id`).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The name of the protocol this key is the endpoint of, if it is one.
    pub fn protocol(&self) -> Option<&str> {
        self.info.protocol.as_ref().map(|p| &*p.name)
    }
}

impl<T> Clone for Key<T> {
    fn clone(&self) -> Self {
        Key { info: self.info.clone(), id: self.id, _value: PhantomData }
    }
}

impl<T> PartialEq for Key<T> {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl<T> Eq for Key<T> {}

impl<T> std::hash::Hash for Key<T> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.id.hash(state);
    }
}

impl<T> fmt::Debug for Key<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({}#{})", self.info.name, self.info.id)
    }
}

impl<T> fmt::Display for Key<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.info.name)
    }
}

//! Protocols, the explicit `Registry` that holds them, and typed handles.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use conflux_flow::{BoxFlow, Flow};

use conflux_uri::{Scheme, Uri, UriError, UriPart};

use crate::ctx::Ctx;
use crate::key::{AnyRef, BoxError, Connect, Connector, Key, KeyInfo, ProtocolEntry};
use crate::uri::FromUriError;

/// A transport the registry can connect through (upstream's
/// `Mirage_protocol.S`): from an endpoint, an async connect giving a [`Flow`].
///
/// ```
/// use conflux_flow::{FlowExt, Pipe, pipe};
/// use conflux_mimic::Protocol;
///
/// /// Connects to nothing in particular: an in-memory pipe whose peer is dropped.
/// struct Loopback;
/// impl Protocol for Loopback {
///     type Endpoint = usize;
///     type Flow = Pipe;
///     type Error = std::convert::Infallible;
///     async fn connect(&self, capacity: usize) -> Result<Pipe, Self::Error> {
///         Ok(pipe(capacity).0)
///     }
/// }
/// ```
pub trait Protocol: Send + Sync + 'static {
    /// What a context must hold (or compute) to connect: an address, a path, a config.
    type Endpoint: Clone + Send + Sync + 'static;
    /// The concrete flow a connect gives.
    type Flow: Flow;
    /// Why a connect failed.
    type Error: Into<BoxError>;
    /// Connects to `endpoint`.
    fn connect(&self, endpoint: Self::Endpoint) -> impl Future<Output = Result<Self::Flow, Self::Error>> + Send;
}

/// The types an [`FnProtocol`] is generic over, as one marker.
type Signature<E, Fl, Er, Fut> = fn(E) -> (Fl, Er, Fut);

/// A protocol made of an async function: see [`protocol_fn`].
pub struct FnProtocol<E, Fl, Er, F, Fut> {
    f: F,
    _types: PhantomData<Signature<E, Fl, Er, Fut>>,
}

impl<E, Fl, Er, F, Fut> fmt::Debug for FnProtocol<E, Fl, Er, F, Fut> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FnProtocol")
    }
}

/// A protocol whose connect is `f`.
///
/// ```
/// use conflux_flow::{FnFlow};
/// use conflux_mimic::{Registry, protocol_fn};
/// let registry = Registry::new();
/// let (endpoint, handle) = registry.register(
///     "greeting",
///     None,
///     protocol_fn(|text: String| async move { Ok::<_, std::io::Error>(FnFlow::new().with_input_chunks([text])) }),
/// );
/// # let _ = (endpoint, handle);
/// ```
pub fn protocol_fn<E, Fl, Er, F, Fut>(f: F) -> FnProtocol<E, Fl, Er, F, Fut>
where
    F: Fn(E) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Fl, Er>> + Send + 'static,
{
    FnProtocol { f, _types: PhantomData }
}

impl<E, Fl, Er, F, Fut> Protocol for FnProtocol<E, Fl, Er, F, Fut>
where
    E: Clone + Send + Sync + 'static,
    Fl: Flow,
    Er: Into<BoxError> + 'static,
    F: Fn(E) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Fl, Er>> + Send + 'static,
{
    type Endpoint = E;
    type Flow = Fl;
    type Error = Er;
    fn connect(&self, endpoint: E) -> impl Future<Output = Result<Fl, Er>> + Send {
        (self.f)(endpoint)
    }
}

/// How a protocol is registered: its priority and whether it forbids falling
/// back past it.
///
/// ```
/// use conflux_mimic::RegisterOptions;
/// let tls = RegisterOptions::new().priority(10).no_fallback();
/// # let _ = tls;
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RegisterOptions {
    priority: Option<u32>,
    no_fallback: bool,
}

impl RegisterOptions {
    /// No priority, fallback allowed.
    pub fn new() -> RegisterOptions {
        RegisterOptions::default()
    }

    /// Lower is tried first; protocols without a priority come after all with one.
    pub fn priority(mut self, priority: u32) -> RegisterOptions {
        self.priority = Some(priority);
        self
    }

    /// If every candidate of this protocol fails, resolve stops there instead of
    /// trying the candidates after it (no silent TLS-to-TCP downgrade).
    pub fn no_fallback(mut self) -> RegisterOptions {
        self.no_fallback = true;
        self
    }
}

/// Timeouts and racing of [`Registry::resolve`].
///
/// Defaults: 10 s per attempt (also bounds each asynchronous function), 30 s
/// overall, candidates tried one after the other.
///
/// ```
/// use std::time::Duration;
/// use conflux_mimic::ResolveOptions;
/// let opts = ResolveOptions::new().attempt_timeout(Duration::from_secs(2)).race(Duration::from_millis(250));
/// # let _ = opts;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResolveOptions {
    pub(crate) attempt_timeout: Duration,
    pub(crate) overall_timeout: Duration,
    pub(crate) race: Option<Duration>,
}

impl Default for ResolveOptions {
    fn default() -> Self {
        ResolveOptions {
            attempt_timeout: Duration::from_secs(10),
            overall_timeout: Duration::from_secs(30),
            race: None,
        }
    }
}

impl ResolveOptions {
    /// The defaults.
    pub fn new() -> ResolveOptions {
        ResolveOptions::default()
    }

    /// Bound on one connect attempt (and on one asynchronous function).
    pub fn attempt_timeout(mut self, timeout: Duration) -> ResolveOptions {
        self.attempt_timeout = timeout;
        self
    }

    /// Bound on the whole resolve, functions included.
    pub fn overall_timeout(mut self, timeout: Duration) -> ResolveOptions {
        self.overall_timeout = timeout;
        self
    }

    /// Staggered race (RFC 8305 style): start the next candidate after `delay`
    /// (or at once when one fails) while earlier ones are still connecting;
    /// the first success wins and the others are cancelled.
    pub fn race(mut self, delay: Duration) -> ResolveOptions {
        self.race = Some(delay);
        self
    }

    /// One candidate at a time (the default).
    pub fn sequential(mut self) -> ResolveOptions {
        self.race = None;
        self
    }
}

static NEXT_REGISTRY: AtomicU64 = AtomicU64::new(1);

struct RegistryInner {
    id: u64,
    seq: AtomicU64,
    protocols: Mutex<Vec<Arc<ProtocolEntry>>>,
    schemes: Mutex<Vec<(Scheme, SchemeFn)>>,
    listeners: Mutex<Vec<(Scheme, crate::listen::ListenFn)>>,
    options: ResolveOptions,
}

/// An explicit registry of protocols (upstream's is one global table).
///
/// Cloning shares the registry. Each registry has its own registration
/// sequence, so tests using their own registries never interfere.
/// [`resolve`](Registry::resolve) only connects through protocols registered
/// here; endpoints of another registry's protocols are plain values to it.
///
/// ```
/// use conflux_flow::{FlowExt, FnFlow};
/// use conflux_mimic::{Ctx, Registry, protocol_fn};
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// let registry = Registry::new();
/// let (greeting, handle) = registry.register(
///     "greeting",
///     Some(10),
///     protocol_fn(|text: String| async move { Ok::<_, std::io::Error>(FnFlow::new().with_input_chunks([text])) }),
/// );
/// let ctx = Ctx::new().add(&greeting, "hello".to_string());
/// let flow = registry.resolve(&ctx).await.unwrap();
/// let mut flow: FnFlow = handle.downcast(flow).unwrap();
/// assert_eq!(flow.read_to_end().await.unwrap(), b"hello");
/// # });
/// ```
#[derive(Clone)]
pub struct Registry {
    inner: Arc<RegistryInner>,
}

/// A reference to a [`Registry`] that does not keep it alive: what a
/// binding's function stored in the registry holds to reach it (a strong
/// one would keep the registry alive forever).
#[derive(Clone, Debug)]
pub struct WeakRegistry(Weak<RegistryInner>);

impl WeakRegistry {
    /// The registry, unless it was dropped.
    pub fn upgrade(&self) -> Option<Registry> {
        self.0.upgrade().map(|inner| Registry { inner })
    }
}

impl Default for Registry {
    fn default() -> Self {
        Registry::new()
    }
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let protocols = self.protocols();
        f.debug_struct("Registry")
            .field("id", &self.inner.id)
            .field("protocols", &protocols)
            .field("options", &self.inner.options)
            .finish()
    }
}

impl Registry {
    /// An empty registry with the default [`ResolveOptions`].
    pub fn new() -> Registry {
        Registry::with_options(ResolveOptions::default())
    }

    /// An empty registry resolving with `options`.
    pub fn with_options(options: ResolveOptions) -> Registry {
        Registry {
            inner: Arc::new(RegistryInner {
                id: NEXT_REGISTRY.fetch_add(1, Ordering::Relaxed),
                seq: AtomicU64::new(0),
                protocols: Mutex::new(Vec::new()),
                schemes: Mutex::new(Vec::new()),
                listeners: Mutex::new(Vec::new()),
                options,
            }),
        }
    }

    /// The options `resolve` uses.
    pub fn options(&self) -> ResolveOptions {
        self.inner.options
    }

    /// Registers `protocol` as `name` with an optional `priority` (lower is
    /// tried first; on a tie the most recently registered wins). Returns the
    /// protocol's endpoint key and a handle to inject and downcast its flows.
    pub fn register<P: Protocol>(
        &self,
        name: &str,
        priority: Option<u32>,
        protocol: P,
    ) -> (Key<P::Endpoint>, Handle<P::Flow>) {
        let mut opts = RegisterOptions::new();
        opts.priority = priority;
        self.register_with(name, opts, protocol)
    }

    /// As [`register`](Registry::register), with every option (e.g. [`RegisterOptions::no_fallback`]).
    pub fn register_with<P: Protocol>(
        &self,
        name: &str,
        options: RegisterOptions,
        protocol: P,
    ) -> (Key<P::Endpoint>, Handle<P::Flow>) {
        let entry = Arc::new(ProtocolEntry {
            registry: self.inner.id,
            seq: self.inner.seq.fetch_add(1, Ordering::Relaxed),
            name: name.into(),
            priority: options.priority,
            no_fallback: options.no_fallback,
            connect: Box::new(Connects(protocol)),
        });
        self.inner.protocols.lock().unwrap_or_else(|p| p.into_inner()).push(entry.clone());
        let key = Key::from_info(KeyInfo::new(name, Some(entry.clone())));
        (key, Handle { entry, _flow: PhantomData })
    }

    /// The registered protocols' names, in candidate order.
    pub fn protocols(&self) -> Vec<String> {
        let mut list = self.inner.protocols.lock().unwrap_or_else(|p| p.into_inner()).clone();
        list.sort_by_key(|p| p.rank());
        list.iter().map(|p| p.describe()).collect()
    }

    /// Whether `entry` belongs to this registry.
    pub(crate) fn owns(&self, entry: &ProtocolEntry) -> bool {
        entry.registry == self.inner.id
    }

    /// This registry's number (in tracing spans).
    pub(crate) fn id(&self) -> u64 {
        self.inner.id
    }

    /// Whether any protocol is registered.
    pub(crate) fn has_protocols(&self) -> bool {
        !self.inner.protocols.lock().unwrap_or_else(|p| p.into_inner()).is_empty()
    }

    /// A reference that does not keep the registry alive.
    pub fn downgrade(&self) -> WeakRegistry {
        WeakRegistry(Arc::downgrade(&self.inner))
    }
}

/// A protocol as the registry keeps it: its connect, not generic over it.
struct Connects<P>(P);

impl<P: Protocol> Connector for Connects<P> {
    fn connect<'a>(&'a self, endpoint: AnyRef<'_>) -> Connect<'a> {
        match endpoint.downcast_ref::<P::Endpoint>() {
            // The protocol's future is made here (it runs nothing before its
            // first poll), and boxed as it is.
            Some(endpoint) => Box::pin(self.0.connect(endpoint.clone())),
            None => Box::pin(std::future::ready(Err::<BoxFlow, BoxError>("endpoint value of the wrong type".into()))),
        }
    }
}

/// A registered protocol's handle (upstream's `repr` / `equal` on flows):
/// wraps a concrete flow as a [`BoxFlow`] and gets it back.
///
/// Downcasting is by flow type: a handle of another protocol fails unless both
/// protocols produce the same Rust type.
pub struct Handle<F> {
    entry: Arc<ProtocolEntry>,
    _flow: PhantomData<fn() -> F>,
}

impl<F> Clone for Handle<F> {
    fn clone(&self) -> Self {
        Handle { entry: self.entry.clone(), _flow: PhantomData }
    }
}

impl<F> fmt::Debug for Handle<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Handle").field(&self.entry.name).finish()
    }
}

impl<F: Flow> Handle<F> {
    /// The protocol's name.
    pub fn name(&self) -> &str {
        &self.entry.name
    }

    /// The protocol's priority.
    pub fn priority(&self) -> Option<u32> {
        self.entry.priority
    }

    /// Wraps a concrete flow (a server wraps an accepted socket this way).
    pub fn inject(&self, flow: F) -> BoxFlow {
        BoxFlow::new(flow)
    }

    /// The concrete flow, or the `BoxFlow` back when it is not this protocol's type.
    pub fn downcast(&self, flow: BoxFlow) -> Result<F, BoxFlow> {
        flow.downcast::<F>()
    }

    /// The concrete flow by reference.
    pub fn downcast_ref<'a>(&self, flow: &'a BoxFlow) -> Option<&'a F> {
        flow.downcast_ref::<F>()
    }

    /// True when `flow` is this protocol's flow type.
    pub fn is(&self, flow: &BoxFlow) -> bool {
        flow.is::<F>()
    }
}

/// Adds a binding's functions to a context made from a URI of its scheme, or
/// says which part of the URI it cannot use.
type SchemeFn = Arc<dyn Fn(&Uri, Ctx) -> Result<Ctx, FromUriError> + Send + Sync>;

impl Registry {
    /// Declares that `scheme` is served by a binding of this registry: `add`
    /// puts the binding's functions into contexts made from such URIs. It must
    /// refuse (with [`FromUriError::Uri`], naming it) any query parameter or
    /// modifier of the URI it does not use: a parameter is never silently ignored.
    pub fn register_scheme(
        &self,
        scheme: Scheme,
        add: impl Fn(&Uri, Ctx) -> Result<Ctx, FromUriError> + Send + Sync + 'static,
    ) {
        self.inner.schemes.lock().unwrap_or_else(|p| p.into_inner()).push((scheme, Arc::new(add)));
    }

    /// The schemes some binding of this registry serves.
    pub fn schemes(&self) -> Vec<Scheme> {
        let mut s: Vec<Scheme> =
            self.inner.schemes.lock().unwrap_or_else(|p| p.into_inner()).iter().map(|(s, _)| *s).collect();
        s.sort();
        s.dedup();
        s
    }

    /// [`Ctx::from_uri`] plus the functions of every binding registered for
    /// the URI's scheme. An error names the scheme when no binding serves it,
    /// and the query key when a binding cannot use that parameter.
    pub fn ctx_from_uri(&self, uri: &Uri) -> Result<Ctx, FromUriError> {
        let fns: Vec<SchemeFn> = self
            .inner
            .schemes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(s, _)| *s == uri.scheme())
            .map(|(_, f)| f.clone())
            .collect();
        if fns.is_empty() {
            let known: Vec<&str> = self.schemes().iter().map(|s| s.as_str()).collect();
            return Err(UriError::new(
                UriPart::Scheme,
                uri.scheme().as_str(),
                format!("no binding of this registry serves it (served: {})", known.join(", ")),
            )
            .into());
        }
        fns.iter().try_fold(Ctx::from_uri(uri), |ctx, f| f(uri, ctx))
    }
}

impl Registry {
    pub(crate) fn set_listener(&self, scheme: Scheme, f: crate::listen::ListenFn) {
        let mut l = self.inner.listeners.lock().unwrap_or_else(|p| p.into_inner());
        l.retain(|(s, _)| *s != scheme);
        l.push((scheme, f));
    }

    pub(crate) fn listener(&self, scheme: Scheme) -> Option<crate::listen::ListenFn> {
        let l = self.inner.listeners.lock().unwrap_or_else(|p| p.into_inner());
        l.iter().find(|(s, _)| *s == scheme).map(|(_, f)| f.clone())
    }

    /// The schemes this registry can [`listen`](Registry::listen) on.
    pub fn listen_schemes(&self) -> Vec<Scheme> {
        let mut s: Vec<Scheme> =
            self.inner.listeners.lock().unwrap_or_else(|p| p.into_inner()).iter().map(|(s, _)| *s).collect();
        s.sort();
        s
    }
}

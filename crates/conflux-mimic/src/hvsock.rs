//! `unix://`, `vsock://`, `fc-vsock://` and `hyperkit://` over conflux-hvsock
//! (feature `hvsock`): the raw flow by default, the shutdown framing with
//! `framing=shutdown`.

use std::fmt;
use std::io;
use std::time::Duration;

use conflux_hvsock::{
    Family, FramedFlow, FramingConfig, HybridAddr, HybridFamily, HyperkitAddr, HyperkitFamily, RawFlow, UnixAddr,
    UnixFamily,
};

use crate::{Handle, Key, Protocol, RegisterOptions, Registry, UriKeys, check_modifiers, opt, req};
use conflux_uri::{Framing, Scheme, Target, UriError, UriPart};

/// Where an hvsock connect goes: a family's address and an optional bound on
/// the connect (the family's own default otherwise).
///
/// ```
/// use std::time::Duration;
/// use conflux_hvsock::UnixAddr;
/// use conflux_mimic::HvEndpoint;
/// let e = HvEndpoint::new(UnixAddr::new("/run/app.sock")).connect_timeout(Duration::from_secs(1));
/// assert_eq!(e.timeout(), Some(Duration::from_secs(1)));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HvEndpoint<A> {
    addr: A,
    timeout: Option<Duration>,
    /// The framing's config from the context, over the binding's default.
    framing: Option<FramingConfig>,
}

impl<A> HvEndpoint<A> {
    /// `addr` with the family's default connect timeout.
    pub fn new(addr: A) -> HvEndpoint<A> {
        HvEndpoint { addr, timeout: None, framing: None }
    }

    /// Bounds the connect (and, for hybrid vsock, its handshake).
    pub fn connect_timeout(mut self, timeout: Duration) -> HvEndpoint<A> {
        self.timeout = Some(timeout);
        self
    }

    /// The address.
    pub fn addr(&self) -> &A {
        &self.addr
    }

    /// The connect timeout, if one was set.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }
}

/// The raw flow of a family (real `shutdown(2)`).
struct Raw<F>(F);

impl<F: Family> Protocol for Raw<F> {
    type Endpoint = HvEndpoint<F::Addr>;
    type Flow = RawFlow<F::Socket>;
    type Error = io::Error;
    fn connect(&self, e: Self::Endpoint) -> impl Future<Output = io::Result<Self::Flow>> + Send {
        let family = self.0.clone();
        async move { conflux_hvsock::connect(&family, &e.addr, e.timeout).await }
    }
}

/// The shutdown framing over a family's socket.
struct Framed<F> {
    family: F,
    config: FramingConfig,
}

impl<F: Family> Protocol for Framed<F> {
    type Endpoint = HvEndpoint<F::Addr>;
    type Flow = FramedFlow<F::Socket>;
    type Error = io::Error;
    fn connect(&self, e: Self::Endpoint) -> impl Future<Output = io::Result<Self::Flow>> + Send {
        let (family, config) = (self.family.clone(), e.framing.unwrap_or(self.config));
        async move { Ok(conflux_hvsock::connect(&family, &e.addr, e.timeout).await?.into_framed(config)) }
    }
}

/// The two protocols registered for one family: the raw flow and the framed
/// flow, each with its endpoint key and its handle.
pub struct HvsockProtocols<F: Family> {
    /// Endpoint key of the raw flow (the default).
    pub raw: Key<HvEndpoint<F::Addr>>,
    /// Handle of the raw flow.
    pub raw_handle: Handle<RawFlow<F::Socket>>,
    /// Endpoint key of the framed flow (`framing=shutdown`).
    pub framed: Key<HvEndpoint<F::Addr>>,
    /// Handle of the framed flow.
    pub framed_handle: Handle<FramedFlow<F::Socket>>,
}

impl<F: Family> fmt::Debug for HvsockProtocols<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HvsockProtocols").field("raw", &self.raw).field("framed", &self.framed).finish()
    }
}

/// Every hvsock protocol [`register_hvsock`] registered, by scheme.
#[derive(Debug)]
#[non_exhaustive]
pub struct Hvsock {
    /// `unix:///path` ([`UnixFamily`]).
    pub unix: HvsockProtocols<UnixFamily>,
    /// `fc-vsock:///path?port=N` ([`HybridFamily`]).
    pub fc_vsock: HvsockProtocols<HybridFamily>,
    /// `hyperkit://:port/dir` ([`HyperkitFamily`]).
    pub hyperkit: HvsockProtocols<HyperkitFamily>,
    /// `vsock://cid:port` (Linux AF_VSOCK, [`conflux_hvsock::VsockFamily`]).
    #[cfg(target_os = "linux")]
    pub vsock: HvsockProtocols<conflux_hvsock::VsockFamily>,
}

/// Registers the hvsock families and binds their schemes: `unix` (protocols
/// `unix` and `unix+framing`), `fc-vsock`, `hyperkit` and, on Linux, `vsock`.
///
/// A context made by [`Registry::ctx_from_uri`] from one of these URIs gets
/// the raw flow's endpoint, or the framed flow's when the context holds
/// [`UriKeys::framing`] (`framing=shutdown`); [`UriKeys::connect_timeout`]
/// bounds the connect. Framed flows use `framing` (close timeout, frame size).
/// Any other modifier (`keepalive=`) is an error naming it.
/// A `vsock://:port` URI (any CID) is refused (naming the host): it only makes sense for
/// listening. `hvsock://` (Windows AF_HYPERV) is not bound: this build has no
/// AF_HYPERV sockets.
///
/// Listening ([`Registry::listen`]): `unix://` binds the path, `fc-vsock://`
/// binds `<path>_<port>` (where a Firecracker VMM delivers the guest's
/// connections to that port), `hyperkit://` binds `<dir>/00000002.<port>`,
/// `vsock://` binds the CID (any when empty) and port (0 picks one). A path
/// holding a stale socket is reused, one with a live listener is `AddrInUse`,
/// one that is not a socket is never replaced; the listener removes the
/// socket it created when dropped. The listener's
/// [`local_uri`](crate::Listener::local_uri) is the `unix://` path bound
/// (`vsock://cid:port` for vsock). `framing=shutdown` frames each accepted
/// flow; any other modifier is an error naming it.
///
/// A [`FramingConfig`] in the context under [`FramingKeys::config`](crate::FramingKeys)
/// overrides `framing` for that dial or listen.
pub fn register_hvsock(registry: &Registry, options: RegisterOptions, framing: FramingConfig) -> Hvsock {
    crate::hvlisten::register_listeners(registry, framing);
    Hvsock {
        unix: register_family(registry, Scheme::Unix, UnixFamily, options, framing, |t| match t {
            Target::Unix { path } => Some(UnixAddr::new(path.clone())),
            _ => None,
        }),
        fc_vsock: register_family(registry, Scheme::FcVsock, HybridFamily, options, framing, |t| match t {
            Target::FcVsock { path, port } => Some(HybridAddr::new(path.clone(), *port)),
            _ => None,
        }),
        hyperkit: register_family(registry, Scheme::Hyperkit, HyperkitFamily, options, framing, |t| match t {
            Target::Hyperkit { port, dir } => Some(HyperkitAddr::new(dir.clone(), *port)),
            _ => None,
        }),
        #[cfg(target_os = "linux")]
        vsock: register_family(registry, Scheme::Vsock, conflux_hvsock::VsockFamily, options, framing, |t| match t {
            Target::Vsock { cid: Some(cid), port } => Some(conflux_hvsock::VsockAddr::new(*cid, *port)),
            _ => None,
        }),
    }
}

fn register_family<F: Family>(
    registry: &Registry,
    scheme: Scheme,
    family: F,
    options: RegisterOptions,
    config: FramingConfig,
    addr: fn(&Target) -> Option<F::Addr>,
) -> HvsockProtocols<F> {
    let name = scheme.as_str();
    let (raw, raw_handle) = registry.register_with(name, options, Raw(family.clone()));
    let (framed, framed_handle) =
        registry.register_with(&format!("{name}+framing"), options, Framed { family, config });
    let (raw_k, framed_k) = (raw.clone(), framed.clone());
    registry.register_scheme(scheme, move |uri, ctx| {
        check_modifiers(uri, name, &["connect_timeout", "framing"])?;
        if let Target::Vsock { cid: None, .. } = uri.target() {
            return Err(UriError::new(
                UriPart::Host,
                "",
                "any CID only makes sense for listening: name the CID to connect to",
            )
            .into());
        }
        let u = UriKeys::get();
        let cfg = &crate::FramingKeys::get().config;
        let args = || (req(&u.uri), opt(&u.connect_timeout), opt(&u.framing), opt(cfg));
        Ok(ctx
            .fold(&raw_k, args(), move |(uri, timeout, framing, _)| {
                endpoint(framing.is_none(), addr(uri.target()), timeout, None)
            })
            .fold(&framed_k, args(), move |(uri, timeout, framing, config)| {
                endpoint(framing == Some(Framing::Shutdown), addr(uri.target()), timeout, config)
            }))
    });
    HvsockProtocols { raw, raw_handle, framed, framed_handle }
}

fn endpoint<A>(
    wanted: bool,
    addr: Option<A>,
    timeout: Option<Duration>,
    framing: Option<FramingConfig>,
) -> Option<HvEndpoint<A>> {
    let e = HvEndpoint { framing, ..HvEndpoint::new(addr.filter(|_| wanted)?) };
    Some(match timeout {
        Some(t) => e.connect_timeout(t),
        None => e,
    })
}

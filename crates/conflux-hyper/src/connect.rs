//! [`Connector`]: a `tower_service::Service<http::Uri>` that dials through a
//! conflux-mimic [`Registry`], for hyper-util's pooled client.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use conflux_mimic::{Ctx, DialError, Registry};
use conflux_uri::{Uri, UriError};

use crate::HyperFlow;

/// Where a [`Connector`] sends a request whose authority it has no
/// [`route`](Connector::route) for.
#[derive(Clone)]
enum Default {
    /// Every such request to this endpoint.
    Fixed(Arc<Uri>),
    /// `http://host:port` to `tcp://host:port`, `https://host:port` to
    /// `tls://host:port` (ports 80 and 443 when the request has none), with
    /// the query appended.
    Authority { query: Arc<str> },
}

/// Dials the endpoint a request's URI maps to, through a [`Registry`]: a
/// `tower_service::Service<http::Uri>` whose connections are [`HyperFlow`]s,
/// so `hyper_util::client::legacy::Client::builder(..).build(connector)`
/// pools connections over any scheme the registry dials (`unix://`,
/// `vsock://`, `fc-vsock://`, `tcp://`, `tls://`, with `?framing=shutdown`
/// on any of them).
///
/// # How a request's URI maps to an endpoint
///
/// 1. A [`route`](Connector::route) for the request's authority
///    (`host` or `host:port`, as written in the request) wins: the
///    explicit override.
/// 2. Otherwise a connector made by [`Connector::new`] dials its one
///    endpoint, whatever the request's authority (the usual case for
///    `unix://`, `vsock://`, `fc-vsock://`: requests say
///    `http://localhost/path`).
/// 3. A connector made by [`Connector::by_authority`] dials
///    `tcp://host:port` for `http://host:port/..` and `tls://host:port` for
///    `https://` (ports 80 and 443 when the request names none), with its
///    query (`framing=shutdown`, `ca=...`) appended.
///
/// hyper-util's pool keys connections by the request's scheme and authority,
/// so requests to one authority share connections (keep-alive).
///
/// A [`Ctx`] given with [`with_ctx`](Connector::with_ctx) goes to every dial
/// ([`Registry::dial_with`]): a TLS config, a stack. With the `tls` feature,
/// a `tls://` connection whose handshake agreed on `h2` by ALPN (a TLS config
/// whose `alpn_protocols` offer it) is HTTP/2 to hyper-util's client.
#[derive(Clone)]
pub struct Connector {
    /// One shared allocation: hyper-util's client clones its connector for
    /// every request, even one a pooled connection serves.
    inner: Arc<Inner>,
}

#[derive(Clone)]
struct Inner {
    registry: Registry,
    ctx: Ctx,
    default: Default,
    routes: BTreeMap<String, Uri>,
}

impl fmt::Debug for Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let default = match &self.inner.default {
            Default::Fixed(uri) => uri.to_string(),
            Default::Authority { query } => format!("by authority, query `{query}`"),
        };
        let routes: Vec<String> = self.inner.routes.iter().map(|(a, u)| format!("{a} -> {u}")).collect();
        f.debug_struct("Connector").field("default", &default).field("routes", &routes).finish_non_exhaustive()
    }
}

impl Connector {
    /// Every request (without a [`route`](Connector::route)) goes to `endpoint`.
    pub fn new(registry: Registry, endpoint: Uri) -> Connector {
        Connector::with_default(registry, Default::Fixed(Arc::new(endpoint)))
    }

    fn with_default(registry: Registry, default: Default) -> Connector {
        Connector { inner: Arc::new(Inner { registry, ctx: Ctx::new(), default, routes: BTreeMap::new() }) }
    }

    /// Requests go to `tcp://` or `tls://` of their own authority, with
    /// `query` (without the `?`; may be empty) appended: see the mapping above.
    pub fn by_authority(registry: Registry, query: &str) -> Connector {
        Connector::with_default(registry, Default::Authority { query: query.trim_start_matches('?').into() })
    }

    /// Requests to `authority` (`host` or `host:port`, as the request writes
    /// it) go to `endpoint`, whatever the default says.
    pub fn route(mut self, authority: &str, endpoint: Uri) -> Connector {
        Arc::make_mut(&mut self.inner).routes.insert(authority.to_ascii_lowercase(), endpoint);
        self
    }

    /// Every dial also gets the values of `ctx` ([`Registry::dial_with`]).
    pub fn with_ctx(mut self, ctx: Ctx) -> Connector {
        Arc::make_mut(&mut self.inner).ctx = ctx;
        self
    }

    /// The endpoint a request to `uri` dials, as described on [`Connector`].
    pub fn endpoint(&self, uri: &http::Uri) -> Result<Uri, ConnectError> {
        let inner = &*self.inner;
        if !inner.routes.is_empty()
            && let Some(authority) = uri.authority().map(|a| a.as_str().to_ascii_lowercase())
            && let Some(endpoint) = inner.routes.get(&authority)
        {
            return Ok(endpoint.clone());
        }
        match &inner.default {
            Default::Fixed(endpoint) => Ok((**endpoint).clone()),
            Default::Authority { query } => {
                let (scheme, port) = match uri.scheme_str() {
                    Some("http") => ("tcp", 80),
                    Some("https") => ("tls", 443),
                    other => return Err(ConnectError::Scheme(other.unwrap_or_default().to_string())),
                };
                let Some(authority) = uri.authority() else { return Err(ConnectError::NoAuthority(uri.to_string())) };
                let port = authority.port_u16().unwrap_or(port);
                let mut text = format!("{scheme}://{}:{port}", authority.host());
                if !query.is_empty() {
                    text.push('?');
                    text.push_str(query);
                }
                text.parse().map_err(ConnectError::Endpoint)
            }
        }
    }
}

/// Why a [`Connector`] gave no connection.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// A by-authority connector got a request whose scheme is neither
    /// `http` nor `https`.
    #[error("request scheme `{0}`: a by-authority connector dials `http` (tcp) and `https` (tls) only")]
    Scheme(String),
    /// A by-authority connector got a request without an authority.
    #[error("request `{0}` has no authority to dial")]
    NoAuthority(String),
    /// The endpoint made of the request's authority is no URI.
    #[error("the endpoint made of the request's authority: {0}")]
    Endpoint(#[source] UriError),
    /// The registry could not connect to the endpoint.
    #[error(transparent)]
    Dial(#[from] DialError),
}

/// The future of [`Connector`]'s `call`.
pub type ConnectFuture = Pin<Box<dyn Future<Output = Result<HyperFlow, ConnectError>> + Send>>;

impl tower_service::Service<http::Uri> for Connector {
    type Response = HyperFlow;
    type Error = ConnectError;
    type Future = ConnectFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let endpoint = self.endpoint(&uri);
        let inner = Arc::clone(&self.inner);
        Box::pin(async move {
            let endpoint = endpoint?;
            let flow = inner.registry.dial_with(&endpoint, &inner.ctx).await?;
            #[cfg(feature = "tls")]
            if let Some(tls) = flow.downcast_ref::<conflux_mimic::TlsFlow>()
                && tls.alpn_protocol() == Some(b"h2")
            {
                return Ok(HyperFlow::new(flow).negotiated_h2());
            }
            Ok(HyperFlow::new(flow))
        })
    }
}

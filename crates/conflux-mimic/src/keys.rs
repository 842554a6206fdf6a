//! Well-known keys that `Ctx::from_uri` fills, and per-scheme bindings of a registry.

use std::net::IpAddr;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use crate::ctx::Ctx;
use crate::key::Key;
use crate::registry::Registry;
use conflux_uri::{Framing, Host, Keepalive, Scheme, Uri, UriError, UriPart};

/// The keys [`Ctx::from_uri`] fills (process-wide, so bindings and callers share them).
#[derive(Debug)]
pub struct UriKeys {
    /// The whole parsed URI (bindings read scheme-specific parts from it).
    pub uri: Key<Uri>,
    /// The scheme.
    pub scheme: Key<Scheme>,
    /// The host, when it is a domain name.
    pub domain: Key<String>,
    /// The host's addresses: the IP of the URI, or what a DNS function adds.
    pub ip: Key<IpAddr>,
    /// The port, with the scheme's default.
    pub port: Key<u16>,
    /// `connect_timeout=`: the bound on one connect (a value added later wins).
    pub connect_timeout: Key<Duration>,
    /// `keepalive=`: TCP keepalive for the new flow.
    pub keepalive: Key<Keepalive>,
    /// `framing=`: the hvsock shutdown framing on top of the stream.
    pub framing: Key<Framing>,
}

static KEYS: LazyLock<UriKeys> = LazyLock::new(|| UriKeys {
    uri: Key::new("uri"),
    scheme: Key::new("scheme"),
    domain: Key::new("domain"),
    ip: Key::new("ip"),
    port: Key::new("port"),
    connect_timeout: Key::new("connect_timeout"),
    keepalive: Key::new("keepalive"),
    framing: Key::new("framing"),
});

impl UriKeys {
    /// The keys.
    pub fn get() -> &'static UriKeys {
        &KEYS
    }
}

impl Ctx {
    /// A context holding what `uri` says: the URI itself, its scheme, its host
    /// as an IP address or a domain name, its port (with the scheme's
    /// default) and its modifiers (`connect_timeout`, `keepalive`, `framing`).
    /// See [`UriKeys`]; [`Registry::ctx_from_uri`] adds the functions
    /// of the bindings registered for the scheme.
    ///
    /// ```
    /// use conflux_mimic::{Ctx, UriKeys};
    /// let ctx = Ctx::from_uri(&"tls://example.test".parse().unwrap());
    /// let k = UriKeys::get();
    /// assert_eq!(ctx.get(&k.domain).map(String::as_str), Some("example.test"));
    /// assert_eq!(ctx.get(&k.port), Some(&443));
    /// ```
    pub fn from_uri(uri: &Uri) -> Ctx {
        let k = UriKeys::get();
        let mut ctx = Ctx::new().add(&k.uri, uri.clone()).add(&k.scheme, uri.scheme());
        match uri.host() {
            Some(Host::Ip(ip)) => ctx = ctx.add(&k.ip, *ip),
            Some(Host::Domain(d)) => ctx = ctx.add(&k.domain, d.clone()),
            Some(Host::Any) | None => {}
        }
        if let Some(port) = uri.port() {
            ctx = ctx.add(&k.port, port);
        }
        let o = uri.options();
        if let Some(t) = o.connect_timeout {
            ctx = ctx.add(&k.connect_timeout, t);
        }
        if let Some(ka) = o.keepalive {
            ctx = ctx.add(&k.keepalive, ka);
        }
        if let Some(f) = o.framing {
            ctx = ctx.add(&k.framing, f);
        }
        ctx
    }
}

/// Adds a binding's functions to a context made from a URI of its scheme.
pub(crate) type SchemeFn = Arc<dyn Fn(Ctx) -> Ctx + Send + Sync>;

impl Registry {
    /// Declares that `scheme` is served by a binding of this registry: `add`
    /// puts the binding's functions into contexts made from such URIs.
    pub fn register_scheme(&self, scheme: Scheme, add: impl Fn(Ctx) -> Ctx + Send + Sync + 'static) {
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
    /// the URI's scheme; an error names the scheme when no binding serves it.
    pub fn ctx_from_uri(&self, uri: &Uri) -> Result<Ctx, UriError> {
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
            ));
        }
        Ok(fns.iter().fold(Ctx::from_uri(uri), |ctx, f| f(ctx)))
    }
}

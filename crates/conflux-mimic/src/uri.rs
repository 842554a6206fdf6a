//! URIs meet contexts: the well-known keys `Ctx::from_uri` fills, and the
//! error (and check) of a binding that cannot use part of a URI.

use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;
use std::time::Duration;

use crate::ctx::Ctx;
use crate::key::Key;
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
    /// See [`UriKeys`]; [`Registry::ctx_from_uri`](crate::Registry::ctx_from_uri) adds the functions
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

/// Why [`Registry::ctx_from_uri`](crate::Registry::ctx_from_uri) could not make a context from a URI.
///
/// Display names the wrong part (the scheme, the query key, the CA file's
/// path); the underlying error, if any, is the [`source`](std::error::Error::source).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FromUriError {
    /// A part of the URI no binding here can use: a scheme no binding of the
    /// registry serves, a query parameter or modifier the binding does not use
    /// (`keepalive=` on `unix://`, [`UriError::value`] names it), or a
    /// listening URI (the registry connects).
    #[error(transparent)]
    Uri(#[from] UriError),
    /// `ca=PATH` could not be loaded: unreadable, not PEM, or no certificate in it.
    #[error("cannot load the CA file `{}`", path.display())]
    Ca {
        /// The file's path, as the URI gave it.
        path: PathBuf,
        /// What went wrong reading or parsing it.
        #[source]
        source: io::Error,
    },
    /// Another file a query parameter names (`cert=`, `key=`) could not be
    /// loaded or used: unreadable, not PEM, nothing of the right kind in it,
    /// or a key that does not fit the certificate.
    #[error("cannot load `{param}={}`", path.display())]
    File {
        /// The query key (`cert`, `key`).
        param: &'static str,
        /// The file's path, as the URI gave it.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: io::Error,
    },
}

impl FromUriError {
    /// The URI part that is wrong, if that is what this is.
    pub fn uri(&self) -> Option<&UriError> {
        match self {
            FromUriError::Uri(e) => Some(e),
            FromUriError::Ca { .. } | FromUriError::File { .. } => None,
        }
    }

    /// The CA file that could not be loaded, if that is what this is.
    pub fn ca_path(&self) -> Option<&Path> {
        match self {
            FromUriError::Ca { path, .. } => Some(path),
            FromUriError::Uri(_) | FromUriError::File { .. } => None,
        }
    }
}

/// The modifiers (query parameters every stream scheme parses) a URI carries, by name.
fn modifiers(uri: &Uri) -> [(&'static str, bool); 3] {
    let o = uri.options();
    [
        ("framing", o.framing.is_some()),
        ("connect_timeout", o.connect_timeout.is_some()),
        ("keepalive", o.keepalive.is_some()),
    ]
}

/// For a binding's [`Registry::register_listener`](crate::Registry::register_listener)
/// function: an error naming the first modifier of `uri` that the binding's
/// listener does not use (`uses` lists those it does; `connect_timeout`
/// never means anything to a listener). Listening URIs and connecting ones
/// are both accepted: a listener listens whatever the scheme's suffix.
///
/// ```
/// let uri = "tcp-listen://:0?connect_timeout=1s".parse().unwrap();
/// let err = conflux_mimic::check_listen_modifiers(&uri, "tcp", &["keepalive"]).unwrap_err();
/// assert_eq!(err.value(), "connect_timeout");
/// ```
pub fn check_listen_modifiers(uri: &Uri, binding: &str, uses: &[&str]) -> Result<(), UriError> {
    for (name, present) in modifiers(uri) {
        if present && !uses.contains(&name) {
            let used = if uses.is_empty() { "none".to_string() } else { uses.join(", ") };
            return Err(UriError::new(
                UriPart::Query,
                name,
                format!("the {binding} listener does not use it (it uses: {used})"),
            ));
        }
    }
    Ok(())
}

/// For a binding's [`Registry::register_scheme`](crate::Registry::register_scheme)
/// function: an error naming the first modifier of `uri` (`framing`,
/// `connect_timeout`, `keepalive`) that `binding` does not use (`uses` lists
/// those it does), and one refusing a listening URI (the registry connects).
///
/// ```
/// let uri = "unix:///run/app.sock?keepalive=10s,5s,3".parse().unwrap();
/// let err = conflux_mimic::check_modifiers(&uri, "unix", &["connect_timeout", "framing"]).unwrap_err();
/// assert_eq!(err.value(), "keepalive");
/// ```
pub fn check_modifiers(uri: &Uri, binding: &str, uses: &[&str]) -> Result<(), UriError> {
    if uri.listen() {
        let scheme = format!("{}-listen", uri.scheme());
        return Err(UriError::new(
            UriPart::Scheme,
            &scheme,
            "the registry connects: a listening URI cannot be resolved",
        ));
    }
    for (name, present) in modifiers(uri) {
        if present && !uses.contains(&name) {
            let used = if uses.is_empty() { "none".to_string() } else { uses.join(", ") };
            return Err(UriError::new(
                UriPart::Query,
                name,
                format!("the {binding} binding does not use it (it uses: {used})"),
            ));
        }
    }
    Ok(())
}

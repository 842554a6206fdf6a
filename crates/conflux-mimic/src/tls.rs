//! `tls://`: rustls (ring provider) over any flow (feature `tls`); its
//! listener in `listen`.

mod listen;

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll, ready};

use conflux_flow::{BoxFlow, Bytes, Flow, FlowError, FlowIo, FromTokio, Shutdown};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio_rustls::{TlsAcceptor, TlsConnector, TlsStream};

use crate::{
    Ctx, FromUriError, Handle, Key, Protocol, RegisterOptions, Registry, ResolveError, WeakRegistry, check_modifiers,
    opt, req,
};
use conflux_uri::{Host, Scheme, Target, Uri, UriError, UriPart};

/// The context keys TLS reads: the client config and an optional server name
/// (which overrides `?sni=` and the URI's host).
#[derive(Debug)]
pub struct TlsKeys {
    /// The rustls client configuration (roots, ALPN...).
    pub config: Key<Arc<ClientConfig>>,
    /// The server name to present and verify.
    pub server_name: Key<String>,
}

static TLS_KEYS: LazyLock<TlsKeys> =
    LazyLock::new(|| TlsKeys { config: Key::new("tls.config"), server_name: Key::new("tls.server_name") });

impl TlsKeys {
    /// The keys.
    pub fn get() -> &'static TlsKeys {
        &TLS_KEYS
    }
}

/// Where a TLS connect goes: a config, a server name, and the context of the
/// lower flow (resolved through the same registry when connecting).
#[derive(Clone)]
pub struct TlsEndpoint {
    config: Arc<ClientConfig>,
    server_name: ServerName<'static>,
    over: Ctx,
}

impl TlsEndpoint {
    /// An endpoint; `None` when `server_name` is neither a DNS name nor an IP address.
    pub fn new(config: Arc<ClientConfig>, server_name: &str, over: Ctx) -> Option<TlsEndpoint> {
        let server_name = ServerName::try_from(server_name.to_string()).ok()?;
        Some(TlsEndpoint { config, server_name, over })
    }

    /// The server name presented and verified.
    pub fn server_name(&self) -> String {
        self.server_name.to_str().into_owned()
    }

    /// The context the lower flow is resolved from.
    pub fn over(&self) -> &Ctx {
        &self.over
    }
}

impl fmt::Debug for TlsEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsEndpoint").field("server_name", &self.server_name).field("over", &self.over).finish()
    }
}

/// Why a TLS connect failed.
///
/// Display says which step failed; the underlying error is the
/// [`source`](std::error::Error::source), never repeated in Display (so
/// anyhow or eyre print each message once).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsConnectError {
    /// The lower flow could not be resolved.
    #[error("the flow under TLS could not be resolved")]
    Lower(#[source] ResolveError),
    /// The handshake failed.
    #[error("TLS handshake failed")]
    Handshake(#[source] io::Error),
    /// The registry was dropped.
    #[error("the registry is gone")]
    RegistryGone,
}

/// A TLS session over a lower flow, client or server side. A layered flow
/// (flow spec G5): it closes the lower flow once the session is fully shut
/// down (our close_notify sent and the peer's read), and on close (after
/// sending close_notify and the lower flow's `shutdown(Write)`).
///
/// - `shutdown(Write)` sends close_notify, then shuts the lower flow's write
///   side; the peer reads Eof and may keep writing (TLS half-close).
/// - `shutdown(Read)` is local (TLS has no read shutdown on the wire).
/// - `abort` aborts the lower flow (a TCP reset) without close_notify.
/// - Dropping it drops the lower flow (whose own drop rules apply).
pub struct TlsFlow {
    inner: FromTokio<TlsStream<FlowIo<BoxFlow>>>,
    /// Our close_notify went out (`shutdown(Write)` completed).
    sent_close: bool,
    /// A read gave Eof that the peer sent (not our own `shutdown(Read)`).
    got_close: bool,
    read_shut: bool,
    lower_closed: bool,
}

impl fmt::Debug for TlsFlow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsFlow")
            .field("sent_close_notify", &self.sent_close)
            .field("got_close_notify", &self.got_close)
            .field("lower_closed", &self.lower_closed)
            .finish_non_exhaustive()
    }
}

impl TlsFlow {
    fn new(stream: TlsStream<FlowIo<BoxFlow>>) -> TlsFlow {
        TlsFlow {
            inner: FromTokio::new(stream),
            sent_close: false,
            got_close: false,
            read_shut: false,
            lower_closed: false,
        }
    }

    /// Runs the client handshake over `lower`, presenting and verifying `server_name`.
    pub async fn connect(
        config: Arc<ClientConfig>,
        server_name: ServerName<'static>,
        lower: impl Flow,
    ) -> io::Result<TlsFlow> {
        let stream = TlsConnector::from(config).connect(server_name, FlowIo::new(BoxFlow::new(lower))).await?;
        Ok(TlsFlow::new(stream.into()))
    }

    /// Runs the server handshake over `lower` (a server wraps accepted flows this way).
    pub async fn accept(config: Arc<ServerConfig>, lower: impl Flow) -> io::Result<TlsFlow> {
        let stream = TlsAcceptor::from(config).accept(FlowIo::new(BoxFlow::new(lower))).await?;
        Ok(TlsFlow::new(stream.into()))
    }

    /// The flow under TLS, until this flow is closed or aborted.
    pub fn lower(&self) -> Option<&BoxFlow> {
        self.inner.get_ref().map(|tls| tls.get_ref().0.get_ref())
    }

    /// The application protocol the handshake agreed on by ALPN (`h2`,
    /// `http/1.1`...), if any; `None` once the flow is closed.
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        self.inner.get_ref().and_then(|tls| tls.get_ref().1.alpn_protocol())
    }

    /// Whether the lower flow was closed (the session fully shut down, or closed).
    pub fn is_lower_closed(&self) -> bool {
        self.lower_closed
    }

    fn lower_mut(&mut self) -> Option<&mut BoxFlow> {
        self.inner.get_mut().map(|tls| tls.get_mut().0.get_mut())
    }

    /// Closes the lower flow once; errors are traced, the flow ends closed either way.
    fn poll_close_lower(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.lower_closed {
            return Poll::Ready(());
        }
        if let Some(lower) = self.lower_mut()
            && let Err(e) = ready!(lower.poll_close(cx))
        {
            tracing::trace!(error = %e, "closing the flow under TLS failed");
        }
        self.lower_closed = true;
        Poll::Ready(())
    }

    /// Both close_notify alerts crossed: nothing more can flow, release the lower flow.
    /// A lower close that has to wait (a framing waiting for its peer) finishes in `close`.
    fn close_lower_if_done(&mut self, cx: &mut Context<'_>) {
        if self.sent_close && self.got_close {
            let _ = self.poll_close_lower(cx);
        }
    }
}

impl Flow for TlsFlow {
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, FlowError>> {
        let r = ready!(self.inner.poll_read(cx));
        if matches!(r, Ok(None)) && !self.read_shut && !self.got_close {
            self.got_close = true;
            self.close_lower_if_done(cx);
        }
        Poll::Ready(r)
    }
    /// Straight into `buf` (rustls's plaintext copied once, no chunk).
    fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
        rest: &mut Bytes,
    ) -> Poll<Result<(), FlowError>> {
        let (room, before) = (buf.remaining(), buf.filled().len());
        let r = ready!(self.inner.poll_read_into(cx, buf, rest));
        let eof = r.is_ok() && room > 0 && buf.filled().len() == before && rest.is_empty();
        if eof && !self.read_shut && !self.got_close {
            self.got_close = true;
            self.close_lower_if_done(cx);
        }
        Poll::Ready(r)
    }
    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &mut Bytes) -> Poll<Result<(), FlowError>> {
        self.inner.poll_write(cx, buf)
    }
    fn poll_writev(&mut self, cx: &mut Context<'_>, bufs: &mut [Bytes]) -> Poll<Result<(), FlowError>> {
        self.inner.poll_writev(cx, bufs)
    }
    fn poll_write_borrowed(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<Result<usize, FlowError>> {
        self.inner.poll_write_borrowed(cx, bufs)
    }
    fn is_write_borrowed(&self) -> bool {
        self.inner.is_write_borrowed()
    }
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), FlowError>> {
        self.inner.poll_flush(cx)
    }
    fn poll_shutdown(&mut self, cx: &mut Context<'_>, how: Shutdown) -> Poll<Result<(), FlowError>> {
        let r = ready!(self.inner.poll_shutdown(cx, how));
        if how.reads() {
            self.read_shut = true;
        }
        if how.writes() && r.is_ok() && !self.sent_close {
            self.sent_close = true;
            self.close_lower_if_done(cx);
        }
        Poll::Ready(r)
    }
    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), FlowError>> {
        // close_notify and the lower flow's shutdown(Write); a failure still ends in a closed flow.
        if !self.sent_close && !self.lower_closed {
            if let Err(e) = ready!(self.inner.poll_shutdown(cx, Shutdown::Write)) {
                tracing::trace!(error = %e, "TLS shutdown during close failed");
            }
            self.sent_close = true;
        }
        ready!(self.poll_close_lower(cx));
        self.inner.poll_close(cx)
    }
    fn poll_abort(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), FlowError>> {
        if !self.lower_closed {
            if let Some(lower) = self.lower_mut() {
                let _ = ready!(lower.poll_abort(cx));
            }
            self.lower_closed = true;
        }
        self.inner.poll_abort(cx)
    }
}

/// The TLS protocol: resolves the endpoint's lower context through its
/// registry, then runs the rustls handshake over that flow.
struct Tls {
    registry: WeakRegistry,
}

impl Protocol for Tls {
    type Endpoint = TlsEndpoint;
    type Flow = TlsFlow;
    type Error = TlsConnectError;
    async fn connect(&self, edn: TlsEndpoint) -> Result<TlsFlow, TlsConnectError> {
        let registry = self.registry.upgrade().ok_or(TlsConnectError::RegistryGone)?;
        let lower = registry.resolve(&edn.over).await.map_err(TlsConnectError::Lower)?;
        TlsFlow::connect(edn.config, edn.server_name, lower).await.map_err(TlsConnectError::Handshake)
    }
}

/// Registers TLS as `tls` and binds the `tls` scheme. With
/// `RegisterOptions::new().priority(10).no_fallback()` a failed TLS connect
/// never falls back to a plain candidate.
///
/// A `tls://host:port` context gets an endpoint from [`TlsKeys::config`],
/// the server name (the key, `?sni=`, or the host) and the context of
/// `tcp://host:port` (or of `?over=URI`), made by this registry when the
/// context is: the URI's modifiers (`connect_timeout=`, `keepalive=`,
/// `framing=`) apply to that stream under TLS, and its binding refuses those
/// it does not use.
///
/// `?alpn=h2,http/1.1` makes the client offer those protocols by ALPN
/// (whichever config it uses, the caller's too); [`TlsFlow::alpn_protocol`]
/// says which one the handshake agreed on.
///
/// Roots: `?ca=PATH` (PEM, one or more certificates) is loaded when the
/// context is made, into a config trusting exactly those roots (plus the
/// webpki roots with the `tls-webpki-roots` feature); an unreadable file, or
/// one without a certificate, is a [`FromUriError::Ca`] naming the path.
/// Without `ca=`, the `tls-webpki-roots` feature adds a config trusting the
/// webpki roots; otherwise the caller adds one. A config the caller adds to
/// the context afterwards is newer and wins.
pub fn register_tls(registry: &Registry, options: RegisterOptions) -> (Key<TlsEndpoint>, Handle<TlsFlow>) {
    let (key, handle) = registry.register_with("tls", options, Tls { registry: registry.downgrade() });
    let weak = registry.downgrade();
    let k = key.clone();
    let w = weak.clone();
    registry.register_scheme(Scheme::Tls, move |uri, ctx| tls_endpoints(uri, ctx, &k, &w));
    registry.register_listener(Scheme::Tls, move |uri, ctx| {
        Box::pin(listen::listen(weak.clone(), uri.clone(), ctx.clone()))
    });
    (key, handle)
}

fn tls_endpoints(uri: &Uri, ctx: Ctx, key: &Key<TlsEndpoint>, registry: &WeakRegistry) -> Result<Ctx, FromUriError> {
    let t = TlsKeys::get();
    check_modifiers(uri, "tls", &["connect_timeout", "keepalive", "framing"])?;
    let Target::Tls { host, port, sni, ca, cert, key: cert_key, alpn, over } = uri.target() else { return Ok(ctx) };
    let client_cert = match (cert, cert_key) {
        (Some(c), Some(k)) => Some((c.as_path(), k.as_path())),
        (None, None) => None,
        (Some(_), None) => return Err(missing("key", "`cert=` needs the private key of that certificate").into()),
        (None, Some(_)) => return Err(missing("cert", "`key=` needs the certificate it belongs to").into()),
    };
    // The modifiers belong to the stream under TLS; those `over=` sets itself win.
    let lower = lower_uri(uri, host, *port, over.as_deref());
    let registry = registry.upgrade().ok_or_else(|| UriError::new(UriPart::Scheme, "tls", "the registry is gone"))?;
    let over = registry.ctx_from_uri(&lower)?;
    let mut ctx = ctx;
    let config = match (ca, client_cert) {
        (Some(path), cc) => Some(client_config(load_roots(path)?, cc)?),
        (None, Some(cc)) => Some(client_config(default_roots(), Some(cc))?),
        (None, None) => default_config(),
    };
    let alpn: Vec<Vec<u8>> = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    let config = config.map(|c| with_alpn(c, &alpn));
    if let Some(config) = config {
        ctx = ctx.add(&t.config, config);
    }
    let default_name = sni.clone().or_else(|| match host {
        Host::Domain(d) => Some(d.clone()),
        Host::Ip(ip) => Some(ip.to_string()),
        Host::Any => None,
    });
    Ok(ctx.fold(key, (req(&t.config), opt(&t.server_name)), move |(config, name)| {
        TlsEndpoint::new(with_alpn(config, &alpn), &name.or_else(|| default_name.clone())?, over.clone())
    }))
}

/// `config` offering the protocols of `alpn=` (a copy, unless it offers
/// them already or the URI names none: then the caller's config as it is).
fn with_alpn(config: Arc<ClientConfig>, alpn: &[Vec<u8>]) -> Arc<ClientConfig> {
    if alpn.is_empty() || config.alpn_protocols == alpn {
        return config;
    }
    let mut config = (*config).clone();
    config.alpn_protocols = alpn.to_vec();
    Arc::new(config)
}

fn missing(param: &str, why: &str) -> UriError {
    UriError::new(UriPart::Query, param, format!("missing: {why}"))
}

/// The URI of the stream under TLS: `over=` (with the outer modifiers it
/// does not set itself), or `tcp://host:port` with the outer modifiers.
fn lower_uri(uri: &Uri, host: &Host, port: Option<u16>, over: Option<&Uri>) -> Uri {
    let outer = uri.options();
    match over {
        Some(o) => {
            let mut opts = *o.options();
            opts.framing = opts.framing.or(outer.framing);
            opts.connect_timeout = opts.connect_timeout.or(outer.connect_timeout);
            opts.keepalive = opts.keepalive.or(outer.keepalive);
            o.clone().with_options(opts)
        }
        None => Uri::new(Target::Tcp { host: host.clone(), port: port.unwrap_or(443) }).with_options(*outer),
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client config (ring provider, safe default versions) trusting `roots`,
/// presenting the certificate and key of `client_cert` when given.
fn client_config(roots: RootCertStore, client_cert: Option<(&Path, &Path)>) -> Result<Arc<ClientConfig>, FromUriError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports the default protocol versions")
        .with_root_certificates(roots);
    let config = match client_cert {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let file = |param: &'static str, path: &Path| {
                let path = path.to_path_buf();
                move |source| FromUriError::File { param, path, source }
            };
            let chain = load_certs(cert).map_err(file("cert", cert))?;
            let private = load_key(key).map_err(file("key", key))?;
            builder.with_client_auth_cert(chain, private).map_err(|e| file("key", key)(invalid(e)))?
        }
    };
    Ok(Arc::new(config))
}

fn invalid(e: impl ToString) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

/// The roots of a config made without `ca=`: the webpki roots with the
/// `tls-webpki-roots` feature, none otherwise.
fn default_roots() -> RootCertStore {
    #[cfg(feature = "tls-webpki-roots")]
    return webpki_roots();
    #[cfg(not(feature = "tls-webpki-roots"))]
    RootCertStore::empty()
}

/// The config a `tls://` URI without `ca=` gets: one trusting the webpki roots
/// with the `tls-webpki-roots` feature, none otherwise (the caller adds one).
fn default_config() -> Option<Arc<ClientConfig>> {
    #[cfg(feature = "tls-webpki-roots")]
    return client_config(webpki_roots(), None).ok();
    #[cfg(not(feature = "tls-webpki-roots"))]
    None
}

#[cfg(feature = "tls-webpki-roots")]
fn webpki_roots() -> RootCertStore {
    RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() }
}

fn pem_error(e: rustls::pki_types::pem::Error) -> io::Error {
    match e {
        rustls::pki_types::pem::Error::Io(e) => e,
        e => invalid(e),
    }
}

/// The certificates of the PEM file at `path`, at least one.
fn load_certs(path: &Path) -> io::Result<Vec<rustls::pki_types::CertificateDer<'static>>> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let certs =
        CertificateDer::pem_file_iter(path).map_err(pem_error)?.collect::<Result<Vec<_>, _>>().map_err(pem_error)?;
    if certs.is_empty() {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "no CERTIFICATE section in it"));
    }
    Ok(certs)
}

/// The private key of the PEM file at `path` (PKCS#8, PKCS#1 or SEC1).
fn load_key(path: &Path) -> io::Result<rustls::pki_types::PrivateKeyDer<'static>> {
    use rustls::pki_types::PrivateKeyDer;
    use rustls::pki_types::pem::PemObject;
    PrivateKeyDer::from_pem_file(path).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => {
            io::Error::new(io::ErrorKind::InvalidData, "no PRIVATE KEY section in it")
        }
        e => pem_error(e),
    })
}

/// The certificates of the PEM file at `path` (and the webpki roots with the
/// `tls-webpki-roots` feature).
fn load_roots(path: &Path) -> Result<RootCertStore, FromUriError> {
    let fail = |source: io::Error| FromUriError::Ca { path: path.to_path_buf(), source };
    let certs = load_certs(path).map_err(fail)?;
    let mut roots = default_roots();
    for cert in certs {
        roots.add(cert).map_err(|e| fail(invalid(e)))?;
    }
    Ok(roots)
}

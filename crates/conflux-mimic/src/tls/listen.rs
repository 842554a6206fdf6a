//! The listen side of `tls://`: the stream of another listener, each
//! accepted flow after its server handshake.

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use conflux_flow::BoxFlow;
use conflux_uri::{Host, Target, Uri, UriError, UriPart};
use futures_core::Stream;
use rustls::{RootCertStore, ServerConfig};

use super::{TlsFlow, invalid, load_certs, load_key, lower_uri, missing, provider};
use crate::{Accepted, Ctx, ListenError, Listener, WeakRegistry, check_listen_modifiers};

/// How long a client may take over its handshake before it is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How many handshakes run at once; the lower listener waits beyond.
const MAX_HANDSHAKES: usize = 64;

pub(super) async fn listen(registry: WeakRegistry, uri: Uri, ctx: Ctx) -> Result<Listener, ListenError> {
    check_listen_modifiers(&uri, "tls", &["keepalive", "framing"])?;
    let Target::Tls { host, port, sni, ca, cert, key, alpn, over } = uri.target() else {
        return Err(
            UriError::new(UriPart::Scheme, uri.scheme().as_str(), "the tls listener listens on tls only").into()
        );
    };
    if sni.is_some() {
        return Err(UriError::new(
            UriPart::Query,
            "sni",
            "a listener does not use it (`sni=` names the server to a client)",
        )
        .into());
    }
    let cert = cert.as_deref().ok_or_else(|| missing("cert", "a TLS listener needs `cert=PATH` (PEM)"))?;
    let key = key.as_deref().ok_or_else(|| missing("key", "a TLS listener needs `key=PATH` (PEM)"))?;
    let config = server_config(cert, key, ca.as_deref(), alpn)?;
    let lower = lower_uri(&uri, host, *port, over.as_deref());
    let registry = registry.upgrade().ok_or_else(|| UriError::new(UriPart::Scheme, "tls", "the registry is gone"))?;
    let inner = registry.listen_with(&lower, &ctx).await?;
    let local = match (over, inner.local_uri().target()) {
        (None, Target::Tcp { host, port }) => Target::Tls {
            host: host.clone(),
            port: Some(*port),
            sni: None,
            ca: None,
            cert: None,
            key: None,
            alpn: alpn.clone(),
            over: None,
        },
        _ => Target::Tls {
            host: match host {
                Host::Any => Host::Ip(std::net::Ipv4Addr::LOCALHOST.into()),
                h => h.clone(),
            },
            port: *port,
            sni: None,
            ca: None,
            cert: None,
            key: None,
            alpn: alpn.clone(),
            over: Some(Box::new(inner.local_uri().clone())),
        },
    };
    let local = Uri::new(local).with_options(if over.is_some() { Default::default() } else { *uri.options() });
    Ok(Listener::new(local, TlsAccepts { inner, config, handshakes: Vec::new(), inner_done: false }))
}

/// The server config of a listener: its certificate chain and key, the
/// clients' roots when `ca=` requires client certificates, the protocols of
/// `alpn=` (rustls picks the first of them the client offers).
fn server_config(
    cert: &Path,
    key: &Path,
    ca: Option<&Path>,
    alpn: &[String],
) -> Result<Arc<ServerConfig>, ListenError> {
    let file = |param: &str, path: &Path| {
        let what = format!("`{param}={}`", path.display());
        move |e| ListenError::io(&what, e)
    };
    let chain = load_certs(cert).map_err(file("cert", cert))?;
    let private = load_key(key).map_err(file("key", key))?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports the default protocol versions");
    let builder = match ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for c in load_certs(ca).map_err(file("ca", ca))? {
                roots.add(c).map_err(|e| file("ca", ca)(invalid(e)))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| file("ca", ca)(invalid(e)))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(chain, private).map_err(|e| file("key", key)(invalid(e)))?;
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Ok(Arc::new(config))
}

type Handshake = Pin<Box<dyn Future<Output = (String, io::Result<TlsFlow>)> + Send>>;

/// The accepted flows of a TLS listener: the lower listener's flows, each
/// after its handshake. Handshakes run side by side (a slow client holds up
/// nobody); one that fails or times out is logged and dropped.
struct TlsAccepts {
    inner: Listener,
    config: Arc<ServerConfig>,
    handshakes: Vec<Handshake>,
    inner_done: bool,
}

impl Stream for TlsAccepts {
    type Item = io::Result<Accepted>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        while !this.inner_done && this.handshakes.len() < MAX_HANDSHAKES {
            match Pin::new(&mut this.inner).poll_next(cx) {
                Poll::Ready(Some(Ok(Accepted { flow, peer }))) => {
                    let config = this.config.clone();
                    this.handshakes.push(Box::pin(async move {
                        let r = match tokio::time::timeout(HANDSHAKE_TIMEOUT, TlsFlow::accept(config, flow)).await {
                            Ok(r) => r,
                            Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out")),
                        };
                        (peer, r)
                    }));
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => this.inner_done = true,
                Poll::Pending => break,
            }
        }
        let mut i = 0;
        while i < this.handshakes.len() {
            if let Poll::Ready((peer, r)) = this.handshakes[i].as_mut().poll(cx) {
                drop(this.handshakes.swap_remove(i));
                match r {
                    Ok(flow) => return Poll::Ready(Some(Ok(Accepted { flow: BoxFlow::new(flow), peer }))),
                    Err(e) => tracing::debug!(%peer, error = %e, "TLS handshake failed; flow dropped"),
                }
            } else {
                i += 1;
            }
        }
        if this.inner_done && this.handshakes.is_empty() { Poll::Ready(None) } else { Poll::Pending }
    }
}

//! The listen side of the hvsock schemes (feature `hvsock`): `unix`,
//! `fc-vsock` (the `<path>_<port>` socket a Firecracker VMM connects to for
//! guest-initiated connections), `hyperkit` (`<dir>/00000002.<port>`) and,
//! on Linux, `vsock`. Raw flows, or framed with `framing=shutdown`.
//!
//! A socket path is claimed before binding: nothing there, or a stale
//! socket (nobody accepts on it), which is removed; a live socket is
//! `AddrInUse`, and anything that is not a socket is never replaced. The
//! path is removed when the listener is dropped, if it is still the socket
//! this listener created.

use std::future::Future;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use conflux_flow::BoxFlow;
use conflux_hvsock::{
    Family, FamilyListener, FramingConfig, HybridAddr, HybridFamily, HyperkitAddr, HyperkitFamily, RawFlow, UnixAddr,
    UnixFamily,
};
use conflux_uri::{Scheme, Target, Uri, UriError, UriPart};
use futures_core::Stream;

use crate::{Accepted, ListenError, Listener, Registry, check_listen_modifiers};

/// The backlog of every listener here.
const BACKLOG: u32 = 128;

/// How long the probe of an existing socket path waits for an answer.
const PROBE_TIMEOUT: Duration = Duration::from_millis(300);

/// Registers the listeners of the hvsock schemes; `framing` is the framing's
/// config when the context has none under [`FramingKeys::config`].
pub(crate) fn register_listeners(registry: &Registry, framing: FramingConfig) {
    registry.register_listener(Scheme::Unix, move |uri, ctx| {
        let (uri, ctx) = (uri.clone(), ctx.clone());
        Box::pin(async move {
            check_listen_modifiers(&uri, "unix", &["framing"])?;
            let Target::Unix { path } = uri.target() else { return Err(not_mine(&uri, "unix")) };
            let guard = SocketPath::claim(path).await?;
            let l = UnixFamily.listen(&UnixAddr::new(path), BACKLOG).map_err(|e| ListenError::io(path.display(), e))?;
            let local = Uri::new(Target::Unix { path: path.clone() }).with_options(*uri.options());
            Ok(accepting(l, local, framing_of(&uri, &ctx, framing), Some(guard.bound())))
        })
    });
    registry.register_listener(Scheme::FcVsock, move |uri, ctx| {
        let (uri, ctx) = (uri.clone(), ctx.clone());
        Box::pin(async move {
            check_listen_modifiers(&uri, "fc-vsock", &["framing"])?;
            let Target::FcVsock { path, port } = uri.target() else { return Err(not_mine(&uri, "fc-vsock")) };
            let addr = HybridAddr::new(path.clone(), *port);
            let at = addr.listen_path();
            let guard = SocketPath::claim(&at).await?;
            let l = HybridFamily.listen(&addr, BACKLOG).map_err(|e| ListenError::io(at.display(), e))?;
            let local = Uri::new(Target::Unix { path: at.clone() }).with_options(*uri.options());
            Ok(accepting(l, local, framing_of(&uri, &ctx, framing), Some(guard.bound())))
        })
    });
    registry.register_listener(Scheme::Hyperkit, move |uri, ctx| {
        let (uri, ctx) = (uri.clone(), ctx.clone());
        Box::pin(async move {
            check_listen_modifiers(&uri, "hyperkit", &["framing"])?;
            let Target::Hyperkit { port, dir } = uri.target() else { return Err(not_mine(&uri, "hyperkit")) };
            let addr = HyperkitAddr::new(dir.clone(), *port);
            let at = addr.listen_path();
            let guard = SocketPath::claim(&at).await?;
            let l = HyperkitFamily.listen(&addr, BACKLOG).map_err(|e| ListenError::io(at.display(), e))?;
            let local = Uri::new(Target::Unix { path: at.clone() }).with_options(*uri.options());
            Ok(accepting(l, local, framing_of(&uri, &ctx, framing), Some(guard.bound())))
        })
    });
    #[cfg(target_os = "linux")]
    registry.register_listener(Scheme::Vsock, move |uri, ctx| {
        let (uri, ctx) = (uri.clone(), ctx.clone());
        Box::pin(async move {
            use conflux_hvsock::{VsockAddr, VsockFamily};
            check_listen_modifiers(&uri, "vsock", &["framing"])?;
            let Target::Vsock { cid, port } = uri.target() else { return Err(not_mine(&uri, "vsock")) };
            // Port 0 picks one, as it does for TCP.
            let port = if *port == 0 { VsockAddr::PORT_ANY } else { *port };
            let addr = VsockAddr::new(cid.unwrap_or(VsockAddr::CID_ANY), port);
            let l = VsockFamily.listen(&addr, BACKLOG).map_err(|e| ListenError::io(addr, e))?;
            let bound = l.local_addr().map_err(|e| ListenError::io(addr, e))?;
            // Any CID: clients reach this machine's own CID.
            let cid = match bound.cid {
                VsockAddr::CID_ANY => conflux_hvsock::local_cid().ok(),
                c => Some(c),
            };
            let local = Uri::new(Target::Vsock { cid, port: bound.port }).with_options(*uri.options());
            Ok(accepting(l, local, framing_of(&uri, &ctx, framing), None))
        })
    });
}

fn not_mine(uri: &Uri, scheme: &str) -> ListenError {
    UriError::new(UriPart::Scheme, uri.scheme().as_str(), format!("the {scheme} listener listens on {scheme} only"))
        .into()
}

use crate::framing::framing_of;

/// What an accept loop owns: the family's listener, the framing, the path's guard.
struct Accepting<L> {
    listener: L,
    framing: Option<FramingConfig>,
    _path: Option<SocketPath>,
}

fn accepting<L: FamilyListener>(
    listener: L,
    local: Uri,
    framing: Option<FramingConfig>,
    path: Option<SocketPath>,
) -> Listener {
    let state = Accepting { listener, framing, _path: path };
    Listener::new(
        local,
        AcceptLoop::new(state, |st: Arc<Accepting<L>>| async move {
            Some(st.listener.accept().await.map(|(sock, peer)| {
                let raw = RawFlow::new(sock);
                let flow = match st.framing {
                    Some(config) => BoxFlow::new(raw.into_framed(config)),
                    None => BoxFlow::new(raw),
                };
                Accepted { flow, peer: peer.to_string() }
            }))
        }),
    )
}

/// A socket path this listener claimed; removed on drop if it is still the
/// socket bound there (same device and inode).
struct SocketPath {
    path: PathBuf,
    id: Option<(u64, u64)>,
}

impl SocketPath {
    /// Makes `path` free for binding: nothing there, or a stale socket (removed).
    async fn claim(path: &Path) -> Result<SocketPath, ListenError> {
        let fail = |e: io::Error| ListenError::io(path.display(), e);
        match std::fs::symlink_metadata(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(fail(e)),
            Ok(m) if m.file_type().is_socket() => {
                match tokio::time::timeout(PROBE_TIMEOUT, tokio::net::UnixStream::connect(path)).await {
                    Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
                        tracing::debug!(path = %path.display(), "removing a stale socket");
                        std::fs::remove_file(path).map_err(fail)?;
                    }
                    Ok(Err(e)) => return Err(fail(e)),
                    Ok(Ok(_)) | Err(_) => {
                        return Err(fail(io::Error::new(io::ErrorKind::AddrInUse, "a listener is there already")));
                    }
                }
            }
            Ok(_) => {
                return Err(fail(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "it exists and is not a socket (never replaced)",
                )));
            }
        }
        Ok(SocketPath { path: path.to_path_buf(), id: None })
    }

    /// Records the socket just bound at the path, which drop then removes.
    fn bound(mut self) -> SocketPath {
        self.id = std::fs::symlink_metadata(&self.path).ok().map(|m| (m.dev(), m.ino()));
        self
    }
}

impl Drop for SocketPath {
    fn drop(&mut self) {
        if let Some(id) = self.id
            && std::fs::symlink_metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == id)
        {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

type NextAccept = Pin<Box<dyn Future<Output = Option<io::Result<Accepted>>> + Send>>;

/// A stream of accepted flows made of an async accept function: each poll
/// without a pending accept starts `next(state)`; `None` from it ends the stream.
/// What the listener owns (a socket, a guard) lives in `state`.
pub(crate) struct AcceptLoop<S, F> {
    state: Arc<S>,
    next: F,
    pending: Option<NextAccept>,
}

impl<S, F, Fut> AcceptLoop<S, F>
where
    S: Send + Sync + 'static,
    F: Fn(Arc<S>) -> Fut + Send + Unpin + 'static,
    Fut: Future<Output = Option<io::Result<Accepted>>> + Send + 'static,
{
    pub(crate) fn new(state: S, next: F) -> AcceptLoop<S, F> {
        AcceptLoop { state: Arc::new(state), next, pending: None }
    }
}

impl<S, F, Fut> Stream for AcceptLoop<S, F>
where
    S: Send + Sync + 'static,
    F: Fn(Arc<S>) -> Fut + Send + Unpin + 'static,
    Fut: Future<Output = Option<io::Result<Accepted>>> + Send + 'static,
{
    type Item = io::Result<Accepted>;
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let fut = this.pending.get_or_insert_with(|| Box::pin((this.next)(this.state.clone())));
        let item = std::task::ready!(fut.as_mut().poll(cx));
        this.pending = None;
        Poll::Ready(item)
    }
}

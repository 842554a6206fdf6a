//! Listening by URI: the accept side of every binding.
//!
//! A binding declares, per scheme, how to listen ([`Registry::register_listener`](crate::Registry::register_listener));
//! [`Registry::listen`](crate::Registry::listen) parses nothing itself: it finds the binding of the
//! URI's scheme and hands back a [`Listener`], an accept loop as a
//! [`Stream`] of [`Accepted`] flows (and an [`accept`](Listener::accept) method).

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use conflux_flow::BoxFlow;
use conflux_uri::{Uri, UriError};
use futures_core::Stream;

use crate::ctx::Ctx;

/// A flow a [`Listener`] accepted, and who is on the other end.
pub struct Accepted {
    /// The flow (framed already when the listening URI said `framing=shutdown`).
    pub flow: BoxFlow,
    /// The peer, printable: an address, a path, a CID and port, or `stdio`.
    pub peer: String,
}

impl fmt::Debug for Accepted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Accepted").field("peer", &self.peer).finish_non_exhaustive()
    }
}

type AcceptStream = Pin<Box<dyn Stream<Item = io::Result<Accepted>> + Send>>;

/// An open listener: accepted flows as a [`Stream`], or one at a time with
/// [`accept`](Listener::accept). Dropping it stops listening (and removes
/// what it bound, such as a Unix socket's path, when it created it).
pub struct Listener {
    local: Uri,
    stream: AcceptStream,
}

impl fmt::Debug for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Listener").field("local", &self.local.to_string()).finish_non_exhaustive()
    }
}

impl Listener {
    /// A listener at `local` whose accepted flows come from `stream`. The
    /// stream ends when the listener can accept no more flows (`stdio:`
    /// after its one flow). Whatever must live as long as the listener (a
    /// bound socket, a guard removing a path) belongs inside the stream.
    pub fn new(local: Uri, stream: impl Stream<Item = io::Result<Accepted>> + Send + 'static) -> Listener {
        Listener { local, stream: Box::pin(stream) }
    }

    /// Where it listens, as a URI a client can connect to: the address
    /// actually bound (a port 0 replaced by the port given), without `-listen`.
    pub fn local_uri(&self) -> &Uri {
        &self.local
    }

    /// The next flow. Once the listener can accept no more (its stream
    /// ended), every call fails with [`io::ErrorKind::NotConnected`].
    pub async fn accept(&mut self) -> io::Result<Accepted> {
        std::future::poll_fn(|cx| self.stream.as_mut().poll_next(cx)).await.unwrap_or_else(|| {
            Err(io::Error::new(io::ErrorKind::NotConnected, format!("{} accepts no more flows", self.local)))
        })
    }
}

impl Stream for Listener {
    type Item = io::Result<Accepted>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.stream.as_mut().poll_next(cx)
    }
}

/// Why [`Registry::listen`](crate::Registry::listen) could not listen.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ListenError {
    /// A part of the URI no listener here can use: a scheme no binding of
    /// the registry listens on, or a query parameter the binding does not use.
    #[error(transparent)]
    Uri(#[from] UriError),
    /// Binding or setting up failed: `what` names it (the address, the path,
    /// the certificate file), the source says why.
    #[error("cannot listen on {what}: {source}")]
    Io {
        /// What could not be bound or loaded.
        what: String,
        /// Why.
        #[source]
        source: io::Error,
    },
}

impl ListenError {
    /// An I/O failure while setting up the listener on `what`.
    pub fn io(what: impl fmt::Display, source: io::Error) -> ListenError {
        ListenError::Io { what: what.to_string(), source }
    }
}

/// The future a listen function returns.
pub type ListenFuture = Pin<Box<dyn Future<Output = Result<Listener, ListenError>> + Send>>;

/// How a binding listens on one scheme: from the URI and the caller's
/// context (which may hold values the binding uses, such as a stack).
pub(crate) type ListenFn = Arc<dyn Fn(&Uri, &Ctx) -> ListenFuture + Send + Sync>;

/// What a listener over a stream that is not a socket family (tcp,
/// netstack) frames its accepted flows with: without the `hvsock` feature,
/// never anything (the URI's `framing=` was refused before).
#[cfg(all(any(feature = "tcp", feature = "netstack"), feature = "hvsock"))]
pub(crate) type FramingOf = Option<conflux_hvsock::FramingConfig>;
#[cfg(all(any(feature = "tcp", feature = "netstack"), not(feature = "hvsock")))]
pub(crate) type FramingOf = Option<std::convert::Infallible>;

/// The framing's settings when `uri` says `framing=shutdown`: the
/// context's, or the defaults.
#[cfg(all(any(feature = "tcp", feature = "netstack"), feature = "hvsock"))]
pub(crate) fn framing_of(uri: &Uri, ctx: &Ctx) -> FramingOf {
    crate::framing::framing_of(uri, ctx, Default::default())
}

#[cfg(all(any(feature = "tcp", feature = "netstack"), not(feature = "hvsock")))]
pub(crate) fn framing_of(_uri: &Uri, _ctx: &Ctx) -> FramingOf {
    None
}

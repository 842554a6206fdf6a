//! [`AxumListener`]: axum 0.8's `serve::Listener` for any listener the
//! registry opens by URI.

use std::fmt;
use std::io;
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::IncomingStream;
use conflux_flow::BoxFlow;
use conflux_mimic::{ListenError, Listener, Registry};
use conflux_uri::Uri;

use crate::HyperFlow;

/// How long to wait after an accept error other than the listener's end
/// before accepting again (as axum does for a TCP listener).
const RETRY_AFTER: Duration = Duration::from_millis(100);

/// A conflux-mimic [`Listener`] as axum's [`serve::Listener`](axum::serve::Listener):
/// `axum::serve(AxumListener::bind(&registry, &uri).await?, app)` serves on
/// any URI the registry listens on (`tcp://`, `tls://`, `unix://`,
/// `vsock://`, `fc-vsock://`, `hyperkit://`, `netstack://`, framed with
/// `?framing=shutdown` or not).
///
/// axum wants tokio IO: each accepted flow is a [`HyperFlow`], which is
/// tokio IO too (one copy per write, vectored writes kept). The address type is [`Peer`], which is also axum's
/// `ConnectInfo`. An accept error is logged and accepting goes on; once the
/// listener can accept no more (`stdio:` after its one flow), `accept` waits
/// forever, so `axum::serve` keeps serving the connections it has.
#[derive(Debug)]
pub struct AxumListener {
    inner: Listener,
}

impl AxumListener {
    /// Serves the flows `listener` accepts.
    pub fn new(listener: Listener) -> AxumListener {
        AxumListener { inner: listener }
    }

    /// Listens on `uri` through `registry` ([`Registry::listen`]).
    pub async fn bind(registry: &Registry, uri: &Uri) -> Result<AxumListener, ListenError> {
        Ok(AxumListener::new(registry.listen(uri).await?))
    }

    /// Where it listens: a URI a client can dial ([`Listener::local_uri`]).
    pub fn local_uri(&self) -> &Uri {
        self.inner.local_uri()
    }
}

/// Who is on the other end of an accepted flow, printable (an address, a
/// path, a CID and port); or, from `local_addr`, the listener's local URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer(pub String);

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl axum::serve::Listener for AxumListener {
    type Io = HyperFlow<BoxFlow>;
    type Addr = Peer;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.inner.accept().await {
                Ok(accepted) => return (HyperFlow::new(accepted.flow), Peer(accepted.peer)),
                Err(e) if e.kind() == io::ErrorKind::NotConnected => std::future::pending::<()>().await,
                Err(e) => {
                    tracing::warn!(listener = %self.inner.local_uri(), error = %e, "accept failed");
                    tokio::time::sleep(RETRY_AFTER).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(Peer(self.inner.local_uri().to_string()))
    }
}

impl Connected<IncomingStream<'_, AxumListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, AxumListener>) -> Peer {
        stream.remote_addr().clone()
    }
}

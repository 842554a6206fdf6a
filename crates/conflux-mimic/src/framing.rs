//! `framing=shutdown` over any flow (feature `hvsock`): conflux-hvsock's
//! [`FramedFlow`] run over a [`BoxFlow`] instead of a family socket, for the
//! bindings whose transport is not an hvsock family (`tcp`, `stdio`, `netstack`; `tls`
//! passes the modifier to the stream under it).
//!
//! The hvsock families frame their own sockets (no adapter in between);
//! everything else goes through [`frame`] and [`FramedProtocol`].
// Without `tcp`, `stdio` or `netstack` only the hvsock families frame, natively.
#![cfg_attr(not(any(feature = "tcp", feature = "stdio", feature = "netstack")), allow(dead_code))]

use std::fmt;
use std::io::{self, IoSlice};
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::BytesMut;
use conflux_flow::{BoxFlow, Bytes, Flow, FlowExt};
use conflux_hvsock::{FramedFlow, FramingConfig, Socket};

use crate::{Key, Protocol};

/// The context key of the framing's settings (close timeout, frame size):
/// [`Registry::dial_with`](crate::Registry::dial_with) and
/// [`Registry::listen_with`](crate::Registry::listen_with) use the config
/// found under it for `framing=shutdown`, instead of the binding's default.
///
/// ```
/// use std::time::Duration;
/// use conflux_hvsock::FramingConfig;
/// use conflux_mimic::{Ctx, FramingKeys};
/// let ctx = Ctx::new().add(&FramingKeys::get().config, FramingConfig::new().close_timeout(Duration::from_millis(200)));
/// # let _ = ctx;
/// ```
#[derive(Debug)]
pub struct FramingKeys {
    /// The framing's settings.
    pub config: Key<FramingConfig>,
}

static FRAMING_KEYS: LazyLock<FramingKeys> = LazyLock::new(|| FramingKeys { config: Key::new("framing.config") });

impl FramingKeys {
    /// The keys.
    pub fn get() -> &'static FramingKeys {
        &FRAMING_KEYS
    }
}

/// The framing over `flow`, whose peer prints as `peer`.
/// The framing's settings when `uri` says `framing=shutdown`: the
/// context's ([`FramingKeys::config`]), or `default`.
pub(crate) fn framing_of(uri: &conflux_uri::Uri, ctx: &crate::Ctx, default: FramingConfig) -> Option<FramingConfig> {
    uri.options().framing.map(|_| ctx.get(&FramingKeys::get().config).copied().unwrap_or(default))
}

pub(crate) fn frame(flow: BoxFlow, peer: &str, config: FramingConfig) -> BoxFlow {
    BoxFlow::new(FramedFlow::new(FlowSocket::new(flow, peer), config))
}

/// How long a flow released by the framing may take to close in the background.
const BACKGROUND_CLOSE: Duration = Duration::from_secs(5);

/// A printable name for the two ends of a [`FlowSocket`].
#[derive(Debug, Clone)]
pub(crate) struct FlowPeer(Arc<str>);

impl fmt::Display for FlowPeer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A flow seen as an hvsock [`Socket`], for [`FramedFlow`].
///
/// - A read copies the flow's next chunk into the framing's buffer.
/// - A write copies the slices into one buffer and reports what the flow
///   accepted; a write the flow accepted whole but still flushes (TLS) is
///   reported once the flush ends, so the framing keeps polling it.
/// - The framing never shuts the transport down; `close` and `abort` hand
///   the flow to a background task that closes (or aborts) it gracefully,
///   bounded, when a tokio runtime is there, and drop it otherwise.
pub(crate) struct FlowSocket {
    flow: Option<BoxFlow>,
    flushing: Option<usize>,
    peer: FlowPeer,
}

/// The most one write copies (what the flow does not accept is copied again).
const MAX_WRITE: usize = 64 * 1024;

impl FlowSocket {
    pub(crate) fn new(flow: BoxFlow, peer: &str) -> FlowSocket {
        FlowSocket { flow: Some(flow), flushing: None, peer: FlowPeer(peer.into()) }
    }

    fn flow(&mut self) -> io::Result<&mut BoxFlow> {
        self.flow.as_mut().ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "flow released"))
    }

    fn release(&mut self, abort: bool) {
        let Some(mut flow) = self.flow.take() else { return };
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(bounded(async move {
                let done = if abort { flow.abort().await } else { flow.close().await };
                if let Err(e) = done {
                    tracing::trace!(error = %e, "closing the flow under the framing failed");
                }
            }));
        }
    }
}

impl Socket for FlowSocket {
    type Addr = FlowPeer;

    fn poll_read_buf(&mut self, cx: &mut Context<'_>, buf: &mut BytesMut) -> Poll<io::Result<usize>> {
        let flow = self.flow()?;
        Poll::Ready(match ready!(flow.poll_read(cx)) {
            Ok(Some(b)) => {
                buf.extend_from_slice(&b);
                Ok(b.len())
            }
            Ok(None) => Ok(0),
            Err(e) => Err(e.into()),
        })
    }

    fn poll_writev(&mut self, cx: &mut Context<'_>, bufs: &[IoSlice<'_>]) -> Poll<io::Result<usize>> {
        if let Some(n) = self.flushing {
            let flow = self.flow()?;
            ready!(flow.poll_write(cx, &mut Bytes::new()))?;
            self.flushing = None;
            return Poll::Ready(Ok(n));
        }
        let mut data = BytesMut::with_capacity(bufs.iter().map(|b| b.len()).sum::<usize>().min(MAX_WRITE));
        for b in bufs {
            let room = MAX_WRITE - data.len();
            data.extend_from_slice(&b[..b.len().min(room)]);
            if data.len() == MAX_WRITE {
                break;
            }
        }
        let total = data.len();
        if total == 0 {
            return Poll::Ready(Ok(0));
        }
        let mut data = data.freeze();
        let flow = self.flow()?;
        match flow.poll_write(cx, &mut data) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(total)),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e.into())),
            Poll::Pending if data.is_empty() => {
                self.flushing = Some(total);
                Poll::Pending
            }
            Poll::Pending if data.len() < total => Poll::Ready(Ok(total - data.len())),
            Poll::Pending => Poll::Pending,
        }
    }

    fn shutdown_read(&mut self) -> io::Result<()> {
        Err(io::Error::new(io::ErrorKind::Unsupported, "the framing never shuts its flow down"))
    }

    fn shutdown_write(&mut self) -> io::Result<()> {
        Err(io::Error::new(io::ErrorKind::Unsupported, "the framing never shuts its flow down"))
    }

    fn close(&mut self) -> io::Result<()> {
        self.release(false);
        Ok(())
    }

    fn abort(&mut self) -> io::Result<()> {
        self.release(true);
        Ok(())
    }

    fn local_addr(&self) -> io::Result<FlowPeer> {
        Ok(FlowPeer("local".into()))
    }

    fn peer_addr(&self) -> io::Result<FlowPeer> {
        Ok(self.peer.clone())
    }
}

/// A protocol `P` with the framing on top of its flows: its endpoint is
/// `P`'s endpoint and the framing's settings.
pub(crate) struct FramedProtocol<P>(pub(crate) P);

impl<P: Protocol> Protocol for FramedProtocol<P> {
    type Endpoint = (P::Endpoint, FramingConfig);
    type Flow = BoxFlow;
    type Error = crate::BoxError;
    async fn connect(&self, (e, config): Self::Endpoint) -> Result<BoxFlow, crate::BoxError> {
        let flow = self.0.connect(e).await.map_err(Into::into)?;
        Ok(frame(BoxFlow::new(flow), "peer", config))
    }
}

/// Closes a flow handed over by the framing within [`BACKGROUND_CLOSE`].
async fn bounded<F: Future<Output = ()>>(f: F) {
    let _ = tokio::time::timeout(BACKGROUND_CLOSE, f).await;
}

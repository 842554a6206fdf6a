//! `stdio:` (feature `stdio`): the process's stdin and stdout as one flow.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use conflux_flow::{BoxFlow, Bytes, Flow, FlowError, FromTokio, Shutdown};
use conflux_uri::{Scheme, Target, UriError, UriPart};
use futures_core::Stream;
use tokio::io::{Join, Stdin, Stdout};

use crate::{Accepted, Handle, Listener, Protocol, RegisterOptions, Registry, check_listen_modifiers, check_modifiers};

/// The process's stdin (read side) and stdout (write side) as one flow.
///
/// - Reads give what arrives on stdin, Eof when stdin ends.
/// - `shutdown(Write)` flushes stdout and refuses later writes. Standard
///   output itself stays open until the process exits (closing descriptor 1
///   needs `unsafe`, which this crate forbids): a reader of our stdout sees
///   Eof when the process ends.
/// - `close` flushes and releases both; `abort` releases them at once.
///
/// One at a time: two flows over the same stdin would steal each other's bytes.
pub struct StdioFlow {
    inner: FromTokio<Join<Stdin, Stdout>>,
}

impl fmt::Debug for StdioFlow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StdioFlow").finish_non_exhaustive()
    }
}

impl StdioFlow {
    /// The flow over this process's stdin and stdout (tokio's handles: reads
    /// run on tokio's blocking pool).
    pub fn open() -> StdioFlow {
        StdioFlow { inner: FromTokio::new(tokio::io::join(tokio::io::stdin(), tokio::io::stdout())) }
    }
}

impl Flow for StdioFlow {
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, FlowError>> {
        self.inner.poll_read(cx)
    }
    fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
        rest: &mut Bytes,
    ) -> Poll<Result<(), FlowError>> {
        self.inner.poll_read_into(cx, buf, rest)
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
        self.inner.poll_shutdown(cx, how)
    }
    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), FlowError>> {
        self.inner.poll_close(cx)
    }
    fn poll_abort(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), FlowError>> {
        self.inner.poll_abort(cx)
    }
}

/// The endpoint of `stdio:`: there is only one.
#[derive(Debug, Clone, Copy)]
struct StdioEndpoint;

struct Stdio;

impl Protocol for Stdio {
    type Endpoint = StdioEndpoint;
    type Flow = StdioFlow;
    type Error = io::Error;
    async fn connect(&self, _: StdioEndpoint) -> io::Result<StdioFlow> {
        Ok(StdioFlow::open())
    }
}

/// The modifiers the stdio binding uses.
#[cfg(feature = "hvsock")]
const STDIO_MODIFIERS: &[&str] = &["framing"];
#[cfg(not(feature = "hvsock"))]
const STDIO_MODIFIERS: &[&str] = &[];

/// Registers `stdio` and binds the `stdio` scheme, both ways:
/// [`Registry::dial`] on `stdio:` gives a [`StdioFlow`]; [`Registry::listen`]
/// on `stdio:` (or `stdio-listen:`) accepts exactly one flow, that one, and
/// then its stream ends (peer `stdio`). `framing=shutdown` (feature
/// `hvsock`) frames it; any other modifier is an error naming it.
pub fn register_stdio(registry: &Registry, options: RegisterOptions) -> Handle<StdioFlow> {
    #[cfg(feature = "hvsock")]
    let (framed, _) = registry.register_with("stdio+framing", options, crate::framing::FramedProtocol(Stdio));
    let (key, handle) = registry.register_with("stdio", options, Stdio);
    registry.register_scheme(Scheme::Stdio, move |uri, ctx| {
        check_modifiers(uri, "stdio", STDIO_MODIFIERS).map_err(no_framing)?;
        #[cfg(feature = "hvsock")]
        if uri.options().framing.is_some() {
            let cfg = &crate::FramingKeys::get().config;
            return Ok(ctx.fold(&framed, crate::opt(cfg), |c: Option<_>| Some((StdioEndpoint, c.unwrap_or_default()))));
        }
        Ok(ctx.add(&key, StdioEndpoint))
    });
    registry.register_listener(Scheme::Stdio, |uri, ctx| {
        let (uri, ctx) = (uri.clone(), ctx.clone());
        Box::pin(async move {
            check_listen_modifiers(&uri, "stdio", STDIO_MODIFIERS).map_err(no_framing)?;
            if !matches!(uri.target(), Target::Stdio) {
                return Err(UriError::new(UriPart::Scheme, uri.scheme().as_str(), "not stdio").into());
            }
            let mut flow = BoxFlow::new(StdioFlow::open());
            #[cfg(feature = "hvsock")]
            if uri.options().framing.is_some() {
                let config = ctx.get(&crate::FramingKeys::get().config).copied().unwrap_or_default();
                flow = crate::framing::frame(flow, "stdio", config);
            }
            let _ = (&ctx, &mut flow);
            let local = uri.clone().with_listen(false);
            Ok(Listener::new(local, One(Some(Accepted { flow, peer: "stdio".into() }))))
        })
    });
    handle
}

fn no_framing(e: UriError) -> UriError {
    if cfg!(feature = "hvsock") || e.value() != "framing" {
        return e;
    }
    UriError::new(UriPart::Query, "framing", "the shutdown framing over stdio needs conflux-mimic's `hvsock` feature")
}

/// A stream of one accepted flow.
struct One(Option<Accepted>);

impl Stream for One {
    type Item = io::Result<Accepted>;
    fn poll_next(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Poll::Ready(self.0.take().map(Ok))
    }
}

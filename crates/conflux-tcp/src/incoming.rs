//! The accept-style listener: [`Incoming`], over any stack's callback API.

use std::fmt;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_core::Stream;
use tokio::sync::mpsc;

use crate::{Keepalive, ListenError, TcpStack};

/// An accept-style listener on any [`TcpStack`]: `accept().await` or a
/// [`Stream`] of flows, instead of a callback per flow.
///
/// It is an adapter over [`listen_on`](TcpStack::listen_on): each
/// established flow is queued for `accept`; at most `backlog` wait, and
/// while the queue is full further flows wait in their own tasks (the
/// stack's callback tasks). Dropping the `Incoming` stops the listener
/// (`unlisten_on`) and closes the flows still queued.
///
/// ```
/// use std::net::Ipv4Addr;
/// use conflux_tcp::{Incoming, TcpStack};
///
/// async fn serve_one<S: TcpStack>(stack: &S) -> Result<(), conflux_tcp::ListenError> {
///     let mut incoming = Incoming::bind(stack, (Ipv4Addr::LOCALHOST, 0).into(), None, 64)?;
///     println!("listening on {}", incoming.local_addr());
///     if let Some(flow) = incoming.accept().await {
///         drop(flow);
///     }
///     Ok(())
/// }
/// ```
pub struct Incoming<S: TcpStack> {
    stack: S,
    local_addr: SocketAddr,
    rx: mpsc::Receiver<S::Flow>,
}

impl<S: TcpStack> fmt::Debug for Incoming<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Incoming").field("local_addr", &self.local_addr).finish_non_exhaustive()
    }
}

impl<S: TcpStack> Incoming<S> {
    /// Listens on `addr` (as [`listen_on`](TcpStack::listen_on): port 0
    /// picks one) with `keepalive` on each accepted flow, queueing up to
    /// `backlog` (at least 1) established flows for [`accept`](Incoming::accept).
    pub fn bind(
        stack: &S,
        addr: SocketAddr,
        keepalive: Option<Keepalive>,
        backlog: usize,
    ) -> Result<Incoming<S>, ListenError> {
        let (tx, rx) = mpsc::channel(backlog.max(1));
        let listening = stack.listen_on(addr, keepalive, move |flow| {
            let tx = tx.clone();
            async move {
                // A receiver that is gone drops the flow, closing it.
                let _ = tx.send(flow).await;
            }
        })?;
        Ok(Incoming { stack: stack.clone(), local_addr: listening.local_addr(), rx })
    }

    /// The address listened on, with the port bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The next established flow; `None` once the stack stopped the
    /// listener (`disconnect`, or `unlisten_on` by someone else).
    pub async fn accept(&mut self) -> Option<S::Flow> {
        self.rx.recv().await
    }
}

// Nothing in it is pinned structurally.
impl<S: TcpStack> Unpin for Incoming<S> {}

impl<S: TcpStack> Stream for Incoming<S> {
    type Item = S::Flow;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Flow>> {
        self.rx.poll_recv(cx)
    }
}

impl<S: TcpStack> Drop for Incoming<S> {
    fn drop(&mut self) {
        self.stack.unlisten_on(self.local_addr);
    }
}

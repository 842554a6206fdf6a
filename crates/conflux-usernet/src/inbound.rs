//! Inbound TCP port forwards (`-p HOST_PORT:GUEST_PORT`): a listener on the
//! host whose connections are relayed into the guest through the stack.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use conflux_flow::FlowExt;
use conflux_netstack::DeviceError;
use conflux_tcp::{ConnectError, ConnectOptions, Incoming, ListenError, TcpFlow, TcpStack};

use crate::forward::relay;
use crate::stats::Stats;

/// Connections queued between the host listener and [`serve`](TcpPortForward::serve).
const BACKLOG: usize = 128;

/// One TCP port forward: accepts on a host address (through `H`, the
/// host's stack) and relays each connection to a guest address through `G`
/// (the userspace stack the guest is attached to), half-closes and resets
/// passed on both ways. A guest port that refuses, or a guest that does not
/// answer within the guest stack's connect timeout, resets the host
/// connection.
pub struct TcpPortForward<H: TcpStack, G: TcpStack> {
    incoming: Incoming<H>,
    guest_stack: G,
    to: SocketAddr,
    stats: Arc<Stats>,
}

impl<H: TcpStack, G: TcpStack> std::fmt::Debug for TcpPortForward<H, G> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpPortForward").field("from", &self.incoming.local_addr()).field("to", &self.to).finish()
    }
}

impl<H: TcpStack, G: TcpStack> TcpPortForward<H, G> {
    /// Listens on `host_addr` (port 0 picks one) through `host`; each
    /// connection goes to `to` through `guest_stack`, counted in `stats`.
    pub fn bind(
        host: &H,
        host_addr: SocketAddr,
        guest_stack: G,
        to: SocketAddr,
        stats: Arc<Stats>,
    ) -> Result<TcpPortForward<H, G>, ListenError> {
        let incoming = Incoming::bind(host, host_addr, None, BACKLOG)?;
        Ok(TcpPortForward { incoming, guest_stack, to, stats })
    }

    /// The host address listened on.
    pub fn local_addr(&self) -> SocketAddr {
        self.incoming.local_addr()
    }

    /// Accepts and relays (one task per connection) until the host stack
    /// stops the listener; dropping this future stops listening, while
    /// relays under way finish on their own (in a forwarder, at the latest
    /// when the guest's device ends: its stack then fails connects and
    /// flows, and the host connection is reset).
    pub async fn serve(mut self) {
        let ids = Arc::new(AtomicU64::new(1));
        while let Some(mut host_flow) = self.incoming.accept().await {
            let (guest_stack, to, stats, ids) = (self.guest_stack.clone(), self.to, self.stats.clone(), ids.clone());
            tokio::spawn(async move {
                let from = host_flow.dst();
                match guest_stack.create_connection(to, ConnectOptions::new()).await {
                    Ok(guest_flow) => {
                        let id = ids.fetch_add(1, Ordering::Relaxed);
                        relay(guest_flow, host_flow, &stats, id, from, to).await;
                    }
                    // Not a refusal: the guest is gone (not counted as refused).
                    Err(ConnectError::Other { source, .. }) if source.is::<DeviceError>() => {
                        tracing::debug!(%from, %to, error = %source, "port forward: the guest's device ended");
                        let _ = host_flow.abort().await;
                    }
                    Err(e) => {
                        stats.refused();
                        tracing::debug!(%from, %to, error = %e, "port forward: the guest refused");
                        let _ = host_flow.abort().await;
                    }
                }
            });
        }
    }
}

//! Inbound TCP port forwards (`-p HOST_PORT:GUEST_PORT`): a listener on the
//! host whose connections are relayed into the guest through the stack.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use conflux_flow::FlowExt;
use conflux_netstack::DeviceError;
use conflux_tcp::{ConnectError, ConnectOptions, Incoming, Keepalive, ListenError, TcpFlow, TcpStack};

use crate::forward::{Expiring, relay};
use crate::stats::Stats;

/// Connections queued between the host listener and [`serve`](TcpPortForward::serve).
const BACKLOG: usize = 128;

/// One TCP port forward: accepts on a host address (through `H`, the
/// host's stack) and relays each connection to a guest address through `G`
/// (the userspace stack the guest is attached to), half-closes and resets
/// passed on both ways. A guest port that refuses, or a guest that does not
/// answer within the guest stack's connect timeout, resets the host
/// connection. A side whose keepalive expires (its peer gone silent) ends
/// the flow timed out and the other side is reset.
pub struct TcpPortForward<H: TcpStack, G: TcpStack> {
    incoming: Incoming<H>,
    guest_stack: G,
    guest_keepalive: Option<Keepalive>,
    to: SocketAddr,
    stats: Arc<Stats>,
}

impl<H: TcpStack, G: TcpStack> std::fmt::Debug for TcpPortForward<H, G> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpPortForward").field("from", &self.incoming.local_addr()).field("to", &self.to).finish()
    }
}

impl<H: TcpStack, G: TcpStack> TcpPortForward<H, G> {
    /// Listens on `host_addr` (port 0 picks one) through `host`, its
    /// connections with `host_keepalive`; each connection goes to `to`
    /// through `guest_stack` with `guest_keepalive`, counted in `stats`.
    pub fn bind(
        host: &H,
        host_addr: SocketAddr,
        host_keepalive: Option<Keepalive>,
        guest_stack: G,
        to: SocketAddr,
        guest_keepalive: Option<Keepalive>,
        stats: Arc<Stats>,
    ) -> Result<TcpPortForward<H, G>, ListenError> {
        let incoming = Incoming::bind(host, host_addr, host_keepalive, BACKLOG)?;
        Ok(TcpPortForward { incoming, guest_stack, guest_keepalive, to, stats })
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
            let options = ConnectOptions { keepalive: self.guest_keepalive, ..ConnectOptions::new() };
            tokio::spawn(async move {
                let from = host_flow.dst();
                match guest_stack.create_connection(to, options).await {
                    Ok(guest_flow) => {
                        let id = ids.fetch_add(1, Ordering::Relaxed);
                        let (guest_flow, host_flow) =
                            (Expiring::new(guest_flow, "guest"), Expiring::new(host_flow, "host"));
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use conflux_flow::FlowExt;
    use conflux_netstack::{LinkConfig, NetFlow, NetStack, StackConfig, link_pair};
    use conflux_testkit::within;

    use super::*;
    use crate::{DEFAULT_GUEST_KEEPALIVE, DEFAULT_HOST_KEEPALIVE};

    /// A port forward whose guest vanishes (no FIN, no reset) while the
    /// flow idles: the guest keepalive ends it 90 to 120 s after the cut
    /// (120 s after the last segment heard; a probe every 30 s), and the
    /// host's client reads a reset, counted timed out. All userspace stacks
    /// on virtual time: the host's network (the forward's listener at
    /// 192.0.2.1, a client at 192.0.2.10) and the guest's (the gateway
    /// 10.0.2.2, the guest's server at 10.0.2.100).
    #[tokio::test(start_paused = true)]
    async fn a_vanished_guest_resets_an_idle_forwarded_connection() {
        let (h1, h2) = link_pair(LinkConfig::ip());
        let host = NetStack::new(StackConfig::new().ipv4([192, 0, 2, 1].into(), 24), h1);
        let client = NetStack::new(StackConfig::new().ipv4([192, 0, 2, 10].into(), 24), h2);
        let (g1, g2) = link_pair(LinkConfig::ethernet());
        let guest_link = g2.switch();
        let gateway = NetStack::new(StackConfig::new().ipv4([10, 0, 2, 2].into(), 24).mac([2, 0, 0, 0, 0, 2]), g1);
        let guest = NetStack::new(StackConfig::new().ipv4([10, 0, 2, 100].into(), 24).mac([2, 0, 0, 0, 0, 9]), g2);
        let (tx, mut accepted) = tokio::sync::mpsc::unbounded_channel::<NetFlow>();
        let _listening = guest
            .listen(80, None, move |f| {
                let _ = tx.send(f);
                async {}
            })
            .unwrap();
        let stats = Arc::new(Stats::default());
        let (from, to) = ("192.0.2.1:8080".parse().unwrap(), "10.0.2.100:80".parse().unwrap());
        let (host_ka, guest_ka) = (Some(DEFAULT_HOST_KEEPALIVE), Some(DEFAULT_GUEST_KEEPALIVE));
        let fwd = TcpPortForward::bind(&host, from, host_ka, gateway.clone(), to, guest_ka, stats.clone()).unwrap();
        let serving = tokio::spawn(fwd.serve());
        let mut c = within("connect", Duration::from_secs(5), client.create_connection(from, ConnectOptions::new()))
            .await
            .unwrap();
        c.write("ping").await.unwrap();
        let mut srv = within("the guest's accept", Duration::from_secs(5), accepted.recv()).await.unwrap();
        assert_eq!(within("ping", Duration::from_secs(5), srv.read()).await.unwrap().as_deref(), Some(&b"ping"[..]));
        // Ten minutes of silence, both peers alive: still open.
        tokio::time::sleep(Duration::from_secs(600)).await;
        assert_eq!(stats.snapshot().flows_open, 1);
        guest_link.set_up(false);
        let cut = tokio::time::Instant::now();
        let read = within("the client's end", Duration::from_secs(130), c.read()).await;
        let took = cut.elapsed();
        assert!(read.as_ref().is_err_and(|e| e.is_reset()), "the client gets a reset: {read:?}");
        assert!(took > Duration::from_secs(89) && took <= Duration::from_secs(121), "ended after {took:?}");
        let s = stats.snapshot();
        assert_eq!((s.flows_open, s.flows_failed, s.flows_timed_out), (0, 1, 1), "{s}");
        serving.abort();
    }
}

//! The flow conformance kit over kernel TCP ([`HostFlow`]) on 127.0.0.1 and ::1.
//!
//! Each pair is a connect to a fresh listener of the factory's own stack (the
//! listener is stopped once the pair exists; established flows keep running),
//! so `open_resources` (the stack's open flows) counts this factory's flows only.

use std::net::{IpAddr, SocketAddr};

use conflux_conformance::{Caps, FlowFactory, PairFuture, flow_conformance};
use conflux_flow::FlowError;
use conflux_tcp::{ConnectOptions, TcpStack};
use conflux_tcp_host::{HostFlow, HostStack};

struct HostPairs {
    stack: HostStack,
    ip: IpAddr,
}

impl HostPairs {
    fn new(ip: &str) -> HostPairs {
        HostPairs { stack: HostStack::new(), ip: ip.parse().expect("an IP") }
    }
}

impl FlowFactory for HostPairs {
    type Flow = HostFlow;

    fn caps(&self) -> Caps {
        Caps::kernel()
    }

    fn pair(&self) -> PairFuture<'_, HostFlow> {
        Box::pin(async move {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let listening = self
                .stack
                .listen(0, None, move |flow| {
                    let _ = tx.send(flow);
                    std::future::ready(())
                })
                .map_err(FlowError::other)?;
            let addr = SocketAddr::new(self.ip, listening.port());
            let client = self.stack.create_connection(addr, ConnectOptions::new()).await.map_err(FlowError::other);
            let server = rx.recv().await;
            self.stack.unlisten(listening.port());
            let server = server.ok_or_else(|| FlowError::other("the listener ended without a flow"))?;
            Ok((client?, server))
        })
    }

    fn open_resources(&self) -> Option<usize> {
        Some(self.stack.open_flows())
    }
}

flow_conformance!(host_v4, HostPairs::new("127.0.0.1"));
flow_conformance!(host_v6, HostPairs::new("::1"));

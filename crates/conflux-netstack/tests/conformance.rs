//! The flow conformance kit over TCP flows of two stacks joined by an
//! in-memory link, in virtual time.

mod support;

use std::sync::Mutex;

use conflux_conformance::{Boxed, Caps, FlowFactory, PairFuture, flow_conformance};
use conflux_netstack::{LinkConfig, NetFlow, NetStack};
use conflux_tcp::TcpStack;

/// Makes a fresh pair of stacks per connected pair of flows.
#[derive(Default)]
struct NetFactory {
    link: Option<LinkConfig>,
    stacks: Mutex<Vec<NetStack>>,
}

impl NetFactory {
    fn new(link: LinkConfig) -> NetFactory {
        NetFactory { link: Some(link), stacks: Mutex::new(Vec::new()) }
    }
}

impl FlowFactory for NetFactory {
    type Flow = NetFlow;

    fn caps(&self) -> Caps {
        Caps::in_memory()
    }

    fn pair(&self) -> PairFuture<'_, NetFlow> {
        Box::pin(support::flow_pair(self.link.unwrap_or(LinkConfig::ethernet()), &self.stacks))
    }

    fn open_resources(&self) -> Option<usize> {
        Some(self.stacks.lock().unwrap().iter().map(TcpStack::open_flows).sum())
    }
}

flow_conformance!(ethernet, NetFactory::new(LinkConfig::ethernet()));
flow_conformance!(ip_boxed, Boxed(NetFactory::new(LinkConfig::ip())));

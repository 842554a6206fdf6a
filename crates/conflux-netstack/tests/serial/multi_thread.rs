//! The flow kit and the TCP kit over `NetStack` on a 2-worker multi_thread
//! runtime, in real time (issue 12 item 4: paused time needs a
//! current_thread runtime, so these are the only kit runs where the
//! stack's driver and the flows' tasks sit on different threads and wake
//! each other across them). Included by `serial.rs`: real time wants the
//! one-test-at-a-time binary.
//!
//! - the flow kit: `flow_kit`, every case, through a factory declaring no
//!   virtual time (the kit then runs each case on two workers);
//! - the TCP kit: `kit_mem_mt` in `serial.rs`, every case `kit_mem` runs,
//!   on [`rt_mt`].

use std::sync::Mutex;

use conflux_conformance::{Caps, FlowFactory, PairFuture, flow_conformance};
use conflux_netstack::{LinkConfig, NetFlow, NetStack};
use conflux_tcp::TcpStack;

use super::support;

/// A multi_thread runtime with two workers, I/O and time.
pub(crate) fn rt_mt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

/// A fresh pair of stacks on an in-memory Ethernet link per pair of flows,
/// in real time.
#[derive(Default)]
struct MtFactory {
    stacks: Mutex<Vec<NetStack>>,
}

impl FlowFactory for MtFactory {
    type Flow = NetFlow;

    fn caps(&self) -> Caps {
        // Not virtual: the kit runs the case on a 2-worker multi_thread runtime.
        Caps { virtual_time: false, ..Caps::in_memory() }
    }

    fn pair(&self) -> PairFuture<'_, NetFlow> {
        Box::pin(support::flow_pair(LinkConfig::ethernet(), &self.stacks))
    }

    fn open_resources(&self) -> Option<usize> {
        Some(self.stacks.lock().unwrap().iter().map(TcpStack::open_flows).sum())
    }
}

#[test]
fn the_factory_runs_cases_on_two_workers_in_real_time() {
    let caps = MtFactory::default().caps();
    assert!(!caps.virtual_time, "a virtual-time factory would run on a current_thread runtime");
    let rt = rt_mt();
    assert_eq!(rt.metrics().num_workers(), 2);
    let flavor = rt.block_on(async { tokio::runtime::Handle::current().runtime_flavor() });
    assert_eq!(flavor, tokio::runtime::RuntimeFlavor::MultiThread);
}

flow_conformance!(flow_kit, MtFactory::default());

//! What a resolve allocates beyond the connect it makes: a `tcp://` URI's
//! context resolved through the registry against a direct
//! `HostStack::create_connection` to the same loopback listener (the
//! `mimic-connect` bench scenario's two sides), counted by a global allocator
//! that counts every allocation of this test binary.
//!
//! Its own test binary, with one test: the count is process-wide.

use std::alloc::System;

use conflux_flow::FlowExt;
use conflux_mimic::{RegisterOptions, Registry, Tcp, register_tcp_with};
use conflux_tcp::{ConnectOptions, TcpStack};
use conflux_tcp_host::HostStack;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use tokio::io::AsyncReadExt;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Allocations a resolve of `tcp://IP:PORT` may make beyond the direct
/// connect's: the computed endpoint (a shared value), the protocol's connect
/// future (boxed: the registry is not generic over it) and the `BoxFlow` the
/// resolve returns. Neither the function's address list (one address) nor
/// its outcome allocates, nor the unfold's list of values (the vector the
/// thread's previous unfold left).
const EXTRA: usize = 3;

/// Connects per side; each side's count is its leanest connect (the first
/// ones also make what is kept: the runtime's structures, the context's
/// evaluation order, the spare vector of values).
const CONNECTS: usize = 20;

#[test]
fn a_resolve_allocates_at_most_three_times_beyond_the_direct_connect() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (done_tx, mut done) = tokio::sync::mpsc::unbounded_channel::<()>();
    let addr = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let done_tx = done_tx.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
                    let _ = done_tx.send(());
                });
            }
        });
        addr
    });
    let stack = HostStack::new();
    let registry = Registry::new();
    register_tcp_with(&registry, Tcp::new(stack.clone()), RegisterOptions::new().priority(20));
    let context = registry.ctx_from_uri(&format!("tcp://{addr}").parse().unwrap()).unwrap();
    let (mut resolve, mut direct) = (usize::MAX, usize::MAX);
    for _ in 0..CONNECTS {
        rt.block_on(async {
            let region = Region::new(GLOBAL);
            let flow = registry.resolve(&context).await.expect("resolve tcp://");
            resolve = resolve.min(region.change().allocations);
            let mut flow = flow;
            flow.close().await.unwrap();
            tokio::time::timeout(std::time::Duration::from_secs(10), done.recv()).await.unwrap().unwrap();

            let region = Region::new(GLOBAL);
            let flow = stack.create_connection(addr, ConnectOptions::new()).await.expect("direct connect");
            direct = direct.min(region.change().allocations);
            let mut flow = flow;
            flow.close().await.unwrap();
            tokio::time::timeout(std::time::Duration::from_secs(10), done.recv()).await.unwrap().unwrap();
        });
    }
    eprintln!("allocations per connect: resolve {resolve}, direct {direct}");
    assert!(direct > 0, "the direct connect allocates (its flow): the count works");
    assert!(
        resolve <= direct + EXTRA,
        "a resolve allocates {resolve} times, the direct connect {direct}: more than {EXTRA} beyond it"
    );
}

//! The `mimic` benchmark scenario group: what the registry costs on top of
//! calling a protocol's connect directly, on one current_thread runtime with
//! no tracing subscriber installed.
//!
//! - `mimic-resolve` (latency, us): resolve of a context with 10 keys and 3
//!   functions (a chain ending in the endpoint) to an in-memory protocol;
//!   baseline `direct`: that protocol's connect called directly. Each sample is
//!   the mean of a batch; goal: value <= 5 us.
//! - `mimic-connect` (latency, us): resolve + connect of kernel TCP on loopback
//!   (`tcp://127.0.0.1:PORT`, conflux-tcp-host), baseline `direct-connect`:
//!   `HostStack::create_connection` on the same stack to the same address.
//!   One sample per connect, interleaved with the order flipped every
//!   iteration, at least 2,000 of each; the client closes first; median;
//!   goal: ratio <= 1.10.

use std::net::SocketAddr;
use std::time::Instant;

use conflux_flow::{FlowExt, FnFlow};
use conflux_mimic::{Ctx, Key, RegisterOptions, Registry, Tcp, protocol_fn, register_tcp_with, req};
use conflux_tcp::{ConnectOptions, TcpStack};
use conflux_tcp_host::HostStack;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

use crate::{Ctx as BenchCtx, Goal, Metric, Pair, Record, Scenario, Skip, measure_pair, micros};

/// The scenarios of the `mimic` group, in the order they run.
pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario { name: "mimic-resolve", metric: Metric::Latency, goal: Goal::ValueAtMost(5.0), run: resolve },
        Scenario { name: "mimic-connect", metric: Metric::Latency, goal: Goal::RatioAtMost(1.10), run: connect },
    ]
}

fn runtime() -> Result<tokio::runtime::Runtime, Skip> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| Skip::new(format!("runtime: {e}")))
}

/// The in-memory protocol: the endpoint is the flow's input.
async fn memory(input: u64) -> Result<FnFlow, std::convert::Infallible> {
    Ok(FnFlow::new().with_input_chunks([input.to_le_bytes().to_vec()]))
}

fn resolve(ctx: &BenchCtx<'_>) -> Result<Vec<Record>, Skip> {
    const BATCH: u32 = 20_000;
    let rt = runtime()?;
    let registry = Registry::new();
    let (endpoint, _) = registry.register("memory", Some(10), protocol_fn(memory));
    // 10 keys: 7 plain, 2 intermediates and the endpoint; 3 functions.
    let plain: Vec<Key<u64>> = (0..7).map(|i| Key::new(&format!("k{i}"))).collect();
    let (a, b): (Key<u64>, Key<u64>) = (Key::new("a"), Key::new("b"));
    let mut context = Ctx::new()
        .fold(&endpoint, (req(&b), req(&plain[3])), |(b, k)| Some(b ^ k))
        .fold(&b, (req(&a), req(&plain[2])), |(a, k)| Some(a.wrapping_mul(k)))
        .fold(&a, (req(&plain[0]), req(&plain[1])), |(x, y)| Some(x + y));
    for (i, k) in plain.iter().enumerate() {
        context = context.add(k, i as u64 + 1);
    }
    assert_eq!(context.len(), 10);
    let sink = std::cell::Cell::new(0usize);
    let pair = measure_pair(
        ctx.runs(9, 5),
        || {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..BATCH {
                    let flow = registry.resolve(&context).await.expect("in-memory resolve");
                    sink.set(sink.get() + flow.type_name().len());
                }
                micros(start.elapsed()) / f64::from(BATCH)
            })
        },
        || {
            rt.block_on(async {
                let start = Instant::now();
                for i in 0..BATCH {
                    let flow = conflux_flow::BoxFlow::new(memory(u64::from(i)).await.expect("in-memory connect"));
                    sink.set(sink.get() + flow.type_name().len());
                }
                micros(start.elapsed()) / f64::from(BATCH)
            })
        },
    );
    assert!(sink.get() > 0);
    Ok(vec![ctx.record(&pair.measured).with_baseline("direct", &pair.baseline)])
}

/// Waits (untimed) until the server saw the Eof of the connection just closed.
async fn server_done(done: &std::cell::RefCell<tokio::sync::mpsc::UnboundedReceiver<()>>) {
    loop {
        let got = done.borrow_mut().try_recv();
        match got {
            Ok(()) => return,
            Err(tokio::sync::mpsc::error::TryRecvError::Empty) => tokio::task::yield_now().await,
            Err(e) => panic!("server task gone: {e}"),
        }
    }
}

fn connect(ctx: &BenchCtx<'_>) -> Result<Vec<Record>, Skip> {
    let rt = runtime()?;
    let iterations = if ctx.quick { 2_000 } else { 5_000 };
    // The server reports each connection's Eof, awaited outside the timed part, so
    // neither side's samples include the server work of the other side's connection.
    let (done_tx, done) = tokio::sync::mpsc::unbounded_channel::<()>();
    let done = std::cell::RefCell::new(done);
    let addr: SocketAddr = rt.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.map_err(|e| Skip::new(format!("bind: {e}")))?;
        let addr = listener.local_addr().map_err(|e| Skip::new(format!("local_addr: {e}")))?;
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let done_tx = done_tx.clone();
                tokio::spawn(async move {
                    // The client closes first; the server reads its Eof and drops.
                    let mut buf = [0u8; 64];
                    while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
                    let _ = done_tx.send(());
                });
            }
        });
        Ok::<_, Skip>(addr)
    })?;
    // One kernel stack for both sides: the registry's tcp protocol and the direct connects.
    let stack = HostStack::new();
    let registry = Registry::new();
    register_tcp_with(&registry, Tcp::new(stack.clone()), RegisterOptions::new().priority(20));
    let uri = format!("tcp://{addr}").parse().map_err(|e| Skip::new(format!("uri: {e}")))?;
    let context = registry.ctx_from_uri(&uri).map_err(|e| Skip::new(format!("ctx: {e}")))?;
    let measured = || {
        rt.block_on(async {
            let start = Instant::now();
            let mut flow = registry.resolve(&context).await.expect("resolve tcp://");
            let us = micros(start.elapsed());
            flow.close().await.expect("close");
            server_done(&done).await;
            us
        })
    };
    let baseline = || {
        rt.block_on(async {
            let start = Instant::now();
            let mut flow = stack.create_connection(addr, ConnectOptions::new()).await.expect("connect");
            let us = micros(start.elapsed());
            flow.close().await.expect("close");
            server_done(&done).await;
            us
        })
    };
    // Interleaved, and the order flips every iteration (ABBA), so neither
    // side always runs right after the other's close.
    let mut pair = Pair { measured: Vec::with_capacity(iterations), baseline: Vec::with_capacity(iterations) };
    for i in 0..iterations {
        if i % 2 == 0 {
            pair.measured.push(measured());
            pair.baseline.push(baseline());
        } else {
            pair.baseline.push(baseline());
            pair.measured.push(measured());
        }
    }
    Ok(vec![ctx.record(&pair.measured).with_baseline("direct-connect", &pair.baseline)])
}

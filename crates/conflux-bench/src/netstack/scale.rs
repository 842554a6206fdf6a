//! `netstack-idle10k`: one bulk flow beside 10,000 established idle
//! connections, and the memory those connections take.
//!
//! - metric `throughput`: two stacks (A connects, B serves) on an in-memory
//!   IP link set up as in `netstack-mem-1500` (MTU 1500, checksums on, 64
//!   KiB buffers), holding 10,000 established connections (20,000 sockets,
//!   both stacks in this process; each connection carried one byte each way
//!   and then stays open and idle), move 256 MiB (128 MiB under `--quick`) in 64 KiB writes on one
//!   more connection; baseline `alone`: the same stream on a second pair of
//!   stacks, same settings, with no idle connections. Runs alternate.
//! - metric `rss`: the growth of `VmRSS` for opening the 10,000 connections
//!   (4 KiB + 4 KiB socket buffers) in a fresh child process (this binary
//!   re-executed with a hidden argument), measured from just before the first
//!   connect to just after the last echo (one warm-up connection before),
//!   in MiB; each run is a fresh child, so nothing an earlier run allocated
//!   (and the allocator kept) is reused. Goal: at most 208 MiB.

use std::net::SocketAddr;
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use conflux_flow::FlowExt;
use conflux_netstack::{LinkConfig, NetFlow, NetStack};
use conflux_tcp::{ConnectOptions, TcpFlowExt, TcpStack};

use super::{B, NetStream, child_command, stacks};
use crate::data::{expected_sum as expected, runtime, source};
use crate::{Ctx, Goal, Record, Skip, measure, measure_pair, rss_mib};

/// How many idle connections.
const IDLE: usize = 10_000;
/// The child role that measures the RSS growth.
pub(super) const IDLE_RSS_ROLE: &str = "idle-rss";
/// The goal of the `rss` figure: under 208 MiB for 10,000 connections.
pub(super) const IDLE_RSS_GOAL: Goal = Goal::ValueAtMost(208.0);
/// Socket buffers of the RSS measurement: 4 KiB + 4 KiB.
const SMALL_BUFFERS: usize = 4096;

/// Listens on B with an echo of the first byte that then holds the
/// connection open until the peer closes; returns the address to dial.
pub(super) fn listen_idle(b: &NetStack) -> SocketAddr {
    let port = b
        .listen(0, None, |mut flow: NetFlow| async move {
            if let Ok(Some(byte)) = flow.read().await
                && flow.write_nodelay(byte).await.is_ok()
            {
                while let Ok(Some(_)) = flow.read().await {}
            }
            let _ = flow.close().await;
        })
        .expect("listen")
        .port();
    SocketAddr::from((B, port))
}

/// Opens `n` connections from `a` to `addr` (an [`listen_idle`] listener),
/// each carrying one byte each way; returns the client flows, open.
pub(super) async fn open_idle(a: &NetStack, addr: SocketAddr, n: usize) -> Vec<NetFlow> {
    let byte = Bytes::from_static(b"i");
    let mut flows = Vec::with_capacity(n);
    for i in 0..n {
        let connect = a.create_connection(addr, ConnectOptions::new().timeout(Duration::from_secs(10)));
        let mut flow = connect.await.unwrap_or_else(|e| panic!("idle connection {i}: connect: {e}"));
        flow.write_nodelay(byte.clone()).await.expect("idle write");
        let echo = tokio::time::timeout(Duration::from_secs(10), flow.read()).await.expect("the echo in time");
        assert_eq!(echo.expect("idle read"), Some(byte.clone()), "idle connection {i}: echo");
        flows.push(flow);
    }
    flows
}

pub(super) fn idle10k_throughput(ctx: &Ctx<'_>) -> Result<Vec<Record>, Skip> {
    const CHUNK: usize = 64 * 1024;
    let total: u64 = if ctx.quick { 128 << 20 } else { 256 << 20 };
    let rt = runtime();
    let src = source();
    let want = expected(&src, total, CHUNK);
    let (mut busy, mut alone, a, b) = rt.block_on(async {
        let (a, b) = stacks(LinkConfig::ip(), CHUNK);
        let (a2, b2) = stacks(LinkConfig::ip(), CHUNK);
        (NetStream::new(a.clone(), &b), NetStream::new(a2, &b2), a, b)
    });
    let started = Instant::now();
    let idle = rt.block_on(async {
        let addr = listen_idle(&b);
        open_idle(&a, addr, IDLE).await
    });
    eprintln!(
        "   netstack-idle10k: {IDLE} idle connections open in {:.1}s ({} + {} sockets, {} + {} open flows)",
        started.elapsed().as_secs_f64(),
        a.sockets(),
        b.sockets(),
        a.open_flows(),
        b.open_flows()
    );
    assert!(a.open_flows() >= IDLE && b.open_flows() >= IDLE, "the idle connections are not all open");
    let pair = measure_pair(
        ctx.runs(5, 3),
        || rt.block_on(busy.run(&src, total, CHUNK, want)),
        || rt.block_on(alone.run(&src, total, CHUNK, want)),
    );
    assert!(a.open_flows() >= IDLE, "idle connections closed during the runs");
    drop(idle);
    Ok(vec![ctx.record(&pair.measured).with_baseline("alone", &pair.baseline)])
}

pub(super) fn idle10k_rss(ctx: &Ctx<'_>) -> Result<Vec<Record>, Skip> {
    let samples = measure(ctx.runs(3, 3), || {
        let out = child_command(IDLE_RSS_ROLE)
            .arg(IDLE.to_string())
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .expect("run the idle-rss child");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "the idle-rss child failed: {text}");
        text.trim().parse::<f64>().unwrap_or_else(|e| panic!("the idle-rss child printed {text:?}: {e}"))
    });
    Ok(vec![ctx.record(&samples)])
}

/// The child: opens `n` idle connections (4 KiB + 4 KiB buffers) and prints
/// the growth of VmRSS in MiB on stdout.
pub(super) fn idle_rss_child(args: &[String]) -> ExitCode {
    let Some(Ok(n)) = args.first().map(|a| a.parse::<usize>()) else {
        eprintln!("{IDLE_RSS_ROLE}: needs the number of connections");
        return ExitCode::from(2);
    };
    let rt = runtime();
    let (growth, a, b) = rt.block_on(async {
        let (a, b) = stacks(LinkConfig::ip(), SMALL_BUFFERS);
        let addr = listen_idle(&b);
        // One connection first, so the growth counts connections, not the
        // first use of the stacks' and the runtime's lazily made parts.
        let warm = open_idle(&a, addr, 1).await;
        let before = rss_mib().expect("VmRSS");
        let flows = open_idle(&a, addr, n).await;
        let after = rss_mib().expect("VmRSS");
        drop((warm, flows));
        (after - before, a, b)
    });
    eprintln!("   netstack-idle10k: {n} connections grew VmRSS by {growth:.1} MiB");
    drop((a, b));
    println!("{growth:.3}");
    ExitCode::SUCCESS
}

//! The `flow` benchmark scenario group: the in-memory pipe and `proxy` against
//! their tokio counterparts.
//!
//! Both sides do the same work: every 64 KiB chunk is made from a source slice
//! (`Bytes::copy_from_slice` for flows, `write_all` of the slice for tokio), every
//! byte is folded into a checksum at the reader, and both are bounded at 1 MiB in
//! flight. Writer and reader are tasks on one current_thread runtime. The
//! checksums of both ends are compared, so a run that lost or reordered bytes fails.

use std::time::Instant;

use bytes::Bytes;
use conflux_flow::{FlowExt, Shutdown, pipe, proxy};
use tokio::io::AsyncWriteExt;

use crate::data::{drain, expected_sum, fold, offsets, runtime, source};
use crate::{Ctx, Goal, Metric, Record, Scenario, Skip, measure_pair, throughput_gbps};

const CHUNK: usize = 64 * 1024;
const IN_FLIGHT: usize = 1 << 20;
const TOTAL: u64 = 1 << 30;

/// The scenarios of the `flow` group, in the order they run.
pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario { name: "flow-pipe", metric: Metric::Throughput, goal: Goal::RatioAtLeast(1.0), run: flow_pipe },
        Scenario { name: "flow-proxy", metric: Metric::Throughput, goal: Goal::RatioAtLeast(1.0), run: flow_proxy },
    ]
}

fn check(what: &str, got: u64, want: u64) {
    assert_eq!(got, want, "{what}: the reader's checksum differs from the writer's");
}

fn flow_pipe(ctx: &Ctx<'_>) -> Result<Vec<Record>, Skip> {
    let rt = runtime();
    let src = source();
    let want = expected_sum(&src, TOTAL, CHUNK);
    let pair = measure_pair(
        ctx.runs(5, 3),
        || {
            rt.block_on(async {
                let (mut w, mut r) = pipe(IN_FLIGHT);
                let start = Instant::now();
                let reader = tokio::spawn(async move {
                    let mut sum = 0;
                    while let Some(chunk) = r.read().await.expect("pipe read") {
                        sum = fold(sum, &chunk);
                    }
                    sum
                });
                for off in offsets(TOTAL, CHUNK) {
                    w.write(Bytes::copy_from_slice(&src[off..off + CHUNK])).await.expect("pipe write");
                }
                w.shutdown(Shutdown::Write).await.expect("pipe shutdown");
                check("flow-pipe", reader.await.expect("reader task"), want);
                throughput_gbps(TOTAL, start.elapsed())
            })
        },
        || {
            rt.block_on(async {
                let (mut w, r) = tokio::io::duplex(IN_FLIGHT);
                let start = Instant::now();
                let reader = tokio::spawn(async move { drain(r, CHUNK).await.1 });
                for off in offsets(TOTAL, CHUNK) {
                    w.write_all(&src[off..off + CHUNK]).await.expect("duplex write");
                }
                w.shutdown().await.expect("duplex shutdown");
                check("tokio-duplex", reader.await.expect("reader task"), want);
                throughput_gbps(TOTAL, start.elapsed())
            })
        },
    );
    Ok(vec![ctx.record(&pair.measured).with_baseline("tokio-duplex", &pair.baseline)])
}

fn flow_proxy(ctx: &Ctx<'_>) -> Result<Vec<Record>, Skip> {
    let rt = runtime();
    let src = source();
    let want = expected_sum(&src, TOTAL, CHUNK);
    let pair = measure_pair(
        ctx.runs(5, 3),
        || {
            rt.block_on(async {
                let (mut client, mut a) = pipe(IN_FLIGHT);
                let (mut b, mut server) = pipe(IN_FLIGHT);
                let start = Instant::now();
                let relay = tokio::spawn(async move { proxy(&mut a, &mut b).await.expect("proxy") });
                let reader = tokio::spawn(async move {
                    let mut sum = 0;
                    while let Some(chunk) = server.read().await.expect("pipe read") {
                        sum = fold(sum, &chunk);
                    }
                    server.shutdown(Shutdown::Write).await.expect("server shutdown");
                    sum
                });
                for off in offsets(TOTAL, CHUNK) {
                    client.write(Bytes::copy_from_slice(&src[off..off + CHUNK])).await.expect("pipe write");
                }
                client.shutdown(Shutdown::Write).await.expect("client shutdown");
                check("flow-proxy", reader.await.expect("reader task"), want);
                let stats = relay.await.expect("relay task");
                assert_eq!(stats.a_to_b.bytes, TOTAL);
                throughput_gbps(TOTAL, start.elapsed())
            })
        },
        || {
            rt.block_on(async {
                let (mut client, mut a) = tokio::io::duplex(IN_FLIGHT);
                let (mut b, server) = tokio::io::duplex(IN_FLIGHT);
                let start = Instant::now();
                let relay = tokio::spawn(async move {
                    tokio::io::copy_bidirectional(&mut a, &mut b).await.expect("copy_bidirectional")
                });
                let reader = tokio::spawn(async move {
                    let (mut server, sum) = drain(server, CHUNK).await;
                    server.shutdown().await.expect("server shutdown");
                    sum
                });
                for off in offsets(TOTAL, CHUNK) {
                    client.write_all(&src[off..off + CHUNK]).await.expect("duplex write");
                }
                client.shutdown().await.expect("client shutdown");
                check("copy-bidirectional", reader.await.expect("reader task"), want);
                let (ab, _) = relay.await.expect("relay task");
                assert_eq!(ab, TOTAL);
                throughput_gbps(TOTAL, start.elapsed())
            })
        },
    );
    Ok(vec![ctx.record(&pair.measured).with_baseline("copy-bidirectional", &pair.baseline)])
}

//! The `9p` benchmark scenario group: the conflux-9p server and client over
//! loopback TCP flows (`conflux-tcp-host`), on one current_thread runtime.
//!
//! - `9p-read` (throughput): sequential read of a 256 MiB file from the
//!   in-memory file system, msize 1 MiB, 4 Treads in flight, the client folding
//!   every byte into a checksum; baseline `tcp-flow`: the same 256 MiB written
//!   from memory in 1 MiB slices through a plain kernel TCP flow, the reader
//!   folding every byte too.
//! - `9p-stat` (rate): Twalk, Tstat, Tclunk cycles, 16 in flight, each message
//!   counting one; baseline `tcp-echo`: 64-byte messages echoed over the same
//!   kind of flow, 16 in flight, each message its own write (the 9P client
//!   instead coalesces the requests queued by its callers into one vectored
//!   write; an echo client that batched the same way measured 1.8 M/s here,
//!   where no request/reply protocol comes near), each echoed message counting one.
//!
//! The 9P side reads in chunks of up to 4 MiB so that most 1 MiB replies lie
//! inside one chunk (sliced, not copied); the baseline keeps 1 MiB reads.
//! Measured and baseline runs alternate; 5 runs each under `--quick`, 7 otherwise.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use conflux_9p::fs::OREAD;
use conflux_9p::{Client, IOHDRSZ, MemFs, Msg, Server};
use conflux_flow::{FlowExt, Shutdown};
use conflux_tcp::{ConnectOptions, TcpFlow, TcpStack};
use conflux_tcp_host::{HostConfig, HostFlow, HostStack};

use crate::data::{fold, listen_folding, runtime, source};
use crate::{Ctx, Goal, Metric, Record, Scenario, Skip, measure_pair, rate_per_sec, throughput_gbps};

const FILE_LEN: usize = 256 << 20;
const MSIZE: u32 = 1 << 20;
const READS_IN_FLIGHT: usize = 4;
const CYCLES_IN_FLIGHT: usize = 16;
const ECHO: usize = 64;
/// Reads of up to 4 MiB on both sides, so most 1 MiB replies arrive inside one chunk.
const READ_CHUNK: usize = 4 << 20;
static ECHO_BYTES: [u8; ECHO] = [0x5a; ECHO];

/// The scenarios of the `9p` group, in the order they run.
pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario { name: "9p-read", metric: Metric::Throughput, goal: Goal::RatioAtLeast(0.7), run: read },
        Scenario { name: "9p-stat", metric: Metric::Rate, goal: Goal::RatioAtLeast(0.5), run: stat },
    ]
}

fn stack() -> HostStack {
    HostStack::with_config(HostConfig::new().read_chunk(READ_CHUNK))
}

/// The baseline's stack: 1 MiB reads, its better setting here (one quick run
/// with 4 MiB reads gave it 0.76 GB/s against 0.96-1.09 with 1 MiB).
fn baseline_stack() -> HostStack {
    HostStack::with_config(HostConfig::new().read_chunk(MSIZE as usize))
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// 256 MiB cut from the bench source.
fn big_file() -> Bytes {
    let src = source();
    let mut v = Vec::with_capacity(FILE_LEN);
    while v.len() < FILE_LEN {
        v.extend_from_slice(&src);
    }
    Bytes::from(v)
}

/// Listens with a 9P server for `fs`; returns the port.
fn serve_9p(stack: &HostStack, fs: Arc<MemFs>) -> u16 {
    let server = Server::from_arc(fs).with_msize(MSIZE);
    stack
        .listen(0, None, move |mut flow: HostFlow| {
            let server = server.clone();
            async move {
                flow.set_nodelay(true).expect("nodelay");
                server.serve(flow).await.expect("9P session");
            }
        })
        .expect("listen")
        .port()
}

async fn connect_9p(stack: &HostStack, port: u16) -> (Client<HostFlow>, u32) {
    let mut flow = stack.create_connection(loopback(port), ConnectOptions::new()).await.expect("connect");
    flow.set_nodelay(true).expect("nodelay");
    let client = Client::connect(flow, MSIZE, "9P2000.u").await.expect("Tversion");
    let (root, _) = client.attach("bench", "").await.expect("attach");
    (client, root)
}

fn read(ctx: &Ctx<'_>) -> Result<Vec<Record>, Skip> {
    let rt = runtime();
    let file = big_file();
    let want = fold(0, &file);
    let fs = Arc::new(MemFs::new());
    fs.add_file("big", file.clone()).expect("add file");
    let stack = stack();
    let port = rt.block_on(async { serve_9p(&stack, fs) });
    let base = baseline_stack();
    let (flow_port, mut sums) = rt.block_on(async { listen_folding(&base) });
    let pair = measure_pair(
        ctx.runs(7, 5),
        || {
            rt.block_on(async {
                let start = Instant::now();
                let (client, root) = connect_9p(&stack, port).await;
                let (fid, _) = client.walk(root, &["big"]).await.expect("walk");
                client.open(fid, OREAD).await.expect("open");
                let count = MSIZE - IOHDRSZ;
                let (mut offset, mut sum, mut got) = (0u64, 0u64, 0usize);
                let mut calls = VecDeque::new();
                loop {
                    while calls.len() < READS_IN_FLIGHT && offset < FILE_LEN as u64 {
                        calls.push_back(client.send(Msg::Tread { fid, offset, count }).await.expect("Tread"));
                        offset += u64::from(count);
                    }
                    let Some(call) = calls.pop_front() else { break };
                    let Msg::Rread { data } = call.reply().await.expect("Rread") else { panic!("not Rread") };
                    got += data.len();
                    sum = fold(sum, &data);
                }
                assert_eq!((got, sum), (FILE_LEN, want), "9p-read: wrong bytes");
                client.clunk(fid).await.expect("clunk");
                throughput_gbps(FILE_LEN as u64, start.elapsed())
            })
        },
        || {
            rt.block_on(async {
                let start = Instant::now();
                let mut flow =
                    stack.create_connection(loopback(flow_port), ConnectOptions::new()).await.expect("connect");
                for off in (0..FILE_LEN).step_by(MSIZE as usize) {
                    flow.write(file.slice(off..off + MSIZE as usize)).await.expect("flow write");
                }
                flow.shutdown(Shutdown::Write).await.expect("shutdown");
                assert_eq!(sums.recv().await, Some(want), "tcp-flow: checksum differs");
                throughput_gbps(FILE_LEN as u64, start.elapsed())
            })
        },
    );
    rt.block_on(stack.disconnect());
    rt.block_on(base.disconnect());
    Ok(vec![ctx.record(&pair.measured).with_baseline("tcp-flow", &pair.baseline)])
}

fn stat(ctx: &Ctx<'_>) -> Result<Vec<Record>, Skip> {
    let cycles: usize = if ctx.quick { 20_000 } else { 50_000 };
    let rt = runtime();
    let fs = Arc::new(MemFs::new());
    fs.add_file("f", "x").expect("add file");
    let stack = stack();
    let port = rt.block_on(async { serve_9p(&stack, fs) });
    let echo_port = rt
        .block_on(async {
            stack.listen(0, None, |mut flow: HostFlow| async move {
                flow.set_nodelay(true).expect("nodelay");
                while let Ok(Some(chunk)) = flow.read().await {
                    if flow.write(chunk).await.is_err() {
                        return;
                    }
                }
            })
        })
        .expect("listen")
        .port();
    let pair = measure_pair(
        ctx.runs(7, 5),
        || {
            rt.block_on(async {
                let (client, root) = connect_9p(&stack, port).await;
                let start = Instant::now();
                let lanes: Vec<_> = (0..CYCLES_IN_FLIGHT)
                    .map(|lane| {
                        let client = client.clone();
                        let fid = 1000 + lane as u32;
                        tokio::spawn(async move {
                            for _ in 0..cycles / CYCLES_IN_FLIGHT {
                                let walk = Msg::Twalk { fid: root, newfid: fid, wnames: vec!["f".into()] };
                                client.rpc(walk).await.expect("walk");
                                client.stat(fid).await.expect("stat");
                                client.clunk(fid).await.expect("clunk");
                            }
                        })
                    })
                    .collect();
                for lane in lanes {
                    lane.await.expect("lane");
                }
                let done = (cycles / CYCLES_IN_FLIGHT * CYCLES_IN_FLIGHT * 3) as u64;
                rate_per_sec(done, start.elapsed())
            })
        },
        || {
            rt.block_on(async {
                let mut flow =
                    stack.create_connection(loopback(echo_port), ConnectOptions::new()).await.expect("connect");
                flow.set_nodelay(true).expect("nodelay");
                let messages = cycles * 3;
                let start = Instant::now();
                // Keep 16 messages in flight, each message its own write.
                let (mut sent, mut got) = (0, 0);
                while got < messages * ECHO {
                    while sent < messages && sent - got / ECHO < CYCLES_IN_FLIGHT {
                        flow.write(Bytes::from_static(&ECHO_BYTES)).await.expect("write");
                        sent += 1;
                    }
                    got += flow.read().await.expect("read").expect("no Eof").len();
                }
                let took = start.elapsed();
                flow.close().await.expect("close");
                rate_per_sec(messages as u64, took)
            })
        },
    );
    rt.block_on(stack.disconnect());
    Ok(vec![ctx.record(&pair.measured).with_baseline("tcp-echo", &pair.baseline)])
}

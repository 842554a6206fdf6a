//! The `tcp-host` benchmark scenario group: the kernel TCP backend
//! (`conflux-tcp-host`) against plain `tokio::net::TcpStream` doing the same
//! work (baseline `raw-tokio`), on loopback, on one current_thread runtime.
//!
//! - `tcp-host-stream` (throughput): one connection, 128 KiB writes cut from a
//!   source buffer, 2 GiB, the reader folds every byte into a checksum
//!   (compared with the writer's) with 128 KiB reads on both sides.
//! - `tcp-host-rtt` (rtt): 64-byte ping-pong, Nagle off on both sides.
//! - `tcp-host-churn` (rate): connect, 1-byte echo, close, the client
//!   closing first (server-first closes collide with TIME_WAIT).
//!
//! Measured and baseline runs alternate; 5 runs each under `--quick`, 7
//! otherwise (loopback figures swing on a busy 2-core machine), except
//! `tcp-host-rtt`: 21 short pairs (4,000 round trips each) under `--quick`,
//! 31 of 10,000 otherwise, so that the median pair ratio does not hang on
//! the one or two pairs a burst of other work on the machine landed in.

use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use conflux_flow::{FlowExt, Shutdown};
use conflux_tcp::{ConnectOptions, TcpFlow, TcpStack};
use conflux_tcp_host::{HostConfig, HostFlow, HostStack};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::data::{drain, expected_sum, listen_folding, offsets, runtime, source};
use crate::{Ctx, Goal, Metric, Record, Scenario, Skip, measure_pair, micros, rate_per_sec, throughput_gbps};

const CHUNK: usize = 128 * 1024;
const TOTAL: u64 = 2 << 30;
const PING: usize = 64;
/// What a ping carries: written from this (static) slice by both sides.
static PING_BYTES: [u8; PING] = [0xa5; PING];
/// The bytes churn echoes, one per connection (cycling), sliced without copying.
static BYTE_VALUES: [u8; 256] = {
    let mut v = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        v[i] = i as u8;
        i += 1;
    }
    v
};

/// The scenarios of the `tcp-host` group, in the order they run.
pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario { name: "tcp-host-stream", metric: Metric::Throughput, goal: Goal::RatioAtLeast(0.95), run: stream },
        Scenario { name: "tcp-host-rtt", metric: Metric::Rtt, goal: Goal::RatioAtMost(1.1), run: rtt },
        Scenario { name: "tcp-host-churn", metric: Metric::Rate, goal: Goal::RatioAtLeast(0.9), run: churn },
    ]
}

fn stack() -> HostStack {
    HostStack::with_config(HostConfig::new().read_chunk(CHUNK))
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A dual-stack tokio listener on an ephemeral port, like the stack's.
async fn raw_listener() -> TcpListener {
    TcpListener::bind("[::]:0").await.expect("bind [::]:0")
}

fn stream(ctx: &Ctx<'_>) -> Result<Vec<Record>, Skip> {
    let rt = runtime();
    let src = source();
    let want = expected_sum(&src, TOTAL, CHUNK);
    let stack = stack();
    let (port, mut sums) = rt.block_on(async { listen_folding(&stack) });
    let raw = rt.block_on(raw_listener());
    let raw_port = raw.local_addr().expect("addr").port();
    let pair = measure_pair(
        ctx.runs(7, 5),
        || {
            rt.block_on(async {
                let start = Instant::now();
                let mut flow = stack.create_connection(loopback(port), ConnectOptions::new()).await.expect("connect");
                for off in offsets(TOTAL, CHUNK) {
                    flow.write(src.slice(off..off + CHUNK)).await.expect("flow write");
                }
                flow.shutdown(Shutdown::Write).await.expect("shutdown");
                assert_eq!(sums.recv().await, Some(want), "tcp-host-stream: checksum differs");
                throughput_gbps(TOTAL, start.elapsed())
            })
        },
        || {
            rt.block_on(async {
                let start = Instant::now();
                let (client, accepted) = tokio::join!(TcpStream::connect(loopback(raw_port)), raw.accept());
                let mut client = client.expect("connect");
                let (server, _) = accepted.expect("accept");
                let reader = tokio::spawn(async move { drain(server, CHUNK).await.1 });
                for off in offsets(TOTAL, CHUNK) {
                    client.write_all(&src[off..off + CHUNK]).await.expect("write");
                }
                client.shutdown().await.expect("shutdown");
                assert_eq!(reader.await.expect("reader"), want, "raw-tokio: checksum differs");
                throughput_gbps(TOTAL, start.elapsed())
            })
        },
    );
    rt.block_on(stack.disconnect());
    Ok(vec![ctx.record(&pair.measured).with_baseline("raw-tokio", &pair.baseline)])
}

fn rtt(ctx: &Ctx<'_>) -> Result<Vec<Record>, Skip> {
    let rounds: u32 = if ctx.quick { 4_000 } else { 10_000 };
    let rt = runtime();
    let stack = stack();
    let port = rt
        .block_on(async {
            stack.listen(0, None, |mut flow: HostFlow| async move {
                flow.set_nodelay(true).expect("nodelay");
                let mut pending = 0usize;
                while let Ok(Some(chunk)) = flow.read().await {
                    pending += chunk.len();
                    while pending >= PING {
                        pending -= PING;
                        if flow.write(Bytes::from_static(&[0x5a; PING])).await.is_err() {
                            return;
                        }
                    }
                }
            })
        })
        .expect("listen")
        .port();
    let raw = rt.block_on(raw_listener());
    let raw_port = raw.local_addr().expect("addr").port();
    let ping = PING_BYTES;
    let pair = measure_pair(
        ctx.runs(31, 21),
        || {
            rt.block_on(async {
                let mut flow = stack.create_connection(loopback(port), ConnectOptions::new()).await.expect("connect");
                flow.set_nodelay(true).expect("nodelay");
                let start = Instant::now();
                for _ in 0..rounds {
                    flow.write(Bytes::from_static(&PING_BYTES)).await.expect("write");
                    let mut got = 0;
                    while got < PING {
                        got += flow.read().await.expect("read").expect("no Eof mid-ping").len();
                    }
                }
                let took = start.elapsed();
                flow.close().await.expect("close");
                micros(took) / f64::from(rounds)
            })
        },
        || {
            rt.block_on(async {
                let (client, accepted) = tokio::join!(TcpStream::connect(loopback(raw_port)), raw.accept());
                let mut client = client.expect("connect");
                let (mut server, _) = accepted.expect("accept");
                client.set_nodelay(true).expect("nodelay");
                server.set_nodelay(true).expect("nodelay");
                let echo = tokio::spawn(async move {
                    let mut buf = [0u8; PING];
                    while server.read_exact(&mut buf).await.is_ok() {
                        if server.write_all(&[0x5a; PING]).await.is_err() {
                            break;
                        }
                    }
                });
                let mut buf = [0u8; PING];
                let start = Instant::now();
                for _ in 0..rounds {
                    client.write_all(&ping).await.expect("write");
                    client.read_exact(&mut buf).await.expect("read");
                }
                let took = start.elapsed();
                drop(client);
                echo.await.expect("echo task");
                micros(took) / f64::from(rounds)
            })
        },
    );
    rt.block_on(stack.disconnect());
    Ok(vec![ctx.record(&pair.measured).with_baseline("raw-tokio", &pair.baseline)])
}

fn churn(ctx: &Ctx<'_>) -> Result<Vec<Record>, Skip> {
    let conns: u32 = if ctx.quick { 3_000 } else { 5_000 };
    let rt = runtime();
    let stack = stack();
    let port = rt
        .block_on(async {
            stack.listen(0, None, |mut flow: HostFlow| async move {
                if let Ok(Some(b)) = flow.read().await {
                    let _ = flow.write(b).await;
                }
                // The client closes first: wait for its FIN, then close.
                while let Ok(Some(_)) = flow.read().await {}
                let _ = flow.close().await;
            })
        })
        .expect("listen")
        .port();
    let raw = std::sync::Arc::new(rt.block_on(raw_listener()));
    let raw_port = raw.local_addr().expect("addr").port();
    let acceptor = {
        let raw = raw.clone();
        rt.spawn(async move {
            while let Ok((mut s, _)) = raw.accept().await {
                tokio::spawn(async move {
                    let mut b = [0u8; 1];
                    if s.read_exact(&mut b).await.is_ok() {
                        let _ = s.write_all(&b).await;
                    }
                    let mut rest = [0u8; 64];
                    while matches!(s.read(&mut rest).await, Ok(n) if n > 0) {}
                });
            }
        })
    };
    let pair = measure_pair(
        ctx.runs(7, 5),
        || {
            rt.block_on(async {
                let start = Instant::now();
                for i in 0..conns {
                    let mut flow =
                        stack.create_connection(loopback(port), ConnectOptions::new()).await.expect("connect");
                    let b = i as usize % 256;
                    flow.write(Bytes::from_static(&BYTE_VALUES[b..b + 1])).await.expect("write");
                    let b = flow.read().await.expect("read").expect("an echo");
                    assert_eq!(b[..], [i as u8]);
                    flow.close().await.expect("close");
                }
                rate_per_sec(u64::from(conns), start.elapsed())
            })
        },
        || {
            rt.block_on(async {
                let start = Instant::now();
                for i in 0..conns {
                    let mut s = TcpStream::connect(loopback(raw_port)).await.expect("connect");
                    s.write_all(&[i as u8]).await.expect("write");
                    let mut b = [0u8; 1];
                    s.read_exact(&mut b).await.expect("read");
                    assert_eq!(b, [i as u8]);
                    s.shutdown().await.expect("shutdown");
                    drop(s);
                }
                rate_per_sec(u64::from(conns), start.elapsed())
            })
        },
    );
    acceptor.abort();
    rt.block_on(stack.disconnect());
    Ok(vec![ctx.record(&pair.measured).with_baseline("raw-tokio", &pair.baseline)])
}

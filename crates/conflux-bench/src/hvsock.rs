//! The `hvsock` benchmark scenario group (`conflux-hvsock`), on one
//! current_thread runtime per scenario.
//!
//! - `hvsock-unix` (throughput): the framed flow over the Unix family, 64 KiB
//!   writes cut from a 1 MiB source (shared, not copied), 128 MiB; the reader
//!   folds every byte into a checksum compared with the writer's. Baseline
//!   `raw-unix`: a plain tokio `UnixStream` writing the same slices with
//!   `write_all` and reading into a 64 KiB buffer, folding the same way.
//! - `hvsock-unix-raw` (throughput): the same with the raw (unframed) flow.
//!
//!   Both run many short pairs (31, or 21 under `--quick`) rather than a few
//!   long ones: a pair's ratio then rarely straddles a burst of other work on
//!   the machine, and the median of the pair ratios holds from run to run.
//! - `hvsock-hybrid` (rate): connect + `CONNECT`/`OK` handshake to a fake VMM
//!   that hands the accepted socket to an in-process guest listener, accepted
//!   there, then both ends dropped (client first). Baseline `unix-connect`: a
//!   plain Unix connect + accept.
//! - `hvsock-decode` (throughput of wire bytes): the decoder fed 1500-byte
//!   reads of a stream of 4096-byte frames carrying 1 MiB, producing payload
//!   `Bytes`, 512 times. Baseline `memcpy`: the same 1500-byte pieces copied
//!   into a buffer.

use std::hint::black_box;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use conflux_flow::{Flow, FlowExt, Shutdown};
use conflux_hvsock::framing::{Decoder, Encoder, Frame};
use conflux_hvsock::testing::FakeVmm;
use conflux_hvsock::{Family, FamilyListener, FramingConfig, HybridFamily, RawFlow, UnixAddr, UnixFamily};
use tokio::io::AsyncWriteExt;
use tokio::net::{UnixListener, UnixStream};

use crate::data::{SOURCE_LEN, drain, expected_sum, fold, offsets, runtime, source};
use crate::{Ctx, Goal, Metric, Record, Scenario, Skip, measure_pair, rate_per_sec, throughput_gbps};

const CHUNK: usize = 64 * 1024;
const TOTAL: u64 = 128 << 20;
const CONNECTS: u64 = 2000;
const DECODE_ROUNDS: usize = 512;

/// The scenarios of the `hvsock` group, in the order they run.
pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario { name: "hvsock-unix", metric: Metric::Throughput, goal: Goal::RatioAtLeast(0.8), run: unix_framed },
        Scenario { name: "hvsock-unix-raw", metric: Metric::Throughput, goal: Goal::RatioAtLeast(0.95), run: unix_raw },
        Scenario { name: "hvsock-hybrid", metric: Metric::Rate, goal: Goal::ReportOnly, run: hybrid },
        Scenario { name: "hvsock-decode", metric: Metric::Throughput, goal: Goal::ReportOnly, run: decode },
    ]
}

/// A fresh directory for this run's sockets (random name, mode 0700), removed on drop.
fn temp_dir(tag: &str) -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    tempfile::Builder::new()
        .prefix(&format!("conflux-bench-{tag}-"))
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir()
        .expect("a temp dir")
}

/// One transfer of [`TOTAL`] bytes over a flow pair; returns GB/s.
async fn flow_run<F: Flow>(mut w: F, mut r: F, src: &Bytes, want: u64) -> f64 {
    let start = Instant::now();
    let src2 = src.clone();
    let writer = tokio::spawn(async move {
        for off in offsets(TOTAL, CHUNK) {
            w.write(src2.slice(off..off + CHUNK)).await.expect("flow write");
        }
        w.shutdown(Shutdown::Write).await.expect("flow shutdown");
        w
    });
    let mut sum = 0;
    while let Some(chunk) = r.read().await.expect("flow read") {
        sum = fold(sum, &chunk);
    }
    let elapsed = start.elapsed();
    let mut w = writer.await.expect("writer task");
    assert_eq!(sum, want, "the reader's checksum differs from the writer's");
    let (a, b) = tokio::join!(w.close(), r.close());
    a.expect("close");
    b.expect("close");
    throughput_gbps(TOTAL, elapsed)
}

/// The baseline: the same bytes over a plain tokio `UnixStream`.
async fn raw_unix_run(path: &std::path::Path, src: &Bytes, want: u64) -> f64 {
    let _ = std::fs::remove_file(path);
    let l = UnixListener::bind(path).expect("bind");
    let (w, r) = tokio::join!(UnixStream::connect(path), l.accept());
    let (mut w, (r, _)) = (w.expect("connect"), r.expect("accept"));
    let start = Instant::now();
    let src2 = src.clone();
    let writer = tokio::spawn(async move {
        for off in offsets(TOTAL, CHUNK) {
            w.write_all(&src2[off..off + CHUNK]).await.expect("write");
        }
        w.shutdown().await.expect("shutdown");
    });
    let (_, sum) = drain(r, CHUNK).await;
    let elapsed = start.elapsed();
    writer.await.expect("writer task");
    assert_eq!(sum, want, "the reader's checksum differs from the writer's");
    throughput_gbps(TOTAL, elapsed)
}

async fn unix_flows(
    path: &std::path::Path,
) -> (RawFlow<conflux_hvsock::UnixSocket>, RawFlow<conflux_hvsock::UnixSocket>) {
    let _ = std::fs::remove_file(path);
    let addr = UnixAddr::new(path);
    let l = UnixFamily.listen(&addr, 16).expect("listen");
    let (c, s) = tokio::join!(UnixFamily.connect(&addr, None), l.accept());
    (RawFlow::new(c.expect("connect")), RawFlow::new(s.expect("accept").0))
}

fn unix_throughput(ctx: &Ctx<'_>, framed: bool) -> Result<Vec<Record>, Skip> {
    let rt = runtime();
    let src = source();
    let want = expected_sum(&src, TOTAL, CHUNK);
    let dir = temp_dir(if framed { "framed" } else { "raw" });
    let path = dir.path().join("s");
    let base = dir.path().join("b");
    let pair = measure_pair(
        ctx.runs(31, 21),
        || {
            rt.block_on(async {
                let (w, r) = unix_flows(&path).await;
                if framed {
                    let cfg = FramingConfig::new();
                    flow_run(w.into_framed(cfg), r.into_framed(cfg), &src, want).await
                } else {
                    flow_run(w, r, &src, want).await
                }
            })
        },
        || rt.block_on(raw_unix_run(&base, &src, want)),
    );
    drop(dir);
    Ok(vec![ctx.record(&pair.measured).with_baseline("raw-unix", &pair.baseline)])
}

fn unix_framed(ctx: &Ctx<'_>) -> Result<Vec<Record>, Skip> {
    unix_throughput(ctx, true)
}

fn unix_raw(ctx: &Ctx<'_>) -> Result<Vec<Record>, Skip> {
    unix_throughput(ctx, false)
}

fn hybrid(ctx: &Ctx<'_>) -> Result<Vec<Record>, Skip> {
    let rt = runtime();
    let dir = temp_dir("hybrid");
    let (vmm, guest, plain) = rt.block_on(async {
        let vmm = FakeVmm::start(dir.path().join("v.sock")).expect("fake VMM");
        let guest = vmm.guest_listener(52, 1024);
        let plain = UnixFamily.listen(&UnixAddr::new(dir.path().join("plain")), 1024).expect("listen");
        (vmm, guest, plain)
    });
    let addr = vmm.addr(52);
    let plain_addr = UnixAddr::new(dir.path().join("plain"));
    let pair = measure_pair(
        ctx.runs(5, 3),
        || {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..CONNECTS {
                    let (c, s) = tokio::join!(HybridFamily.connect(&addr, None), guest.accept());
                    let (c, s) = (c.expect("hybrid connect"), s.expect("guest accept"));
                    drop(c); // client closes first
                    drop(s);
                }
                rate_per_sec(CONNECTS, start.elapsed())
            })
        },
        || {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..CONNECTS {
                    let (c, s) = tokio::join!(UnixFamily.connect(&plain_addr, None), plain.accept());
                    let (c, s) = (c.expect("unix connect"), s.expect("accept"));
                    drop(c);
                    drop(s);
                }
                rate_per_sec(CONNECTS, start.elapsed())
            })
        },
    );
    rt.block_on(async move { drop(vmm) });
    drop(dir);
    Ok(vec![ctx.record(&pair.measured).with_baseline("unix-connect", &pair.baseline)])
}

fn decode(ctx: &Ctx<'_>) -> Result<Vec<Record>, Skip> {
    let src = source();
    let wire: Bytes = {
        let mut enc = Encoder::new();
        let mut data = src.clone();
        enc.push_data(&mut data, usize::MAX);
        Bytes::from(enc.to_vec())
    };
    const READ: usize = 1500;
    let bytes = (wire.len() * DECODE_ROUNDS) as u64;
    let pair = measure_pair(
        ctx.runs(7, 5),
        || {
            let start = Instant::now();
            let mut payload = 0usize;
            for _ in 0..DECODE_ROUNDS {
                let mut dec = Decoder::new();
                let mut buf = BytesMut::with_capacity(64 * 1024);
                for piece in wire.chunks(READ) {
                    buf.extend_from_slice(piece);
                    while let Some(frame) = dec.decode(&mut buf).expect("valid stream") {
                        if let Frame::Data(d) = frame {
                            payload += black_box(d).len();
                        }
                    }
                }
            }
            let elapsed = start.elapsed();
            assert_eq!(payload, SOURCE_LEN * DECODE_ROUNDS, "every payload byte decoded");
            throughput_gbps(bytes, elapsed)
        },
        || {
            let start = Instant::now();
            let mut buf = vec![0u8; 64 * 1024];
            let mut at = 0;
            for _ in 0..DECODE_ROUNDS {
                for piece in wire.chunks(READ) {
                    if at + piece.len() > buf.len() {
                        at = 0;
                    }
                    buf[at..at + piece.len()].copy_from_slice(piece);
                    at += piece.len();
                    black_box(&buf);
                }
            }
            throughput_gbps(bytes, start.elapsed())
        },
    );
    Ok(vec![ctx.record(&pair.measured).with_baseline("memcpy", &pair.baseline)])
}

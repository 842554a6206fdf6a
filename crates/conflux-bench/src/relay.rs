//! The `relay` benchmark scenario group: the `conflux` binary as a process,
//! relaying a kernel TCP client to a framed hybrid vsock echo, against Debian
//! socat relaying the same client to the same echo code without framing.
//!
//! Both sides share one setup per scenario: a fake Firecracker VMM
//! (`conflux_hvsock::testing::FakeVmm`) on a Unix socket in a fresh directory,
//! with an echo behind its guest listener speaking the shutdown framing; the
//! same echo code without framing on a plain Unix socket; and, for the
//! `direct-echo` figure, the same echo code on kernel TCP (`conflux-tcp-host`).
//! The echo reads chunks and writes each back, and at Eof shuts its write side
//! and closes. Its framing is part of the measured side.
//!
//! - `conflux relay tcp-listen://127.0.0.1:P "fc-vsock://DIR/v.sock?port=5201&framing=shutdown"`
//!   (the binary: `CONFLUX_BIN`, or `conflux` beside this executable; `cargo
//!   xtask bench` builds it in release and sets `CONFLUX_BIN`).
//! - `socat -b 131072 -t 30 TCP-LISTEN:P2,bind=127.0.0.1,reuseaddr,fork UNIX-CONNECT:DIR/echo.sock`.
//!
//! Scenarios:
//!
//! - `relay` (throughput): one connection sends 1 GiB in 128 KiB writes cut
//!   from a 1 MiB source, shuts its write side, and reads the echo back,
//!   folding every byte into a checksum compared with the source's; the
//!   figure is 1 GiB over the time from connect to the echo's Eof. Baseline
//!   `socat-relay` (goal ratio >= 0.9), and a second record with baseline
//!   `direct-echo` (the client straight to the TCP echo, no relay; no goal).
//!   Runs: relay, socat, direct, interleaved; 5 each (3 under `--quick`, the
//!   size stays 1 GiB).
//! - `relay-churn` (rate): connections per second, one at a time: connect,
//!   1 KiB written, write side shut (the client closes first), the 1 KiB echo
//!   read to Eof and compared, close. 2,000 connections per run after 200 of
//!   warm-up on each side (500 after 50 under `--quick`); baseline
//!   `socat-relay` (socat forks a process per connection), goal ratio >= 2.0.
//!
//! Every run is bounded by a timeout; a run that loses, reorders or truncates
//! a byte, or times out, panics (the scenario is reported failed).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use conflux_flow::{Flow, FlowExt, Shutdown};
use conflux_hvsock::testing::FakeVmm;
use conflux_hvsock::{Family, FamilyListener, FramingConfig, RawFlow, UnixAddr, UnixFamily};
use conflux_tcp::TcpStack;
use conflux_tcp_host::HostStack;
use conflux_testkit::tools::free_port;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::data::{drain, expected_sum, offsets, runtime, source};
use crate::proc::Proc;
use crate::{Ctx, Goal, Metric, Record, Scenario, Skip, rate_per_sec, throughput_gbps};

const CHUNK: usize = 128 * 1024;
const TOTAL: u64 = 1 << 30;
const ECHO: usize = 1024;
/// The guest port of the framed echo behind the fake VMM.
const GUEST_PORT: u32 = 5201;
/// The bound on one run (a transfer or a run of connections).
const RUN_TIMEOUT: Duration = Duration::from_secs(120);
/// The bound on a relay or socat coming up.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// The scenarios of the `relay` group, in the order they run.
pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario { name: "relay", metric: Metric::Throughput, goal: Goal::RatioAtLeast(0.9), run: throughput },
        Scenario { name: "relay-churn", metric: Metric::Rate, goal: Goal::RatioAtLeast(2.0), run: churn },
    ]
}

/// The `conflux` binary: `CONFLUX_BIN`, or `conflux` beside this executable.
fn conflux_bin() -> Result<PathBuf, Skip> {
    let path = match std::env::var_os("CONFLUX_BIN") {
        Some(p) => PathBuf::from(p),
        None => std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(|d| d.join("conflux")))
            .ok_or_else(|| Skip::new("conflux: cannot locate this executable"))?,
    };
    if path.is_file() {
        Ok(path)
    } else {
        Err(Skip::new(format!(
            "conflux: no binary at {} (cargo xtask bench builds it; or set CONFLUX_BIN)",
            path.display()
        )))
    }
}

fn have_socat() -> Result<(), Skip> {
    match Command::new("socat").arg("-V").stdout(Stdio::null()).stderr(Stdio::null()).status() {
        Ok(s) if s.success() => Ok(()),
        _ => Err(Skip::new("socat: not installed (cargo xtask install)")),
    }
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Waits until `port` accepts a connection (closing it at once), checking
/// that `proc` is still running.
async fn wait_listening(port: u16, proc: &mut Proc) {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        proc.check_alive();
        if TcpStream::connect(loopback(port)).await.is_ok() {
            return;
        }
        assert!(Instant::now() < deadline, "{} not listening on port {port} after {READY_TIMEOUT:?}", proc.what);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The echo: every chunk written back as read; at Eof the write side shut,
/// then the flow closed. Errors end it quietly (the client's check fails).
async fn echo<F: Flow>(mut flow: F) {
    loop {
        match flow.read().await {
            Ok(Some(chunk)) => {
                if flow.write(chunk).await.is_err() {
                    break;
                }
            }
            Ok(None) => {
                let _ = flow.shutdown(Shutdown::Write).await;
                break;
            }
            Err(_) => break,
        }
    }
    let _ = flow.close().await;
}

/// The echo servers and the two relays of one scenario.
struct Setup {
    _dir: tempfile::TempDir,
    _vmm: FakeVmm,
    relay: Proc,
    socat: Proc,
    relay_port: u16,
    socat_port: u16,
    direct_port: u16,
    _stack: HostStack,
}

/// Starts the echoes (within the current runtime) and the two relays.
async fn setup(conflux: &Path) -> Setup {
    let dir = tempfile::Builder::new().prefix("conflux-bench-relay-").tempdir().expect("a temp dir");
    let vmm_path = dir.path().join("v.sock");
    let vmm = FakeVmm::start(&vmm_path).expect("fake VMM");
    let guest = vmm.guest_listener(GUEST_PORT, 1024);
    tokio::spawn(async move {
        while let Ok((sock, _)) = guest.accept().await {
            tokio::spawn(echo(RawFlow::new(sock).into_framed(FramingConfig::new())));
        }
    });
    let echo_path = dir.path().join("echo.sock");
    let raw = UnixFamily.listen(&UnixAddr::new(&echo_path), 1024).expect("listen on the raw echo socket");
    tokio::spawn(async move {
        while let Ok((sock, _)) = raw.accept().await {
            tokio::spawn(echo(RawFlow::new(sock)));
        }
    });
    let stack = HostStack::new();
    let direct_port = stack.listen(0, None, echo).expect("listen for the direct echo").port();

    let relay_port = free_port();
    let to = format!("fc-vsock://{}?port={GUEST_PORT}&framing=shutdown", vmm_path.display());
    let mut relay = Proc::spawn(
        "conflux relay",
        Command::new(conflux)
            .args(["relay", &format!("tcp-listen://127.0.0.1:{relay_port}"), &to])
            .stderr(Stdio::null()),
    );
    let socat_port = free_port();
    let mut socat = Proc::spawn(
        "socat",
        Command::new("socat").args([
            "-b",
            "131072",
            "-t",
            "30",
            &format!("TCP-LISTEN:{socat_port},bind=127.0.0.1,reuseaddr,fork"),
            &format!("UNIX-CONNECT:{}", echo_path.display()),
        ]),
    );
    wait_listening(relay_port, &mut relay).await;
    wait_listening(socat_port, &mut socat).await;
    Setup { _dir: dir, _vmm: vmm, relay, socat, relay_port, socat_port, direct_port, _stack: stack }
}

/// One transfer: 1 GiB out and back through `port`; returns GB/s.
async fn transfer(port: u16, src: &Bytes, want: u64) -> f64 {
    let run = async {
        let start = Instant::now();
        let stream = TcpStream::connect(loopback(port)).await.expect("connect");
        let (r, mut w) = stream.into_split();
        let src = src.clone();
        let writer = tokio::spawn(async move {
            for off in offsets(TOTAL, CHUNK) {
                w.write_all(&src[off..off + CHUNK]).await.expect("write");
            }
            w.shutdown().await.expect("shutdown");
            w
        });
        let (_, sum) = drain(r, CHUNK).await;
        let elapsed = start.elapsed();
        drop(writer.await.expect("writer task"));
        assert_eq!(sum, want, "the echo's checksum differs from the source's (port {port})");
        throughput_gbps(TOTAL, elapsed)
    };
    tokio::time::timeout(RUN_TIMEOUT, run).await.unwrap_or_else(|_| panic!("a 1 GiB echo via port {port} timed out"))
}

/// `count` connections one after another through `port`; returns per second.
async fn connections(port: u16, count: u64, payload: &[u8]) -> f64 {
    let run = async {
        let mut back = Vec::with_capacity(ECHO);
        let start = Instant::now();
        for i in 0..count {
            let mut s = TcpStream::connect(loopback(port)).await.expect("connect");
            s.write_all(payload).await.expect("write");
            s.shutdown().await.expect("shutdown"); // the client closes first
            back.clear();
            s.read_to_end(&mut back).await.expect("read the echo");
            assert!(back == payload, "connection {i} via port {port}: echo of {} bytes differs", back.len());
        }
        rate_per_sec(count, start.elapsed())
    };
    tokio::time::timeout(RUN_TIMEOUT, run)
        .await
        .unwrap_or_else(|_| panic!("{count} connections via port {port} timed out"))
}

fn throughput(ctx: &Ctx<'_>) -> Result<Vec<Record>, Skip> {
    let conflux = conflux_bin()?;
    have_socat()?;
    let rt = runtime();
    let src = source();
    let want = expected_sum(&src, TOTAL, CHUNK);
    let mut s = rt.block_on(setup(&conflux));
    let runs = ctx.runs(5, 3);
    let (mut ours, mut socat, mut direct) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        ours.push(rt.block_on(transfer(s.relay_port, &src, want)));
        socat.push(rt.block_on(transfer(s.socat_port, &src, want)));
        direct.push(rt.block_on(transfer(s.direct_port, &src, want)));
    }
    s.relay.check_alive();
    s.socat.check_alive();
    rt.block_on(async move { drop(s) });
    Ok(vec![
        ctx.record(&ours).with_baseline("socat-relay", &socat),
        Record::new(ctx.scenario.name, ctx.scenario.metric, &ours).with_baseline("direct-echo", &direct),
    ])
}

fn churn(ctx: &Ctx<'_>) -> Result<Vec<Record>, Skip> {
    let conflux = conflux_bin()?;
    have_socat()?;
    let (count, warmup) = if ctx.quick { (500, 50) } else { (2000, 200) };
    let rt = runtime();
    let src = source();
    let payload = &src[..ECHO];
    let mut s = rt.block_on(setup(&conflux));
    rt.block_on(connections(s.relay_port, warmup, payload));
    rt.block_on(connections(s.socat_port, warmup, payload));
    let pair = crate::measure_pair(
        ctx.runs(5, 3),
        || rt.block_on(connections(s.relay_port, count, payload)),
        || rt.block_on(connections(s.socat_port, count, payload)),
    );
    s.relay.check_alive();
    s.socat.check_alive();
    rt.block_on(async move { drop(s) });
    Ok(vec![ctx.record(&pair.measured).with_baseline("socat-relay", &pair.baseline)])
}

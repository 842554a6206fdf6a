//! What the end-to-end tests share: the `conflux` binary as a child process,
//! a framed echo behind a fake Firecracker VMM (the far side of a relay),
//! external clients run with a deadline, and SHA-256 of what they moved.
//!
//! Every wait is bounded; every child is killed and reaped on drop; sockets
//! live in a fresh directory removed on drop; TCP only on 127.0.0.1.
#![allow(dead_code, unreachable_pub)] // each e2e test binary uses part of this

pub mod http;

use std::io::Read;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use conflux_flow::{FlowError, FlowExt, Shutdown};
use conflux_hvsock::testing::{FakeVmm, GuestListener};
use conflux_hvsock::{FamilyListener, FramedFlow, FramingConfig, HybridAddr, RawFlow, UnixSocket};
use conflux_testkit::TempDir;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_conflux");

/// The bound on a whole client run (socat, nc, curl) or relay start.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// The framed flow the far side speaks.
pub type Framed = FramedFlow<UnixSocket<HybridAddr>>;

/// SHA-256 of `data`, as lowercase hex.
pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

/// The framing both sides of a test use: a short close timeout, so a peer
/// that never acknowledges costs little.
pub fn framing() -> FramingConfig {
    FramingConfig::new().close_timeout(Duration::from_secs(2))
}

/// The port of a TCP listener on `addr` in `table` (`/proc/<pid>/net/tcp`,
/// the table of process `pid`'s network namespace), if there is one.
pub fn listening_port_in(table: &str, addr: Ipv4Addr) -> Option<u16> {
    let want = format!("{:08X}", u32::from_le_bytes(addr.octets()));
    let text = std::fs::read_to_string(table).ok()?;
    text.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let (a, port) = f.get(1)?.split_once(':')?;
        (a == want && f.get(3) == Some(&"0A")).then(|| u16::from_str_radix(port, 16).ok()).flatten()
    })
}

/// The port of the first `listening on tcp://127.0.0.1:PORT` in `log`.
fn listening_port(log: &str) -> Option<u16> {
    let rest = log.split("listening on tcp://127.0.0.1:").nth(1)?;
    rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

/// `conflux relay tcp-listen://127.0.0.1:0 TO ...` as a child process,
/// killed on drop; its stderr is collected (shown when a test fails).
pub struct Relay {
    child: Child,
    /// The TCP port it listens on.
    pub port: u16,
    stderr: Arc<Mutex<String>>,
}

impl Relay {
    /// Starts the relay to `to` with `extra` options and waits (bounded) until
    /// it listens.
    pub fn start(to: &str, extra: &[&str]) -> Relay {
        Relay::start_in(None, to, extra)
    }

    /// [`Relay::start`] inside network namespace `netns` (under `ip netns
    /// exec`). The relay listens on port 0; the port is read from its
    /// `listening on tcp://127.0.0.1:PORT` log line.
    pub fn start_in(netns: Option<&str>, to: &str, extra: &[&str]) -> Relay {
        let from = "tcp-listen://127.0.0.1:0";
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, BIN]);
                c
            }
            None => Command::new(BIN),
        };
        let mut child = cmd
            .arg("relay")
            .args(extra)
            .args([from, to])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn conflux relay");
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().expect("stderr piped");
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let mut relay = Relay { child, port: 0, stderr };
        let started = Instant::now();
        loop {
            if let Some(port) = listening_port(&relay.stderr()) {
                relay.port = port;
                return relay;
            }
            if let Ok(Some(status)) = relay.child.try_wait() {
                panic!("conflux relay {from} {to} exited ({status}) before listening:\n{}", relay.stderr());
            }
            assert!(started.elapsed() < DEADLINE, "conflux relay not listening:\n{}", relay.stderr());
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// What it wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.port))
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("conflux relay stderr:\n{}", self.stderr());
        }
    }
}

/// How a far-side flow ended, as the framed flow reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// A clean Eof (the peer's ShutdownWrite or Close).
    Eof,
    /// The flow reported a reset.
    Reset,
    /// Any other error (its kind and text).
    Error(String),
}

fn end_of(e: &FlowError) -> End {
    if e.is_reset() { End::Reset } else { End::Error(format!("{:?}: {e}", e.kind())) }
}

/// What the far side saw of one flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// The bytes read before the end.
    pub bytes: usize,
    /// Their SHA-256.
    pub sha256: String,
    /// How reading ended.
    pub end: End,
}

/// Events of the far side, in order, for each accepted flow.
#[derive(Debug)]
pub enum Event {
    /// The first bytes of a flow arrived.
    FirstBytes,
    /// A flow's reading ended.
    Done(Seen),
}

/// What the far side does with each accepted flow.
#[derive(Debug, Clone, Copy)]
pub enum Mode {
    /// Reads to Eof, then writes everything back, shuts its write side and
    /// closes: a client that reads the echo has seen half-close both ways.
    EchoAfterEof,
    /// Reads until this many bytes arrived, then abandons the transport:
    /// no Close, no ShutdownWrite, the socket simply released.
    AbortAfter(usize),
}

/// The far side: a fake VMM's Unix socket with the framed echo behind its
/// guest listener (port [`FramedEcho::PORT`]).
pub struct FramedEcho {
    _dir: TempDir,
    vmm: FakeVmm,
    /// `fc-vsock:///<dir>/v.sock?port=5000&framing=shutdown`.
    pub uri: String,
    events: mpsc::UnboundedReceiver<Event>,
}

impl FramedEcho {
    /// The guest port.
    pub const PORT: u32 = 5000;

    /// Starts the fake VMM and the echo on the current tokio runtime.
    pub fn start(mode: Mode) -> FramedEcho {
        let (dir, vmm, uri) = fake_vmm("echo");
        let guest = vmm.guest_listener(Self::PORT, 64);
        let (tx, events) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((sock, _)) = guest.accept().await {
                let flow = RawFlow::new(sock).into_framed(framing());
                tokio::spawn(serve(flow, mode, tx.clone()));
            }
        });
        FramedEcho { _dir: dir, vmm, uri, events }
    }

    /// The next event, within `DEADLINE`.
    pub async fn next(&mut self) -> Event {
        conflux_testkit::within("the far side's next event", DEADLINE, self.events.recv())
            .await
            .expect("the echo task ended")
    }

    /// The next flow's end (skipping `FirstBytes`).
    pub async fn done(&mut self) -> Seen {
        loop {
            if let Event::Done(seen) = self.next().await {
                return seen;
            }
        }
    }

    /// The fake VMM (for more guest listeners).
    pub fn vmm(&self) -> &FakeVmm {
        &self.vmm
    }
}

/// A fake VMM on `<fresh dir>/v.sock` and the framed fc-vsock URI of its
/// guest port [`FramedEcho::PORT`].
pub fn fake_vmm(tag: &str) -> (TempDir, FakeVmm, String) {
    let dir = TempDir::new(tag);
    let path = dir.path().join("v.sock");
    let vmm = FakeVmm::start(&path).expect("start the fake VMM");
    let uri = fc_vsock_uri(&path, FramedEcho::PORT);
    (dir, vmm, uri)
}

/// `fc-vsock://<path>?port=N&framing=shutdown`.
pub fn fc_vsock_uri(path: &Path, port: u32) -> String {
    format!("fc-vsock://{}?port={port}&framing=shutdown", path.display())
}

async fn serve(mut flow: Framed, mode: Mode, tx: mpsc::UnboundedSender<Event>) {
    let mut got = Vec::new();
    let end = loop {
        match flow.read().await {
            Ok(Some(chunk)) => {
                if got.is_empty() {
                    let _ = tx.send(Event::FirstBytes);
                }
                got.extend_from_slice(&chunk);
                if let Mode::AbortAfter(n) = mode
                    && got.len() >= n
                {
                    let _ = flow.abort().await;
                    let _ = tx.send(Event::Done(Seen { bytes: got.len(), sha256: sha256_hex(&got), end: End::Eof }));
                    return;
                }
            }
            Ok(None) => break End::Eof,
            Err(e) => break end_of(&e),
        }
    };
    let seen = Seen { bytes: got.len(), sha256: sha256_hex(&got), end: end.clone() };
    let _ = tx.send(Event::Done(seen));
    if end != End::Eof {
        let _ = flow.abort().await;
        return;
    }
    let data = Bytes::from(got);
    for at in (0..data.len()).step_by(64 * 1024) {
        if flow.write(data.slice(at..(at + 64 * 1024).min(data.len()))).await.is_err() {
            return;
        }
    }
    let _ = flow.shutdown(Shutdown::Write).await;
    let _ = flow.close().await;
}

/// Runs `cmd` with stdin from `input` (a file) and stdout captured, killing
/// it after `DEADLINE`. Blocking: call from `spawn_blocking`.
pub fn run_client(what: &str, cmd: &mut Command, input: &Path) -> Output {
    let stdin = std::fs::File::open(input).expect("open the client's input");
    let child = cmd
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    wait_output(what, child)
}

/// Waits for `child`'s output, killing it after [`DEADLINE`].
pub fn wait_output(what: &str, child: Child) -> Output {
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(DEADLINE) {
        Ok(out) => out.unwrap_or_else(|e| panic!("{what}: {e}")),
        Err(_) => {
            // Only this child, by its id.
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            panic!("{what} did not finish within {DEADLINE:?}");
        }
    }
}

/// Panics with the client's stderr unless it exited 0.
pub fn assert_success(what: &str, status: ExitStatus, out: &Output) {
    assert!(status.success(), "{what} exited {status}; stderr:\n{}", String::from_utf8_lossy(&out.stderr));
}

/// A file in `dir` holding `data`.
pub fn write_input(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, data).expect("write the client's input");
    path
}

/// The guest listener of port `port` on `vmm`, for a far side of a test's own.
pub fn guest(vmm: &FakeVmm, port: u32) -> GuestListener {
    vmm.guest_listener(port, 64)
}

/// A test namespace with the TAP device `<namespace>t` inside it (names at
/// most 15 bytes), both removed on drop.
pub struct NetnsTap {
    /// The namespace's name.
    pub netns: String,
    /// The TAP device's name (inside the namespace).
    pub tap: String,
    _ns: conflux_testkit::Netns,
}

impl NetnsTap {
    /// Creates the namespace, its loopback up, and the TAP in it, its kernel
    /// side `kernel_addr` (e.g. `10.77.0.1/24`) and up.
    pub fn new(kernel_addr: &str) -> NetnsTap {
        let ns = conflux_testkit::Netns::create("e").expect("a test namespace");
        let tap = format!("{}t", ns.name());
        for args in [
            &["tuntap", "add", "dev", tap.as_str(), "mode", "tap"][..],
            &["addr", "add", kernel_addr, "dev", &tap],
            &["link", "set", &tap, "up"],
        ] {
            ns.ip(args).expect("set up the TAP");
        }
        NetnsTap { netns: ns.name().to_owned(), tap, _ns: ns }
    }
}

/// A child process killed and reaped on drop.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits (bounded) until process `child` has a TCP listener on `addr` in
/// its network namespace; returns its port.
pub fn wait_listening_in(what: &str, child: &mut Child, addr: Ipv4Addr) -> u16 {
    let table = format!("/proc/{}/net/tcp", child.id());
    let started = Instant::now();
    loop {
        if let Some(port) = listening_port_in(&table, addr) {
            return port;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited ({status}) before listening on {addr}");
        }
        assert!(started.elapsed() < DEADLINE, "{what} not listening on {addr} after {DEADLINE:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

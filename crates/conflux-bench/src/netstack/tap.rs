//! `netstack-tap-tx` / `netstack-tap-rx`: one stream between a stack on a
//! TAP device and a kernel socket in a network namespace the bench creates
//! (and removes), MTU 1500 on both paths, 64 KiB socket buffers on the
//! stack's side (the kernel's are its defaults, the same for both sides).
//!
//! - measured: our `NetStack` on a [`TapDevice`] (made by [`our_tap`]), on a
//!   current_thread runtime, 10.81.0.2 beside the kernel's 10.81.0.1;
//! - baseline `smoltcp-tuntap`: a plain smoltcp poll loop (one interface,
//!   one socket, `phy::wait` between polls) over smoltcp's own
//!   `phy::TunTapInterface`, same MTU, no offloads, 10.82.0.2 beside the
//!   kernel's 10.82.0.1 on a second TAP in the same namespace.
//!
//! The kernel side is this binary re-executed under `ip netns exec` in the
//! role [`PEER_ROLE`]: a sink that folds what each connection sends and
//! prints the sum (tx), and a source that sends the number of bytes the
//! client asks for (rx). `tx` moves 256 MiB (64 MiB under `--quick`) from
//! the stack to the kernel, `rx` the other way, in 64 KiB slices of the
//! shared source, every byte folded into a checksum at the reader. Needs
//! root, `ip` and `/dev/net/tun`; otherwise the scenario is skipped with
//! the reason.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::io::AsRawFd;
use std::process::{Child, ExitCode, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use conflux_flow::{FlowExt, Shutdown};
use conflux_netstack::{NetStack, StackConfig, TapDevice};
use conflux_tcp::{ConnectOptions, TcpStack};
use smoltcp::iface::{Config, Interface, SocketSet};
use smoltcp::phy::{self, Medium, TunTapInterface};
use smoltcp::socket::tcp;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpCidr};
use tokio::sync::mpsc;

use super::child_command;
use crate::data::{SOURCE_LEN, expected_sum as expected, fold, offsets, runtime, source};
use crate::{Ctx, Record, Skip, measure_pair, throughput_gbps};

/// The child role of the kernel-side peer.
pub(super) const PEER_ROLE: &str = "tap-peer";
const MTU: usize = 1500;
const BUFFERS: usize = 64 * 1024;
const CHUNK: usize = 64 * 1024;
/// Kernel and stack addresses of our TAP's link and of the baseline's.
const OURS_NET: (Ipv4Addr, Ipv4Addr) = (Ipv4Addr::new(10, 81, 0, 1), Ipv4Addr::new(10, 81, 0, 2));
const RAW_NET: (Ipv4Addr, Ipv4Addr) = (Ipv4Addr::new(10, 82, 0, 1), Ipv4Addr::new(10, 82, 0, 2));
/// The bound on one run.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Our stack's TAP device, with virtio net header offloads (TSO/GSO both
/// ways, partial checksums): issue 12 item 6. Every TAP the bench gives our
/// stack is opened here. The `smoltcp-tuntap` baseline has no offloads.
fn our_tap(name: &str, mtu: usize) -> std::io::Result<TapDevice> {
    TapDevice::open_with_offloads(name, mtu)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Dir {
    /// Stack -> kernel.
    Tx,
    /// Kernel -> stack.
    Rx,
}

pub(super) fn tx(ctx: &Ctx<'_>) -> Result<Vec<Record>, Skip> {
    run(ctx, Dir::Tx)
}

pub(super) fn rx(ctx: &Ctx<'_>) -> Result<Vec<Record>, Skip> {
    run(ctx, Dir::Rx)
}

/// Whether this process's effective uid is 0 (from `/proc/self/status`).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("Uid:")).map(|u| u.split_whitespace().nth(1) == Some("0")))
        .unwrap_or(false)
}

fn can_run() -> Result<(), Skip> {
    if !is_root() {
        return Err(Skip::new("root: TAP devices and namespaces need CAP_NET_ADMIN"));
    }
    if std::process::Command::new("ip").arg("-V").stdout(Stdio::null()).stderr(Stdio::null()).status().is_err() {
        return Err(Skip::new("iproute2: the ip command is not on PATH"));
    }
    if !std::path::Path::new("/dev/net/tun").exists() {
        return Err(Skip::new("tap: /dev/net/tun is missing"));
    }
    Ok(())
}

fn ip(args: &[&str]) {
    let out = std::process::Command::new("ip").args(args).stdin(Stdio::null()).output().expect("run ip");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
}

/// The namespace with the kernel's side of both TAPs and the peer process;
/// dropping it kills the peer and removes the namespace.
struct Env {
    ns: String,
    peer: Option<Child>,
    sink_port: u16,
    source_port: u16,
    /// The sums the peer's sink printed, one per connection, in order.
    sums: mpsc::UnboundedReceiver<u64>,
}

impl Env {
    /// Creates the namespace, moves the TAPs `ours` and `raw` (already
    /// opened) into it, configures the kernel's side and starts the peer.
    fn create(ns: String, ours: &str, raw: &str) -> Env {
        ip(&["netns", "add", &ns]);
        let mut env = Env { ns, peer: None, sink_port: 0, source_port: 0, sums: mpsc::unbounded_channel().1 };
        let mtu = MTU.to_string();
        for (tap, (kernel, _)) in [(ours, OURS_NET), (raw, RAW_NET)] {
            ip(&["link", "set", "dev", tap, "netns", &env.ns]);
            ip(&["-n", &env.ns, "link", "set", "dev", tap, "mtu", &mtu]);
            ip(&["-n", &env.ns, "addr", "add", &format!("{kernel}/24"), "dev", tap]);
            ip(&["-n", &env.ns, "link", "set", "dev", tap, "up"]);
        }
        ip(&["-n", &env.ns, "link", "set", "dev", "lo", "up"]);
        let exe = child_command(PEER_ROLE);
        let mut cmd = std::process::Command::new("ip");
        cmd.args(["netns", "exec", &env.ns]).arg(exe.get_program()).args(exe.get_args());
        let mut peer =
            cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().expect("start the peer");
        let stdout = peer.stdout.take().expect("the peer's stdout");
        env.peer = Some(peer);
        let (ports_tx, ports_rx) = std::sync::mpsc::channel();
        let (sums_tx, sums_rx) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(first)) = lines.next() {
                let _ = ports_tx.send(first);
            }
            for line in lines.map_while(Result::ok) {
                if let Some(sum) = line.strip_prefix("sum ").and_then(|s| s.parse().ok()) {
                    let _ = sums_tx.send(sum);
                }
            }
        });
        let first = ports_rx.recv_timeout(Duration::from_secs(10)).expect("the peer's ports within 10 s");
        let ports: Vec<u16> =
            first.strip_prefix("ports ").unwrap_or_default().split(' ').filter_map(|p| p.parse().ok()).collect();
        assert_eq!(ports.len(), 2, "the peer printed {first:?}");
        (env.sink_port, env.source_port, env.sums) = (ports[0], ports[1], sums_rx);
        env
    }

    /// Where the stack on the link whose kernel address is `kernel` sends (tx) or
    /// asks for (rx) the stream.
    fn addr(&self, kernel: Ipv4Addr, dir: Dir) -> SocketAddr {
        SocketAddr::from((kernel, if dir == Dir::Tx { self.sink_port } else { self.source_port }))
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some(mut peer) = self.peer.take() {
            let _ = peer.kill();
            let _ = peer.wait();
        }
        let out = std::process::Command::new("ip").args(["netns", "del", &self.ns]).output();
        if !out.is_ok_and(|o| o.status.success()) {
            eprintln!("   cleanup: ip netns del {} failed", self.ns);
        }
    }
}

fn run(ctx: &Ctx<'_>, dir: Dir) -> Result<Vec<Record>, Skip> {
    can_run()?;
    let total: u64 = if ctx.quick { 64 << 20 } else { 256 << 20 };
    let base = format!("cfx{:x}b{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
    let (ns, ours_name, raw_name) = (format!("{base}n"), format!("{base}o"), format!("{base}r"));
    assert!(ns.len() <= 15, "interface names too long: {ns}");
    let rt = runtime();
    let src = source();
    let want = expected(&src, total, CHUNK);
    let dev = rt.block_on(async { our_tap(&ours_name, MTU) }).expect("open our TAP");
    let mut raw = RawTap::open(&raw_name).expect("open smoltcp's TunTapInterface");
    let mut env = Env::create(ns, &ours_name, &raw_name);
    let stack = rt.block_on(async {
        let config = StackConfig::new()
            .ipv4(OURS_NET.1, 24)
            .mac([0x02, 0, 0, 0, 0x81, 0x02])
            .buffers(BUFFERS, BUFFERS)
            .ephemeral_ports(1024..=65535)
            .seed(7);
        NetStack::new(config, dev)
    });
    let (ours_at, raw_at) = (env.addr(OURS_NET.0, dir), env.addr(RAW_NET.0, dir));
    // Both sides take the peer's sums in turn.
    let sums = std::cell::Cell::new(Some(std::mem::replace(&mut env.sums, mpsc::unbounded_channel().1)));
    let with_sums = |f: &mut dyn FnMut(&mut mpsc::UnboundedReceiver<u64>) -> f64| {
        let mut rx = sums.take().expect("one run at a time");
        let gbps = f(&mut rx);
        sums.set(Some(rx));
        gbps
    };
    let pair = measure_pair(
        ctx.runs(7, 5),
        || with_sums(&mut |rx| rt.block_on(ours_run(&stack, ours_at, dir, &src, total, want, rx))),
        || with_sums(&mut |rx| raw.run(raw_at, dir, &src, total, want, rx)),
    );
    rt.block_on(stack.disconnect());
    drop(stack);
    drop(env);
    Ok(vec![ctx.record(&pair.measured).with_baseline("smoltcp-tuntap", &pair.baseline)])
}

/// One run on our stack; GB/s.
async fn ours_run(
    stack: &NetStack,
    at: SocketAddr,
    dir: Dir,
    src: &Bytes,
    total: u64,
    want: u64,
    sums: &mut mpsc::UnboundedReceiver<u64>,
) -> f64 {
    let work = async {
        let start = Instant::now();
        let mut flow = stack
            .create_connection(at, ConnectOptions::new().timeout(Duration::from_secs(10)))
            .await
            .unwrap_or_else(|e| panic!("connect to the kernel peer at {at}: {e}"));
        let sum = match dir {
            Dir::Tx => {
                for off in offsets(total, CHUNK) {
                    flow.write(src.slice(off..off + CHUNK)).await.expect("flow write");
                }
                flow.shutdown(Shutdown::Write).await.expect("shutdown");
                sums.recv().await.expect("the peer's sum")
            }
            Dir::Rx => {
                flow.write(Bytes::copy_from_slice(&total.to_le_bytes())).await.expect("the request");
                let mut sum = 0;
                while let Some(chunk) = flow.read().await.expect("flow read") {
                    sum = fold(sum, &chunk);
                }
                sum
            }
        };
        let gbps = throughput_gbps(total, start.elapsed());
        assert_eq!(sum, want, "our stack: checksum differs");
        flow.close().await.expect("close");
        gbps
    };
    tokio::time::timeout(RUN_TIMEOUT, work).await.expect("a run on our stack timed out")
}

/// The baseline: smoltcp's own TAP device, one interface, one socket per
/// run, polled in a plain loop.
struct RawTap {
    dev: TunTapInterface,
    iface: Interface,
    epoch: Instant,
    next_port: u16,
}

impl RawTap {
    fn open(name: &str) -> std::io::Result<RawTap> {
        let mut dev = TunTapInterface::new(name, Medium::Ethernet)?;
        let epoch = Instant::now();
        let mut config = Config::new(HardwareAddress::Ethernet(EthernetAddress([0x02, 0, 0, 0, 0x82, 0x02])));
        config.random_seed = 7;
        let mut iface = Interface::new(config, &mut dev, smoltcp::time::Instant::from_micros(0));
        iface.update_ip_addrs(|a| {
            let _ = a.push(IpCidr::new(RAW_NET.1.into(), 24));
        });
        Ok(RawTap { dev, iface, epoch, next_port: 40000 })
    }

    fn now(&self) -> smoltcp::time::Instant {
        smoltcp::time::Instant::from_micros(self.epoch.elapsed().as_micros() as i64)
    }

    /// Polls the interface: frames in, frames out.
    fn poll(&mut self, sockets: &mut SocketSet<'_>) {
        let now = self.now();
        self.iface.poll(now, &mut self.dev, sockets);
    }

    /// Polls, then waits for a frame or the next timer (at most 1 ms: the
    /// peer's sum arrives on a channel, not on the TAP). Call it after the
    /// socket's reads and writes, so a window they opened or data they
    /// queued goes out before the wait.
    fn poll_and_wait(&mut self, sockets: &mut SocketSet<'_>) {
        self.poll(sockets);
        let cap = smoltcp::time::Duration::from_millis(1);
        let delay = self.iface.poll_delay(self.now(), sockets).map_or(cap, |d| d.min(cap));
        if delay > smoltcp::time::Duration::ZERO {
            let _ = phy::wait(self.dev.as_raw_fd(), Some(delay));
        }
    }

    /// One run; GB/s.
    fn run(
        &mut self,
        at: SocketAddr,
        dir: Dir,
        src: &Bytes,
        total: u64,
        want: u64,
        sums: &mut mpsc::UnboundedReceiver<u64>,
    ) -> f64 {
        let mut sockets = SocketSet::new(Vec::new());
        let socket =
            tcp::Socket::new(tcp::SocketBuffer::new(vec![0; BUFFERS]), tcp::SocketBuffer::new(vec![0; BUFFERS]));
        let h = sockets.add(socket);
        self.next_port = if self.next_port >= 60000 { 40000 } else { self.next_port + 1 };
        let start = Instant::now();
        sockets.get_mut::<tcp::Socket<'_>>(h).connect(self.iface.context(), at, self.next_port).expect("connect");
        let mut feeder = super::Feeder::new(offsets(total, CHUNK), CHUNK);
        let mut request = &total.to_le_bytes()[..];
        let mut buf = vec![0u8; CHUNK];
        let (mut sum, mut received) = (0u64, 0u64);
        let finished = loop {
            assert!(start.elapsed() < RUN_TIMEOUT, "smoltcp-tuntap: a run timed out");
            self.poll(&mut sockets);
            let s = sockets.get_mut::<tcp::Socket<'_>>(h);
            match dir {
                Dir::Tx => {
                    feeder.feed(s, src);
                    if feeder.closed {
                        match sums.try_recv() {
                            Ok(got) => {
                                sum = got;
                                break start.elapsed();
                            }
                            Err(mpsc::error::TryRecvError::Empty) => {}
                            Err(e) => panic!("the peer's sums: {e}"),
                        }
                    }
                }
                Dir::Rx => {
                    if !request.is_empty() && s.can_send() {
                        let n = s.send_slice(request).expect("send the request");
                        request = &request[n..];
                    }
                    while s.can_recv() {
                        let n = s.recv_slice(&mut buf).expect("recv");
                        sum = fold(sum, &buf[..n]);
                        received += n as u64;
                    }
                    if received >= total && !s.may_recv() {
                        break start.elapsed();
                    }
                    assert!(s.is_open() || received >= total, "smoltcp-tuntap: the connection ended early");
                }
            }
            self.poll_and_wait(&mut sockets);
        };
        assert_eq!(sum, want, "smoltcp-tuntap: checksum differs");
        // Finish the close so the kernel peer is not left in LAST_ACK.
        sockets.get_mut::<tcp::Socket<'_>>(h).close();
        let closing = Instant::now();
        while closing.elapsed() < Duration::from_secs(2) {
            let state = sockets.get::<tcp::Socket<'_>>(h).state();
            if matches!(state, tcp::State::Closed | tcp::State::TimeWait) {
                break;
            }
            self.poll_and_wait(&mut sockets);
        }
        throughput_gbps(total, finished)
    }
}

/// The kernel-side peer: prints `ports SINK SOURCE`, then serves both until
/// killed. The sink folds each connection's bytes and prints `sum N` at its
/// Eof; the source reads an 8-byte little-endian count and sends that many
/// bytes (64 KiB slices of the shared source), then closes its write side.
pub(super) fn peer_child(_args: &[String]) -> ExitCode {
    let sink = std::net::TcpListener::bind("0.0.0.0:0").expect("bind the sink");
    let source_l = std::net::TcpListener::bind("0.0.0.0:0").expect("bind the source");
    let port = |l: &std::net::TcpListener| l.local_addr().expect("addr").port();
    println!("ports {} {}", port(&sink), port(&source_l));
    std::thread::spawn(move || {
        let src = source();
        for conn in source_l.incoming() {
            let Ok(mut conn) = conn else { continue };
            let src = src.clone();
            std::thread::spawn(move || {
                let mut req = [0u8; 8];
                if conn.read_exact(&mut req).is_err() {
                    return;
                }
                let total = u64::from_le_bytes(req);
                if CHUNK > SOURCE_LEN {
                    return;
                }
                for off in offsets(total, CHUNK) {
                    if conn.write_all(&src[off..off + CHUNK]).is_err() {
                        return;
                    }
                }
                let _ = conn.shutdown(std::net::Shutdown::Write);
                let mut rest = [0u8; 64];
                while matches!(conn.read(&mut rest), Ok(n) if n > 0) {}
            });
        }
    });
    for conn in sink.incoming() {
        let Ok(mut conn) = conn else { continue };
        std::thread::spawn(move || {
            let mut buf = vec![0u8; CHUNK];
            let mut sum = 0;
            loop {
                match conn.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => sum = fold(sum, &buf[..n]),
                    Err(e) => {
                        eprintln!("tap peer: sink read: {e}");
                        return;
                    }
                }
            }
            println!("sum {sum}");
        });
    }
    ExitCode::SUCCESS
}

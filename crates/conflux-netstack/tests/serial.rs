//! Timing-sensitive and root tests: the TCP kit over the in-memory link (in
//! real time, on a current_thread and on a 2-worker multi_thread runtime),
//! the flow kit on a multi_thread runtime (`serial/multi_thread.rs`), the
//! 2-worker bulk stall detector (`serial/stall.rs`), and
//! the TAP, namespace, ping, kernel-interop and iperf3 tests. xtask runs
//! this target with `--test-threads=1`.

mod support;

#[path = "serial/multi_thread.rs"]
mod multi_thread;

#[path = "serial/stall.rs"]
mod stall;

#[path = "../examples/iperf3_server.rs"]
#[allow(dead_code)]
mod iperf3_server;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::Duration;

use conflux_conformance::tcp::{self as kit, TcpFixture, Unavailable};
use conflux_flow::{BoxFlow, FlowError, FlowExt};
use conflux_netstack::{LinkConfig, LinkSwitch, NetFlow, NetStack, keepalive_deadline, link_pair};
use conflux_tcp::{ConnectOptions, Keepalive, TcpStack};

/// The SHA-256 of `data`.
fn sha(data: &[u8]) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    Sha256::digest(data).to_vec()
}

/// Listens on `port` of `stack`: each accepted flow is read to its end and
/// the SHA-256 of what came (or the read's error) is sent on the channel.
fn hashing_listener(
    stack: &NetStack,
    port: u16,
) -> tokio::sync::mpsc::UnboundedReceiver<Result<Vec<u8>, conflux_flow::FlowError>> {
    use conflux_flow::FlowExt;
    support::serve_into(stack, port, |mut f| async move { f.read_to_end().await.map(|d| sha(&d)) }).expect("listen").1
}

/// A current-thread runtime with I/O and time.
fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

/// Each new stack gets a peer stack across its own in-memory (IP) link; the
/// fixture keeps the latest peer and the link's switch.
struct MemFixture {
    peer: Mutex<Option<(NetStack, LinkSwitch)>>,
}

impl MemFixture {
    fn new() -> MemFixture {
        MemFixture { peer: Mutex::new(None) }
    }

    fn peer(&self) -> Result<(NetStack, LinkSwitch), Unavailable> {
        self.peer
            .lock()
            .unwrap()
            .clone()
            .ok_or_else(|| Unavailable::new(conflux_testkit::SkipKind::Capability, "no stack made yet"))
    }
}

impl TcpFixture for MemFixture {
    type Stack = NetStack;

    fn new_stack(&self) -> NetStack {
        let (a, b) = link_pair(LinkConfig::ip());
        let switch = a.switch();
        let ours =
            NetStack::new(support::side(true).buffers(256 * 1024, 4 << 20).disconnect_grace(Duration::from_secs(2)), a);
        let peer = NetStack::new(support::side(false).buffers(64 * 1024, 256 * 1024), b);
        *self.peer.lock().unwrap() = Some((peer, switch));
        ours
    }

    fn local_ip(&self) -> IpAddr {
        support::ip(support::A4)
    }

    fn other_local_ip(&self) -> Result<IpAddr, Unavailable> {
        Ok(support::ip(support::A6))
    }

    fn specific_beside_wildcard(&self) -> bool {
        true
    }

    fn open_resources(&self) -> Option<usize> {
        None
    }

    fn unacked(&self, flow: &NetFlow) -> Result<usize, FlowError> {
        flow.unacked()
    }

    fn slow_reader_pair(
        &self,
        stack: &NetStack,
    ) -> impl Future<Output = Result<(NetFlow, BoxFlow), Unavailable>> + Send {
        let peer = self.peer();
        let stack = stack.clone();
        async move {
            let (peer, _) = peer?;
            let (port, mut rx) = support::listen_into(&peer, 0, None).expect("listen");
            let ours = stack
                .create_connection(support::addr(support::B4, port), ConnectOptions::new())
                .await
                .expect("connect");
            let theirs = rx.recv().await.expect("accepted");
            peer.unlisten(port);
            Ok((ours, theirs.boxed()))
        }
    }

    fn black_hole_addr(&self) -> Result<SocketAddr, Unavailable> {
        Ok(support::addr("10.0.0.99", 9))
    }

    fn no_route_addr(&self) -> Result<SocketAddr, Unavailable> {
        Ok(support::addr("192.0.2.1", 9))
    }

    fn link_ip(&self) -> Result<IpAddr, Unavailable> {
        Ok(support::ip(support::A4))
    }

    fn remote_connect(&self, addr: SocketAddr) -> impl Future<Output = Result<(), Unavailable>> + Send {
        let peer = self.peer();
        async move {
            let (peer, _) = peer?;
            let mut flow = peer.create_connection(addr, ConnectOptions::new()).await.expect("remote connect");
            tokio::spawn(async move {
                while let Ok(Some(chunk)) = flow.read().await {
                    if flow.write(chunk).await.is_err() {
                        break;
                    }
                }
            });
            Ok(())
        }
    }

    fn cut_link(&self) -> impl Future<Output = ()> + Send {
        if let Ok((_, switch)) = self.peer() {
            switch.set_up(false);
        }
        std::future::ready(())
    }

    fn keepalive_deadline(&self, keepalive: &Keepalive) -> Duration {
        keepalive_deadline(keepalive)
    }
}

macro_rules! kit_cases {
    ($($case:ident),* $(,)?) => {
        mod kit_mem {
            use super::*;
            $( #[test] fn $case() { rt().block_on(kit::$case(&MemFixture::new())) } )*
        }
        /// The same cases on a 2-worker multi_thread runtime (see `serial/multi_thread.rs`).
        mod kit_mem_mt {
            use super::*;
            $( #[test] fn $case() { multi_thread::rt_mt().block_on(kit::$case(&MemFixture::new())) } )*
        }
    };
}

kit_cases!(
    connect_read_exact_and_dst,
    refused_on_closed_port,
    connect_timeout_black_hole,
    no_route_fails_at_once,
    listen_on_port_zero,
    incoming_accepts_in_order_and_unlistens_on_drop,
    listeners_replace_each_other,
    unlisten_keeps_established_refuses_new,
    listen_disconnect_listen_same_port,
    panicking_callback_closes_its_flow,
    write_after_shutdown_is_closed,
    peer_abort_is_reset,
    write_nodelay_waits_for_ack,
    keepalive_detects_cut_link,
    specific_address_takes_only_its_own,
    unlisten_takes_the_listen_key,
    two_addresses_share_a_port,
    specific_address_beside_wildcard,
);

/// Skips (visibly) unless TAP devices and namespaces can be made here.
macro_rules! need_tap {
    () => {
        if !conflux_testkit::is_root() {
            conflux_testkit::skip!(Root, "TAP devices and namespaces need root (CAP_NET_ADMIN)");
        }
        if !conflux_testkit::have_command("ip") {
            conflux_testkit::skip!(Iproute2, "the ip command (iproute2) is not on PATH");
        }
        if !std::path::Path::new("/dev/net/tun").exists() {
            conflux_testkit::skip!(Tap, "/dev/net/tun is missing");
        }
    };
}

mod tap_offload;

#[path = "serial/udp_tap.rs"]
mod udp_tap;

mod tap {
    use super::*;
    use support::tapns::{KERNEL4, KERNEL6, OURS4, OURS6, TapNs, stack_on};

    async fn run(mut cmd: std::process::Command) -> std::process::Output {
        let out = tokio::time::timeout(
            Duration::from_secs(60),
            tokio::process::Command::from(std::mem::replace(&mut cmd, std::process::Command::new("true")))
                .kill_on_drop(true)
                .output(),
        )
        .await
        .expect("the command hung")
        .expect("the command runs");
        if !out.status.success() {
            eprintln!("{cmd:?}: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        }
        out
    }

    #[test]
    fn ping_and_ping6_from_a_namespace_get_replies() {
        need_tap!();
        if !conflux_testkit::have_command("ping") {
            conflux_testkit::skip!(Ping, "ping is not on PATH");
        }
        rt().block_on(async {
            let (ns, dev) = TapNs::create(1500).expect("TAP in a namespace");
            let _stack = stack_on(dev, None);
            for (flag, dst) in [("-4", OURS4), ("-6", OURS6)] {
                let mut cmd = ns.cmd("ping");
                cmd.args([flag, "-c", "3", "-i", "0.2", "-W", "2", dst]);
                let out = run(cmd).await;
                let text = String::from_utf8_lossy(&out.stdout);
                assert!(out.status.success(), "ping {flag} {dst}: {text}");
                assert!(text.contains("3 received"), "ping {flag} {dst}: {text}");
            }
        });
    }

    #[test]
    fn a_tap_opened_inside_a_namespace_lives_there_and_answers_pings() {
        need_tap!();
        if !conflux_testkit::have_command("ping") {
            conflux_testkit::skip!(Ping, "ping is not on PATH");
        }
        let err = conflux_netstack::in_netns("/nonexistent/ns/net".as_ref(), || Ok(())).expect_err("no such namespace");
        assert!(err.to_string().contains("/nonexistent/ns/net"), "{err}");
        rt().block_on(async {
            let netns = conflux_testkit::Netns::create("i").expect("a test namespace");
            let (ns, tap) = (netns.name().to_owned(), format!("{}d", netns.name()));
            let name = tap.clone();
            // Created and configured from inside: `ip` runs in the namespace too.
            let dev = conflux_netstack::in_netns(&netns.path(), move || {
                let dev = conflux_netstack::TapDevice::open(&name, 1500)?;
                for args in [
                    &["addr", "add", "10.78.0.1/24", "dev", name.as_str()][..],
                    &["link", "set", "dev", name.as_str(), "up"],
                    &["link", "set", "dev", "lo", "up"],
                ] {
                    support::tapns::ip(args).map_err(std::io::Error::other)?;
                }
                Ok(dev)
            })
            .expect("a TAP inside the namespace");
            assert!(
                support::tapns::ip(&["-n", &ns, "link", "show", "dev", &tap]).is_ok(),
                "the TAP is in the namespace"
            );
            assert!(support::tapns::ip(&["link", "show", "dev", &tap]).is_err(), "and not in ours");
            let _stack = stack_on(dev, None);
            let mut cmd = std::process::Command::new("ip");
            cmd.args(["netns", "exec", &ns, "ping", "-4", "-c", "2", "-i", "0.2", "-W", "2", OURS4]);
            let out = run(cmd).await;
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success() && text.contains("2 received"), "ping {OURS4}: {text}");
        });
    }

    /// Connects, retrying while the kernel-side listener is not up yet.
    async fn connect_retrying(stack: &NetStack, addr: SocketAddr) -> NetFlow {
        for _ in 0..100 {
            match stack.create_connection(addr, ConnectOptions::new().timeout(Duration::from_secs(5))).await {
                Ok(f) => return f,
                Err(conflux_tcp::ConnectError::Refused { .. }) => tokio::time::sleep(Duration::from_millis(50)).await,
                Err(e) => panic!("connect to {addr}: {e}"),
            }
        }
        panic!("{addr} never listened");
    }

    /// Whether a pcap file (Ethernet) holds a TCP SYN.
    fn pcap_has_syn(file: &[u8]) -> bool {
        let mut at = 24;
        while at + 16 <= file.len() {
            let len = u32::from_le_bytes(file[at + 8..at + 12].try_into().unwrap()) as usize;
            let frame = &file[(at + 16).min(file.len())..(at + 16 + len).min(file.len())];
            at += 16 + len;
            if frame.len() >= 14 + 20 + 20 && frame[12..14] == [0x08, 0x00] && frame[14 + 9] == 6 {
                let ihl = usize::from(frame[14] & 0x0f) * 4;
                if let Some(flags) = frame.get(14 + ihl + 13)
                    && flags & 0x02 != 0
                {
                    return true;
                }
            }
        }
        false
    }

    #[test]
    fn kernel_interop_both_directions_verified_by_hash() {
        need_tap!();
        if !conflux_testkit::have_command("socat") {
            conflux_testkit::skip!(Socat, "socat is not on PATH");
        }
        rt().block_on(async {
            let (ns, dev) = TapNs::create(1500).expect("TAP in a namespace");
            let tmp = conflux_testkit::TempDir::new("socat");
            let dir = tmp.path();
            let tag = format!("cfx-{}-{}", std::process::id(), ns.tap);
            let pcap = dir.join(format!("{tag}.pcap"));
            let input = dir.join(format!("{tag}.in"));
            let output = dir.join(format!("{tag}.out"));
            let data = conflux_testkit::payload(77, 4 << 20);
            std::fs::write(&input, &data).unwrap();
            let stack = stack_on(dev, Some(&pcap));

            // Kernel client -> our server.
            let mut rx = hashing_listener(&stack, 5001);
            let mut cmd = ns.cmd("socat");
            cmd.args(["-t", "30", "-u", &format!("FILE:{}", input.display()), &format!("TCP:{OURS4}:5001")]);
            assert!(run(cmd).await.status.success(), "socat client");
            let got = tokio::time::timeout(Duration::from_secs(30), rx.recv()).await.unwrap().unwrap().unwrap();
            assert_eq!(got, sha(&data), "kernel client -> our server");

            // Our client -> kernel server (IPv4), data into a file.
            let mut cmd = ns.cmd("socat");
            cmd.args(["-t", "30", "-u", "TCP-LISTEN:5002,reuseaddr", &format!("CREATE:{}", output.display())]);
            let server = tokio::spawn(run(cmd));
            let mut f = connect_retrying(&stack, support::addr(KERNEL4, 5002)).await;
            f.write(data.clone()).await.unwrap();
            f.close().await.unwrap();
            assert!(server.await.unwrap().status.success(), "socat server");
            assert_eq!(sha(&std::fs::read(&output).unwrap()), sha(&data), "our client -> kernel server");

            // Our client <- kernel server over IPv6 (NDP across the TAP).
            let mut cmd = ns.cmd("socat");
            cmd.args(["-t", "30", "-u", &format!("FILE:{}", input.display()), "TCP6-LISTEN:5003,reuseaddr"]);
            let server = tokio::spawn(run(cmd));
            let mut f = connect_retrying(&stack, support::addr(KERNEL6, 5003)).await;
            let got = tokio::time::timeout(Duration::from_secs(30), f.read_to_end()).await.unwrap().unwrap();
            assert_eq!(sha(&got), sha(&data), "kernel server -> our client over IPv6");
            f.close().await.unwrap();
            assert!(server.await.unwrap().status.success(), "socat server");

            let capture = std::fs::read(&pcap).unwrap();
            assert!(pcap_has_syn(&capture), "no SYN in the capture ({} bytes)", capture.len());
            for p in [&pcap, &input, &output] {
                let _ = std::fs::remove_file(p);
            }
        });
    }

    /// Runs Debian's `iperf3 -c ADDR -p PORT -t SECS -J` (in `ns` if given)
    /// against the example server on `stack`; checks it exits 0 and that the
    /// bytes it reports received equal the server's count.
    async fn iperf3_against<S: TcpStack>(stack: &S, ns: Option<&TapNs>, addr: &str, secs: u32) {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let at = SocketAddr::new(addr.parse().expect("an IP"), 0);
        let port = iperf3_server::serve(stack, at, tx).expect("serve");
        let mut cmd = match ns {
            Some(ns) => ns.cmd("iperf3"),
            None => std::process::Command::new("iperf3"),
        };
        cmd.args(["-c", addr, "-p", &port.to_string(), "-t", &secs.to_string(), "-J"]);
        let out = run(cmd).await;
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "iperf3 -c failed: {stdout}");
        let json: serde_json::Value = serde_json::from_str(&stdout).expect("iperf3 -J output");
        let reported = json["end"]["sum_received"]["bytes"].as_u64().expect("end.sum_received.bytes");
        let ours = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.expect("the server's count").unwrap();
        eprintln!("iperf3 reports {reported} bytes received; the server counted {ours}");
        assert!(ours > 0);
        assert_eq!(reported, ours);
    }

    #[test]
    fn iperf3_client_runs_5s_against_the_example_server_over_tap() {
        need_tap!();
        if !conflux_testkit::have_command("iperf3") {
            conflux_testkit::skip!(Iperf3, "iperf3 is not on PATH");
        }
        rt().block_on(async {
            let (ns, dev) = TapNs::create(1500).expect("TAP in a namespace");
            let stack = stack_on(dev, None);
            iperf3_against(&stack, Some(&ns), OURS4, 5).await;
        });
    }

    #[test]
    fn iperf3_client_against_the_example_server_on_the_kernel_backend() {
        if !conflux_testkit::have_command("iperf3") {
            conflux_testkit::skip!(Iperf3, "iperf3 is not on PATH");
        }
        rt().block_on(async {
            let stack = conflux_tcp_host::HostStack::new();
            iperf3_against(&stack, None, "127.0.0.1", 2).await;
            stack.disconnect().await;
        });
    }

    #[test]
    fn ping_across_a_tun_device() {
        need_tap!();
        if !conflux_testkit::have_command("ping") {
            conflux_testkit::skip!(Ping, "ping is not on PATH");
        }
        rt().block_on(async {
            let ns = TapNs::empty().expect("a test namespace");
            let name = ns.tap.clone();
            let dev = conflux_netstack::TunDevice::open(&name, 1500).expect("open the TUN");
            let ip = support::tapns::ip;
            ip(&["link", "set", "dev", &name, "netns", &ns.ns]).expect("move the TUN");
            ip(&["-n", &ns.ns, "addr", "add", "10.80.0.1/24", "dev", &name]).expect("address");
            ip(&["-n", &ns.ns, "link", "set", "dev", &name, "up"]).expect("up");
            let _stack =
                NetStack::new(conflux_netstack::StackConfig::new().ipv4("10.80.0.2".parse().unwrap(), 24), dev);
            let mut cmd = ns.cmd("ping");
            cmd.args(["-c", "3", "-i", "0.2", "-W", "2", "10.80.0.2"]);
            let out = run(cmd).await;
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success() && text.contains("3 received"), "ping across the TUN: {text}");
        });
    }
}

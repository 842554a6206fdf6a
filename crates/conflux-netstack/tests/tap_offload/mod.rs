//! TAP offloads (`TapDevice::open_with_offloads`): our stack and kernel
//! sockets in a test namespace (MTU 1500 on the kernel's side) move 16 MiB
//! each way over IPv4 and IPv6, verified by hash, over TCP segments of up to
//! 64 KiB that the kernel coalesces (rx, partial checksums) and cuts (tx,
//! GSO); through the namespace's router to a second stack of ours behind a
//! plain TAP, so the kernel really segments what we send; and a corrupted
//! frame the kernel did not mark `NEEDS_CSUM` is still dropped.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use conflux_flow::FlowExt;
use conflux_netstack::{NetStack, TapStats};
use conflux_tcp::{ConnectOptions, TcpStack};

use crate::support::tapns::{KERNEL4, KERNEL6, OURS4, OURS6, TapNs, ip, stack_on};
use crate::{hashing_listener, rt, sha, support};

const MIB16: usize = 16 << 20;

/// Runs `cmd` (60 s at most), printing its output if it fails.
async fn run(cmd: std::process::Command) -> std::process::Output {
    let out =
        tokio::time::timeout(Duration::from_secs(60), tokio::process::Command::from(cmd).kill_on_drop(true).output())
            .await
            .expect("the command hung")
            .expect("the command runs");
    if !out.status.success() {
        eprintln!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    }
    out
}

/// Connects, retrying while the kernel-side listener is not up yet.
async fn connect_retrying(stack: &NetStack, addr: SocketAddr) -> conflux_netstack::NetFlow {
    for _ in 0..100 {
        match stack.create_connection(addr, ConnectOptions::new().timeout(Duration::from_secs(5))).await {
            Ok(f) => return f,
            Err(conflux_tcp::ConnectError::Refused { .. }) => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(e) => panic!("connect to {addr}: {e}"),
        }
    }
    panic!("{addr} never listened");
}

/// Skips (visibly) unless an offload TAP can be made and socat run.
macro_rules! need_tap_socat {
    () => {
        need_tap!();
        if !conflux_testkit::have_command("socat") {
            conflux_testkit::skip!(Socat, "socat is not on PATH");
        }
    };
}

fn report(what: &str, stats: &TapStats) {
    eprintln!(
        "{what}: tx {} frames ({} GSO), rx {} frames ({} coalesced, {} partial checksums, {} verified, {} bad headers)",
        stats.tx_frames(),
        stats.tx_gso_frames(),
        stats.rx_frames(),
        stats.rx_gso_frames(),
        stats.rx_partial_csum(),
        stats.rx_data_valid(),
        stats.rx_bad_header()
    );
}

/// Kernel clients send 16 MiB to our server over IPv4 and over IPv6: the
/// kernel hands the TAP coalesced super-segments with partial checksums,
/// which the stack takes.
#[test]
fn kernel_sends_16mib_as_coalesced_partial_checksum_frames_v4_and_v6() {
    need_tap_socat!();
    rt().block_on(async {
        let (ns, dev) = TapNs::create_with(1500, true).expect("offload TAP in a namespace");
        let stats = dev.stats();
        let tmp = conflux_testkit::TempDir::new("offload-rx");
        let input = tmp.path().join("in");
        let data = conflux_testkit::payload(78, MIB16);
        std::fs::write(&input, &data).unwrap();
        let stack = stack_on(dev, None);

        let mut rx = hashing_listener(&stack, 5001);
        for to in [format!("TCP:{OURS4}:5001"), format!("TCP6:[{OURS6}]:5001")] {
            let (frames, coalesced, partial) = (stats.rx_frames(), stats.rx_gso_frames(), stats.rx_partial_csum());
            let mut cmd = ns.cmd("socat");
            cmd.args(["-t", "30", "-u", &format!("FILE:{}", input.display()), &to]);
            assert!(run(cmd).await.status.success(), "socat client to {to}");
            let got = tokio::time::timeout(Duration::from_secs(60), rx.recv()).await.unwrap().unwrap().unwrap();
            report(&format!("kernel -> ours ({to})"), &stats);
            assert_eq!(got, sha(&data), "kernel client -> our server ({to})");
            assert!(stats.rx_gso_frames() > coalesced, "no coalesced frame came from the kernel ({to})");
            assert!(stats.rx_partial_csum() > partial, "no partial checksum came from the kernel ({to})");
            // 16 MiB in far fewer frames than 1448-byte segments would take.
            let n = stats.rx_frames() - frames;
            assert!(n < (MIB16 / 1448) as u64 / 2, "{n} frames ({to})");
        }
        assert_eq!(stats.rx_bad_header(), 0);
    });
}

/// Our client sends 16 MiB to kernel servers over IPv4 and IPv6: the stack
/// hands the TAP super-segments (GSO) that the kernel cuts to its MSS.
#[test]
fn ours_sends_16mib_as_gso_super_segments_v4_and_v6() {
    need_tap_socat!();
    rt().block_on(async {
        let (ns, dev) = TapNs::create_with(1500, true).expect("offload TAP in a namespace");
        let stats = dev.stats();
        let tmp = conflux_testkit::TempDir::new("offload-tx");
        let data = conflux_testkit::payload(79, MIB16);
        let stack = stack_on(dev, None);
        for (at, port) in [(KERNEL4, 5002), (KERNEL6, 5003)] {
            let before = stats.tx_gso_frames();
            let output = tmp.path().join(format!("out{port}"));
            let listen = if at == KERNEL4 { "TCP-LISTEN" } else { "TCP6-LISTEN" };
            let mut cmd = ns.cmd("socat");
            cmd.args([
                "-t",
                "30",
                "-u",
                &format!("{listen}:{port},reuseaddr"),
                &format!("CREATE:{}", output.display()),
            ]);
            let server = tokio::spawn(run(cmd));
            let mut f = connect_retrying(&stack, support::addr(at, port)).await;
            tokio::time::timeout(Duration::from_secs(60), async {
                f.write(data.clone()).await.unwrap();
                f.close().await.unwrap();
            })
            .await
            .expect("sending 16 MiB took over 60 s");
            assert!(server.await.unwrap().status.success(), "socat server on {at}");
            report(&format!("ours -> kernel {at}"), &stats);
            assert_eq!(sha(&std::fs::read(&output).unwrap()), sha(&data), "our client -> kernel server {at}");
            assert!(stats.tx_gso_frames() > before, "no super-segment sent to {at}");
        }
        assert!(stats.tx_frames() < (2 * MIB16 / 1448) as u64 / 2, "{} frames", stats.tx_frames());
    });
}

/// Our stack on an offload TAP sends 16 MiB over IPv4 and over IPv6 to a
/// second stack of ours behind a plain TAP (no offloads, MTU 1500), the
/// namespace's kernel routing between them: the kernel must cut every
/// super-segment into segments that fit the plain TAP's MTU, with complete
/// checksums (the receiving stack checks them) — the tx conversion's
/// `gso_size`, `csum_start` and partial checksum as the kernel reads them.
#[test]
fn forwarded_super_segments_are_cut_by_the_kernel_to_the_mtu() {
    need_tap_socat!();
    rt().block_on(async {
        let (ns, dev) = TapNs::create_with(1500, true).expect("offload TAP in a namespace");
        let stats = dev.stats();
        let far_name = format!("{}f", &ns.tap[..ns.tap.len() - 1]);
        let far = conflux_netstack::TapDevice::open(&far_name, 1500).expect("the plain TAP");
        let far_stats = far.stats();
        let n = ns.ns.as_str();
        ip(&["link", "set", "dev", &far_name, "netns", n]).expect("move the plain TAP");
        ip(&["-n", n, "link", "set", "dev", &far_name, "mtu", "1500"]).expect("mtu");
        ip(&["-n", n, "addr", "add", "10.79.0.1/24", "dev", &far_name]).expect("address");
        ip(&["-n", n, "addr", "add", "fd79::1/64", "dev", &far_name, "nodad"]).expect("address");
        ip(&["-n", n, "link", "set", "dev", &far_name, "up"]).expect("up");
        let mut cmd = ns.cmd("sysctl");
        cmd.args(["-w", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"]);
        assert!(run(cmd).await.status.success(), "sysctl forwarding");

        let near = NetStack::new(
            crate::support::tapns::stack_config()
                .gateway_v4(KERNEL4.parse().unwrap())
                .gateway_v6(KERNEL6.parse().unwrap()),
            dev,
        );
        let far_stack = NetStack::new(
            conflux_netstack::StackConfig::new()
                .ipv4("10.79.0.2".parse().unwrap(), 24)
                .ipv6("fd79::2".parse().unwrap(), 64)
                .mac([0x02, 0, 0, 0, 0x79, 0x02])
                .gateway_v4("10.79.0.1".parse().unwrap())
                .gateway_v6("fd79::1".parse().unwrap())
                .buffers(256 * 1024, 256 * 1024),
            far,
        );
        let mut rx = hashing_listener(&far_stack, 6001);
        let data = conflux_testkit::payload(80, MIB16);
        for to in ["10.79.0.2", "fd79::2"] {
            let (gso, cut) = (stats.tx_gso_frames(), far_stats.rx_frames());
            let mut f = connect_retrying(&near, support::addr(to, 6001)).await;
            tokio::time::timeout(Duration::from_secs(60), async {
                f.write(data.clone()).await.unwrap();
                f.close().await.unwrap();
            })
            .await
            .expect("sending 16 MiB took over 60 s");
            let got = tokio::time::timeout(Duration::from_secs(60), rx.recv()).await.unwrap().unwrap().unwrap();
            report(&format!("ours -> kernel -> plain TAP -> ours ({to})"), &stats);
            assert_eq!(got, sha(&data), "16 MiB through the kernel's router to {to}");
            assert!(stats.tx_gso_frames() > gso, "no super-segment sent toward {to}");
            let segments = far_stats.rx_frames() - cut;
            assert!(segments >= (MIB16 / 1460) as u64, "only {segments} frames reached the plain TAP ({to})");
        }
    });
}

const KERNEL_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x78, 0x01];
const OUR_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x78, 0x02];

/// An Ethernet frame from the kernel's side with a SYN to `port` of ours,
/// its TCP checksum wrong if `corrupt`.
fn syn_frame(port: u16, corrupt: bool) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + 40);
    f.extend_from_slice(&OUR_MAC);
    f.extend_from_slice(&KERNEL_MAC);
    f.extend_from_slice(&[0x08, 0x00]);
    let seg = support::peer::build(
        support::addr(KERNEL4, 40_000 + port),
        support::addr(OURS4, port),
        0x0102_0304,
        0,
        support::peer::SYN,
        65535,
        &[],
    );
    f.extend_from_slice(&seg);
    if corrupt {
        f[14 + 36] ^= 0x5a;
    }
    f
}

/// The TCP segments in a pcap capture (Ethernet, IPv4) as (sport, dport, flags).
fn pcap_segments(file: &[u8]) -> Vec<(u16, u16, u8)> {
    let mut out = Vec::new();
    let mut at = 24;
    while at + 16 <= file.len() {
        let len = u32::from_le_bytes(file[at + 8..at + 12].try_into().unwrap()) as usize;
        let frame = &file[(at + 16).min(file.len())..(at + 16 + len).min(file.len())];
        at += 16 + len;
        if frame.len() >= 14 + 20 + 20 && frame[12..14] == [0x08, 0x00] && frame[14 + 9] == 6 {
            let t = &frame[14 + usize::from(frame[14] & 0x0f) * 4..];
            if t.len() >= 14 {
                out.push((u16::from_be_bytes([t[0], t[1]]), u16::from_be_bytes([t[2], t[3]]), t[13]));
            }
        }
    }
    out
}

/// SYNs written into the kernel's side of the TAP by a packet socket (no
/// checksum offload: the virtio net header has neither `NEEDS_CSUM` nor
/// `DATA_VALID`): the one with a corrupted TCP checksum draws no SYN-ACK,
/// the same SYN intact does.
#[test]
fn corrupted_frame_without_needs_csum_is_dropped() {
    need_tap_socat!();
    rt().block_on(async {
        let (ns, dev) = TapNs::create_with(1500, true).expect("offload TAP in a namespace");
        ip(&["-n", &ns.ns, "link", "set", "dev", &ns.tap, "address", "02:00:00:00:78:01"]).expect("kernel MAC");
        let stats = dev.stats();
        let tmp = conflux_testkit::TempDir::new("offload-bad");
        let pcap = tmp.path().join("cap.pcap");
        let stack = stack_on(dev, Some(&pcap));
        let port = 5009;
        stack.listen(port, None, |_f| async {}).unwrap();
        let syn_acks = |path: &Path| {
            let file = std::fs::read(path).unwrap();
            let segs = pcap_segments(&file);
            let syns = segs.iter().filter(|s| s.1 == port && s.2 & 0x12 == 0x02).count();
            let acks = segs.iter().filter(|s| s.0 == port && s.2 & 0x12 == 0x12).count();
            (syns, acks)
        };
        let inject = |corrupt: bool| {
            let frame = tmp.path().join(if corrupt { "bad.bin" } else { "good.bin" });
            std::fs::write(&frame, syn_frame(port, corrupt)).unwrap();
            let mut cmd = ns.cmd("socat");
            cmd.args(["-u", &format!("FILE:{}", frame.display()), &format!("INTERFACE:{}", ns.tap)]);
            run(cmd)
        };

        assert!(inject(true).await.status.success(), "socat INTERFACE (corrupted SYN)");
        let mut seen = (0, 0);
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            seen = syn_acks(&pcap);
            if seen.0 > 0 {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (syns, acks) = syn_acks(&pcap);
        assert_eq!(syns, 1, "the corrupted SYN reached the stack (seen {seen:?})");
        assert_eq!(acks, 0, "a SYN with a bad checksum drew a SYN-ACK");
        assert_eq!(stats.rx_partial_csum() + stats.rx_data_valid(), 0, "the packet socket's frame was marked checked");

        assert!(inject(false).await.status.success(), "socat INTERFACE (intact SYN)");
        let mut acks = 0;
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            acks = syn_acks(&pcap).1;
            if acks > 0 {
                break;
            }
        }
        assert!(acks > 0, "the intact SYN drew no SYN-ACK");
        report("injected SYNs", &stats);
    });
}

//! TAP offloads (`TapDevice::open_with_offloads`): our stack and kernel
//! sockets in a test namespace (MTU 1500 on the kernel's side) move 16 MiB
//! each way, verified by hash, over TCP segments of up to 64 KiB that the
//! kernel cuts (GSO) and coalesces, with partial checksums; and a corrupted
//! frame the kernel did not mark `NEEDS_CSUM` is still dropped.

use std::path::Path;
use std::time::Duration;

use conflux_flow::FlowExt;
use conflux_netstack::TapStats;
use conflux_tcp::TcpStack;
use sha2::{Digest, Sha256};

use crate::support::tapns::{KERNEL4, OURS4, OURS6, TapNs, ip, stack_on};
use crate::{rt, support};

const MIB16: usize = 16 << 20;

fn sha(data: &[u8]) -> Vec<u8> {
    Sha256::digest(data).to_vec()
}

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

        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        stack
            .listen(5001, None, move |mut f| {
                let tx = tx.clone();
                async move {
                    let _ = tx.send(f.read_to_end().await.map(|d| sha(&d)));
                }
            })
            .unwrap();
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

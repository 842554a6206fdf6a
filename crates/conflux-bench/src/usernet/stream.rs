//! Issue 14's carrier scenarios: the guest's frames carried over a unix
//! stream socket in QEMU's stream framing, as a hypervisor carries them.
//!
//! - `usernet-stream` (throughput): the `usernet-tx` workload (iperf3 from
//!   inside a fresh namespace to the host's loopback through the gateway,
//!   see the group's doc) where the namespace's TAP is not served by the
//!   forwarder directly: a bridge thread of this process (the
//!   "hypervisor", a current_thread runtime of its own) moves the TAP's
//!   frames to and from a unix stream socket in QEMU's stream framing
//!   ([`conflux_usernet::StreamDevice`] over the socket), and the forwarder
//!   ([`conflux_usernet::Usernet::spawn_vm`], the VM guest link in front of
//!   the stack, on a runtime built as `conflux usernet` builds it)
//!   serves a `StreamDevice` over the accepted end. Baseline `usernet-tx`: the same workload with the forwarder on
//!   the TAP itself (`Usernet::spawn` on the TAP, our TAP path), in the same
//!   run. Both paths without vnet-hdr offloads (`TapDevice::open`, the
//!   stack computes checksums and cuts segments), MTU 65520. Goal ratio
//!   >= 0.7.
//!
//!   The same scenario reports a second row, `usernet-stream-framed`: the
//!   same carrier with `?framing=shutdown` (conflux-hvsock's shutdown
//!   framing, [`conflux_hvsock::FramedFlow`], over the unix socket on both
//!   sides), baseline the unframed stream (`usernet-stream`) of the same
//!   run; goal ratio >= 0.9. The three sides run in one order per run,
//!   reversed every run, 5 runs (under `--quick` too: they swing
//!   widely on a shared 2-core machine), `-t 5` (`-t 2` under `--quick`).
//!
//!   The TAP is opened by this process (in the host's namespace), moved
//!   into the bench namespace (`ip link set dev T netns NS`) and configured
//!   there from outside (`ip -n NS`: 10.0.2.100/24, MTU 65520, default
//!   route via 10.0.2.2).
//! - `qemu-stream-decode` (throughput): a 32 MiB buffer of QEMU stream
//!   frames (lengths cycling through 66, 1514, 1514, 66, 590, 65534, 1514,
//!   66 bytes: ACKs, MTU-1500 segments, a small packet, MTU-65520 ones),
//!   read in 64 KiB chunks (frames and headers split at chunk boundaries)
//!   and decoded by [`conflux_usernet::StreamDecoder`], every frame's bytes
//!   copied out into a frame buffer (what `StreamDevice` does); baseline
//!   `memcpy`: the same chunks copied into a buffer. 16 passes per run, 9
//!   runs (5 under `--quick`); reported (no goal). No root needed.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::io;
use std::path::PathBuf;
use std::task::Poll;
use std::time::{Duration, Instant};

use conflux_hvsock::{FramedFlow, FramingConfig, RawFlow, UnixSocket};
use conflux_netstack::{FrameBuf, FrameDevice, TapDevice};
use conflux_usernet::{FramePiece, StreamDecoder, StreamDevice, Usernet, UsernetConfig, max_frame_len};
use tokio::sync::oneshot;

use super::ours::{CLI_MULTI_THREAD, Worker};
use super::{Dir, GATEWAY, MTU, Netns, Side, can_run, ip, iperf_run};
use crate::{Ctx, Goal, Record, Skip, measure_pair, throughput_gbps};

/// The bound on a forwarder or bridge coming up and on its shutdown.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Frames moved per device poll by the bridge.
const BRIDGE_BATCH: usize = 64;

/// `usernet-stream` and its framed row.
pub(super) fn run(ctx: &Ctx<'_>) -> Result<Vec<Record>, Skip> {
    can_run(&[("iperf3", "--version")])?;
    let secs = if ctx.quick { 2 } else { 5 };
    let sides = [Side::Tap, Side::Stream, Side::StreamFramed];
    let mut samples: [Vec<f64>; 3] = Default::default();
    for run in 0..ctx.runs_mt(5, 5) {
        let order: Vec<usize> = if run % 2 == 0 { vec![0, 1, 2] } else { vec![2, 1, 0] };
        for i in order {
            let gbps = iperf_run(sides[i], Dir::Tx, secs);
            eprintln!("   {}: {:.2} Gbit/s", sides[i].name(), gbps * 8.0);
            samples[i].push(gbps);
        }
    }
    let [tap, stream, framed] = samples;
    Ok(vec![
        ctx.record(&stream).with_baseline("usernet-tx", &tap),
        Record::new("usernet-stream-framed", ctx.scenario.metric, &framed)
            .with_baseline(ctx.scenario.name, &stream)
            .with_goal(Goal::RatioAtLeast(0.9)),
    ])
}

/// The forwarder's configuration on every side: the gateway mapped to the
/// host's loopback, only 127.0.0.0/8 allowed.
fn usernet_config() -> Result<UsernetConfig, String> {
    let allow = "127.0.0.0/8".parse().map_err(|e| format!("{e}"))?;
    Ok(UsernetConfig::new().mtu(MTU).host_loopback(true).allow(allow))
}

/// Opens TAP `name` (no offloads) in this process and moves it into `ns`.
/// Call within a tokio runtime.
fn open_tap(name: &str, ns: &str) -> Result<TapDevice, String> {
    let tap = TapDevice::open(name, MTU).map_err(|e| format!("open TAP {name}: {e}"))?;
    let out = ip(&["link", "set", "dev", name, "netns", ns]);
    if !out.status.success() {
        return Err(format!("ip link set dev {name} netns {ns}: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(tap)
}

/// Configures the moved TAP from outside: loopback up, 10.0.2.100/24, the
/// MTU, up, the default route via the gateway.
fn configure(ns: &str, dev: &str) -> Result<(), String> {
    let mtu = MTU.to_string();
    let steps: [&[&str]; 5] = [
        &["-n", ns, "link", "set", "lo", "up"],
        &["-n", ns, "addr", "add", "10.0.2.100/24", "dev", dev],
        &["-n", ns, "link", "set", "dev", dev, "mtu", &mtu, "up"],
        &["-n", ns, "route", "add", "default", "via", GATEWAY],
        &["-n", ns, "link", "show", "dev", dev],
    ];
    for step in steps {
        let out = ip(step);
        if !out.status.success() {
            return Err(format!("ip {}: {}", step.join(" "), String::from_utf8_lossy(&out.stderr).trim()));
        }
    }
    Ok(())
}

/// What carries the frames between the TAP and the forwarder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Carrier {
    /// None: the forwarder serves the TAP itself.
    Tap,
    /// A unix stream socket (`Usernet::spawn_vm` on its `StreamDevice`).
    Unix,
    /// A unix stream socket with the shutdown framing on both ends.
    UnixFramed,
}

/// Serves `usernet` until `stopped`, then shuts it down (bounded).
async fn serve_until(usernet: Usernet, stopped: oneshot::Receiver<()>) {
    let _ = stopped.await;
    if tokio::time::timeout(TIMEOUT, usernet.shutdown()).await.is_err() {
        eprintln!("   conflux-usernet: shutdown took over {TIMEOUT:?}");
    }
}

/// A flow over a connected unix socket, framed or not.
fn flow(stream: tokio::net::UnixStream, framed: bool) -> io::Result<conflux_flow::BoxFlow> {
    let sock = UnixSocket::from_tokio(stream)?;
    Ok(if framed {
        conflux_flow::BoxFlow::new(FramedFlow::new(sock, FramingConfig::default()))
    } else {
        conflux_flow::BoxFlow::new(RawFlow::new(sock))
    })
}

/// The forwarder (and, over a socket, the bridge) serving a namespace.
pub(super) struct Served {
    /// The bridge first: it goes before the forwarder it talks to.
    bridge: Option<Worker>,
    forwarder: Option<Worker>,
    _dir: Option<tempfile::TempDir>,
}

impl Served {
    /// A TAP in `ns` served over `carrier`; the TAP configured.
    pub(super) fn spawn(carrier: Carrier, ns: &Netns) -> Result<Served, String> {
        let config = usernet_config()?;
        let tap_name = format!("{}t", ns.name);
        if tap_name.len() > 15 {
            return Err(format!("TAP name too long: {tap_name}"));
        }
        let ns_name = ns.name.clone();
        let served = if carrier == Carrier::Tap {
            let (name, nsn) = (tap_name.clone(), ns_name.clone());
            let forwarder =
                Worker::spawn("conflux-usernet on the TAP", CLI_MULTI_THREAD, move |ready, stopped| async move {
                    let started = open_tap(&name, &nsn)
                        .and_then(|tap| Usernet::spawn(config, tap).map_err(|e| format!("Usernet::spawn: {e}")));
                    match started {
                        Ok(usernet) => {
                            let _ = ready.send(Ok(()));
                            serve_until(usernet, stopped).await;
                        }
                        Err(e) => {
                            let _ = ready.send(Err(e));
                        }
                    }
                })?;
            Served { bridge: None, forwarder: Some(forwarder), _dir: None }
        } else {
            let framed = carrier == Carrier::UnixFramed;
            let dir = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
            let path: PathBuf = dir.path().join("vm.sock");
            let at = path.clone();
            let forwarder =
                Worker::spawn("conflux-usernet on the socket", CLI_MULTI_THREAD, move |ready, stopped| async move {
                    let listener = match tokio::net::UnixListener::bind(&at) {
                        Ok(l) => l,
                        Err(e) => {
                            let _ = ready.send(Err(format!("bind {}: {e}", at.display())));
                            return;
                        }
                    };
                    let _ = ready.send(Ok(()));
                    let mut stopped = stopped;
                    let accepted = tokio::select! {
                        a = listener.accept() => a,
                        _ = &mut stopped => return,
                    };
                    let started = accepted
                        .and_then(|(stream, _)| flow(stream, framed))
                        .map_err(|e| format!("accept on {}: {e}", at.display()))
                        .and_then(|flow| {
                            Usernet::spawn_vm(config, StreamDevice::new(flow, MTU))
                                .map_err(|e| format!("Usernet::spawn_vm: {e}"))
                        });
                    match started {
                        Ok(usernet) => serve_until(usernet, stopped).await,
                        Err(e) => eprintln!("   conflux-usernet on the socket: {e}"),
                    }
                })?;
            let (name, nsn) = (tap_name.clone(), ns_name.clone());
            let bridge = Worker::spawn("the TAP-to-socket bridge", false, move |ready, stopped| async move {
                let opened = open_tap(&name, &nsn);
                let connected = match tokio::net::UnixStream::connect(&path).await.and_then(|s| flow(s, framed)) {
                    Ok(f) => Ok(f),
                    Err(e) => Err(format!("connect {}: {e}", path.display())),
                };
                let (tap, flow) = match (opened, connected) {
                    (Ok(t), Ok(f)) => (t, f),
                    (Err(e), _) | (_, Err(e)) => {
                        let _ = ready.send(Err(e));
                        return;
                    }
                };
                let _ = ready.send(Ok(()));
                tokio::select! {
                    r = bridge(tap, StreamDevice::new(flow, MTU)) => {
                        if let Err(e) = r {
                            eprintln!("   the TAP-to-socket bridge ended: {e}");
                        }
                    }
                    _ = stopped => {}
                }
            })?;
            Served { bridge: Some(bridge), forwarder: Some(forwarder), _dir: Some(dir) }
        };
        configure(&ns_name, &tap_name)?;
        Ok(served)
    }

    /// Panics if the forwarder or the bridge has stopped.
    pub(super) fn check_alive(&mut self) {
        if let Some(b) = &self.bridge {
            b.check_alive("the TAP-to-socket bridge");
        }
        if let Some(f) = &self.forwarder {
            f.check_alive("conflux-usernet");
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        drop(self.bridge.take());
        drop(self.forwarder.take());
    }
}

/// Moves frames both ways between `a` and `b` until one of them fails:
/// what a hypervisor does between its guest's NIC and the carrier. Each
/// direction takes up to [`BRIDGE_BATCH`] frames from one device and hands
/// them to the other as a batch; it takes no more while the other has not
/// accepted them all (backpressure).
async fn bridge<A: FrameDevice, B: FrameDevice>(mut a: A, mut b: B) -> io::Result<()> {
    let (mut a_rx, mut b_rx) = (Vec::new(), Vec::new());
    let (mut to_b, mut to_a) = (VecDeque::new(), VecDeque::new());
    poll_fn(|cx| {
        loop {
            let ab = match pump(cx, &mut a, &mut b, &mut a_rx, &mut to_b) {
                Ok(moved) => moved,
                Err(e) => return Poll::Ready(Err(e)),
            };
            let ba = match pump(cx, &mut b, &mut a, &mut b_rx, &mut to_a) {
                Ok(moved) => moved,
                Err(e) => return Poll::Ready(Err(e)),
            };
            if !ab && !ba {
                return Poll::Pending;
            }
        }
    })
    .await
}

/// One direction of [`bridge`]: hands `queue` to `to` (an empty queue still
/// flushes what `to` accepted earlier), then, once `to` took it all, takes
/// the next frames from `from`. `Ok(true)` when frames came in.
fn pump(
    cx: &mut std::task::Context<'_>,
    from: &mut impl FrameDevice,
    to: &mut impl FrameDevice,
    rx: &mut Vec<FrameBuf>,
    queue: &mut VecDeque<FrameBuf>,
) -> io::Result<bool> {
    if let Poll::Ready(Err(e)) = to.poll_send_batch(cx, queue) {
        return Err(e);
    }
    if !queue.is_empty() {
        return Ok(false);
    }
    match from.poll_recv(cx, rx, BRIDGE_BATCH) {
        Poll::Ready(Ok(())) => {
            queue.extend(rx.drain(..));
            Ok(true)
        }
        Poll::Ready(Err(e)) => Err(e),
        Poll::Pending => Ok(false),
    }
}

/// Frame lengths of the decode scenario, cycled (Ethernet header included).
const FRAME_LENS: [usize; 8] = [66, 1514, 1514, 66, 590, 65534, 1514, 66];
/// The encoded buffer's size (at least).
const DECODE_BUFFER: usize = 32 << 20;
/// The chunk a read returns.
const DECODE_CHUNK: usize = 64 * 1024;
/// Passes over the buffer per run.
const DECODE_PASSES: usize = 16;

/// The encoded frames (payload bytes from the shared source).
fn encoded_frames() -> Vec<u8> {
    let src = crate::data::source();
    let mut buf = Vec::with_capacity(DECODE_BUFFER + 70_000);
    let mut i = 0;
    while buf.len() < DECODE_BUFFER {
        let len = FRAME_LENS[i % FRAME_LENS.len()];
        buf.extend_from_slice(&(len as u32).to_be_bytes());
        let at = (i * 4099) % (src.len() - len);
        buf.extend_from_slice(&src[at..at + len]);
        i += 1;
    }
    buf
}

/// Decodes `encoded` chunk by chunk, copying every frame out; returns how
/// many frames it saw.
fn decode_all(encoded: &[u8], frame: &mut [u8]) -> usize {
    let mut dec = StreamDecoder::new(max_frame_len(MTU));
    let mut frames = 0;
    let mut at = 0;
    for chunk in encoded.chunks(DECODE_CHUNK) {
        let mut input = chunk;
        loop {
            match dec.decode(&mut input).expect("valid frames") {
                None => break,
                Some(FramePiece::Whole(bytes)) => {
                    frame[..bytes.len()].copy_from_slice(bytes);
                    frames += 1;
                }
                Some(FramePiece::Start { bytes, .. }) => {
                    frame[..bytes.len()].copy_from_slice(bytes);
                    at = bytes.len();
                }
                Some(FramePiece::More { bytes, end }) => {
                    frame[at..at + bytes.len()].copy_from_slice(bytes);
                    at += bytes.len();
                    frames += usize::from(end);
                }
            }
            std::hint::black_box(&frame);
        }
    }
    dec.decode_eof().expect("ends between frames");
    frames
}

/// Copies `encoded` chunk by chunk into `out`.
fn copy_all(encoded: &[u8], out: &mut [u8]) {
    for chunk in encoded.chunks(DECODE_CHUNK) {
        out[..chunk.len()].copy_from_slice(chunk);
        std::hint::black_box(&out);
    }
}

/// `qemu-stream-decode`.
pub(super) fn decode(ctx: &Ctx<'_>) -> Result<Vec<Record>, Skip> {
    let encoded = encoded_frames();
    let mut frame = vec![0u8; max_frame_len(MTU) as usize];
    let mut out = vec![0u8; DECODE_CHUNK];
    let total = (encoded.len() * DECODE_PASSES) as u64;
    let expected = decode_all(&encoded, &mut frame);
    assert!(expected > 0);
    let pair = measure_pair(
        ctx.runs(9, 5),
        || {
            let start = Instant::now();
            for _ in 0..DECODE_PASSES {
                assert_eq!(decode_all(&encoded, &mut frame), expected);
            }
            throughput_gbps(total, start.elapsed())
        },
        || {
            let start = Instant::now();
            for _ in 0..DECODE_PASSES {
                copy_all(&encoded, &mut out);
            }
            throughput_gbps(total, start.elapsed())
        },
    );
    Ok(vec![ctx.record(&pair.measured).with_baseline("memcpy", &pair.baseline)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_decode_buffer_holds_every_frame_size_split_at_chunks() {
        let encoded = encoded_frames();
        let mut frame = vec![0u8; max_frame_len(MTU) as usize];
        let frames = decode_all(&encoded, &mut frame);
        // Every frame counted back, walking the headers.
        let (mut at, mut count) = (0, 0);
        while at < encoded.len() {
            at += 4 + u32::from_be_bytes(encoded[at..at + 4].try_into().unwrap()) as usize;
            count += 1;
        }
        assert_eq!((at, frames), (encoded.len(), count));
        assert!(count > DECODE_BUFFER / DECODE_CHUNK, "frames straddle the chunk boundaries");
    }

    #[tokio::test]
    async fn the_bridge_moves_frames_both_ways_and_ends_with_a_device() {
        use conflux_netstack::{LinkConfig, link_pair};
        let (a, mut a_peer) = link_pair(LinkConfig::ethernet());
        let (b, b_peer) = conflux_flow::pipe(256 * 1024);
        let (b, mut b_peer) = (StreamDevice::new(b, 1500), StreamDevice::new(b_peer, 1500));
        let bridging = tokio::spawn(bridge(a, b));
        let mut out = VecDeque::from([FrameBuf::from(vec![1u8; 100])]);
        poll_fn(|cx| a_peer.poll_send_batch(cx, &mut out)).await.unwrap();
        let mut got = Vec::new();
        tokio::time::timeout(TIMEOUT, poll_fn(|cx| b_peer.poll_recv(cx, &mut got, 8))).await.unwrap().unwrap();
        assert_eq!(&got[0][..], &[1u8; 100][..]);
        let mut back = VecDeque::from([FrameBuf::from(vec![2u8; 60])]);
        poll_fn(|cx| b_peer.poll_send_batch(cx, &mut back)).await.unwrap();
        let mut got = Vec::new();
        tokio::time::timeout(TIMEOUT, poll_fn(|cx| a_peer.poll_recv(cx, &mut got, 8))).await.unwrap().unwrap();
        assert_eq!(&got[0][..], &[2u8; 60][..]);
        drop(b_peer);
        let ended = tokio::time::timeout(TIMEOUT, bridging).await.expect("the bridge ends").unwrap();
        assert!(ended.is_err());
    }

    #[test]
    fn a_copy_moves_every_chunk() {
        let encoded = vec![5u8; DECODE_CHUNK + 10];
        let mut out = vec![0u8; DECODE_CHUNK];
        copy_all(&encoded, &mut out);
        assert!(out.iter().all(|&b| b == 5));
    }
}

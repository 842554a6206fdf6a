//! The test's hypervisor: a TAP device in a guest namespace whose frames
//! are copied to and from a carrier flow in QEMU's stream framing (a 4-byte
//! big-endian length before each Ethernet frame), as a hypervisor does with
//! its guest's NIC; it can close the carrier cleanly or vanish inside a
//! frame.

use std::future::poll_fn;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use conflux_flow::{BoxFlow, FlowIo};
use conflux_hvsock::{Family, FramingConfig, RawFlow, UnixAddr, UnixFamily};
use conflux_netstack::{FrameBuf, FrameDevice, TapDevice};
use conflux_testkit::{Netns, unique_name};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::runtime::Runtime;
use tokio::sync::oneshot;

/// The bound on one wait of the bridge.
const WAIT: Duration = Duration::from_secs(10);

/// The runtime the bridges run on (the test thread blocks on the forwarder's lines).
pub(crate) fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap()
}

/// A hypervisor's NIC: a TAP device in the guest namespace whose frames the
/// test copies to and from the carrier in QEMU's stream framing. Dropping
/// it closes the carrier between two frames (and removes the TAP).
pub(crate) struct Bridge {
    pub(crate) tap: String,
    /// Tells the copy loop how to end.
    cut: Option<oneshot::Sender<Cut>>,
    done: oneshot::Receiver<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Bridge {
    /// A TAP moved into `ns` and bridged to `carrier`.
    pub(crate) fn start(rt: &Runtime, ns: &Netns, carrier: BoxFlow) -> Bridge {
        let tap = unique_name("b");
        let device = {
            let _in_rt = rt.enter();
            TapDevice::open(&tap, 1500).expect("open a TAP device")
        };
        ns.take_link(&tap).expect("move the TAP into the namespace");
        ns.ip(&["link", "set", "dev", &tap, "up"]).unwrap();
        let (cut_tx, cut_rx) = oneshot::channel();
        let (done_tx, done) = oneshot::channel();
        let task = rt.spawn(async move {
            let end = copy_frames(device, carrier, cut_rx).await;
            eprintln!("bridge ended: {end:?}");
            let _ = done_tx.send(());
        });
        Bridge { tap, cut: Some(cut_tx), done, task }
    }

    /// The hypervisor vanishes: the header of a 1500-byte frame and 100 of
    /// its bytes, then the end of the stream.
    pub(crate) fn vanish_mid_frame(&mut self) {
        self.end(Cut::MidFrame);
    }

    /// The hypervisor closes the carrier (shutdown(Write), then waits for
    /// the other side's end).
    pub(crate) fn close(&mut self) {
        self.end(Cut::Close);
    }

    fn end(&mut self, how: Cut) {
        self.cut.take().unwrap().send(how).unwrap();
        let deadline = Instant::now() + WAIT;
        while self.done.try_recv().is_err() {
            assert!(Instant::now() < deadline, "the bridge did not end");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How a bridge ends its carrier.
#[derive(Debug)]
enum Cut {
    /// Inside a frame: the stream ends 100 bytes into a 1500-byte frame
    /// (read as a reset instead, were unread frames in our socket when it
    /// was dropped).
    MidFrame,
    /// Cleanly: shutdown(Write) between two frames.
    Close,
}

/// Copies frames between the TAP and the carrier (QEMU stream framing) until
/// either ends or `cut` says how to end.
async fn copy_frames(tap: TapDevice, carrier: BoxFlow, mut cut: oneshot::Receiver<Cut>) -> std::io::Result<()> {
    let tap = Arc::new(Mutex::new(tap));
    let (mut rd, mut wr) = tokio::io::split(FlowIo::new(carrier));
    let to_tap = {
        let tap = tap.clone();
        async move {
            loop {
                let mut len = [0u8; 4];
                rd.read_exact(&mut len).await?;
                let mut frame = vec![0u8; u32::from_be_bytes(len) as usize];
                rd.read_exact(&mut frame).await?;
                poll_fn(|cx| tap.lock().unwrap().poll_send_ready(cx)).await?;
                tap.lock().unwrap().send(FrameBuf::from_vec(frame))?;
            }
        }
    };
    let from_tap = async move {
        let mut frames = Vec::new();
        loop {
            tokio::select! {
                r = poll_fn(|cx| tap.lock().unwrap().poll_recv(cx, &mut frames, 64)) => r?,
                how = &mut cut => {
                    if let Ok(Cut::MidFrame) = how {
                        wr.write_all(&1500u32.to_be_bytes()).await?;
                        wr.write_all(&[0u8; 100]).await?;
                    }
                    wr.shutdown().await?;
                    // The other direction ends when the far side closes.
                    std::future::pending::<()>().await;
                }
            }
            for frame in frames.drain(..) {
                wr.write_all(&(frame.len() as u32).to_be_bytes()).await?;
                wr.write_all(&frame).await?;
            }
            wr.flush().await?;
        }
    };
    tokio::select! {
        r = to_tap => r,
        r = from_tap => r,
    }
}

/// A raw flow on the Unix socket at `path` (`framed`: in the shutdown framing).
pub(crate) fn unix_carrier(rt: &Runtime, path: &Path, framed: bool) -> BoxFlow {
    let sock = rt.block_on(UnixFamily.connect(&UnixAddr::new(path), Some(WAIT))).expect("connect the carrier");
    let raw = RawFlow::new(sock);
    if framed { BoxFlow::new(raw.into_framed(FramingConfig::default())) } else { BoxFlow::new(raw) }
}

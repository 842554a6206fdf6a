//! Packet capture of any device into a pcap file.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::device::{DeviceCaps, FrameBuf, FrameDevice, FramePool, Medium};

/// Wraps a device and writes every frame it sends or receives to a pcap
/// file (readable by tcpdump and Wireshark). The file is flushed after every
/// frame so it can be read while the stack runs; capture errors are logged
/// once and capture stops, the device keeps working.
pub struct Pcap<D> {
    inner: D,
    out: Option<BufWriter<File>>,
}

impl<D> std::fmt::Debug for Pcap<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pcap").field("capturing", &self.out.is_some()).finish_non_exhaustive()
    }
}

impl<D: FrameDevice> Pcap<D> {
    /// Captures `inner`'s frames into a new file at `path`.
    pub fn new(inner: D, path: impl AsRef<Path>) -> io::Result<Pcap<D>> {
        let mut out = BufWriter::new(File::create(path)?);
        let linktype: u32 = match inner.caps().medium {
            Medium::Ethernet => 1,
            Medium::Ip => 101,
        };
        out.write_all(&0xa1b2_c3d4u32.to_le_bytes())?;
        out.write_all(&2u16.to_le_bytes())?;
        out.write_all(&4u16.to_le_bytes())?;
        out.write_all(&0i32.to_le_bytes())?;
        out.write_all(&0u32.to_le_bytes())?;
        out.write_all(&65535u32.to_le_bytes())?;
        out.write_all(&linktype.to_le_bytes())?;
        out.flush()?;
        Ok(Pcap { inner, out: Some(out) })
    }

    /// The wrapped device.
    pub fn get_ref(&self) -> &D {
        &self.inner
    }

    fn record(&mut self, frame: &[u8]) {
        let Some(out) = self.out.as_mut() else { return };
        let t = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let len = u32::try_from(frame.len()).unwrap_or(u32::MAX);
        let snap = &frame[..frame.len().min(65535)];
        let res = (|| {
            out.write_all(&(t.as_secs() as u32).to_le_bytes())?;
            out.write_all(&t.subsec_micros().to_le_bytes())?;
            out.write_all(&(snap.len() as u32).to_le_bytes())?;
            out.write_all(&len.to_le_bytes())?;
            out.write_all(snap)?;
            out.flush()
        })();
        if let Err(e) = res {
            tracing::warn!(error = %e, "pcap capture failed; capture stops");
            self.out = None;
        }
    }
}

impl<D: FrameDevice> FrameDevice for Pcap<D> {
    fn caps(&self) -> DeviceCaps {
        self.inner.caps()
    }

    fn set_pool(&mut self, pool: FramePool) {
        self.inner.set_pool(pool);
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>, frames: &mut Vec<FrameBuf>, max: usize) -> Poll<io::Result<()>> {
        let from = frames.len();
        let res = self.inner.poll_recv(cx, frames, max);
        for frame in &frames[from..] {
            self.record(frame);
        }
        res
    }

    fn poll_send_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.inner.poll_send_ready(cx)
    }

    fn send(&mut self, frame: FrameBuf) -> io::Result<()> {
        self.record(&frame);
        self.inner.send(frame)
    }
}

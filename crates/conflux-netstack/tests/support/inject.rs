//! A device that adds frames of the test's own (a flood, fuzz input) to what
//! a stack receives from its link.

use std::io;
use std::task::{Context, Poll};

use conflux_netstack::{DeviceCaps, FrameBuf, FrameDevice, FramePool, LinkEnd};
use tokio::sync::mpsc;

/// Frames sent on the returned sender reach the stack as if they came off
/// the link (before the link's own frames when both are waiting).
/// The (seq, ack) of the last TCP segment that arrived over the link (IPv4
/// on an IP link: fixed offsets).
pub type Last = std::sync::Arc<std::sync::Mutex<(u32, u32)>>;

pub struct Merge {
    inner: LinkEnd,
    injected: mpsc::UnboundedReceiver<Vec<u8>>,
    last: Last,
}

impl Merge {
    pub fn new(inner: LinkEnd) -> (Merge, mpsc::UnboundedSender<Vec<u8>>) {
        Merge::watching(inner, Last::default())
    }

    /// As [`Merge::new`], noting the last segment from the link in `last`.
    pub fn watching(inner: LinkEnd, last: Last) -> (Merge, mpsc::UnboundedSender<Vec<u8>>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Merge { inner, injected: rx, last }, tx)
    }
}

impl FrameDevice for Merge {
    fn caps(&self) -> DeviceCaps {
        self.inner.caps()
    }
    fn set_pool(&mut self, pool: FramePool) {
        self.inner.set_pool(pool);
    }
    fn poll_recv(&mut self, cx: &mut Context<'_>, frames: &mut Vec<FrameBuf>, max: usize) -> Poll<io::Result<()>> {
        let from = frames.len();
        while frames.len() - from < max {
            match self.injected.poll_recv(cx) {
                Poll::Ready(Some(frame)) => frames.push(frame.into()),
                _ => break,
            }
        }
        let left = max - (frames.len() - from);
        let mid = frames.len();
        if left > 0 {
            let _ = self.inner.poll_recv(cx, frames, left);
        }
        if let Some(f) = frames[mid..].iter().rev().find(|f| f.len() >= 40 && f[0] == 0x45 && f[9] == 6) {
            let word = |at: usize| u32::from_be_bytes([f[at], f[at + 1], f[at + 2], f[at + 3]]);
            *self.last.lock().unwrap() = (word(24), word(28));
        }
        if frames.len() > from { Poll::Ready(Ok(())) } else { Poll::Pending }
    }
    fn poll_send_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.inner.poll_send_ready(cx)
    }
    fn send(&mut self, frame: FrameBuf) -> io::Result<()> {
        self.inner.send(frame)
    }
}

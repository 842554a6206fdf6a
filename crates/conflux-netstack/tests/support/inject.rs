//! A device that adds frames of the test's own (a flood, fuzz input) to what
//! a stack receives from its link.

use std::io;
use std::task::{Context, Poll};

use conflux_netstack::{DeviceCaps, FrameDevice, LinkEnd};
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
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Vec<u8>>> {
        if let Poll::Ready(Some(frame)) = self.injected.poll_recv(cx) {
            return Poll::Ready(Ok(frame));
        }
        let r = self.inner.poll_recv(cx);
        if let Poll::Ready(Ok(f)) = &r
            && f.len() >= 40
            && f[0] == 0x45
            && f[9] == 6
        {
            let word = |at: usize| u32::from_be_bytes([f[at], f[at + 1], f[at + 2], f[at + 3]]);
            *self.last.lock().unwrap() = (word(24), word(28));
        }
        r
    }
    fn poll_send_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.inner.poll_send_ready(cx)
    }
    fn send(&mut self, frame: Vec<u8>) -> io::Result<()> {
        self.inner.send(frame)
    }
}

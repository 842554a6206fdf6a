//! A device that adds frames of the test's own (a flood, fuzz input) to what
//! a stack receives from its link.

use std::io;
use std::task::{Context, Poll};

use conflux_netstack::{DeviceCaps, FrameDevice, LinkEnd};
use tokio::sync::mpsc;

/// Frames sent on the returned sender reach the stack as if they came off
/// the link (before the link's own frames when both are waiting).
pub struct Merge {
    inner: LinkEnd,
    injected: mpsc::UnboundedReceiver<Vec<u8>>,
}

impl Merge {
    pub fn new(inner: LinkEnd) -> (Merge, mpsc::UnboundedSender<Vec<u8>>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Merge { inner, injected: rx }, tx)
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
        self.inner.poll_recv(cx)
    }
    fn poll_send_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.inner.poll_send_ready(cx)
    }
    fn send(&mut self, frame: Vec<u8>) -> io::Result<()> {
        self.inner.send(frame)
    }
}

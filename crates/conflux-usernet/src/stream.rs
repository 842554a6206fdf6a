//! [`StreamDevice`]: a [`FrameDevice`] over any flow in QEMU's stream framing.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use conflux_flow::{BoxFlow, Flow, FlowError};
use conflux_netstack::{DeviceCaps, FrameBuf, FrameDevice, FramePool, Medium};
use tokio::io::ReadBuf;

use crate::qemu::{FramePiece, StreamDecodeError, StreamDecoder, StreamHeader, max_frame_len};

/// Frames taken into one vectored write at most.
const TX_BATCH_FRAMES: usize = 64;
/// Bytes taken into one vectored write at most (one frame more may go).
const TX_BATCH_BYTES: usize = 256 * 1024;
/// Frames up to this size are copied next to their header (no allocation);
/// larger ones are handed to the flow as they are (no copy).
const COPY_SMALLER: usize = 1024;
/// A frame with at least this many bytes still to come is read straight
/// into its buffer ([`Flow::poll_read_into`]: no copy from a read chunk on
/// flows over a socket).
const DIRECT_READ: usize = 4096;

/// Why a [`StreamDevice`] ended: carried inside the `io::Error` its polls
/// return (`err.get_ref()` downcasts to it).
#[derive(Debug, thiserror::Error)]
pub enum StreamDeviceError {
    /// The peer broke the framing or vanished inside a frame
    /// ([`StreamDecodeError::Truncated`]).
    #[error("qemu stream: {0}")]
    Decode(#[from] StreamDecodeError),
    /// The peer ended the stream cleanly, between two frames.
    #[error("qemu stream: the peer closed the stream")]
    Closed,
    /// The flow failed.
    #[error("qemu stream: {0}")]
    Flow(FlowError),
}

impl Clone for StreamDeviceError {
    fn clone(&self) -> StreamDeviceError {
        match self {
            StreamDeviceError::Decode(e) => StreamDeviceError::Decode(*e),
            StreamDeviceError::Closed => StreamDeviceError::Closed,
            StreamDeviceError::Flow(e) => StreamDeviceError::Flow(e.latched()),
        }
    }
}

impl StreamDeviceError {
    fn to_io(&self) -> io::Error {
        let kind = match self {
            StreamDeviceError::Decode(StreamDecodeError::Truncated { .. }) => io::ErrorKind::UnexpectedEof,
            StreamDeviceError::Decode(_) => io::ErrorKind::InvalidData,
            StreamDeviceError::Closed => io::ErrorKind::ConnectionAborted,
            StreamDeviceError::Flow(e) => io::Error::from(e.latched()).kind(),
        };
        io::Error::new(kind, self.clone())
    }
}

/// A frame device carrying Ethernet frames over any [`Flow`] in QEMU's
/// stream framing (each frame preceded by its 4-byte big-endian length): a
/// hypervisor that connected to us (QEMU `-netdev stream`, a VMM over vsock)
/// or a server we connected to (passt, gvisor-tap-vsock) are both just a
/// flow.
///
/// Receive: every read of the flow is decoded into as many frames as it
/// holds (each copied once, from the read into a [`FrameBuf`] of the
/// driver's pool); the rest of a large frame (4 KiB or more still to come)
/// is read straight into its buffer ([`Flow::poll_read_into`], no copy on
/// a flow over a socket). Send: a batch of up to 64 frames goes to the flow as one
/// vectored write (headers and small frames in one shared buffer, larger
/// frames handed over without a copy; they return to the pool when the
/// flow is done with them); the next batch waits until the flow accepted
/// the last one (backpressure).
///
/// The device ends (its polls return an `io::Error` carrying a
/// [`StreamDeviceError`]) when the peer closes the stream, vanishes inside a
/// frame, sends a zero or oversize length, or the flow fails. The error is
/// latched: every later poll returns it again.
///
/// ```
/// use conflux_netstack::{NetStack, StackConfig};
/// use conflux_usernet::StreamDevice;
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let (guest_side, _hypervisor_side) = conflux_flow::pipe(256 * 1024);
/// let stack = NetStack::new(StackConfig::new().ipv4("10.0.2.2".parse().unwrap(), 24), StreamDevice::new(guest_side, 1500));
/// assert_eq!(stack.addrs().len(), 1);
/// # });
/// ```
pub struct StreamDevice {
    flow: BoxFlow,
    caps: DeviceCaps,
    pool: FramePool,
    dec: StreamDecoder,
    /// The unread rest of the last read.
    pending: Bytes,
    /// The frame being reassembled across reads, and its bytes so far.
    partial: Option<(FrameBuf, usize)>,
    /// A latched end: every later poll returns it.
    ended: Option<StreamDeviceError>,
    /// The frames of the last batch not yet accepted by the flow.
    out: Vec<Bytes>,
    /// Headers and small frames of the batches (one allocation per batch at most).
    scratch: BytesMut,
    /// Frames queued by [`send`](FrameDevice::send) for the next batch.
    queued: VecDeque<FrameBuf>,
    /// Told once, when the device ends.
    on_end: Option<OnEnd>,
}

impl fmt::Debug for StreamDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamDevice")
            .field("flow", &self.flow.type_name())
            .field("mtu", &self.caps.mtu)
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

impl StreamDevice {
    /// A device over `flow` carrying frames of up to `mtu` bytes of IP
    /// packet (plus the Ethernet header); the stack computes and checks
    /// checksums.
    pub fn new(flow: impl Flow, mtu: usize) -> StreamDevice {
        let flow = BoxFlow::new(flow);
        StreamDevice {
            flow,
            caps: DeviceCaps::new(Medium::Ethernet, mtu),
            pool: FramePool::new(),
            dec: StreamDecoder::new(max_frame_len(mtu)),
            pending: Bytes::new(),
            partial: None,
            ended: None,
            out: Vec::new(),
            scratch: BytesMut::new(),
            queued: VecDeque::new(),
            on_end: None,
        }
    }

    /// Calls `f` once, with the reason, when the device ends (the stack's
    /// driver then stops): how the owner of a stack learns that its guest
    /// left or broke the framing, after the device moved into the stack.
    pub fn on_end(mut self, f: impl FnOnce(&StreamDeviceError) + Send + 'static) -> StreamDevice {
        self.on_end = Some(Box::new(f));
        self
    }

    /// Why the device ended, once it did.
    pub fn ended(&self) -> Option<&StreamDeviceError> {
        self.ended.as_ref()
    }

    /// The carrier's end of stream: closed between frames, or a frame cut
    /// short (the decoder says which); ends the device.
    fn end_of_stream(&mut self) -> io::Error {
        let err = match self.dec.decode_eof() {
            Ok(()) => StreamDeviceError::Closed,
            Err(e) => e.into(),
        };
        self.end(err)
    }

    fn end(&mut self, err: StreamDeviceError) -> io::Error {
        tracing::debug!(error = %err, "qemu stream device ended");
        let io = err.to_io();
        if self.ended.is_none() {
            if let Some(f) = self.on_end.take() {
                f(&err);
            }
            self.ended = Some(err);
        }
        io
    }

    /// Decodes `self.pending` into `frames` until it is used up or `max`
    /// frames were appended (those before an error stay appended).
    fn decode_pending(&mut self, frames: &mut Vec<FrameBuf>, max: usize) -> Result<(), StreamDecodeError> {
        let mut got = 0;
        let mut input: &[u8] = &self.pending;
        let before = input.len();
        while got < max {
            let Some(piece) = self.dec.decode(&mut input)? else { break };
            match piece {
                FramePiece::Whole(bytes) => {
                    let mut frame = self.pool.take(bytes.len());
                    frame.copy_from_slice(bytes);
                    frames.push(frame);
                    got += 1;
                }
                FramePiece::Start { len, bytes } => {
                    let mut frame = self.pool.take(len);
                    frame[..bytes.len()].copy_from_slice(bytes);
                    self.partial = Some((frame, bytes.len()));
                }
                FramePiece::More { bytes, end } => {
                    let Some((frame, at)) = self.partial.as_mut() else { unreachable!("More follows Start") };
                    frame[*at..*at + bytes.len()].copy_from_slice(bytes);
                    *at += bytes.len();
                    if end && let Some((frame, _)) = self.partial.take() {
                        frames.push(frame);
                        got += 1;
                    }
                }
            }
        }
        let used = before - input.len();
        self.pending.advance(used);
        Ok(())
    }

    /// Reads the rest of the frame being reassembled straight into its
    /// buffer (pushed to `frames` once whole); what the flow read beyond
    /// it becomes `self.pending`. `Ok(false)` at the flow's Eof.
    fn poll_read_direct(
        &mut self,
        cx: &mut Context<'_>,
        frames: &mut Vec<FrameBuf>,
    ) -> Poll<Result<bool, StreamDeviceError>> {
        let Some((frame, at)) = self.partial.as_mut() else { return Poll::Ready(Ok(true)) };
        let mut buf = ReadBuf::new(&mut frame[*at..]);
        let mut rest = Bytes::new();
        if let Err(e) = ready!(self.flow.poll_read_into(cx, &mut buf, &mut rest)) {
            return Poll::Ready(Err(StreamDeviceError::Flow(e)));
        }
        let n = buf.filled().len();
        if n == 0 && rest.is_empty() {
            return Poll::Ready(Ok(false));
        }
        // The decoder counts the bytes (they are the frame's: no copy).
        let mut input: &[u8] = &frame[*at..*at + n];
        let mut end = false;
        while let Some(piece) = self.dec.decode(&mut input)? {
            if let FramePiece::More { end: e, .. } = piece {
                end |= e;
            }
        }
        *at += n;
        if end && let Some((frame, _)) = self.partial.take() {
            frames.push(frame);
        }
        self.pending = rest;
        Poll::Ready(Ok(true))
    }

    /// Writes what is left of the last batch; `Ready(Ok)` once the flow took all of it.
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StreamDeviceError>> {
        if self.out.is_empty() {
            return Poll::Ready(Ok(()));
        }
        match self.flow.poll_writev(cx, &mut self.out) {
            Poll::Ready(Ok(())) => {
                self.out.clear();
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(StreamDeviceError::Flow(e))),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Moves frames from `frames` into the next batch (`self.out`). A frame
    /// the framing cannot carry (empty, or above the MTU plus the Ethernet
    /// header) is dropped, as a wire drops what does not fit.
    fn fill_batch(&mut self, frames: &mut VecDeque<FrameBuf>) {
        let max = self.dec.max_frame();
        let (mut count, mut bytes) = (0, 0);
        self.scratch.reserve(TX_BATCH_FRAMES * StreamHeader::LEN);
        while count < TX_BATCH_FRAMES && bytes < TX_BATCH_BYTES {
            let Some(frame) = frames.pop_front() else { break };
            let header = match StreamHeader::new(frame.len(), max) {
                Ok(header) => header,
                Err(e) => {
                    tracing::debug!(error = %e, "qemu stream: frame not sent");
                    continue;
                }
            };
            self.scratch.extend_from_slice(&header.to_bytes());
            count += 1;
            bytes += StreamHeader::LEN + frame.len();
            if frame.len() <= COPY_SMALLER {
                self.scratch.extend_from_slice(&frame);
            } else {
                self.out.push(self.scratch.split().freeze());
                self.out.push(Bytes::from_owner(Owned(frame)));
            }
        }
        if !self.scratch.is_empty() {
            self.out.push(self.scratch.split().freeze());
        }
    }
}

/// What [`StreamDevice::on_end`] keeps.
type OnEnd = Box<dyn FnOnce(&StreamDeviceError) + Send>;

/// A frame lent to the flow as a `Bytes`: back to its pool once written.
struct Owned(FrameBuf);

impl AsRef<[u8]> for Owned {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl FrameDevice for StreamDevice {
    fn caps(&self) -> DeviceCaps {
        self.caps
    }

    fn set_pool(&mut self, pool: FramePool) {
        self.pool = pool;
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>, frames: &mut Vec<FrameBuf>, max: usize) -> Poll<io::Result<()>> {
        if let Some(err) = &self.ended {
            return Poll::Ready(Err(err.to_io()));
        }
        // The driver polls receive every round: finish a pending batch here too,
        // so a batch whose write was pending is not left waiting for the next send.
        if let Poll::Ready(Err(e)) = self.poll_flush(cx) {
            return Poll::Ready(Err(self.end(e)));
        }
        let start = frames.len();
        while frames.len() - start < max {
            let got = frames.len() - start;
            if self.pending.is_empty() && self.partial.as_ref().is_some_and(|(f, at)| f.len() - at >= DIRECT_READ) {
                match self.poll_read_direct(cx, frames) {
                    Poll::Ready(Ok(true)) => continue,
                    Poll::Ready(Ok(false)) => {
                        let err = self.end_of_stream();
                        return Poll::Ready(if got > 0 { Ok(()) } else { Err(err) });
                    }
                    Poll::Ready(Err(e)) => {
                        let err = self.end(e);
                        return Poll::Ready(if got > 0 { Ok(()) } else { Err(err) });
                    }
                    Poll::Pending => break,
                }
            }
            if self.pending.is_empty() {
                match self.flow.poll_read(cx) {
                    Poll::Ready(Ok(Some(chunk))) => self.pending = chunk,
                    Poll::Ready(Ok(None)) => {
                        let err = self.end_of_stream();
                        // Frames already decoded go up first; the end comes next poll.
                        return Poll::Ready(if got > 0 { Ok(()) } else { Err(err) });
                    }
                    Poll::Ready(Err(e)) => {
                        let err = self.end(StreamDeviceError::Flow(e));
                        return Poll::Ready(if got > 0 { Ok(()) } else { Err(err) });
                    }
                    Poll::Pending => break,
                }
            }
            if let Err(e) = self.decode_pending(frames, max - got) {
                let err = self.end(e.into());
                // Frames decoded before the bad header still go up.
                return Poll::Ready(if frames.len() > start { Ok(()) } else { Err(err) });
            }
        }
        if frames.len() > start { Poll::Ready(Ok(())) } else { Poll::Pending }
    }

    fn poll_send_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(err) = &self.ended {
            return Poll::Ready(Err(err.to_io()));
        }
        loop {
            match self.poll_flush(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(self.end(e))),
                Poll::Pending => return Poll::Pending,
            }
            if self.queued.is_empty() {
                return Poll::Ready(Ok(()));
            }
            let mut queued = std::mem::take(&mut self.queued);
            self.fill_batch(&mut queued);
            self.queued = queued;
        }
    }

    fn send(&mut self, frame: FrameBuf) -> io::Result<()> {
        if let Some(err) = &self.ended {
            return Err(err.to_io());
        }
        self.queued.push_back(frame);
        Ok(())
    }

    fn poll_send_batch(&mut self, cx: &mut Context<'_>, frames: &mut VecDeque<FrameBuf>) -> Poll<io::Result<()>> {
        if let Some(err) = &self.ended {
            return Poll::Ready(Err(err.to_io()));
        }
        loop {
            match self.poll_send_ready(cx) {
                Poll::Ready(Ok(())) => {}
                other => return other,
            }
            if frames.is_empty() {
                return Poll::Ready(Ok(()));
            }
            self.fill_batch(frames);
            if frames.is_empty() {
                // All accepted: what the flow did not take yet goes on the
                // next poll (receive polls flush too).
                return match self.poll_flush(cx) {
                    Poll::Ready(Err(e)) => Poll::Ready(Err(self.end(e))),
                    _ => Poll::Ready(Ok(())),
                };
            }
        }
    }
}

#[cfg(test)]
mod tests;

//! The raw flow: a family socket as a flow, with the real `shutdown(2)`.

use std::io::{self, IoSlice};
use std::os::fd::{AsFd, BorrowedFd};
use std::task::{Context, Poll, Waker, ready};

use bytes::{Bytes, BytesMut};
use conflux_flow::{Flow, FlowError, ReadHalf, Shutdown, WriteHalf, bufs};
use tokio::io::ReadBuf;

use crate::endpoint::FramingConfig;
use crate::family::Socket;
use crate::framed::FramedFlow;

/// How much a read asks the socket for.
pub(crate) const READ_CHUNK: usize = 64 * 1024;
pub(crate) use conflux_flow::bufs::MAX_IOV;

/// A connected socket of any family as a [`Flow`], without framing.
///
/// What Firecracker, Cloud Hypervisor, Kata and current virtsock peers speak:
/// `shutdown(Write)` is the socket's `shutdown(SHUT_WR)`, `shutdown(Read)` its
/// `SHUT_RD` (and later reads give Eof at once), close shuts the write side
/// and releases the socket. On transports that lose unread data on shutdown or
/// close (old Hyper-V), use [`into_framed`](RawFlow::into_framed) with a peer
/// that speaks the framing.
#[derive(Debug)]
pub struct RawFlow<S: Socket> {
    sock: S,
    rbuf: BytesMut,
    read_shut: bool,
    write_shut: bool,
    eof: bool,
    closed: bool,
    read_err: Option<FlowError>,
    write_err: Option<FlowError>,
    /// A read or write pending on the socket, woken when the flow closes under it.
    reader: Option<Waker>,
    writer: Option<Waker>,
}

impl<S: Socket> RawFlow<S> {
    /// Wraps a connected socket.
    pub fn new(sock: S) -> RawFlow<S> {
        RawFlow {
            sock,
            rbuf: BytesMut::new(),
            read_shut: false,
            write_shut: false,
            eof: false,
            closed: false,
            read_err: None,
            write_err: None,
            reader: None,
            writer: None,
        }
    }

    /// The same socket speaking the shutdown framing. Call it before any I/O.
    pub fn into_framed(self, config: FramingConfig) -> FramedFlow<S> {
        FramedFlow::new(self.sock, config)
    }

    /// The socket underneath.
    pub fn get_ref(&self) -> &S {
        &self.sock
    }

    /// This end's address.
    pub fn local_addr(&self) -> io::Result<S::Addr> {
        self.sock.local_addr()
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> io::Result<S::Addr> {
        self.sock.peer_addr()
    }

    /// Owned read and write halves for full duplex (tokio-vsock's `into_split`).
    pub fn into_split(self) -> (ReadHalf<Self>, WriteHalf<Self>) {
        conflux_flow::FlowExt::split(self)
    }

    /// Wakes a read or write pending on another task: the socket under it is going away.
    fn wake_pending(&mut self) {
        for w in [self.reader.take(), self.writer.take()].into_iter().flatten() {
            w.wake();
        }
    }

    /// One vectored write of `slices` (non-empty, at most `MAX_IOV`): how
    /// many bytes the socket took (at least one).
    #[inline]
    fn poll_write_slices(&mut self, cx: &mut Context<'_>, slices: &[IoSlice<'_>]) -> Poll<Result<usize, FlowError>> {
        if let Some(e) = &self.write_err {
            return Poll::Ready(Err(e.latched()));
        }
        if self.write_shut || self.closed {
            return Poll::Ready(Err(FlowError::closed()));
        }
        let polled = self.sock.poll_writev(cx, slices);
        if polled.is_pending() {
            remember(&mut self.writer, cx);
        }
        Poll::Ready(match ready!(polled) {
            Ok(0) => Err(self.fail_write(io::ErrorKind::WriteZero.into())),
            Ok(w) => Ok(w),
            Err(e) => Err(self.fail_write(e)),
        })
    }

    fn fail_write(&mut self, e: io::Error) -> FlowError {
        let e = FlowError::from(e);
        self.write_err = Some(e.latched());
        e
    }
}

/// Keeps `cx`'s waker in `slot` (no clone when the one there wakes the same task).
#[inline]
pub(crate) fn remember(slot: &mut Option<Waker>, cx: &Context<'_>) {
    match slot {
        Some(w) if w.will_wake(cx.waker()) => {}
        _ => *slot = Some(cx.waker().clone()),
    }
}

impl<S: Socket + AsFd> AsFd for RawFlow<S> {
    /// # Panics
    ///
    /// After close: the descriptor is gone.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

impl<S: Socket> Flow for RawFlow<S> {
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, FlowError>> {
        if let Some(e) = &self.read_err {
            return Poll::Ready(Err(e.latched()));
        }
        if self.read_shut || self.eof || self.closed {
            return Poll::Ready(Ok(None));
        }
        if self.rbuf.capacity() - self.rbuf.len() < READ_CHUNK {
            self.rbuf.reserve(READ_CHUNK);
        }
        let polled = self.sock.poll_read_buf(cx, &mut self.rbuf);
        if polled.is_pending() {
            remember(&mut self.reader, cx);
        }
        match ready!(polled) {
            Ok(0) => {
                self.eof = true;
                Poll::Ready(Ok(None))
            }
            Ok(_) => Poll::Ready(Ok(Some(self.rbuf.split().freeze()))),
            Err(e) => {
                let e = FlowError::from(e);
                self.read_err = Some(e.latched());
                Poll::Ready(Err(e))
            }
        }
    }

    /// Straight into `buf` when the socket can ([`Socket::reads_into`]: a
    /// Unix socket), otherwise a chunk copied in.
    fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
        rest: &mut Bytes,
    ) -> Poll<Result<(), FlowError>> {
        if !self.sock.reads_into() {
            return conflux_flow::poll_read_chunk_into(self, cx, buf, rest);
        }
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        if let Some(e) = &self.read_err {
            return Poll::Ready(Err(e.latched()));
        }
        if self.read_shut || self.eof || self.closed {
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let polled = self.sock.poll_read_into(cx, buf);
        if polled.is_pending() {
            remember(&mut self.reader, cx);
        }
        match ready!(polled) {
            Ok(()) => {
                if buf.filled().len() == before {
                    self.eof = true;
                }
                Poll::Ready(Ok(()))
            }
            Err(e) => {
                let e = FlowError::from(e);
                self.read_err = Some(e.latched());
                Poll::Ready(Err(e))
            }
        }
    }

    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &mut Bytes) -> Poll<Result<(), FlowError>> {
        self.poll_writev(cx, std::slice::from_mut(buf))
    }

    fn poll_writev(&mut self, cx: &mut Context<'_>, bufs: &mut [Bytes]) -> Poll<Result<(), FlowError>> {
        if bufs.iter().all(Bytes::is_empty) {
            return Poll::Ready(Ok(()));
        }
        while let Some(first) = bufs.iter().position(|b| !b.is_empty()) {
            let mut slices = [IoSlice::new(&[]); MAX_IOV];
            let n = bufs::gather(&bufs[first..], &mut slices);
            let wrote = ready!(self.poll_write_slices(cx, &slices[..n]))?;
            bufs::advance(&mut bufs[first..], wrote);
        }
        Poll::Ready(Ok(()))
    }

    /// One `writev` of the caller's slices, straight to the socket.
    fn poll_write_borrowed(&mut self, cx: &mut Context<'_>, bufs: &[IoSlice<'_>]) -> Poll<Result<usize, FlowError>> {
        // The usual case (hyper's head and body): the slices as they are.
        if !bufs.is_empty() && bufs.len() <= MAX_IOV && bufs.iter().all(|b| !b.is_empty()) {
            return self.poll_write_slices(cx, bufs);
        }
        let mut slices = [IoSlice::new(&[]); MAX_IOV];
        let n = bufs::gather_slices(bufs, &mut slices);
        if n == 0 {
            return Poll::Ready(Ok(0));
        }
        self.poll_write_slices(cx, &slices[..n])
    }

    fn is_write_borrowed(&self) -> bool {
        true
    }

    /// Nothing to finish: every accepted byte went to the socket (what an
    /// empty write says too, without the call).
    fn poll_flush(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), FlowError>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(&mut self, _cx: &mut Context<'_>, how: Shutdown) -> Poll<Result<(), FlowError>> {
        if self.closed {
            return Poll::Ready(Ok(()));
        }
        if how.writes() && !self.write_shut {
            self.write_shut = true;
            if self.write_err.is_none()
                && let Err(e) = self.sock.shutdown_write()
            {
                return Poll::Ready(Err(e.into()));
            }
        }
        if how.reads() && !self.read_shut {
            self.read_shut = true;
            // Local effect is what the contract needs; the socket call may not be supported.
            if let Err(e) = self.sock.shutdown_read() {
                tracing::trace!(error = %e, "shutdown(SHUT_RD) failed");
            }
            if let Some(w) = self.reader.take() {
                w.wake();
            }
        }
        Poll::Ready(Ok(()))
    }

    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), FlowError>> {
        if self.closed {
            return Poll::Ready(Ok(()));
        }
        if let Poll::Ready(Err(e)) = self.poll_shutdown(cx, Shutdown::Write) {
            tracing::trace!(error = %e, "shutdown during close failed");
        }
        self.closed = true;
        self.rbuf = BytesMut::new();
        self.wake_pending();
        Poll::Ready(self.sock.close().map_err(FlowError::from))
    }

    fn poll_abort(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), FlowError>> {
        if self.closed {
            return Poll::Ready(Ok(()));
        }
        self.closed = true;
        self.rbuf = BytesMut::new();
        self.wake_pending();
        Poll::Ready(self.sock.abort().map_err(FlowError::from))
    }
}

//! Adapters both ways between flows and tokio's `AsyncRead`/`AsyncWrite`.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, Waker, ready};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncBufRead, AsyncRead, AsyncWrite, ReadBuf};

use crate::{Flow, FlowError, Shutdown, bufs};

/// Any flow as a tokio `AsyncRead + AsyncWrite + AsyncBufRead`, so hyper,
/// tokio-rustls and tokio-util codecs run over it.
///
/// Reading through [`AsyncBufRead`] hands out the flow's own buffers without
/// copying; `AsyncRead` copies into the caller's buffer. Writes copy the
/// caller's slice once into an owned buffer. `poll_shutdown` is the flow's
/// `shutdown(Write)` (idempotent); `poll_flush` polls an empty write, which
/// finishes a flush the flow still owes (and is `Ok` at once otherwise).
#[derive(Debug)]
pub struct FlowIo<F> {
    flow: F,
    /// Read but not yet consumed.
    rest: Bytes,
}

// Nothing here relies on `F` staying put: every flow method takes `&mut self`.
impl<F> Unpin for FlowIo<F> {}

impl<F: Flow> FlowIo<F> {
    /// Wraps `flow`.
    pub fn new(flow: F) -> FlowIo<F> {
        FlowIo { flow, rest: Bytes::new() }
    }

    /// The flow underneath.
    pub fn get_ref(&self) -> &F {
        &self.flow
    }

    /// The flow underneath, mutably. Reading from it directly skips bytes
    /// already buffered here.
    pub fn get_mut(&mut self) -> &mut F {
        &mut self.flow
    }

    /// The flow and any bytes read from it but not yet consumed.
    pub fn into_parts(self) -> (F, Bytes) {
        (self.flow, self.rest)
    }

    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.rest.is_empty() {
            match ready!(self.flow.poll_read(cx)) {
                Ok(Some(chunk)) => self.rest = chunk,
                Ok(None) => {}
                Err(e) => return Poll::Ready(Err(e.into())),
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<F: Flow> AsyncRead for FlowIo<F> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        ready!(this.poll_fill(cx))?;
        let n = this.rest.len().min(buf.remaining());
        buf.put_slice(&this.rest[..n]);
        this.rest.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl<F: Flow> AsyncBufRead for FlowIo<F> {
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<&[u8]>> {
        let this = self.get_mut();
        ready!(this.poll_fill(cx))?;
        Poll::Ready(Ok(&this.rest))
    }

    fn consume(self: Pin<&mut Self>, amt: usize) {
        let this = self.get_mut();
        this.rest.advance(amt.min(this.rest.len()));
    }
}

impl<F: Flow> FlowIo<F> {
    /// Offers `buf` to the flow; reports how much it accepted, pending only when nothing was.
    fn offer(&mut self, cx: &mut Context<'_>, mut buf: Bytes) -> Poll<io::Result<usize>> {
        let len = buf.len();
        match self.flow.poll_write(cx, &mut buf) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(len)),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e.into())),
            Poll::Pending if buf.len() < len => Poll::Ready(Ok(len - buf.len())),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<F: Flow> AsyncWrite for FlowIo<F> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        self.get_mut().offer(cx, Bytes::copy_from_slice(buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if total == 0 {
            return Poll::Ready(Ok(0));
        }
        let mut joined = BytesMut::with_capacity(total);
        for b in bufs {
            joined.extend_from_slice(b);
        }
        self.get_mut().offer(cx, joined.freeze())
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    /// Polls an empty write, which finishes any write the flow accepted but
    /// has not flushed yet (a layered stream); for other flows it is `Ok` at once.
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().flow.poll_write(cx, &mut Bytes::new()).map_err(io::Error::from)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().flow.poll_shutdown(cx, Shutdown::Write).map_err(io::Error::from)
    }
}

/// Default size of the buffer [`FromTokio`] reads into.
pub const DEFAULT_READ_CHUNK: usize = 64 * 1024;

/// Any tokio `AsyncRead + AsyncWrite` as a flow.
///
/// Reads return freshly filled owned buffers of up to the chunk size (64 KiB by
/// default). A write completes once the stream took every byte *and* flushed,
/// so layered streams (TLS, buffered writers) never sit on accepted data.
/// `shutdown(Read)` is a local flag (tokio streams have no read shutdown);
/// `shutdown(Write)` is the stream's `poll_shutdown`. `close` shuts down and
/// drops the stream; `abort` drops it at once.
#[derive(Debug)]
pub struct FromTokio<T> {
    io: Option<T>,
    read_buf: BytesMut,
    chunk: usize,
    read_shut: bool,
    write_shut: bool,
    eof: bool,
    read_err: Option<FlowError>,
    write_err: Option<FlowError>,
    /// The waker of a read left pending in the stream: a close or
    /// `shutdown(Read)` from another task (the other half) must end that read,
    /// and dropping the stream does not wake it.
    read_waker: Option<Waker>,
    /// Bytes went into the stream and its flush has not completed yet: a write
    /// re-polled with every buffer taken must still finish that flush.
    flush_pending: bool,
}

impl<T> FromTokio<T>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    /// Wraps `io`.
    pub fn new(io: T) -> FromTokio<T> {
        FromTokio::with_read_chunk(io, DEFAULT_READ_CHUNK)
    }

    /// Wraps `io`, reading at most `chunk` bytes at a time.
    pub fn with_read_chunk(io: T, chunk: usize) -> FromTokio<T> {
        FromTokio {
            io: Some(io),
            read_buf: BytesMut::new(),
            chunk: chunk.max(1),
            read_shut: false,
            write_shut: false,
            eof: false,
            read_err: None,
            write_err: None,
            read_waker: None,
            flush_pending: false,
        }
    }

    fn wake_pending_read(&mut self) {
        if let Some(waker) = self.read_waker.take() {
            waker.wake();
        }
    }

    /// The stream underneath, unless the flow was closed.
    pub fn get_ref(&self) -> Option<&T> {
        self.io.as_ref()
    }

    /// The stream underneath, mutably, unless the flow was closed.
    pub fn get_mut(&mut self) -> Option<&mut T> {
        self.io.as_mut()
    }

    /// The stream underneath, unless the flow was closed.
    pub fn into_inner(self) -> Option<T> {
        self.io
    }

    fn fail_write(&mut self, err: FlowError) -> Poll<Result<(), FlowError>> {
        let latched = err.latched();
        self.write_err = Some(latched);
        Poll::Ready(Err(err))
    }

    fn poll_flush_inner(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), FlowError>> {
        let Some(io) = self.io.as_mut() else { return Poll::Ready(Err(FlowError::closed())) };
        match ready!(Pin::new(io).poll_flush(cx)) {
            Ok(()) => {
                self.flush_pending = false;
                Poll::Ready(Ok(()))
            }
            Err(e) => self.fail_write(e.into()),
        }
    }

    fn write_gate(&self) -> Result<(), FlowError> {
        if let Some(e) = &self.write_err {
            return Err(e.latched());
        }
        if self.write_shut || self.io.is_none() {
            return Err(FlowError::closed());
        }
        Ok(())
    }
}

impl<T> Flow for FromTokio<T>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, FlowError>> {
        if let Some(e) = &self.read_err {
            return Poll::Ready(Err(e.latched()));
        }
        if self.read_shut || self.eof {
            return Poll::Ready(Ok(None));
        }
        let Some(io) = self.io.as_mut() else { return Poll::Ready(Ok(None)) };
        if self.read_buf.capacity() < self.chunk / 4 {
            self.read_buf.reserve(self.chunk);
        }
        let polled = tokio_util::io::poll_read_buf(Pin::new(io), cx, &mut self.read_buf);
        let Poll::Ready(polled) = polled else {
            if !self.read_waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                self.read_waker = Some(cx.waker().clone());
            }
            return Poll::Pending;
        };
        self.read_waker = None;
        match polled {
            Ok(0) => {
                self.eof = true;
                Poll::Ready(Ok(None))
            }
            Ok(_) => Poll::Ready(Ok(Some(self.read_buf.split().freeze()))),
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
            // Every byte was taken on an earlier poll, whose flush stayed pending.
            return if self.flush_pending && self.write_gate().is_ok() {
                self.poll_flush_inner(cx)
            } else {
                Poll::Ready(Ok(()))
            };
        }
        self.write_gate()?;
        while let Some(first) = bufs.iter().position(|b| !b.is_empty()) {
            let io = self.io.as_mut().expect("checked by write_gate");
            let res = if io.is_write_vectored() {
                let mut slices = [IoSlice::new(&[]); bufs::MAX_IOV];
                let n = bufs::gather(&bufs[first..], &mut slices);
                ready!(Pin::new(io).poll_write_vectored(cx, &slices[..n]))
            } else {
                ready!(Pin::new(io).poll_write(cx, &bufs[first]))
            };
            match res {
                Ok(0) => return self.fail_write(FlowError::closed().with_message("the stream accepted no bytes")),
                Ok(n) => {
                    self.flush_pending = true;
                    bufs::advance(&mut bufs[first..], n);
                }
                Err(e) => return self.fail_write(e.into()),
            }
        }
        self.poll_flush_inner(cx)
    }

    fn poll_shutdown(&mut self, cx: &mut Context<'_>, how: Shutdown) -> Poll<Result<(), FlowError>> {
        if how.writes() && !self.write_shut {
            if let Some(io) = self.io.as_mut() {
                match ready!(Pin::new(io).poll_shutdown(cx)) {
                    Ok(()) => {}
                    // The peer is gone already: there is nobody left to signal.
                    Err(e) if matches!(e.kind(), io::ErrorKind::NotConnected | io::ErrorKind::BrokenPipe) => {}
                    Err(e) => {
                        self.write_shut = true;
                        return Poll::Ready(Err(e.into()));
                    }
                }
            }
            self.write_shut = true;
        }
        if how.reads() {
            self.read_shut = true;
            self.wake_pending_read();
        }
        Poll::Ready(Ok(()))
    }

    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), FlowError>> {
        if self.io.is_some() && !self.write_shut && self.write_err.is_none() {
            // A failing shutdown still ends in a closed flow; the error is not the caller's to fix.
            if let Err(e) = ready!(self.poll_shutdown(cx, Shutdown::Write)) {
                tracing::trace!(error = %e, "shutdown during close failed");
            }
        }
        self.read_shut = true;
        self.write_shut = true;
        self.io = None;
        self.wake_pending_read();
        Poll::Ready(Ok(()))
    }

    fn poll_abort(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), FlowError>> {
        self.read_shut = true;
        self.write_shut = true;
        self.io = None;
        self.wake_pending_read();
        Poll::Ready(Ok(()))
    }
}

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
/// copying; `AsyncRead` reads through [`Flow::poll_read_into`]: a flow over
/// a socket reads straight into the caller's buffer, any other flow's chunk
/// is copied into it once.
///
/// Writes cost at most one copy. A flow that writes borrowed slices straight
/// to its socket ([`Flow::is_write_borrowed`]) gets the caller's slices as
/// they are (no copy; a vectored write stays one `writev`) and the caller
/// learns how much it took. Any other flow gets one copy of them (one
/// allocation, one owned buffer per slice, so [`Flow::poll_writev`] can still
/// send them together), and the whole write is reported written: what the
/// flow has not taken yet stays here, is never copied again, and goes out
/// before the next write, on `poll_flush` and on `poll_shutdown` (as with a
/// `BufWriter`, flush before waiting for an answer; at most one write's
/// bytes wait here).
///
/// `poll_shutdown` is the flow's `shutdown(Write)` (idempotent); `poll_flush`
/// is the flow's [`Flow::poll_flush`] (an empty write unless the flow says
/// otherwise), which finishes a flush the flow still owes (and is `Ok` at
/// once otherwise).
#[derive(Debug)]
pub struct FlowIo<F> {
    flow: F,
    /// Read but not yet consumed; once empty, `Bytes::new()` (no spent
    /// chunk kept: a flow reading into one growing buffer, a socket's, can
    /// then reuse its memory instead of allocating).
    rest: Bytes,
    /// Reported written to the caller, not yet taken by the flow (in order).
    unsent: Vec<Bytes>,
    /// The flow's [`Flow::is_write_borrowed`], asked once.
    borrowed: bool,
}

// Nothing here relies on `F` staying put: every flow method takes `&mut self`.
impl<F> Unpin for FlowIo<F> {}

impl<F: Flow> FlowIo<F> {
    /// Wraps `flow`.
    pub fn new(flow: F) -> FlowIo<F> {
        let borrowed = flow.is_write_borrowed();
        FlowIo { flow, rest: Bytes::new(), unsent: Vec::new(), borrowed }
    }

    /// The flow underneath.
    pub fn get_ref(&self) -> &F {
        &self.flow
    }

    /// The flow underneath, mutably. Reading from it directly skips bytes
    /// already buffered here; writing to it directly overtakes bytes a write
    /// left here (flush first).
    pub fn get_mut(&mut self) -> &mut F {
        &mut self.flow
    }

    /// The flow and any bytes read from it but not yet consumed. Bytes a
    /// write left here are dropped: flush first.
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

    /// Hands whatever was reported written but not yet taken to the flow.
    #[inline]
    fn poll_unsent(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.unsent.is_empty() { Poll::Ready(Ok(())) } else { self.poll_unsent_some(cx) }
    }

    #[cold]
    fn poll_unsent_some(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.flow.poll_writev(cx, &mut self.unsent)).map_err(io::Error::from)?;
        self.unsent.clear();
        Poll::Ready(Ok(()))
    }

    /// Hands out bytes a read left here (`rest` is not empty).
    fn take_rest(&mut self, buf: &mut ReadBuf<'_>) {
        let n = self.rest.len().min(buf.remaining());
        buf.put_slice(&self.rest[..n]);
        if n == self.rest.len() {
            self.rest = Bytes::new();
        } else {
            self.rest.advance(n);
        }
    }

    /// Writes `slices`, in order: the body of `AsyncWrite::poll_write` and
    /// `poll_write_vectored` (at most one copy, as described on [`FlowIo`]).
    #[inline]
    pub fn poll_write_slices(&mut self, cx: &mut Context<'_>, slices: &[IoSlice<'_>]) -> Poll<io::Result<usize>> {
        ready!(self.poll_unsent(cx))?;
        if self.borrowed {
            return self.flow.poll_write_borrowed(cx, slices).map_err(io::Error::from);
        }
        let total: usize = slices.iter().map(|s| s.len()).sum();
        if total == 0 {
            return Poll::Ready(Ok(0));
        }
        let mut bufs = crate::flow::copy_slices(slices, total);
        match self.flow.poll_writev(cx, &mut bufs) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(total)),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e.into())),
            // The flow registered `cx` for the rest; the next write or a flush drives it.
            Poll::Pending => {
                bufs.retain(|b| !b.is_empty());
                self.unsent = bufs;
                Poll::Ready(Ok(total))
            }
        }
    }

    /// The body of `AsyncWrite::poll_flush`: what a write left here, then
    /// the flow's [`Flow::poll_flush`], which finishes a flush it still owes.
    #[inline]
    pub fn poll_flush_all(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_unsent(cx))?;
        self.flow.poll_flush(cx).map_err(io::Error::from)
    }

    /// The body of `AsyncWrite::poll_shutdown`: what a write left here, then
    /// the flow's `shutdown(Write)`.
    pub fn poll_shutdown_write(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_unsent(cx))?;
        self.flow.poll_shutdown(cx, Shutdown::Write).map_err(io::Error::from)
    }
}

/// Bytes already read (by [`AsyncBufRead`], or left over by a flow's
/// [`Flow::poll_read_into`]) go out first; then the flow reads straight into
/// `buf` when it can (a flow over a socket: no chunk, no copy), otherwise its
/// next chunk is copied in and what does not fit waits here.
impl<F: Flow> AsyncRead for FlowIo<F> {
    #[inline]
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        if !this.rest.is_empty() {
            this.take_rest(buf);
            return Poll::Ready(Ok(()));
        }
        match this.flow.poll_read_into(cx, buf, &mut this.rest) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(())),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e.into())),
            Poll::Pending => Poll::Pending,
        }
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
        if amt >= this.rest.len() {
            this.rest = Bytes::new();
        } else {
            this.rest.advance(amt);
        }
    }
}

impl<F: Flow> AsyncWrite for FlowIo<F> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.get_mut().poll_write_slices(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_write_slices(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    /// Writes what a write left here, then polls [`Flow::poll_flush`], which
    /// finishes any write the flow accepted but has not flushed yet (a
    /// layered stream); for other flows it is `Ok` at once.
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_flush_all(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_shutdown_write(cx)
    }
}

/// Default size of the buffer [`FromTokio`] reads into.
pub const DEFAULT_READ_CHUNK: usize = 64 * 1024;

/// Any tokio `AsyncRead + AsyncWrite` as a flow.
///
/// Reads return freshly filled owned buffers of up to the chunk size (64 KiB by
/// default); [`Flow::poll_read_into`] reads straight into the caller's buffer
/// (so [`FlowIo`] over it copies nothing). A write completes once the stream took every byte *and* flushed,
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

    /// The stream's read poll, for both read paths: pending -> the reader's
    /// waker kept (a shutdown of the read side wakes it); an error ->
    /// latched, so every later read returns it.
    fn reader_polled<R>(&mut self, cx: &mut Context<'_>, polled: Poll<io::Result<R>>) -> Poll<Result<R, FlowError>> {
        let Poll::Ready(polled) = polled else {
            if !self.read_waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                self.read_waker = Some(cx.waker().clone());
            }
            return Poll::Pending;
        };
        self.read_waker = None;
        Poll::Ready(polled.map_err(|e| {
            let e = FlowError::from(e);
            self.read_err = Some(e.latched());
            e
        }))
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
        match ready!(self.reader_polled(cx, polled)) {
            Ok(0) => {
                self.eof = true;
                Poll::Ready(Ok(None))
            }
            Ok(_) => Poll::Ready(Ok(Some(self.read_buf.split().freeze()))),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    /// Straight into `buf`: the stream's own `poll_read`, with no chunk and
    /// no copy (the bytes `poll_read` reads go out as they are read, so none
    /// wait here).
    fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
        _rest: &mut Bytes,
    ) -> Poll<Result<(), FlowError>> {
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        if let Some(e) = &self.read_err {
            return Poll::Ready(Err(e.latched()));
        }
        if self.read_shut || self.eof {
            return Poll::Ready(Ok(()));
        }
        let Some(io) = self.io.as_mut() else { return Poll::Ready(Ok(())) };
        let before = buf.filled().len();
        let polled = Pin::new(io).poll_read(cx, buf);
        ready!(self.reader_polled(cx, polled))?;
        if buf.filled().len() == before {
            self.eof = true;
        }
        Poll::Ready(Ok(()))
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

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Each `poll_writev` call's buffers, as (address, length).
    type Calls = Arc<Mutex<Vec<Vec<(usize, usize)>>>>;

    /// A flow that takes at most `room` bytes a call (then `Pending`) and
    /// records each `poll_writev` call's buffers, by their addresses.
    struct Recorder {
        room: usize,
        calls: Calls,
        got: Arc<Mutex<Vec<u8>>>,
    }

    impl Flow for Recorder {
        fn poll_read(&mut self, _cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, FlowError>> {
            Poll::Ready(Ok(None))
        }
        fn poll_write(&mut self, cx: &mut Context<'_>, buf: &mut Bytes) -> Poll<Result<(), FlowError>> {
            self.poll_writev(cx, std::slice::from_mut(buf))
        }
        fn poll_writev(&mut self, _cx: &mut Context<'_>, bufs: &mut [Bytes]) -> Poll<Result<(), FlowError>> {
            self.calls.lock().unwrap().push(bufs.iter().map(|b| (b.as_ptr() as usize, b.len())).collect());
            let mut room = self.room;
            for b in bufs.iter_mut() {
                let n = b.len().min(room);
                self.got.lock().unwrap().extend_from_slice(&b[..n]);
                b.advance(n);
                room -= n;
            }
            if bufs.iter().all(Bytes::is_empty) { Poll::Ready(Ok(())) } else { Poll::Pending }
        }
        fn poll_shutdown(&mut self, _cx: &mut Context<'_>, _how: Shutdown) -> Poll<Result<(), FlowError>> {
            Poll::Ready(Ok(()))
        }
        fn poll_close(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), FlowError>> {
            Poll::Ready(Ok(()))
        }
    }

    fn recorder(room: usize) -> (Recorder, Calls, Arc<Mutex<Vec<u8>>>) {
        let (calls, got) = (Calls::default(), Arc::default());
        (Recorder { room, calls: calls.clone(), got: Arc::clone(&got) }, calls, got)
    }

    /// A vectored write reaches a copying flow as one `poll_writev` of one
    /// buffer per slice, in one allocation; what the flow could not take yet
    /// is offered again from where it stopped (never copied again), before
    /// the next write's bytes, and a flush finishes it.
    #[test]
    fn a_vectored_write_is_one_writev_and_each_byte_is_copied_once() {
        let (flow, calls, got) = recorder(5);
        let mut io = FlowIo::new(flow);
        let mut cx = Context::from_waker(Waker::noop());
        let slices = [IoSlice::new(b"head"), IoSlice::new(b""), IoSlice::new(b"body-bytes")];
        let wrote = Pin::new(&mut io).poll_write_vectored(&mut cx, &slices);
        assert!(matches!(wrote, Poll::Ready(Ok(14))), "{wrote:?}");
        {
            let calls = calls.lock().unwrap();
            assert_eq!(calls.len(), 1, "one writev");
            let first = &calls[0];
            assert_eq!(first.iter().map(|c| c.1).collect::<Vec<_>>(), [4, 10], "one buffer per non-empty slice");
            assert_eq!(first[0].0 + 4, first[1].0, "one allocation, cut in two");
        }
        // The next write first finishes the previous one (from where it stopped).
        assert!(Pin::new(&mut io).poll_write(&mut cx, b"next").is_pending());
        assert!(Pin::new(&mut io).poll_flush(&mut cx).is_ready());
        {
            let calls = calls.lock().unwrap();
            let (ptr, len) = calls[1][0];
            assert_eq!((ptr, len), (calls[0][1].0 + 1, 9), "the rest of the same buffer, not a copy");
        }
        assert!(matches!(Pin::new(&mut io).poll_write(&mut cx, b"next"), Poll::Ready(Ok(4))));
        while Pin::new(&mut io).poll_flush(&mut cx).is_pending() {}
        assert_eq!(&got.lock().unwrap()[..], b"headbody-bytesnext");
    }

    /// hyper-style callers offer what a write did not take again: a flow
    /// taking 4 KiB a call gets 1 MiB in 256 offers of the same one copy
    /// (before, each offer copied the whole rest: 128 MiB of copies).
    #[test]
    fn a_large_write_is_copied_once_however_often_the_flow_takes_a_little() {
        let (flow, calls, got) = recorder(4096);
        let mut io = FlowIo::new(flow);
        let mut cx = Context::from_waker(Waker::noop());
        let data: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
        let mut at = 0;
        while at < data.len() {
            match Pin::new(&mut io).poll_write(&mut cx, &data[at..]) {
                Poll::Ready(Ok(n)) => at += n,
                Poll::Ready(Err(e)) => panic!("{e}"),
                Poll::Pending => {}
            }
        }
        while Pin::new(&mut io).poll_flush(&mut cx).is_pending() {}
        assert_eq!(*got.lock().unwrap(), data);
        let calls = calls.lock().unwrap();
        let base = calls[0][0].0;
        for (i, call) in calls.iter().filter(|c| !c.is_empty() && c[0].1 > 0).enumerate() {
            assert_eq!(call[0].0, base + i * 4096, "offer {i} is the same copy, further on");
        }
    }

    /// The default `poll_write_borrowed` (a copying flow): reports what the
    /// flow took (a part), `Pending` when it took nothing, 0 for no bytes.
    #[test]
    fn the_default_borrowed_write_reports_a_partial_take() {
        let (mut flow, calls, got) = recorder(3);
        let mut cx = Context::from_waker(Waker::noop());
        assert!(!flow.is_write_borrowed());
        let slices = [IoSlice::new(b"ab"), IoSlice::new(b"cdef")];
        assert!(matches!(flow.poll_write_borrowed(&mut cx, &slices), Poll::Ready(Ok(3))));
        assert_eq!(calls.lock().unwrap()[0].len(), 2, "one writev of both slices");
        assert!(matches!(
            flow.poll_write_borrowed(&mut cx, &[IoSlice::new(b""), IoSlice::new(b"")]),
            Poll::Ready(Ok(0))
        ));
        flow.room = 0;
        assert!(flow.poll_write_borrowed(&mut cx, &[IoSlice::new(b"def")]).is_pending());
        assert_eq!(&got.lock().unwrap()[..], b"abc");
    }

    /// `FromTokio` reads straight into the caller's buffer: no chunk is
    /// left over however little room the caller has, the bytes come in
    /// order, and Eof is sticky for both ways of reading.
    #[tokio::test]
    async fn from_tokio_reads_into_the_callers_buffer() {
        use tokio::io::AsyncWriteExt;
        let (near, mut far) = tokio::io::duplex(64);
        let mut flow = FromTokio::new(near);
        far.write_all(b"hello world").await.unwrap();
        let mut got = Vec::new();
        let mut rest = Bytes::new();
        while got.len() < 11 {
            let mut space = [0u8; 4];
            let mut buf = ReadBuf::new(&mut space);
            std::future::poll_fn(|cx| flow.poll_read_into(cx, &mut buf, &mut rest)).await.unwrap();
            assert!(rest.is_empty(), "nothing left over: {rest:?}");
            assert!(!buf.filled().is_empty());
            got.extend_from_slice(buf.filled());
        }
        assert_eq!(got, b"hello world");
        drop(far);
        let mut space = [0u8; 4];
        let mut buf = ReadBuf::new(&mut space);
        std::future::poll_fn(|cx| flow.poll_read_into(cx, &mut buf, &mut rest)).await.unwrap();
        assert!(buf.filled().is_empty(), "Eof");
        assert!(matches!(std::future::poll_fn(|cx| flow.poll_read(cx)).await, Ok(None)), "Eof is sticky");
    }

    /// `FlowIo` over a chunk-reading flow hands out what did not fit first,
    /// in order, through `AsyncRead` and `AsyncBufRead` alike, and a flush
    /// goes through the flow's `poll_flush`.
    #[tokio::test]
    async fn flow_io_hands_out_the_rest_of_a_chunk_in_order() {
        use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
        let (a, mut b) = crate::pipe(1024);
        let mut io = FlowIo::new(a);
        crate::FlowExt::write(&mut b, Bytes::from_static(b"0123456789")).await.unwrap();
        let mut three = [0u8; 3];
        io.read_exact(&mut three).await.unwrap();
        assert_eq!(&three, b"012");
        assert_eq!(io.fill_buf().await.unwrap(), b"3456789");
        Pin::new(&mut io).consume(2);
        let mut rest = [0u8; 5];
        io.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"56789");
        io.write_all(b"back").await.unwrap();
        io.flush().await.unwrap();
        assert_eq!(&crate::FlowExt::read(&mut b).await.unwrap().unwrap()[..], b"back");
    }

    /// A flow that owes no flush answers `FlowIo`'s flush itself, without
    /// the empty write (which this one refuses).
    #[test]
    fn a_flush_asks_the_flows_poll_flush() {
        struct NoEmptyWrites(usize);
        impl Flow for NoEmptyWrites {
            fn poll_read(&mut self, _cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, FlowError>> {
                Poll::Ready(Ok(None))
            }
            fn poll_write(&mut self, _cx: &mut Context<'_>, buf: &mut Bytes) -> Poll<Result<(), FlowError>> {
                assert!(!buf.is_empty(), "an empty write: the flush should have gone to poll_flush");
                *buf = Bytes::new();
                Poll::Ready(Ok(()))
            }
            fn poll_flush(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), FlowError>> {
                self.0 += 1;
                Poll::Ready(Ok(()))
            }
            fn poll_shutdown(&mut self, _cx: &mut Context<'_>, _how: Shutdown) -> Poll<Result<(), FlowError>> {
                Poll::Ready(Ok(()))
            }
            fn poll_close(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), FlowError>> {
                Poll::Ready(Ok(()))
            }
        }
        let mut io = FlowIo::new(crate::BoxFlow::new(NoEmptyWrites(0)));
        let mut cx = Context::from_waker(Waker::noop());
        assert!(matches!(Pin::new(&mut io).poll_write(&mut cx, b"x"), Poll::Ready(Ok(1))));
        assert!(matches!(Pin::new(&mut io).poll_flush(&mut cx), Poll::Ready(Ok(()))));
        assert_eq!(io.get_ref().downcast_ref::<NoEmptyWrites>().map(|f| f.0), Some(1));
    }
}

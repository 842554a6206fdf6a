//! The core `Flow` trait (poll-based, dyn-compatible) and its async sugar.

use std::future::Future;
use std::io::IoSlice;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::ReadBuf;

use crate::FlowError;

/// Which direction(s) a [`Flow::poll_shutdown`] closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Shutdown {
    /// This side will never read again: later reads return Eof at once.
    Read,
    /// Flush pending writes, then signal the peer (Eof on its side). Later writes fail with `Closed`.
    Write,
    /// Both of the above.
    Both,
}

impl Shutdown {
    /// True when this shuts the read side.
    pub fn reads(self) -> bool {
        matches!(self, Shutdown::Read | Shutdown::Both)
    }

    /// True when this shuts the write side.
    pub fn writes(self) -> bool {
        matches!(self, Shutdown::Write | Shutdown::Both)
    }
}

/// A single reliable, ordered, bidirectional byte stream to one endpoint.
///
/// This is MirageOS's `Mirage_flow.S` in poll form. The trait is dyn-compatible
/// (see [`BoxFlow`](crate::BoxFlow)); the async methods live in [`FlowExt`].
///
/// # Contract
///
/// - [`poll_read`](Flow::poll_read) yields owned bytes, **never empty**, or `None`
///   (Eof) once the peer shut its write side and every in-flight byte was read. Eof
///   is sticky; after an error no later read yields data.
/// - [`poll_write`](Flow::poll_write) takes bytes out of the front of `buf`
///   (ownership moves into the flow) and is ready once the whole buffer was
///   *accepted* (not necessarily delivered). On `Pending`, what is left in `buf`
///   was not accepted; `buf` may be empty while the write is still pending (a
///   layered stream finishing its flush), so callers poll until `Ready`, as the
///   futures of [`FlowExt`] do. An empty write sends nothing; a flow with an
///   unfinished flush uses it to finish that flush. Once the flow can no longer
///   send, writes fail with `Closed`.
/// - [`poll_shutdown`](Flow::poll_shutdown) is idempotent: a second call is `Ok`
///   and signals nothing more.
/// - [`poll_close`](Flow::poll_close) terminates the flow gracefully (bytes already
///   accepted still reach the peer) and frees its resources; a second close is `Ok`.
///   After it reads give Eof (or an error) and writes give `Closed`; nothing hangs.
/// - Dropping a flow without closing it ends the peer's reads (Eof or error).
/// - A pending read and a pending write may coexist: implementations keep
///   separate wakers for the two directions (as tokio's `AsyncRead`/`AsyncWrite`
///   pairs do), which is what [`split`](FlowExt::split) relies on.
/// - Reads are cancel-safe: a `Pending` read loses nothing.
/// - [`poll_write_borrowed`](Flow::poll_write_borrowed) writes from the
///   caller's borrowed slices (hyper and tokio callers hold `&[u8]`): a flow
///   over a socket writes them straight to it (one `writev`, no copy) and says
///   so with [`is_write_borrowed`](Flow::is_write_borrowed); the default
///   copies them once into owned buffers for [`poll_writev`](Flow::poll_writev).
/// - [`poll_read_into`](Flow::poll_read_into) is the read side's counterpart:
///   a flow over a socket reads straight into the caller's buffer (no owned
///   chunk, no copy); the default reads a chunk and copies it, leaving what
///   did not fit in the caller's `rest`. Both reads see one stream: a flow
///   may be read either way, in any mix, and the rules above (Eof sticky,
///   errors latched, cancel-safe) hold for both.
/// - [`poll_flush`](Flow::poll_flush) finishes a flush the flow still owes
///   for bytes it accepted: the same as an empty
///   [`poll_write`](Flow::poll_write) (the default), which a flow that never
///   owes one answers at once without the call.
pub trait Flow: Send + 'static {
    /// Polls for the next chunk of data: `Some(bytes)` (never empty) or `None` at Eof.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, FlowError>>;

    /// Reads into the caller's buffer, as tokio's `AsyncRead::poll_read`
    /// does: `Ready(Ok(()))` with at least one byte appended to `buf`, or
    /// with none at Eof (or when `buf` has no room: call it with room).
    /// `rest` must be empty on entry; a flow may leave bytes there that it
    /// read but that did not fit (they come before anything read later, so
    /// the caller hands them out first), and leaves it as it is otherwise
    /// (an empty `rest` given back holds no spent chunk).
    ///
    /// The default reads one chunk ([`poll_read`](Flow::poll_read)), copies
    /// what fits and leaves the rest in `rest`. A flow over a socket
    /// overrides it and reads into `buf` directly, which saves the chunk and
    /// the copy ([`FlowIo`](crate::FlowIo)'s `AsyncRead`, and so hyper and
    /// tokio callers, read this way).
    fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
        rest: &mut Bytes,
    ) -> Poll<Result<(), FlowError>> {
        poll_read_chunk_into(self, cx, buf, rest)
    }

    /// Hands the front of `buf` to the flow, advancing `buf` past what was accepted.
    /// Ready once `buf` is empty.
    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &mut Bytes) -> Poll<Result<(), FlowError>>;

    /// As [`poll_write`](Flow::poll_write) for a sequence of buffers, in order;
    /// empty elements are skipped. Ready once every element is empty.
    ///
    /// The default writes each buffer in turn; flows that can batch override it.
    fn poll_writev(&mut self, cx: &mut Context<'_>, bufs: &mut [Bytes]) -> Poll<Result<(), FlowError>> {
        for buf in bufs.iter_mut() {
            if !buf.is_empty() {
                ready!(self.poll_write(cx, buf))?;
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Writes from borrowed slices, in order, as tokio's
    /// `poll_write_vectored` does: `Ready(Ok(n))` once the flow accepted the
    /// first `n` bytes (`n > 0` unless every slice is empty), `Pending` (with
    /// `cx` registered) while it accepts none. What was not accepted is the
    /// caller's to offer again. As with [`poll_write`](Flow::poll_write),
    /// accepted bytes may still owe a flush, which an empty
    /// [`poll_write`](Flow::poll_write) finishes.
    ///
    /// The default copies the slices into one allocation (one owned buffer
    /// per slice, so a vectored flow still sends them in one `writev`) and
    /// hands them to [`poll_writev`](Flow::poll_writev), reporting what it
    /// took; the copy of what it did not take is dropped, so a caller that
    /// offers a large buffer again and again to such a flow copies its rest
    /// each time: callers with large writes check
    /// [`is_write_borrowed`](Flow::is_write_borrowed) and otherwise copy once
    /// and keep the rest themselves (as [`FlowIo`](crate::FlowIo) does).
    fn poll_write_borrowed(&mut self, cx: &mut Context<'_>, bufs: &[IoSlice<'_>]) -> Poll<Result<usize, FlowError>> {
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if total == 0 {
            return Poll::Ready(Ok(0));
        }
        let mut owned = copy_slices(bufs, total);
        let polled = self.poll_writev(cx, &mut owned);
        let left: usize = owned.iter().map(Bytes::len).sum();
        match polled {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(total)),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending if left < total => Poll::Ready(Ok(total - left)),
            Poll::Pending => Poll::Pending,
        }
    }

    /// True when [`poll_write_borrowed`](Flow::poll_write_borrowed) writes the
    /// caller's slices without copying them (a flow over a socket); the
    /// default is `false` (it copies). It is the same for the flow's whole
    /// life (callers such as [`FlowIo`](crate::FlowIo) ask once).
    fn is_write_borrowed(&self) -> bool {
        false
    }

    /// Finishes a flush the flow owes for bytes it already accepted (a
    /// layered stream's): `Ready(Ok(()))` once there is none, as tokio's
    /// `AsyncWrite::poll_flush`. The default is an empty
    /// [`poll_write`](Flow::poll_write), which the contract makes the same;
    /// a flow that never owes a flush (a socket's) answers at once.
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), FlowError>> {
        self.poll_write(cx, &mut Bytes::new())
    }

    /// Shuts one or both directions. Idempotent.
    fn poll_shutdown(&mut self, cx: &mut Context<'_>, how: Shutdown) -> Poll<Result<(), FlowError>>;

    /// Terminates the flow gracefully and frees its resources. A flow layered on
    /// another flow closes the lower one too.
    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), FlowError>>;

    /// Terminates at once without the graceful part (TCP: RST; a pipe: the peer
    /// reads a reset). The default is [`poll_close`](Flow::poll_close).
    fn poll_abort(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), FlowError>> {
        self.poll_close(cx)
    }
}

/// [`Flow::poll_read_into`]'s default, for flows that override it but
/// sometimes cannot read into `buf` directly: one chunk
/// ([`poll_read`](Flow::poll_read)), what fits copied into `buf`, the rest
/// left in `rest`.
pub fn poll_read_chunk_into<F: Flow + ?Sized>(
    flow: &mut F,
    cx: &mut Context<'_>,
    buf: &mut ReadBuf<'_>,
    rest: &mut Bytes,
) -> Poll<Result<(), FlowError>> {
    if buf.remaining() == 0 {
        return Poll::Ready(Ok(()));
    }
    if let Some(mut chunk) = ready!(flow.poll_read(cx))? {
        let n = chunk.len().min(buf.remaining());
        buf.put_slice(&chunk[..n]);
        if n < chunk.len() {
            chunk.advance(n);
            *rest = chunk;
        }
    }
    Poll::Ready(Ok(()))
}

/// `bufs` (`total` bytes in all) copied into one allocation, one owned buffer
/// per non-empty slice.
pub(crate) fn copy_slices(bufs: &[IoSlice<'_>], total: usize) -> Vec<Bytes> {
    if let [one] = bufs {
        return vec![Bytes::copy_from_slice(one)];
    }
    let mut joined = BytesMut::with_capacity(total);
    for b in bufs {
        joined.extend_from_slice(b);
    }
    let mut joined = joined.freeze();
    bufs.iter().filter(|b| !b.is_empty()).map(|b| joined.split_to(b.len())).collect()
}

impl<F: Flow + ?Sized> Flow for Box<F> {
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, FlowError>> {
        (**self).poll_read(cx)
    }
    fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
        rest: &mut Bytes,
    ) -> Poll<Result<(), FlowError>> {
        (**self).poll_read_into(cx, buf, rest)
    }
    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &mut Bytes) -> Poll<Result<(), FlowError>> {
        (**self).poll_write(cx, buf)
    }
    fn poll_writev(&mut self, cx: &mut Context<'_>, bufs: &mut [Bytes]) -> Poll<Result<(), FlowError>> {
        (**self).poll_writev(cx, bufs)
    }
    fn poll_write_borrowed(&mut self, cx: &mut Context<'_>, bufs: &[IoSlice<'_>]) -> Poll<Result<usize, FlowError>> {
        (**self).poll_write_borrowed(cx, bufs)
    }
    fn is_write_borrowed(&self) -> bool {
        (**self).is_write_borrowed()
    }
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), FlowError>> {
        (**self).poll_flush(cx)
    }
    fn poll_shutdown(&mut self, cx: &mut Context<'_>, how: Shutdown) -> Poll<Result<(), FlowError>> {
        (**self).poll_shutdown(cx, how)
    }
    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), FlowError>> {
        (**self).poll_close(cx)
    }
    fn poll_abort(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), FlowError>> {
        (**self).poll_abort(cx)
    }
}

/// Async methods for every [`Flow`].
pub trait FlowExt: Flow {
    /// Reads the next chunk (never empty), or `None` at Eof. Cancel-safe.
    fn read(&mut self) -> ReadFuture<'_, Self> {
        ReadFuture { flow: self }
    }

    /// Writes the whole buffer; completes once the flow accepted all of it.
    /// If the future is dropped early, the peer sees a prefix of the buffer.
    fn write(&mut self, buf: impl Into<Bytes>) -> WriteFuture<'_, Self> {
        WriteFuture { flow: self, buf: buf.into() }
    }

    /// Writes the buffers in order, skipping empty ones.
    fn writev(&mut self, bufs: Vec<Bytes>) -> WritevFuture<'_, Self> {
        WritevFuture { flow: self, bufs }
    }

    /// Shuts one or both directions (idempotent).
    fn shutdown(&mut self, how: Shutdown) -> ShutdownFuture<'_, Self> {
        ShutdownFuture { flow: self, how }
    }

    /// Closes the flow gracefully; a second close is `Ok`.
    fn close(&mut self) -> CloseFuture<'_, Self> {
        CloseFuture { flow: self, abort: false }
    }

    /// Terminates the flow at once (a reset where the transport has one).
    fn abort(&mut self) -> CloseFuture<'_, Self> {
        CloseFuture { flow: self, abort: true }
    }

    /// Reads until Eof, concatenating every chunk.
    fn read_to_end(&mut self) -> impl Future<Output = Result<Vec<u8>, FlowError>> + Send + '_ {
        async move {
            let mut out = Vec::new();
            while let Some(chunk) = self.read().await? {
                out.extend_from_slice(&chunk);
            }
            Ok(out)
        }
    }

    /// Splits the flow into owned read and write halves for full-duplex use.
    fn split(self) -> (crate::ReadHalf<Self>, crate::WriteHalf<Self>)
    where
        Self: Sized,
    {
        crate::split::split(self)
    }

    /// Erases the flow's type.
    fn boxed(self) -> crate::BoxFlow
    where
        Self: Sized,
    {
        crate::BoxFlow::new(self)
    }

    /// Views the flow as a tokio `AsyncRead + AsyncWrite + AsyncBufRead`.
    fn into_tokio(self) -> crate::FlowIo<Self>
    where
        Self: Sized,
    {
        crate::FlowIo::new(self)
    }
}

impl<F: Flow + ?Sized> FlowExt for F {}

/// Future of [`FlowExt::read`].
#[must_use = "futures do nothing unless polled"]
#[derive(Debug)]
pub struct ReadFuture<'a, F: ?Sized> {
    flow: &'a mut F,
}

impl<F: Flow + ?Sized> Future for ReadFuture<'_, F> {
    type Output = Result<Option<Bytes>, FlowError>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.get_mut().flow.poll_read(cx)
    }
}

/// Future of [`FlowExt::write`].
#[must_use = "futures do nothing unless polled"]
#[derive(Debug)]
pub struct WriteFuture<'a, F: ?Sized> {
    flow: &'a mut F,
    buf: Bytes,
}

impl<F: Flow + ?Sized> Future for WriteFuture<'_, F> {
    type Output = Result<(), FlowError>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        this.flow.poll_write(cx, &mut this.buf)
    }
}

/// Future of [`FlowExt::writev`].
#[must_use = "futures do nothing unless polled"]
#[derive(Debug)]
pub struct WritevFuture<'a, F: ?Sized> {
    flow: &'a mut F,
    bufs: Vec<Bytes>,
}

impl<F: Flow + ?Sized> Future for WritevFuture<'_, F> {
    type Output = Result<(), FlowError>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        this.flow.poll_writev(cx, &mut this.bufs)
    }
}

/// Future of [`FlowExt::shutdown`].
#[must_use = "futures do nothing unless polled"]
#[derive(Debug)]
pub struct ShutdownFuture<'a, F: ?Sized> {
    flow: &'a mut F,
    how: Shutdown,
}

impl<F: Flow + ?Sized> Future for ShutdownFuture<'_, F> {
    type Output = Result<(), FlowError>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        this.flow.poll_shutdown(cx, this.how)
    }
}

/// Future of [`FlowExt::close`] and [`FlowExt::abort`].
#[must_use = "futures do nothing unless polled"]
#[derive(Debug)]
pub struct CloseFuture<'a, F: ?Sized> {
    flow: &'a mut F,
    abort: bool,
}

impl<F: Flow + ?Sized> Future for CloseFuture<'_, F> {
    type Output = Result<(), FlowError>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if this.abort { this.flow.poll_abort(cx) } else { this.flow.poll_close(cx) }
    }
}

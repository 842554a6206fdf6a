//! Owned read and write halves of a flow, and a cloneable writer whose writes never interleave.

use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;

use crate::{Flow, FlowError, Shutdown};

/// How long a dropped [`WriteHalf`] keeps trying to finish `shutdown(Write)` in
/// the background when the flow could not do it at once.
pub const DROP_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

struct Shared<F> {
    flow: Mutex<F>,
}

impl<F> Shared<F> {
    fn lock(&self) -> MutexGuard<'_, F> {
        self.flow.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

pub(crate) fn split<F: Flow>(flow: F) -> (ReadHalf<F>, WriteHalf<F>) {
    let shared = Arc::new(Shared { flow: Mutex::new(flow) });
    (ReadHalf { shared: shared.clone() }, WriteHalf { shared, shut: false })
}

/// The read half of a [`split`](crate::FlowExt::split) flow.
///
/// The halves share the flow behind a lock taken only for the duration of each
/// poll, never across an await, so a pending read never blocks a write.
pub struct ReadHalf<F> {
    shared: Arc<Shared<F>>,
}

/// The write half of a [`split`](crate::FlowExt::split) flow.
///
/// Dropping it *starts* `shutdown(Write)`: at once when the flow can do so
/// without waiting (pipes, the tokio adapter over most streams, TCP), otherwise
/// in a background task on the current tokio runtime, bounded by
/// [`DROP_SHUTDOWN_TIMEOUT`].
pub struct WriteHalf<F: Flow> {
    shared: Arc<Shared<F>>,
    shut: bool,
}

impl<F> std::fmt::Debug for ReadHalf<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadHalf").finish_non_exhaustive()
    }
}

impl<F: Flow> std::fmt::Debug for WriteHalf<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteHalf").field("shut", &self.shut).finish_non_exhaustive()
    }
}

/// The halves passed to [`ReadHalf::reunite`] came from different flows.
#[derive(Debug, thiserror::Error)]
#[error("the read and write halves belong to different flows")]
pub struct ReuniteError<F: Flow>(pub ReadHalf<F>, pub WriteHalf<F>);

impl<F: Flow> ReadHalf<F> {
    /// Polls for the next chunk (never empty), or `None` at Eof.
    pub fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, FlowError>> {
        self.shared.lock().poll_read(cx)
    }

    /// Reads the next chunk (never empty), or `None` at Eof. Cancel-safe.
    pub async fn read(&mut self) -> Result<Option<Bytes>, FlowError> {
        poll_fn(|cx| self.poll_read(cx)).await
    }

    /// `shutdown(Read)` on the flow: later reads return Eof at once.
    pub async fn shutdown(&mut self) -> Result<(), FlowError> {
        poll_fn(|cx| self.shared.lock().poll_shutdown(cx, Shutdown::Read)).await
    }

    /// Puts the flow back together.
    pub fn reunite(self, write: WriteHalf<F>) -> Result<F, ReuniteError<F>> {
        if !Arc::ptr_eq(&self.shared, &write.shared) {
            return Err(ReuniteError(self, write));
        }
        let mut write = write;
        write.shut = true; // disarm the drop shutdown
        let shared = write.shared.clone();
        drop(write);
        drop(self);
        match Arc::try_unwrap(shared) {
            Ok(shared) => Ok(shared.flow.into_inner().unwrap_or_else(|p| p.into_inner())),
            Err(_) => unreachable!("both halves were consumed"),
        }
    }
}

impl<F: Flow> WriteHalf<F> {
    /// Hands the front of `buf` to the flow; ready once `buf` is empty.
    pub fn poll_write(&mut self, cx: &mut Context<'_>, buf: &mut Bytes) -> Poll<Result<(), FlowError>> {
        self.shared.lock().poll_write(cx, buf)
    }

    /// As [`poll_write`](Self::poll_write) for a sequence of buffers.
    pub fn poll_writev(&mut self, cx: &mut Context<'_>, bufs: &mut [Bytes]) -> Poll<Result<(), FlowError>> {
        self.shared.lock().poll_writev(cx, bufs)
    }

    /// Writes the whole buffer.
    pub async fn write(&mut self, buf: impl Into<Bytes>) -> Result<(), FlowError> {
        let mut buf = buf.into();
        poll_fn(|cx| self.poll_write(cx, &mut buf)).await
    }

    /// Writes the buffers in order, skipping empty ones.
    pub async fn writev(&mut self, mut bufs: Vec<Bytes>) -> Result<(), FlowError> {
        poll_fn(|cx| self.poll_writev(cx, &mut bufs)).await
    }

    /// `shutdown(Write)` on the flow: the peer sees Eof after everything written.
    pub async fn shutdown(&mut self) -> Result<(), FlowError> {
        poll_fn(|cx| self.shared.lock().poll_shutdown(cx, Shutdown::Write)).await?;
        self.shut = true;
        Ok(())
    }

    /// Closes the whole flow (both halves). A read pending on the read half ends.
    pub async fn close(&mut self) -> Result<(), FlowError> {
        self.shut = true;
        poll_fn(|cx| self.shared.lock().poll_close(cx)).await
    }

    /// Aborts the whole flow (both halves).
    pub async fn abort(&mut self) -> Result<(), FlowError> {
        self.shut = true;
        poll_fn(|cx| self.shared.lock().poll_abort(cx)).await
    }

    /// Turns this half into a cloneable writer whose messages never interleave.
    pub fn into_shared(self) -> SharedWriter<F> {
        SharedWriter::new(self)
    }
}

impl<F: Flow> Drop for WriteHalf<F> {
    fn drop(&mut self) {
        if self.shut {
            return;
        }
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let done = matches!(self.shared.lock().poll_shutdown(&mut cx, Shutdown::Write), Poll::Ready(_));
        if done {
            return;
        }
        let shared = self.shared.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(async move {
                    let finish = poll_fn(|cx| shared.lock().poll_shutdown(cx, Shutdown::Write));
                    if tokio::time::timeout(DROP_SHUTDOWN_TIMEOUT, finish).await.is_err() {
                        tracing::debug!("shutdown(Write) of a dropped write half timed out");
                    }
                });
            }
            Err(_) => tracing::debug!("write half dropped outside a runtime with its shutdown pending"),
        }
    }
}

/// A cloneable writer: each `write`/`writev` lands contiguously, never
/// interleaved with another clone's (what 9P replies and framed messages need).
///
/// Writers queue fairly (first come, first served). A write cancelled after the
/// flow accepted part of its message would leave a torn message on the wire, so
/// it poisons the writer: later writes fail with `Closed`.
pub struct SharedWriter<F: Flow> {
    inner: Arc<tokio::sync::Mutex<SharedState<F>>>,
}

struct SharedState<F: Flow> {
    half: WriteHalf<F>,
    torn: bool,
}

impl<F: Flow> Clone for SharedWriter<F> {
    fn clone(&self) -> Self {
        SharedWriter { inner: self.inner.clone() }
    }
}

impl<F: Flow> std::fmt::Debug for SharedWriter<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedWriter").finish_non_exhaustive()
    }
}

/// Marks the writer torn unless disarmed: armed while a message is part-written.
struct TornGuard<'a, F: Flow> {
    state: &'a mut SharedState<F>,
    armed: bool,
}

impl<F: Flow> Drop for TornGuard<'_, F> {
    fn drop(&mut self) {
        if self.armed {
            self.state.torn = true;
        }
    }
}

impl<F: Flow> SharedWriter<F> {
    /// Wraps a write half.
    pub fn new(half: WriteHalf<F>) -> SharedWriter<F> {
        SharedWriter { inner: Arc::new(tokio::sync::Mutex::new(SharedState { half, torn: false })) }
    }

    /// Writes one whole message.
    pub async fn write(&self, buf: impl Into<Bytes>) -> Result<(), FlowError> {
        let mut buf = buf.into();
        self.writev_slice(std::slice::from_mut(&mut buf)).await
    }

    /// Writes the buffers as one message, in order.
    pub async fn writev(&self, mut bufs: Vec<Bytes>) -> Result<(), FlowError> {
        self.writev_slice(&mut bufs).await
    }

    async fn writev_slice(&self, bufs: &mut [Bytes]) -> Result<(), FlowError> {
        let total: usize = bufs.iter().map(Bytes::len).sum();
        let mut state = self.inner.lock().await;
        if state.torn {
            return Err(FlowError::closed().with_message("an earlier write was cancelled mid-message"));
        }
        let mut guard = TornGuard { state: &mut state, armed: false };
        let result = poll_fn(|cx| {
            let res = guard.state.half.poll_writev(cx, bufs);
            let left: usize = bufs.iter().map(Bytes::len).sum();
            guard.armed = res.is_pending() && left != total;
            res
        })
        .await;
        guard.armed = false;
        result
    }

    /// `shutdown(Write)` after every queued message.
    pub async fn shutdown(&self) -> Result<(), FlowError> {
        self.inner.lock().await.half.shutdown().await
    }

    /// Closes the flow after every queued message.
    pub async fn close(&self) -> Result<(), FlowError> {
        self.inner.lock().await.half.close().await
    }
}

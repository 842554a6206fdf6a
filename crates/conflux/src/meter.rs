//! Byte counters around a flow: what the relay logs per flow, what
//! `--progress` shows, and when the flow last moved a byte (for `--idle-timeout`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use conflux_flow::{Flow, FlowError, Shutdown};
use tokio::time::Instant;

/// Totals over every flow of a relay.
#[derive(Debug, Default)]
pub(crate) struct Totals {
    /// Bytes read from the accepted side (FROM -> TO).
    pub(crate) up: AtomicU64,
    /// Bytes read from the connected side (TO -> FROM).
    pub(crate) down: AtomicU64,
    /// Flows open now.
    pub(crate) open: AtomicUsize,
    /// Flows accepted so far.
    pub(crate) accepted: AtomicU64,
}

/// One relayed flow's counters.
#[derive(Debug)]
pub(crate) struct FlowMeter {
    up: AtomicU64,
    down: AtomicU64,
    started: Instant,
    /// Milliseconds after `started` of the last byte read either way.
    last_ms: AtomicU64,
    totals: Arc<Totals>,
}

impl FlowMeter {
    pub(crate) fn new(totals: Arc<Totals>) -> Arc<FlowMeter> {
        Arc::new(FlowMeter {
            up: AtomicU64::new(0),
            down: AtomicU64::new(0),
            started: Instant::now(),
            last_ms: AtomicU64::new(0),
            totals,
        })
    }

    /// Bytes FROM -> TO, TO -> FROM.
    pub(crate) fn bytes(&self) -> (u64, u64) {
        (self.up.load(Ordering::Relaxed), self.down.load(Ordering::Relaxed))
    }

    /// When the flow last moved a byte (or started).
    pub(crate) fn last_activity(&self) -> Instant {
        self.started + std::time::Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }

    fn note(&self, up: bool, n: usize) {
        let n = n as u64;
        if up {
            self.up.fetch_add(n, Ordering::Relaxed);
            self.totals.up.fetch_add(n, Ordering::Relaxed);
        } else {
            self.down.fetch_add(n, Ordering::Relaxed);
            self.totals.down.fetch_add(n, Ordering::Relaxed);
        }
        let ms = self.started.elapsed().as_millis().min(u128::from(u64::MAX)) as u64;
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
    }
}

/// A flow whose reads are counted on a [`FlowMeter`], as `up` (the accepted
/// side) or down (the connected side).
pub(crate) struct Metered<F> {
    inner: F,
    meter: Arc<FlowMeter>,
    up: bool,
}

impl<F: Flow> Metered<F> {
    pub(crate) fn new(inner: F, meter: Arc<FlowMeter>, up: bool) -> Metered<F> {
        Metered { inner, meter, up }
    }
}

impl<F: Flow> Flow for Metered<F> {
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, FlowError>> {
        let r = self.inner.poll_read(cx);
        if let Poll::Ready(Ok(Some(b))) = &r {
            self.meter.note(self.up, b.len());
        }
        r
    }
    fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
        rest: &mut Bytes,
    ) -> Poll<Result<(), FlowError>> {
        let before = buf.filled().len();
        let r = self.inner.poll_read_into(cx, buf, rest);
        if let Poll::Ready(Ok(())) = r {
            let n = buf.filled().len() - before + rest.len();
            if n > 0 {
                self.meter.note(self.up, n);
            }
        }
        r
    }
    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &mut Bytes) -> Poll<Result<(), FlowError>> {
        self.inner.poll_write(cx, buf)
    }
    fn poll_writev(&mut self, cx: &mut Context<'_>, bufs: &mut [Bytes]) -> Poll<Result<(), FlowError>> {
        self.inner.poll_writev(cx, bufs)
    }
    fn poll_write_borrowed(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<Result<usize, FlowError>> {
        self.inner.poll_write_borrowed(cx, bufs)
    }
    fn is_write_borrowed(&self) -> bool {
        self.inner.is_write_borrowed()
    }
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), FlowError>> {
        self.inner.poll_flush(cx)
    }
    fn poll_shutdown(&mut self, cx: &mut Context<'_>, how: Shutdown) -> Poll<Result<(), FlowError>> {
        self.inner.poll_shutdown(cx, how)
    }
    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), FlowError>> {
        self.inner.poll_close(cx)
    }
    fn poll_abort(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), FlowError>> {
        self.inner.poll_abort(cx)
    }
}

//! `copy` and `proxy`: moving bytes between flows, with statistics.

use std::fmt;
use std::future::poll_fn;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use crate::{Flow, FlowError, Shutdown};

/// What one direction of a [`copy`] or [`proxy`] moved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CopyStats {
    /// Bytes read from the source and written to the destination.
    pub bytes: u64,
    /// Successful reads from the source.
    pub reads: u64,
    /// Completed writes to the destination.
    pub writes: u64,
    /// Time from the start of the copy to its end.
    pub duration: Duration,
}

impl fmt::Display for CopyStats {
    /// `"1.50 MiB in 24 reads, 24 writes over 12.0 ms (131.07 MB/s)"`; the rate is
    /// left out for a zero duration.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_size(f, self.bytes)?;
        write!(f, " in {} reads, {} writes over {:.1?}", self.reads, self.writes, self.duration)?;
        let secs = self.duration.as_secs_f64();
        if secs > 0.0 {
            let rate = self.bytes as f64 / secs;
            write!(f, " ({:.2} MB/s)", rate / 1e6)?;
        }
        Ok(())
    }
}

fn write_size(f: &mut fmt::Formatter<'_>, bytes: u64) -> fmt::Result {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return write!(f, "{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    write!(f, "{value:.2} {}", UNITS[unit])
}

/// Which end of a copy failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Reading the source.
    Source,
    /// Writing to (or shutting down) the destination.
    Destination,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Source => "reading the source",
            Side::Destination => "writing the destination",
        })
    }
}

/// A [`copy`] failed; says which side and what had been moved.
#[derive(Debug, thiserror::Error)]
#[error("copy failed {side}: {source}")]
pub struct CopyError {
    /// Which end failed.
    pub side: Side,
    /// What failed.
    #[source]
    pub source: FlowError,
    /// What was moved before the failure.
    pub stats: CopyStats,
}

/// One direction's progress, driven by [`CopyState::poll`].
#[derive(Debug)]
struct CopyState {
    pending: Bytes,
    /// A write of `pending` is under way: it is polled until `Ready`, even once
    /// `pending` is empty (the flow took every byte but is still flushing).
    writing: bool,
    stats: CopyStats,
    started: Instant,
    finished: bool,
}

/// Operations per poll before yielding to the scheduler, so a copy between two
/// always-ready in-memory flows cannot starve other tasks.
const OPS_PER_POLL: u32 = 64;

impl CopyState {
    fn new() -> CopyState {
        CopyState {
            pending: Bytes::new(),
            writing: false,
            stats: CopyStats::default(),
            started: Instant::now(),
            finished: false,
        }
    }

    /// Copies until the source reports Eof.
    fn poll<S, D>(&mut self, cx: &mut Context<'_>, src: &mut S, dst: &mut D) -> Poll<Result<(), (Side, FlowError)>>
    where
        S: Flow + ?Sized,
        D: Flow + ?Sized,
    {
        let mut budget = OPS_PER_POLL;
        loop {
            if self.writing {
                ready!(dst.poll_write(cx, &mut self.pending)).map_err(|e| (Side::Destination, e))?;
                self.writing = false;
                self.stats.writes += 1;
            }
            match ready!(src.poll_read(cx)).map_err(|e| (Side::Source, e))? {
                Some(chunk) => {
                    self.stats.reads += 1;
                    self.stats.bytes += chunk.len() as u64;
                    self.pending = chunk;
                    self.writing = true;
                }
                None => return Poll::Ready(Ok(())),
            }
            budget -= 1;
            if budget == 0 {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
        }
    }

    /// Stops the clock (once) and returns the figures.
    fn finish(&mut self) -> CopyStats {
        if !self.finished {
            self.finished = true;
            self.stats.duration = self.started.elapsed();
        }
        self.stats
    }
}

/// Copies `src` into `dst` until `src` reaches Eof.
///
/// Neither flow is shut down or closed: Eof ends the copy with `Ok`, leaving
/// `dst` open for more. Each chunk read is written as is (no copying).
pub async fn copy<S, D>(src: &mut S, dst: &mut D) -> Result<CopyStats, CopyError>
where
    S: Flow + ?Sized,
    D: Flow + ?Sized,
{
    let mut state = CopyState::new();
    let result = poll_fn(|cx| state.poll(cx, src, dst)).await;
    let stats = state.finish();
    result.map(|()| stats).map_err(|(side, source)| CopyError { side, source, stats })
}

/// A direction of a [`proxy`]: from `a` to `b`, or from `b` to `a`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Bytes read from `a`, written to `b`.
    AToB,
    /// Bytes read from `b`, written to `a`.
    BToA,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::AToB => "a -> b",
            Direction::BToA => "b -> a",
        })
    }
}

/// What both directions of a [`proxy`] moved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProxyStats {
    /// From `a` to `b`.
    pub a_to_b: CopyStats,
    /// From `b` to `a`.
    pub b_to_a: CopyStats,
}

impl fmt::Display for ProxyStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a -> b: {}; b -> a: {}", self.a_to_b, self.b_to_a)
    }
}

/// A [`proxy`] failed; says which direction and side, and what had been moved.
#[derive(Debug, thiserror::Error)]
#[error("proxy {direction} failed {side}: {source}")]
pub struct ProxyError {
    /// The direction that failed.
    pub direction: Direction,
    /// Which end of that direction failed.
    pub side: Side,
    /// What failed.
    #[source]
    pub source: FlowError,
    /// What both directions moved before the failure.
    pub stats: ProxyStats,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Copying,
    ShuttingSource,
    ShuttingDestination,
    Done,
}

#[derive(Debug)]
struct Leg {
    copy: CopyState,
    stage: Stage,
}

impl Leg {
    fn poll<S, D>(&mut self, cx: &mut Context<'_>, src: &mut S, dst: &mut D) -> Poll<Result<(), (Side, FlowError)>>
    where
        S: Flow + ?Sized,
        D: Flow + ?Sized,
    {
        loop {
            match self.stage {
                Stage::Copying => {
                    ready!(self.copy.poll(cx, src, dst))?;
                    self.copy.finish();
                    self.stage = Stage::ShuttingSource;
                }
                Stage::ShuttingSource => {
                    ready!(src.poll_shutdown(cx, Shutdown::Read)).map_err(|e| (Side::Source, e))?;
                    self.stage = Stage::ShuttingDestination;
                }
                Stage::ShuttingDestination => {
                    ready!(dst.poll_shutdown(cx, Shutdown::Write)).map_err(|e| (Side::Destination, e))?;
                    self.stage = Stage::Done;
                }
                Stage::Done => return Poll::Ready(Ok(())),
            }
        }
    }
}

/// Relays between `a` and `b` in both directions until both reach Eof.
///
/// When one direction reads Eof it does `shutdown(Read)` on its source and
/// `shutdown(Write)` on its destination, and the other direction keeps flowing.
/// A reset read from one side is passed on as an abort of the other (never as a
/// clean Eof, which would hand a truncated stream on as complete); any error
/// ends the proxy with a [`ProxyError`] naming the direction and side. Neither
/// flow is closed: that is the caller's.
pub async fn proxy<A, B>(a: &mut A, b: &mut B) -> Result<ProxyStats, ProxyError>
where
    A: Flow + ?Sized,
    B: Flow + ?Sized,
{
    let mut ab = Leg { copy: CopyState::new(), stage: Stage::Copying };
    let mut ba = Leg { copy: CopyState::new(), stage: Stage::Copying };
    let failure = poll_fn(|cx| {
        let ab_ready = match ab.poll(cx, a, b) {
            Poll::Ready(Ok(())) => true,
            Poll::Ready(Err((side, e))) => return Poll::Ready(Some((Direction::AToB, side, e))),
            Poll::Pending => false,
        };
        match ba.poll(cx, b, a) {
            Poll::Ready(Ok(())) if ab_ready => Poll::Ready(None),
            Poll::Ready(Ok(())) | Poll::Pending => Poll::Pending,
            Poll::Ready(Err((side, e))) => Poll::Ready(Some((Direction::BToA, side, e))),
        }
    })
    .await;
    let stats = ProxyStats { a_to_b: ab.copy.finish(), b_to_a: ba.copy.finish() };
    let Some((direction, side, source)) = failure else { return Ok(stats) };
    if source.is_reset() {
        // The party that reset us is `a` when a -> b failed reading or b -> a failed
        // writing; pass the reset on to the other one.
        let reset_by_a =
            matches!((direction, side), (Direction::AToB, Side::Source) | (Direction::BToA, Side::Destination));
        let aborted =
            if reset_by_a { poll_fn(|cx| b.poll_abort(cx)).await } else { poll_fn(|cx| a.poll_abort(cx)).await };
        if let Err(e) = aborted {
            tracing::debug!(error = %e, "abort while passing on a reset failed");
        }
    }
    tracing::debug!(%direction, %side, error = %source, "proxy failed");
    Err(ProxyError { direction, side, source, stats })
}

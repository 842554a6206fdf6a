//! Deliberately broken flows: the kit's own negative tests check that each is
//! rejected, by the case that names its fault. Never use them for anything else.

use std::task::{Context, Poll, Waker, ready};

use bytes::Bytes;
use conflux_flow::{Flow, FlowError, Pipe, Shutdown, pipe};

use crate::{Caps, CaseId, FlowFactory, PairFuture};

/// One deliberate fault, injected into a wrapper around [`conflux_flow::pipe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Breakage {
    /// After each chunk, the next read returns an empty buffer.
    EmptyChunks,
    /// Holds back the last written buffer until the next write, and forgets it
    /// on `shutdown(Write)` and `close`.
    DropsLastChunkOnShutdown,
    /// `shutdown(Read)` gives Eof once, then reads go on returning data.
    EofNotSticky,
    /// A second `shutdown(Write)` fails.
    SecondShutdownErrors,
    /// A read moves a chunk into state keyed by the reader's waker and returns
    /// `Pending` once; a read with another waker (the first read was dropped)
    /// discards it.
    ReadNotCancelSafe,
    /// Writes after `shutdown(Write)` return `Ok` (and go nowhere).
    WritesAfterShutdown,
}

impl Breakage {
    /// Every breakage.
    pub const ALL: [Breakage; 6] = [
        Breakage::EmptyChunks,
        Breakage::DropsLastChunkOnShutdown,
        Breakage::EofNotSticky,
        Breakage::SecondShutdownErrors,
        Breakage::ReadNotCancelSafe,
        Breakage::WritesAfterShutdown,
    ];

    /// The cases that must reject this breakage (each on its own).
    pub const fn caught_by(self) -> &'static [CaseId] {
        match self {
            Breakage::EmptyChunks => &[CaseId::A2],
            Breakage::DropsLastChunkOnShutdown => &[CaseId::B1, CaseId::B6, CaseId::C7],
            Breakage::EofNotSticky => &[CaseId::B2],
            Breakage::SecondShutdownErrors => &[CaseId::B9],
            Breakage::ReadNotCancelSafe => &[CaseId::E3],
            Breakage::WritesAfterShutdown => &[CaseId::B4],
        }
    }
}

/// Pairs of [`BrokenFlow`] with the given fault on both ends (pipe capabilities).
#[derive(Debug, Clone, Copy)]
pub struct BrokenFactory(pub Breakage);

impl FlowFactory for BrokenFactory {
    type Flow = BrokenFlow;

    fn caps(&self) -> Caps {
        crate::PipeFactory::new().caps()
    }

    fn pair(&self) -> PairFuture<'_, BrokenFlow> {
        let breakage = self.0;
        Box::pin(async move {
            let (a, b) = pipe(64 * 1024);
            Ok((BrokenFlow::new(a, breakage), BrokenFlow::new(b, breakage)))
        })
    }
}

/// A pipe end with one [`Breakage`].
#[derive(Debug)]
pub struct BrokenFlow {
    inner: Pipe,
    breakage: Breakage,
    write_shut: bool,
    empty_next: bool,
    held_write: Option<Bytes>,
    eof_once: bool,
    held_read: Option<(Waker, Bytes)>,
}

impl BrokenFlow {
    fn new(inner: Pipe, breakage: Breakage) -> BrokenFlow {
        BrokenFlow {
            inner,
            breakage,
            write_shut: false,
            empty_next: false,
            held_write: None,
            eof_once: false,
            held_read: None,
        }
    }
}

impl Flow for BrokenFlow {
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, FlowError>> {
        match self.breakage {
            Breakage::EmptyChunks => {
                if std::mem::take(&mut self.empty_next) {
                    return Poll::Ready(Ok(Some(Bytes::new())));
                }
                let r = ready!(self.inner.poll_read(cx));
                self.empty_next = matches!(r, Ok(Some(_)));
                Poll::Ready(r)
            }
            Breakage::EofNotSticky if std::mem::take(&mut self.eof_once) => Poll::Ready(Ok(None)),
            Breakage::ReadNotCancelSafe => {
                if let Some((waker, chunk)) = self.held_read.take()
                    && waker.will_wake(cx.waker())
                {
                    return Poll::Ready(Ok(Some(chunk)));
                }
                // Otherwise another reader: the one holding the chunk was dropped, and the chunk with it.
                match ready!(self.inner.poll_read(cx)) {
                    Ok(Some(chunk)) => {
                        self.held_read = Some((cx.waker().clone(), chunk));
                        cx.waker().wake_by_ref();
                        Poll::Pending
                    }
                    other => Poll::Ready(other),
                }
            }
            _ => self.inner.poll_read(cx),
        }
    }

    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &mut Bytes) -> Poll<Result<(), FlowError>> {
        self.poll_writev(cx, std::slice::from_mut(buf))
    }

    fn poll_writev(&mut self, cx: &mut Context<'_>, bufs: &mut [Bytes]) -> Poll<Result<(), FlowError>> {
        match self.breakage {
            Breakage::WritesAfterShutdown if self.write_shut => {
                bufs.iter_mut().for_each(Bytes::clear);
                Poll::Ready(Ok(()))
            }
            Breakage::DropsLastChunkOnShutdown if !self.write_shut => {
                if let Some(held) = self.held_write.as_mut() {
                    ready!(self.inner.poll_write(cx, held))?;
                    self.held_write = None;
                }
                let Some(last) = bufs.iter().rposition(|b| !b.is_empty()) else { return Poll::Ready(Ok(())) };
                ready!(self.inner.poll_writev(cx, &mut bufs[..last]))?;
                self.held_write = Some(std::mem::take(&mut bufs[last]));
                Poll::Ready(Ok(()))
            }
            _ => self.inner.poll_writev(cx, bufs),
        }
    }

    fn poll_shutdown(&mut self, cx: &mut Context<'_>, how: Shutdown) -> Poll<Result<(), FlowError>> {
        if how.writes() {
            if self.breakage == Breakage::SecondShutdownErrors && self.write_shut {
                return Poll::Ready(Err(FlowError::closed().with_message("already shut down")));
            }
            self.write_shut = true;
            self.held_write = None;
        }
        if self.breakage == Breakage::EofNotSticky && how.reads() {
            self.eof_once = true;
            return match how {
                Shutdown::Both => self.inner.poll_shutdown(cx, Shutdown::Write),
                _ => Poll::Ready(Ok(())),
            };
        }
        self.inner.poll_shutdown(cx, how)
    }

    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), FlowError>> {
        self.write_shut = true;
        self.held_write = None;
        self.inner.poll_close(cx)
    }

    fn poll_abort(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), FlowError>> {
        self.write_shut = true;
        self.inner.poll_abort(cx)
    }
}

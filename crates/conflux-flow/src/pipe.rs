//! An in-memory flow pair with a bounded buffer per direction and real half-close.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;

use crate::{Flow, FlowError, Shutdown};

/// Creates a connected pair of in-memory flows.
///
/// Each direction buffers at most `capacity` bytes (at least 1): a writer facing a
/// full buffer stays pending until the peer reads (backpressure). Written buffers
/// are moved, never copied: a read returns a written buffer (or a piece of one,
/// when a write only partly fit).
///
/// Half-close is real: `shutdown(Write)` gives the peer Eof after it drained the
/// buffer; `shutdown(Read)` discards what is buffered for us and makes the peer's
/// later writes fail with `Closed`; `abort` makes the peer's reads and writes fail
/// with a reset. Dropping an end closes it gracefully.
///
/// ```
/// use conflux_flow::{FlowExt, Shutdown, pipe};
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let (mut a, mut b) = pipe(64 * 1024);
/// a.write("hello").await?;
/// a.shutdown(Shutdown::Write).await?;
/// assert_eq!(b.read_to_end().await?, b"hello");
/// # Ok::<(), conflux_flow::FlowError>(())
/// # }).unwrap();
/// ```
pub fn pipe(capacity: usize) -> (Pipe, Pipe) {
    let capacity = capacity.max(1);
    let ab = Arc::new(Mutex::new(Chan::new(capacity)));
    let ba = Arc::new(Mutex::new(Chan::new(capacity)));
    let a = Pipe { tx: ab.clone(), rx: ba.clone(), read_shut: false, write_shut: false, closed: false };
    let b = Pipe { tx: ba, rx: ab, read_shut: false, write_shut: false, closed: false };
    (a, b)
}

/// One end of an in-memory [`pipe`].
#[derive(Debug)]
pub struct Pipe {
    tx: Arc<Mutex<Chan>>,
    rx: Arc<Mutex<Chan>>,
    read_shut: bool,
    write_shut: bool,
    closed: bool,
}

/// One direction of a pipe.
#[derive(Debug)]
struct Chan {
    queue: VecDeque<Bytes>,
    queued: usize,
    capacity: usize,
    /// The writer shut its side: the reader gets Eof once the queue is empty.
    writer_done: bool,
    /// The writer aborted: the reader gets a reset.
    writer_reset: bool,
    /// The reader shut its side: writes fail (reset when it aborted).
    reader_gone: bool,
    reader_reset: bool,
    read_waker: Option<Waker>,
    write_waker: Option<Waker>,
}

impl Chan {
    fn new(capacity: usize) -> Chan {
        Chan {
            queue: VecDeque::new(),
            queued: 0,
            capacity,
            writer_done: false,
            writer_reset: false,
            reader_gone: false,
            reader_reset: false,
            read_waker: None,
            write_waker: None,
        }
    }

    fn wake_reader(&mut self) {
        if let Some(w) = self.read_waker.take() {
            w.wake();
        }
    }

    fn wake_writer(&mut self) {
        if let Some(w) = self.write_waker.take() {
            w.wake();
        }
    }

    fn discard(&mut self) {
        self.queue.clear();
        self.queued = 0;
    }

    fn write_error(&self) -> Option<FlowError> {
        if self.reader_reset {
            Some(FlowError::reset().with_message("the peer aborted the pipe"))
        } else if self.reader_gone {
            Some(FlowError::closed().with_message("the peer no longer reads"))
        } else {
            None
        }
    }

    /// Moves as much of `buf` as fits into the queue; true when all of it did.
    fn push(&mut self, buf: &mut Bytes) -> bool {
        let room = self.capacity - self.queued;
        if room == 0 {
            return buf.is_empty();
        }
        let chunk = if buf.len() <= room { std::mem::take(buf) } else { buf.split_to(room) };
        if !chunk.is_empty() {
            self.queued += chunk.len();
            self.queue.push_back(chunk);
        }
        buf.is_empty()
    }
}

fn lock(chan: &Mutex<Chan>) -> MutexGuard<'_, Chan> {
    // A panic while holding the lock cannot leave `Chan` half-updated in a way
    // that breaks its invariants worse than the panic itself; keep serving.
    chan.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Pipe {
    /// Bytes written by the peer and not read yet.
    pub fn readable_bytes(&self) -> usize {
        lock(&self.rx).queued
    }

    /// Bytes we wrote that the peer has not read yet.
    pub fn unread_by_peer(&self) -> usize {
        lock(&self.tx).queued
    }

    fn shutdown_write(&mut self) {
        if !self.write_shut {
            self.write_shut = true;
            let mut tx = lock(&self.tx);
            tx.writer_done = true;
            tx.wake_reader();
            // A writer of ours blocked on a full buffer must see Closed now.
            tx.wake_writer();
        }
    }

    fn shutdown_read(&mut self) {
        if !self.read_shut {
            self.read_shut = true;
            let mut rx = lock(&self.rx);
            rx.reader_gone = true;
            rx.discard();
            rx.wake_writer();
            // A read of ours pending on another task ends with Eof.
            rx.wake_reader();
        }
    }
}

impl Flow for Pipe {
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, FlowError>> {
        if self.read_shut {
            return Poll::Ready(Ok(None));
        }
        let mut rx = lock(&self.rx);
        if rx.writer_reset {
            return Poll::Ready(Err(FlowError::reset().with_message("the peer aborted the pipe")));
        }
        if let Some(chunk) = rx.queue.pop_front() {
            rx.queued -= chunk.len();
            rx.wake_writer();
            return Poll::Ready(Ok(Some(chunk)));
        }
        if rx.writer_done {
            return Poll::Ready(Ok(None));
        }
        rx.read_waker = Some(cx.waker().clone());
        Poll::Pending
    }

    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &mut Bytes) -> Poll<Result<(), FlowError>> {
        self.poll_writev(cx, std::slice::from_mut(buf))
    }

    fn poll_writev(&mut self, cx: &mut Context<'_>, bufs: &mut [Bytes]) -> Poll<Result<(), FlowError>> {
        // An empty write puts nothing on the wire, so nothing can fail (as in `FromTokio`).
        if bufs.iter().all(Bytes::is_empty) {
            return Poll::Ready(Ok(()));
        }
        if self.write_shut {
            return Poll::Ready(Err(FlowError::closed()));
        }
        let mut tx = lock(&self.tx);
        if let Some(err) = tx.write_error() {
            return Poll::Ready(Err(err));
        }
        let before = tx.queued;
        let mut all = true;
        for buf in bufs.iter_mut() {
            if !tx.push(buf) {
                all = false;
                break;
            }
        }
        if tx.queued != before {
            tx.wake_reader();
        }
        if all {
            Poll::Ready(Ok(()))
        } else {
            tx.write_waker = Some(cx.waker().clone());
            Poll::Pending
        }
    }

    fn poll_shutdown(&mut self, _cx: &mut Context<'_>, how: Shutdown) -> Poll<Result<(), FlowError>> {
        if how.writes() {
            self.shutdown_write();
        }
        if how.reads() {
            self.shutdown_read();
        }
        Poll::Ready(Ok(()))
    }

    fn poll_close(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), FlowError>> {
        self.shutdown_write();
        self.shutdown_read();
        self.closed = true;
        Poll::Ready(Ok(()))
    }

    fn poll_abort(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), FlowError>> {
        {
            // A reset after the peer already read our Eof would tell it nothing new.
            let mut tx = lock(&self.tx);
            if !tx.writer_done || !tx.queue.is_empty() {
                tx.writer_reset = true;
            }
            tx.writer_done = true;
            tx.discard();
            tx.wake_reader();
            tx.wake_writer();
        }
        {
            let mut rx = lock(&self.rx);
            if !rx.reader_gone {
                rx.reader_reset = true;
            }
            rx.reader_gone = true;
            rx.discard();
            rx.wake_writer();
            rx.wake_reader();
        }
        self.write_shut = true;
        self.read_shut = true;
        self.closed = true;
        Poll::Ready(Ok(()))
    }
}

impl Drop for Pipe {
    fn drop(&mut self) {
        self.shutdown_write();
        self.shutdown_read();
    }
}

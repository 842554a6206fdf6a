//! Function-backed flows (Mirage's `F`): reads come from a function, writes go to one.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};

use crate::{Flow, FlowError, Shutdown};

type InputFn = Box<dyn FnMut() -> Option<Bytes> + Send>;
type OutputFn = Box<dyn FnMut(&[u8]) -> usize + Send>;
type CloseFn = Box<dyn FnMut() + Send>;

/// A flow backed by functions, for tests and for adapting callback-style code.
///
/// - Input: a function returning the next chunk, `None` at the end. Empty chunks
///   are skipped (reads are never empty). Without input, reads give Eof.
/// - Output: a function given the bytes to write that returns how many it took;
///   taking 0 of a non-empty remainder ends the write with `Closed` (the prefix
///   it took stays written). Without output, writes give `Closed`.
///
/// ```
/// use conflux_flow::{FlowExt, FnFlow, OutputBuffer};
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let out = OutputBuffer::zeroed(5);
/// let mut flow = FnFlow::new().with_input_chunks(["ab", "", "c"]).with_output_buffers([out.clone()]);
/// assert_eq!(flow.read().await.unwrap().unwrap(), "ab");
/// assert_eq!(flow.read().await.unwrap().unwrap(), "c");
/// assert!(flow.read().await.unwrap().is_none());
/// flow.write("hi").await.unwrap();
/// assert_eq!(&out.contents()[..2], b"hi");
/// # });
/// ```
#[derive(Default)]
pub struct FnFlow {
    input: Option<InputFn>,
    output: Option<OutputFn>,
    on_close: Option<CloseFn>,
    eof: bool,
    write_closed: bool,
}

impl fmt::Debug for FnFlow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FnFlow")
            .field("input", &self.input.is_some())
            .field("output", &self.output.is_some())
            .field("eof", &self.eof)
            .field("write_closed", &self.write_closed)
            .finish()
    }
}

impl FnFlow {
    /// A flow with no input (reads give Eof) and no output (writes give `Closed`).
    pub fn new() -> FnFlow {
        FnFlow::default()
    }

    /// Reads come from `input`: the next chunk, or `None` at the end.
    pub fn with_input(mut self, input: impl FnMut() -> Option<Bytes> + Send + 'static) -> FnFlow {
        self.input = Some(Box::new(input));
        self
    }

    /// Reads return these chunks in order (empty ones skipped), then Eof.
    pub fn with_input_chunks<I>(self, chunks: I) -> FnFlow
    where
        I: IntoIterator,
        I::Item: Into<Bytes>,
    {
        let mut chunks: VecDeque<Bytes> = chunks.into_iter().map(Into::into).collect();
        self.with_input(move || chunks.pop_front())
    }

    /// Writes go to `output`, which returns how many bytes it took.
    pub fn with_output(mut self, output: impl FnMut(&[u8]) -> usize + Send + 'static) -> FnFlow {
        self.output = Some(Box::new(output));
        self
    }

    /// Writes fill these buffers in order (skipping full or zero-sized ones);
    /// once all are full, writes give `Closed`.
    pub fn with_output_buffers<I>(self, buffers: I) -> FnFlow
    where
        I: IntoIterator<Item = OutputBuffer>,
    {
        let buffers: Vec<OutputBuffer> = buffers.into_iter().collect();
        self.with_output(move |bytes| {
            let mut taken = 0;
            for buf in &buffers {
                taken += buf.fill(&bytes[taken..]);
                if taken == bytes.len() {
                    break;
                }
            }
            taken
        })
    }

    /// Runs `on_close` once, when the flow is closed.
    pub fn with_close(mut self, on_close: impl FnMut() + Send + 'static) -> FnFlow {
        self.on_close = Some(Box::new(on_close));
        self
    }
}

impl Flow for FnFlow {
    fn poll_read(&mut self, _cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, FlowError>> {
        if self.eof {
            return Poll::Ready(Ok(None));
        }
        let Some(input) = self.input.as_mut() else {
            self.eof = true;
            return Poll::Ready(Ok(None));
        };
        loop {
            match input() {
                Some(chunk) if chunk.is_empty() => continue,
                Some(chunk) => return Poll::Ready(Ok(Some(chunk))),
                None => {
                    self.eof = true;
                    return Poll::Ready(Ok(None));
                }
            }
        }
    }

    fn poll_write(&mut self, _cx: &mut Context<'_>, buf: &mut Bytes) -> Poll<Result<(), FlowError>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(()));
        }
        if self.write_closed {
            return Poll::Ready(Err(FlowError::closed()));
        }
        let Some(output) = self.output.as_mut() else {
            self.write_closed = true;
            return Poll::Ready(Err(FlowError::closed()));
        };
        while !buf.is_empty() {
            let taken = output(buf).min(buf.len());
            if taken == 0 {
                self.write_closed = true;
                return Poll::Ready(Err(FlowError::closed()));
            }
            buf.advance(taken);
        }
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(&mut self, _cx: &mut Context<'_>, how: Shutdown) -> Poll<Result<(), FlowError>> {
        if how.reads() {
            self.eof = true;
        }
        if how.writes() {
            self.write_closed = true;
        }
        Poll::Ready(Ok(()))
    }

    fn poll_close(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), FlowError>> {
        self.eof = true;
        self.write_closed = true;
        if let Some(mut on_close) = self.on_close.take() {
            on_close();
        }
        Poll::Ready(Ok(()))
    }
}

/// A fixed-size byte buffer that an [`FnFlow`] writes into, shared with the caller
/// who inspects it afterwards.
#[derive(Clone, Default)]
pub struct OutputBuffer {
    inner: Arc<Mutex<Filled>>,
}

#[derive(Default)]
struct Filled {
    bytes: Vec<u8>,
    pos: usize,
}

impl fmt::Debug for OutputBuffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let filled = self.lock();
        f.debug_struct("OutputBuffer").field("len", &filled.bytes.len()).field("filled", &filled.pos).finish()
    }
}

impl OutputBuffer {
    /// A buffer holding `initial`; writes overwrite it from the start.
    pub fn new(initial: impl Into<Vec<u8>>) -> OutputBuffer {
        OutputBuffer { inner: Arc::new(Mutex::new(Filled { bytes: initial.into(), pos: 0 })) }
    }

    /// A buffer of `len` zero bytes.
    pub fn zeroed(len: usize) -> OutputBuffer {
        OutputBuffer::new(vec![0; len])
    }

    /// The whole buffer, written part and the rest.
    pub fn contents(&self) -> Vec<u8> {
        self.lock().bytes.clone()
    }

    /// The part written so far.
    pub fn written(&self) -> Vec<u8> {
        let filled = self.lock();
        filled.bytes[..filled.pos].to_vec()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Filled> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Copies as much of `bytes` as fits; returns how much.
    fn fill(&self, bytes: &[u8]) -> usize {
        let mut filled = self.lock();
        let start = filled.pos;
        let n = bytes.len().min(filled.bytes.len() - start);
        filled.bytes[start..start + n].copy_from_slice(&bytes[..n]);
        filled.pos += n;
        n
    }
}

//! `BoxFlow`: a type-erased flow that can be downcast back to its concrete type.

use std::any::Any;
use std::fmt;
use std::io::IoSlice;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::ReadBuf;

use crate::{Flow, FlowError, Shutdown};

/// A flow plus the `Any` views needed to get the concrete type back.
trait AnyFlow: Flow {
    fn as_any(&self) -> &dyn Any;
    fn as_any_mut(&mut self) -> &mut dyn Any;
    fn into_any(self: Box<Self>) -> Box<dyn Any + Send>;
    fn type_name(&self) -> &'static str;
}

impl<F: Flow> AnyFlow for F {
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
    fn into_any(self: Box<Self>) -> Box<dyn Any + Send> {
        self
    }
    fn type_name(&self) -> &'static str {
        std::any::type_name::<F>()
    }
}

/// A type-erased [`Flow`], as registries hand out; [`downcast`](BoxFlow::downcast)
/// recovers the concrete flow.
///
/// Boxing a `BoxFlow` again does not add a layer: `BoxFlow::new(boxed)` returns it as is.
///
/// ```
/// use conflux_flow::{BoxFlow, FlowExt, Pipe, pipe};
/// let (a, _b) = pipe(1024);
/// let boxed: BoxFlow = a.boxed();
/// assert!(boxed.is::<Pipe>());
/// let pipe: Pipe = boxed.downcast().unwrap();
/// # drop(pipe);
/// ```
pub struct BoxFlow {
    inner: Box<dyn AnyFlow>,
}

impl BoxFlow {
    /// Erases `flow`'s type (without double boxing a `BoxFlow`).
    pub fn new<F: Flow>(flow: F) -> BoxFlow {
        let mut slot = Some(flow);
        if let Some(already) = (&mut slot as &mut dyn Any).downcast_mut::<Option<BoxFlow>>() {
            return already.take().expect("slot is filled");
        }
        BoxFlow { inner: Box::new(slot.take().expect("slot is filled")) }
    }

    /// True when the concrete flow is a `F`.
    pub fn is<F: Flow>(&self) -> bool {
        (*self.inner).as_any().is::<F>()
    }

    /// The concrete flow, by reference.
    pub fn downcast_ref<F: Flow>(&self) -> Option<&F> {
        (*self.inner).as_any().downcast_ref()
    }

    /// The concrete flow, mutably.
    pub fn downcast_mut<F: Flow>(&mut self) -> Option<&mut F> {
        (*self.inner).as_any_mut().downcast_mut()
    }

    /// The concrete flow by value, or the `BoxFlow` back when it is not a `F`.
    pub fn downcast<F: Flow>(self) -> Result<F, BoxFlow> {
        if self.is::<F>() { Ok(*self.inner.into_any().downcast::<F>().expect("type checked above")) } else { Err(self) }
    }

    /// The Rust type name of the concrete flow (for diagnostics).
    pub fn type_name(&self) -> &'static str {
        (*self.inner).type_name()
    }
}

impl fmt::Debug for BoxFlow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("BoxFlow").field(&self.type_name()).finish()
    }
}

impl Flow for BoxFlow {
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, FlowError>> {
        (*self.inner).poll_read(cx)
    }
    fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
        rest: &mut Bytes,
    ) -> Poll<Result<(), FlowError>> {
        (*self.inner).poll_read_into(cx, buf, rest)
    }
    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &mut Bytes) -> Poll<Result<(), FlowError>> {
        (*self.inner).poll_write(cx, buf)
    }
    fn poll_writev(&mut self, cx: &mut Context<'_>, bufs: &mut [Bytes]) -> Poll<Result<(), FlowError>> {
        (*self.inner).poll_writev(cx, bufs)
    }
    fn poll_write_borrowed(&mut self, cx: &mut Context<'_>, bufs: &[IoSlice<'_>]) -> Poll<Result<usize, FlowError>> {
        (*self.inner).poll_write_borrowed(cx, bufs)
    }
    fn is_write_borrowed(&self) -> bool {
        (*self.inner).is_write_borrowed()
    }
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), FlowError>> {
        (*self.inner).poll_flush(cx)
    }
    fn poll_shutdown(&mut self, cx: &mut Context<'_>, how: Shutdown) -> Poll<Result<(), FlowError>> {
        (*self.inner).poll_shutdown(cx, how)
    }
    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), FlowError>> {
        (*self.inner).poll_close(cx)
    }
    fn poll_abort(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), FlowError>> {
        (*self.inner).poll_abort(cx)
    }
}

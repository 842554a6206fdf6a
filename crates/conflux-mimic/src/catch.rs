//! Containing panics: a panicking function or connect is that step's failure,
//! not an unwind through `resolve` that skips a working fallback.
//!
//! The panic hook still runs (the default one prints the message to stderr);
//! the panicking closure or future is dropped and never called again.

use std::any::Any;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Context, Poll};

/// The text of a panic payload.
pub(crate) fn panic_message(payload: Box<dyn Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(s) => *s,
        Err(payload) => match payload.downcast::<&'static str>() {
            Ok(s) => (*s).to_string(),
            Err(_) => "a panic with a non-text payload".to_string(),
        },
    }
}

/// Calls `f`; a panic becomes `Err(message)`.
pub(crate) fn call<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    // Unwind safety: whatever `f` was building is dropped with the panic, and
    // the caller only records the message.
    catch_unwind(AssertUnwindSafe(f)).map_err(panic_message)
}

/// A future whose panic, while polled, becomes `Err(message)`.
pub(crate) struct CatchPanic<F: ?Sized> {
    inner: Pin<Box<F>>,
}

impl<F: Future + ?Sized> CatchPanic<F> {
    pub(crate) fn new(inner: Pin<Box<F>>) -> CatchPanic<F> {
        CatchPanic { inner }
    }
}

impl<F: Future + ?Sized> Future for CatchPanic<F> {
    type Output = Result<F::Output, String>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match call(|| self.inner.as_mut().poll(cx)) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Err(message) => Poll::Ready(Err(message)),
        }
    }
}

//! [`HyperFlow`]: a flow as hyper's own `rt::Read` and `rt::Write`, with no
//! tokio adapter in between.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use conflux_flow::{BoxFlow, Flow, FlowIo};
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;

/// A flow as hyper's [`Read`] and [`Write`] (and hyper-util's [`Connection`]),
/// for hyper's client and server connections and hyper-util's pooled client;
/// with the `axum` feature also as tokio's `AsyncRead` and `AsyncWrite`, the
/// IO of [`AxumListener`](crate::AxumListener)'s connections.
///
/// It is conflux-flow's [`FlowIo`] under hyper's traits. Reads go through
/// [`Flow::poll_read_into`]: a flow over a socket (the raw `unix://` flow)
/// reads straight into hyper's buffer, any other flow's owned chunks are
/// copied into it once. A write costs at most one copy.
/// A flow over a socket ([`Flow::is_write_borrowed`]: the `unix://`,
/// `vsock://`, `fc-vsock://` flows, raw or framed, and kernel `tcp://`)
/// writes hyper's borrowed slices straight to it, a vectored write as one
/// `writev`, with no copy.
/// Any other flow gets one copy (one allocation, one owned buffer per slice,
/// so [`Flow::poll_writev`] still sends them together); what it has not
/// taken yet stays here and goes out before the next write, by a flush and
/// by a shutdown, never copied again.
#[derive(Debug)]
pub struct HyperFlow<F = BoxFlow> {
    /// hyper-util's bridge hands hyper's (uninitialised) read buffer to
    /// `FlowIo`'s `AsyncRead` as a tokio `ReadBuf`.
    io: TokioIo<FlowIo<F>>,
    /// The connection speaks HTTP/2 (negotiated by ALPN).
    h2: bool,
}

impl<F: Flow> HyperFlow<F> {
    /// Wraps `flow`; hyper-util's client sees a plain connection
    /// ([`Connected::new`]).
    pub fn new(flow: F) -> HyperFlow<F> {
        HyperFlow { io: TokioIo::new(FlowIo::new(flow)), h2: false }
    }

    /// Tells hyper-util's client the connection speaks HTTP/2 (ALPN said `h2`).
    #[cfg(feature = "tls")]
    pub(crate) fn negotiated_h2(mut self) -> HyperFlow<F> {
        self.h2 = true;
        self
    }
}

impl<F: Flow> Read for HyperFlow<F> {
    #[inline]
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: ReadBufCursor<'_>) -> Poll<io::Result<()>> {
        Read::poll_read(Pin::new(&mut self.get_mut().io), cx, buf)
    }
}

impl<F: Flow> Write for HyperFlow<F> {
    #[inline]
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.get_mut().io.inner_mut().poll_write_slices(cx, &[IoSlice::new(buf)])
    }

    #[inline]
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        slices: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().io.inner_mut().poll_write_slices(cx, slices)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    #[inline]
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().io.inner_mut().poll_flush_all(cx)
    }

    #[inline]
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().io.inner_mut().poll_shutdown_write(cx)
    }
}

/// The same as tokio IO (for axum, whose listeners hand out tokio IO).
#[cfg(feature = "axum")]
mod tokio_io {
    use super::*;
    use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

    impl<F: Flow> AsyncRead for HyperFlow<F> {
        #[inline]
        fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
            Pin::new(self.get_mut().io.inner_mut()).poll_read(cx, buf)
        }
    }

    impl<F: Flow> AsyncWrite for HyperFlow<F> {
        #[inline]
        fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
            Pin::new(self.get_mut().io.inner_mut()).poll_write(cx, buf)
        }

        #[inline]
        fn poll_write_vectored(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            slices: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            Pin::new(self.get_mut().io.inner_mut()).poll_write_vectored(cx, slices)
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        #[inline]
        fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(self.get_mut().io.inner_mut()).poll_flush(cx)
        }

        #[inline]
        fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(self.get_mut().io.inner_mut()).poll_shutdown(cx)
        }
    }
}

impl<F: Flow> Connection for HyperFlow<F> {
    fn connected(&self) -> Connected {
        let connected = Connected::new();
        if self.h2 { connected.negotiated_h2() } else { connected }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use bytes::Bytes;
    use conflux_flow::{FlowError, Shutdown};

    use super::*;

    /// Each call's slices, as (address, length), and which method got them.
    type Calls = Arc<Mutex<Vec<(&'static str, Vec<(usize, usize)>)>>>;

    /// A flow that writes borrowed slices (as a socket's does), taking at
    /// most `room` bytes a call.
    struct Borrowing {
        room: usize,
        calls: Calls,
    }

    impl Flow for Borrowing {
        fn poll_read(&mut self, _cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, FlowError>> {
            Poll::Ready(Ok(None))
        }
        fn poll_write(&mut self, _cx: &mut Context<'_>, buf: &mut Bytes) -> Poll<Result<(), FlowError>> {
            self.calls.lock().unwrap().push(("poll_write", vec![(buf.as_ptr() as usize, buf.len())]));
            *buf = Bytes::new();
            Poll::Ready(Ok(()))
        }
        fn poll_write_borrowed(
            &mut self,
            _cx: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<Result<usize, FlowError>> {
            self.calls
                .lock()
                .unwrap()
                .push(("borrowed", bufs.iter().map(|b| (b.as_ptr() as usize, b.len())).collect()));
            Poll::Ready(Ok(bufs.iter().map(|b| b.len()).sum::<usize>().min(self.room)))
        }
        fn is_write_borrowed(&self) -> bool {
            true
        }
        fn poll_shutdown(&mut self, _cx: &mut Context<'_>, _how: Shutdown) -> Poll<Result<(), FlowError>> {
            Poll::Ready(Ok(()))
        }
        fn poll_close(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), FlowError>> {
            Poll::Ready(Ok(()))
        }
    }

    /// hyper's vectored write reaches a flow that writes borrowed slices as
    /// one call with hyper's own slices (no copy), and hyper learns how much
    /// it took.
    #[test]
    fn a_vectored_write_reaches_a_borrowing_flow_uncopied_in_one_call() {
        let calls = Calls::default();
        let mut io = HyperFlow::new(Borrowing { room: 7, calls: calls.clone() });
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let (head, body) = (b"head".to_vec(), b"body-bytes".to_vec());
        let slices = [IoSlice::new(&head), IoSlice::new(&body)];
        let wrote = Write::poll_write_vectored(Pin::new(&mut io), &mut cx, &slices);
        assert!(matches!(wrote, Poll::Ready(Ok(7))), "the flow took 7 bytes: {wrote:?}");
        assert!(Write::poll_flush(Pin::new(&mut io), &mut cx).is_ready());
        let calls = calls.lock().unwrap();
        let expect = vec![(head.as_ptr() as usize, 4), (body.as_ptr() as usize, 10)];
        assert_eq!(calls[0], ("borrowed", expect), "hyper's slices themselves, in one call");
        assert_eq!(calls.len(), 2, "then the flush's empty write: {calls:?}");
        assert_eq!(calls[1].1[0].1, 0);
    }
}

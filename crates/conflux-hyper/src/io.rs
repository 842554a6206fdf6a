//! [`HyperFlow`]: a flow as hyper's own `rt::Read` and `rt::Write`, with no
//! tokio adapter in between.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use conflux_flow::{BoxFlow, Flow, Shutdown};
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection};

/// A flow as hyper's [`Read`] and [`Write`] (and hyper-util's [`Connection`]),
/// for hyper's client and server connections and hyper-util's pooled client;
/// with the `axum` feature also as tokio's `AsyncRead` and `AsyncWrite`, the
/// IO of [`AxumListener`](crate::AxumListener)'s connections.
///
/// Reads copy the flow's owned chunks into hyper's buffer. A write copies
/// hyper's borrowed slice once into an owned buffer and hands it to the flow;
/// what the flow has not taken yet stays here and is written before the next
/// write, by a flush and by a shutdown, so `poll_write` never copies the same
/// bytes twice. A vectored write copies its slices into one allocation and
/// hands them to [`Flow::poll_writev`] as one buffer each: a flow over a
/// socket sends them with one `writev`.
///
/// (conflux-flow's `FlowIo` copies whatever is left of a write each time it
/// is offered again: a 64 MiB body over a Unix socket, which takes a few
/// hundred KiB a time, costs it gigabytes of copies. Here each byte is
/// copied once.)
#[derive(Debug)]
pub struct HyperFlow<F = BoxFlow> {
    flow: F,
    /// Read from the flow, not yet handed to hyper.
    rest: Bytes,
    /// Reported written to hyper, not yet taken by the flow (in order).
    unsent: Vec<Bytes>,
    /// The connection speaks HTTP/2 (negotiated by ALPN).
    h2: bool,
}

// Nothing here relies on `F` staying put: every flow method takes `&mut self`.
impl<F> Unpin for HyperFlow<F> {}

impl<F: Flow> HyperFlow<F> {
    /// Wraps `flow`; hyper-util's client sees a plain connection
    /// ([`Connected::new`]).
    pub fn new(flow: F) -> HyperFlow<F> {
        HyperFlow { flow, rest: Bytes::new(), unsent: Vec::new(), h2: false }
    }

    /// Tells hyper-util's client the connection speaks HTTP/2 (ALPN said `h2`).
    #[cfg(feature = "tls")]
    pub(crate) fn negotiated_h2(mut self) -> HyperFlow<F> {
        self.h2 = true;
        self
    }

    /// Hands whatever was reported written but not yet taken to the flow.
    fn poll_unsent(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.unsent.iter().any(|b| !b.is_empty()) {
            ready!(self.flow.poll_writev(cx, &mut self.unsent)).map_err(io::Error::from)?;
        }
        self.unsent.clear();
        Poll::Ready(Ok(()))
    }

    /// Offers `bufs` (owned already) to the flow and reports them all written:
    /// what the flow did not take yet is kept for the next write or flush.
    fn offer(&mut self, cx: &mut Context<'_>, mut bufs: Vec<Bytes>, len: usize) -> Poll<io::Result<usize>> {
        match self.flow.poll_writev(cx, &mut bufs) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e.into())),
            // The flow registered `cx` for the rest; a flush drives it.
            Poll::Pending => {
                bufs.retain(|b| !b.is_empty());
                self.unsent = bufs;
            }
        }
        Poll::Ready(Ok(len))
    }
}

impl<F: Flow> HyperFlow<F> {
    /// Ready with bytes in `rest`, or with `rest` empty at Eof.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.rest.is_empty() {
            // Let go of the spent chunk first: a flow reading into one growing
            // buffer (a socket's) can then reuse its memory instead of allocating.
            self.rest = Bytes::new();
            match ready!(self.flow.poll_read(cx)) {
                Ok(Some(chunk)) => self.rest = chunk,
                Ok(None) => {}
                Err(e) => return Poll::Ready(Err(e.into())),
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Copies what was read into `put` (which takes at most `room` bytes).
    fn poll_read_into(&mut self, cx: &mut Context<'_>, room: usize, put: impl FnOnce(&[u8])) -> Poll<io::Result<()>> {
        if room == 0 {
            return Poll::Ready(Ok(()));
        }
        ready!(self.poll_fill(cx))?;
        let n = self.rest.len().min(room);
        put(&self.rest[..n]);
        self.rest.advance(n);
        Poll::Ready(Ok(()))
    }

    fn poll_write_slices(&mut self, cx: &mut Context<'_>, slices: &[IoSlice<'_>]) -> Poll<io::Result<usize>> {
        ready!(self.poll_unsent(cx))?;
        let total: usize = slices.iter().map(|s| s.len()).sum();
        if total == 0 {
            return Poll::Ready(Ok(0));
        }
        let mut bufs = std::mem::take(&mut self.unsent);
        if let [one] = slices {
            bufs.push(Bytes::copy_from_slice(one));
        } else {
            // One allocation and one copy; one owned view per slice, so the
            // flow can send them as they came (one writev over a socket).
            let mut joined = BytesMut::with_capacity(total);
            for s in slices {
                joined.extend_from_slice(s);
            }
            let mut joined = joined.freeze();
            bufs.extend(slices.iter().filter(|s| !s.is_empty()).map(|s| joined.split_to(s.len())));
        }
        self.offer(cx, bufs, total)
    }

    fn poll_flush_all(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_unsent(cx))?;
        // An empty write finishes a flush the flow still owes (a layered stream).
        self.flow.poll_write(cx, &mut Bytes::new()).map_err(io::Error::from)
    }

    fn poll_shutdown_write(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_unsent(cx))?;
        self.flow.poll_shutdown(cx, Shutdown::Write).map_err(io::Error::from)
    }
}

impl<F: Flow> Read for HyperFlow<F> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, mut buf: ReadBufCursor<'_>) -> Poll<io::Result<()>> {
        let room = buf.remaining();
        self.get_mut().poll_read_into(cx, room, |b| buf.put_slice(b))
    }
}

impl<F: Flow> Write for HyperFlow<F> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.get_mut().poll_write_slices(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        slices: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_write_slices(cx, slices)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_flush_all(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_shutdown_write(cx)
    }
}

/// The same as tokio IO (for axum, whose listeners hand out tokio IO).
#[cfg(feature = "axum")]
mod tokio_io {
    use super::*;
    use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

    impl<F: Flow> AsyncRead for HyperFlow<F> {
        fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
            let room = buf.remaining();
            self.get_mut().poll_read_into(cx, room, |b| buf.put_slice(b))
        }
    }

    impl<F: Flow> AsyncWrite for HyperFlow<F> {
        fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
            self.get_mut().poll_write_slices(cx, &[IoSlice::new(buf)])
        }

        fn poll_write_vectored(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            slices: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            self.get_mut().poll_write_slices(cx, slices)
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.get_mut().poll_flush_all(cx)
        }

        fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.get_mut().poll_shutdown_write(cx)
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

    use conflux_flow::FlowError;

    use super::*;

    /// Each `poll_writev` call's buffers, as (address, length).
    type Calls = Arc<Mutex<Vec<Vec<(usize, usize)>>>>;

    /// A flow that takes at most `room` bytes a call (then `Pending`) and
    /// records each `poll_writev` call's buffers, by their addresses.
    struct Recorder {
        room: usize,
        calls: Calls,
        got: Arc<Mutex<Vec<u8>>>,
    }

    impl Flow for Recorder {
        fn poll_read(&mut self, _cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, FlowError>> {
            Poll::Ready(Ok(None))
        }
        fn poll_write(&mut self, cx: &mut Context<'_>, buf: &mut Bytes) -> Poll<Result<(), FlowError>> {
            self.poll_writev(cx, std::slice::from_mut(buf))
        }
        fn poll_writev(&mut self, _cx: &mut Context<'_>, bufs: &mut [Bytes]) -> Poll<Result<(), FlowError>> {
            self.calls.lock().unwrap().push(bufs.iter().map(|b| (b.as_ptr() as usize, b.len())).collect());
            let mut room = self.room;
            for b in bufs.iter_mut() {
                let n = b.len().min(room);
                self.got.lock().unwrap().extend_from_slice(&b[..n]);
                b.advance(n);
                room -= n;
            }
            if bufs.iter().all(Bytes::is_empty) { Poll::Ready(Ok(())) } else { Poll::Pending }
        }
        fn poll_shutdown(&mut self, _cx: &mut Context<'_>, _how: Shutdown) -> Poll<Result<(), FlowError>> {
            Poll::Ready(Ok(()))
        }
        fn poll_close(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), FlowError>> {
            Poll::Ready(Ok(()))
        }
    }

    /// A vectored write reaches the flow as one `poll_writev` of one buffer
    /// per slice, in one allocation; what the flow could not take yet is
    /// offered again from where it stopped (never copied again), before the
    /// next write's bytes, and a flush finishes it.
    #[test]
    fn a_vectored_write_is_one_writev_and_each_byte_is_copied_once() {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let got = Arc::new(Mutex::new(Vec::new()));
        let mut io = HyperFlow::new(Recorder { room: 5, calls: calls.clone(), got: got.clone() });
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let slices = [IoSlice::new(b"head"), IoSlice::new(b""), IoSlice::new(b"body-bytes")];
        let wrote = Write::poll_write_vectored(Pin::new(&mut io), &mut cx, &slices);
        assert!(matches!(wrote, Poll::Ready(Ok(14))), "{wrote:?}");
        {
            let calls = calls.lock().unwrap();
            assert_eq!(calls.len(), 1, "one writev");
            let first = &calls[0];
            assert_eq!(first.iter().map(|c| c.1).collect::<Vec<_>>(), [4, 10], "one buffer per non-empty slice");
            assert_eq!(first[0].0 + 4, first[1].0, "one allocation, cut in two");
        }
        // The next write first finishes the previous one (from where it stopped).
        assert!(Write::poll_write(Pin::new(&mut io), &mut cx, b"next").is_pending());
        assert!(Write::poll_flush(Pin::new(&mut io), &mut cx).is_ready());
        {
            let calls = calls.lock().unwrap();
            let (ptr, len) = calls[1][0];
            assert_eq!((ptr, len), (calls[0][1].0 + 1, 9), "the rest of the same buffer, not a copy");
        }
        assert!(matches!(Write::poll_write(Pin::new(&mut io), &mut cx, b"next"), Poll::Ready(Ok(4))));
        while Write::poll_flush(Pin::new(&mut io), &mut cx).is_pending() {}
        assert_eq!(&got.lock().unwrap()[..], b"headbody-bytesnext");
    }
}

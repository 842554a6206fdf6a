//! The framed flow: the shutdown framing over a family socket.

use std::io::{self, IoSlice};
use std::os::fd::{AsFd, BorrowedFd};
use std::pin::Pin;
use std::task::{Context, Poll, Waker, ready};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use conflux_flow::{Flow, FlowError, ReadHalf, Shutdown, WriteHalf};
use tokio::io::ReadBuf;
use tokio::time::Sleep;

use crate::codec::{Encoder, Header};
use crate::endpoint::{Endpoint, FramingConfig, ReadEvent};
use crate::family::{SCATTER_MAX_HEADS, Socket};
use crate::raw::{MAX_IOV, READ_CHUNK, remember};

/// How many bytes one write moves into the frame queue before flushing.
const WRITE_BUDGET: usize = 256 * 1024;

/// Slices a borrowed write frames with small arrays (one frame each).
const FEW: usize = 4;

/// The least payload a read takes from the socket straight into the caller's
/// buffer (skipping the read buffer); below it one bigger read into the read
/// buffer, which also gets the headers and frames that follow, is cheaper.
const DIRECT_MIN: usize = 16 * 1024;

/// Scattered reads (payloads end to end, headers in slots apart) guess that
/// the next frames are full: of at least this many bytes, so that the slots
/// of one read cover a whole [`READ_CHUNK`]. With smaller frames, plain reads.
const SCATTER_MIN_FRAME: usize = READ_CHUNK / SCATTER_MAX_HEADS;

/// Plain reads after a scattered read that met a data frame of another size
/// (a peer that may keep sending such frames); then the guess is tried again.
const SCATTER_BACKOFF: u8 = 8;

/// A socket speaking the shutdown framing (OCaml `Hvsock_lwt.Flow_shutdown`),
/// as a [`Flow`]. Opt-in: only for peers that speak it.
///
/// The transport is never shut down: `shutdown(Write)` sends the ShutdownWrite
/// marker, `shutdown(Read)` the ShutdownRead marker, and close sends Close and
/// waits for the peer's Close before closing the socket, so data in flight is
/// never lost to a transport that discards unread bytes on shutdown or close.
///
/// - Close is bounded by the [close timeout](FramingConfig::close_timeout)
///   (upstream waits forever); after it the socket is closed anyway. A peer
///   already known broken (a protocol error, a reset, the transport ended) is
///   not waited for: close then releases the socket at once.
/// - When the peer closes first, reads give Eof and the acknowledgement goes
///   out; our close then waits (bounded) for the peer to release the socket.
/// - One reader: all reading of the socket goes through this flow's decoder,
///   and a close on one half wakes a read pending on the other.
/// - Errors latch and keep their kinds: reset, protocol error (including a
///   truncated frame at Eof), timeout; or read as Eof with
///   [`errors_as_eof`](FramingConfig::errors_as_eof).
/// - Dropping the flow without closing releases the socket at once; abort
///   does the same without sending anything. Either way the peer's transport
///   ends with no ShutdownWrite or Close, which a framed peer reads as a
///   reset (the framing has no reset marker): a relay passes it on as one.
#[derive(Debug)]
pub struct FramedFlow<S: Socket> {
    sock: Option<S>,
    ep: Endpoint,
    enc: Encoder,
    rbuf: BytesMut,
    timer: Option<Pin<Box<Sleep>>>,
    /// A read waiting for the socket; woken when a close takes the socket over.
    reader: Option<Waker>,
    /// A write waiting for the socket; other paths then leave the write side alone.
    writer_waiting: bool,
    /// That write's waker, woken when the socket is released.
    writer: Option<Waker>,
    /// Plain reads to do before the next scattered one.
    scatter_backoff: u8,
}

impl<S: Socket> FramedFlow<S> {
    /// Starts the framing on a freshly connected or accepted socket.
    pub fn new(sock: S, config: FramingConfig) -> FramedFlow<S> {
        FramedFlow {
            sock: Some(sock),
            ep: Endpoint::new(config),
            enc: Encoder::with_max_frame(config.max_frame_len()),
            rbuf: BytesMut::new(),
            timer: None,
            reader: None,
            writer_waiting: false,
            writer: None,
            scatter_backoff: 0,
        }
    }

    /// The socket underneath, until the flow closes it.
    pub fn get_ref(&self) -> Option<&S> {
        self.sock.as_ref()
    }

    /// Whether the socket underneath was released (close, abort, or the
    /// handshake finished).
    pub fn is_socket_closed(&self) -> bool {
        self.sock.is_none()
    }

    /// Whether the last close ended by its timeout rather than by the peer.
    pub fn close_timed_out(&self) -> bool {
        self.ep.close_timed_out()
    }

    /// This end's address.
    pub fn local_addr(&self) -> io::Result<S::Addr> {
        self.sock.as_ref().ok_or_else(closed)?.local_addr()
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> io::Result<S::Addr> {
        self.sock.as_ref().ok_or_else(closed)?.peer_addr()
    }

    /// Owned read and write halves for full duplex.
    pub fn into_split(self) -> (ReadHalf<Self>, WriteHalf<Self>) {
        conflux_flow::FlowExt::split(self)
    }

    fn queue_markers(&mut self) {
        while let Some(h) = self.ep.poll_transmit() {
            self.enc.push_marker(h);
        }
    }

    /// Writes the frame queue to the socket until empty.
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.enc.is_empty() {
            let Some(sock) = self.sock.as_mut() else { return Poll::Ready(Err(closed())) };
            let mut slices = [IoSlice::new(&[]); MAX_IOV];
            let n = self.enc.chunks_vectored(&mut slices);
            match sock.poll_writev(cx, &slices[..n]) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) => {
                    let e = io::Error::from(io::ErrorKind::WriteZero);
                    self.ep.handle_write_error(&e);
                    return Poll::Ready(Err(e));
                }
                Poll::Ready(Ok(w)) => self.enc.advance(w),
                Poll::Ready(Err(e)) => {
                    self.ep.handle_write_error(&e);
                    return Poll::Ready(Err(e));
                }
            }
        }
        Poll::Ready(Ok(()))
    }

    /// The writer's flush: `Pending` marks the writer as waiting (other
    /// paths then leave the write side alone) with its waker.
    fn poll_flush_writer(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), FlowError>> {
        self.poll_flush_marking(cx).map_err(FlowError::from)
    }

    /// [`poll_flush`](Self::poll_flush), marking the writer as waiting
    /// (with its waker) while it is `Pending`.
    fn poll_flush_marking(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = self.poll_flush(cx);
        self.writer_waiting = r.is_pending();
        if r.is_pending() {
            remember(&mut self.writer, cx);
        }
        r
    }

    /// Flushes markers from a path other than the writer's, unless a writer waits
    /// (it will flush them; polling the write side here would steal its wake-up).
    fn flush_on_the_side(&mut self, cx: &mut Context<'_>) {
        self.queue_markers();
        if !self.writer_waiting && !self.enc.is_empty() {
            let _ = self.poll_flush(cx);
        }
    }

    /// Reads the socket once into the buffer. `Ready` when something changed.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(sock) = self.sock.as_mut() else {
            self.ep.handle_eof(&self.rbuf);
            return Poll::Ready(());
        };
        if self.rbuf.capacity() - self.rbuf.len() < READ_CHUNK {
            self.rbuf.reserve(READ_CHUNK);
        }
        match sock.poll_read_buf(cx, &mut self.rbuf) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(0)) => {
                self.ep.handle_eof(&self.rbuf);
                Poll::Ready(())
            }
            Poll::Ready(Ok(_)) => Poll::Ready(()),
            Poll::Ready(Err(e)) => {
                self.ep.handle_read_error(&e);
                Poll::Ready(())
            }
        }
    }

    /// The payload bytes still to come of the current frame when the next
    /// read of the socket may be scattered (see [`poll_fill_scatter`](Self::poll_fill_scatter)).
    fn scatter_plan(&mut self) -> Option<usize> {
        let sock = self.sock.as_ref()?;
        if !sock.reads_scatter() || self.enc.max_frame_len() < SCATTER_MIN_FRAME {
            return None;
        }
        if self.scatter_backoff > 0 {
            self.scatter_backoff -= 1;
            return None;
        }
        self.ep.scatter_payload(&self.rbuf)
    }

    /// Reads the socket once, scattered: the `first` payload bytes still to
    /// come of the current frame, then a header slot, a full frame's payload,
    /// a slot, and so on, the payloads end to end in the (empty) read buffer,
    /// so that frames of the guessed (full) size need no move over their
    /// headers. Each slot's header is checked as the decoder would; the first
    /// that is not a full data frame (a marker, a shorter frame, a bad
    /// length, a header cut by the end of the read) and everything after it
    /// are put back in wire order, undecoded, for the decoder.
    ///
    /// `Ready(Some)`: payload bytes; `Ready(None)`: something else changed
    /// (undecoded input, Eof, an error).
    fn poll_fill_scatter(&mut self, cx: &mut Context<'_>, first: usize) -> Poll<Option<Bytes>> {
        let Some(sock) = self.sock.as_mut() else {
            self.ep.handle_eof(&self.rbuf);
            return Poll::Ready(None);
        };
        let full = self.enc.max_frame_len();
        let mut segs = [0usize; SCATTER_MAX_HEADS + 1];
        let mut heads = [[0u8; Header::LEN]; SCATTER_MAX_HEADS];
        segs[0] = first.min(READ_CHUNK);
        let (mut budget, mut k) = (READ_CHUNK - segs[0], 0);
        while k < SCATTER_MAX_HEADS && budget > Header::LEN {
            budget -= Header::LEN;
            segs[k + 1] = full.min(budget);
            budget -= segs[k + 1];
            k += 1;
        }
        // Room for every byte of the read, headers included, for the put-back.
        self.rbuf.reserve(READ_CHUNK);
        let n = match sock.poll_read_scatter(cx, &mut self.rbuf, &segs[..=k], &mut heads[..k]) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Ok(0)) => {
                self.ep.handle_eof(&self.rbuf);
                return Poll::Ready(None);
            }
            Poll::Ready(Ok(n)) => n,
            Poll::Ready(Err(e)) => {
                self.ep.handle_read_error(&e);
                return Poll::Ready(None);
            }
        };
        // Walk the read in wire order: payload piece i, then slot i.
        let (mut left, mut payload, mut i) = (n, 0, 0);
        loop {
            let got = left.min(segs[i]);
            self.ep.payload_read(got);
            payload += got;
            left -= got;
            if left == 0 {
                break;
            }
            // `left > 0` after piece i: it was filled, and slot i exists.
            if left < Header::LEN || !self.ep.take_header(heads[i], full as u32) {
                // A data frame of another size: the guess may keep failing.
                if left >= Header::LEN && matches!(Header::from_u32(u32::from_le_bytes(heads[i])), Ok(Header::Data(_)))
                {
                    self.scatter_backoff = SCATTER_BACKOFF;
                }
                self.put_back(payload, left, &segs[i + 1..=k], &heads[i..k]);
                break;
            }
            left -= Header::LEN;
            i += 1;
        }
        if payload == 0 {
            return Poll::Ready(None);
        }
        Poll::Ready(Some(self.rbuf.split_to(payload).freeze()))
    }

    /// After a scattered read: the `left` bytes that follow the first
    /// `payload` bytes on the wire, from slot `heads[0]` on (then piece
    /// `segs[0]`, slot `heads[1]`, ...), put back in wire order in the read
    /// buffer after those `payload` bytes (the pieces are there already, end
    /// to end; the slots go in between).
    fn put_back(&mut self, payload: usize, left: usize, segs: &[usize], heads: &[[u8; 4]]) {
        // The bytes of each slot and piece the read reached.
        let mut slot = [0usize; SCATTER_MAX_HEADS];
        let mut piece = [0usize; SCATTER_MAX_HEADS];
        let (mut l, mut m) = (left, 0);
        while l > 0 {
            slot[m] = l.min(Header::LEN);
            l -= slot[m];
            piece[m] = l.min(segs[m]);
            l -= piece[m];
            m += 1;
        }
        let slot_bytes: usize = slot[..m].iter().sum();
        debug_assert_eq!(self.rbuf.len(), payload + left - slot_bytes);
        self.rbuf.resize(payload + left, 0);
        // Last piece first: each moves right by the slot bytes before it.
        let mut src = payload + left - slot_bytes;
        let mut dst = payload + left;
        for j in (0..m).rev() {
            src -= piece[j];
            dst -= piece[j];
            self.rbuf.copy_within(src..src + piece[j], dst);
            dst -= slot[j];
            self.rbuf[dst..dst + slot[j]].copy_from_slice(&heads[j][..slot[j]]);
        }
        debug_assert_eq!((src, dst), (payload, payload));
    }

    /// Reads up to `n` payload bytes of the current frame (`n` at most
    /// [`Endpoint::direct_payload`]) from the socket straight into `out`.
    /// `Ready` when something changed (bytes in `out`, Eof, an error).
    fn poll_fill_direct(&mut self, cx: &mut Context<'_>, out: &mut ReadBuf<'_>, n: usize) -> Poll<()> {
        let Some(sock) = self.sock.as_mut() else {
            self.ep.handle_eof(&self.rbuf);
            return Poll::Ready(());
        };
        // Safe code cannot hand the socket a shorter view of uninitialised
        // memory: zero what is not initialised yet (no copy, and only once
        // per caller buffer that is reused).
        let mut dst = ReadBuf::new(out.initialize_unfilled_to(n));
        match sock.poll_read_into(cx, &mut dst) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(())) => {
                let got = dst.filled().len();
                if got == 0 {
                    self.ep.handle_eof(&self.rbuf);
                } else {
                    self.ep.payload_read(got);
                    out.advance(got);
                }
                Poll::Ready(())
            }
            Poll::Ready(Err(e)) => {
                self.ep.handle_read_error(&e);
                Poll::Ready(())
            }
        }
    }

    /// The body of [`poll_write_borrowed`](Flow::poll_write_borrowed) once
    /// earlier frames are out: at most `N` frames (`L` = 2 `N` slices) in
    /// one `writev`.
    fn poll_write_frames<const N: usize, const L: usize>(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<Result<usize, FlowError>> {
        let max = self.enc.max_frame_len();
        let mut headers = [[0u8; Header::LEN]; N];
        // Each frame's payload: (slice, offset, length).
        let mut frames = [(0usize, 0usize, 0usize); N];
        let count = plan_frames(bufs, max, N, &mut headers, &mut frames);
        let mut slices = [IoSlice::new(&[]); L];
        for (k, &(i, at, n)) in frames[..count].iter().enumerate() {
            slices[2 * k] = IoSlice::new(&headers[k]);
            slices[2 * k + 1] = IoSlice::new(&bufs[i][at..at + n]);
        }
        let Some(sock) = self.sock.as_mut() else { return Poll::Ready(Err(closed().into())) };
        let wrote = match sock.poll_writev(cx, &slices[..2 * count]) {
            Poll::Pending => {
                self.writer_waiting = true;
                remember(&mut self.writer, cx);
                return Poll::Pending;
            }
            Poll::Ready(Ok(0)) => {
                let e = io::Error::from(io::ErrorKind::WriteZero);
                self.ep.handle_write_error(&e);
                return Poll::Ready(Err(e.into()));
            }
            Poll::Ready(Err(e)) => {
                self.ep.handle_write_error(&e);
                return Poll::Ready(Err(e.into()));
            }
            Poll::Ready(Ok(w)) => w,
        };
        self.writer_waiting = false;
        let (mut left, mut accepted) = (wrote, 0);
        for &(i, at, n) in &frames[..count] {
            if left >= Header::LEN + n {
                left -= Header::LEN + n;
                accepted += n;
                continue;
            }
            if left > 0 {
                // Cut mid-frame: the rest must follow before any other byte.
                self.enc.push_partial_data(&bufs[i][at..at + n], left);
                accepted += n;
                // Sent now, or by the next write or flush (an empty write
                // finds the queue and this writer's registration).
                if let Poll::Ready(Err(e)) = self.poll_flush_writer(cx) {
                    tracing::trace!(error = %e, "flushing the rest of a cut frame");
                }
            }
            break;
        }
        Poll::Ready(Ok(accepted))
    }

    /// One `writev` of the queued frames (markers, the rest of a cut frame:
    /// they go first), then the next frames of `bufs` (at most [`WRITE_BUDGET`]
    /// payload bytes), the headers on the stack and the payloads the caller's
    /// own bytes (no queue, no `Bytes` per frame). What the socket took of
    /// `bufs` is split off them; a frame it cut is taken whole, its rest
    /// (shared with the caller's buffer, not copied) queued to go out before
    /// anything else.
    fn poll_write_owned(&mut self, cx: &mut Context<'_>, bufs: &mut [Bytes]) -> Poll<io::Result<()>> {
        const N: usize = MAX_IOV / 2;
        let Some(sock) = self.sock.as_mut() else { return Poll::Ready(Err(closed())) };
        let max = self.enc.max_frame_len();
        let mut headers = [[0u8; Header::LEN]; N];
        // Each frame's payload: (buffer, offset, length).
        let mut frames = [(0usize, 0usize, 0usize); N];
        let queued = self.enc.queued();
        let (count, polled) = {
            let mut slices = [IoSlice::new(&[]); MAX_IOV];
            let q = self.enc.chunks_vectored(&mut slices);
            // A queue that fills the slices (never, in practice) goes alone.
            let room = if q == self.enc.slices_needed() { (MAX_IOV - q) / 2 } else { 0 };
            let count = plan_frames(bufs, max, room, &mut headers, &mut frames);
            for (k, &(i, at, n)) in frames[..count].iter().enumerate() {
                slices[q + 2 * k] = IoSlice::new(&headers[k]);
                slices[q + 2 * k + 1] = IoSlice::new(&bufs[i][at..at + n]);
            }
            (count, sock.poll_writev(cx, &slices[..q + 2 * count]))
        };
        let wrote = match polled {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Ok(0)) => {
                let e = io::Error::from(io::ErrorKind::WriteZero);
                self.ep.handle_write_error(&e);
                return Poll::Ready(Err(e));
            }
            Poll::Ready(Err(e)) => {
                self.ep.handle_write_error(&e);
                return Poll::Ready(Err(e));
            }
            Poll::Ready(Ok(w)) => w,
        };
        let from_queue = wrote.min(queued);
        self.enc.advance(from_queue);
        let (mut left, mut taken) = (wrote - from_queue, 0);
        for &(i, at, n) in &frames[..count] {
            if left >= Header::LEN + n {
                left -= Header::LEN + n;
                taken += n;
                continue;
            }
            if left > 0 {
                // Cut mid-frame: the rest must follow before any other byte.
                let header_sent = left.min(Header::LEN);
                let rest = bufs[i].slice(at + left - header_sent..at + n);
                self.enc.push_cut_data(n, header_sent, rest);
                taken += n;
            }
            break;
        }
        conflux_flow::bufs::advance(bufs, taken);
        Poll::Ready(Ok(()))
    }

    fn release(&mut self, abort: bool) -> io::Result<()> {
        let r = match self.sock.take() {
            Some(mut s) if abort => s.abort(),
            Some(mut s) => s.close(),
            None => Ok(()),
        };
        self.rbuf = BytesMut::new();
        self.timer = None;
        for w in [self.reader.take(), self.writer.take()].into_iter().flatten() {
            w.wake();
        }
        r
    }

    fn poll_close_inner(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), FlowError>> {
        if self.sock.is_none() {
            return Poll::Ready(Ok(()));
        }
        let now = Instant::now();
        self.ep.close(now);
        if let (None, Some(deadline)) = (&self.timer, self.ep.poll_timeout()) {
            let at = tokio::time::Instant::now() + deadline.saturating_duration_since(now);
            self.timer = Some(Box::pin(tokio::time::sleep_until(at)));
        }
        // The close takes over the socket: a pending read elsewhere ends now (Eof).
        if let Some(w) = self.reader.take() {
            w.wake();
        }
        loop {
            self.queue_markers();
            if !self.enc.is_empty() {
                match self.poll_flush(cx) {
                    Poll::Ready(Ok(())) => self.writer_waiting = false,
                    Poll::Ready(Err(e)) => tracing::trace!(error = %e, "flush during close failed"),
                    Poll::Pending => {}
                }
            }
            if self.ep.poll_close_input(&mut self.rbuf) || (self.ep.is_done() && self.enc.is_empty()) {
                break;
            }
            if self.ep.wants_input() && self.poll_fill(cx).is_ready() {
                continue;
            }
            if self.ep.is_done() {
                break;
            }
            if let Some(timer) = self.timer.as_mut()
                && timer.as_mut().poll(cx).is_ready()
            {
                if let Some(deadline) = self.ep.poll_timeout() {
                    self.ep.handle_timeout(deadline);
                }
                continue;
            }
            return Poll::Pending;
        }
        if self.ep.close_timed_out() {
            tracing::debug!("close timed out; closing the socket without the peer's acknowledgement");
        }
        Poll::Ready(self.release(false).map_err(FlowError::from))
    }
}

/// Cuts `bufs` into data frames of at most `max` payload bytes, at most
/// `limit` frames (no more than `frames` holds) and [`WRITE_BUDGET`]
/// payload bytes in all: each frame's header into `headers`, its payload
/// as (buffer, offset, length) into `frames`. Returns how many frames.
fn plan_frames<B: std::ops::Deref<Target = [u8]>>(
    bufs: &[B],
    max: usize,
    limit: usize,
    headers: &mut [[u8; Header::LEN]],
    frames: &mut [(usize, usize, usize)],
) -> usize {
    let (mut count, mut budget) = (0, WRITE_BUDGET);
    for (i, b) in bufs.iter().enumerate() {
        let mut at = 0;
        while at < b.len() {
            if count == limit || budget == 0 {
                return count;
            }
            let n = (b.len() - at).min(max).min(budget);
            headers[count] = Header::Data(n as u32).to_bytes();
            frames[count] = (i, at, n);
            count += 1;
            at += n;
            budget -= n;
        }
    }
    count
}

fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "flow closed")
}

impl<S: Socket + AsFd> AsFd for FramedFlow<S> {
    /// # Panics
    ///
    /// After the socket was released (see [`FramedFlow::is_socket_closed`]).
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_ref().expect("as_fd on a closed flow").as_fd()
    }
}

impl<S: Socket> Flow for FramedFlow<S> {
    /// The payloads of every data frame read, as one chunk. On a socket
    /// that [scatters reads](Socket::reads_scatter) (Unix, hybrid vsock),
    /// full frames land end to end with their headers read apart, so the
    /// chunk needs no move over the headers; other input goes through the
    /// decoder (payloads moved together in the read buffer).
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, FlowError>> {
        loop {
            let event = self.ep.poll_read(&mut self.rbuf);
            // An acknowledgement (or nothing) to send, whatever the read gives.
            self.flush_on_the_side(cx);
            match event {
                ReadEvent::Data(d) => return Poll::Ready(Ok(Some(d))),
                ReadEvent::Eof => return Poll::Ready(Ok(None)),
                ReadEvent::Error(e) => return Poll::Ready(Err(e.into())),
                ReadEvent::NeedInput => {}
            }
            if let Some(first) = self.scatter_plan() {
                match self.poll_fill_scatter(cx, first) {
                    Poll::Ready(Some(d)) => return Poll::Ready(Ok(Some(d))),
                    Poll::Ready(None) => continue,
                    Poll::Pending => {
                        remember(&mut self.reader, cx);
                        return Poll::Pending;
                    }
                }
            }
            if self.poll_fill(cx).is_pending() {
                remember(&mut self.reader, cx);
                return Poll::Pending;
            }
        }
    }

    /// Payloads go from the read buffer into `buf` with one copy, frame
    /// after frame (no chunk, no move over the headers, `rest` stays empty).
    /// When the read buffer is empty inside a large frame (frames above the
    /// default size, both ends this crate) and the socket reads into the
    /// caller's buffer (a Unix socket), the frame's payload is read straight
    /// into `buf`.
    fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
        _rest: &mut Bytes,
    ) -> Poll<Result<(), FlowError>> {
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        let start = buf.filled().len();
        loop {
            let event = self.ep.read_into(&mut self.rbuf, buf);
            // An acknowledgement (or nothing) to send, whatever the read gives.
            self.flush_on_the_side(cx);
            match event {
                ReadEvent::Data(_) | ReadEvent::Eof => return Poll::Ready(Ok(())),
                ReadEvent::Error(e) => return Poll::Ready(Err(e.into())),
                ReadEvent::NeedInput => {}
            }
            let direct = self.ep.direct_payload(&self.rbuf).min(buf.remaining());
            let filled = if direct >= DIRECT_MIN && self.sock.as_ref().is_some_and(|s| s.reads_into()) {
                self.poll_fill_direct(cx, buf, direct)
            } else {
                self.poll_fill(cx)
            };
            if filled.is_pending() {
                remember(&mut self.reader, cx);
                return Poll::Pending;
            }
            if buf.filled().len() > start {
                return Poll::Ready(Ok(()));
            }
        }
    }

    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &mut Bytes) -> Poll<Result<(), FlowError>> {
        self.poll_writev(cx, std::slice::from_mut(buf))
    }

    fn poll_writev(&mut self, cx: &mut Context<'_>, bufs: &mut [Bytes]) -> Poll<Result<(), FlowError>> {
        let nothing_left = bufs.iter().all(Bytes::is_empty);
        // A re-poll may find the buffers empty with their frames still queued: flush those.
        if nothing_left && (self.enc.is_empty() || !self.writer_waiting) {
            return Poll::Ready(Ok(()));
        }
        if !nothing_left {
            self.ep.write_allowed()?;
        }
        loop {
            self.queue_markers();
            let wrote = if bufs.iter().all(Bytes::is_empty) {
                // Nothing left but queued frames (a re-poll after the buffers were taken).
                self.poll_flush(cx)
            } else {
                self.ep.write_allowed()?;
                self.poll_write_owned(cx, bufs)
            };
            match wrote {
                Poll::Pending => {
                    self.writer_waiting = true;
                    remember(&mut self.writer, cx);
                    return Poll::Pending;
                }
                Poll::Ready(Err(e)) => {
                    self.writer_waiting = false;
                    return Poll::Ready(Err(e.into()));
                }
                Poll::Ready(Ok(())) => {
                    self.writer_waiting = false;
                    if self.enc.is_empty() && bufs.iter().all(Bytes::is_empty) {
                        return Poll::Ready(Ok(()));
                    }
                }
            }
        }
    }

    /// Frames the caller's borrowed slices (a frame never spans two slices)
    /// and writes headers and slices with one `writev` straight to the
    /// socket, once the frames of earlier writes are out. A frame the socket
    /// took only part of is copied into the queue (at most one frame) and
    /// counts as accepted; it goes out before anything else.
    fn poll_write_borrowed(&mut self, cx: &mut Context<'_>, bufs: &[IoSlice<'_>]) -> Poll<Result<usize, FlowError>> {
        if bufs.iter().all(|b| b.is_empty()) {
            return Poll::Ready(Ok(0));
        }
        self.ep.write_allowed()?;
        self.queue_markers();
        if !self.enc.is_empty() {
            ready!(self.poll_flush_writer(cx))?;
            self.ep.write_allowed()?;
        }
        // The usual case (hyper's head and body, each one frame): small arrays.
        let max = self.enc.max_frame_len();
        if bufs.len() <= FEW
            && bufs.iter().all(|b| b.len() <= max)
            && bufs.iter().map(|b| b.len()).sum::<usize>() <= WRITE_BUDGET
        {
            self.poll_write_frames::<FEW, { 2 * FEW }>(cx, bufs)
        } else {
            self.poll_write_frames::<{ MAX_IOV / 2 }, MAX_IOV>(cx, bufs)
        }
    }

    fn is_write_borrowed(&self) -> bool {
        true
    }

    fn poll_shutdown(&mut self, cx: &mut Context<'_>, how: Shutdown) -> Poll<Result<(), FlowError>> {
        if self.sock.is_none() {
            return Poll::Ready(Ok(()));
        }
        if how.writes() {
            self.ep.shutdown_write();
        }
        if how.reads() {
            self.ep.shutdown_read();
            // A read pending elsewhere ends with Eof.
            if let Some(w) = self.reader.take() {
                w.wake();
            }
        }
        self.queue_markers();
        match ready!(self.poll_flush_marking(cx)) {
            Ok(()) => Poll::Ready(Ok(())),
            // Nobody left to signal.
            Err(e) if matches!(e.kind(), io::ErrorKind::BrokenPipe | io::ErrorKind::NotConnected) => {
                Poll::Ready(Ok(()))
            }
            Err(e) => Poll::Ready(Err(e.into())),
        }
    }

    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), FlowError>> {
        self.poll_close_inner(cx)
    }

    fn poll_abort(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), FlowError>> {
        self.ep.abort();
        Poll::Ready(self.release(true).map_err(FlowError::from))
    }
}

//! [`NetFlow`]: a TCP connection of a [`NetStack`](crate::NetStack).

use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use conflux_flow::{Flow, FlowError, Shutdown};
use conflux_tcp::{TcpFlow, canonical_addr};
use tokio::io::ReadBuf;

use crate::core::{ConnId, End, Recv, SendRefused};
use crate::stack::Shared;

/// The largest chunk one read returns (what the receive buffer holds, up
/// to this). A forwarder writes each chunk to a kernel socket with one
/// system call, and on loopback each wakes the reader at the far end:
/// 256 KiB chunks moved 17% more than 64 KiB ones through usernet's
/// outbound path (1.33 -> 1.56 GB/s, iperf3 through `conflux usernet`),
/// while the netstack scenarios did not change (docs/netstack-profile.md).
const READ_CHUNK: usize = 256 * 1024;

/// How many times one write's poll fills the send buffer again after its
/// own round freed room, before it waits (and is woken) like any other.
const REFILLS: usize = 8;

/// A TCP connection of a [`NetStack`](crate::NetStack): the flow contract
/// plus `dst`/`src`, `set_nodelay` and `write_nodelay`.
///
/// - `shutdown(Write)` sends FIN once everything written before it left
///   (smoltcp's `close`); reading goes on.
/// - `shutdown(Read)` is a flag: later reads return Eof at once; the peer is
///   not told (as with kernel TCP).
/// - `close` and drop start the graceful close and return at once; the
///   socket finishes in the background (FIN, TIME_WAIT) and is reaped, its
///   port freed. `abort` sends RST.
/// - A reset by the peer reads as an error with `is_reset()`; a keepalive
///   expiry reads as Eof (and `expired` says so) and later writes fail
///   with `Closed`.
/// - Once the stack's device failed, reads return the bytes already
///   received and then an error with `is_reset()` whose source
///   ([`get_ref`](FlowError::get_ref)) is the [`DeviceError`](crate::DeviceError);
///   writes (and `write_nodelay`'s wait) fail with it at once. Nothing
///   waits on a dead stack.
pub struct NetFlow {
    shared: Arc<Shared>,
    id: ConnId,
    local: SocketAddr,
    remote: SocketAddr,
    read_shut: bool,
    write_shut: bool,
    closed: bool,
    /// The latched read outcome once the stream ended (`None` inside = Eof).
    read_end: Option<Option<FlowError>>,
    /// That Eof was a keepalive expiry ([`TcpFlow::expired`]).
    expired: bool,
}

impl std::fmt::Debug for NetFlow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetFlow").field("src", &self.local).field("dst", &self.remote).finish_non_exhaustive()
    }
}

impl NetFlow {
    pub(crate) fn new(shared: Arc<Shared>, id: ConnId, local: SocketAddr, remote: SocketAddr) -> NetFlow {
        shared.flow_opened();
        tracing::trace!(src = %local, dst = %remote, "flow open");
        NetFlow {
            shared,
            id,
            local,
            remote,
            read_shut: false,
            write_shut: false,
            closed: false,
            read_end: None,
            expired: false,
        }
    }

    /// Bytes written that the peer has not acknowledged yet (0 once closed).
    pub fn unacked(&self) -> Result<usize, FlowError> {
        if self.closed {
            return Ok(0);
        }
        Ok(self.shared.lock().core.send_queue(self.id))
    }

    fn write_error(end: End) -> FlowError {
        end_error(end).unwrap_or_else(FlowError::closed)
    }

    /// Writes as much of `bufs` as fits; ready once all of it was accepted.
    fn poll_send(&mut self, cx: &mut Context<'_>, bufs: &mut [Bytes]) -> Poll<Result<(), FlowError>> {
        if bufs.iter().all(Bytes::is_empty) {
            return Poll::Ready(Ok(()));
        }
        if self.write_shut || self.closed {
            return Poll::Ready(Err(FlowError::closed()));
        }
        let mut st = self.shared.lock();
        let mut refills = 0;
        loop {
            if let Err(e) = st.alive() {
                return Poll::Ready(Err(e.flow_error()));
            }
            let mut sent = 0;
            let res = 'fill: {
                for buf in bufs.iter_mut() {
                    while !buf.is_empty() {
                        match st.core.send(self.id, buf) {
                            Ok(n) => {
                                sent += n;
                                buf.advance(n);
                            }
                            Err(SendRefused::Full) => break 'fill Poll::Pending,
                            Err(SendRefused::Closed(end)) => break 'fill Poll::Ready(Err(Self::write_error(end))),
                        }
                    }
                }
                Poll::Ready(Ok(()))
            };
            if res.is_pending() && sent > 0 && refills < REFILLS {
                // Our own round may free room (the other stack's ACK comes
                // back in it): fill again rather than wake this task (a
                // wake-up on a multi_thread runtime may move the flow's
                // reader to the other worker). A few times: a long write
                // still yields to the task's neighbours.
                refills += 1;
                self.shared.flush(st);
                st = self.shared.lock();
                continue;
            }
            if res.is_pending() {
                st.register_write(self.id, cx.waker());
            }
            if sent > 0 {
                self.shared.flush(st);
            }
            return res;
        }
    }

    /// Reads up to `max` bytes into `sink` (see `Core::recv`) under one
    /// lock: `Ready(Ok(true))` once some were read, `Ok(false)` at Eof
    /// (sticky), an error latched once the stream ended uncleanly.
    fn poll_recv(
        &mut self,
        cx: &mut Context<'_>,
        max: usize,
        sink: impl FnMut(&[u8], usize),
    ) -> Poll<Result<bool, FlowError>> {
        if let Some(end) = &self.read_end {
            return Poll::Ready(match end {
                None => Ok(false),
                Some(e) => Err(e.latched()),
            });
        }
        if self.read_shut || self.closed {
            return Poll::Ready(Ok(false));
        }
        let poll = {
            let mut st = self.shared.lock();
            let poll = match st.core.recv(self.id, max, sink) {
                Recv::Data(_) => Poll::Ready(Ok(true)),
                Recv::Empty => match st.alive() {
                    // Not latched below: each read builds it again from the
                    // stack's state (the same error, its source still typed).
                    Err(e) => return Poll::Ready(Err(e.flow_error())),
                    Ok(()) => {
                        st.register_read(self.id, cx.waker());
                        Poll::Pending
                    }
                },
                Recv::Finished => Poll::Ready(Ok(false)),
                // Closed without a FIN, a reset or our user timeout: the
                // keepalive expired (our own abort returned above).
                Recv::Closed(end) => match end_error(end) {
                    Some(e) => Poll::Ready(Err(e)),
                    None => {
                        self.expired = true;
                        Poll::Ready(Ok(false))
                    }
                },
            };
            // A window to announce: sent now.
            if st.core.has_work() {
                self.shared.flush(st);
            }
            poll
        };
        match &poll {
            Poll::Ready(Ok(false)) => self.read_end = Some(None),
            Poll::Ready(Err(e)) => self.read_end = Some(Some(e.latched())),
            _ => {}
        }
        poll
    }

    fn finish(&mut self, abort: bool) {
        if self.closed {
            return;
        }
        let mut st = self.shared.lock();
        st.forget_wakers(self.id);
        st.core.release(self.id, abort, self.write_shut);
        self.closed = true;
        self.write_shut = true;
        self.read_shut = true;
        // Counted closed before the round below wakes anyone.
        self.shared.flow_closed();
        self.shared.flush(st);
        tracing::trace!(src = %self.local, dst = %self.remote, abort, "flow closed");
    }
}

impl Drop for NetFlow {
    fn drop(&mut self) {
        self.finish(false);
    }
}

impl Flow for NetFlow {
    /// Each chunk is its own allocation of the read's size, filled without
    /// zeroing: a chunk the reader keeps pins nothing else.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, FlowError>> {
        let mut chunk = BytesMut::new();
        let polled = self.poll_recv(cx, READ_CHUNK, |bytes, total| {
            // One allocation of the read's size, filled without zeroing.
            if chunk.capacity() == 0 {
                chunk.reserve(total);
            }
            chunk.extend_from_slice(bytes);
        });
        polled.map_ok(|data| data.then(|| chunk.freeze()))
    }

    /// Straight from the socket's receive ring into `buf`: no chunk, no
    /// second copy; nothing is ever left in `rest`.
    fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
        _rest: &mut Bytes,
    ) -> Poll<Result<(), FlowError>> {
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        let max = buf.remaining();
        self.poll_recv(cx, max, |bytes, _| buf.put_slice(bytes)).map_ok(drop)
    }

    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &mut Bytes) -> Poll<Result<(), FlowError>> {
        self.poll_send(cx, std::slice::from_mut(buf))
    }

    fn poll_writev(&mut self, cx: &mut Context<'_>, bufs: &mut [Bytes]) -> Poll<Result<(), FlowError>> {
        self.poll_send(cx, bufs)
    }

    fn poll_shutdown(&mut self, _cx: &mut Context<'_>, how: Shutdown) -> Poll<Result<(), FlowError>> {
        if how.reads() {
            self.read_shut = true;
        }
        if how.writes() && !self.write_shut {
            self.write_shut = true;
            let mut st = self.shared.lock();
            if !self.closed {
                st.core.close_write(self.id);
            }
            self.shared.flush(st);
        }
        Poll::Ready(Ok(()))
    }

    fn poll_close(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), FlowError>> {
        self.finish(false);
        Poll::Ready(Ok(()))
    }

    fn poll_abort(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), FlowError>> {
        self.finish(true);
        Poll::Ready(Ok(()))
    }
}

impl TcpFlow for NetFlow {
    fn dst(&self) -> SocketAddr {
        canonical_addr(self.remote)
    }

    fn src(&self) -> SocketAddr {
        canonical_addr(self.local)
    }

    fn set_nodelay(&mut self, nodelay: bool) -> Result<(), FlowError> {
        if self.closed {
            return Err(FlowError::closed());
        }
        self.shared.lock().core.set_nagle(self.id, !nodelay).map(drop).ok_or_else(FlowError::closed)
    }

    fn expired(&self) -> bool {
        self.expired
    }

    fn poll_writev_nodelay(&mut self, cx: &mut Context<'_>, bufs: &mut [Bytes]) -> Poll<Result<(), FlowError>> {
        if !bufs.iter().all(Bytes::is_empty) {
            // Nagle off for these bytes, restored once they are queued.
            let nagle = if self.closed { None } else { self.shared.lock().core.set_nagle(self.id, false) };
            let res = self.poll_send(cx, bufs);
            if let Some(was) = nagle {
                self.shared.lock().core.set_nagle(self.id, was);
            }
            match res {
                Poll::Ready(Ok(())) => {}
                other => return other,
            }
        }
        if self.closed {
            return Poll::Ready(Err(FlowError::closed()));
        }
        // Every byte acknowledged: the send queue is empty.
        let mut st = self.shared.lock();
        if st.core.send_queue(self.id) == 0 {
            Poll::Ready(Ok(()))
        } else if let Err(e) = st.alive() {
            Poll::Ready(Err(e.flow_error()))
        } else if st.core.is_closed(self.id) {
            Poll::Ready(Err(Self::write_error(st.core.end(self.id))))
        } else {
            st.register_write(self.id, cx.waker());
            Poll::Pending
        }
    }
}

/// The error a connection that ended uncleanly reads as.
fn end_error(end: End) -> Option<FlowError> {
    if end.reset {
        Some(FlowError::reset())
    } else if end.timed_out {
        Some(FlowError::timed_out("sent data unacknowledged for the user timeout"))
    } else {
        None
    }
}

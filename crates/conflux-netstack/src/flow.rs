//! [`NetFlow`]: a TCP connection of a [`NetStack`](crate::NetStack).

use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use conflux_flow::{Flow, FlowError, Shutdown};
use conflux_tcp::{TcpFlow, canonical_addr};
use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp;

use crate::core::ConnId;
use crate::stack::Shared;

/// The largest chunk one read returns.
const READ_CHUNK: usize = 64 * 1024;

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
///   expiry reads as Eof and later writes fail with `Closed`.
pub struct NetFlow {
    shared: Arc<Shared>,
    id: ConnId,
    shard: usize,
    handle: SocketHandle,
    local: SocketAddr,
    remote: SocketAddr,
    read_shut: bool,
    write_shut: bool,
    closed: bool,
    /// The latched read outcome once the stream ended (`None` inside = Eof).
    read_end: Option<Option<FlowError>>,
}

impl std::fmt::Debug for NetFlow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetFlow").field("src", &self.local).field("dst", &self.remote).finish_non_exhaustive()
    }
}

impl NetFlow {
    pub(crate) fn new(
        shared: Arc<Shared>,
        id: ConnId,
        shard: usize,
        handle: SocketHandle,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> NetFlow {
        shared.flow_opened();
        tracing::trace!(src = %local, dst = %remote, "flow open");
        NetFlow {
            shared,
            id,
            shard,
            handle,
            local,
            remote,
            read_shut: false,
            write_shut: false,
            closed: false,
            read_end: None,
        }
    }

    /// Bytes written that the peer has not acknowledged yet (0 once closed).
    pub fn unacked(&self) -> Result<usize, FlowError> {
        if self.closed {
            return Ok(0);
        }
        let mut core = self.shared.lock();
        Ok(core.socket(self.shard, self.handle).send_queue())
    }

    /// Runs `f` on our socket with the stack locked; `None` once closed.
    fn with<R>(&mut self, f: impl FnOnce(&mut tcp::Socket<'static>, End) -> R) -> Option<R> {
        if self.closed {
            return None;
        }
        let mut core = self.shared.lock();
        let end =
            core.conns.get(&self.id).map_or(End::default(), |c| End { reset: c.rst_seen, timed_out: c.timed_out });
        Some(f(core.socket(self.shard, self.handle), end))
    }

    fn write_error(end: End) -> FlowError {
        end.error().unwrap_or_else(FlowError::closed)
    }

    /// Writes as much of `bufs` as fits; ready once all of it was accepted.
    fn poll_send(&mut self, cx: &mut Context<'_>, bufs: &mut [Bytes]) -> Poll<Result<(), FlowError>> {
        if bufs.iter().all(Bytes::is_empty) {
            return Poll::Ready(Ok(()));
        }
        if self.write_shut || self.closed {
            return Poll::Ready(Err(FlowError::closed()));
        }
        let mut sent = 0;
        let res = self.with(|sock, end| {
            if !sock.may_send() {
                return Poll::Ready(Err(Self::write_error(end)));
            }
            for buf in bufs.iter_mut() {
                while !buf.is_empty() {
                    match sock.send_slice(buf) {
                        Ok(0) | Err(_) => {
                            sock.register_send_waker(cx.waker());
                            return Poll::Pending;
                        }
                        Ok(n) => {
                            sent += n;
                            buf.advance(n);
                        }
                    }
                }
            }
            Poll::Ready(Ok(()))
        });
        if sent > 0 {
            self.shared.kick();
        }
        res.unwrap_or(Poll::Ready(Err(FlowError::closed())))
    }

    fn finish(&mut self, abort: bool) {
        if self.closed {
            return;
        }
        let write_shut = self.write_shut;
        {
            let mut core = self.shared.lock();
            let sock = core.socket(self.shard, self.handle);
            // Closing with unread data resets, as the kernel does.
            if abort || (!write_shut && sock.recv_queue() > 0) {
                sock.abort();
            } else if !write_shut {
                sock.close();
            }
            core.orphan(self.id);
        }
        self.closed = true;
        self.write_shut = true;
        self.read_shut = true;
        self.shared.flow_closed();
        self.shared.kick();
        tracing::trace!(src = %self.local, dst = %self.remote, abort, "flow closed");
    }
}

impl Drop for NetFlow {
    fn drop(&mut self) {
        self.finish(false);
    }
}

impl Flow for NetFlow {
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, FlowError>> {
        if let Some(end) = &self.read_end {
            return Poll::Ready(match end {
                None => Ok(None),
                Some(e) => Err(e.latched()),
            });
        }
        if self.read_shut || self.closed {
            return Poll::Ready(Ok(None));
        }
        let res = self
            .with(|sock, end| {
                let window_was_low = sock.recv_capacity() - sock.recv_queue() < sock.recv_capacity() / 2;
                match sock.recv(|buf| {
                    let n = buf.len().min(READ_CHUNK);
                    (n, Bytes::copy_from_slice(&buf[..n]))
                }) {
                    Ok(chunk) if !chunk.is_empty() => (Poll::Ready(Ok(Some(chunk))), window_was_low),
                    Ok(_) => {
                        sock.register_recv_waker(cx.waker());
                        (Poll::Pending, false)
                    }
                    Err(tcp::RecvError::Finished) => (Poll::Ready(Ok(None)), false),
                    Err(tcp::RecvError::InvalidState) => match end.error() {
                        Some(e) => (Poll::Ready(Err(e)), false),
                        // Closed without a reset: keepalive expiry or our own abort.
                        None => (Poll::Ready(Ok(None)), false),
                    },
                }
            })
            .unwrap_or((Poll::Ready(Ok(None)), false));
        let (poll, kick) = res;
        if kick {
            self.shared.kick();
        }
        match &poll {
            Poll::Ready(Ok(None)) => self.read_end = Some(None),
            Poll::Ready(Err(e)) => self.read_end = Some(Some(e.latched())),
            _ => {}
        }
        poll
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
            self.with(|sock, _| sock.close());
            self.shared.kick();
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
        self.with(|sock, _| sock.set_nagle_enabled(!nodelay)).ok_or_else(FlowError::closed)
    }

    fn poll_writev_nodelay(&mut self, cx: &mut Context<'_>, bufs: &mut [Bytes]) -> Poll<Result<(), FlowError>> {
        if !bufs.iter().all(Bytes::is_empty) {
            // Nagle off for these bytes, restored once they are queued.
            let nagle = self.with(|sock, _| {
                let was = sock.nagle_enabled();
                sock.set_nagle_enabled(false);
                was
            });
            let res = self.poll_send(cx, bufs);
            if let Some(was) = nagle {
                self.with(|sock, _| sock.set_nagle_enabled(was));
            }
            match res {
                Poll::Ready(Ok(())) => {}
                other => return other,
            }
        }
        // Every byte acknowledged: smoltcp's send queue is empty.
        self.with(|sock, end| {
            if sock.send_queue() == 0 {
                Poll::Ready(Ok(()))
            } else if sock.state() == tcp::State::Closed {
                Poll::Ready(Err(Self::write_error(end)))
            } else {
                sock.register_send_waker(cx.waker());
                Poll::Pending
            }
        })
        .unwrap_or(Poll::Ready(Err(FlowError::closed())))
    }
}

/// How a connection ended, when not cleanly.
#[derive(Debug, Clone, Copy, Default)]
struct End {
    /// An RST arrived.
    reset: bool,
    /// Sent data went unacknowledged for the user timeout.
    timed_out: bool,
}

impl End {
    fn error(self) -> Option<FlowError> {
        if self.reset {
            Some(FlowError::reset())
        } else if self.timed_out {
            Some(FlowError::timed_out("sent data unacknowledged for the user timeout"))
        } else {
            None
        }
    }
}

//! [`HostFlow`]: a kernel TCP connection as a conflux flow.

use std::collections::HashMap;
use std::future::Future;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::task::{Context, Poll, Waker, ready};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use conflux_flow::{Flow, FlowError, Shutdown, bufs};
use conflux_tcp::{TcpFlow, canonical_addr};
use socket2::SockRef;
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use crate::sys;

/// The open flows of one stack, for `open_flows` and `disconnect`.
#[derive(Debug, Default)]
pub(crate) struct FlowTable {
    next: AtomicU64,
    flows: Mutex<HashMap<u64, Weak<TcpStream>>>,
}

impl FlowTable {
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Weak<TcpStream>>> {
        self.flows.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn insert(&self, stream: &Arc<TcpStream>) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(id, Arc::downgrade(stream));
        id
    }

    fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    /// Shuts both directions of every open flow: the peer gets a FIN after
    /// everything already written, local readers see Eof.
    pub(crate) fn shutdown_all(&self) {
        let streams: Vec<Arc<TcpStream>> = self.lock().values().filter_map(Weak::upgrade).collect();
        for stream in streams {
            if let Err(e) = SockRef::from(&*stream).shutdown(std::net::Shutdown::Both) {
                tracing::trace!(error = %e, "shutdown during disconnect");
            }
        }
    }
}

/// The state of a `write_nodelay` waiting for acknowledgements.
struct AckWait {
    /// Restore Nagle when done (it was on before).
    restore_nagle: bool,
    deadline: Option<Instant>,
    spins: u32,
    backoff: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
}

/// Checks of `SIOCOUTQ` before the first sleep (a yield each: loopback acks in microseconds).
const ACK_SPINS: u32 = 16;
/// The size of a flow's first read (a 1 KiB message reads short: see
/// `poll_read`).
const FIRST_READ: usize = 2048;
/// The longest sleep between two `SIOCOUTQ` checks.
const ACK_MAX_BACKOFF: Duration = Duration::from_millis(4);

/// A kernel TCP connection: implements [`Flow`] and [`TcpFlow`].
///
/// - Reads return at most the stack's `read_chunk` bytes. A keepalive expiry
///   (`ETIMEDOUT`, or the unreachable error Linux reports instead when an ICMP
///   error arrived meanwhile) reads as Eof, and `expired` says so; a reset is
///   an error with `is_reset()`.
/// - Writes fail with `Closed` after `shutdown(Write)`, on `EPIPE` and after a
///   keepalive expiry; with `is_reset()` after a reset.
/// - `shutdown(Write)` is `shutdown(SHUT_WR)`, synchronous: the FIN follows the
///   bytes already written, and a dropped write half signals at once.
/// - `close` discards unread input (so the kernel sends a FIN, not a RST)
///   and closes the socket, whose FIN follows every queued byte. When the
///   peer has not sent its FIN and written bytes are still queued, the
///   socket lingers in the background (on the current runtime): FIN sent
///   at once, the descriptor closed once those bytes are acknowledged (at
///   most 2 s); input arriving after a plain close would draw a RST that
///   discards them. `abort` closes with
///   `SO_LINGER` 0, which sends a RST. Dropping the flow closes the socket.
/// - `src` asks the kernel (`getsockname`) the first time it is called, not
///   when the flow opens (a forwarder relaying short connections never
///   asks); asked first after the flow closed, it is the unspecified
///   address of `dst`'s family with port 0.
/// - `write_nodelay` turns `TCP_NODELAY` on for the write (restoring it after)
///   and then waits until `SIOCOUTQ` reports no unacknowledged byte, checking
///   with a short backoff (at most 4 ms), bounded by the stack's `ack_timeout`.
pub struct HostFlow {
    io: Option<Arc<TcpStream>>,
    table: Arc<FlowTable>,
    id: u64,
    /// Our address, asked of the kernel on first use.
    src: OnceLock<SocketAddr>,
    dst: SocketAddr,
    read_buf: BytesMut,
    read_chunk: usize,
    /// The size of the next read: doubles from [`FIRST_READ`] up to `read_chunk`
    /// while reads fill at least half of it, so a 1-byte exchange never
    /// allocates a big buffer and a bulk transfer soon reads in big chunks.
    read_size: usize,
    read_shut: bool,
    write_shut: bool,
    eof: bool,
    /// The Eof was a keepalive (or user timeout) expiry ([`TcpFlow::expired`]).
    expired: bool,
    read_err: Option<FlowError>,
    write_err: Option<FlowError>,
    nodelay: bool,
    ack_timeout: Duration,
    ack: Option<AckWait>,
    /// Tasks waiting in a read or a write: woken when the flow is closed
    /// (another task may close it through a split half).
    read_waker: Option<Waker>,
    write_waker: Option<Waker>,
}

/// Remembers `cx`'s waker in `slot` (cloning only when it changed).
fn remember(slot: &mut Option<Waker>, cx: &Context<'_>) {
    match slot {
        Some(w) if w.will_wake(cx.waker()) => {}
        _ => *slot = Some(cx.waker().clone()),
    }
}

impl std::fmt::Debug for HostFlow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostFlow")
            .field("src", &self.src.get())
            .field("dst", &self.dst)
            .field("open", &self.io.is_some())
            .field("read_shut", &self.read_shut)
            .field("write_shut", &self.write_shut)
            .finish_non_exhaustive()
    }
}

fn is_os_error(e: &io::Error, code: i32) -> bool {
    e.raw_os_error() == Some(code)
}

impl HostFlow {
    /// Wraps a fresh connection to `dst` (Nagle on, as the kernel starts it).
    pub(crate) fn new(
        stream: TcpStream,
        dst: SocketAddr,
        table: &Arc<FlowTable>,
        read_chunk: usize,
        ack_timeout: Duration,
    ) -> io::Result<HostFlow> {
        let dst = canonical_addr(dst);
        let stream = Arc::new(stream);
        let id = table.insert(&stream);
        let flow = HostFlow {
            io: Some(stream),
            table: table.clone(),
            id,
            src: OnceLock::new(),
            dst,
            read_buf: BytesMut::new(),
            read_chunk,
            read_size: read_chunk.min(FIRST_READ),
            read_shut: false,
            write_shut: false,
            eof: false,
            expired: false,
            read_err: None,
            write_err: None,
            nodelay: false,
            ack_timeout,
            ack: None,
            read_waker: None,
            write_waker: None,
        };
        tracing::trace!(src = %flow.src(), %dst, "flow open");
        Ok(flow)
    }

    /// The socket, while the flow has it.
    pub(crate) fn stream(&self) -> Option<&Arc<TcpStream>> {
        self.io.as_ref()
    }

    /// Bytes written that the peer has not acknowledged yet (`SIOCOUTQ`).
    pub fn unacked(&self) -> Result<usize, FlowError> {
        let io = self.io.as_ref().ok_or_else(FlowError::closed)?;
        Ok(sys::unacked(io.as_fd())?)
    }

    /// Releases the socket: the descriptor is closed once no disconnect holds it.
    fn release(&mut self) {
        if self.io.is_some() {
            // (Before the socket goes: `src` may still have to ask it.)
            tracing::trace!(src = %self.src(), dst = %self.dst, "flow closed");
            self.io = None;
            self.table.remove(self.id);
        }
        self.read_shut = true;
        self.write_shut = true;
        self.ack = None;
        for waker in [self.read_waker.take(), self.write_waker.take()].into_iter().flatten() {
            waker.wake();
        }
    }

    fn read_error(&mut self, e: io::Error) -> Poll<Result<Option<Bytes>, FlowError>> {
        if [libc::ETIMEDOUT, libc::EHOSTUNREACH, libc::ENETUNREACH].iter().any(|&code| is_os_error(&e, code)) {
            // A keepalive (or user timeout) expiry: the contract says Eof. Linux
            // reports a soft error seen meanwhile (an ICMP unreachable) instead of
            // ETIMEDOUT, so those read as the expiry they end in.
            self.eof = true;
            self.expired = true;
            return Poll::Ready(Ok(None));
        }
        let e = FlowError::from(e);
        self.read_err = Some(e.latched());
        Poll::Ready(Err(e))
    }

    fn write_error(&mut self, e: io::Error) -> Poll<Result<(), FlowError>> {
        let dead = [libc::EPIPE, libc::ETIMEDOUT, libc::EHOSTUNREACH, libc::ENETUNREACH];
        let e = if dead.iter().any(|&code| is_os_error(&e, code)) {
            // The socket's error is taken by this write: a later read sees Eof.
            self.expired |= !is_os_error(&e, libc::EPIPE);
            FlowError::closed().with_source(e)
        } else {
            FlowError::from(e)
        };
        self.write_err = Some(e.latched());
        Poll::Ready(Err(e))
    }

    fn write_gate(&self) -> Result<&Arc<TcpStream>, FlowError> {
        if let Some(e) = &self.write_err {
            return Err(e.latched());
        }
        match &self.io {
            Some(io) if !self.write_shut => Ok(io),
            _ => Err(FlowError::closed()),
        }
    }

    fn finish_nodelay(&mut self) {
        if let Some(ack) = self.ack.take()
            && ack.restore_nagle
            && let Some(io) = &self.io
            && let Err(e) = io.set_nodelay(false)
        {
            tracing::trace!(error = %e, "restoring Nagle after write_nodelay");
        }
    }

    /// Waits until the kernel reports no unacknowledged byte.
    fn poll_acked(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), FlowError>> {
        loop {
            let Some(io) = &self.io else { return Poll::Ready(Err(FlowError::closed())) };
            let fd = io.as_fd();
            let state = sys::tcp_state(fd)?;
            if state == sys::TCP_CLOSE {
                let err = match io.take_error() {
                    Ok(Some(e)) if is_os_error(&e, libc::ECONNRESET) => FlowError::reset().with_source(e),
                    Ok(Some(e)) => FlowError::closed().with_source(e),
                    _ => FlowError::closed().with_message("the connection closed before the peer acknowledged"),
                };
                return Poll::Ready(Err(err));
            }
            if sys::unacked(fd)? == 0 {
                return Poll::Ready(Ok(()));
            }
            let ack = self.ack.as_mut().expect("poll_acked runs inside write_nodelay");
            let now = Instant::now();
            let deadline = *ack.deadline.get_or_insert(now + self.ack_timeout);
            if now >= deadline {
                return Poll::Ready(Err(FlowError::timed_out("the peer's acknowledgement of written bytes")));
            }
            if ack.spins < ACK_SPINS {
                ack.spins += 1;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            match &mut ack.sleep {
                Some(sleep) => {
                    ready!(sleep.as_mut().poll(cx));
                    ack.sleep = None;
                }
                None => {
                    let wake = (now + ack.backoff).min(deadline);
                    ack.backoff = (ack.backoff * 2).min(ACK_MAX_BACKOFF);
                    ack.sleep = Some(Box::pin(tokio::time::sleep_until(wake)));
                }
            }
        }
    }

    fn poll_writev_inner(&mut self, cx: &mut Context<'_>, bufs: &mut [Bytes]) -> Poll<Result<(), FlowError>> {
        if bufs.iter().all(Bytes::is_empty) {
            return Poll::Ready(Ok(()));
        }
        let io = self.write_gate()?.clone();
        while let Some(first) = bufs.iter().position(|b| !b.is_empty()) {
            let ready = io.poll_write_ready(cx);
            if ready.is_pending() {
                remember(&mut self.write_waker, cx);
            }
            if let Err(e) = ready!(ready) {
                return self.write_error(e);
            }
            let res = if bufs[first + 1..].iter().all(Bytes::is_empty) {
                io.try_write(&bufs[first])
            } else {
                let mut slices = [IoSlice::new(&[]); bufs::MAX_IOV];
                let n = bufs::gather(&bufs[first..], &mut slices);
                io.try_write_vectored(&slices[..n])
            };
            match res {
                Ok(n) => bufs::advance(&mut bufs[first..], n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return self.write_error(e),
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl Drop for HostFlow {
    fn drop(&mut self) {
        self.release();
    }
}

impl Flow for HostFlow {
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, FlowError>> {
        if let Some(e) = &self.read_err {
            return Poll::Ready(Err(e.latched()));
        }
        if self.read_shut || self.eof {
            return Poll::Ready(Ok(None));
        }
        let Some(io) = self.io.clone() else { return Poll::Ready(Ok(None)) };
        loop {
            let ready = io.poll_read_ready(cx);
            if ready.is_pending() {
                remember(&mut self.read_waker, cx);
            }
            if let Err(e) = ready!(ready) {
                return self.read_error(e);
            }
            // Reclaims the buffer of earlier chunks once the reader dropped them.
            self.read_buf.reserve(self.read_size);
            let room = self.read_size;
            let mut limited = (&mut self.read_buf).limit(room);
            // A short read emptied the socket's queue: its readiness is
            // cleared as for `WouldBlock` (tokio's own `poll_read` does the
            // same; a FIN seen already stays ready), so the next read waits
            // for the next event instead of a `recv` that finds nothing.
            let mut short = None;
            let res = io.try_io(tokio::io::Interest::READABLE, || match io.try_read_buf(&mut limited) {
                Ok(n) if n > 0 && n < room => {
                    short = Some(n);
                    Err(io::ErrorKind::WouldBlock.into())
                }
                other => other,
            });
            let res = match short {
                Some(n) => Ok(n),
                None => res,
            };
            match res {
                Ok(0) => {
                    self.eof = true;
                    return Poll::Ready(Ok(None));
                }
                Ok(n) => {
                    if n >= room / 2 {
                        self.read_size = (room * 2).min(self.read_chunk);
                    }
                    return Poll::Ready(Ok(Some(self.read_buf.split().freeze())));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return self.read_error(e),
            }
        }
    }

    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &mut Bytes) -> Poll<Result<(), FlowError>> {
        self.poll_writev(cx, std::slice::from_mut(buf))
    }

    fn poll_writev(&mut self, cx: &mut Context<'_>, bufs: &mut [Bytes]) -> Poll<Result<(), FlowError>> {
        // A plain write after an abandoned write_nodelay: Nagle as the user set it.
        self.finish_nodelay();
        self.poll_writev_inner(cx, bufs)
    }

    /// One `write`/`writev` of the caller's slices, straight to the socket.
    fn poll_write_borrowed(&mut self, cx: &mut Context<'_>, bufs: &[IoSlice<'_>]) -> Poll<Result<usize, FlowError>> {
        self.finish_nodelay();
        let mut slices = [IoSlice::new(&[]); bufs::MAX_IOV];
        let n = bufs::gather_slices(bufs, &mut slices);
        if n == 0 {
            return Poll::Ready(Ok(0));
        }
        let io = self.write_gate()?.clone();
        loop {
            let ready = io.poll_write_ready(cx);
            if ready.is_pending() {
                remember(&mut self.write_waker, cx);
            }
            if let Err(e) = ready!(ready) {
                return self.write_error(e).map_ok(|()| 0);
            }
            let res = if n == 1 { io.try_write(&slices[0]) } else { io.try_write_vectored(&slices[..n]) };
            match res {
                Ok(wrote) => return Poll::Ready(Ok(wrote)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return self.write_error(e).map_ok(|()| 0),
            }
        }
    }

    fn is_write_borrowed(&self) -> bool {
        true
    }

    fn poll_shutdown(&mut self, _cx: &mut Context<'_>, how: Shutdown) -> Poll<Result<(), FlowError>> {
        if how.writes() && !self.write_shut {
            self.write_shut = true;
            if let Some(io) = &self.io {
                match SockRef::from(&**io).shutdown(std::net::Shutdown::Write) {
                    Ok(()) => {}
                    // The peer is gone already: nobody is left to signal.
                    Err(e) if is_os_error(&e, libc::ENOTCONN) => {}
                    Err(e) => return Poll::Ready(Err(e.into())),
                }
            }
        }
        if how.reads() {
            self.read_shut = true;
        }
        Poll::Ready(Ok(()))
    }

    fn poll_close(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), FlowError>> {
        if let Some(io) = &self.io
            && !self.eof
        {
            // Unread input would make the kernel answer close with a RST that
            // could overtake bytes still queued for the peer: discard it first.
            // Closing the descriptor then sends the FIN after every queued byte.
            let mut scratch = [0u8; 16 * 1024];
            let mut peer_ended = false;
            for _ in 0..64 {
                match io.try_read(&mut scratch) {
                    Ok(n) if n > 0 => continue,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    // Its FIN, or the connection is gone.
                    _ => {
                        peer_ended = true;
                        break;
                    }
                }
            }
            // Bytes still queued for a peer that has not ended its side:
            // input arriving after a close would draw a RST that overtakes
            // and discards them (a TLS server's session tickets arrive so,
            // unasked). The socket lingers: the FIN follows them now, the
            // descriptor closes once they are acknowledged.
            if !peer_ended
                && sys::unacked(io.as_fd()).is_ok_and(|n| n > 0)
                && let Ok(rt) = tokio::runtime::Handle::try_current()
                && SockRef::from(&**io).shutdown(std::net::Shutdown::Write).is_ok()
            {
                rt.spawn(linger(io.clone()));
            }
        }
        self.release();
        Poll::Ready(Ok(()))
    }

    fn poll_abort(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), FlowError>> {
        if let Some(io) = &self.io
            && let Err(e) = SockRef::from(&**io).set_linger(Some(Duration::ZERO))
        {
            tracing::trace!(error = %e, "SO_LINGER 0 before abort");
        }
        self.release();
        Poll::Ready(Ok(()))
    }
}

/// How long a closed flow's socket waits for the peer to acknowledge the
/// bytes queued at the close ([`HostFlow`]'s close) before it goes.
const LINGER: Duration = Duration::from_secs(2);

/// A closed flow's socket (its FIN sent) until every queued byte is
/// acknowledged, the connection ended or [`LINGER`] passed; checked with a
/// backoff of 1 to 4 ms. Input is left unread: what arrives before the
/// descriptor closes draws no RST.
async fn linger(io: Arc<TcpStream>) {
    let deadline = Instant::now() + LINGER;
    let mut backoff = Duration::from_millis(1);
    while Instant::now() < deadline {
        match (sys::unacked(io.as_fd()), sys::tcp_state(io.as_fd())) {
            (Ok(n), Ok(state)) if n > 0 && state != sys::TCP_CLOSE => {}
            _ => return,
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(ACK_MAX_BACKOFF);
    }
}

impl TcpFlow for HostFlow {
    fn dst(&self) -> SocketAddr {
        self.dst
    }

    fn src(&self) -> SocketAddr {
        *self.src.get_or_init(|| {
            let unknown = || match self.dst {
                SocketAddr::V4(_) => SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, 0)),
                SocketAddr::V6(_) => SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0)),
            };
            match self.io.as_ref().map(|io| io.local_addr()) {
                Some(Ok(addr)) => canonical_addr(addr),
                Some(Err(e)) => {
                    tracing::debug!(error = %e, dst = %self.dst, "getsockname failed");
                    unknown()
                }
                None => unknown(),
            }
        })
    }

    fn set_nodelay(&mut self, nodelay: bool) -> Result<(), FlowError> {
        let io = self.io.as_ref().ok_or_else(FlowError::closed)?;
        io.set_nodelay(nodelay)?;
        self.nodelay = nodelay;
        if let Some(ack) = &mut self.ack {
            ack.restore_nagle = !nodelay;
        }
        Ok(())
    }

    fn expired(&self) -> bool {
        self.expired
    }

    fn poll_writev_nodelay(&mut self, cx: &mut Context<'_>, bufs: &mut [Bytes]) -> Poll<Result<(), FlowError>> {
        if self.ack.is_none() {
            let io = self.write_gate()?;
            if !self.nodelay {
                io.set_nodelay(true)?;
            }
            self.ack = Some(AckWait {
                restore_nagle: !self.nodelay,
                deadline: None,
                spins: 0,
                backoff: Duration::from_millis(1),
                sleep: None,
            });
        }
        let res = match ready!(self.poll_writev_inner(cx, bufs)) {
            Ok(()) => ready!(self.poll_acked(cx)),
            Err(e) => Err(e),
        };
        self.finish_nodelay();
        Poll::Ready(res)
    }
}

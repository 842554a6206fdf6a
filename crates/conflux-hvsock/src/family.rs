//! The socket family abstraction (OCaml `Hvsock.Af_common.S`).

use std::fmt;
use std::future::Future;
use std::io::{self, IoSlice};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::ReadBuf;

/// The most header slots one [`Socket::poll_read_scatter`] is given.
pub(crate) const SCATTER_MAX_HEADS: usize = 32;

/// One connected stream socket of a family.
///
/// The operations of OCaml's `Af_common.S` on a connected socket: read into a
/// buffer (0 = Eof), writev (may be partial), shutdown of either side, close.
/// Interrupted system calls are retried inside; `WouldBlock` never escapes
/// (it is `Pending`).
pub trait Socket: Send + 'static {
    /// The family's printable address.
    type Addr: Clone + fmt::Debug + fmt::Display + Send + Sync + 'static;

    /// Reads into the spare capacity of `buf` (the caller reserves), appending.
    /// `Ok(0)` is Eof.
    fn poll_read_buf(&mut self, cx: &mut Context<'_>, buf: &mut BytesMut) -> Poll<io::Result<usize>>;

    /// True when [`poll_read_into`](Socket::poll_read_into) reads straight
    /// into the caller's buffer; the default is `false`.
    fn reads_into(&self) -> bool {
        false
    }

    /// Reads into `buf` (at most its room), as tokio's `AsyncRead::poll_read`:
    /// nothing appended (with room) is Eof. Only called when
    /// [`reads_into`](Socket::reads_into) says so; the default fails with
    /// `Unsupported`.
    fn poll_read_into(&mut self, _cx: &mut Context<'_>, _buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Err(io::Error::new(io::ErrorKind::Unsupported, "this socket reads into its own buffers only")))
    }

    /// True when [`poll_read_scatter`](Socket::poll_read_scatter) works; the
    /// default is `false`.
    fn reads_scatter(&self) -> bool {
        false
    }

    /// One read that scatters what arrives (the framed flow's read: payloads
    /// land end to end, each 4-byte header in a slot of its own): `segs[0]`
    /// bytes into the spare capacity of `buf` (the caller reserves), then 4
    /// bytes into `heads[0]`, then `segs[1]` bytes into the spare capacity
    /// right after the first piece, and so on (`segs.len() == heads.len() + 1`,
    /// at most 32 slots, an empty piece allowed). The bytes that landed in the
    /// spare capacity join `buf`. Returns every byte received, slots included;
    /// `Ok(0)` is Eof. Only called when [`reads_scatter`](Socket::reads_scatter)
    /// says so; the default fails with `Unsupported`.
    fn poll_read_scatter(
        &mut self,
        _cx: &mut Context<'_>,
        _buf: &mut BytesMut,
        _segs: &[usize],
        _heads: &mut [[u8; 4]],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Err(io::Error::new(io::ErrorKind::Unsupported, "this socket does not scatter reads")))
    }

    /// Writes from `bufs`, in order; returns how many bytes the socket took.
    fn poll_writev(&mut self, cx: &mut Context<'_>, bufs: &[IoSlice<'_>]) -> Poll<io::Result<usize>>;

    /// `shutdown(SHUT_RD)`.
    fn shutdown_read(&mut self) -> io::Result<()>;

    /// `shutdown(SHUT_WR)`: the peer reads Eof after what was written.
    fn shutdown_write(&mut self) -> io::Result<()>;

    /// Releases the socket. Idempotent; later operations fail with `NotConnected`.
    fn close(&mut self) -> io::Result<()>;

    /// Releases the socket without the graceful part where the family has one
    /// (a reset); the default is [`close`](Socket::close).
    fn abort(&mut self) -> io::Result<()> {
        self.close()
    }

    /// This end's address.
    fn local_addr(&self) -> io::Result<Self::Addr>;

    /// The peer's address.
    fn peer_addr(&self) -> io::Result<Self::Addr>;
}

/// A listening socket of a family.
pub trait FamilyListener: Send + Sync + 'static {
    /// The family's printable address.
    type Addr: Clone + fmt::Debug + fmt::Display + Send + Sync + 'static;
    /// The connected sockets it accepts.
    type Socket: Socket<Addr = Self::Addr>;

    /// Waits for the next connection: the socket and the peer's address.
    fn accept(&self) -> impl Future<Output = io::Result<(Self::Socket, Self::Addr)>> + Send + '_;

    /// The address it listens on (with any wildcard port resolved).
    fn local_addr(&self) -> io::Result<Self::Addr>;
}

/// A socket family: create + bind + listen, and create + connect with a timeout.
///
/// Creating a socket is folded into [`listen`](Family::listen) and
/// [`connect`](Family::connect), so that a retried connect always uses a
/// fresh socket. Families: `UnixFamily`, `VsockFamily` (Linux),
/// `HybridFamily` and `HyperkitFamily`; with the `testing` feature,
/// `testing::MemFamily` and the wrapper `testing::FaultFamily`.
pub trait Family: Clone + Send + Sync + 'static {
    /// The printable address type.
    type Addr: Clone + fmt::Debug + fmt::Display + Send + Sync + 'static;
    /// Connected sockets.
    type Socket: Socket<Addr = Self::Addr>;
    /// Listening sockets.
    type Listener: FamilyListener<Addr = Self::Addr, Socket = Self::Socket>;

    /// Creates a socket, binds it to `addr` and listens with `backlog`.
    fn listen(&self, addr: &Self::Addr, backlog: u32) -> io::Result<Self::Listener>;

    /// Creates a socket and connects it to `addr`; `Err(TimedOut)` once
    /// `timeout` passed (the family's own default when `None`).
    fn connect(
        &self,
        addr: &Self::Addr,
        timeout: Option<Duration>,
    ) -> impl Future<Output = io::Result<Self::Socket>> + Send + 'static;
}

/// Runs `op`, retrying while it fails with `Interrupted`.
pub(crate) fn retry_eintr<T>(mut op: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match op() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => return r,
        }
    }
}

/// Awaits `fut` for at most `timeout` (none: forever), mapping expiry to `TimedOut`.
pub(crate) async fn with_timeout<T>(
    timeout: Option<Duration>,
    what: &str,
    fut: impl Future<Output = io::Result<T>>,
) -> io::Result<T> {
    match timeout {
        None => fut.await,
        Some(t) => match tokio::time::timeout(t, fut).await {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, format!("{what} timed out after {t:?}"))),
        },
    }
}

//! Plain Unix stream sockets as a family, and the socket type the hybrid and
//! hyperkit families share.

use std::fmt;
use std::io::{self, IoSlice};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::{UnixListener as TokioListener, UnixStream};

use crate::family::{Family, FamilyListener, Socket, retry_eintr};

/// The address of a Unix socket: a path, or unnamed (a client's end).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UnixAddr(Option<PathBuf>);

impl UnixAddr {
    /// The address of `path`.
    pub fn new(path: impl Into<PathBuf>) -> UnixAddr {
        UnixAddr(Some(path.into()))
    }

    /// An unnamed address (an unbound client socket).
    pub fn unnamed() -> UnixAddr {
        UnixAddr(None)
    }

    /// The path, unless unnamed.
    pub fn path(&self) -> Option<&Path> {
        self.0.as_deref()
    }

    fn of(addr: &tokio::net::unix::SocketAddr) -> UnixAddr {
        UnixAddr(addr.as_pathname().map(Path::to_path_buf))
    }
}

impl fmt::Display for UnixAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(p) => write!(f, "unix://{}", p.display()),
            None => f.write_str("unix:(unnamed)"),
        }
    }
}

/// A connected Unix stream socket; `A` is the address type it reports
/// (plain [`UnixAddr`], or the hybrid and hyperkit addresses).
#[derive(Debug)]
pub struct UnixSocket<A = UnixAddr> {
    stream: Option<UnixStream>,
    local: A,
    peer: A,
}

impl UnixSocket<UnixAddr> {
    /// Wraps a connected tokio stream.
    pub fn from_tokio(stream: UnixStream) -> io::Result<UnixSocket> {
        let local = UnixAddr::of(&stream.local_addr()?);
        let peer = UnixAddr::of(&stream.peer_addr()?);
        Ok(UnixSocket { stream: Some(stream), local, peer })
    }
}

impl<A> UnixSocket<A> {
    pub(crate) fn with_addrs(stream: UnixStream, local: A, peer: A) -> UnixSocket<A> {
        UnixSocket { stream: Some(stream), local, peer }
    }

    fn stream(&mut self) -> io::Result<&mut UnixStream> {
        self.stream.as_mut().ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "socket closed"))
    }

    fn shutdown(&mut self, how: std::net::Shutdown) -> io::Result<()> {
        let stream = self.stream()?;
        match socket2::SockRef::from(&*stream).shutdown(how) {
            // The peer is gone already: nothing left to shut down.
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
            r => r,
        }
    }
}

impl<A> AsFd for UnixSocket<A> {
    /// # Panics
    ///
    /// After [`Socket::close`]: the descriptor is gone.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.stream.as_ref().expect("as_fd on a closed socket").as_fd()
    }
}

impl<A> Socket for UnixSocket<A>
where
    A: Clone + fmt::Debug + fmt::Display + Send + Sync + 'static,
{
    type Addr = A;

    fn poll_read_buf(&mut self, cx: &mut Context<'_>, buf: &mut BytesMut) -> Poll<io::Result<usize>> {
        let stream = self.stream()?;
        loop {
            match tokio_util::io::poll_read_buf(Pin::new(&mut *stream), cx, buf) {
                Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => return r,
            }
        }
    }

    fn reads_into(&self) -> bool {
        true
    }

    fn poll_read_into(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let stream = self.stream()?;
        loop {
            match Pin::new(&mut *stream).poll_read(cx, buf) {
                Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => return r,
            }
        }
    }

    #[cfg(target_os = "linux")]
    fn reads_scatter(&self) -> bool {
        true
    }

    #[cfg(target_os = "linux")]
    fn poll_read_scatter(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
        segs: &[usize],
        heads: &mut [[u8; 4]],
    ) -> Poll<io::Result<usize>> {
        let stream = self.stream()?;
        let asked = segs.iter().sum::<usize>() + 4 * heads.len();
        loop {
            std::task::ready!(stream.poll_read_ready(cx))?;
            let fd = stream.as_fd();
            // A short read drained the socket: as tokio's own reads do, the
            // readiness is cleared (reported to `try_io` as WouldBlock), so
            // the next read waits for data instead of asking the kernel in vain.
            let mut short = None;
            let read = stream.try_io(tokio::io::Interest::READABLE, || {
                let n = crate::sys::recv_scatter(fd, buf, segs, heads)?;
                if n > 0 && n < asked {
                    short = Some(n);
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                Ok(n)
            });
            match (read, short) {
                (_, Some(n)) => return Poll::Ready(Ok(n)),
                // The readiness was stale and is cleared: wait again.
                (Err(e), None) if e.kind() == io::ErrorKind::WouldBlock => continue,
                (r, None) => return Poll::Ready(r),
            }
        }
    }

    /// As tokio's own `poll_write` (which its vectored write is not): a
    /// short write filled the socket, so the readiness is cleared and the
    /// next write waits for room instead of asking the kernel in vain.
    fn poll_writev(&mut self, cx: &mut Context<'_>, bufs: &[IoSlice<'_>]) -> Poll<io::Result<usize>> {
        let stream = &*self.stream()?;
        let asked = bufs.iter().map(|b| b.len()).sum::<usize>();
        loop {
            std::task::ready!(stream.poll_write_ready(cx))?;
            let mut short = None;
            let wrote = stream.try_io(tokio::io::Interest::WRITABLE, || {
                let n = retry_eintr(|| socket2::SockRef::from(stream).send_vectored(bufs))?;
                if n > 0 && n < asked {
                    // Reported to `try_io` as WouldBlock, which clears the readiness.
                    short = Some(n);
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                Ok(n)
            });
            match (wrote, short) {
                (_, Some(n)) => return Poll::Ready(Ok(n)),
                // The readiness was stale and is cleared: wait again.
                (Err(e), None) if e.kind() == io::ErrorKind::WouldBlock => continue,
                (r, None) => return Poll::Ready(r),
            }
        }
    }

    fn shutdown_read(&mut self) -> io::Result<()> {
        self.shutdown(std::net::Shutdown::Read)
    }

    fn shutdown_write(&mut self) -> io::Result<()> {
        self.shutdown(std::net::Shutdown::Write)
    }

    fn close(&mut self) -> io::Result<()> {
        self.stream = None;
        Ok(())
    }

    fn local_addr(&self) -> io::Result<A> {
        self.stream.as_ref().map(|_| self.local.clone()).ok_or_else(|| io::ErrorKind::NotConnected.into())
    }

    fn peer_addr(&self) -> io::Result<A> {
        self.stream.as_ref().map(|_| self.peer.clone()).ok_or_else(|| io::ErrorKind::NotConnected.into())
    }
}

/// Binds and listens on `path` with `backlog` (CLOEXEC, non-blocking).
pub(crate) fn listen_path(path: &Path, backlog: u32) -> io::Result<TokioListener> {
    let sock = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None)?;
    sock.bind(&socket2::SockAddr::unix(path)?)?;
    sock.listen(backlog.min(i32::MAX as u32) as i32)?;
    sock.set_nonblocking(true)?;
    TokioListener::from_std(std::os::unix::net::UnixListener::from(std::os::fd::OwnedFd::from(sock)))
}

/// Connects a Unix stream socket to `path` within the call. Linux decides
/// an `AF_UNIX` connect inside the system call (connected, refused, or
/// `EAGAIN` when the listener's backlog is full; never in progress), so
/// unlike `tokio::net::UnixStream::connect` this waits for no writability
/// (a trip through the runtime's event loop before the caller goes on) and
/// asks no `SO_ERROR`: a relay's hybrid vsock connect then writes its
/// `CONNECT` in the same poll. The errors are tokio's (a full backlog is
/// `WouldBlock` there too).
pub(crate) fn connect_now(path: &Path) -> io::Result<UnixStream> {
    let sock = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM.nonblocking(), None)?;
    sock.connect(&socket2::SockAddr::unix(path)?)?;
    UnixStream::from_std(std::os::unix::net::UnixStream::from(std::os::fd::OwnedFd::from(sock)))
}

/// Plain Unix stream sockets.
///
/// ```
/// use conflux_hvsock::{Family, FamilyListener, UnixAddr, UnixFamily};
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let dir = tempfile::tempdir()?;
/// let addr = UnixAddr::new(dir.path().join("s"));
/// let listener = UnixFamily.listen(&addr, 16)?;
/// let _client = UnixFamily.connect(&addr, None).await?;
/// let (_server, _peer) = listener.accept().await?;
/// # Ok::<(), std::io::Error>(())
/// # }).unwrap();
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct UnixFamily;

/// A listening Unix socket.
#[derive(Debug)]
pub struct UnixListener {
    inner: TokioListener,
    local: UnixAddr,
}

impl FamilyListener for UnixListener {
    type Addr = UnixAddr;
    type Socket = UnixSocket;

    async fn accept(&self) -> io::Result<(UnixSocket, UnixAddr)> {
        let (stream, peer) = self.inner.accept().await?;
        let peer = UnixAddr::of(&peer);
        Ok((UnixSocket { stream: Some(stream), local: self.local.clone(), peer: peer.clone() }, peer))
    }

    fn local_addr(&self) -> io::Result<UnixAddr> {
        Ok(self.local.clone())
    }
}

impl Family for UnixFamily {
    type Addr = UnixAddr;
    type Socket = UnixSocket;
    type Listener = UnixListener;

    fn listen(&self, addr: &UnixAddr, backlog: u32) -> io::Result<UnixListener> {
        let path = addr.path().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "cannot listen unnamed"))?;
        Ok(UnixListener { inner: listen_path(path, backlog)?, local: addr.clone() })
    }

    fn connect(
        &self,
        addr: &UnixAddr,
        // A Unix connect is decided within the call (`connect_now`): there
        // is no wait for a timeout to bound.
        _timeout: Option<Duration>,
    ) -> impl Future<Output = io::Result<UnixSocket>> + Send + 'static {
        let addr = addr.clone();
        async move {
            let path = addr.path().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "unnamed address"))?;
            UnixSocket::from_tokio(connect_now(path)?)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    use conflux_flow::FlowExt;

    use super::*;

    /// Polls `fut` once, with a waker that does nothing.
    fn poll_once<F: Future>(fut: F) -> Poll<F::Output> {
        pin!(fut).poll(&mut Context::from_waker(Waker::noop()))
    }

    #[tokio::test]
    async fn a_connect_is_decided_in_its_first_poll() {
        let dir = tempfile::tempdir().unwrap();
        let addr = UnixAddr::new(dir.path().join("s"));
        let listener = UnixFamily.listen(&addr, 16).unwrap();
        // tokio's own connect is Pending here: it waits for the event loop
        // to report the connected socket writable.
        let Poll::Ready(connected) = poll_once(UnixFamily.connect(&addr, None)) else {
            panic!("a Unix connect waited for the event loop");
        };
        let mut client = crate::RawFlow::new(connected.unwrap());
        let (server, _) = listener.accept().await.unwrap();
        let mut server = crate::RawFlow::new(server);
        client.write(bytes::Bytes::from_static(b"hello")).await.unwrap();
        assert_eq!(server.read().await.unwrap().as_deref(), Some(&b"hello"[..]));
        // No listener: refused at once, with the kernel's error.
        let gone = UnixAddr::new(dir.path().join("nobody"));
        match poll_once(UnixFamily.connect(&gone, None)) {
            Poll::Ready(Err(e)) => assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}"),
            other => panic!("connecting to no socket: {:?}", other.map(|r| r.map(drop))),
        }
        drop(listener);
        match poll_once(UnixFamily.connect(&addr, None)) {
            Poll::Ready(Err(e)) => assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused, "{e}"),
            other => panic!("connecting to a closed listener: {:?}", other.map(|r| r.map(drop))),
        }
    }
}

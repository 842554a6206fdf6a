//! AF_VSOCK on Linux as a socket family.

use std::io::{self, IoSlice};
use std::os::fd::{AsFd, BorrowedFd};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::BytesMut;
use socket2::{Domain, SockAddr, Type};
use tokio::io::unix::AsyncFd;

use crate::addr::VsockAddr;
use crate::family::{Family, FamilyListener, Socket, retry_eintr, with_timeout};
use crate::sys;

/// The kernel's default vsock connect timeout.
pub const VSOCK_DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// This machine's vsock CID, from `/dev/vsock` (never assume a value).
pub fn local_cid() -> io::Result<u32> {
    sys::local_cid()
}

fn to_vsock(addr: &SockAddr) -> io::Result<VsockAddr> {
    addr.as_vsock_address()
        .map(|(cid, port)| VsockAddr::new(cid, port))
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "not an AF_VSOCK address"))
}

/// A new non-blocking, close-on-exec AF_VSOCK stream socket.
fn new_socket() -> io::Result<socket2::Socket> {
    // socket2 sets SOCK_CLOEXEC atomically on Linux.
    let sock = socket2::Socket::new(Domain::VSOCK, Type::STREAM, None)?;
    sock.set_nonblocking(true)?;
    Ok(sock)
}

/// A connected AF_VSOCK socket.
#[derive(Debug)]
pub struct VsockSocket {
    fd: Option<AsyncFd<socket2::Socket>>,
}

impl VsockSocket {
    fn from_socket(sock: socket2::Socket) -> io::Result<VsockSocket> {
        Ok(VsockSocket { fd: Some(sys::register(sock)?) })
    }

    fn fd(&self) -> io::Result<&AsyncFd<socket2::Socket>> {
        self.fd.as_ref().ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "socket closed"))
    }

    fn shutdown(&self, how: std::net::Shutdown) -> io::Result<()> {
        match self.fd()?.get_ref().shutdown(how) {
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
            r => r,
        }
    }
}

impl AsFd for VsockSocket {
    /// # Panics
    ///
    /// After [`Socket::close`]: the descriptor is gone.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_ref().expect("as_fd on a closed socket").get_ref().as_fd()
    }
}

impl Socket for VsockSocket {
    type Addr = VsockAddr;

    fn poll_read_buf(&mut self, cx: &mut Context<'_>, buf: &mut BytesMut) -> Poll<io::Result<usize>> {
        let fd = self.fd()?;
        loop {
            let mut guard = ready!(fd.poll_read_ready(cx))?;
            match guard.try_io(|inner| sys::recv_buf(inner.get_ref(), buf)) {
                Ok(r) => return Poll::Ready(r),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_writev(&mut self, cx: &mut Context<'_>, bufs: &[IoSlice<'_>]) -> Poll<io::Result<usize>> {
        let fd = self.fd()?;
        loop {
            let mut guard = ready!(fd.poll_write_ready(cx))?;
            match guard.try_io(|inner| retry_eintr(|| inner.get_ref().send_vectored(bufs))) {
                Ok(r) => return Poll::Ready(r),
                Err(_would_block) => continue,
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
        self.fd = None;
        Ok(())
    }

    fn local_addr(&self) -> io::Result<VsockAddr> {
        to_vsock(&self.fd()?.get_ref().local_addr()?)
    }

    fn peer_addr(&self) -> io::Result<VsockAddr> {
        to_vsock(&self.fd()?.get_ref().peer_addr()?)
    }
}

/// A listening AF_VSOCK socket.
#[derive(Debug)]
pub struct VsockListener {
    fd: AsyncFd<socket2::Socket>,
}

impl VsockListener {
    /// Creates, binds and listens (the steps of [`Family::listen`], one by one).
    pub fn bind(addr: &VsockAddr, backlog: u32) -> io::Result<VsockListener> {
        let sock = new_socket()?;
        sock.bind(&SockAddr::vsock(addr.cid, addr.port))?;
        sock.listen(backlog.min(i32::MAX as u32) as i32)?;
        Ok(VsockListener { fd: sys::register(sock)? })
    }
}

impl AsFd for VsockListener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.get_ref().as_fd()
    }
}

impl FamilyListener for VsockListener {
    type Addr = VsockAddr;
    type Socket = VsockSocket;

    async fn accept(&self) -> io::Result<(VsockSocket, VsockAddr)> {
        loop {
            let mut guard = self.fd.readable().await?;
            // socket2's accept uses accept4(SOCK_CLOEXEC).
            match guard.try_io(|inner| retry_eintr(|| inner.get_ref().accept())) {
                Ok(Ok((sock, peer))) => {
                    sock.set_nonblocking(true)?;
                    return Ok((VsockSocket::from_socket(sock)?, to_vsock(&peer)?));
                }
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }

    fn local_addr(&self) -> io::Result<VsockAddr> {
        to_vsock(&self.fd.get_ref().local_addr()?)
    }
}

/// AF_VSOCK (Linux).
///
/// Every socket is close-on-exec and non-blocking. A connect is non-blocking,
/// waits for writability and then checks `SO_ERROR` (a connect that "completes"
/// with a pending error is a failure, not a socket); the kernel's connect
/// timeout option is set to the same bound, which defaults to
/// [`VSOCK_DEFAULT_CONNECT_TIMEOUT`]. A retry needs a fresh socket, which
/// [`connect`](Family::connect) always creates.
#[derive(Debug, Clone, Copy, Default)]
pub struct VsockFamily;

impl Family for VsockFamily {
    type Addr = VsockAddr;
    type Socket = VsockSocket;
    type Listener = VsockListener;

    fn listen(&self, addr: &VsockAddr, backlog: u32) -> io::Result<VsockListener> {
        VsockListener::bind(addr, backlog)
    }

    fn connect(
        &self,
        addr: &VsockAddr,
        timeout: Option<Duration>,
    ) -> impl Future<Output = io::Result<VsockSocket>> + Send + 'static {
        let addr = *addr;
        let timeout = timeout.unwrap_or(VSOCK_DEFAULT_CONNECT_TIMEOUT);
        async move {
            let sock = new_socket()?;
            sys::set_connect_timeout(&sock, timeout)?;
            match retry_eintr(|| sock.connect(&SockAddr::vsock(addr.cid, addr.port))) {
                Ok(()) => return VsockSocket::from_socket(sock),
                Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) || e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            let fd = sys::register(sock)?;
            with_timeout(Some(timeout), &format!("vsock connect to {addr}"), async {
                let _ = fd.writable().await?;
                Ok(())
            })
            .await?;
            if let Some(e) = fd.get_ref().take_error()? {
                return Err(e);
            }
            // Writable without an error can still mean "not connected" on some kernels.
            fd.get_ref().peer_addr()?;
            Ok(VsockSocket { fd: Some(fd) })
        }
    }
}

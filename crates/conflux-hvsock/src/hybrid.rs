//! Hybrid vsock over Unix sockets: Firecracker / Cloud Hypervisor
//! (`CONNECT <port>\n` / `OK <port>\n`) and hyperkit-style paths.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener as TokioListener, UnixStream};
use tokio::sync::mpsc;

use crate::addr::{HybridAddr, HyperkitAddr};
use crate::family::{Family, FamilyListener, with_timeout};
use crate::unix::{UnixSocket, listen_path};

/// The longest handshake line accepted (`OK 4294967295\n` is 14 bytes).
const MAX_LINE: usize = 64;

/// The default bound on the whole connect + handshake.
pub const HYBRID_DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Reads one `\n`-terminated line without consuming anything after it.
///
/// On Linux it peeks (`MSG_PEEK`) and then reads exactly the line: two system
/// calls instead of one per byte. Bytes before a `\n` always belong to the line,
/// so a peek without one is consumed whole and the loop goes on.
async fn read_line(stream: &mut UnixStream) -> io::Result<String> {
    let mut line = Vec::with_capacity(16);
    loop {
        let want = peek_line(stream, MAX_LINE + 1 - line.len()).await?;
        let (take, done) = match want {
            Peeked::Bytes(n, done) => (n, done),
            Peeked::OneByte => (1, false),
        };
        let start = line.len();
        line.resize(start + take, 0);
        match stream.read_exact(&mut line[start..]).await {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return Err(io::Error::new(io::ErrorKind::ConnectionRefused, "the VMM closed the handshake"));
            }
            Err(e) => return Err(e),
        }
        if done || line.last() == Some(&b'\n') {
            line.pop();
            return String::from_utf8(line)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "handshake not UTF-8"));
        }
        if line.len() > MAX_LINE {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "handshake line too long"));
        }
    }
}

/// How much of the line the socket holds: `n` bytes to read, and whether they end it.
enum Peeked {
    Bytes(usize, bool),
    /// No peeking here: read one byte.
    OneByte,
}

#[cfg(target_os = "linux")]
async fn peek_line(stream: &UnixStream, max: usize) -> io::Result<Peeked> {
    let mut buf = [0u8; MAX_LINE + 1];
    let max = max.clamp(1, buf.len());
    loop {
        stream.readable().await?;
        let fd = std::os::fd::AsFd::as_fd(stream);
        match stream.try_io(tokio::io::Interest::READABLE, || crate::sys::peek(fd, &mut buf[..max])) {
            // Eof: let the read report it.
            Ok(0) => return Ok(Peeked::OneByte),
            Ok(n) => {
                return Ok(match buf[..n].iter().position(|&b| b == b'\n') {
                    Some(i) => Peeked::Bytes(i + 1, true),
                    None => Peeked::Bytes(n, false),
                });
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}

#[cfg(not(target_os = "linux"))]
async fn peek_line(_stream: &UnixStream, _max: usize) -> io::Result<Peeked> {
    Ok(Peeked::OneByte)
}

/// Parses `OK <port>`.
fn parse_ok(line: &str) -> io::Result<u32> {
    line.strip_prefix("OK ").and_then(|p| p.trim().parse().ok()).ok_or_else(|| {
        io::Error::new(io::ErrorKind::ConnectionRefused, format!("VMM answered {line:?}, not OK <port>"))
    })
}

/// Parses `CONNECT <port>`.
fn parse_connect(line: &str) -> io::Result<u32> {
    line.strip_prefix("CONNECT ")
        .and_then(|p| p.trim().parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("expected CONNECT <port>, got {line:?}")))
}

/// Hybrid vsock, host side: connect through the VMM's socket, listen on `<path>_<port>`.
#[derive(Debug, Clone, Copy, Default)]
pub struct HybridFamily;

/// A listener on `<path>_<port>`.
#[derive(Debug)]
pub struct HybridListener {
    inner: TokioListener,
    addr: HybridAddr,
}

impl FamilyListener for HybridListener {
    type Addr = HybridAddr;
    type Socket = UnixSocket<HybridAddr>;

    async fn accept(&self) -> io::Result<(UnixSocket<HybridAddr>, HybridAddr)> {
        let (stream, _) = self.inner.accept().await?;
        // The VMM does not tell which guest port dialled; report the VMM's socket.
        let peer = HybridAddr::new(self.addr.path.clone(), 0);
        Ok((UnixSocket::with_addrs(stream, self.addr.clone(), peer.clone()), peer))
    }

    fn local_addr(&self) -> io::Result<HybridAddr> {
        Ok(self.addr.clone())
    }
}

impl Family for HybridFamily {
    type Addr = HybridAddr;
    type Socket = UnixSocket<HybridAddr>;
    type Listener = HybridListener;

    fn listen(&self, addr: &HybridAddr, backlog: u32) -> io::Result<HybridListener> {
        Ok(HybridListener { inner: listen_path(&addr.listen_path(), backlog)?, addr: addr.clone() })
    }

    fn connect(
        &self,
        addr: &HybridAddr,
        timeout: Option<Duration>,
    ) -> impl Future<Output = io::Result<UnixSocket<HybridAddr>>> + Send + 'static {
        let addr = addr.clone();
        let timeout = timeout.unwrap_or(HYBRID_DEFAULT_CONNECT_TIMEOUT);
        async move {
            with_timeout(Some(timeout), "hybrid vsock connect", async {
                let mut stream = UnixStream::connect(&addr.path).await?;
                stream.write_all(format!("CONNECT {}\n", addr.port).as_bytes()).await?;
                let host_port = parse_ok(&read_line(&mut stream).await?)?;
                let local = HybridAddr::new(addr.path.clone(), host_port);
                Ok(UnixSocket::with_addrs(stream, local, addr.clone()))
            })
            .await
        }
    }
}

/// Hyperkit-style hybrid vsock (macOS Docker Desktop's old layout), on plain Unix sockets.
///
/// Connecting dials `<dir>/connect` and writes `%08x.%08x\n` (CID, port); hyperkit
/// sends no reply. Listening binds `<dir>/00000002.%08x`.
#[derive(Debug, Clone, Copy, Default)]
pub struct HyperkitFamily;

/// A listener on `<dir>/00000002.<port>`.
#[derive(Debug)]
pub struct HyperkitListener {
    inner: TokioListener,
    addr: HyperkitAddr,
}

impl FamilyListener for HyperkitListener {
    type Addr = HyperkitAddr;
    type Socket = UnixSocket<HyperkitAddr>;

    async fn accept(&self) -> io::Result<(UnixSocket<HyperkitAddr>, HyperkitAddr)> {
        let (stream, _) = self.inner.accept().await?;
        let peer = HyperkitAddr { dir: self.addr.dir.clone(), cid: 3, port: 0 };
        Ok((UnixSocket::with_addrs(stream, self.addr.clone(), peer.clone()), peer))
    }

    fn local_addr(&self) -> io::Result<HyperkitAddr> {
        Ok(self.addr.clone())
    }
}

impl Family for HyperkitFamily {
    type Addr = HyperkitAddr;
    type Socket = UnixSocket<HyperkitAddr>;
    type Listener = HyperkitListener;

    fn listen(&self, addr: &HyperkitAddr, backlog: u32) -> io::Result<HyperkitListener> {
        Ok(HyperkitListener { inner: listen_path(&addr.listen_path(), backlog)?, addr: addr.clone() })
    }

    fn connect(
        &self,
        addr: &HyperkitAddr,
        timeout: Option<Duration>,
    ) -> impl Future<Output = io::Result<UnixSocket<HyperkitAddr>>> + Send + 'static {
        let addr = addr.clone();
        async move {
            with_timeout(timeout, "hyperkit connect", async {
                let mut stream = UnixStream::connect(addr.connect_path()).await?;
                stream.write_all(format!("{:08x}.{:08x}\n", addr.cid, addr.port).as_bytes()).await?;
                let local = HyperkitAddr { dir: addr.dir.clone(), cid: 2, port: 0 };
                Ok(UnixSocket::with_addrs(stream, local, addr.clone()))
            })
            .await
        }
    }
}

type GuestQueues = Arc<Mutex<HashMap<u32, mpsc::Sender<UnixStream>>>>;

/// A stand-in for a VMM's hybrid vsock socket, for tests and benchmarks.
///
/// It listens on a Unix path, answers `CONNECT <port>\n` with `OK <host port>\n`
/// when an in-process [`GuestListener`] listens on that port, and hands the
/// accepted socket itself to that listener (no relay hop); otherwise it closes
/// the connection, as Firecracker does. Dropping it stops it.
#[derive(Debug)]
pub struct FakeVmm {
    path: PathBuf,
    guests: GuestQueues,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeVmm {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeVmm {
    /// Starts serving on `path` (on the current tokio runtime).
    pub fn start(path: impl AsRef<Path>) -> io::Result<FakeVmm> {
        let path = path.as_ref().to_path_buf();
        let listener = listen_path(&path, 1024)?;
        let guests: GuestQueues = Arc::default();
        let table = guests.clone();
        let task = tokio::spawn(async move {
            let mut host_port: u32 = 1 << 30;
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                host_port = host_port.wrapping_add(1);
                let table = table.clone();
                tokio::spawn(async move {
                    let r = tokio::time::timeout(HYBRID_DEFAULT_CONNECT_TIMEOUT, serve(stream, host_port, table)).await;
                    if let Ok(Err(e)) = r {
                        tracing::debug!(error = %e, "fake VMM handshake failed");
                    }
                });
            }
        });
        Ok(FakeVmm { path, guests, task })
    }

    /// The VMM's socket.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The address of guest port `port` through this VMM.
    pub fn addr(&self, port: u32) -> HybridAddr {
        HybridAddr::new(self.path.clone(), port)
    }

    /// Starts listening "inside the guest" on `port`.
    pub fn guest_listener(&self, port: u32, backlog: u32) -> GuestListener {
        let (tx, rx) = mpsc::channel(backlog.clamp(1, 4096) as usize);
        self.guests.lock().unwrap_or_else(|p| p.into_inner()).insert(port, tx);
        GuestListener { rx: tokio::sync::Mutex::new(rx), addr: self.addr(port) }
    }
}

async fn serve(mut stream: UnixStream, host_port: u32, guests: GuestQueues) -> io::Result<()> {
    let port = parse_connect(&read_line(&mut stream).await?)?;
    let Some(tx) = guests.lock().unwrap_or_else(|p| p.into_inner()).get(&port).cloned() else {
        return Err(io::Error::new(io::ErrorKind::ConnectionRefused, format!("no guest listener on port {port}")));
    };
    stream.write_all(format!("OK {host_port}\n").as_bytes()).await?;
    tx.send(stream).await.map_err(|_| io::Error::new(io::ErrorKind::ConnectionRefused, "guest listener gone"))
}

/// The in-guest end of a [`FakeVmm`] port: yields the sockets hosts connected.
#[derive(Debug)]
pub struct GuestListener {
    rx: tokio::sync::Mutex<mpsc::Receiver<UnixStream>>,
    addr: HybridAddr,
}

impl FamilyListener for GuestListener {
    type Addr = HybridAddr;
    type Socket = UnixSocket<HybridAddr>;

    async fn accept(&self) -> io::Result<(UnixSocket<HybridAddr>, HybridAddr)> {
        let stream = self.rx.lock().await.recv().await.ok_or_else(|| io::Error::other("fake VMM stopped"))?;
        let peer = HybridAddr::new(self.addr.path.clone(), 0);
        Ok((UnixSocket::with_addrs(stream, self.addr.clone(), peer.clone()), peer))
    }

    fn local_addr(&self) -> io::Result<HybridAddr> {
        Ok(self.addr.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_lines() {
        assert_eq!(parse_ok("OK 1073741824").unwrap(), 1 << 30);
        assert!(parse_ok("NO").is_err());
        assert!(parse_ok("OK x").is_err());
        assert_eq!(parse_connect("CONNECT 52").unwrap(), 52);
        assert!(parse_connect("CONNECT").is_err());
    }

    #[tokio::test]
    async fn read_line_never_consumes_past_the_newline() {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        a.write_all(b"OK 10").await.unwrap();
        let reader = tokio::spawn(async move {
            let line = read_line(&mut b).await.unwrap();
            let mut rest = [0u8; 4];
            b.read_exact(&mut rest).await.unwrap();
            (line, rest)
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        a.write_all(b"73741824\nDATA").await.unwrap();
        let (line, rest) = reader.await.unwrap();
        assert_eq!((line.as_str(), &rest), ("OK 1073741824", b"DATA"));

        let (mut a, mut b) = UnixStream::pair().unwrap();
        a.write_all(&[b'x'; 200]).await.unwrap();
        assert_eq!(read_line(&mut b).await.unwrap_err().kind(), io::ErrorKind::InvalidData);
        let (a, mut b) = UnixStream::pair().unwrap();
        drop(a);
        assert_eq!(read_line(&mut b).await.unwrap_err().kind(), io::ErrorKind::ConnectionRefused);
    }

    #[test]
    fn paths() {
        assert_eq!(HybridAddr::new("/srv/v.sock", 52).listen_path(), Path::new("/srv/v.sock_52"));
        let hk = HyperkitAddr::new("/var/run/hk", 80);
        assert_eq!(hk.listen_path(), Path::new("/var/run/hk/00000002.00000050"));
        assert_eq!(hk.connect_path(), Path::new("/var/run/hk/connect"));
    }
}

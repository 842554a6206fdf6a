//! Hybrid vsock over Unix sockets: Firecracker / Cloud Hypervisor
//! (`CONNECT <port>\n` / `OK <port>\n`) and hyperkit-style paths.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener as TokioListener, UnixStream};

use crate::addr::{HybridAddr, HyperkitAddr};
use crate::family::{Family, FamilyListener, with_timeout};
use crate::unix::{UnixSocket, connect_now, listen_path};

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
                let mut stream = connect_now(&addr.path)?;
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
                let mut stream = connect_now(&addr.connect_path())?;
                stream.write_all(format!("{:08x}.{:08x}\n", addr.cid, addr.port).as_bytes()).await?;
                let local = HyperkitAddr { dir: addr.dir.clone(), cid: 2, port: 0 };
                Ok(UnixSocket::with_addrs(stream, local, addr.clone()))
            })
            .await
        }
    }
}

/// The fake VMM (tests and benchmarks only).
#[cfg(any(test, feature = "testing"))]
pub(crate) mod fake;

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn handshake_lines() {
        assert_eq!(parse_ok("OK 1073741824").unwrap(), 1 << 30);
        assert!(parse_ok("NO").is_err());
        assert!(parse_ok("OK x").is_err());
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

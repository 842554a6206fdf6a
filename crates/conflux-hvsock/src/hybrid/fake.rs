//! A stand-in for a VMM's hybrid vsock socket (the `testing` feature).

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;
use tokio::sync::mpsc;

use super::{HYBRID_DEFAULT_CONNECT_TIMEOUT, read_line};
use crate::addr::HybridAddr;
use crate::family::FamilyListener;
use crate::unix::{UnixSocket, listen_path};

/// Parses `CONNECT <port>`.
fn parse_connect(line: &str) -> io::Result<u32> {
    line.strip_prefix("CONNECT ")
        .and_then(|p| p.trim().parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("expected CONNECT <port>, got {line:?}")))
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
    fn connect_line() {
        assert_eq!(parse_connect("CONNECT 52").unwrap(), 52);
        assert!(parse_connect("CONNECT").is_err());
    }
}

//! A deterministic in-memory socket family.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io::{self, IoSlice};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use tokio::sync::mpsc;

use crate::family::{Family, FamilyListener, Socket, with_timeout};

/// The default bytes buffered per direction of an in-memory connection.
pub const MEM_DEFAULT_CAPACITY: usize = 256 * 1024;

/// The address of an in-memory socket: a name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MemAddr(pub String);

impl fmt::Display for MemAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "mem:{}", self.0)
    }
}

impl From<&str> for MemAddr {
    fn from(s: &str) -> MemAddr {
        MemAddr(s.to_owned())
    }
}

/// Listener names and their accept queues.
type Table = Arc<Mutex<HashMap<String, mpsc::Sender<(MemSocket, MemAddr)>>>>;

/// An in-memory socket family: listeners are names in a private table, every
/// connection is a pair of bounded byte queues. Nothing depends on a clock or
/// a kernel, so it runs under tokio's paused clock. Clones share the table.
#[derive(Debug, Clone)]
pub struct MemFamily {
    table: Table,
    capacity: usize,
    next_client: Arc<AtomicU64>,
}

impl Default for MemFamily {
    fn default() -> Self {
        MemFamily::new()
    }
}

impl MemFamily {
    /// A family with its own empty table and [`MEM_DEFAULT_CAPACITY`] per direction.
    pub fn new() -> MemFamily {
        MemFamily::with_capacity(MEM_DEFAULT_CAPACITY)
    }

    /// A family whose connections buffer `capacity` bytes per direction (at least 1).
    pub fn with_capacity(capacity: usize) -> MemFamily {
        MemFamily { table: Arc::default(), capacity: capacity.max(1), next_client: Arc::default() }
    }

    /// A connected pair without a listener.
    pub fn pair(&self) -> (MemSocket, MemSocket) {
        let n = self.next_client.fetch_add(1, Ordering::Relaxed);
        pair(self.capacity, MemAddr(format!("pair-{n}-a")), MemAddr(format!("pair-{n}-b")))
    }
}

fn pair(capacity: usize, a: MemAddr, b: MemAddr) -> (MemSocket, MemSocket) {
    let ab = Arc::new(Mutex::new(Dir::new(capacity)));
    let ba = Arc::new(Mutex::new(Dir::new(capacity)));
    (
        MemSocket { tx: Some(ab.clone()), rx: Some(ba.clone()), local: a.clone(), peer: b.clone() },
        MemSocket { tx: Some(ba), rx: Some(ab), local: b, peer: a },
    )
}

/// One direction of a connection.
#[derive(Debug)]
struct Dir {
    data: VecDeque<u8>,
    capacity: usize,
    writer_done: bool,
    reset: bool,
    reader_gone: bool,
    read_waker: Option<Waker>,
    write_waker: Option<Waker>,
}

impl Dir {
    fn new(capacity: usize) -> Dir {
        Dir {
            data: VecDeque::new(),
            capacity,
            writer_done: false,
            reset: false,
            reader_gone: false,
            read_waker: None,
            write_waker: None,
        }
    }

    fn wake(&mut self) {
        if let Some(w) = self.read_waker.take() {
            w.wake();
        }
        if let Some(w) = self.write_waker.take() {
            w.wake();
        }
    }
}

fn lock(d: &Mutex<Dir>) -> MutexGuard<'_, Dir> {
    d.lock().unwrap_or_else(|p| p.into_inner())
}

/// A connected in-memory socket.
#[derive(Debug)]
pub struct MemSocket {
    tx: Option<Arc<Mutex<Dir>>>,
    rx: Option<Arc<Mutex<Dir>>>,
    local: MemAddr,
    peer: MemAddr,
}

fn not_connected() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "socket closed")
}

impl MemSocket {
    /// Bytes the peer wrote that this end has not read.
    pub fn unread(&self) -> usize {
        self.rx.as_ref().map_or(0, |rx| lock(rx).data.len())
    }

    fn release(&mut self, reset: bool) {
        if let Some(tx) = self.tx.take() {
            let mut d = lock(&tx);
            d.writer_done = true;
            d.reset |= reset;
            d.wake();
        }
        if let Some(rx) = self.rx.take() {
            let mut d = lock(&rx);
            d.reader_gone = true;
            d.reset |= reset;
            d.data.clear();
            d.wake();
        }
    }
}

impl Drop for MemSocket {
    fn drop(&mut self) {
        self.release(false);
    }
}

impl Socket for MemSocket {
    type Addr = MemAddr;

    fn poll_read_buf(&mut self, cx: &mut Context<'_>, buf: &mut BytesMut) -> Poll<io::Result<usize>> {
        let rx = self.rx.as_ref().ok_or_else(not_connected)?;
        let mut d = lock(rx);
        if d.reset {
            return Poll::Ready(Err(io::ErrorKind::ConnectionReset.into()));
        }
        if d.data.is_empty() {
            if d.writer_done || d.reader_gone {
                return Poll::Ready(Ok(0));
            }
            d.read_waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = d.data.len().min(buf.capacity() - buf.len()).max(1);
        let n = n.min(d.data.len());
        let (a, b) = d.data.as_slices();
        let from_a = n.min(a.len());
        buf.put_slice(&a[..from_a]);
        buf.put_slice(&b[..n - from_a]);
        d.data.drain(..n);
        if let Some(w) = d.write_waker.take() {
            w.wake();
        }
        Poll::Ready(Ok(n))
    }

    fn poll_writev(&mut self, cx: &mut Context<'_>, bufs: &[IoSlice<'_>]) -> Poll<io::Result<usize>> {
        let tx = self.tx.as_ref().ok_or_else(not_connected)?;
        let mut d = lock(tx);
        if d.reset {
            return Poll::Ready(Err(io::ErrorKind::ConnectionReset.into()));
        }
        if d.writer_done {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::BrokenPipe, "write side shut down")));
        }
        if d.reader_gone {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if total == 0 {
            return Poll::Ready(Ok(0));
        }
        let room = d.capacity.saturating_sub(d.data.len());
        if room == 0 {
            d.write_waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let mut left = room;
        for b in bufs {
            let n = b.len().min(left);
            d.data.extend(&b[..n]);
            left -= n;
            if left == 0 {
                break;
            }
        }
        if let Some(w) = d.read_waker.take() {
            w.wake();
        }
        Poll::Ready(Ok(room - left))
    }

    fn shutdown_read(&mut self) -> io::Result<()> {
        let rx = self.rx.as_ref().ok_or_else(not_connected)?;
        let mut d = lock(rx);
        d.reader_gone = true;
        d.data.clear();
        d.wake();
        Ok(())
    }

    fn shutdown_write(&mut self) -> io::Result<()> {
        let tx = self.tx.as_ref().ok_or_else(not_connected)?;
        let mut d = lock(tx);
        d.writer_done = true;
        d.wake();
        Ok(())
    }

    fn close(&mut self) -> io::Result<()> {
        self.release(false);
        Ok(())
    }

    fn abort(&mut self) -> io::Result<()> {
        self.release(true);
        Ok(())
    }

    fn local_addr(&self) -> io::Result<MemAddr> {
        Ok(self.local.clone())
    }

    fn peer_addr(&self) -> io::Result<MemAddr> {
        Ok(self.peer.clone())
    }
}

/// A listening in-memory socket; dropping it frees the name.
#[derive(Debug)]
pub struct MemListener {
    name: MemAddr,
    queue: tokio::sync::Mutex<mpsc::Receiver<(MemSocket, MemAddr)>>,
    table: Table,
}

impl Drop for MemListener {
    fn drop(&mut self) {
        self.table.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.name.0);
    }
}

impl FamilyListener for MemListener {
    type Addr = MemAddr;
    type Socket = MemSocket;

    async fn accept(&self) -> io::Result<(MemSocket, MemAddr)> {
        let mut q = self.queue.lock().await;
        q.recv().await.ok_or_else(|| io::Error::other("listener table dropped"))
    }

    fn local_addr(&self) -> io::Result<MemAddr> {
        Ok(self.name.clone())
    }
}

impl Family for MemFamily {
    type Addr = MemAddr;
    type Socket = MemSocket;
    type Listener = MemListener;

    fn listen(&self, addr: &MemAddr, backlog: u32) -> io::Result<MemListener> {
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        if table.contains_key(&addr.0) {
            return Err(io::Error::new(io::ErrorKind::AddrInUse, format!("{addr} is in use")));
        }
        let (tx, rx) = mpsc::channel(backlog.clamp(1, 4096) as usize);
        table.insert(addr.0.clone(), tx);
        Ok(MemListener { name: addr.clone(), queue: tokio::sync::Mutex::new(rx), table: self.table.clone() })
    }

    fn connect(
        &self,
        addr: &MemAddr,
        timeout: Option<Duration>,
    ) -> impl Future<Output = io::Result<MemSocket>> + Send + 'static {
        let sender = self.table.lock().unwrap_or_else(|p| p.into_inner()).get(&addr.0).cloned();
        let n = self.next_client.fetch_add(1, Ordering::Relaxed);
        let (capacity, addr) = (self.capacity, addr.clone());
        async move {
            let Some(sender) = sender else {
                return Err(io::Error::new(io::ErrorKind::ConnectionRefused, format!("nobody listens on {addr}")));
            };
            let client = MemAddr(format!("client-{n}"));
            let (ours, theirs) = pair(capacity, client.clone(), addr.clone());
            with_timeout(timeout, "in-memory connect", async {
                sender.send((theirs, client)).await.map_err(|_| io::ErrorKind::ConnectionRefused.into())
            })
            .await?;
            Ok(ours)
        }
    }
}

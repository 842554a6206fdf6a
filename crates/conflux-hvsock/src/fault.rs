//! A fault-injecting wrapper over any socket family.

use std::collections::HashMap;
use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, BytesMut};

use crate::family::{Family, FamilyListener, Socket, with_timeout};

/// Which faults a [`FaultFamily`] injects. All off by default.
///
/// ```
/// use conflux_hvsock::testing::Faults;
/// let f = Faults::new().chunk(7).eof_after(100).discard_unread(true).seed(42);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Faults {
    chunk: Option<usize>,
    eof_after: Option<u64>,
    reset_after: Option<u64>,
    discard_unread: bool,
    seed: u64,
}

impl Faults {
    /// No faults.
    pub fn new() -> Faults {
        Faults::default()
    }

    /// Every read and write moves 1..=`k` bytes (pseudo-random, seeded).
    pub fn chunk(mut self, k: usize) -> Faults {
        self.chunk = Some(k.max(1));
        self
    }

    /// Reads report Eof after `n` bytes (of each socket's input).
    pub fn eof_after(mut self, n: u64) -> Faults {
        self.eof_after = Some(n);
        self
    }

    /// Reads fail with a reset after `n` bytes.
    pub fn reset_after(mut self, n: u64) -> Faults {
        self.reset_after = Some(n);
        self
    }

    /// The Hyper-V bug: when a socket is shut down for writing or closed, the
    /// bytes it sent that the peer has not read yet are lost.
    pub fn discard_unread(mut self, yes: bool) -> Faults {
        self.discard_unread = yes;
        self
    }

    /// The seed of the chunk sizes.
    pub fn seed(mut self, seed: u64) -> Faults {
        self.seed = seed;
        self
    }
}

/// Byte accounting of one direction of a wrapped connection.
#[derive(Debug, Default)]
struct Dir {
    /// Stream offset the writer's transport accepted up to.
    written: u64,
    /// Stream offset the reader handed to its user (or dropped) up to.
    consumed: u64,
    /// Stream ranges lost to `discard_unread`.
    lost: Vec<(u64, u64)>,
}

#[derive(Debug, Default)]
struct Link {
    dirs: [Mutex<Dir>; 2],
}

impl Link {
    fn dir(&self, i: usize) -> MutexGuard<'_, Dir> {
        self.dirs[i].lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[derive(Debug, Default)]
struct Shared {
    discarded: AtomicU64,
    next_id: AtomicU64,
    pending: Mutex<HashMap<u64, Arc<Link>>>,
}

/// Wraps a family and injects [`Faults`] into every socket it creates.
///
/// The two ends of a connection made through the same wrapper know each other:
/// the connecting side sends an 8-byte connection id first, which the accepting
/// side's wrapper consumes (so both ends must be wrapped). That is how
/// `discard_unread` knows what the peer has not read.
#[derive(Debug, Clone)]
pub struct FaultFamily<F> {
    inner: F,
    faults: Faults,
    shared: Arc<Shared>,
}

impl<F: Family> FaultFamily<F> {
    /// Wraps `inner`.
    pub fn new(inner: F, faults: Faults) -> FaultFamily<F> {
        FaultFamily { inner, faults, shared: Arc::default() }
    }

    /// Bytes lost to `discard_unread` so far, over every socket of this wrapper.
    pub fn discarded(&self) -> u64 {
        self.shared.discarded.load(Ordering::Relaxed)
    }
}

/// A socket with faults injected.
#[derive(Debug)]
pub struct FaultSocket<S> {
    inner: S,
    faults: Faults,
    shared: Arc<Shared>,
    link: Arc<Link>,
    /// 0 for the connecting end, 1 for the accepting end: we write `dirs[side]`.
    side: usize,
    /// Bytes read from the transport and not handed out; `rx_off` is the stream offset of `rx[0]`.
    rx: BytesMut,
    rx_off: u64,
    inner_eof: bool,
    delivered: u64,
    rng: u64,
    released: bool,
}

impl<S: Socket> FaultSocket<S> {
    fn new(inner: S, faults: Faults, shared: Arc<Shared>, link: Arc<Link>, side: usize, id: u64) -> Self {
        let rng = faults.seed ^ id.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ side as u64;
        FaultSocket {
            inner,
            faults,
            shared,
            link,
            side,
            rx: BytesMut::new(),
            rx_off: 0,
            inner_eof: false,
            delivered: 0,
            rng,
            released: false,
        }
    }

    fn next_chunk(&mut self) -> usize {
        let Some(k) = self.faults.chunk else { return usize::MAX };
        // splitmix64
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        1 + ((z ^ (z >> 31)) % k as u64) as usize
    }

    /// Models the Hyper-V bug on our way out: what we sent and the peer has not read is lost.
    fn lose_unread(&mut self) {
        if !self.faults.discard_unread || self.released {
            return;
        }
        self.released = true;
        let mut d = self.link.dir(self.side);
        if d.written > d.consumed {
            let range = (d.consumed, d.written);
            d.lost.push(range);
            self.shared.discarded.fetch_add(range.1 - range.0, Ordering::Relaxed);
            tracing::trace!(lost = range.1 - range.0, "fault: unread bytes discarded");
        }
    }

    /// Hands out up to `max` bytes of `rx`, dropping lost ranges; 0 when `rx` is used up.
    fn hand_out(&mut self, buf: &mut BytesMut, max: usize) -> usize {
        let mut d = self.link.dir(1 - self.side);
        loop {
            if self.rx.is_empty() {
                return 0;
            }
            let end = self.rx_off + self.rx.len() as u64;
            if let Some(&(_, to)) = d.lost.iter().find(|(from, to)| *from <= self.rx_off && self.rx_off < *to) {
                let drop = (to.min(end) - self.rx_off) as usize;
                self.rx.advance(drop);
                self.rx_off += drop as u64;
                d.consumed = self.rx_off;
                continue;
            }
            let next_loss = d.lost.iter().map(|(from, _)| *from).filter(|f| *f > self.rx_off).min().unwrap_or(end);
            let n = ((next_loss.min(end) - self.rx_off) as usize).min(max);
            buf.extend_from_slice(&self.rx[..n]);
            self.rx.advance(n);
            self.rx_off += n as u64;
            d.consumed = self.rx_off;
            return n;
        }
    }
}

impl<S: Socket> Socket for FaultSocket<S> {
    type Addr = S::Addr;

    fn poll_read_buf(&mut self, cx: &mut Context<'_>, buf: &mut BytesMut) -> Poll<io::Result<usize>> {
        loop {
            let budget_eof = self.faults.eof_after.map_or(u64::MAX, |n| n.saturating_sub(self.delivered));
            let budget_reset = self.faults.reset_after.map_or(u64::MAX, |n| n.saturating_sub(self.delivered));
            if budget_reset == 0 {
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::ConnectionReset, "fault: injected reset")));
            }
            if budget_eof == 0 {
                return Poll::Ready(Ok(0));
            }
            let max = (self.next_chunk() as u64).min(budget_eof).min(budget_reset) as usize;
            let n = self.hand_out(buf, max);
            if n > 0 {
                self.delivered += n as u64;
                return Poll::Ready(Ok(n));
            }
            if self.inner_eof {
                return Poll::Ready(Ok(0));
            }
            self.rx.reserve(64 * 1024);
            match ready!(self.inner.poll_read_buf(cx, &mut self.rx)) {
                Ok(0) => self.inner_eof = true,
                Ok(_) => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    fn poll_writev(&mut self, cx: &mut Context<'_>, bufs: &[IoSlice<'_>]) -> Poll<io::Result<usize>> {
        let limit = self.next_chunk();
        let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(bufs.len());
        let mut left = limit;
        for b in bufs {
            if left == 0 {
                break;
            }
            let n = b.len().min(left);
            slices.push(IoSlice::new(&b[..n]));
            left -= n;
        }
        let n = ready!(self.inner.poll_writev(cx, &slices))?;
        self.link.dir(self.side).written += n as u64;
        Poll::Ready(Ok(n))
    }

    fn shutdown_read(&mut self) -> io::Result<()> {
        self.inner.shutdown_read()
    }

    fn shutdown_write(&mut self) -> io::Result<()> {
        self.lose_unread();
        self.inner.shutdown_write()
    }

    fn close(&mut self) -> io::Result<()> {
        self.lose_unread();
        self.inner.close()
    }

    fn abort(&mut self) -> io::Result<()> {
        self.lose_unread();
        self.inner.abort()
    }

    fn local_addr(&self) -> io::Result<S::Addr> {
        self.inner.local_addr()
    }

    fn peer_addr(&self) -> io::Result<S::Addr> {
        self.inner.peer_addr()
    }
}

impl<S> Drop for FaultSocket<S> {
    fn drop(&mut self) {
        if self.faults.discard_unread && !self.released {
            let mut d = self.link.dirs[self.side].lock().unwrap_or_else(|p| p.into_inner());
            if d.written > d.consumed {
                let range = (d.consumed, d.written);
                d.lost.push(range);
                self.shared.discarded.fetch_add(range.1 - range.0, Ordering::Relaxed);
            }
        }
    }
}

/// A listener of a [`FaultFamily`].
#[derive(Debug)]
pub struct FaultListener<L> {
    inner: L,
    faults: Faults,
    shared: Arc<Shared>,
}

/// How long an accepted connection may take to send its connection id.
const ID_TIMEOUT: Duration = Duration::from_secs(10);

impl<L: FamilyListener> FamilyListener for FaultListener<L> {
    type Addr = L::Addr;
    type Socket = FaultSocket<L::Socket>;

    async fn accept(&self) -> io::Result<(FaultSocket<L::Socket>, L::Addr)> {
        let (mut sock, peer) = self.inner.accept().await?;
        let mut buf = BytesMut::with_capacity(64);
        with_timeout(Some(ID_TIMEOUT), "fault wrapper id exchange", async {
            while buf.len() < 8 {
                if poll_fn(|cx| sock.poll_read_buf(cx, &mut buf)).await? == 0 {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "peer left before its id"));
                }
            }
            Ok(())
        })
        .await?;
        let id = u64::from_le_bytes(buf[..8].try_into().unwrap_or_default());
        buf.advance(8);
        let link = self.shared.pending.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
        let link = link.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unknown fault connection id"))?;
        let mut s = FaultSocket::new(sock, self.faults, self.shared.clone(), link, 1, id);
        s.rx = buf;
        Ok((s, peer))
    }

    fn local_addr(&self) -> io::Result<L::Addr> {
        self.inner.local_addr()
    }
}

impl<F: Family> Family for FaultFamily<F> {
    type Addr = F::Addr;
    type Socket = FaultSocket<F::Socket>;
    type Listener = FaultListener<F::Listener>;

    fn listen(&self, addr: &F::Addr, backlog: u32) -> io::Result<Self::Listener> {
        Ok(FaultListener { inner: self.inner.listen(addr, backlog)?, faults: self.faults, shared: self.shared.clone() })
    }

    fn connect(
        &self,
        addr: &F::Addr,
        timeout: Option<Duration>,
    ) -> impl Future<Output = io::Result<Self::Socket>> + Send + 'static {
        let connect = self.inner.connect(addr, timeout);
        let (faults, shared) = (self.faults, self.shared.clone());
        async move {
            let mut sock = connect.await?;
            let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
            let link = Arc::new(Link::default());
            shared.pending.lock().unwrap_or_else(|p| p.into_inner()).insert(id, link.clone());
            let idb = id.to_le_bytes();
            let mut sent = 0;
            while sent < 8 {
                let n = poll_fn(|cx| sock.poll_writev(cx, &[IoSlice::new(&idb[sent..])])).await?;
                if n == 0 {
                    return Err(io::ErrorKind::WriteZero.into());
                }
                sent += n;
            }
            Ok(FaultSocket::new(sock, faults, shared, link, 0, id))
        }
    }
}

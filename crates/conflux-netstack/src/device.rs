//! The frame-device trait users implement to bring their own device, and
//! the pooled frame buffers it moves.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

/// What a device's frames start with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Medium {
    /// Ethernet II frames (TAP devices): the stack answers ARP and NDP.
    Ethernet,
    /// Bare IPv4/IPv6 packets (TUN devices, point-to-point links).
    Ip,
}

/// Who computes and checks IP/TCP/ICMP checksums.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Checksums {
    /// The stack computes them on transmit and checks them on receive
    /// (unless a frame's [`FrameMeta::csum`] says the device checked it).
    Compute,
    /// The link is trusted (an in-memory link, like the kernel's loopback):
    /// neither computed nor checked.
    Offloaded,
}

/// A device's fixed properties.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DeviceCaps {
    /// The frame format.
    pub medium: Medium,
    /// The largest IP packet the device carries (the MTU, without the
    /// Ethernet header for [`Medium::Ethernet`]).
    pub mtu: usize,
    /// Checksum handling.
    pub checksums: Checksums,
    /// `Some(n)`: the device takes TCP super-segments of up to `n` bytes of
    /// IP packet and cuts them itself (GSO, see [`FrameMeta::gso_mss`]), and
    /// may deliver coalesced ones of up to `n` bytes (GRO). `None`: every
    /// frame fits [`mtu`](DeviceCaps::mtu).
    pub tso: Option<u16>,
    /// With [`Checksums::Compute`]: the device completes the TCP checksum
    /// of every transmitted TCP frame itself (an offload TAP marks it
    /// partial for the kernel, virtio's `NEEDS_CSUM`), so the stack leaves
    /// the field 0 instead of summing every payload byte. Received frames
    /// are still checked. `false`: the stack computes it.
    pub tcp_tx_csum: bool,
}

impl DeviceCaps {
    /// The caps of a device with the given medium and MTU, checksums
    /// computed, no segmentation offload.
    pub const fn new(medium: Medium, mtu: usize) -> DeviceCaps {
        DeviceCaps { medium, mtu, checksums: Checksums::Compute, tso: None, tcp_tx_csum: false }
    }
}

/// What a device knows about a received frame's checksums.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum RxCsum {
    /// Nothing: the stack verifies them when the device's caps say
    /// [`Checksums::Compute`].
    #[default]
    Unknown,
    /// The device (or the kernel behind it) checked them: the stack does not.
    Verified,
    /// The kernel's `CHECKSUM_PARTIAL`: the L4 checksum field holds only the
    /// pseudo-header sum. The frame counts as verified and is not checked.
    Partial,
}

/// Per-frame offload metadata, carried by every [`FrameBuf`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct FrameMeta {
    /// Receive: what the device knows about the frame's checksums.
    pub csum: RxCsum,
    /// Transmit: `Some(m)` marks a TCP frame longer than one segment that the
    /// device must cut into segments of `m` bytes of payload (only with
    /// [`DeviceCaps::tso`]). The stack's checksums are complete and valid
    /// (the TCP one is 0 with [`DeviceCaps::tcp_tx_csum`]); a device whose
    /// GSO needs partial ones converts them. Receive: `Some`
    /// when the device coalesced segments of that size (informational).
    pub gso_mss: Option<u16>,
}

/// Buffers a pool keeps at most (more are freed when returned).
const POOL_KEEP: usize = 4096;

/// An idle buffer and the pool it goes back to (its home), kept together
/// so that taking and returning a buffer changes no reference count: the
/// `Arc` a frame carries moves with its buffer through caches and pools.
type Parked = (Vec<u8>, Arc<PoolInner>);

struct PoolInner {
    free: Mutex<Free>,
    keep: usize,
    /// [`FramePool`] handles alive: the last one to go empties the list and
    /// closes it ([`Free::closed`]), ending the references its entries hold
    /// to their pools (to this one, mostly: a cycle otherwise).
    handles: AtomicUsize,
    /// How many buffers `free` held when it was last unlocked
    /// ([`FreeList`]): read without the lock by [`FrameCache::refresh`],
    /// which skips a pool nothing was given back to (a hint: a buffer
    /// given back on another thread meanwhile waits for the next refresh).
    idle: AtomicUsize,
}

/// A pool's idle buffers.
#[derive(Default)]
struct Free {
    list: Vec<Parked>,
    /// Every [`FramePool`] handle is gone: nothing is kept any more (a
    /// frame dropped later frees its buffer).
    closed: bool,
}

impl PoolInner {
    fn lock(&self) -> FreeList<'_> {
        FreeList { free: self.free.lock().unwrap_or_else(PoisonError::into_inner), idle: &self.idle }
    }
}

/// A pool's locked list of free buffers: unlocking records its length
/// (`PoolInner::idle`).
struct FreeList<'a> {
    free: MutexGuard<'a, Free>,
    idle: &'a AtomicUsize,
}

impl FreeList<'_> {
    /// Keeps `parked` if the pool is open and has room (else it is freed).
    fn park(&mut self, keep: usize, parked: Parked) {
        if !self.free.closed && self.free.list.len() < keep {
            self.free.list.push(parked);
        }
    }
}

impl Deref for FreeList<'_> {
    type Target = Vec<Parked>;
    fn deref(&self) -> &Vec<Parked> {
        &self.free.list
    }
}

impl DerefMut for FreeList<'_> {
    fn deref_mut(&mut self) -> &mut Vec<Parked> {
        &mut self.free.list
    }
}

impl Drop for FreeList<'_> {
    fn drop(&mut self) {
        self.idle.store(self.free.list.len(), Ordering::Relaxed);
    }
}

/// A shared pool of frame buffers: [`FramePool::take`] hands out a
/// [`FrameBuf`], dropping it gives the memory back. Cloning gives another
/// handle to the same pool; frames may be dropped on any thread (a dropped
/// frame's buffer returns to the pool it was allocated in; one a stack
/// read is kept by that stack for its own frames while it has room, so
/// with two stacks in a process a buffer may carry either's frames).
///
/// The driver of a [`NetStack`](crate::NetStack) makes one pool per stack,
/// builds every transmitted frame in it and gives it to its device with
/// [`FrameDevice::set_pool`] for received frames. Buffers are zeroed only
/// when first allocated (or grown), never when reused.
pub struct FramePool {
    inner: Arc<PoolInner>,
}

impl Clone for FramePool {
    fn clone(&self) -> FramePool {
        self.inner.handles.fetch_add(1, Ordering::Relaxed);
        FramePool { inner: self.inner.clone() }
    }
}

impl Drop for FramePool {
    fn drop(&mut self) {
        if self.inner.handles.fetch_sub(1, Ordering::AcqRel) != 1 {
            return;
        }
        // The last handle: the idle buffers (and the references to their
        // pools they hold) go, and nothing is kept from now on.
        let idle = {
            let mut free = self.inner.lock();
            free.free.closed = true;
            std::mem::take(&mut free.free.list)
        };
        drop(idle);
    }
}

impl fmt::Debug for FramePool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let free = self.inner.lock().len();
        f.debug_struct("FramePool").field("free", &free).field("keep", &self.inner.keep).finish()
    }
}

impl Default for FramePool {
    fn default() -> FramePool {
        FramePool::new()
    }
}

impl FramePool {
    /// A pool that keeps up to 4096 returned buffers.
    pub fn new() -> FramePool {
        FramePool::keeping(POOL_KEEP)
    }

    /// A pool that keeps up to `keep` returned buffers.
    pub fn keeping(keep: usize) -> FramePool {
        FramePool {
            inner: Arc::new(PoolInner {
                free: Mutex::new(Free::default()),
                keep,
                handles: AtomicUsize::new(1),
                idle: AtomicUsize::new(0),
            }),
        }
    }

    /// A frame of `len` bytes. Its contents are unspecified (whatever the
    /// buffer held last, or zeros when fresh): the caller overwrites them.
    pub fn take(&self, len: usize) -> FrameBuf {
        let popped = self.inner.lock().pop();
        let (data, home) = popped.unwrap_or_else(|| (Vec::new(), self.inner.clone()));
        let mut buf = FrameBuf { data, len: 0, pool: Some(home), meta: FrameMeta::default() };
        buf.set_len(len);
        buf
    }

    /// Buffers waiting for reuse.
    pub fn idle(&self) -> usize {
        self.inner.lock().len()
    }
}

/// Idle buffers a [`FrameCache`] keeps (more go back to its pool).
const CACHE_KEEP: usize = 64;
/// Buffers a [`FrameCache`] takes from its pool at once.
const CACHE_REFILL: usize = 32;

/// One owner's (the core's) window on a [`FramePool`]: frames are built from
/// a private list of idle buffers, refilled from the pool [`CACHE_REFILL`]
/// at a time, and spent frames are collected and given back in one go
/// ([`FrameCache::give_back`]): the pool's lock is taken once per batch, not
/// twice per frame. A spent frame's buffer goes straight to the private
/// list while it has room, whichever pool it came from (local delivery, a
/// device that builds received frames in our pool, or the other stack of
/// an in-process link): between two stacks in one process the answer is
/// then built in the buffer the question came in, and no pool's lock is
/// taken. A buffer keeps its home pool (where it was allocated) while it
/// moves between caches: a frame built in it and dropped elsewhere goes
/// back there.
///
/// Not shared: the owner calls it through `&self` (cells), from one thread
/// at a time.
pub(crate) struct FrameCache {
    pool: FramePool,
    /// Idle buffers, each with the pool it goes back to when a frame built
    /// in it is dropped (its home: where it was allocated), so a buffer
    /// moving between two stacks' caches costs no reference count.
    free: std::cell::RefCell<Vec<Parked>>,
    /// Spent frames' buffers, until [`give_back`](FrameCache::give_back).
    spent: std::cell::RefCell<Vec<Parked>>,
}

impl FrameCache {
    pub(crate) fn new(pool: FramePool) -> FrameCache {
        FrameCache { pool, free: Default::default(), spent: Default::default() }
    }

    /// A frame of `len` bytes, contents unspecified (as [`FramePool::take`]).
    #[inline]
    pub(crate) fn take(&self, len: usize) -> FrameBuf {
        let mut free = self.free.borrow_mut();
        if free.is_empty() {
            let mut shared = self.pool.inner.lock();
            let from = shared.len().saturating_sub(CACHE_REFILL);
            free.extend(shared.drain(from..));
        }
        let (data, home) = free.pop().unwrap_or_else(|| (Vec::new(), self.pool.inner.clone()));
        let mut buf = FrameBuf { data, len: 0, pool: Some(home), meta: FrameMeta::default() };
        buf.set_len(len);
        buf
    }

    /// Puts the buffers given back to the pool since the last call on top
    /// of the private list, so the next frames are built in them: they are
    /// the ones the other side just wrote and read (still in the CPU's
    /// cache), where the private list's are older. What this puts beyond
    /// `CACHE_KEEP` goes back under the pool's own, oldest first. Called
    /// once per round; one lock when the pool has buffers, none when it
    /// had none at its last unlock.
    pub(crate) fn refresh(&self) {
        if self.pool.inner.idle.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut shared = self.pool.inner.lock();
        if shared.is_empty() {
            return;
        }
        let mut free = self.free.borrow_mut();
        let from = shared.len().saturating_sub(CACHE_REFILL);
        free.extend(shared.drain(from..));
        if free.len() > CACHE_KEEP {
            // (A buffer of another pool among them waits in ours, still
            // going home when a frame built in it is dropped.)
            let excess = free.len() - CACHE_KEEP;
            shared.splice(0..0, free.drain(..excess));
        }
    }

    /// Keeps `frame`'s buffer (received and read) until
    /// [`give_back`](FrameCache::give_back).
    pub(crate) fn spend(&self, mut frame: FrameBuf) {
        if let Some(home) = frame.pool.take()
            && frame.data.capacity() > 0
        {
            self.spent.borrow_mut().push((std::mem::take(&mut frame.data), home));
        }
    }

    /// Returns the spent frames' buffers: to the private list while it has
    /// room (`CACHE_KEEP`), the rest to the pools they came from, one lock
    /// per run of frames from the same pool.
    pub(crate) fn give_back(&self) {
        let mut spent = self.spent.borrow_mut();
        if spent.is_empty() {
            return;
        }
        let mut free = self.free.borrow_mut();
        let room = CACHE_KEEP.saturating_sub(free.len());
        let mut drained = spent.drain(..);
        free.extend(drained.by_ref().take(room));
        // The rest home in runs of the same pool, one lock per run; each
        // buffer takes its `Arc` along (no reference count changes but the
        // run's).
        let mut drained = drained.peekable();
        while let Some(first) = drained.next() {
            let pool = first.1.clone();
            let mut shared = pool.lock();
            shared.park(pool.keep, first);
            while let Some(next) = drained.next_if(|(_, home)| Arc::ptr_eq(home, &pool)) {
                shared.park(pool.keep, next);
            }
        }
    }
}

/// One frame (an Ethernet frame or an IP packet), usually from a
/// [`FramePool`]: derefs to the frame's bytes and carries its offload
/// metadata in [`meta`](FrameBuf::meta). Dropping it returns its memory to
/// its pool.
pub struct FrameBuf {
    /// Initialized bytes (the frame is the first `len`); never shrunk, so a
    /// reused buffer is not zeroed again.
    data: Vec<u8>,
    len: usize,
    pool: Option<Arc<PoolInner>>,
    /// Offload metadata (checksum state on receive, GSO size on transmit).
    pub meta: FrameMeta,
}

impl FrameBuf {
    /// A frame holding `bytes`, from no pool.
    pub fn from_vec(bytes: Vec<u8>) -> FrameBuf {
        let len = bytes.len();
        FrameBuf { data: bytes, len, pool: None, meta: FrameMeta::default() }
    }

    /// Sets the frame's length: shorter drops the tail, longer appends bytes
    /// whose contents are unspecified (zeros the first time the buffer grows
    /// that far, old frame bytes afterwards).
    pub fn set_len(&mut self, len: usize) {
        if self.data.len() < len {
            self.data.resize(len, 0);
        }
        self.len = len;
    }

    /// Appends `bytes` to the frame.
    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        let at = self.len;
        self.set_len(at + bytes.len());
        self.data[at..at + bytes.len()].copy_from_slice(bytes);
    }

    /// The frame's bytes as a vector (a copy unless the buffer is exactly the frame).
    pub fn into_vec(mut self) -> Vec<u8> {
        let mut data = std::mem::take(&mut self.data);
        data.truncate(self.len);
        data
    }
}

impl Deref for FrameBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.data[..self.len]
    }
}

impl DerefMut for FrameBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.data[..self.len]
    }
}

impl From<Vec<u8>> for FrameBuf {
    fn from(bytes: Vec<u8>) -> FrameBuf {
        FrameBuf::from_vec(bytes)
    }
}

impl fmt::Debug for FrameBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameBuf").field("len", &self.len).field("meta", &self.meta).finish_non_exhaustive()
    }
}

impl Drop for FrameBuf {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.take()
            && self.data.capacity() > 0
        {
            // (The lock borrows the `Arc` the buffer parks with: locked
            // through a second one.)
            let home = pool.clone();
            home.lock().park(home.keep, (std::mem::take(&mut self.data), pool));
        }
    }
}

/// An asynchronous frame device: what the stack's driver task sends frames
/// to and receives frames from.
///
/// The driver calls these from one task only, never while it holds any
/// lock of the stack. Frames are whole (one Ethernet frame or one IP packet
/// each; with [`DeviceCaps::tso`] a TCP frame may be a super-segment). A
/// device that cannot take a frame right now returns `Pending` from
/// [`poll_send_ready`](FrameDevice::poll_send_ready) (or leaves frames in
/// [`poll_send_batch`](FrameDevice::poll_send_batch)'s queue); a device that
/// drops a frame it accepted behaves like a lossy wire (TCP retransmits).
///
/// Call order: [`set_pool`](FrameDevice::set_pool) once, before anything
/// else; then any interleaving of the polls and sends.
pub trait FrameDevice: Send + 'static {
    /// The device's medium, MTU, checksum handling and offloads.
    fn caps(&self) -> DeviceCaps;

    /// The pool the driver builds its frames in: a device that makes its
    /// received frames itself takes them from it. The default ignores it.
    fn set_pool(&mut self, pool: FramePool) {
        let _ = pool;
    }

    /// Appends up to `max` received frames to `frames` (at least 1 when
    /// `max > 0`); `Ready(Ok(()))` once at least one was appended, `Pending`
    /// (the waker registered) when none is waiting. `Err` ends the driver
    /// (the device is gone).
    fn poll_recv(&mut self, cx: &mut Context<'_>, frames: &mut Vec<FrameBuf>, max: usize) -> Poll<io::Result<()>>;

    /// Ready once [`send`](FrameDevice::send) would accept a frame.
    fn poll_send_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;

    /// Sends one frame (called after `poll_send_ready` returned ready).
    fn send(&mut self, frame: FrameBuf) -> io::Result<()>;

    /// Sends frames from the front of `frames` while the device takes them:
    /// `Ready(Ok(()))` once `frames` is empty, `Pending` (the waker
    /// registered) with the rest left in it. The default calls
    /// `poll_send_ready` and `send` per frame; a device with a cheaper batch
    /// path (one lock, one syscall) overrides it. A frame `send` fails on
    /// is dropped (logged), as a lossy wire would.
    fn poll_send_batch(&mut self, cx: &mut Context<'_>, frames: &mut VecDeque<FrameBuf>) -> Poll<io::Result<()>> {
        while !frames.is_empty() {
            match self.poll_send_ready(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
            if let Some(frame) = frames.pop_front()
                && let Err(e) = self.send(frame)
            {
                tracing::debug!(error = %e, "device send failed: frame dropped");
            }
        }
        Poll::Ready(Ok(()))
    }

    /// A transmit handle usable from any task, if the device has one: the
    /// stack then sends a flow's frames from the flow's own task (its write,
    /// read or close runs the connection's egress at once), without a
    /// round of the driver task. Asked once, before the driver starts. The
    /// default has none: every frame goes through the driver.
    fn direct_send(&mut self) -> Option<Arc<dyn DirectSend>> {
        None
    }

    /// Where the device may hand received frames straight to the stack,
    /// in the sending task (an in-process link whose other end sends),
    /// instead of queuing them for the driver: see [`InlineReceiver`].
    /// Called once, before the driver starts. The default ignores it.
    fn set_inline_receiver(&mut self, receiver: InlineReceiver) {
        let _ = receiver;
    }
}

/// A device's transmit side shared with the stack's tasks
/// ([`FrameDevice::direct_send`]). The stack calls it with its state
/// locked, never while its driver sends through the device's own methods,
/// and hands frames over in order through whichever path: what this cannot
/// take now is sent through [`FrameDevice::poll_send_batch`] before any
/// newer frame.
pub trait DirectSend: Send + Sync {
    /// Sends frames from the front of `frames` while the device takes
    /// them without waiting; what it cannot take now stays in `frames`
    /// (the driver then sends it, through the device, once it can). Never
    /// blocks. A frame the device fails on is dropped, as a lossy wire
    /// would.
    fn try_send(&self, frames: &mut VecDeque<FrameBuf>);
}

/// A stack's entry for frames handed over in the sender's task
/// ([`FrameDevice::set_inline_receiver`]): the frames are processed at
/// once, the readers they wake woken, and the stack's answer (an ACK, the
/// next window) sent through its own device. Holds the stack weakly.
#[derive(Clone)]
pub struct InlineReceiver {
    pub(crate) shared: std::sync::Weak<crate::stack::Shared>,
}

impl fmt::Debug for InlineReceiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InlineReceiver").field("alive", &(self.shared.strong_count() > 0)).finish()
    }
}

impl InlineReceiver {
    /// Processes `frames` (drained) at once: `false`, and nothing taken,
    /// when it cannot now (the stack is busy on another thread, gone, or
    /// this call comes from inside another inline delivery); the device
    /// then queues them for the driver as usual. The device must not call
    /// this while frames it queued earlier still wait for the driver
    /// (they would be overtaken).
    pub fn try_deliver(&self, frames: &mut VecDeque<FrameBuf>) -> bool {
        crate::stack::deliver_inline(&self.shared, frames)
    }
}

impl<D: FrameDevice + ?Sized> FrameDevice for Box<D> {
    fn caps(&self) -> DeviceCaps {
        (**self).caps()
    }
    fn set_pool(&mut self, pool: FramePool) {
        (**self).set_pool(pool)
    }
    fn poll_recv(&mut self, cx: &mut Context<'_>, frames: &mut Vec<FrameBuf>, max: usize) -> Poll<io::Result<()>> {
        (**self).poll_recv(cx, frames, max)
    }
    fn poll_send_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        (**self).poll_send_ready(cx)
    }
    fn send(&mut self, frame: FrameBuf) -> io::Result<()> {
        (**self).send(frame)
    }
    fn poll_send_batch(&mut self, cx: &mut Context<'_>, frames: &mut VecDeque<FrameBuf>) -> Poll<io::Result<()>> {
        (**self).poll_send_batch(cx, frames)
    }
    fn direct_send(&mut self) -> Option<Arc<dyn DirectSend>> {
        (**self).direct_send()
    }
    fn set_inline_receiver(&mut self, receiver: InlineReceiver) {
        (**self).set_inline_receiver(receiver)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cache_keeps_spent_buffers_and_batches_the_pools_lock() {
        let (ours, theirs) = (FramePool::keeping(100), FramePool::keeping(100));
        let frames: Vec<FrameBuf> = (0..40).map(|_| ours.take(8)).collect();
        drop(frames);
        assert_eq!(ours.idle(), 40);
        let cache = FrameCache::new(ours.clone());
        let a = cache.take(8);
        assert_eq!(ours.idle(), 40 - CACHE_REFILL, "refilled in one batch");
        // A peer's frame stays in the cache, as ours does, and the next
        // frame is built in it (still a buffer of the peer's pool).
        let peer = theirs.take(8);
        let peer_ptr = peer.as_ptr();
        cache.spend(a);
        cache.spend(peer);
        cache.spend(FrameBuf::from_vec(vec![1]));
        cache.give_back();
        assert_eq!((theirs.idle(), ours.idle()), (0, 40 - CACHE_REFILL));
        assert_eq!(cache.free.borrow().len(), CACHE_REFILL + 1);
        let next = cache.take(8);
        assert_eq!(next.as_ptr(), peer_ptr, "built in the peer's buffer");
        drop(next);
        assert_eq!((theirs.idle(), ours.idle()), (1, 40 - CACHE_REFILL), "dropped, it goes home");
        // Beyond CACHE_KEEP, spent buffers go back to the pools they came from.
        let room = CACHE_KEEP - cache.free.borrow().len();
        let more: Vec<FrameBuf> = (0..room + 3).map(|_| theirs.take(8)).collect();
        more.into_iter().for_each(|f| cache.spend(f));
        cache.give_back();
        assert_eq!((theirs.idle(), cache.free.borrow().len()), (3, CACHE_KEEP));
    }

    #[test]
    fn a_refreshed_cache_builds_in_the_buffer_given_back_last() {
        let pool = FramePool::keeping(100);
        let bufs: Vec<FrameBuf> = (0..3).map(|_| pool.take(8)).collect();
        drop(bufs);
        let cache = FrameCache::new(pool.clone());
        let warm = cache.take(8);
        let warm_ptr = warm.as_ptr();
        drop(warm);
        assert_eq!(pool.idle(), 1, "back in the pool, under the cache's two");
        cache.refresh();
        assert_eq!(pool.idle(), 0);
        assert_eq!(cache.take(8).as_ptr(), warm_ptr, "the buffer given back last comes first");
        // That buffer is back in the pool; the cache holds the other two.
        assert_eq!((pool.idle(), cache.free.borrow().len()), (1, 2));
        let many: Vec<FrameBuf> = (0..74).map(|_| pool.take(8)).collect();
        drop(many);
        cache.refresh();
        assert_eq!((pool.idle(), cache.free.borrow().len()), (74 - CACHE_REFILL, 2 + CACHE_REFILL));
        // Beyond CACHE_KEEP, the cache's oldest go back under the pool's.
        let oldest = cache.free.borrow()[0].0.as_ptr();
        cache.refresh();
        let over = 2 + 2 * CACHE_REFILL - CACHE_KEEP;
        assert_eq!((pool.idle(), cache.free.borrow().len()), (74 - 2 * CACHE_REFILL + over, CACHE_KEEP));
        assert_eq!(pool.inner.lock()[0].0.as_ptr(), oldest, "at the bottom of the pool");
    }

    /// A buffer's `Arc` moves with it (frame, cache, pool, frame again):
    /// no reference count changes per frame on the way home or out again,
    /// and the pool's own references end with its last handle (no cycle).
    #[test]
    fn buffers_go_home_and_out_again_without_reference_counting() {
        let (ours, theirs) = (FramePool::keeping(200), FramePool::keeping(200));
        let count = || Arc::strong_count(&ours.inner);
        let frames: Vec<FrameBuf> = (0..100).map(|_| ours.take(8)).collect();
        let live = count();
        assert_eq!(live, 1 + 100);
        // The other side reads them all: 64 stay in its cache, the rest go home.
        let cache = FrameCache::new(theirs.clone());
        frames.into_iter().for_each(|f| cache.spend(f));
        cache.give_back();
        assert_eq!((ours.idle(), cache.free.borrow().len()), (100 - CACHE_KEEP, CACHE_KEEP));
        assert_eq!(count(), live, "going home changed no count");
        // Our side builds in them again.
        let ours_cache = FrameCache::new(ours.clone());
        let again: Vec<FrameBuf> = (0..10).map(|_| ours_cache.take(8)).collect();
        ours_cache.refresh();
        assert_eq!(count(), live + 1, "taking them out changed no count (but the cache's handle)");
        drop(again);
        drop((cache, ours_cache));
        let weak = Arc::downgrade(&ours.inner);
        let late = ours.take(8);
        drop(theirs);
        drop(ours);
        assert!(weak.upgrade().is_some(), "a frame still out holds its pool");
        drop(late);
        assert!(weak.upgrade().is_none(), "gone with its last handle and frame: no cycle");
    }

    #[test]
    fn pooled_buffers_are_reused_without_zeroing() {
        let pool = FramePool::keeping(2);
        let mut a = pool.take(4);
        a.copy_from_slice(&[1, 2, 3, 4]);
        let ptr = a.as_ptr();
        drop(a);
        assert_eq!(pool.idle(), 1);
        let b = pool.take(3);
        assert_eq!((b.as_ptr(), &b[..]), (ptr, &[1, 2, 3][..]), "the same memory, not zeroed");
        let mut c = FrameBuf::from(vec![9]);
        c.extend_from_slice(&[8, 7]);
        assert_eq!(c.into_vec(), [9, 8, 7]);
        let many: Vec<FrameBuf> = (0..5).map(|_| pool.take(10)).collect();
        drop(many);
        drop(b);
        assert_eq!(pool.idle(), 2, "the pool keeps at most its cap");
    }
}

//! An in-memory link pair with seeded fault injection.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::task::{Context, Poll, Waker};

use crate::device::{Checksums, DeviceCaps, DirectSend, FrameBuf, FrameDevice, InlineReceiver, Medium};

/// Faults a link applies to every frame it carries, in each direction
/// independently, drawn from a seeded generator (runs are reproducible).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Faults {
    /// Probability that any frame is dropped.
    pub loss: f64,
    /// Probability that a frame shorter than 100 bytes (a control packet:
    /// SYN, ACK, FIN, RST) is dropped.
    pub small_loss: f64,
    /// Probability that one byte of a frame is flipped.
    pub corrupt: f64,
    /// Junk bytes appended after every frame (past the IP packet's length).
    pub trailing_junk: usize,
    /// Once this many bytes crossed the link in one direction, every later
    /// frame in that direction is dropped.
    pub drop_after_bytes: Option<u64>,
    /// Seed of the generator.
    pub seed: u64,
}

impl Faults {
    /// No faults at all.
    pub const NONE: Faults =
        Faults { loss: 0.0, small_loss: 0.0, corrupt: 0.0, trailing_junk: 0, drop_after_bytes: None, seed: 1 };
}

impl Default for Faults {
    fn default() -> Faults {
        Faults::NONE
    }
}

/// How to build a [`link_pair`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkConfig {
    /// Frame format of both ends.
    pub medium: Medium,
    /// The largest IP packet the wire carries: longer frames are dropped
    /// (MTU enforcement). Each end reports it as its MTU unless overridden with
    /// [`LinkEnd::with_mtu`].
    pub mtu: usize,
    /// Checksums computed (`Compute`) or trusted (`Offloaded`, like loopback).
    pub checksums: Checksums,
    /// Frames queued per direction before the sender waits.
    pub queue_frames: usize,
    /// Faults applied to every frame.
    pub faults: Faults,
}

impl LinkConfig {
    /// An Ethernet link with MTU 1500, checksums on, no faults.
    pub const fn ethernet() -> LinkConfig {
        LinkConfig {
            medium: Medium::Ethernet,
            mtu: 1500,
            checksums: Checksums::Compute,
            queue_frames: 1024,
            faults: Faults::NONE,
        }
    }

    /// An IP (point-to-point) link with MTU 1500, checksums on, no faults.
    pub const fn ip() -> LinkConfig {
        LinkConfig { medium: Medium::Ip, ..LinkConfig::ethernet() }
    }

    /// Sets the MTU.
    pub const fn mtu(mut self, mtu: usize) -> LinkConfig {
        self.mtu = mtu;
        self
    }

    /// Sets the faults.
    pub const fn faults(mut self, faults: Faults) -> LinkConfig {
        self.faults = faults;
        self
    }

    /// Sets checksum handling.
    pub const fn checksums(mut self, checksums: Checksums) -> LinkConfig {
        self.checksums = checksums;
        self
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[derive(Default)]
struct QueueState {
    frames: VecDeque<FrameBuf>,
    rx_waker: Option<Waker>,
    tx_waker: Option<Waker>,
    closed: bool,
}

/// One direction of the wire.
struct Queue {
    state: Mutex<QueueState>,
    cap: usize,
    /// The receiving stack's inline entry, once its stack started.
    receiver: OnceLock<InlineReceiver>,
    /// Frames queued when the state was last unlocked ([`Queue::lock`]),
    /// `usize::MAX` once closed: the sender reads it without the lock.
    /// Only the sending end pushes, so a 0 it reads stays 0 until it
    /// pushes itself; a stale non-zero costs only the lock.
    queued: AtomicUsize,
}

impl Queue {
    fn new(cap: usize) -> Queue {
        Queue {
            state: Mutex::new(QueueState::default()),
            cap: cap.max(1),
            receiver: OnceLock::new(),
            queued: AtomicUsize::new(0),
        }
    }

    fn lock(&self) -> Locked<'_> {
        Locked { state: lock(&self.state), queued: &self.queued }
    }
}

/// A queue's locked state: unlocking records how many frames it holds
/// (`Queue::queued`).
struct Locked<'a> {
    state: MutexGuard<'a, QueueState>,
    queued: &'a AtomicUsize,
}

impl std::ops::Deref for Locked<'_> {
    type Target = QueueState;
    fn deref(&self) -> &QueueState {
        &self.state
    }
}

impl std::ops::DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut QueueState {
        &mut self.state
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        // A closed queue counts as never empty: its sends take the lock.
        let queued = if self.state.closed { usize::MAX } else { self.state.frames.len() };
        self.queued.store(queued, Ordering::Relaxed);
    }
}

/// A fault-free link end's transmit side, shared with its stack's tasks
/// ([`FrameDevice::direct_send`]): frames go straight into the other
/// stack ([`InlineReceiver`]) when nothing is queued ahead of them and
/// that stack is free, else into the queue as [`FrameDevice::send`] puts
/// them.
struct DirectTx {
    tx: Arc<Queue>,
    switch: LinkSwitch,
    /// The largest frame the wire carries (MTU plus the Ethernet header).
    max_frame: usize,
}

impl DirectTx {
    fn dropped(&self, n: usize) {
        self.switch.shared.dropped.fetch_add(n as u64, Ordering::Relaxed);
    }
}

impl DirectSend for DirectTx {
    fn try_send(&self, frames: &mut VecDeque<FrameBuf>) {
        if !self.switch.is_up() {
            self.dropped(frames.len());
            frames.clear();
            return;
        }
        let before = frames.len();
        frames.retain(|f| f.len() <= self.max_frame);
        self.dropped(before - frames.len());
        // Only this stack sends into this queue (its calls never overlap),
        // so a queue empty now stays empty until it pushes: no lock to see
        // it.
        if self.tx.queued.load(Ordering::Relaxed) == 0
            && let Some(receiver) = self.tx.receiver.get()
            && receiver.try_deliver(frames)
        {
            return;
        }
        let mut s = self.tx.lock();
        if s.closed {
            // The other end is gone: the wire swallows the frames.
            frames.clear();
            return;
        }
        let mut pushed = false;
        while s.frames.len() < self.tx.cap
            && let Some(frame) = frames.pop_front()
        {
            s.frames.push_back(frame);
            pushed = true;
        }
        let waker = if pushed { s.rx_waker.take() } else { None };
        drop(s);
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// Counters and the on/off switch shared by both ends.
struct Shared {
    up: AtomicBool,
    dropped: AtomicU64,
}

/// The on/off switch and counters of a link (cloneable).
#[derive(Clone)]
pub struct LinkSwitch {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for LinkSwitch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkSwitch").field("up", &self.is_up()).finish()
    }
}

impl LinkSwitch {
    /// Turns the link on (`true`) or off: while off, every frame is dropped
    /// silently in both directions.
    pub fn set_up(&self, up: bool) {
        self.shared.up.store(up, Ordering::SeqCst);
    }

    /// Whether the link carries frames.
    pub fn is_up(&self) -> bool {
        self.shared.up.load(Ordering::SeqCst)
    }

    /// Frames dropped so far (faults and the switch), both directions.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }
}

/// One end of an in-memory link: a [`FrameDevice`].
pub struct LinkEnd {
    tx: Arc<Queue>,
    rx: Arc<Queue>,
    caps: DeviceCaps,
    wire_mtu: usize,
    faults: Faults,
    rng: u64,
    sent_bytes: u64,
    switch: LinkSwitch,
}

impl std::fmt::Debug for LinkEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkEnd").field("caps", &self.caps).field("faults", &self.faults).finish_non_exhaustive()
    }
}

/// Two connected ends of an in-memory link: what one sends the other receives.
pub fn link_pair(config: LinkConfig) -> (LinkEnd, LinkEnd) {
    let ab = Arc::new(Queue::new(config.queue_frames));
    let ba = Arc::new(Queue::new(config.queue_frames));
    let switch = LinkSwitch { shared: Arc::new(Shared { up: AtomicBool::new(true), dropped: AtomicU64::new(0) }) };
    let caps = DeviceCaps {
        medium: config.medium,
        mtu: config.mtu,
        checksums: config.checksums,
        tso: None,
        tcp_tx_csum: false,
    };
    let end = |tx: &Arc<Queue>, rx: &Arc<Queue>, salt: u64| LinkEnd {
        tx: tx.clone(),
        rx: rx.clone(),
        caps,
        wire_mtu: config.mtu,
        faults: config.faults,
        rng: (config.faults.seed ^ salt).max(1),
        sent_bytes: 0,
        switch: switch.clone(),
    };
    (end(&ab, &ba, 0x9e37_79b9_7f4a_7c15), end(&ba, &ab, 0xc2b2_ae3d_27d4_eb4f))
}

impl LinkEnd {
    /// The link's switch (shared by both ends).
    pub fn switch(&self) -> LinkSwitch {
        self.switch.clone()
    }

    /// Reports `mtu` as this end's MTU (the wire still drops what exceeds
    /// the link's MTU).
    pub fn with_mtu(mut self, mtu: usize) -> LinkEnd {
        self.caps.mtu = mtu;
        self
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64*
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && ((self.next_random() >> 11) as f64 / (1u64 << 53) as f64) < p
    }

    fn header_len(&self) -> usize {
        match self.caps.medium {
            Medium::Ethernet => 14,
            Medium::Ip => 0,
        }
    }

    /// Applies the faults; `None` drops the frame.
    fn impair(&mut self, mut frame: FrameBuf) -> Option<FrameBuf> {
        if !self.switch.is_up() {
            return None;
        }
        if frame.len() > self.wire_mtu + self.header_len() {
            return None;
        }
        if let Some(limit) = self.faults.drop_after_bytes
            && self.sent_bytes >= limit
        {
            return None;
        }
        if self.chance(self.faults.loss) {
            return None;
        }
        if frame.len() < 100 && self.chance(self.faults.small_loss) {
            return None;
        }
        self.sent_bytes += frame.len() as u64;
        if !frame.is_empty() && self.chance(self.faults.corrupt) {
            let at = (self.next_random() % frame.len() as u64) as usize;
            frame[at] ^= 0x5a;
        }
        for _ in 0..self.faults.trailing_junk {
            let b = self.next_random() as u8;
            frame.extend_from_slice(&[b]);
        }
        Some(frame)
    }
}

impl Drop for LinkEnd {
    fn drop(&mut self) {
        for q in [&self.tx, &self.rx] {
            let mut s = q.lock();
            s.closed = true;
            let wakers = [s.rx_waker.take(), s.tx_waker.take()];
            drop(s);
            wakers.into_iter().flatten().for_each(Waker::wake);
        }
    }
}

impl FrameDevice for LinkEnd {
    fn caps(&self) -> DeviceCaps {
        self.caps
    }

    /// A link without faults (loss, corruption, junk, a byte limit) sends
    /// from any task and hands its frames straight to the other end's
    /// stack when it can; one with faults sends through its driver only.
    fn direct_send(&mut self) -> Option<Arc<dyn DirectSend>> {
        let f = self.faults;
        let faultless = f.loss == 0.0
            && f.small_loss == 0.0
            && f.corrupt == 0.0
            && f.trailing_junk == 0
            && f.drop_after_bytes.is_none();
        faultless.then(|| {
            Arc::new(DirectTx {
                tx: self.tx.clone(),
                switch: self.switch.clone(),
                max_frame: self.wire_mtu + self.header_len(),
            }) as Arc<dyn DirectSend>
        })
    }

    fn set_inline_receiver(&mut self, receiver: InlineReceiver) {
        let _ = self.rx.receiver.set(receiver);
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>, frames: &mut Vec<FrameBuf>, max: usize) -> Poll<io::Result<()>> {
        let mut s = self.rx.lock();
        if s.frames.is_empty() {
            // A gone peer is an unplugged cable: nothing more arrives.
            s.rx_waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = s.frames.len().min(max.max(1));
        frames.extend(s.frames.drain(..n));
        let waker = s.tx_waker.take();
        drop(s);
        if let Some(w) = waker {
            w.wake();
        }
        Poll::Ready(Ok(()))
    }

    fn poll_send_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut s = self.tx.lock();
        if s.closed || s.frames.len() < self.tx.cap {
            return Poll::Ready(Ok(()));
        }
        s.tx_waker = Some(cx.waker().clone());
        Poll::Pending
    }

    fn send(&mut self, frame: FrameBuf) -> io::Result<()> {
        let Some(frame) = self.impair(frame) else {
            self.switch.shared.dropped.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        };
        let mut s = self.tx.lock();
        if s.closed {
            // The other end is gone: the wire swallows the frame.
            return Ok(());
        }
        s.frames.push_back(frame);
        let waker = s.rx_waker.take();
        drop(s);
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }

    /// The whole batch under one lock and at most one wake-up of the peer.
    fn poll_send_batch(&mut self, cx: &mut Context<'_>, frames: &mut VecDeque<FrameBuf>) -> Poll<io::Result<()>> {
        let tx = self.tx.clone();
        let mut s = tx.lock();
        let mut pushed = false;
        while let Some(frame) = frames.pop_front() {
            if s.closed {
                // The other end is gone: the wire swallows the frames.
                frames.clear();
                break;
            }
            if s.frames.len() >= tx.cap {
                frames.push_front(frame);
                s.tx_waker = Some(cx.waker().clone());
                break;
            }
            match self.impair(frame) {
                Some(frame) => {
                    s.frames.push_back(frame);
                    pushed = true;
                }
                None => {
                    self.switch.shared.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        let waker = if pushed { s.rx_waker.take() } else { None };
        drop(s);
        if let Some(w) = waker {
            w.wake();
        }
        if frames.is_empty() { Poll::Ready(Ok(())) } else { Poll::Pending }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    fn cx() -> Context<'static> {
        Context::from_waker(Waker::noop())
    }

    /// The next received frame, if one is waiting.
    fn recv(end: &mut LinkEnd) -> Option<Vec<u8>> {
        let mut got = Vec::new();
        match end.poll_recv(&mut cx(), &mut got, 1) {
            Poll::Ready(Ok(())) => got.pop().map(FrameBuf::into_vec),
            _ => None,
        }
    }

    #[test]
    fn frames_cross_and_the_switch_drops() {
        let (mut a, mut b) = link_pair(LinkConfig::ip());
        a.send(vec![1, 2, 3].into()).unwrap();
        assert_eq!(recv(&mut b), Some(vec![1, 2, 3]));
        a.switch().set_up(false);
        a.send(vec![4].into()).unwrap();
        assert_eq!(recv(&mut b), None);
        assert_eq!(b.switch().dropped(), 1);
    }

    #[test]
    fn mtu_junk_and_drop_after() {
        let faults = Faults { trailing_junk: 3, drop_after_bytes: Some(10), ..Faults::NONE };
        let (mut a, mut b) = link_pair(LinkConfig::ip().mtu(8).faults(faults));
        a.send(vec![0; 9].into()).unwrap();
        assert_eq!(recv(&mut b), None, "over the MTU");
        a.send(vec![0; 8].into()).unwrap();
        assert_eq!(recv(&mut b).map(|f| f.len()), Some(11));
        let mut batch: VecDeque<FrameBuf> = [vec![0; 4].into(), vec![0; 4].into()].into();
        assert!(a.poll_send_batch(&mut cx(), &mut batch).is_ready());
        assert_eq!(recv(&mut b).map(|f| f.len()), Some(7));
        assert_eq!(recv(&mut b), None, "after 10 bytes everything drops");
    }

    #[test]
    fn the_direct_side_queues_without_a_receiver_and_keeps_the_wire_rules() {
        let (mut a, mut b) = link_pair(LinkConfig::ip().mtu(8));
        let direct = a.direct_send().expect("a fault-free link shares its transmit side");
        let mut frames: VecDeque<FrameBuf> = [vec![1; 8].into(), vec![2; 9].into(), vec![3].into()].into();
        direct.try_send(&mut frames);
        assert!(frames.is_empty(), "all taken (one dropped: over the MTU)");
        assert_eq!((recv(&mut b), recv(&mut b), recv(&mut b)), (Some(vec![1; 8]), Some(vec![3]), None));
        assert_eq!(a.switch().dropped(), 1);
        a.switch().set_up(false);
        let mut frames: VecDeque<FrameBuf> = [vec![4].into()].into();
        direct.try_send(&mut frames);
        assert_eq!((frames.len(), recv(&mut b), a.switch().dropped()), (0, None, 2), "the switch drops");
        let faulty = Faults { loss: 0.1, ..Faults::NONE };
        assert!(link_pair(LinkConfig::ip().faults(faulty)).0.direct_send().is_none(), "faults need the driver");
    }

    #[test]
    fn the_direct_side_stops_at_the_queue_cap() {
        let (mut a, mut b) = link_pair(LinkConfig { queue_frames: 2, ..LinkConfig::ip() });
        let direct = a.direct_send().expect("shared");
        let mut frames: VecDeque<FrameBuf> = (0..3u8).map(|i| FrameBuf::from(vec![i])).collect();
        direct.try_send(&mut frames);
        assert_eq!(frames.len(), 1, "the third waits for room");
        assert_eq!(recv(&mut b), Some(vec![0]));
        direct.try_send(&mut frames);
        assert_eq!((recv(&mut b), recv(&mut b), recv(&mut b)), (Some(vec![1]), Some(vec![2]), None));
    }

    #[test]
    fn loss_is_seeded() {
        let run = |seed| {
            let (mut a, mut b) = link_pair(LinkConfig::ip().faults(Faults { loss: 0.5, seed, ..Faults::NONE }));
            (0..100u8).for_each(|i| a.send(vec![i].into()).unwrap());
            let mut got = Vec::new();
            while let Poll::Ready(Ok(())) = b.poll_recv(&mut cx(), &mut got, 7) {}
            got.iter().map(|f| f[0]).collect::<Vec<u8>>()
        };
        assert_eq!(run(7), run(7));
        assert!((20..80).contains(&run(7).len()));
    }
}

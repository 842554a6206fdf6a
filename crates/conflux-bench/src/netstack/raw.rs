//! The bare engine: two smoltcp interfaces on an in-memory IP link, polled
//! by hand on one thread, with no shell around them (no runtime, no locks,
//! no flows). The `smoltcp-raw` baselines of `netstack-mem-1500` and
//! `netstack-mem-lo`, and the report-only `smoltcp-raw` figure of
//! `netstack-rtt`, run on it.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Instant;

use bytes::Bytes;
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{self, DeviceCapabilities, Medium};
use smoltcp::socket::tcp;
use smoltcp::time::Instant as SInstant;
use smoltcp::wire::{HardwareAddress, IpCidr};

use super::{A, B, Feeder, PING, PING_BYTES};
use crate::data::{fold, offsets};
use crate::{micros, throughput_gbps};

/// The settings of a [`smoltcp_raw`] loop.
#[derive(Debug, Clone, Copy)]
pub(super) struct RawLink {
    /// The IP MTU.
    pub(super) mtu: usize,
    /// Checksums neither computed nor checked (loopback-like), else computed
    /// and checked by smoltcp.
    pub(super) offloaded: bool,
    /// Each socket's receive and send buffer, bytes.
    pub(super) buffers: usize,
    /// The reader's buffer, bytes.
    pub(super) read: usize,
}

/// Frames given back after use, taken again for the next frame built.
type Pool = Rc<RefCell<Vec<Vec<u8>>>>;

/// One interface's view of the link: what it receives and where it sends.
struct Dev<'a> {
    rx: &'a mut VecDeque<Vec<u8>>,
    tx: &'a mut VecDeque<Vec<u8>>,
    pool: Pool,
    caps: DeviceCapabilities,
}

struct Rx(Vec<u8>, Pool);
struct Tx<'a>(&'a mut VecDeque<Vec<u8>>, Pool);

impl phy::RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        let r = f(&self.0);
        self.1.borrow_mut().push(self.0);
        r
    }
}

impl phy::TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut frame = self.1.borrow_mut().pop().unwrap_or_default();
        frame.resize(len, 0);
        let r = f(&mut frame);
        self.0.push_back(frame);
        r
    }
}

impl phy::Device for Dev<'_> {
    type RxToken<'a>
        = Rx
    where
        Self: 'a;
    type TxToken<'a>
        = Tx<'a>
    where
        Self: 'a;
    fn receive(&mut self, _: SInstant) -> Option<(Rx, Tx<'_>)> {
        let frame = self.rx.pop_front()?;
        Some((Rx(frame, self.pool.clone()), Tx(self.tx, self.pool.clone())))
    }
    fn transmit(&mut self, _: SInstant) -> Option<Tx<'_>> {
        Some(Tx(self.tx, self.pool.clone()))
    }
    fn capabilities(&self) -> DeviceCapabilities {
        self.caps.clone()
    }
}

/// Two interfaces (A at [`A`], B at [`B`]) joined by two frame queues, one
/// TCP socket each: A's connects to B's, which listens on port 5001.
struct RawPair {
    caps: DeviceCapabilities,
    pool: Pool,
    /// Frames from A to B, and from B to A.
    ab: VecDeque<Vec<u8>>,
    ba: VecDeque<Vec<u8>>,
    ia: Interface,
    ib: Interface,
    sa: SocketSet<'static>,
    sb: SocketSet<'static>,
    ha: SocketHandle,
    hb: SocketHandle,
    epoch: Instant,
}

impl RawPair {
    /// The pair with A's connect under way (the handshake runs in the
    /// first polls).
    fn connect(link: RawLink) -> RawPair {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = link.mtu;
        if link.offloaded {
            caps.checksum = phy::ChecksumCapabilities::ignored();
        }
        let pool: Pool = Rc::new(RefCell::new(Vec::new()));
        let (mut ab, mut ba) = (VecDeque::new(), VecDeque::new());
        let epoch = Instant::now();
        let iface = |ip: [u8; 4], rx: &mut VecDeque<Vec<u8>>, tx: &mut VecDeque<Vec<u8>>| {
            let mut dev = Dev { rx, tx, pool: pool.clone(), caps: caps.clone() };
            let mut i = Interface::new(Config::new(HardwareAddress::Ip), &mut dev, SInstant::from_micros(0));
            i.update_ip_addrs(|a| {
                let _ = a.push(IpCidr::new(std::net::Ipv4Addr::from(ip).into(), 24));
            });
            i
        };
        let mut ia = iface(A, &mut ba, &mut ab);
        let ib = iface(B, &mut ab, &mut ba);
        let buffer = || tcp::SocketBuffer::new(vec![0; link.buffers]);
        let socket = || tcp::Socket::new(buffer(), buffer());
        let (mut sa, mut sb) = (SocketSet::new(Vec::new()), SocketSet::new(Vec::new()));
        let hb = sb.add(socket());
        sb.get_mut::<tcp::Socket<'_>>(hb).listen(5001).expect("listen");
        let ha = sa.add(socket());
        sa.get_mut::<tcp::Socket<'_>>(ha)
            .connect(ia.context(), (std::net::Ipv4Addr::from(B), 5001), 49152)
            .expect("connect");
        RawPair { caps, pool, ab, ba, ia, ib, sa, sb, ha, hb, epoch }
    }

    fn now(&self) -> SInstant {
        SInstant::from_micros(self.epoch.elapsed().as_micros() as i64)
    }

    /// One poll of A: what B sent in, what A has out.
    fn poll_a(&mut self) -> &mut tcp::Socket<'static> {
        let now = self.now();
        let mut dev = Dev { rx: &mut self.ba, tx: &mut self.ab, pool: self.pool.clone(), caps: self.caps.clone() };
        self.ia.poll(now, &mut dev, &mut self.sa);
        self.sa.get_mut::<tcp::Socket<'static>>(self.ha)
    }

    /// One poll of B.
    fn poll_b(&mut self) -> &mut tcp::Socket<'static> {
        let now = self.now();
        let mut dev = Dev { rx: &mut self.ab, tx: &mut self.ba, pool: self.pool.clone(), caps: self.caps.clone() };
        self.ib.poll(now, &mut dev, &mut self.sb);
        self.sb.get_mut::<tcp::Socket<'static>>(self.hb)
    }
}

/// A plain single-threaded smoltcp loop: client A writes `total` bytes
/// in `chunk` slices, server B reads `link.read` at a time into a buffer and
/// folds it. Returns Gbit/s.
pub(super) fn smoltcp_raw(link: RawLink, src: &Bytes, total: u64, chunk: usize, want: u64) -> f64 {
    let mut pair = RawPair::connect(link);
    let start = Instant::now();
    let mut feeder = Feeder::new(offsets(total, chunk), chunk);
    let mut buf = vec![0u8; link.read];
    let (mut sum, mut received) = (0u64, 0u64);
    while received < total {
        feeder.feed(pair.poll_a(), src);
        let s = pair.poll_b();
        while s.can_recv() {
            let n = s.recv_slice(&mut buf).expect("recv");
            sum = fold(sum, &buf[..n]);
            received += n as u64;
        }
    }
    assert_eq!(sum, want, "smoltcp-raw: checksum differs");
    throughput_gbps(total, start.elapsed())
}

/// `round_trips` 64-byte ping-pongs on the bare engine (Nagle off on both
/// sides, as `netstack-rtt` sets it): A sends, B echoes what it read, A
/// reads the echo whole. Each side polls only when there is something for
/// it, as a shell with perfect wake-ups would: four polls a round trip (A's
/// egress, B's ingress, B's egress, A's ingress). Returns microseconds per
/// round trip, the handshake left out.
pub(super) fn smoltcp_raw_rtt(link: RawLink, round_trips: usize) -> f64 {
    // Every exchange here takes one poll a step: a loop that needs many
    // more has lost a segment, and fails instead of spinning.
    const POLLS: usize = 1_000;
    let mut pair = RawPair::connect(link);
    let mut established = false;
    for _ in 0..POLLS {
        let a = pair.poll_a().may_send();
        let b = pair.poll_b().may_recv();
        established = a && b;
        if established {
            break;
        }
    }
    assert!(established, "smoltcp-raw: no handshake in {POLLS} polls");
    pair.poll_a().set_nagle_enabled(false);
    pair.poll_b().set_nagle_enabled(false);
    let mut buf = [0u8; PING];
    let start = Instant::now();
    for _ in 0..round_trips {
        let a = pair.sa.get_mut::<tcp::Socket<'static>>(pair.ha);
        assert_eq!(a.send_slice(&PING_BYTES).expect("send"), PING, "smoltcp-raw: a whole ping");
        pair.poll_a();
        let mut echoed = 0;
        for polls in 0.. {
            assert!(polls < POLLS, "smoltcp-raw: the ping did not arrive");
            if echoed == PING {
                break;
            }
            let b = pair.poll_b();
            while b.can_recv() {
                let n = b.recv_slice(&mut buf).expect("recv");
                assert_eq!(b.send_slice(&buf[..n]).expect("echo"), n, "smoltcp-raw: the echo fits");
                echoed += n;
            }
        }
        pair.poll_b();
        let mut got = 0;
        for polls in 0.. {
            assert!(polls < POLLS, "smoltcp-raw: the echo did not arrive");
            if got == PING {
                break;
            }
            let a = pair.poll_a();
            while a.can_recv() {
                got += a.recv_slice(&mut buf).expect("recv");
            }
        }
    }
    micros(start.elapsed()) / round_trips as f64
}

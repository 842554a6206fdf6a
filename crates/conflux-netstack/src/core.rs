//! The stack's sans-IO state machine: the smoltcp interface, one socket set
//! per connection, the connection table, listeners and ports.
//!
//! [`Core`] takes frames and the time and gives back frames, [`Event`]s and
//! its next deadline. It has no async, no locks, no tokio types and never
//! reads a clock: the shell (`stack.rs`, `flow.rs`) owns it behind a mutex,
//! moves bytes between it and the device and flows, and turns its events
//! into wake-ups.
//!
//! Call order, each time anything happens (frames arrived, a flow acted, a
//! deadline passed):
//! 1. [`handle_frames`](Core::handle_frames) with the received frames;
//! 2. [`handle_timeout`](Core::handle_timeout) with the time;
//! 3. [`poll_transmit`](Core::poll_transmit) for the frames to send (frames
//!    to our own addresses are delivered inside);
//! 4. [`poll_event`](Core::poll_event) until `None`;
//! 5. [`poll_timeout`](Core::poll_timeout): call again no later than that.
//!
//! Connection operations (`send`, `recv`, `close_write`, `release`, ...)
//! may come in between; they take effect at the next `poll_transmit`.
//!
//! Per-flow cost does not grow with idle flows: each connection has its own
//! smoltcp socket set (smoltcp walks every socket of a set on each poll), a
//! frame is demultiplexed by a hash lookup, egress polls only connections
//! with something to do (a `dirty` list) and due timers (one ordered set of
//! deadlines). Nothing walks all connections except `close_all` and the
//! rare neighbour answer (ARP/NDP), which unblocks sockets waiting for it.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::hash::BuildHasherDefault;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use conflux_tcp::Keepalive;
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet, SocketStorage};
use smoltcp::phy::{self, ChecksumCapabilities, DeviceCapabilities};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::{
    EthernetAddress, EthernetFrame, EthernetRepr, HardwareAddress, IpAddress, IpCidr, IpListenEndpoint, IpProtocol,
    IpRepr, TcpControl, TcpPacket, TcpRepr, TcpSeqNumber,
};

use crate::config::StackConfig;
use crate::device::{Checksums, DeviceCaps, FrameBuf, FrameCache, FramePool, Medium, RxCsum};
use crate::ports::Ports;
use crate::rewrite;
use crate::wire::{self, Inspected, Segment, seq_after};

mod dhcp;
mod udp;
pub(crate) use udp::{UdpId, UdpRecv, UdpRefused};

/// A connection's key.
pub(crate) type ConnId = u64;

/// The hasher of the map keyed by [`ConnId`]: the ids are the core's own
/// (a counter, never chosen by a peer, so there is no flooding to fear),
/// and the map is looked up several times per frame: one multiply instead
/// of SipHash. The multiply by an odd constant keeps consecutive ids in
/// distinct buckets (low bits) and spreads them over the tag (high bits).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(ID_MIX);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(ID_MIX);
    }
}

/// 2^64 / the golden ratio, odd.
const ID_MIX: u64 = 0x9e37_79b9_7f4a_7c15;

/// A listener's identity, chosen by the shell (a new one per `listen`).
pub(crate) type ListenId = u64;

/// A listener's key: the address it listens on (ours, or unspecified for
/// all of ours) and its port.
pub(crate) type ListenKey = SocketAddr;

/// (local as the peer sees it, remote): how ingress finds a connection.
type Tuple = (SocketAddr, SocketAddr);

/// What the core tells the shell.
#[derive(Debug)]
pub(crate) enum Event {
    /// A SYN for a holding listener: nothing was answered yet. The shell
    /// calls [`Core::accept_syn`] (the handshake proceeds) or
    /// [`Core::refuse_syn`] (an RST goes back).
    Syn { id: ConnId, listen: ListenId, local: SocketAddr, remote: SocketAddr },
    /// A handshake on a listener finished: the connection is the shell's
    /// (`local` is what the peer dialled).
    Accepted { id: ConnId, listen: ListenId, local: SocketAddr, remote: SocketAddr },
    /// Our connect finished its handshake.
    Established(ConnId),
    /// Data (or the end of the stream) arrived.
    Readable(ConnId),
    /// Sent data was acknowledged: room to write.
    Writable(ConnId),
    /// The connection closed (reset, timed out, or finished).
    Closed(ConnId),
}

/// How a connection ended, when not cleanly.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct End {
    /// An RST arrived.
    pub(crate) reset: bool,
    /// Sent data went unacknowledged for the user timeout.
    pub(crate) timed_out: bool,
}

/// Where a connect stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConnectState {
    /// SYN out, no answer yet.
    Pending,
    /// The handshake finished.
    Established,
    /// Refused (an RST) or otherwise closed.
    Failed,
}

/// A read's outcome.
#[derive(Debug)]
pub(crate) enum Recv<R> {
    /// What the reader returned for the bytes it took.
    Data(R),
    /// Nothing buffered yet.
    Empty,
    /// The peer finished (FIN) and everything was read.
    Finished,
    /// The connection is closed; `End` says whether by reset or timeout.
    Closed(End),
}

/// Why a write took nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SendRefused {
    /// The buffer is full: wait for [`Event::Writable`].
    Full,
    /// The connection can no longer send.
    Closed(End),
}

/// Why a listen could not be reserved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BindRefused {
    /// The stack was disconnected.
    Disconnected,
    /// The address is not ours.
    NotOurs(SocketAddr),
    /// No ephemeral port is free.
    Exhausted,
}

/// The transparent listener: which SYNs it takes and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Transparent {
    /// The listener (registered under `any_addr(port)`).
    pub(crate) port: u16,
    /// Also every port of these addresses of ours (a gateway address),
    /// unless a listener on that address and port exists.
    pub(crate) own: Vec<IpAddr>,
}

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Our SYN is out.
    Connecting,
    /// A peer's SYN for a holding listener waits for the shell's decision.
    Held { port: ListenKey },
    /// A peer's SYN made this socket; the handshake is not finished.
    HalfOpen { port: ListenKey },
    /// The shell owns it.
    Open,
    /// The shell let go (closed, dropped, connect abandoned): the socket
    /// finishes (FIN, TIME_WAIT) and is reaped once closed.
    Orphan,
    /// An orphan aborted whose RST has not left yet: smoltcp found no
    /// neighbour entry (ARP, NDP: entries last 60 s) and dropped it while
    /// asking. Kept until the RST went out, or `until` (set by the first
    /// egress that could not send it) passed (see [`Core::orphan_polled`]).
    Resetting { until: Option<Instant> },
}

struct Conn {
    /// This connection's own socket set (one socket).
    set: SocketSet<'static>,
    handle: SocketHandle,
    /// Our address as smoltcp sees it.
    local: SocketAddr,
    remote: SocketAddr,
    phase: Phase,
    end: End,
    /// Accepted by the transparent listener: the destination the peer
    /// dialled (not ours). Ingress is rewritten from it to `local`, egress back.
    nat: Option<SocketAddr>,
    /// The local port came from the allocator (freed when reaped).
    ephemeral: bool,
    /// The last sign of life of the peer while our data is outstanding.
    progress_at: Instant,
    /// The highest acknowledgment number of the peer that smoltcp took.
    peer_ack: Option<u32>,
    /// The sequence number just past the last segment we sent (SND.MAX).
    snd_max: Option<u32>,
    /// The highest acknowledgment we sent (RCV.NXT as the peer last heard it).
    rcv_nxt: Option<u32>,
    /// RCV.NXT itself: `rcv_nxt` moved on by what smoltcp queued in
    /// sequence since (a delayed ACK may not be out yet). For RFC 5961's
    /// exact-RST check.
    rcv_next: Option<u32>,
    /// When the SYN arrived (held and half-open sockets).
    since: Instant,
    /// On the dirty list.
    dirty: bool,
    /// Its deadline.
    timer: Option<Instant>,
    /// Its entry in the timer set: at or before `timer` (a deadline moved
    /// later keeps its entry, which re-files it when it comes due; most
    /// moves are later ones, one per segment sent or received).
    entry: Option<Instant>,
    /// The peer's real MSS when smoltcp was shown a larger one (TSO).
    real_mss: Option<u16>,
    /// A held SYN, fed to smoltcp once accepted.
    held: Option<FrameBuf>,
    /// In TIME_WAIT, answered by the core: its socket went back to the pool.
    /// (Boxed: every connection pays for the field, few are waiting.)
    time_wait: Option<Box<TimeWait>>,
    /// The peer's bare FIN arrived: until then, our ACK of it waits for our
    /// own FIN (or data) to carry it (see [`Conn::fin_ack_waits`]).
    fin_ack_until: Option<Instant>,
    /// Our close waits in CLOSE-WAIT until every queued byte was sent
    /// (see [`Conn::close`]); egress applies it.
    close_held: bool,
    /// When the first egress after the shell let go ran: the orphan
    /// timeout counts from then (see [`Conn::orphan_deadline`]).
    orphan_since: Option<Instant>,
    /// Full-sized data segments still to acknowledge at once (see
    /// [`QUICK_ACKS`]).
    quick_acks: u8,
}

/// TIME_WAIT as the core keeps it for an orphan once smoltcp's socket (and
/// its buffers) went back to the pool: what the wait must answer with. A
/// kernel does the same (its TIME_WAIT sockets are small, bufferless ones);
/// smoltcp's socket would hold its buffers for the whole 10 s.
#[derive(Debug, Clone, Copy)]
struct TimeWait {
    /// Our SND.NXT (past our FIN).
    snd_nxt: u32,
    /// RCV.NXT (past the peer's FIN).
    rcv_nxt: u32,
    /// The window the ACKs advertise.
    window: u16,
    /// When the wait ends (restarted by segments, as smoltcp does).
    until: Instant,
    /// The last rate-limited ACK.
    challenged_at: Option<Instant>,
}

/// How long a released connection's RST may wait for its neighbour.
const RESET_PATIENCE: Duration = Duration::from_secs(3);

/// smoltcp's TIME-WAIT duration.
const TIME_WAIT: Duration = Duration::from_secs(10);

/// A connection's first full-sized data segments acknowledged at once, not
/// after smoltcp's ACK delay (Linux's quick-ACK mode at a connection's
/// start, `TCP_MAX_QUICKACKS`). smoltcp starts the sender's congestion
/// window at 2 KiB: its first segment of a bulk write is one full segment,
/// Nagle holds the rest, and a delayed ACK of it stalls the transfer for
/// the whole delay (10 ms) while slow start has barely begun. Small
/// segments (requests, pings) keep the delay: their ACK rides on the answer.
const QUICK_ACKS: u8 = 16;

impl Conn {
    fn socket(&self) -> &tcp::Socket<'static> {
        self.set.get::<tcp::Socket<'static>>(self.handle)
    }

    fn socket_mut(&mut self) -> &mut tcp::Socket<'static> {
        self.set.get_mut::<tcp::Socket<'static>>(self.handle)
    }

    /// The tuple ingress finds it by.
    fn tuple(&self) -> Tuple {
        (self.nat.unwrap_or(self.local), self.remote)
    }

    /// Our ACK of the peer's FIN is held back at `now`: the deadline has not
    /// passed and the socket has nothing but that ACK to send (CLOSE-WAIT,
    /// nothing queued). smoltcp acknowledges a bare FIN at once (its
    /// delayed-ACK timer starts only for data), and a forwarder's own FIN
    /// typically follows within a millisecond, once the far side closed:
    /// one frame instead of two, as a kernel's delayed ACK does. Bounded by
    /// smoltcp's ACK delay: if our FIN does not come, the ACK goes alone.
    fn fin_ack_waits(&self, now: Instant) -> bool {
        self.fin_ack_until.is_some_and(|until| now < until)
            && !self.close_held
            && self.socket().state() == tcp::State::CloseWait
            && self.socket().send_queue() == 0
    }

    /// Notes a segment (not an RST) this connection sent: SND.MAX past it,
    /// RCV.NXT as it acknowledges, and a super-segment tagged for GSO.
    fn note_sent(&mut self, frame: &mut FrameBuf, seq_end: u32, ack: Option<u32>, payload_len: usize) {
        if self.snd_max.is_none_or(|max| seq_after(seq_end, max)) {
            self.snd_max = Some(seq_end);
        }
        if let Some(ack) = ack {
            if self.rcv_nxt.is_none_or(|nxt| seq_after(ack, nxt)) {
                self.rcv_nxt = Some(ack);
            }
            if self.rcv_next.is_none_or(|nxt| seq_after(ack, nxt)) {
                self.rcv_next = Some(ack);
            }
        }
        if let Some(mss) = self.real_mss
            && payload_len > usize::from(mss)
        {
            frame.meta.gso_mss = Some(mss);
        }
    }

    /// Runs `f` (an egress poll, or the `poll_at` that decides whether one
    /// is due) with Nagle's algorithm counting real segments: smoltcp's
    /// Nagle is lifted for it when at least one real MSS is unsent, and put
    /// back after.
    ///
    /// smoltcp holds a segment shorter than the MSS it was shown while data
    /// is in flight. With segmentation offload that is the raised MSS
    /// ([`DeviceCaps::tso`]): any super-segment short of it waited a round
    /// trip, and the ring buffer's wrap cuts one in two each time it is
    /// passed (a 64 KiB buffer written in 64 KiB slices went out as 62 KiB,
    /// then, an ACK later, 2 KiB: half the speed). Nagle's rule is about
    /// the segments on the wire, the real MSS, as the kernel applies it to
    /// its own TSO: less than one real MSS unsent still waits. Unsent is
    /// what smoltcp holds less what is in flight (SND.MAX - SND.UNA as seen
    /// here; after a retransmission timeout smoltcp resends from SND.UNA,
    /// which this counts as unsent: at worst one small segment early). The
    /// peer's window is not looked at (smoltcp does not show it): a segment
    /// it cuts shorter than a real MSS may leave beside data in flight.
    fn with_real_nagle<R>(&mut self, f: impl FnOnce(&mut Conn) -> R) -> R {
        let lift = self.real_mss.is_some_and(|mss| {
            let unsent = self.socket().send_queue().saturating_sub(self.in_flight().unwrap_or(0));
            self.socket().nagle_enabled() && unsent >= usize::from(mss)
        });
        if !lift {
            return f(self);
        }
        self.socket_mut().set_nagle_enabled(false);
        let r = f(self);
        self.socket_mut().set_nagle_enabled(true);
        r
    }

    /// Sent data waits for its acknowledgment on an open connection (the
    /// user timeout runs).
    fn outstanding(&self) -> bool {
        matches!(self.phase, Phase::Open)
            && !self.end.timed_out
            && self.snd_max.is_some()
            && self.peer_ack != self.snd_max
            && self.socket().state() != tcp::State::Closed
    }

    /// smoltcp's `close` (FIN once everything queued left), except that in
    /// CLOSE-WAIT with bytes not yet sent it waits (`close_held`) until
    /// they were, as RFC 9293 3.10.4 has it ("queue this request until all
    /// preceding SENDs have been segmentized"). smoltcp 0.14 moves to
    /// LAST-ACK at once, and there a bare window update (an ACK that
    /// acknowledges nothing new) only draws a challenge ACK: its window is
    /// ignored. A peer whose zero window reopens then waits for our
    /// zero-window probe, an RTO (at least 1 s) later. In CLOSE-WAIT the
    /// update is heard. Nagle's algorithm is turned off meanwhile (smoltcp
    /// exempts a closing socket's last bytes from it; a held close must not
    /// make them wait for an ACK).
    fn close(&mut self) {
        if self.socket().state() == tcp::State::CloseWait && !self.all_sent() {
            self.socket_mut().set_nagle_enabled(false);
            self.close_held = true;
        } else {
            self.socket_mut().close();
            self.close_held = false;
        }
    }

    /// When this orphan is aborted for hearing nothing from its peer
    /// (`timeout` after it was let go or after the peer's last sign of
    /// life, whichever is later), unless its socket has a timeout of its
    /// own (keepalive) or is closed or in TIME_WAIT already.
    ///
    /// Not smoltcp's timeout: it counts from the last segment received, so
    /// a flow closed after more than `timeout` of silence was aborted at
    /// once, its FIN turned into an RST.
    fn orphan_deadline(&self, timeout: Duration) -> Option<Instant> {
        let sock = self.socket();
        if !matches!(self.phase, Phase::Orphan)
            || sock.timeout().is_some()
            || matches!(sock.state(), tcp::State::Closed | tcp::State::TimeWait)
        {
            return None;
        }
        Some(self.orphan_since?.max(self.progress_at) + timeout.into())
    }

    /// SND.MAX - SND.UNA as seen here (the highest sequence number sent,
    /// the last acknowledgment smoltcp took): what was sent and is not
    /// acknowledged yet, once both are known.
    fn in_flight(&self) -> Option<usize> {
        match (self.snd_max, self.peer_ack) {
            (Some(max), Some(una)) => Some(max.wrapping_sub(una) as usize),
            _ => None,
        }
    }

    /// Every byte queued was sent at least once: what is in flight is the
    /// whole send queue (smoltcp's unacknowledged and unsent bytes).
    /// Nothing queued counts as sent whatever the sequence numbers say.
    fn all_sent(&self) -> bool {
        let queued = self.socket().send_queue();
        queued == 0 || self.in_flight() == Some(queued)
    }
}

/// What changes of a socket the shell hears about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Snapshot {
    state: tcp::State,
    recv_queue: usize,
    send_queue: usize,
}

impl Snapshot {
    fn of(sock: &tcp::Socket<'_>) -> Snapshot {
        Snapshot { state: sock.state(), recv_queue: sock.recv_queue(), send_queue: sock.send_queue() }
    }
}

struct Listen {
    id: ListenId,
    keepalive: Option<Keepalive>,
    hold: bool,
    /// Unfinished handshakes, oldest first (held ones included).
    half_open: VecDeque<ConnId>,
    owns_port: bool,
}

/// smoltcp's view of our device for one poll: at most one received frame,
/// transmitted frames built in the pool and collected.
struct Bridge<'a> {
    rx: Option<FrameBuf>,
    tx: &'a mut Vec<FrameBuf>,
    pool: &'a FrameCache,
    caps: &'a DeviceCapabilities,
}

struct RxToken<'a>(FrameBuf, &'a FrameCache);
struct TxToken<'a>(&'a mut Vec<FrameBuf>, &'a FrameCache);

impl phy::RxToken for RxToken<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        let r = f(&self.0);
        // Given back with the round's other spent frames (one lock).
        self.1.spend(self.0);
        r
    }
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        // A pooled buffer, not zeroed: smoltcp writes every byte of it.
        let mut frame = self.1.take(len);
        let r = f(&mut frame);
        self.0.push(frame);
        r
    }
}

impl phy::Device for Bridge<'_> {
    type RxToken<'a>
        = RxToken<'a>
    where
        Self: 'a;
    type TxToken<'a>
        = TxToken<'a>
    where
        Self: 'a;

    fn receive(&mut self, _: Instant) -> Option<(RxToken<'_>, TxToken<'_>)> {
        let frame = self.rx.take()?;
        Some((RxToken(frame, self.pool), TxToken(self.tx, self.pool)))
    }

    fn transmit(&mut self, _: Instant) -> Option<TxToken<'_>> {
        Some(TxToken(self.tx, self.pool))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        self.caps.clone()
    }
}

fn smol_caps(caps: DeviceCaps) -> DeviceCapabilities {
    let mut c = DeviceCapabilities::default();
    c.medium = match caps.medium {
        Medium::Ethernet => phy::Medium::Ethernet,
        Medium::Ip => phy::Medium::Ip,
    };
    let mtu = caps.tso.map_or(caps.mtu, |n| caps.mtu.max(usize::from(n)));
    c.max_transmission_unit = match caps.medium {
        Medium::Ethernet => mtu + 14,
        Medium::Ip => mtu,
    };
    c.checksum = match caps.checksums {
        Checksums::Compute => {
            // The core verifies IPv4 header and TCP checksums of every
            // received frame before anything else looks at it (see
            // `wire::inspect`): smoltcp only computes them on transmit.
            let mut sums = ChecksumCapabilities::default();
            sums.ipv4 = phy::Checksum::Tx;
            // A device that completes TCP checksums gets the field 0
            // (smoltcp's form when it does not compute one).
            sums.tcp = if caps.tcp_tx_csum { phy::Checksum::None } else { phy::Checksum::Tx };
            sums
        }
        Checksums::Offloaded => ChecksumCapabilities::ignored(),
    };
    c
}

/// The EUI-64 link-local address of `mac`.
fn link_local(mac: [u8; 6]) -> Ipv6Addr {
    let m = mac;
    Ipv6Addr::from([0xfe, 0x80, 0, 0, 0, 0, 0, 0, m[0] ^ 0x02, m[1], m[2], 0xff, 0xfe, m[3], m[4], m[5]])
}

/// Egress rounds per connection per poll (each sends at most one segment).
const EGRESS_ROUNDS: usize = 128;
/// Local-delivery rounds per `poll_transmit`.
const LOCAL_ROUNDS: usize = 16;
/// Socket buffer bytes (receive + send) kept in reaped sockets for reuse...
const SOCKET_POOL_BYTES: usize = 4 << 20;
/// ...or this many sockets, if more: a burst of short connections with
/// large buffers (conflux-usernet's 512 KiB) still finds sockets to reuse.
const SOCKET_POOL_MIN: usize = 16;

/// The stack's state machine (see the module docs for the call order).
pub(crate) struct Core {
    iface: Interface,
    medium: Medium,
    caps: DeviceCapabilities,
    verify: bool,
    /// The MSS smoltcp is shown with segmentation offload (IPv4, IPv6).
    tso_mss: Option<(u16, u16)>,
    /// The payload of a full-sized segment on the device's MTU (IPv4,
    /// IPv6; headers without options): see [`QUICK_ACKS`].
    full_mss: (usize, usize),
    /// Where frames are built and received ones given back.
    pool: FrameCache,
    /// An empty set: ingress for no connection (smoltcp answers RST, ICMP, ARP).
    spare: SocketSet<'static>,
    /// Reaped sockets for new connections (see [`Core::new_socket`]), at
    /// most `pool_cap`.
    pool_sockets: Vec<tcp::Socket<'static>>,
    pool_cap: usize,
    conns: HashMap<ConnId, Conn, BuildHasherDefault<IdHasher>>,
    tuples: HashMap<Tuple, ConnId>,
    /// The tuple ingress found last and its connection: a bulk flow's
    /// frames come in runs for one connection, and a hit skips hashing the
    /// 4-tuple (SipHash: a peer chooses it) for every frame. Cleared when
    /// that connection goes.
    last_tuple: Option<(Tuple, ConnId)>,
    listens: HashMap<ListenKey, Listen>,
    transparent: Option<Transparent>,
    ports: Ports,
    dirty: Vec<ConnId>,
    timers: BTreeSet<(Instant, ConnId)>,
    events: VecDeque<Event>,
    /// Frames to our own addresses, waiting for ingress.
    local: Vec<FrameBuf>,
    /// Frames made outside `poll_transmit` (refused SYNs), waiting for it.
    pending: Vec<FrameBuf>,
    /// Reused by `handle_frames` for what ingress makes (empty between calls).
    ingress_out: Vec<FrameBuf>,
    next_id: ConnId,
    disconnected: bool,
    /// Our addresses (what local delivery and SYN matching compare against).
    addrs: Vec<IpAddr>,
    cidrs: Vec<IpCidr>,
    config: StackConfig,
    /// UDP sockets, the intercept and the transmit queue (`core/udp.rs`).
    udp: udp::UdpCore,
    /// The DHCPv4 client, when configured (`core/dhcp.rs`).
    dhcp: Option<dhcp::DhcpClient>,
    /// RSTs of released connections given up on (no neighbour answer).
    resets_abandoned: u64,
    /// smoltcp egress polls of connections so far (tests count rounds).
    #[cfg(test)]
    egress_polls: usize,
}

impl Core {
    /// A core for a device with `caps`, building frames in `pool`.
    pub(crate) fn new(config: StackConfig, caps: DeviceCaps, pool: FramePool, now: Instant) -> Core {
        let smol = smol_caps(caps);
        let hw = match caps.medium {
            Medium::Ethernet => HardwareAddress::Ethernet(EthernetAddress(config.mac)),
            Medium::Ip => HardwareAddress::Ip,
        };
        let mut iface_config = Config::new(hw);
        iface_config.random_seed = config.seed;
        let mut tx = Vec::new();
        let pool = FrameCache::new(pool);
        let mut bridge = Bridge { rx: None, tx: &mut tx, pool: &pool, caps: &smol };
        let mut iface = Interface::new(iface_config, &mut bridge, now);
        let mut cidrs = Vec::new();
        if let Some((a, p)) = config.ipv4 {
            cidrs.push(IpCidr::new(a.into(), p.min(32)));
        }
        if let Some((a, p)) = config.ipv6 {
            cidrs.push(IpCidr::new(a.into(), p.min(128)));
        }
        if caps.medium == Medium::Ethernet && config.ipv6.is_some() {
            cidrs.push(IpCidr::new(link_local(config.mac).into(), 64));
        }
        iface.update_ip_addrs(|addrs| {
            for c in &cidrs {
                // The feature set allows 4 addresses; we add at most 3.
                let _ = addrs.push(*c);
            }
        });
        if let Some(gw) = config.gateway_v4 {
            let _ = iface.routes_mut().add_default_ipv4_route(gw);
        }
        if let Some(gw) = config.gateway_v6 {
            let _ = iface.routes_mut().add_default_ipv6_route(gw);
        }
        let addrs = cidrs.iter().map(|c| IpAddr::from(c.address())).collect();
        let tso_mss = caps.tso.map(|n| (n.saturating_sub(40), n.saturating_sub(60)));
        let udp = udp::UdpCore::new(caps, config.ephemeral_ports.clone(), config.seed);
        let dhcp = config.dhcpv4.then(dhcp::DhcpClient::new);
        Core {
            iface,
            medium: caps.medium,
            verify: caps.checksums == Checksums::Compute,
            caps: smol,
            tso_mss,
            full_mss: (caps.mtu.saturating_sub(40), caps.mtu.saturating_sub(60)),
            pool,
            spare: SocketSet::new(Vec::new()),
            pool_sockets: Vec::new(),
            pool_cap: (SOCKET_POOL_BYTES / (config.rx_buffer + config.tx_buffer).max(1)).max(SOCKET_POOL_MIN),
            conns: HashMap::default(),
            tuples: HashMap::new(),
            last_tuple: None,
            listens: HashMap::new(),
            transparent: None,
            ports: Ports::new(config.ephemeral_ports.clone(), config.seed),
            dirty: Vec::new(),
            timers: BTreeSet::new(),
            events: VecDeque::new(),
            local: Vec::new(),
            pending: Vec::new(),
            ingress_out: Vec::new(),
            next_id: 1,
            disconnected: false,
            addrs,
            cidrs,
            config,
            udp,
            dhcp,
            resets_abandoned: 0,
            #[cfg(test)]
            egress_polls: 0,
        }
    }

    // ---- queries ----

    /// The configuration.
    pub(crate) fn config(&self) -> &StackConfig {
        &self.config
    }

    /// Our addresses (IPv4, global IPv6, link-local IPv6).
    pub(crate) fn addrs(&self) -> &[IpAddr] {
        &self.addrs
    }

    /// Sockets in the table (open, half-open, held, closing, TIME_WAIT).
    pub(crate) fn sockets(&self) -> usize {
        self.conns.len()
    }

    /// Ports taken (ephemeral and listening TCP ports, plus bound UDP ports:
    /// the two are separate spaces, each counted).
    pub(crate) fn ports_in_use(&self) -> usize {
        self.ports.in_use() + self.udp_ports_in_use()
    }

    /// RSTs of released connections given up on (see [`Core::orphan_polled`]).
    pub(crate) fn resets_abandoned(&self) -> u64 {
        self.resets_abandoned
    }

    /// `close_all` ran.
    pub(crate) fn is_disconnected(&self) -> bool {
        self.disconnected
    }

    /// Our source address for reaching `dst`, or `None` when there is no route.
    pub(crate) fn source_for(&self, dst: IpAddr) -> Option<IpAddr> {
        if self.addrs.contains(&dst) {
            return Some(dst);
        }
        let on_link = self.cidrs.iter().any(|c| c.contains_addr(&dst.into()));
        let gateway = match dst {
            IpAddr::V4(_) => self.config.gateway_v4.is_some(),
            IpAddr::V6(_) => self.config.gateway_v6.is_some(),
        };
        if !on_link && !gateway {
            return None;
        }
        // Prefer the global address of the family (the first one configured).
        self.addrs.iter().copied().find(|a| a.is_ipv4() == dst.is_ipv4())
    }

    // ---- the state machine's inputs and outputs ----

    /// Feeds received frames (drained from `frames`).
    pub(crate) fn handle_frames(&mut self, now: Instant, frames: &mut Vec<FrameBuf>) {
        let mut out = std::mem::take(&mut self.ingress_out);
        for frame in frames.drain(..) {
            self.ingress(now, frame, &mut out);
        }
        self.pool.give_back();
        self.pending.append(&mut out);
        self.ingress_out = out;
    }

    /// Runs what is due at `now`: smoltcp timers (retransmission, delayed
    /// ACK, keepalive, TIME_WAIT), handshake and user timeouts.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(at, id)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            let Some(conn) = self.conns.get_mut(&id) else { continue };
            conn.entry = None;
            match conn.timer {
                None => continue,
                Some(later) if later > now => {
                    // Moved later since it was filed: file it again.
                    conn.entry = Some(later);
                    self.timers.insert((later, id));
                    continue;
                }
                Some(_) => conn.timer = None,
            }
            if let Some(until) = conn.time_wait.as_ref().map(|tw| tw.until) {
                if now >= until {
                    self.forget(id);
                } else {
                    self.set_timer(id, until);
                }
                continue;
            }
            let handshake_over = now >= conn.since + self.config.handshake_timeout.into();
            let hold_over = now >= conn.since + hold_timeout(&self.config).into();
            match conn.phase {
                Phase::Held { .. } if hold_over => {
                    tracing::trace!(local = %conn.local, remote = %conn.remote, "held SYN expired");
                    self.drop_handshake(id);
                    self.events.push_back(Event::Closed(id));
                    continue;
                }
                Phase::HalfOpen { .. }
                    if handshake_over
                        && matches!(conn.socket().state(), tcp::State::Listen | tcp::State::SynReceived) =>
                {
                    tracing::trace!(local = %conn.local, remote = %conn.remote, "handshake abandoned");
                    self.abort_half_open(id);
                    continue;
                }
                _ => {}
            }
            if conn.orphan_deadline(self.config.orphan_timeout).is_some_and(|at| now >= at) {
                tracing::debug!(local = %conn.local, remote = %conn.remote, "orphan timeout: nothing heard from the peer, aborted");
                conn.socket_mut().abort();
            }
            if conn.outstanding() && now >= conn.progress_at + self.config.user_timeout.into() {
                conn.end.timed_out = true;
                tracing::debug!(local = %conn.local, remote = %conn.remote, "user timeout: sent data unacknowledged, aborted");
                conn.socket_mut().abort();
                self.events.push_back(Event::Closed(id));
            }
            self.mark_dirty(id);
        }
        self.udp_handle_timeout(now);
    }

    /// Appends the frames to send to `out`: egress of every connection with
    /// something to do, frames to our own addresses delivered meanwhile.
    pub(crate) fn poll_transmit(&mut self, now: Instant, out: &mut Vec<FrameBuf>) {
        self.pool.refresh();
        let mut produced = std::mem::take(&mut self.pending);
        for _ in 0..LOCAL_ROUNDS {
            let mut local = std::mem::take(&mut self.local);
            for frame in local.drain(..) {
                self.ingress(now, frame, &mut produced);
            }
            self.local = local;
            self.egress(now, &mut produced);
            self.udp_egress(now, &mut produced);
            self.dhcp_egress(now, &mut produced);
            for frame in produced.drain(..) {
                let ours = wire::destination(&frame, self.medium).is_some_and(|dst| self.addrs.contains(&dst));
                if ours {
                    // Our own frame: nothing to check (its TCP checksum is
                    // 0 where the device completes them).
                    let mut frame = frame;
                    frame.meta.csum = RxCsum::Verified;
                    self.local.push(frame);
                } else {
                    out.push(frame);
                }
            }
            if self.local.is_empty() {
                break;
            }
        }
        self.pool.give_back();
        // Drained: its allocation serves the next round (unless frames
        // were made outside it meanwhile).
        if self.pending.is_empty() {
            self.pending = produced;
        }
    }

    /// The next event for the shell.
    pub(crate) fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Flow operations or frames wait for [`poll_transmit`](Core::poll_transmit)
    /// (or the DHCP client's answer to a reply does).
    pub(crate) fn has_work(&self) -> bool {
        !self.dirty.is_empty()
            || !self.local.is_empty()
            || !self.pending.is_empty()
            || self.udp_has_work()
            || self.dhcp_poll_at() == Some(Instant::ZERO)
    }

    /// A listener is registered under `key`.
    pub(crate) fn is_listening(&self, key: ListenKey) -> bool {
        self.listens.contains_key(&key)
    }

    /// When [`handle_timeout`](Core::handle_timeout) next has work (absent
    /// frames and flow operations), or a little earlier: a deadline that
    /// moved later is found there and re-filed.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        if self.has_work() {
            return Some(Instant::ZERO);
        }
        let mut next = self.timers.first().map(|(at, _)| *at);
        for t in [self.udp_poll_timeout(), self.dhcp_poll_at()].into_iter().flatten() {
            next = Some(next.map_or(t, |n| n.min(t)));
        }
        next
    }

    // ---- connections ----

    /// A closed socket for a new connection: a reaped one when the pool
    /// has one, else a new one. Allocating and zeroing the buffers (and
    /// faulting their pages in) was most of a short connection's cost.
    ///
    /// smoltcp resets a closed socket's connection state on `listen` and
    /// `connect` (sequence numbers, buffers, timers, RTT estimate, window,
    /// MSS); what it leaves is reset here (congestion control, Nagle) or
    /// set by every caller (`apply_keepalive`: keepalive and timeout). The
    /// rest is never changed by the core (ACK delay, hop limit, timestamps)
    /// or only consulted with a matching sequence number of the old
    /// connection (duplicate-ACK and SACK bookkeeping, reset by the first
    /// new ACK).
    fn new_socket(&mut self) -> tcp::Socket<'static> {
        match self.pool_sockets.pop() {
            Some(mut sock) => {
                sock.set_congestion_control(sock.congestion_control());
                sock.set_nagle_enabled(true);
                sock
            }
            None => tcp::Socket::new(
                tcp::SocketBuffer::new(vec![0; self.config.rx_buffer]),
                tcp::SocketBuffer::new(vec![0; self.config.tx_buffer]),
            ),
        }
    }

    /// Keeps a reaped connection's socket for [`new_socket`](Core::new_socket)
    /// while the pool has room.
    fn recycle(&mut self, mut conn: Conn) {
        if self.pool_sockets.len() >= self.pool_cap || conn.set.iter().next().is_none() {
            return;
        }
        let sock = take_socket(&mut conn);
        self.pool(sock);
    }

    /// Pools `sock` if it has this core's buffers and the pool has room.
    fn pool(&mut self, mut sock: tcp::Socket<'static>) {
        if self.pool_sockets.len() < self.pool_cap
            && sock.recv_capacity() == self.config.rx_buffer
            && sock.send_capacity() == self.config.tx_buffer
        {
            // Closed, so that `listen` and `connect` reset it (nothing is
            // sent: it is in no set).
            sock.abort();
            self.pool_sockets.push(sock);
        }
    }

    /// Lets an orphan in TIME_WAIT give its socket (and buffers) back once
    /// smoltcp owes the peer nothing but the wait: the core answers for it
    /// from then on ([`TimeWait`]). `false` when it stays with smoltcp.
    fn enter_time_wait(&mut self, now: Instant, id: ConnId) -> bool {
        let Some(conn) = self.conns.get_mut(&id) else { return false };
        if conn.phase != Phase::Orphan || conn.time_wait.is_some() || conn.socket().state() != tcp::State::TimeWait {
            return false;
        }
        let (Some(snd_nxt), Some(rcv_nxt)) = (conn.snd_max, conn.rcv_nxt) else { return false };
        // Our ACK of the peer's FIN is out (RCV.NXT as acknowledged is
        // RCV.NXT) and only the close timer is left.
        if conn.rcv_next != Some(rcv_nxt)
            || self.iface.poll_at(now, &conn.set).is_some_and(|t| t < now + smoltcp::time::Duration::from_secs(1))
        {
            return false;
        }
        let window = conn.socket().recv_capacity().min(0xffff) as u16;
        let until = now + TIME_WAIT.into();
        conn.time_wait = Some(Box::new(TimeWait { snd_nxt, rcv_nxt, window, until, challenged_at: None }));
        let sock = take_socket(conn);
        self.pool(sock);
        self.set_timer(id, until);
        true
    }

    /// A segment for a connection in the core's TIME_WAIT, answered as
    /// smoltcp's TIME-WAIT socket did: an RST exactly at RCV.NXT ends it
    /// (one elsewhere in the window gets a challenge ACK, RFC 5961 3.2); a
    /// SYN gets a challenge ACK (4.2); a retransmitted FIN or data is
    /// acknowledged and restarts the wait, as does any other segment not at
    /// RCV.NXT, whose ACK is rate-limited (one a second) so two peers out
    /// of step cannot loop.
    fn time_wait_segment(
        &mut self,
        now: Instant,
        id: ConnId,
        frame: &FrameBuf,
        seg: &Segment,
        out: &mut Vec<FrameBuf>,
    ) {
        let Some(conn) = self.conns.get_mut(&id) else { return };
        let Some(mut tw) = conn.time_wait.as_deref().copied() else { return };
        let offset = seg.seq_number.wrapping_sub(tw.rcv_nxt);
        let consumes = seg.payload_len > 0 || seg.fin;
        let reply = if seg.rst {
            if offset == 0 {
                tracing::trace!(local = %conn.local, remote = %conn.remote, "TIME_WAIT reset by its peer");
                self.forget(id);
                return;
            }
            offset < u32::from(tw.window)
        } else if seg.syn {
            true
        } else if consumes || offset != 0 {
            tw.until = now + TIME_WAIT.into();
            true
        } else {
            false
        };
        let limited = !consumes || seg.syn || seg.rst;
        if reply && limited {
            if tw.challenged_at.is_some_and(|at| now < at + smoltcp::time::Duration::from_secs(1)) {
                conn.time_wait = Some(Box::new(tw));
                self.set_timer(id, tw.until);
                return;
            }
            tw.challenged_at = Some(now);
        }
        conn.time_wait = Some(Box::new(tw));
        if reply && let Some(ack) = self.ack_for(frame, seg, tw.snd_nxt, tw.rcv_nxt, tw.window) {
            out.push(ack);
        }
        self.set_timer(id, tw.until);
    }

    /// A pure ACK answering `seg` (received in `frame`): addresses, ports
    /// and, on Ethernet, MAC addresses swapped.
    fn ack_for(&self, frame: &FrameBuf, seg: &Segment, seq: u32, ack: u32, window: u16) -> Option<FrameBuf> {
        let tcp = TcpRepr {
            src_port: seg.dst.port(),
            dst_port: seg.src.port(),
            control: TcpControl::None,
            seq_number: TcpSeqNumber(seq as i32),
            ack_number: Some(TcpSeqNumber(ack as i32)),
            window_len: window,
            window_scale: None,
            max_seg_size: None,
            sack_permitted: false,
            sack_ranges: [None; 3],
            timestamp: None,
            payload: &[],
        };
        let (src, dst): (IpAddress, IpAddress) = (seg.dst.ip().into(), seg.src.ip().into());
        let ip = IpRepr::new(src, dst, IpProtocol::Tcp, tcp.header_len(), 64);
        let eth_len = seg.ip_at;
        let mut reply = self.pool.take(eth_len + ip.header_len() + tcp.header_len());
        if self.medium == Medium::Ethernet {
            let eth = EthernetFrame::new_checked(&frame[..]).ok()?;
            let repr = EthernetRepr { src_addr: eth.dst_addr(), dst_addr: eth.src_addr(), ethertype: eth.ethertype() };
            repr.emit(&mut EthernetFrame::new_unchecked(&mut reply[..eth_len]));
        }
        ip.emit(&mut reply[eth_len..], &self.caps.checksum);
        let at = eth_len + ip.header_len();
        tcp.emit(&mut TcpPacket::new_unchecked(&mut reply[at..]), &src, &dst, &self.caps.checksum);
        Some(reply)
    }

    fn insert(&mut self, conn: Conn) -> ConnId {
        let id = self.next_id;
        self.next_id += 1;
        let tuple = conn.tuple();
        if self.last_tuple.is_some_and(|(t, _)| t == tuple) {
            self.last_tuple = None;
        }
        self.tuples.insert(tuple, id);
        self.conns.insert(id, conn);
        id
    }

    fn conn(local: SocketAddr, remote: SocketAddr, phase: Phase, now: Instant) -> Conn {
        Conn {
            set: SocketSet::new(Vec::<SocketStorage<'static>>::with_capacity(1)),
            handle: SocketHandle::default(),
            local,
            remote,
            phase,
            end: End::default(),
            nat: None,
            ephemeral: false,
            progress_at: now,
            peer_ack: None,
            snd_max: None,
            rcv_nxt: None,
            rcv_next: None,
            since: now,
            dirty: false,
            timer: None,
            entry: None,
            real_mss: None,
            held: None,
            time_wait: None,
            fin_ack_until: None,
            close_held: false,
            orphan_since: None,
            quick_acks: QUICK_ACKS,
        }
    }

    fn mark_dirty(&mut self, id: ConnId) {
        if let Some(c) = self.conns.get_mut(&id)
            && !c.dirty
        {
            c.dirty = true;
            self.dirty.push(id);
        }
    }

    /// Starts a connection from `local_ip` to `remote`: its SYN goes out at
    /// the next `poll_transmit`. Returns its id and local address.
    pub(crate) fn connect(
        &mut self,
        local_ip: IpAddr,
        remote: SocketAddr,
        keepalive: Option<Keepalive>,
    ) -> Result<(ConnId, SocketAddr), &'static str> {
        let port = self.ports.allocate().ok_or("the ephemeral port range is exhausted")?;
        let local = SocketAddr::new(local_ip, port);
        let mut sock = self.new_socket();
        apply_keepalive(&mut sock, keepalive);
        if sock.connect(self.iface.context(), remote, local).is_err() {
            self.ports.free(port);
            return Err("the address cannot be connected to");
        }
        let mut conn = Core::conn(local, remote, Phase::Connecting, Instant::ZERO);
        conn.ephemeral = true;
        conn.handle = conn.set.add(sock);
        let id = self.insert(conn);
        self.mark_dirty(id);
        Ok((id, local))
    }

    /// Where connect `id` stands.
    pub(crate) fn connect_state(&self, id: ConnId) -> ConnectState {
        match self.conns.get(&id) {
            None => ConnectState::Failed,
            Some(c) => match c.socket().state() {
                tcp::State::SynSent | tcp::State::SynReceived => ConnectState::Pending,
                tcp::State::Closed | tcp::State::Listen => ConnectState::Failed,
                _ => ConnectState::Established,
            },
        }
    }

    /// How connection `id` ended, when not cleanly.
    pub(crate) fn end(&self, id: ConnId) -> End {
        self.conns.get(&id).map_or(End::default(), |c| c.end)
    }

    /// Queues bytes of `data` for sending: how many fit.
    pub(crate) fn send(&mut self, id: ConnId, data: &[u8]) -> Result<usize, SendRefused> {
        let Some(conn) = self.conns.get_mut(&id) else { return Err(SendRefused::Closed(End::default())) };
        let end = conn.end;
        let sock = conn.socket_mut();
        if !sock.may_send() {
            return Err(SendRefused::Closed(end));
        }
        match sock.send_slice(data) {
            Ok(0) | Err(_) => Err(SendRefused::Full),
            Ok(n) => {
                self.mark_dirty(id);
                Ok(n)
            }
        }
    }

    /// Reads up to `max` bytes from connection `id` into `sink`, both parts
    /// of the socket's ring at once: `sink` gets the bytes in order (one or
    /// two slices), each with how many this read takes in all (to size a
    /// buffer once). `Data(n)`: `n > 0` bytes taken (`max > 0`).
    pub(crate) fn recv(&mut self, id: ConnId, max: usize, mut sink: impl FnMut(&[u8], usize)) -> Recv<usize> {
        let Some(conn) = self.conns.get_mut(&id) else { return Recv::Closed(End::default()) };
        let end = conn.end;
        let sock = conn.socket_mut();
        let window_was_low = sock.recv_capacity() - sock.recv_queue() < sock.recv_capacity() / 2;
        let total = sock.recv_queue().min(max);
        let mut taken = 0;
        while taken < total {
            let res = sock.recv(|buf| {
                let n = buf.len().min(total - taken);
                if n > 0 {
                    sink(&buf[..n], total);
                }
                (n, n)
            });
            match res {
                Ok(n) if n > 0 => taken += n,
                _ => break,
            }
        }
        if taken == 0 {
            return match sock.recv(|_| (0, ())) {
                Ok(()) => Recv::Empty,
                Err(tcp::RecvError::Finished) => Recv::Finished,
                Err(tcp::RecvError::InvalidState) => Recv::Closed(end),
            };
        }
        if window_was_low {
            // The window opens: tell the peer.
            self.mark_dirty(id);
        }
        Recv::Data(taken)
    }

    /// Bytes sent and not acknowledged yet (0 once gone).
    pub(crate) fn send_queue(&self, id: ConnId) -> usize {
        self.conns.get(&id).map_or(0, |c| c.socket().send_queue())
    }

    /// The socket is closed (nothing more will be acknowledged).
    pub(crate) fn is_closed(&self, id: ConnId) -> bool {
        self.conns.get(&id).is_none_or(|c| c.socket().state() == tcp::State::Closed)
    }

    /// Sets Nagle's algorithm; returns the previous setting.
    pub(crate) fn set_nagle(&mut self, id: ConnId, on: bool) -> Option<bool> {
        let sock = self.conns.get_mut(&id)?.socket_mut();
        let was = sock.nagle_enabled();
        sock.set_nagle_enabled(on);
        Some(was)
    }

    /// Sends FIN once everything queued left (reading goes on).
    pub(crate) fn close_write(&mut self, id: ConnId) {
        if let Some(conn) = self.conns.get_mut(&id) {
            conn.close();
            self.mark_dirty(id);
        }
    }

    /// The shell lets go of connection `id`: `abort` (or unread data when
    /// the write side is still open, as the kernel does) sends RST,
    /// otherwise a FIN goes out unless `write_shut` already sent it. The
    /// socket finishes on its own, is aborted after the orphan timeout of
    /// silence ([`Conn::orphan_deadline`]) and reaped once closed.
    pub(crate) fn release(&mut self, id: ConnId, abort: bool, write_shut: bool) {
        let Some(conn) = self.conns.get_mut(&id) else { return };
        if matches!(conn.phase, Phase::Orphan | Phase::Resetting { .. }) {
            return;
        }
        if abort || (!write_shut && conn.socket().recv_queue() > 0) {
            conn.socket_mut().abort();
        } else if !write_shut {
            conn.close();
        }
        let sock = conn.socket_mut();
        // An RST still to send (this abort's, or one a neighbour kept from
        // leaving): not reaped as a closed orphan before it went out.
        conn.phase = if owes_reset(sock) { Phase::Resetting { until: None } } else { Phase::Orphan };
        self.mark_dirty(id);
    }

    // ---- listeners ----

    /// Reserves the port of a listener on `addr` (port 0: an ephemeral
    /// one). Returns its key and whether the port was free (the listener
    /// owns it then).
    pub(crate) fn reserve(&mut self, addr: SocketAddr) -> Result<(ListenKey, bool), BindRefused> {
        if self.disconnected {
            return Err(BindRefused::Disconnected);
        }
        if !addr.ip().is_unspecified() && !self.addrs.contains(&addr.ip()) {
            return Err(BindRefused::NotOurs(addr));
        }
        let (port, owns) = match addr.port() {
            0 => (self.ports.allocate().ok_or(BindRefused::Exhausted)?, true),
            p => (p, self.ports.take(p)),
        };
        Ok((SocketAddr::new(addr.ip(), port), owns))
    }

    /// Gives back a reserved port that no listener took.
    pub(crate) fn unreserve(&mut self, port: u16) {
        self.ports.free(port);
    }

    /// Registers listener `id` under `key` (from [`reserve`](Core::reserve)).
    /// `hold`: its SYNs wait for [`accept_syn`](Core::accept_syn).
    pub(crate) fn listen(&mut self, key: ListenKey, id: ListenId, keepalive: Option<Keepalive>, owns_port: bool) {
        let listen = Listen { id, keepalive, hold: false, half_open: VecDeque::new(), owns_port };
        if let Some(old) = self.listens.insert(key, listen) {
            self.drop_half_open_of(old);
        }
    }

    /// Makes the listener under `key` hold its SYNs (or not).
    pub(crate) fn set_hold(&mut self, key: ListenKey, hold: bool) {
        if let Some(l) = self.listens.get_mut(&key) {
            l.hold = hold;
        }
    }

    /// Removes listener `id` under `key` (not a newer one) and drops its
    /// unfinished handshakes. The port goes back to the allocator with the
    /// last listener on it.
    pub(crate) fn unlisten(&mut self, key: ListenKey, id: ListenId) {
        if self.listens.get(&key).is_none_or(|l| l.id != id) {
            return;
        }
        if self.transparent.as_ref().is_some_and(|t| key == conflux_tcp::any_addr(t.port)) {
            self.transparent = None;
        }
        let Some(l) = self.listens.remove(&key) else { return };
        if l.owns_port {
            match self.listens.iter_mut().find(|(k, _)| k.port() == key.port()) {
                Some((_, other)) => other.owns_port = true,
                None => self.ports.free(key.port()),
            }
        }
        self.drop_half_open_of(l);
    }

    fn drop_half_open_of(&mut self, l: Listen) {
        for id in l.half_open {
            if self.conns.get(&id).is_some_and(|c| matches!(c.phase, Phase::Held { .. } | Phase::HalfOpen { .. })) {
                self.abort_half_open(id);
            }
        }
    }

    /// Sets the transparent listener (`None`: none).
    pub(crate) fn set_transparent(&mut self, t: Option<Transparent>) {
        self.transparent = t;
    }

    /// The port the transparent listener is registered under.
    pub(crate) fn transparent_port(&self) -> Option<u16> {
        self.transparent.as_ref().map(|t| t.port)
    }

    /// Lets a held SYN's handshake proceed (a SYN-ACK goes out); `false`
    /// when `id` is not a held SYN (any more: refused, expired, evicted,
    /// reset by its peer, its listener gone). The handshake timeout starts
    /// again from `now`.
    pub(crate) fn accept_syn(&mut self, now: Instant, id: ConnId) -> bool {
        let Some(conn) = self.conns.get_mut(&id) else { return false };
        let Phase::Held { port } = conn.phase else { return false };
        let Some(syn) = conn.held.take() else { return false };
        conn.since = now;
        let keepalive = self.listens.get(&port).and_then(|l| l.keepalive);
        let mut sock = self.new_socket();
        apply_keepalive(&mut sock, keepalive);
        let conn = self.conns.get_mut(&id).expect("present");
        let local = conn.local;
        // Listening on exactly this address and port: only this SYN's peer
        // gets it (the socket leaves LISTEN as soon as the SYN is processed).
        let _ = sock.listen(IpListenEndpoint { addr: Some(local.ip().into()), port: local.port() });
        conn.handle = conn.set.add(sock);
        conn.phase = Phase::HalfOpen { port };
        let mut out = Vec::new();
        self.ingress(now, syn, &mut out);
        self.pending.append(&mut out);
        true
    }

    /// Where the handshake of a held SYN stands: `Pending` while held or
    /// half-open, `Established` once the shell owns it (after
    /// [`Event::Accepted`]), `Failed` once gone (refused, reset, expired) or
    /// let go.
    pub(crate) fn handshake_state(&self, id: ConnId) -> ConnectState {
        match self.conns.get(&id).map(|c| c.phase) {
            Some(Phase::Held { .. } | Phase::HalfOpen { .. }) => ConnectState::Pending,
            Some(Phase::Open) => ConnectState::Established,
            Some(Phase::Connecting | Phase::Orphan | Phase::Resetting { .. }) | None => ConnectState::Failed,
        }
    }

    /// The shell gives up on a SYN it held: refused (RST) while still held,
    /// aborted (RST) while its handshake runs, released with an RST once
    /// accepted; nothing once gone.
    pub(crate) fn abandon_syn(&mut self, now: Instant, id: ConnId) {
        match self.conns.get(&id).map(|c| c.phase) {
            Some(Phase::Held { .. }) => self.refuse_syn(now, id),
            Some(Phase::HalfOpen { .. }) => self.abort_half_open(id),
            Some(Phase::Open) => self.release(id, true, true),
            _ => {}
        }
    }

    /// Forgets a held SYN without answering it: its peer retransmits the
    /// SYN, which is held again (the shell had no room for it).
    pub(crate) fn forget_syn(&mut self, id: ConnId) {
        if self.conns.get(&id).is_some_and(|c| matches!(c.phase, Phase::Held { .. })) {
            self.drop_handshake(id);
        }
    }

    /// Removes holding listener `id` under `key` as
    /// [`unlisten`](Core::unlisten) does, refusing (RST) its held SYNs
    /// first rather than forgetting them silently.
    pub(crate) fn unlisten_refusing(&mut self, now: Instant, key: ListenKey, id: ListenId) {
        let Some(l) = self.listens.get(&key).filter(|l| l.id == id) else { return };
        let held: Vec<ConnId> = l.half_open.iter().copied().collect();
        for conn in held {
            if self.conns.get(&conn).is_some_and(|c| matches!(c.phase, Phase::Held { .. })) {
                self.refuse_syn(now, conn);
                self.events.push_back(Event::Closed(conn));
            }
        }
        self.unlisten(key, id);
    }

    /// Refuses a held SYN: an RST goes back, the connection is forgotten.
    pub(crate) fn refuse_syn(&mut self, now: Instant, id: ConnId) {
        let Some(conn) = self.conns.get_mut(&id) else { return };
        if !matches!(conn.phase, Phase::Held { .. }) {
            return;
        }
        let Some(mut syn) = conn.held.take() else { return };
        let (local, nat) = (conn.local, conn.nat);
        self.drop_handshake(id);
        let Inspected::Tcp(seg) = wire::inspect(&syn, self.medium, false) else { return };
        if nat.is_some() {
            rewrite::nat(&mut syn, &seg, false, local);
        }
        // smoltcp answers a SYN no socket takes with an RST.
        let mut out = Vec::new();
        let mut bridge = Bridge { rx: Some(syn), tx: &mut out, pool: &self.pool, caps: &self.caps };
        let _ = self.iface.poll_ingress_single(now, &mut bridge, &mut self.spare);
        for mut frame in out {
            if let (Some(dialled), Inspected::Tcp(seg)) = (nat, wire::inspect(&frame, self.medium, false)) {
                rewrite::nat(&mut frame, &seg, true, dialled);
            }
            self.pending.push(frame);
        }
    }

    /// Closes every open connection gracefully and drops every listener
    /// and unfinished handshake (disconnect).
    pub(crate) fn close_all(&mut self) {
        self.disconnected = true;
        let ids: Vec<(ConnId, Phase)> = self.conns.iter().map(|(id, c)| (*id, c.phase)).collect();
        for (id, phase) in ids {
            match phase {
                Phase::Open => self.close_write(id),
                Phase::Held { .. } | Phase::HalfOpen { .. } => self.abort_half_open(id),
                Phase::Connecting => {
                    if let Some(c) = self.conns.get_mut(&id) {
                        c.socket_mut().abort();
                    }
                    self.mark_dirty(id);
                }
                Phase::Orphan | Phase::Resetting { .. } => {}
            }
        }
        self.transparent = None;
        self.udp_disconnect();
        for (key, l) in std::mem::take(&mut self.listens) {
            if l.owns_port {
                self.ports.free(key.port());
            }
        }
    }

    // ---- internals ----

    /// Aborts an unfinished handshake; a held one is simply forgotten.
    fn abort_half_open(&mut self, id: ConnId) {
        let Some(conn) = self.conns.get_mut(&id) else { return };
        if matches!(conn.phase, Phase::Held { .. }) {
            self.drop_handshake(id);
            self.events.push_back(Event::Closed(id));
            return;
        }
        let phase = conn.phase;
        conn.socket_mut().abort();
        self.leave_half_open(id, phase);
        self.release(id, true, true);
        // Its state moves to closed here, not in a later poll: tell the
        // shell (an `accept` of a held SYN waits on it).
        self.events.push_back(Event::Closed(id));
    }

    /// Takes `id` off its listener's unfinished handshakes.
    fn leave_half_open(&mut self, id: ConnId, phase: Phase) {
        if let Phase::HalfOpen { port } | Phase::Held { port } = phase
            && let Some(l) = self.listens.get_mut(&port)
            && let Some(at) = l.half_open.iter().position(|h| *h == id)
        {
            l.half_open.remove(at);
        }
    }

    /// Forgets an unfinished handshake at once: its socket, table entries
    /// and port go, and no RST is sent (the SYN's source may be forged).
    fn drop_handshake(&mut self, id: ConnId) {
        let Some(conn) = self.conns.get(&id) else { return };
        let phase = conn.phase;
        self.leave_half_open(id, phase);
        self.forget(id);
    }

    /// Removes a connection: socket, table entries, timer, port.
    fn forget(&mut self, id: ConnId) {
        let Some(conn) = self.conns.remove(&id) else { return };
        self.tuples.remove(&conn.tuple());
        if self.last_tuple.is_some_and(|(_, last)| last == id) {
            self.last_tuple = None;
        }
        if let Some(at) = conn.entry {
            self.timers.remove(&(at, id));
        }
        if conn.ephemeral {
            self.ports.free(conn.local.port());
        }
        self.recycle(conn);
    }

    /// The listener that takes a SYN to `dst` and whether it needs NAT:
    /// the one on exactly that address wins, then `0.0.0.0` (IPv4), then
    /// `[::]`; then the transparent listener for foreign destinations and
    /// its own addresses.
    fn listener_for(&self, dst: SocketAddr) -> Option<(ListenKey, bool)> {
        let ours = self.addrs.contains(&dst.ip());
        let transparent_key = self.transparent.as_ref().map(|t| conflux_tcp::any_addr(t.port));
        if ours {
            let any4 = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), dst.port());
            let any6 = conflux_tcp::any_addr(dst.port());
            let candidates = [Some(dst), dst.is_ipv4().then_some(any4), Some(any6)];
            // The transparent listener's own port is not a port of ours:
            // it takes SYNs to our addresses only by its own rules below.
            if let Some(k) =
                candidates.into_iter().flatten().find(|k| Some(*k) != transparent_key && self.listens.contains_key(k))
            {
                return Some((k, false));
            }
        }
        let t = self.transparent.as_ref()?;
        let key = conflux_tcp::any_addr(t.port);
        if !self.listens.contains_key(&key) {
            return None;
        }
        if ours {
            return t.own.contains(&dst.ip()).then_some((key, false));
        }
        if dst.ip().is_multicast() || dst.ip().is_unspecified() {
            return None;
        }
        Some((key, true))
    }

    /// Makes a connection for a SYN to `tuple` on the listener under `port`;
    /// `nat` gives it one of our addresses and a port of its own.
    ///
    /// At the listener's half-open cap its oldest unfinished handshake is
    /// evicted first: under a flood of SYNs whose SYN-ACKs are never
    /// answered, a legitimate handshake still gets a slot. (SYN cookies
    /// would need control of the initial sequence number, which smoltcp
    /// 0.14 does not give.)
    fn admit_syn(&mut self, now: Instant, tuple: Tuple, port: ListenKey, nat: bool) -> Option<ConnId> {
        let cap = self.config.max_half_open;
        let l = self.listens.get(&port)?;
        if l.half_open.len() >= cap {
            match l.half_open.front().copied() {
                Some(oldest) => {
                    tracing::debug!(%port, "half-open cap reached: oldest handshake evicted");
                    let held = self.conns.get(&oldest).is_some_and(|c| matches!(c.phase, Phase::Held { .. }));
                    self.drop_handshake(oldest);
                    if held {
                        self.events.push_back(Event::Closed(oldest));
                    }
                }
                None => {
                    tracing::debug!(%port, "half-open cap reached: SYN dropped");
                    return None;
                }
            }
        }
        let l = self.listens.get(&port)?;
        let (hold, keepalive, listen) = (l.hold, l.keepalive, l.id);
        let (dialled, remote) = tuple;
        let (local, original) = if nat {
            let ip = self.addrs.iter().copied().find(|a| a.is_ipv4() == dialled.is_ipv4())?;
            (SocketAddr::new(ip, self.ports.allocate()?), Some(dialled))
        } else {
            (dialled, None)
        };
        let phase = if hold { Phase::Held { port } } else { Phase::HalfOpen { port } };
        let mut conn = Core::conn(local, remote, phase, now);
        conn.nat = original;
        conn.ephemeral = nat;
        if !hold {
            let mut sock = self.new_socket();
            apply_keepalive(&mut sock, keepalive);
            // Listening on exactly this address and port: only this SYN's
            // peer gets it (the socket leaves LISTEN with the SYN).
            let _ = sock.listen(IpListenEndpoint { addr: Some(local.ip().into()), port: local.port() });
            conn.handle = conn.set.add(sock);
        }
        let id = self.insert(conn);
        if let Some(l) = self.listens.get_mut(&port) {
            l.half_open.push_back(id);
        }
        let timeout = if hold { hold_timeout(&self.config) } else { self.config.handshake_timeout };
        self.set_timer(id, now + timeout.into());
        tracing::trace!(%dialled, %remote, nat, hold, "SYN: new connection");
        if hold {
            self.events.push_back(Event::Syn { id, listen, local: dialled, remote });
        }
        Some(id)
    }

    fn set_timer(&mut self, id: ConnId, at: Instant) {
        if let Some(conn) = self.conns.get_mut(&id) {
            file_timer(&mut self.timers, conn, id, at);
        }
    }

    /// Feeds one received frame to its connection's socket set (a fresh
    /// connection for a SYN to a listened port; the spare empty set for
    /// everything else, so smoltcp answers RST, ARP, NDP and pings).
    ///
    /// Nothing is decided on a frame before it is checked (lengths, and
    /// checksums where the device computes them): a corrupted frame must
    /// not admit a SYN, abort an orphan, mark a reset or move the highest
    /// acknowledgment seen.
    fn ingress(&mut self, now: Instant, mut frame: FrameBuf, out: &mut Vec<FrameBuf>) {
        let verify = self.verify && frame.meta.csum == RxCsum::Unknown;
        // Read where `inspect` wrote it, not copied out whole (the copy's
        // wide loads of its narrow stores stalled on every frame).
        let inspected = wire::inspect(&frame, self.medium, verify);
        let seg = match &inspected {
            Inspected::Tcp(seg) => seg,
            Inspected::Other { .. } => {
                let Some(frame) = self.dhcp_ingress(now, frame, out) else { return };
                // UDP is the core's own (core/udp.rs), not smoltcp's.
                let Some(frame) = self.udp_ingress(frame) else { return };
                self.udp_neighbour_news();
                let mut bridge = Bridge { rx: Some(frame), tx: out, pool: &self.pool, caps: &self.caps };
                let _ = self.iface.poll_ingress_single(now, &mut bridge, &mut self.spare);
                // On Ethernet, an ARP or NDP answer unblocks sockets waiting
                // for a neighbour: let them all send (such frames are rare;
                // an IP link has no neighbours).
                if self.medium == Medium::Ethernet {
                    let ids: Vec<ConnId> = self.conns.keys().copied().collect();
                    ids.into_iter().for_each(|id| self.mark_dirty(id));
                }
                return;
            }
            Inspected::Bad => {
                tracing::debug!(len = frame.len(), "malformed or corrupted frame dropped");
                return;
            }
        };
        let tuple = || (seg.dst, seg.src);
        let known = match self.last_tuple {
            Some(((dst, src), id)) if dst == seg.dst && src == seg.src => Some(id),
            // (Written only when it changes: most frames find it.)
            _ => self.tuples.get(&tuple()).copied().inspect(|&id| self.last_tuple = Some((tuple(), id))),
        };
        let id = match known {
            Some(id) => Some(id),
            None if seg.syn && !seg.ack && !seg.rst && !self.disconnected => match self.listener_for(seg.dst) {
                Some((port, nat)) => match self.admit_syn(now, tuple(), port, nat) {
                    Some(id) => Some(id),
                    None => return,
                },
                None => None,
            },
            None => None,
        };
        let Some(id) = id else {
            let mut bridge = Bridge { rx: Some(frame), tx: out, pool: &self.pool, caps: &self.caps };
            let _ = self.iface.poll_ingress_single(now, &mut bridge, &mut self.spare);
            return;
        };
        let conn = self.conns.get_mut(&id).expect("in the table");
        if conn.time_wait.is_some() {
            self.time_wait_segment(now, id, &frame, seg, out);
            return;
        }
        if let Phase::Held { .. } = conn.phase {
            if seg.rst {
                // The peer gave up on its SYN (an RST with the sequence
                // number just past the SYN's, or the SYN's own): forget it.
                let syn_seq = conn.held.as_ref().and_then(|f| match wire::inspect(f, self.medium, false) {
                    Inspected::Tcp(s) => Some(s.seq_number),
                    _ => None,
                });
                if syn_seq.is_some_and(|s| seg.seq_number == s.wrapping_add(1) || seg.seq_number == s) {
                    tracing::trace!(local = %conn.local, remote = %conn.remote, "held SYN reset by its peer");
                    self.drop_handshake(id);
                    self.events.push_back(Event::Closed(id));
                }
                return;
            }
            // The shell has not decided: keep the first SYN, drop repeats.
            if conn.held.is_none() {
                conn.held = Some(frame);
            }
            return;
        }
        if conn.phase == Phase::Orphan
            && seg.payload_len > 0
            && conn.rcv_nxt.is_none_or(|nxt| seq_after(seg.seq_number.wrapping_add(seg.payload_len as u32), nxt))
        {
            // New data for a closed flow: nobody will read it. Reset, as the
            // kernel does, so the peer's writes fail instead of stalling. (A
            // retransmission of data we already acknowledged goes to
            // smoltcp, which acknowledges it again.)
            let sock = conn.socket_mut();
            if !matches!(sock.state(), tcp::State::TimeWait | tcp::State::Closed) {
                sock.abort();
            }
            self.mark_dirty(id);
            return;
        }
        if (seg.rst || seg.syn)
            && let Some(nxt) = conn.rcv_next
            && let Some(ack) = conn.peer_ack
            && matches!(conn.phase, Phase::Open | Phase::Orphan)
            && synchronized(conn.socket().state())
        {
            // RFC 5961 3.2 and 4.2: an RST inside the window but not exactly
            // at RCV.NXT, and a SYN (bare, or in the window), get a
            // challenge ACK. smoltcp would
            // take the RST as a reset and drop the SYN silently, but it
            // answers an out-of-window segment with its rate-limited
            // challenge ACK: the segment becomes one.
            let window = conn.socket().recv_capacity() as u32;
            let offset = seg.seq_number.wrapping_sub(nxt);
            // A SYN-ACK repeated by a peer that missed our handshake ACK
            // (at RCV.NXT - 1) is left to smoltcp, which acknowledges it.
            let in_window = offset < window;
            if (seg.syn && (!seg.ack || in_window)) || (seg.rst && offset != 0 && in_window) {
                tracing::debug!(rst = seg.rst, syn = seg.syn, "RFC 5961: challenge ACK");
                rewrite::into_challenge(&mut frame, seg, nxt.wrapping_add(1 << 30), ack);
                let seg = match wire::inspect(&frame, self.medium, false) {
                    Inspected::Tcp(seg) => seg,
                    _ => return,
                };
                let before = Snapshot::of(conn.socket());
                let from = out.len();
                if conn.nat.is_some() {
                    rewrite::nat(&mut frame, &seg, false, conn.local);
                }
                let mut bridge = Bridge { rx: Some(frame), tx: out, pool: &self.pool, caps: &self.caps };
                let _ = self.iface.poll_ingress_single(now, &mut bridge, &mut conn.set);
                self.sent(now, id, out, from);
                self.changed(now, id, before, None);
                return;
            }
        }
        let mut in_sync = false;
        if seg.ack && !seg.rst {
            if let Some(max) = conn.snd_max
                && seq_after(seg.ack_number, max)
            {
                // RFC 5961 5.2: an ACK for data we never sent is discarded.
                // (smoltcp would take one that falls in its unsent buffer as
                // acknowledging it: bytes lost.)
                tracing::debug!(ack = seg.ack_number, snd_max = max, "ACK beyond SND.NXT dropped");
                return;
            }
            if let Some(max) = conn.peer_ack
                && seq_after(max, seg.ack_number)
                && seg.payload_len > 0
                && max.wrapping_sub(seg.ack_number) < 1 << 30
            {
                rewrite::set_ack(&mut frame, seg, max);
            }
            // In sequence with what we acknowledged, and acknowledging
            // nothing older than what smoltcp took: a live peer in sync with
            // us (a zero-window probe's answer is one).
            in_sync =
                conn.rcv_nxt == Some(seg.seq_number) && conn.peer_ack.is_none_or(|una| !seq_after(una, seg.ack_number));
        }
        if seg.syn
            && let Some((v4, v6)) = self.tso_mss
        {
            conn.real_mss = rewrite::raise_mss(&mut frame, seg, if seg.is_ipv4() { v4 } else { v6 });
        }
        if conn.nat.is_some() {
            rewrite::nat(&mut frame, seg, false, conn.local);
        }
        let before = Snapshot::of(conn.socket());
        let from = out.len();
        // A full-sized data segment early in the connection: its ACK goes
        // in this round (an ACK delay of 0 for this segment only).
        let quick =
            conn.quick_acks > 0 && seg.payload_len >= if seg.is_ipv4() { self.full_mss.0 } else { self.full_mss.1 };
        let delay = conn.socket().ack_delay();
        if quick {
            conn.quick_acks -= 1;
            conn.socket_mut().set_ack_delay(delay.map(|_| smoltcp::time::Duration::ZERO));
        }
        let mut bridge = Bridge { rx: Some(frame), tx: out, pool: &self.pool, caps: &self.caps };
        let _ = self.iface.poll_ingress_single(now, &mut bridge, &mut conn.set);
        if quick {
            conn.socket_mut().set_ack_delay(delay);
        }
        let after = Snapshot::of(conn.socket());
        if seg.rst && after.state == tcp::State::Closed {
            conn.end.reset = true;
        }
        // RCV.NXT moves by what smoltcp queued in sequence (and a FIN),
        // before our ACK for it goes out (a delayed ACK may wait).
        let fin = u32::from(received_fin(after.state) && !received_fin(before.state));
        let delta = after.recv_queue.saturating_sub(before.recv_queue) as u32 + fin;
        if delta > 0
            && let Some(nxt) = conn.rcv_next
        {
            conn.rcv_next = Some(nxt.wrapping_add(delta));
        }
        if fin == 1
            && seg.payload_len == 0
            && after.state == tcp::State::CloseWait
            && let Some(delay) = conn.socket().ack_delay()
        {
            // A bare FIN: its ACK may ride on our FIN (`Conn::fin_ack_waits`).
            conn.fin_ack_until = Some(now + delay);
        }
        // Record the acknowledgment only once smoltcp has taken the segment
        // (it moved the state, freed sent bytes or queued received ones): a
        // segment it rejected (out of window, say) must not raise later
        // segments' acknowledgments.
        if seg.ack && !seg.rst {
            if before != after && conn.peer_ack.is_none_or(|max| seq_after(seg.ack_number, max)) {
                conn.peer_ack = Some(seg.ack_number);
                conn.progress_at = now;
            } else if in_sync {
                conn.progress_at = now;
            }
        }
        note_frames(self.medium, conn, now, &mut out[from..]);
        // Egress polls it only when smoltcp has something to send now (data,
        // an ACK it does not delay, a window update, a FIN, an RST) or the
        // core's own egress steps may apply (a phase other than open, a held
        // close, a FIN's ACK held back): a segment whose ACK smoltcp delays
        // (each of a ping-pong's) needs no egress pass, only its deadline,
        // filed from the same `poll_at`. Asked with Nagle's algorithm as
        // egress applies it (`Conn::with_real_nagle`): with segmentation
        // offload, data an ACK lets go is due now.
        let mut polled = None;
        if !conn.dirty {
            let open = matches!(conn.phase, Phase::Open) && !conn.close_held && conn.fin_ack_until.is_none();
            let next = open.then(|| conn.with_real_nagle(|conn| self.iface.poll_at(now, &conn.set)));
            match next {
                Some(next) if next.is_none_or(|at| at > now) => polled = Some(next),
                _ => {
                    conn.dirty = true;
                    self.dirty.push(id);
                }
            }
        }
        self.changed(now, id, before, polled);
    }

    /// Runs egress on every connection with something to do.
    fn egress(&mut self, now: Instant, out: &mut Vec<FrameBuf>) {
        let mut dirty = std::mem::take(&mut self.dirty);
        for &id in &dirty {
            let Some(conn) = self.conns.get_mut(&id) else { continue };
            conn.dirty = false;
            if matches!(conn.phase, Phase::Held { .. }) || conn.time_wait.is_some() {
                continue;
            }
            if conn.fin_ack_until.is_some() {
                if conn.fin_ack_waits(now) {
                    // Only the FIN's ACK to send: it waits (its deadline is
                    // the connection's timer).
                    self.update_timer(now, id, None);
                    continue;
                }
                conn.fin_ack_until = None;
            }
            let before = Snapshot::of(conn.socket());
            let from = out.len();
            let mut bridge = Bridge { rx: None, tx: out, pool: &self.pool, caps: &self.caps };
            // smoltcp's next poll, when asked after the first segment.
            let mut polled = None;
            conn.with_real_nagle(|conn| {
                for round in 0..EGRESS_ROUNDS {
                    #[cfg(test)]
                    {
                        self.egress_polls += 1;
                    }
                    if self.iface.poll_egress(now, &mut bridge, &mut conn.set) == smoltcp::iface::PollResult::None {
                        break;
                    }
                    if round == 0 {
                        // Most polls send one segment (each of a ping-pong's):
                        // when smoltcp wants nothing more now, its next poll is
                        // the deadline, without an empty poll to find that out.
                        let next = self.iface.poll_at(now, &conn.set);
                        if next.is_none_or(|at| at > now) {
                            polled = Some(next);
                            break;
                        }
                    }
                }
            });
            // The connection looked up once for what most rounds need.
            note_frames(self.medium, conn, now, &mut out[from..]);
            // For an open connection's deadline only: a held close polls
            // the socket again, other phases' steps may change it.
            let polled = polled.filter(|_| matches!(conn.phase, Phase::Open) && !conn.close_held);
            let (close_held, orphan) = (conn.close_held, matches!(conn.phase, Phase::Orphan | Phase::Resetting { .. }));
            if close_held {
                self.held_close(now, id, out);
            }
            if orphan && self.orphan_polled(now, id) {
                continue;
            }
            self.changed(now, id, before, polled);
        }
        dirty.clear();
        // Keep the allocation; ids marked meanwhile (by `changed`) stay.
        dirty.append(&mut self.dirty);
        self.dirty = dirty;
    }

    /// After an egress poll of connection `id`: an orphan's timeout starts
    /// ([`Conn::orphan_deadline`]); whether it was given up on (and
    /// forgotten) because its RST could not be sent in time.
    ///
    /// smoltcp sends an aborted socket's RST once and then forgets the
    /// connection, but when the neighbour's entry is missing (expired after
    /// 60 s of silence) it sends a neighbour request and drops the RST, the
    /// socket still owing it; it tries again once the neighbour answered or
    /// after a second of silence. A closed orphan would be reaped at once
    /// and the RST never sent: the orphan waits as `Resetting` instead (its
    /// port and socket kept), for at most [`RESET_PATIENCE`] (three neighbour
    /// requests), and is forgotten then, counted.
    fn orphan_polled(&mut self, now: Instant, id: ConnId) -> bool {
        let Some(conn) = self.conns.get_mut(&id) else { return false };
        if conn.phase == Phase::Orphan && conn.orphan_since.is_none() {
            conn.orphan_since = Some(now);
        }
        let owed = owes_reset(conn.socket());
        match conn.phase {
            Phase::Orphan if owed => conn.phase = Phase::Resetting { until: Some(now + RESET_PATIENCE.into()) },
            Phase::Resetting { until: None } if owed => {
                conn.phase = Phase::Resetting { until: Some(now + RESET_PATIENCE.into()) };
            }
            Phase::Resetting { until: Some(until) } if owed && now >= until => {
                self.resets_abandoned += 1;
                tracing::debug!(local = %conn.local, remote = %conn.remote, "RST not sent: no neighbour answer, given up");
                self.forget(id);
                return true;
            }
            // Sent (or the socket closed without one): reaped as an orphan.
            Phase::Resetting { .. } if !owed => conn.phase = Phase::Orphan,
            _ => {}
        }
        false
    }

    /// Applies connection `id`'s close held in CLOSE-WAIT ([`Conn::close`])
    /// once its last bytes left (or it left CLOSE-WAIT otherwise: a reset,
    /// a timeout): the FIN goes out in this round.
    fn held_close(&mut self, now: Instant, id: ConnId, out: &mut Vec<FrameBuf>) {
        let Some(conn) = self.conns.get_mut(&id) else { return };
        if conn.socket().state() == tcp::State::CloseWait && !conn.all_sent() {
            return;
        }
        conn.close();
        let from = out.len();
        let mut bridge = Bridge { rx: None, tx: out, pool: &self.pool, caps: &self.caps };
        let _ = self.iface.poll_egress(now, &mut bridge, &mut conn.set);
        self.sent(now, id, out, from);
    }

    /// Notes what connection `id` sent (`out[from..]`): SND.MAX for the ACK
    /// checks, RCV.NXT as we acknowledged it, data now outstanding; fixes
    /// an abort's RST sequence number, rewrites transparent connections'
    /// source back and tags super-segments for GSO.
    fn sent(&mut self, now: Instant, id: ConnId, out: &mut [FrameBuf], from: usize) {
        if let Some(conn) = self.conns.get_mut(&id) {
            note_frames(self.medium, conn, now, &mut out[from..]);
        }
    }

    /// After connection `id`'s socket was polled: events for what changed
    /// since `before`, phase changes, reaping, and its next deadline
    /// (`polled`: see [`update_timer`](Core::update_timer)).
    fn changed(&mut self, now: Instant, id: ConnId, before: Snapshot, polled: Option<Option<Instant>>) {
        let Some(conn) = self.conns.get_mut(&id) else { return };
        let after = Snapshot::of(conn.socket());
        let state_moved = after.state != before.state;
        // A run of frames for one connection (a bulk stream's data, or its
        // ACKs) makes one wake-up, not one per frame: the same event just
        // queued is not queued again.
        if (after.recv_queue > before.recv_queue || state_moved)
            && !matches!(self.events.back(), Some(Event::Readable(last)) if *last == id)
        {
            self.events.push_back(Event::Readable(id));
        }
        if (after.send_queue < before.send_queue || state_moved)
            && !matches!(self.events.back(), Some(Event::Writable(last)) if *last == id)
        {
            self.events.push_back(Event::Writable(id));
        }
        let closed = after.state == tcp::State::Closed;
        match conn.phase {
            Phase::Connecting if closed => self.events.push_back(Event::Closed(id)),
            Phase::Connecting if !matches!(after.state, tcp::State::SynSent | tcp::State::SynReceived) => {
                conn.phase = Phase::Open;
                self.events.push_back(Event::Established(id));
            }
            Phase::HalfOpen { .. } if closed => {
                tracing::trace!(local = %conn.local, remote = %conn.remote, "handshake reset");
                self.abort_half_open(id);
                return;
            }
            Phase::HalfOpen { port } if !matches!(after.state, tcp::State::Listen | tcp::State::SynReceived) => {
                self.leave_half_open(id, Phase::HalfOpen { port });
                let conn = self.conns.get_mut(&id).expect("present");
                match self.listens.get(&port) {
                    Some(l) => {
                        conn.phase = Phase::Open;
                        let (local, remote) = (conn.nat.unwrap_or(conn.local), conn.remote);
                        self.events.push_back(Event::Accepted { id, listen: l.id, local, remote });
                    }
                    None => {
                        conn.socket_mut().abort();
                        self.release(id, true, true);
                    }
                }
            }
            Phase::Open if closed && state_moved => self.events.push_back(Event::Closed(id)),
            Phase::Orphan if closed => {
                self.forget(id);
                return;
            }
            _ => {}
        }
        let Some(conn) = self.conns.get(&id) else { return };
        if conn.dirty {
            // This round's egress polls it again and sets its deadline
            // then: not once per received frame.
            return;
        }
        // Only an orphan gives its socket back in TIME_WAIT.
        if matches!(conn.phase, Phase::Orphan) && self.enter_time_wait(now, id) {
            return;
        }
        self.update_timer(now, id, polled);
    }

    /// Sets connection `id`'s deadline: smoltcp's next poll, the handshake
    /// timeout, the user timeout. `polled`: smoltcp's next poll when the
    /// caller just asked for it (at `now`, the socket unchanged since).
    fn update_timer(&mut self, now: Instant, id: ConnId, polled: Option<Option<Instant>>) {
        let Some(conn) = self.conns.get_mut(&id) else { return };
        let mut next = polled.unwrap_or_else(|| self.iface.poll_at(now, &conn.set));
        if conn.fin_ack_waits(now)
            && let Some(until) = conn.fin_ack_until
        {
            // smoltcp wants to send the FIN's ACK now: not before `until`.
            next = Some(next.map_or(until, |n| n.max(until)));
        }
        let mut consider = |t: Instant| next = Some(next.map_or(t, |n: Instant| n.min(t)));
        match conn.phase {
            Phase::HalfOpen { .. } => consider(conn.since + self.config.handshake_timeout.into()),
            Phase::Held { .. } => consider(conn.since + hold_timeout(&self.config).into()),
            Phase::Resetting { until: Some(until) } => consider(until),
            Phase::Orphan if let Some(at) = conn.orphan_deadline(self.config.orphan_timeout) => consider(at),
            _ if conn.outstanding() => consider(conn.progress_at + self.config.user_timeout.into()),
            _ => {}
        }
        match next {
            // Just polled: what smoltcp still wants at once (a socket past
            // its egress round limit, a neighbour not answering) waits a
            // millisecond rather than spinning the driver.
            Some(at) => file_timer(&mut self.timers, conn, id, at.max(now + smoltcp::time::Duration::from_millis(1))),
            None => unfile_timer(&mut self.timers, conn, id),
        }
    }
}

/// [`Core::sent`] for connection `conn`, which sent `out`.
fn note_frames(medium: Medium, conn: &mut Conn, now: Instant, out: &mut [FrameBuf]) {
    let was_outstanding = conn.outstanding();
    for frame in out {
        // Most segments need only their sequence fields, read at their
        // fixed places; an RST (its sequence number fixed) and a
        // transparent connection's segments (their source rewritten)
        // need the whole `Segment`, as does a layout `built` does not read.
        if conn.nat.is_none()
            && let Some(sent) = wire::built(frame, medium, conn.local, conn.remote)
            && !sent.rst
        {
            conn.note_sent(frame, sent.seq_end, sent.ack, sent.payload_len);
            continue;
        }
        let Inspected::Tcp(seg) = wire::inspect(frame, medium, false) else { continue };
        if (seg.src, seg.dst) != (conn.local, conn.remote) {
            continue;
        }
        if seg.rst {
            if let Some(max) = conn.snd_max.filter(|max| seq_after(*max, seg.seq_number)) {
                rewrite::set_seq(frame, &seg, max);
            }
        } else {
            conn.note_sent(frame, seg.seq_end(), seg.ack.then_some(seg.ack_number), seg.payload_len);
        }
        if let Some(dialled) = conn.nat {
            rewrite::nat(frame, &seg, true, dialled);
        }
    }
    if !was_outstanding && conn.outstanding() {
        // The user timeout counts from when data became outstanding.
        conn.progress_at = now;
    }
}

/// Sets connection `id`'s (`conn`'s) deadline to `at` in `timers`.
fn file_timer(timers: &mut BTreeSet<(Instant, ConnId)>, conn: &mut Conn, id: ConnId, at: Instant) {
    if conn.timer == Some(at) {
        return;
    }
    conn.timer = Some(at);
    match conn.entry {
        // Filed no later: it comes due first and re-files itself.
        Some(filed) if filed <= at => {}
        old => {
            if let Some(old) = old {
                timers.remove(&(old, id));
            }
            conn.entry = Some(at);
            timers.insert((at, id));
        }
    }
}

/// Clears connection `id`'s (`conn`'s) deadline in `timers`.
fn unfile_timer(timers: &mut BTreeSet<(Instant, ConnId)>, conn: &mut Conn, id: ConnId) {
    conn.timer = None;
    if let Some(old) = conn.entry.take() {
        timers.remove(&(old, id));
    }
}

/// Takes a connection's socket out of its set, leaving a closed socket
/// without buffers (no allocation) in its place.
fn take_socket(conn: &mut Conn) -> tcp::Socket<'static> {
    let none = || tcp::SocketBuffer::new(Vec::new());
    std::mem::replace(conn.socket_mut(), tcp::Socket::new(none(), none()))
}

/// How long a SYN stays held undecided: the handshake timeout, or the
/// connect timeout when longer (the decision is typically a connect
/// elsewhere, bounded by it).
fn hold_timeout(config: &StackConfig) -> Duration {
    config.handshake_timeout.max(config.connect_timeout)
}

/// An aborted socket whose RST has not left yet: smoltcp forgets the
/// connection (its endpoints) once the RST is sent.
fn owes_reset(sock: &tcp::Socket<'_>) -> bool {
    sock.state() == tcp::State::Closed && sock.remote_endpoint().is_some()
}

/// A state reached only after the peer's FIN.
fn received_fin(state: tcp::State) -> bool {
    use tcp::State::*;
    matches!(state, CloseWait | Closing | LastAck | TimeWait)
}

/// A state in which both sequence spaces are synchronized (RFC 793).
fn synchronized(state: tcp::State) -> bool {
    use tcp::State::*;
    matches!(state, Established | FinWait1 | FinWait2 | CloseWait | Closing | LastAck | TimeWait)
}

/// Keepalive with Linux's deadline: probes every `interval` of silence,
/// death at `after + probes * interval` after the last received segment.
fn apply_keepalive(sock: &mut tcp::Socket<'static>, keepalive: Option<Keepalive>) {
    match keepalive {
        Some(ka) => {
            sock.set_keep_alive(Some(ka.interval.max(Duration::from_millis(1)).into()));
            sock.set_timeout(Some(crate::keepalive_deadline(&ka).into()));
        }
        None => {
            sock.set_keep_alive(None);
            sock.set_timeout(None);
        }
    }
}

#[cfg(test)]
mod tests;

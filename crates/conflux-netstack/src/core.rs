//! The stack's state behind its lock: the smoltcp interface, the socket
//! sets, the connection table, listeners and ports. Sans-IO: the driver
//! hands it frames and the time, it hands back frames to send, the next
//! deadline and the handshakes that finished.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use conflux_tcp::{Keepalive, Listener};
use smoltcp::iface::{Config, Interface, PollIngressSingleResult, PollResult, SocketHandle, SocketSet};
use smoltcp::phy::{self, ChecksumCapabilities, DeviceCapabilities};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpCidr};

use crate::config::StackConfig;
use crate::device::{Checksums, DeviceCaps, FrameBuf, FramePool, Medium, RxCsum};
use crate::flow::NetFlow;
use crate::ports::Ports;
use crate::wire;

/// A connection's key in the table.
pub(crate) type ConnId = u64;

/// (local, remote): how ingress finds a connection.
type Tuple = (SocketAddr, SocketAddr);

/// A listener's key: the address it listens on (ours, or unspecified for
/// all of ours) and its port.
pub(crate) type ListenKey = SocketAddr;

/// Where a connection is in its life, as the stack sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Our SYN is out; a `create_connection` future watches it.
    Connecting,
    /// A peer's SYN made this socket; the handshake is not finished. `port`
    /// is the key (address and port) of the listener it came to.
    HalfOpen { port: ListenKey },
    /// A flow owns it.
    Open,
    /// Its flow was closed or dropped (or its connect abandoned): the socket
    /// finishes (FIN, TIME_WAIT) and is then reaped.
    Orphan,
}

pub(crate) struct Conn {
    pub(crate) shard: usize,
    pub(crate) handle: SocketHandle,
    pub(crate) local: SocketAddr,
    pub(crate) remote: SocketAddr,
    pub(crate) phase: Phase,
    /// An RST for this 4-tuple arrived and the socket closed on it.
    pub(crate) rst_seen: bool,
    /// Aborted by the user timeout.
    pub(crate) timed_out: bool,
    /// The last sign of life of the peer while our data is outstanding: an
    /// acknowledgment moving forward, or a segment in sequence.
    progress_at: Instant,
    /// The local port came from the allocator (freed when reaped).
    ephemeral: bool,
    /// Accepted by the transparent listener: the destination the peer
    /// dialled (not ours). Ingress is rewritten from it to `local`, egress
    /// back.
    pub(crate) nat: Option<SocketAddr>,
    /// The highest acknowledgment number of the peer that smoltcp took
    /// (SND.UNA as far as segments carrying data go; for old-ACK data).
    peer_ack: Option<u32>,
    /// The sequence number just past the last segment we sent (SND.MAX):
    /// an acknowledgment beyond it acknowledges nothing we sent.
    snd_max: Option<u32>,
    /// The highest acknowledgment we sent (RCV.NXT as the peer last heard
    /// it): data ending at or before it is a retransmission.
    rcv_nxt: Option<u32>,
    /// When the SYN arrived (half-open sockets).
    since: Instant,
}

struct Shard {
    sockets: SocketSet<'static>,
    /// Something happened (frames in, a write, a read, a close): run egress.
    dirty: bool,
    /// When smoltcp next wants this set polled.
    next_at: Option<Instant>,
}

pub(crate) struct Listen {
    pub(crate) listener: Arc<Listener<NetFlow>>,
    keepalive: Option<Keepalive>,
    half_open: usize,
    generation: u64,
    owns_port: bool,
}

/// A handshake that finished: the driver makes its flow and dispatches it.
pub(crate) struct Accepted {
    pub(crate) listener: Arc<Listener<NetFlow>>,
    pub(crate) id: ConnId,
    pub(crate) shard: usize,
    pub(crate) handle: SocketHandle,
    pub(crate) local: SocketAddr,
    pub(crate) remote: SocketAddr,
}

/// smoltcp's view of our device for one poll: at most one received frame,
/// transmitted frames collected into a vector.
struct Bridge<'a> {
    rx: Option<FrameBuf>,
    tx: &'a mut Vec<FrameBuf>,
    pool: &'a FramePool,
    caps: &'a DeviceCapabilities,
}

struct RxToken(FrameBuf);
struct TxToken<'a>(&'a mut Vec<FrameBuf>, &'a FramePool);

impl phy::RxToken for RxToken {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        // A pooled buffer: not zeroed, smoltcp writes every byte of it.
        let mut frame = self.1.take(len);
        let r = f(&mut frame);
        self.0.push(frame);
        r
    }
}

impl phy::Device for Bridge<'_> {
    type RxToken<'a>
        = RxToken
    where
        Self: 'a;
    type TxToken<'a>
        = TxToken<'a>
    where
        Self: 'a;

    fn receive(&mut self, _: Instant) -> Option<(RxToken, TxToken<'_>)> {
        let frame = self.rx.take()?;
        Some((RxToken(frame), TxToken(self.tx, self.pool)))
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
    c.max_transmission_unit = match caps.medium {
        Medium::Ethernet => caps.mtu + 14,
        Medium::Ip => caps.mtu,
    };
    c.checksum = match caps.checksums {
        Checksums::Compute => {
            // The driver verifies IPv4 header and TCP checksums of every
            // received frame before anything else looks at it (see
            // `wire::inspect`): smoltcp only computes them on transmit.
            let mut sums = ChecksumCapabilities::default();
            sums.ipv4 = phy::Checksum::Tx;
            sums.tcp = phy::Checksum::Tx;
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

/// How often orphaned sockets are checked for reaping.
const REAP_EVERY: Duration = Duration::from_millis(100);
/// Egress rounds per shard per poll before yielding to ingress.
const EGRESS_ROUNDS: usize = 128;

pub(crate) struct Core {
    iface: Interface,
    medium: Medium,
    caps: DeviceCapabilities,
    pool: FramePool,
    shards: Vec<Shard>,
    pub(crate) conns: HashMap<ConnId, Conn>,
    tuples: HashMap<Tuple, ConnId>,
    pub(crate) listens: HashMap<ListenKey, Listen>,
    pub(crate) ports: Ports,
    half_open: Vec<ConnId>,
    orphans: Vec<ConnId>,
    next_id: ConnId,
    next_generation: u64,
    pub(crate) disconnected: bool,
    /// Our addresses (what local delivery and SYN matching compare against).
    pub(crate) addrs: Vec<IpAddr>,
    cidrs: Vec<IpCidr>,
    pub(crate) config: StackConfig,
    last_reap: Instant,
    /// The port under which the transparent listener is registered.
    pub(crate) transparent_port: Option<u16>,
    /// (internal local, remote) -> the original destination, for rewriting
    /// egress of transparently accepted connections.
    nat_out: HashMap<Tuple, SocketAddr>,
    /// Open connections with sent data not yet acknowledged (user timeout).
    outstanding: HashSet<ConnId>,
}

impl Core {
    pub(crate) fn new(config: StackConfig, caps: DeviceCaps, pool: FramePool, now: Instant) -> Core {
        let smol = smol_caps(caps);
        let hw = match caps.medium {
            Medium::Ethernet => HardwareAddress::Ethernet(EthernetAddress(config.mac)),
            Medium::Ip => HardwareAddress::Ip,
        };
        let mut iface_config = Config::new(hw);
        iface_config.random_seed = config.seed;
        let mut tx = Vec::new();
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
        let shards = (0..config.shards.max(1))
            .map(|_| Shard { sockets: SocketSet::new(Vec::new()), dirty: false, next_at: None })
            .collect();
        let addrs = cidrs.iter().map(|c| IpAddr::from(c.address())).collect();
        Core {
            iface,
            medium: caps.medium,
            caps: smol,
            pool,
            shards,
            conns: HashMap::new(),
            tuples: HashMap::new(),
            listens: HashMap::new(),
            ports: Ports::new(config.ephemeral_ports.clone(), config.seed),
            half_open: Vec::new(),
            orphans: Vec::new(),
            next_id: 1,
            next_generation: 1,
            disconnected: false,
            addrs,
            cidrs,
            config,
            last_reap: now,
            transparent_port: None,
            nat_out: HashMap::new(),
            outstanding: HashSet::new(),
        }
    }

    fn shard_of(&self, tuple: &Tuple) -> usize {
        let mut h = std::hash::DefaultHasher::new();
        tuple.hash(&mut h);
        (h.finish() % self.shards.len() as u64) as usize
    }

    fn new_socket(&self) -> tcp::Socket<'static> {
        tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; self.config.rx_buffer]),
            tcp::SocketBuffer::new(vec![0; self.config.tx_buffer]),
        )
    }

    /// The socket of a live connection.
    pub(crate) fn socket(&mut self, shard: usize, handle: SocketHandle) -> &mut tcp::Socket<'static> {
        let s = &mut self.shards[shard];
        s.dirty = true;
        s.sockets.get_mut::<tcp::Socket<'static>>(handle)
    }

    /// Our source address for reaching `dst`, or `None` when there is no route.
    pub(crate) fn source_for(&self, dst: IpAddr) -> Option<IpAddr> {
        let same_family = |a: &IpAddr| a.is_ipv4() == dst.is_ipv4();
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
        self.addrs.iter().copied().find(same_family)
    }

    /// Starts a connection from `local` to `remote`.
    pub(crate) fn connect(
        &mut self,
        local_ip: IpAddr,
        remote: SocketAddr,
        keepalive: Option<Keepalive>,
    ) -> Result<(ConnId, usize, SocketHandle, SocketAddr), &'static str> {
        let port = self.ports.allocate().ok_or("the ephemeral port range is exhausted")?;
        let local = SocketAddr::new(local_ip, port);
        let tuple = (local, remote);
        let shard = self.shard_of(&tuple);
        let mut sock = self.new_socket();
        apply_keepalive(&mut sock, keepalive);
        if sock.connect(self.iface.context(), remote, local).is_err() {
            self.ports.free(port);
            return Err("the address cannot be connected to");
        }
        let handle = self.shards[shard].sockets.add(sock);
        self.shards[shard].dirty = true;
        let id = self.next_id;
        self.next_id += 1;
        self.conns.insert(
            id,
            Conn {
                shard,
                handle,
                local,
                remote,
                phase: Phase::Connecting,
                rst_seen: false,
                timed_out: false,
                progress_at: Instant::ZERO,
                ephemeral: true,
                nat: None,
                peer_ack: None,
                snd_max: None,
                rcv_nxt: None,
                since: Instant::ZERO,
            },
        );
        self.tuples.insert(tuple, id);
        Ok((id, shard, handle, local))
    }

    /// A connection whose flow is gone (closed, dropped, connect abandoned):
    /// its socket finishes on its own, is aborted after the orphan timeout of
    /// silence, and is reaped once closed.
    pub(crate) fn orphan(&mut self, id: ConnId) {
        let timeout = self.config.orphan_timeout;
        if let Some(conn) = self.conns.get_mut(&id)
            && conn.phase != Phase::Orphan
        {
            conn.phase = Phase::Orphan;
            let (shard, handle) = (conn.shard, conn.handle);
            let sock = self.socket(shard, handle);
            if sock.timeout().is_none() {
                sock.set_timeout(Some(timeout.into()));
            }
            self.orphans.push(id);
        }
    }

    pub(crate) fn new_listen_generation(&mut self) -> u64 {
        self.next_generation += 1;
        self.next_generation
    }

    /// Registers a listener under `key`; `owns_port` says whether it took
    /// the port from the allocator (the first listener on a port does).
    pub(crate) fn add_listen(
        &mut self,
        key: ListenKey,
        listener: Arc<Listener<NetFlow>>,
        keepalive: Option<Keepalive>,
        generation: u64,
        owns_port: bool,
    ) {
        self.listens.insert(key, Listen { listener, keepalive, half_open: 0, generation, owns_port });
    }

    /// The key of the listener that takes a SYN to `dst` (one of our
    /// addresses): the one on exactly that address wins, then `0.0.0.0`
    /// (IPv4 destinations), then `[::]` (every address).
    fn listen_key(&self, dst: SocketAddr) -> Option<ListenKey> {
        let any4 = SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), dst.port());
        let any6 = conflux_tcp::any_addr(dst.port());
        let candidates = [Some(dst), dst.is_ipv4().then_some(any4), Some(any6)];
        candidates.into_iter().flatten().find(|k| self.listens.contains_key(k))
    }

    /// Removes the listener of `generation` under `key` (not a newer one) and
    /// drops its half-open handshakes. The port goes back to the allocator
    /// with the last listener on it.
    pub(crate) fn remove_listen(&mut self, key: ListenKey, generation: u64) {
        if self.listens.get(&key).is_some_and(|l| l.generation == generation) {
            if self.transparent_port == Some(key.port()) && key == conflux_tcp::any_addr(key.port()) {
                self.transparent_port = None;
            }
            if let Some(l) = self.listens.remove(&key)
                && l.owns_port
            {
                match self.listens.iter_mut().find(|(k, _)| k.port() == key.port()) {
                    Some((_, other)) => other.owns_port = true,
                    None => self.ports.free(key.port()),
                }
            }
            let doomed: Vec<ConnId> = self
                .half_open
                .iter()
                .copied()
                .filter(|id| self.conns.get(id).is_some_and(|c| c.phase == Phase::HalfOpen { port: key }))
                .collect();
            for id in doomed {
                self.abort_half_open(id);
            }
        }
    }

    fn abort_half_open(&mut self, id: ConnId) {
        if let Some(conn) = self.conns.get(&id) {
            let (shard, handle, phase) = (conn.shard, conn.handle, conn.phase);
            self.leave_half_open(id, phase);
            self.socket(shard, handle).abort();
            self.orphan(id);
        }
    }

    /// Takes `id` off the half-open list and its listener's count.
    fn leave_half_open(&mut self, id: ConnId, phase: Phase) {
        if let Phase::HalfOpen { port } = phase
            && let Some(l) = self.listens.get_mut(&port)
        {
            l.half_open = l.half_open.saturating_sub(1);
        }
        self.half_open.retain(|h| *h != id);
    }

    /// Forgets a half-open handshake at once: its socket, table entries
    /// and port go, and no RST is sent (the SYN's source may be forged).
    fn evict_half_open(&mut self, id: ConnId) {
        let Some(conn) = self.conns.remove(&id) else { return };
        self.leave_half_open(id, conn.phase);
        self.forget(&conn);
    }

    /// Drops a removed connection's socket, table entries and port.
    fn forget(&mut self, conn: &Conn) {
        self.shards[conn.shard].sockets.remove(conn.handle);
        self.tuples.remove(&(conn.nat.unwrap_or(conn.local), conn.remote));
        if conn.nat.is_some() {
            self.nat_out.remove(&(conn.local, conn.remote));
        }
        if conn.ephemeral {
            self.ports.free(conn.local.port());
        }
    }

    /// Closes every open and half-open connection gracefully (disconnect).
    pub(crate) fn close_all(&mut self) {
        self.disconnected = true;
        let ids: Vec<(ConnId, Phase, usize, SocketHandle)> =
            self.conns.iter().map(|(id, c)| (*id, c.phase, c.shard, c.handle)).collect();
        for (id, phase, shard, handle) in ids {
            match phase {
                Phase::Open => self.socket(shard, handle).close(),
                Phase::HalfOpen { .. } => self.abort_half_open(id),
                Phase::Connecting => {
                    self.socket(shard, handle).abort();
                }
                Phase::Orphan => {}
            }
        }
        self.transparent_port = None;
        for (key, l) in self.listens.drain() {
            if l.owns_port {
                self.ports.free(key.port());
            }
        }
    }

    fn is_local(&self, frame: &[u8]) -> bool {
        wire::destination(frame, self.medium).is_some_and(|dst| self.addrs.contains(&dst))
    }

    /// Feeds one received frame to the socket set its 4-tuple belongs to,
    /// making a fresh socket for a SYN to a listened port.
    ///
    /// Nothing is decided on a frame before it is checked (lengths, and
    /// checksums where the device computes them): a corrupted frame must
    /// not admit a SYN, abort an orphan, mark a reset or move the highest
    /// acknowledgment seen.
    fn ingress(&mut self, now: Instant, mut frame: FrameBuf, out: &mut Vec<FrameBuf>) {
        let verify = self.caps.checksum.tcp.tx() && frame.meta.csum == RxCsum::Unknown;
        let seg = match wire::inspect(&frame, self.medium, verify) {
            wire::Inspected::Tcp(seg) => Some(seg),
            wire::Inspected::Other => None,
            wire::Inspected::Bad => {
                tracing::debug!(len = frame.len(), "malformed or corrupted frame dropped");
                return;
            }
        };
        let mut conn_id = None;
        let shard = match seg {
            None => 0,
            Some(seg) => {
                let tuple = (seg.dst, seg.src);
                if let Some(&id) = self.tuples.get(&tuple) {
                    conn_id = Some(id);
                    self.conns[&id].shard
                } else if seg.syn && !seg.ack && !seg.rst && !self.disconnected {
                    let ours = self.addrs.contains(&seg.dst.ip());
                    let port = if ours {
                        self.listen_key(seg.dst)
                    } else if seg.dst.ip().is_multicast() || seg.dst.ip().is_unspecified() {
                        None
                    } else {
                        self.transparent_port.map(conflux_tcp::any_addr)
                    };
                    match port.filter(|p| self.listens.contains_key(p)) {
                        Some(port) => match self.accept_syn(now, tuple, port, !ours) {
                            Some(id) => {
                                conn_id = Some(id);
                                self.conns[&id].shard
                            }
                            None => return,
                        },
                        None => self.shard_of(&tuple),
                    }
                } else {
                    self.shard_of(&tuple)
                }
            }
        };
        if let (Some(seg), Some(id)) = (seg, conn_id)
            && seg.payload_len > 0
            && let Some(conn) = self.conns.get(&id)
            && conn.phase == Phase::Orphan
            && conn.rcv_nxt.is_none_or(|nxt| wire::seq_after(seg.seq_number.wrapping_add(seg.payload_len as u32), nxt))
        {
            // New data for a closed flow: nobody will read it. Reset, as
            // the kernel does, so the peer's writes fail instead of
            // stalling. (A retransmission of data we already acknowledged
            // goes to smoltcp, which acknowledges it again.)
            let (shard, handle) = (conn.shard, conn.handle);
            let sock = self.socket(shard, handle);
            if !matches!(sock.state(), tcp::State::TimeWait | tcp::State::Closed) {
                sock.abort();
            }
            return;
        }
        let mut before = None;
        if let (Some(seg), Some(id)) = (seg, conn_id)
            && let Some(conn) = self.conns.get_mut(&id)
        {
            if seg.ack && !seg.rst {
                if let Some(max) = conn.snd_max
                    && wire::seq_after(seg.ack_number, max)
                {
                    // RFC 5961 5.2: an ACK for data we never sent is
                    // discarded. (smoltcp would take one that falls in its
                    // unsent buffer as acknowledging it: bytes lost.)
                    tracing::debug!(ack = seg.ack_number, snd_max = max, "ACK beyond SND.NXT dropped");
                    return;
                }
                // RFC 5961 5.2: data with an old but acceptable ACK is
                // processed. smoltcp drops any segment whose ACK is below
                // SND.UNA, data included; the old ACK acknowledges nothing
                // new, so it is raised to the highest one smoltcp took (a
                // no-op for the acknowledgment) and the data goes through.
                if let Some(max) = conn.peer_ack
                    && wire::seq_after(max, seg.ack_number)
                    && seg.payload_len > 0
                    && max.wrapping_sub(seg.ack_number) < 1 << 30
                {
                    wire::rewrite_ack(&mut frame, self.medium, max);
                }
                let sock = self.shards[conn.shard].sockets.get::<tcp::Socket<'static>>(conn.handle);
                // In sequence with what we acknowledged, and acknowledging
                // nothing older than what smoltcp took: a live peer in sync
                // with us (a zero-window probe's answer is one).
                let in_sync = conn.rcv_nxt == Some(seg.seq_number)
                    && conn.peer_ack.is_none_or(|una| !wire::seq_after(una, seg.ack_number));
                before = Some((sock.state(), sock.send_queue(), sock.recv_queue(), in_sync));
            }
            if conn.nat.is_some() {
                wire::rewrite(&mut frame, self.medium, false, conn.local);
            }
        }
        let mut bridge = Bridge { rx: Some(frame), tx: out, pool: &self.pool, caps: &self.caps };
        let sh = &mut self.shards[shard];
        let _: PollIngressSingleResult = self.iface.poll_ingress_single(now, &mut bridge, &mut sh.sockets);
        sh.dirty = true;
        if seg.is_none() {
            // ARP and NDP answers unblock sockets of every set waiting for
            // a neighbour: let them all send (such frames are rare).
            self.shards.iter_mut().for_each(|s| s.dirty = true);
        }
        let (Some(seg), Some(id)) = (seg, conn_id) else { return };
        let Some(conn) = self.conns.get_mut(&id) else { return };
        let sock = self.shards[conn.shard].sockets.get::<tcp::Socket<'static>>(conn.handle);
        if seg.rst && sock.state() == tcp::State::Closed {
            conn.rst_seen = true;
        }
        // Record the acknowledgment only once smoltcp has taken the segment
        // (it moved the state, freed sent bytes or queued received ones):
        // a segment it rejected (out of window, say) must not raise later
        // segments' acknowledgments.
        let Some((state, send_queue, recv_queue, in_sync)) = before else { return };
        if (state, send_queue, recv_queue) != (sock.state(), sock.send_queue(), sock.recv_queue())
            && conn.peer_ack.is_none_or(|max| wire::seq_after(seg.ack_number, max))
        {
            conn.peer_ack = Some(seg.ack_number);
            conn.progress_at = now;
            if conn.peer_ack == conn.snd_max {
                self.outstanding.remove(&id);
            }
        } else if in_sync {
            conn.progress_at = now;
        }
    }

    /// Aborts open connections whose sent data went unacknowledged, with no
    /// segment in sequence from the peer, for the user timeout.
    fn expire_unacknowledged(&mut self, now: Instant) {
        let timeout = self.config.user_timeout.into();
        let mut expired = Vec::new();
        self.outstanding.retain(|id| match self.conns.get(id) {
            Some(c) if c.phase == Phase::Open => {
                if now >= c.progress_at + timeout {
                    expired.push(*id);
                    false
                } else {
                    true
                }
            }
            _ => false,
        });
        for id in expired {
            let Some(conn) = self.conns.get_mut(&id) else { continue };
            conn.timed_out = true;
            let (shard, handle) = (conn.shard, conn.handle);
            tracing::debug!(local = %conn.local, remote = %conn.remote, "user timeout: sent data unacknowledged, aborted");
            self.socket(shard, handle).abort();
        }
    }

    /// Notes what we sent on a connection: SND.MAX for the ACK checks,
    /// RCV.NXT as we acknowledged it, and data now outstanding. For an RST
    /// of a connection (an abort), returns the sequence number it must
    /// carry: smoltcp sends SND.UNA, which the peer drops as out of window
    /// when it received more than we know it acknowledged; SND.MAX, as Linux
    /// sends, is what the peer expects next.
    fn sent(&mut self, now: Instant, seg: &wire::Segment) -> Option<u32> {
        let tuple = match self.nat_out.get(&(seg.src, seg.dst)) {
            Some(original) => (*original, seg.dst),
            None => (seg.src, seg.dst),
        };
        let id = *self.tuples.get(&tuple)?;
        let conn = self.conns.get_mut(&id)?;
        if seg.rst {
            return conn.snd_max.filter(|max| wire::seq_after(*max, seg.seq_number));
        }
        {
            let end = seg.seq_end();
            if conn.snd_max.is_none_or(|max| wire::seq_after(end, max)) {
                conn.snd_max = Some(end);
            }
            if seg.ack && conn.rcv_nxt.is_none_or(|nxt| wire::seq_after(seg.ack_number, nxt)) {
                conn.rcv_nxt = Some(seg.ack_number);
            }
            if conn.phase == Phase::Open && conn.peer_ack != conn.snd_max && self.outstanding.insert(id) {
                conn.progress_at = now;
            }
        }
        None
    }

    /// Makes a socket for a SYN to `tuple`, for the listener on `port`;
    /// `nat` (transparent listening) gives it one of our addresses and a
    /// port of its own, the original destination kept for rewriting.
    ///
    /// At the listener's half-open cap the oldest of its unfinished
    /// handshakes is evicted first: under a flood of SYNs whose SYN-ACKs are
    /// never answered, a legitimate handshake still gets a slot and keeps it
    /// for the time `cap` more SYNs take to arrive. (SYN cookies would need
    /// control of the initial sequence number, which smoltcp 0.14 does not
    /// give.)
    fn accept_syn(&mut self, now: Instant, tuple: Tuple, port: ListenKey, nat: bool) -> Option<ConnId> {
        let cap = self.config.max_half_open;
        if self.listens.get(&port).is_some_and(|l| l.half_open >= cap) {
            let oldest = self
                .half_open
                .iter()
                .copied()
                .filter(|id| self.conns.get(id).is_some_and(|c| c.phase == Phase::HalfOpen { port }))
                .min_by_key(|id| (self.conns[id].since, *id));
            match oldest {
                Some(id) => {
                    tracing::debug!(%port, "half-open cap reached: oldest handshake evicted");
                    self.evict_half_open(id);
                }
                None => {
                    tracing::debug!(%port, "half-open cap reached: SYN dropped");
                    return None;
                }
            }
        }
        let (dialled, remote) = tuple;
        let (local, original) = if nat {
            let ip = self.addrs.iter().copied().find(|a| a.is_ipv4() == dialled.is_ipv4())?;
            let p = self.ports.allocate()?;
            (SocketAddr::new(ip, p), Some(dialled))
        } else {
            (dialled, None)
        };
        let shard = self.shard_of(&tuple);
        let mut sock = self.new_socket();
        let keepalive = self.listens.get(&port).and_then(|l| l.keepalive);
        apply_keepalive(&mut sock, keepalive);
        // Listening on exactly this address and port: only this SYN's peer
        // gets it (the socket leaves LISTEN as soon as the SYN is processed).
        let _ = sock.listen(smoltcp::wire::IpListenEndpoint { addr: Some(local.ip().into()), port: local.port() });
        let handle = self.shards[shard].sockets.add(sock);
        let id = self.next_id;
        self.next_id += 1;
        self.conns.insert(
            id,
            Conn {
                shard,
                handle,
                local,
                remote,
                phase: Phase::HalfOpen { port },
                rst_seen: false,
                timed_out: false,
                progress_at: now,
                ephemeral: nat,
                nat: original,
                peer_ack: None,
                snd_max: None,
                rcv_nxt: None,
                since: now,
            },
        );
        self.tuples.insert(tuple, id);
        if original.is_some() {
            self.nat_out.insert((local, remote), dialled);
        }
        self.half_open.push(id);
        if let Some(l) = self.listens.get_mut(&port) {
            l.half_open += 1;
        }
        tracing::trace!(%dialled, %remote, nat, "SYN: new socket");
        Some(id)
    }

    /// Runs egress on every set that has work or a due timer.
    fn egress(&mut self, now: Instant, out: &mut Vec<FrameBuf>) {
        for i in 0..self.shards.len() {
            let due = self.shards[i].next_at.is_some_and(|t| t <= now);
            if !self.shards[i].dirty && !due {
                continue;
            }
            let mut bridge = Bridge { rx: None, tx: out, pool: &self.pool, caps: &self.caps };
            let sh = &mut self.shards[i];
            sh.dirty = false;
            for _ in 0..EGRESS_ROUNDS {
                if self.iface.poll_egress(now, &mut bridge, &mut sh.sockets) == PollResult::None {
                    break;
                }
            }
            sh.next_at = self.iface.poll_at(now, &sh.sockets);
        }
    }

    /// One round of work: frames in, frames out (local ones looped back),
    /// finished handshakes, reaping. `device_full` skips egress (the device
    /// has a backlog).
    pub(crate) fn process(
        &mut self,
        now: Instant,
        rx: &mut Vec<FrameBuf>,
        tx: &mut Vec<FrameBuf>,
        device_full: bool,
    ) -> Vec<Accepted> {
        let mut out = Vec::new();
        let mut local = Vec::new();
        for _ in 0..16 {
            for frame in rx.drain(..) {
                self.ingress(now, frame, &mut out);
            }
            if !device_full {
                self.egress(now, &mut out);
            }
            for mut frame in out.drain(..) {
                if let Some(seg) = wire::tcp_segment(&frame, self.medium) {
                    if let Some(seq) = self.sent(now, &seg) {
                        wire::rewrite_seq(&mut frame, self.medium, seq);
                    }
                    if let Some(original) = self.nat_out.get(&(seg.src, seg.dst)) {
                        wire::rewrite(&mut frame, self.medium, true, *original);
                    }
                }
                if self.is_local(&frame) { local.push(frame) } else { tx.push(frame) }
            }
            if local.is_empty() {
                break;
            }
            std::mem::swap(rx, &mut local);
        }
        let accepted = self.finish_handshakes(now);
        self.expire_unacknowledged(now);
        if now >= self.last_reap + REAP_EVERY.into() {
            self.reap();
            self.last_reap = now;
        }
        accepted
    }

    fn finish_handshakes(&mut self, now: Instant) -> Vec<Accepted> {
        let mut accepted = Vec::new();
        let mut i = 0;
        while i < self.half_open.len() {
            let id = self.half_open[i];
            let Some(conn) = self.conns.get(&id) else {
                self.half_open.swap_remove(i);
                continue;
            };
            let Phase::HalfOpen { port } = conn.phase else {
                self.half_open.swap_remove(i);
                continue;
            };
            let state = self.shards[conn.shard].sockets.get::<tcp::Socket<'static>>(conn.handle).state();
            let expired = now >= conn.since + self.config.handshake_timeout.into();
            match state {
                tcp::State::Listen | tcp::State::SynReceived if !expired => i += 1,
                tcp::State::Listen | tcp::State::SynReceived | tcp::State::Closed => {
                    tracing::trace!(local = %conn.local, remote = %conn.remote, ?state, "handshake abandoned");
                    self.abort_half_open(id);
                }
                _ => {
                    let (shard, handle, local, remote) =
                        (conn.shard, conn.handle, conn.nat.unwrap_or(conn.local), conn.remote);
                    self.half_open.swap_remove(i);
                    let listen = self.listens.get_mut(&port);
                    match listen {
                        Some(l) => {
                            l.half_open = l.half_open.saturating_sub(1);
                            if let Some(c) = self.conns.get_mut(&id) {
                                c.phase = Phase::Open;
                            }
                            accepted.push(Accepted { listener: l.listener.clone(), id, shard, handle, local, remote });
                        }
                        None => {
                            self.socket(shard, handle).abort();
                            self.orphan(id);
                        }
                    }
                }
            }
        }
        accepted
    }

    /// Removes closed orphans and frees their ports.
    fn reap(&mut self) {
        let mut i = 0;
        while i < self.orphans.len() {
            let id = self.orphans[i];
            let Some(conn) = self.conns.get(&id) else {
                self.orphans.swap_remove(i);
                continue;
            };
            let sock = self.shards[conn.shard].sockets.get::<tcp::Socket<'static>>(conn.handle);
            if sock.state() != tcp::State::Closed {
                i += 1;
                continue;
            }
            self.orphans.swap_remove(i);
            if let Some(conn) = self.conns.remove(&id) {
                self.forget(&conn);
            }
        }
    }

    /// When the driver should run next (absent frames and kicks).
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        let mut next = self.shards.iter().filter_map(|s| s.next_at).min();
        let mut consider = |t: Instant| next = Some(next.map_or(t, |n: Instant| n.min(t)));
        for id in &self.half_open {
            if let Some(c) = self.conns.get(id) {
                consider(c.since + self.config.handshake_timeout.into());
            }
        }
        if !self.orphans.is_empty() {
            consider(self.last_reap + REAP_EVERY.into());
        }
        for id in &self.outstanding {
            if let Some(c) = self.conns.get(id) {
                consider(c.progress_at + self.config.user_timeout.into());
            }
        }
        next
    }

    /// Sockets in the table (open, half-open, closing, TIME_WAIT).
    pub(crate) fn sockets(&self) -> usize {
        self.conns.len()
    }
}

/// Keepalive with Linux's deadline: probes every `interval` of silence,
/// death at `after + probes * interval` after the last received segment.
pub(crate) fn apply_keepalive(sock: &mut tcp::Socket<'static>, keepalive: Option<Keepalive>) {
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

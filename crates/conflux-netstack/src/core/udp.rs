//! UDP in the core: bound sockets, the transparent receive (intercept), their
//! bounded receive queues, and the one transmit queue.
//!
//! Receive: every UDP datagram is parsed here (checked views; lengths, and
//! the UDP checksum where the device computes them) before smoltcp sees the
//! frame, and consumed: it goes to the socket bound on its destination
//! (exact address, then `0.0.0.0`, then `[::]`; a broadcast to the
//! wildcard ones), else to the intercept when
//! the destination is not ours (nor multicast or unspecified) or is one of
//! the intercept's `own` addresses, else it is dropped (no ICMP port
//! unreachable). IP fragments are dropped (no reassembly). A full queue
//! drops the datagram and counts it.
//!
//! Transmit: the core builds the IP and UDP headers (any source address:
//! the intercept answers from the original destination) and queues the
//! packet on one smoltcp raw socket in a set of its own, so smoltcp resolves
//! the neighbour (ARP, NDP) and frames it. A packet whose neighbour never
//! answers blocks the queue: after [`TX_STUCK`] without progress the queue
//! (with the datagrams behind it) is dropped and counted rather than
//! stalling every sender. One queue, not one per next hop: smoltcp's
//! neighbour cache sends at most one request per second for all neighbours,
//! so a dead neighbour's retries would starve another hop's first request
//! anyway (tried: the live hop's queue went stuck too).
//!
//! A datagram to one of our own addresses is delivered at once, without a
//! frame.
//!
//! Ports: UDP has its own port space and allocator (a TCP listener and a
//! UDP socket may share a port, as on Linux).

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::Range;

use bytes::Bytes;
use smoltcp::iface::{PollResult, SocketHandle, SocketSet};
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::socket::raw;
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{
    EthernetAddress, EthernetFrame, EthernetProtocol, IpAddress, IpCidr, IpProtocol, Ipv4Packet, Ipv4Repr, Ipv6Packet,
    Ipv6Repr, UdpPacket, UdpRepr,
};

use super::{Bridge, Core};
use crate::device::{Checksums, DeviceCaps, Medium, RxCsum};
use crate::ports::Ports;

/// A UDP socket's (or the intercept's) key, chosen by the core.
pub(crate) type UdpId = u64;

/// Datagrams a receive queue holds at most.
pub(crate) const QUEUE_DATAGRAMS: usize = 256;
/// Payload bytes a receive queue holds at most.
pub(crate) const QUEUE_BYTES: usize = 1 << 20;
/// Packets the transmit queue holds at most.
const TX_PACKETS: usize = 512;
/// Bytes of IP packets the transmit queue holds at least.
const TX_BYTES: usize = 512 * 1024;
/// A transmit queue that made no progress this long (a neighbour that never
/// answers) is dropped.
pub(crate) const TX_STUCK: Duration = Duration::from_secs(3);
/// Egress rounds per poll (one packet each).
const TX_ROUNDS: usize = 1024;

/// A received datagram.
#[derive(Debug)]
pub(crate) struct Received {
    pub(crate) data: Bytes,
    pub(crate) src: SocketAddr,
    pub(crate) dst: SocketAddr,
}

/// A receive's outcome.
#[derive(Debug)]
pub(crate) enum UdpRecv {
    Datagram(Received),
    Empty,
    /// Closed (an intercept replaced by another, or the socket is gone).
    Closed,
    /// The stack was disconnected.
    Disconnected,
}

/// Why a bind or send was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UdpRefused {
    Disconnected,
    NotOurs,
    InUse,
    Exhausted,
    /// The transmit queue is full: wait for room.
    Full,
    TooLarge {
        max: usize,
    },
}

struct Queue {
    items: VecDeque<Received>,
    bytes: usize,
    dropped: u64,
    closed: bool,
}

struct Sock {
    /// The bind key (`None`: the intercept).
    bound: Option<SocketAddr>,
    queue: Queue,
}

/// The core's UDP state.
pub(crate) struct UdpCore {
    socks: HashMap<UdpId, Sock>,
    binds: HashMap<SocketAddr, UdpId>,
    ports: Ports,
    /// Sockets per bound port.
    port_refs: HashMap<u16, usize>,
    /// The intercept and its own addresses.
    intercept: Option<(UdpId, Vec<IpAddr>)>,
    next_id: UdpId,
    /// The set holding the raw transmit socket.
    tx: SocketSet<'static>,
    tx_handle: SocketHandle,
    /// Packets queued since the last egress.
    tx_dirty: bool,
    /// When egress should run again (a neighbour being resolved).
    retry_at: Option<Instant>,
    /// The last time the transmit queue was empty or moved.
    progress_at: Instant,
    /// Transmit queues dropped because a neighbour never answered.
    tx_dropped: u64,
    tx_bytes: usize,
    /// Sockets with newly queued datagrams (or closed).
    ready: Vec<UdpId>,
    /// The transmit queue has room again.
    writable: bool,
    /// The largest IP packet (the device's MTU, at most 65535).
    mtu: usize,
    /// Compute IPv4 UDP checksums (IPv6 ones always are).
    sum_v4: bool,
}

impl UdpCore {
    pub(crate) fn new(caps: DeviceCaps, ephemeral: std::ops::RangeInclusive<u16>, seed: u64) -> UdpCore {
        let mtu = caps.mtu.min(65_535);
        let tx_bytes = TX_BYTES.max(4 * mtu);
        let mut tx = SocketSet::new(Vec::new());
        let tx_handle = tx.add(raw_socket(tx_bytes));
        UdpCore {
            socks: HashMap::new(),
            binds: HashMap::new(),
            // Another start than TCP's: the two spaces are independent.
            ports: Ports::new(ephemeral, seed.wrapping_mul(0x9e37_79b9_7f4a_7c15).wrapping_add(17)),
            port_refs: HashMap::new(),
            intercept: None,
            next_id: 1,
            tx,
            tx_handle,
            tx_dirty: false,
            retry_at: None,
            progress_at: Instant::ZERO,
            tx_dropped: 0,
            tx_bytes,
            ready: Vec::new(),
            writable: false,
            mtu,
            sum_v4: caps.checksums == Checksums::Compute,
        }
    }

    fn tx_queue(&self) -> usize {
        self.tx.get::<raw::Socket<'static>>(self.tx_handle).send_queue()
    }

    /// The socket bound where a datagram to `dst` (ours, or a broadcast
    /// address: wildcard sockets only) goes.
    fn lookup(&self, dst: SocketAddr, broadcast: bool) -> Option<UdpId> {
        let any4 = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), dst.port());
        let any6 = SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), dst.port());
        [(!broadcast).then_some(dst), dst.is_ipv4().then_some(any4), Some(any6)]
            .into_iter()
            .flatten()
            .find_map(|k| self.binds.get(&k).copied())
    }

    /// A bind on `key` would overlap an existing one (same address, or a
    /// wildcard covering the other).
    fn overlaps(&self, key: SocketAddr) -> bool {
        self.binds.keys().any(|k| {
            k.port() == key.port()
                && (k.ip() == key.ip()
                    || k.ip() == IpAddr::V6(Ipv6Addr::UNSPECIFIED)
                    || key.ip() == IpAddr::V6(Ipv6Addr::UNSPECIFIED)
                    || (k.ip() == IpAddr::V4(Ipv4Addr::UNSPECIFIED) && key.is_ipv4())
                    || (key.ip() == IpAddr::V4(Ipv4Addr::UNSPECIFIED) && k.is_ipv4()))
        })
    }

    fn push(&mut self, id: UdpId, r: Received) {
        let Some(sock) = self.socks.get_mut(&id) else { return };
        let q = &mut sock.queue;
        if q.closed {
            return;
        }
        if q.items.len() >= QUEUE_DATAGRAMS || q.bytes + r.data.len() > QUEUE_BYTES {
            q.dropped += 1;
            tracing::trace!(id, src = %r.src, dst = %r.dst, "UDP receive queue full: datagram dropped");
            return;
        }
        q.bytes += r.data.len();
        if q.items.is_empty() {
            self.ready.push(id);
        }
        q.items.push_back(r);
    }

    fn close(&mut self, id: UdpId) {
        if let Some(sock) = self.socks.get_mut(&id)
            && !sock.queue.closed
        {
            sock.queue.closed = true;
            self.ready.push(id);
        }
    }
}

fn raw_socket(tx_bytes: usize) -> raw::Socket<'static> {
    raw::Socket::new(
        None,
        Some(IpProtocol::Udp),
        raw::PacketBuffer::new(Vec::new(), Vec::new()),
        raw::PacketBuffer::new(vec![raw::PacketMetadata::EMPTY; TX_PACKETS], vec![0; tx_bytes]),
    )
}

/// A UDP datagram found in a frame.
struct Parsed {
    src: SocketAddr,
    dst: SocketAddr,
    /// The Ethernet destination (Ethernet frames).
    eth_dst: Option<EthernetAddress>,
    /// Where the payload is in the frame.
    payload: Range<usize>,
}

enum Parse {
    NotUdp,
    Bad,
    Udp(Parsed),
}

/// Parses a frame of `medium` as a UDP datagram: Ethernet and IP lengths,
/// the UDP length, and with `verify` the IPv4 header checksum and the UDP
/// checksum (zero means none in IPv4, and is invalid in IPv6). Fragments
/// are `Bad` (not reassembled).
fn parse(frame: &[u8], medium: Medium, verify: bool) -> Parse {
    let (ip_at, eth_dst) = match medium {
        Medium::Ip => (0, None),
        Medium::Ethernet => {
            let Ok(eth) = EthernetFrame::new_checked(frame) else { return Parse::Bad };
            match eth.ethertype() {
                EthernetProtocol::Ipv4 | EthernetProtocol::Ipv6 => {
                    (EthernetFrame::<&[u8]>::header_len(), Some(eth.dst_addr()))
                }
                _ => return Parse::NotUdp,
            }
        }
    };
    let packet = &frame[ip_at..];
    let (src, dst, udp_at, udp_end): (IpAddress, IpAddress, usize, usize) = match packet.first().map(|b| b >> 4) {
        Some(4) => {
            let Ok(ip) = Ipv4Packet::new_checked(packet) else { return Parse::Bad };
            if ip.next_header() != IpProtocol::Udp {
                return Parse::NotUdp;
            }
            if (verify && !ip.verify_checksum()) || ip.more_frags() || ip.frag_offset() != 0 {
                return Parse::Bad;
            }
            (ip.src_addr().into(), ip.dst_addr().into(), usize::from(ip.header_len()), usize::from(ip.total_len()))
        }
        Some(6) => {
            let Ok(ip) = Ipv6Packet::new_checked(packet) else { return Parse::Bad };
            if ip.next_header() != IpProtocol::Udp {
                return Parse::NotUdp;
            }
            let start = ip.header_len();
            (ip.src_addr().into(), ip.dst_addr().into(), start, start + usize::from(ip.payload_len()))
        }
        _ => return Parse::Bad,
    };
    let Ok(udp) = UdpPacket::new_checked(&packet[udp_at..udp_end]) else { return Parse::Bad };
    if verify {
        let zero = udp.checksum() == 0;
        if (zero && src.version() == smoltcp::wire::IpVersion::Ipv6) || (!zero && !udp.verify_checksum(&src, &dst)) {
            return Parse::Bad;
        }
    }
    let start = ip_at + udp_at + 8;
    Parse::Udp(Parsed {
        src: SocketAddr::new(src.into(), udp.src_port()),
        dst: SocketAddr::new(dst.into(), udp.dst_port()),
        eth_dst,
        payload: start..ip_at + udp_at + usize::from(udp.len()),
    })
}

impl Core {
    // ---- sockets ----

    /// Binds a UDP socket on `addr` (ours or unspecified; port 0: an
    /// ephemeral one). Returns its id and bound address.
    pub(crate) fn udp_bind(&mut self, addr: SocketAddr) -> Result<(UdpId, SocketAddr), UdpRefused> {
        if self.disconnected {
            return Err(UdpRefused::Disconnected);
        }
        if !addr.ip().is_unspecified() && !self.addrs.contains(&addr.ip()) {
            return Err(UdpRefused::NotOurs);
        }
        let udp = &mut self.udp;
        let port = match addr.port() {
            0 => udp.ports.allocate().ok_or(UdpRefused::Exhausted)?,
            p => {
                if udp.overlaps(addr) {
                    return Err(UdpRefused::InUse);
                }
                udp.ports.take(p);
                p
            }
        };
        *udp.port_refs.entry(port).or_default() += 1;
        let key = SocketAddr::new(addr.ip(), port);
        let id = udp.next_id;
        udp.next_id += 1;
        udp.binds.insert(key, id);
        udp.socks.insert(id, Sock { bound: Some(key), queue: Queue::new() });
        Ok((id, key))
    }

    /// Starts the intercept (replacing another, which is closed): datagrams
    /// to addresses not ours, and to ports of `own` nothing is bound on.
    /// Returns its id and the replaced one's.
    pub(crate) fn udp_intercept(&mut self, own: Vec<IpAddr>) -> Result<(UdpId, Option<UdpId>), UdpRefused> {
        if self.disconnected {
            return Err(UdpRefused::Disconnected);
        }
        let udp = &mut self.udp;
        let id = udp.next_id;
        udp.next_id += 1;
        udp.socks.insert(id, Sock { bound: None, queue: Queue::new() });
        let old = udp.intercept.replace((id, own)).map(|(old, _)| old);
        if let Some(old) = old {
            udp.close(old);
        }
        Ok((id, old))
    }

    /// Forgets socket (or intercept) `id`: its port goes back with the last
    /// socket on it.
    pub(crate) fn udp_close(&mut self, id: UdpId) {
        let udp = &mut self.udp;
        let Some(sock) = udp.socks.remove(&id) else { return };
        if udp.intercept.as_ref().is_some_and(|(i, _)| *i == id) {
            udp.intercept = None;
        }
        if let Some(key) = sock.bound {
            udp.binds.remove(&key);
            if let Some(n) = udp.port_refs.get_mut(&key.port()) {
                *n -= 1;
                if *n == 0 {
                    udp.port_refs.remove(&key.port());
                    udp.ports.free(key.port());
                }
            }
        }
    }

    /// Takes the next datagram of socket `id`.
    pub(crate) fn udp_recv(&mut self, id: UdpId) -> UdpRecv {
        let Some(sock) = self.udp.socks.get_mut(&id) else { return UdpRecv::Closed };
        match sock.queue.items.pop_front() {
            Some(r) => {
                sock.queue.bytes -= r.data.len();
                UdpRecv::Datagram(r)
            }
            None if sock.queue.closed && self.disconnected => UdpRecv::Disconnected,
            None if sock.queue.closed => UdpRecv::Closed,
            None => UdpRecv::Empty,
        }
    }

    /// Datagrams socket `id` dropped because its queue was full.
    pub(crate) fn udp_dropped(&self, id: UdpId) -> u64 {
        self.udp.socks.get(&id).map_or(0, |s| s.queue.dropped)
    }

    /// Transmit queues dropped because a neighbour never answered.
    pub(crate) fn udp_tx_dropped(&self) -> u64 {
        self.udp.tx_dropped
    }

    /// The largest UDP payload a datagram of the family can carry.
    pub(crate) fn udp_max_payload(&self, ipv4: bool) -> usize {
        self.udp.mtu.saturating_sub(if ipv4 { 20 } else { 40 } + 8)
    }

    /// Our source address for a datagram to `dst`, or `None` without a
    /// route (the IPv4 broadcast goes out on the link).
    pub(crate) fn udp_source(&self, dst: IpAddr) -> Option<IpAddr> {
        if dst == IpAddr::V4(Ipv4Addr::BROADCAST) {
            return self.addrs.iter().copied().find(IpAddr::is_ipv4);
        }
        self.source_for(dst)
    }

    /// Bound UDP ports.
    pub(crate) fn udp_ports_in_use(&self) -> usize {
        self.udp.ports.in_use()
    }

    /// Queues a datagram from `src` (any address) to `dst` of the same
    /// family; the caller checked the addresses and the route.
    pub(crate) fn udp_send(
        &mut self,
        now: Instant,
        src: SocketAddr,
        dst: SocketAddr,
        data: &[u8],
    ) -> Result<(), UdpRefused> {
        if self.disconnected {
            return Err(UdpRefused::Disconnected);
        }
        let max = self.udp_max_payload(dst.is_ipv4());
        if data.len() > max {
            return Err(UdpRefused::TooLarge { max });
        }
        if self.addrs.contains(&dst.ip()) {
            // To ourselves: delivered at once, no frame (IPv6 on Ethernet
            // has no local delivery through smoltcp).
            self.udp_deliver(src, dst, Bytes::copy_from_slice(data));
            return Ok(());
        }
        let udp = &mut self.udp;
        let ip_len = if dst.is_ipv4() { 20 } else { 40 };
        let total = ip_len + 8 + data.len();
        let was_empty = udp.tx_queue() == 0;
        let sock = udp.tx.get_mut::<raw::Socket<'static>>(udp.tx_handle);
        let buf = sock.send(total).map_err(|_| UdpRefused::Full)?;
        let mut sums = ChecksumCapabilities::default();
        let (s, d): (IpAddress, IpAddress) = (src.ip().into(), dst.ip().into());
        match (s, d) {
            (IpAddress::Ipv4(s), IpAddress::Ipv4(d)) => {
                let repr = Ipv4Repr {
                    src_addr: s,
                    dst_addr: d,
                    next_header: IpProtocol::Udp,
                    payload_len: 8 + data.len(),
                    hop_limit: 64,
                };
                repr.emit(&mut Ipv4Packet::new_unchecked(&mut buf[..]), &sums);
                if !udp.sum_v4 {
                    sums = ChecksumCapabilities::ignored();
                }
            }
            (IpAddress::Ipv6(s), IpAddress::Ipv6(d)) => {
                let repr = Ipv6Repr {
                    src_addr: s,
                    dst_addr: d,
                    next_header: IpProtocol::Udp,
                    payload_len: 8 + data.len(),
                    hop_limit: 64,
                };
                repr.emit(&mut Ipv6Packet::new_unchecked(&mut buf[..]));
            }
            _ => unreachable!("the shell checks the families match"),
        }
        UdpRepr { src_port: src.port(), dst_port: dst.port() }.emit(
            &mut UdpPacket::new_unchecked(&mut buf[ip_len..]),
            &s,
            &d,
            data.len(),
            |p| p.copy_from_slice(data),
            &sums,
        );
        if was_empty {
            udp.progress_at = now;
        }
        udp.tx_dirty = true;
        Ok(())
    }

    /// The next socket with news (datagrams or closed).
    pub(crate) fn udp_poll_ready(&mut self) -> Option<UdpId> {
        self.udp.ready.pop()
    }

    /// The transmit queue got room since the last call.
    pub(crate) fn udp_take_writable(&mut self) -> bool {
        std::mem::take(&mut self.udp.writable)
    }

    // ---- the core's call order ----

    /// Takes a received frame if it is UDP (returns `None`: consumed), else
    /// gives it back.
    pub(super) fn udp_ingress(&mut self, frame: crate::device::FrameBuf) -> Option<crate::device::FrameBuf> {
        let verify = self.verify && frame.meta.csum == RxCsum::Unknown;
        let d = match parse(&frame, self.medium, verify) {
            Parse::NotUdp => return Some(frame),
            Parse::Bad => {
                tracing::debug!(len = frame.len(), "malformed or corrupted UDP datagram dropped");
                return None;
            }
            Parse::Udp(d) => d,
        };
        if let Some(mac) = d.eth_dst
            && mac != EthernetAddress(self.config.mac)
            && !mac.is_broadcast()
        {
            return None;
        }
        let data = Bytes::copy_from_slice(&frame[d.payload.clone()]);
        self.udp_deliver(d.src, d.dst, data);
        None
    }

    /// Queues a datagram for the socket bound on `dst` or the intercept (or
    /// drops it).
    fn udp_deliver(&mut self, src: SocketAddr, dst: SocketAddr, data: Bytes) {
        let d = Received { data, src, dst };
        let ours = self.addrs.contains(&d.dst.ip());
        let broadcast = match d.dst.ip() {
            IpAddr::V4(ip) => {
                ip.is_broadcast()
                    || self.cidrs.iter().any(|c| matches!(c, IpCidr::Ipv4(c) if c.broadcast() == Some(ip)))
            }
            IpAddr::V6(_) => false,
        };
        let bound = if ours || broadcast { self.udp.lookup(d.dst, broadcast) } else { None };
        let target = bound.or_else(|| {
            let (id, own) = self.udp.intercept.as_ref()?;
            let ip = d.dst.ip();
            let takes = if ours { own.contains(&ip) } else { !ip.is_multicast() && !ip.is_unspecified() };
            takes.then_some(*id)
        });
        match target {
            Some(id) => self.udp.push(id, d),
            None => tracing::trace!(src = %d.src, dst = %d.dst, "UDP datagram for no socket dropped"),
        }
    }

    /// A non-UDP frame that smoltcp took may have answered a neighbour
    /// query the transmit queue waits for.
    pub(super) fn udp_neighbour_news(&mut self) {
        if self.udp.tx_queue() > 0 {
            self.udp.tx_dirty = true;
        }
    }

    /// Sends what the transmit queue holds (as far as neighbours are known).
    pub(super) fn udp_egress(&mut self, now: Instant, out: &mut Vec<crate::device::FrameBuf>) {
        if !self.udp.tx_dirty {
            return;
        }
        self.udp.tx_dirty = false;
        let before = self.udp.tx_queue();
        let mut bridge = Bridge { rx: None, tx: out, pool: &self.pool, caps: &self.caps };
        let mut idle = false;
        for _ in 0..TX_ROUNDS {
            if self.iface.poll_egress(now, &mut bridge, &mut self.udp.tx) == PollResult::None {
                idle = true;
                break;
            }
        }
        let after = self.udp.tx_queue();
        // Out of rounds with more to send: the next poll goes on at once.
        self.udp.tx_dirty = !idle && after > 0;
        if after < before {
            self.udp.writable = true;
            self.udp.progress_at = now;
        }
        self.udp.retry_at = if after > 0 {
            let at = self.iface.poll_at(now, &self.udp.tx).unwrap_or(now + Duration::from_millis(100));
            Some(at.max(now + Duration::from_millis(1)).min(self.udp.progress_at + TX_STUCK))
        } else {
            None
        };
    }

    /// Retries the transmit queue when due; drops it when stuck.
    pub(super) fn udp_handle_timeout(&mut self, now: Instant) {
        let Some(at) = self.udp.retry_at else { return };
        if at > now {
            return;
        }
        self.udp.retry_at = None;
        self.udp.tx_dirty = true;
        if self.udp.tx_queue() > 0 && now >= self.udp.progress_at + TX_STUCK {
            tracing::debug!("UDP transmit queue stuck on a neighbour that does not answer: dropped");
            let udp = &mut self.udp;
            udp.tx.remove(udp.tx_handle);
            udp.tx_handle = udp.tx.add(raw_socket(udp.tx_bytes));
            udp.tx_dropped += 1;
            udp.writable = true;
            udp.progress_at = now;
        }
    }

    /// When [`udp_handle_timeout`](Core::udp_handle_timeout) has work.
    pub(super) fn udp_poll_timeout(&self) -> Option<Instant> {
        if self.udp.tx_dirty { Some(Instant::ZERO) } else { self.udp.retry_at }
    }

    /// Packets wait for egress.
    pub(super) fn udp_has_work(&self) -> bool {
        self.udp.tx_dirty
    }

    /// Disconnect: every socket and the intercept are closed.
    pub(super) fn udp_disconnect(&mut self) {
        let ids: Vec<UdpId> = self.udp.socks.keys().copied().collect();
        ids.into_iter().for_each(|id| self.udp.close(id));
        self.udp.intercept = None;
    }
}

impl Queue {
    fn new() -> Queue {
        Queue { items: VecDeque::new(), bytes: 0, dropped: 0, closed: false }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 10.0.0.1:1234 -> 10.0.0.2:53, payload "hi", valid checksums.
    fn datagram_v4() -> Vec<u8> {
        let mut p = vec![0u8; 30];
        let (s, d) = ("10.0.0.1".parse::<std::net::Ipv4Addr>().unwrap(), "10.0.0.2".parse().unwrap());
        Ipv4Repr { src_addr: s, dst_addr: d, next_header: IpProtocol::Udp, payload_len: 10, hop_limit: 64 }
            .emit(&mut Ipv4Packet::new_unchecked(&mut p[..]), &ChecksumCapabilities::default());
        UdpRepr { src_port: 1234, dst_port: 53 }.emit(
            &mut UdpPacket::new_unchecked(&mut p[20..]),
            &s.into(),
            &d.into(),
            2,
            |b| b.copy_from_slice(b"hi"),
            &ChecksumCapabilities::default(),
        );
        p
    }

    #[test]
    fn parses_checks_and_rejects() {
        let p = datagram_v4();
        let Parse::Udp(d) = parse(&p, Medium::Ip, true) else { panic!("a datagram") };
        assert_eq!((d.src, d.dst), ("10.0.0.1:1234".parse().unwrap(), "10.0.0.2:53".parse().unwrap()));
        assert_eq!(&p[d.payload], b"hi");
        let mut bad = p.clone();
        bad[29] ^= 1;
        assert!(matches!(parse(&bad, Medium::Ip, true), Parse::Bad), "a wrong UDP checksum");
        assert!(matches!(parse(&bad, Medium::Ip, false), Parse::Udp(_)), "not verified");
        let mut none = p.clone();
        none[26..28].copy_from_slice(&[0, 0]);
        assert!(matches!(parse(&none, Medium::Ip, true), Parse::Udp(_)), "no checksum (IPv4)");
        for len in 0..p.len() {
            assert!(matches!(parse(&p[..len], Medium::Ip, false), Parse::Bad), "truncated to {len}");
        }
        let mut frag = p.clone();
        frag[6] |= 0x20; // more fragments
        assert!(matches!(parse(&frag, Medium::Ip, false), Parse::Bad), "a fragment");
        let mut tcp = p.clone();
        tcp[9] = 6;
        assert!(matches!(parse(&tcp, Medium::Ip, false), Parse::NotUdp));
    }
}

//! A DHCPv4 server for VM guests, sans-IO: RFC 2131's minimal server part.
//!
//! Invariant: nothing in this module does I/O or reads a clock; smoltcp's
//! DHCP wire types stay private.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    DhcpMessageType, DhcpOption, DhcpPacket, DhcpRepr, EthernetAddress, EthernetFrame, EthernetProtocol, IpAddress,
    IpProtocol, Ipv4Packet, Ipv4Repr, UdpPacket, UdpRepr,
};

use crate::{Cidr, UsernetConfig};

/// The server's UDP port.
pub const DHCP_SERVER_PORT: u16 = 67;
/// The client's UDP port.
pub const DHCP_CLIENT_PORT: u16 = 68;

/// The default lease time: one hour.
pub const DEFAULT_LEASE_TIME: Duration = Duration::from_secs(3600);

/// Leases a server hands out at most, however large the network.
const MAX_LEASES: u32 = 1024;

/// BOOTP's minimum message size (RFC 1542): replies are padded to it.
const MIN_REPLY_LEN: usize = 300;

const OPT_MTU: u8 = 26;
const OPT_DNS: u8 = 6;

/// Where a reply goes (from the server's address, port 67, to port 68).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DhcpTo {
    /// To 255.255.255.255 and the Ethernet broadcast address: a NAK, or a
    /// client that set the broadcast flag.
    Broadcast,
    /// To `ip` at the hardware address `mac`, without ARP (the client may
    /// not answer ARP for an address it does not have yet).
    Unicast {
        /// The client's (offered) address.
        ip: Ipv4Addr,
        /// The client's hardware address.
        mac: [u8; 6],
    },
}

/// A reply to send: the UDP payload and its destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhcpReply {
    /// The DHCP message (the UDP payload).
    pub payload: Vec<u8>,
    /// Where it goes.
    pub to: DhcpTo,
}

/// What [`DhcpServer::handle_frame`] made of a guest's Ethernet frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DhcpFrame {
    /// Not a UDP datagram to port 67 of the server or of 255.255.255.255:
    /// the frame is the stack's.
    NotDhcp,
    /// A DHCP message, answered by this Ethernet frame (from the server's
    /// MAC and address, port 67, to port 68; broadcast or unicast per
    /// [`DhcpTo`]).
    Reply(Vec<u8>),
    /// A DHCP message that needs no answer (RELEASE, DECLINE, a REQUEST for
    /// another server).
    NoReply,
    /// A datagram to port 67 the server could not use.
    Failed(DhcpError),
}

/// A received datagram the server could not use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DhcpError {
    /// Not a DHCP message from a client on Ethernet (too short, no magic
    /// cookie, no message type, a server's message, ...).
    #[error("not a DHCP client message on Ethernet ({len} bytes)")]
    Malformed {
        /// The datagram's length.
        len: usize,
    },
    /// Every address of the pool is leased.
    #[error("no free address for {mac} (all {size} leased)")]
    PoolExhausted {
        /// The client's hardware address.
        mac: Mac,
        /// The pool's size.
        size: u32,
    },
}

/// A hardware address, printed `52:54:00:12:34:56`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Mac(pub [u8; 6]);

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5])
    }
}

impl fmt::Debug for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[derive(Debug, Clone, Copy)]
struct Lease {
    addr: Ipv4Addr,
    /// Offered (not yet requested) or bound until then.
    expires: Instant,
    bound: bool,
}

/// How long an offer holds its address for a client that does not request it.
const OFFER_HOLD: Duration = Duration::from_secs(60);

/// The DHCPv4 server of a guest network.
///
/// It answers DISCOVER with an OFFER and REQUEST with an ACK (or a NAK when
/// the requested address is not this client's to have: outside the pool,
/// or leased to another client), remembers each client's lease by its
/// hardware address (`chaddr`), so a client gets the same address again,
/// frees a lease on RELEASE, and ignores a REQUEST meant for another server.
/// Replies carry options 1 (subnet mask), 3 (router), 6 (DNS), 26 (MTU),
/// 51 (lease time) and 54 (server identifier). The pool runs from the
/// configured guest address (the first lease) to the end of the network,
/// skipping the gateway and DNS addresses, at most 1,024 addresses.
///
/// Call order: [`handle_input`](DhcpServer::handle_input) for each UDP
/// datagram received on port 67, with the current time; send the reply it
/// returns from the gateway address, port 67, to port 68. Or, in front of
/// a stack, [`handle_frame`](DhcpServer::handle_frame) for each Ethernet
/// frame from the guest, which picks out the DHCP datagrams and answers
/// with whole frames. Nothing else: there is no timer (expiry is checked
/// against the `now` of later calls).
#[derive(Debug, Clone)]
pub struct DhcpServer {
    server: Ipv4Addr,
    mask: Ipv4Addr,
    dns: Ipv4Addr,
    mtu: u16,
    lease_time: Duration,
    /// The pool: `first .. first + size`.
    first: u32,
    size: u32,
    leases: HashMap<Mac, Lease>,
}

impl DhcpServer {
    /// The server of `config`'s IPv4 network: the gateway is the server and
    /// the router, the DNS forwarder the DNS server, leases of
    /// [`DEFAULT_LEASE_TIME`].
    pub fn new(config: &UsernetConfig) -> DhcpServer {
        let (network, prefix) = match cidr_parts(&config.network4) {
            Some((IpAddr::V4(a), p)) => (a, p),
            // Not an IPv4 network: a pool of the guest address alone.
            _ => (config.guest4, 32),
        };
        let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
        let broadcast = u32::from(network) | !mask;
        let first = u32::from(config.guest4);
        // The last usable address is below the broadcast address.
        let size =
            if (u32::from(network)..broadcast).contains(&first) { (broadcast - first).min(MAX_LEASES) } else { 0 };
        DhcpServer {
            server: config.gateway4,
            mask: Ipv4Addr::from(mask),
            dns: config.dns4,
            mtu: u16::try_from(config.mtu).unwrap_or(u16::MAX),
            lease_time: DEFAULT_LEASE_TIME,
            first,
            size,
            leases: HashMap::new(),
        }
    }

    /// Sets the lease time (at least a second).
    pub fn lease_time(mut self, lease_time: Duration) -> DhcpServer {
        self.lease_time = lease_time.max(Duration::from_secs(1));
        self
    }

    /// The address `mac` holds (bound, not merely offered) at `now`.
    pub fn lease_of(&self, mac: [u8; 6], now: Instant) -> Option<Ipv4Addr> {
        self.leases.get(&Mac(mac)).filter(|l| l.bound && l.expires > now).map(|l| l.addr)
    }

    /// Handles one datagram a client sent to port 67: the reply to send, if
    /// any (none for a RELEASE, a DECLINE, or a REQUEST for another server).
    pub fn handle_input(&mut self, now: Instant, payload: &[u8]) -> Result<Option<DhcpReply>, DhcpError> {
        let malformed = DhcpError::Malformed { len: payload.len() };
        let packet = DhcpPacket::new_checked(payload).map_err(|_| malformed)?;
        let msg = DhcpRepr::parse(&packet).map_err(|_| malformed)?;
        let mac = Mac(msg.client_hardware_address.0);
        tracing::trace!(%mac, kind = ?msg.message_type, xid = msg.transaction_id, "dhcp message");
        match msg.message_type {
            DhcpMessageType::Discover => {
                let addr = self.allocate(mac, msg.requested_ip, now)?;
                self.leases.insert(mac, Lease { addr, expires: now + OFFER_HOLD, bound: false });
                Ok(Some(self.reply(&msg, DhcpMessageType::Offer, addr)))
            }
            DhcpMessageType::Request => Ok(self.handle_request(now, mac, &msg)),
            DhcpMessageType::Release => {
                if self.leases.get(&mac).is_some_and(|l| l.addr == msg.client_ip) {
                    self.leases.remove(&mac);
                    tracing::trace!(%mac, addr = %msg.client_ip, "dhcp lease released");
                }
                Ok(None)
            }
            DhcpMessageType::Decline => {
                // The address is in use by someone else: forget this client's lease.
                self.leases.remove(&mac);
                Ok(None)
            }
            DhcpMessageType::Inform => Ok(Some(self.reply(&msg, DhcpMessageType::Ack, Ipv4Addr::UNSPECIFIED))),
            _ => Err(malformed),
        }
    }

    /// Handles one Ethernet frame from the guest: a DHCP client's datagram
    /// (to port 67 of the server's address or of 255.255.255.255, valid
    /// IPv4 and UDP checksums) is answered with a whole Ethernet frame from
    /// `server_mac`; any other frame is [`DhcpFrame::NotDhcp`].
    pub fn handle_frame(&mut self, now: Instant, frame: &[u8], server_mac: [u8; 6]) -> DhcpFrame {
        let Some(payload) = self.client_datagram(frame) else { return DhcpFrame::NotDhcp };
        match self.handle_input(now, payload) {
            Ok(Some(reply)) => DhcpFrame::Reply(self.reply_frame(&reply, server_mac)),
            Ok(None) => DhcpFrame::NoReply,
            Err(e) => {
                tracing::debug!(error = %e, "dhcp datagram dropped");
                DhcpFrame::Failed(e)
            }
        }
    }

    /// The UDP payload of `frame` if it is a datagram to our port 67.
    fn client_datagram<'a>(&self, frame: &'a [u8]) -> Option<&'a [u8]> {
        let eth = EthernetFrame::new_checked(frame).ok()?;
        if eth.ethertype() != EthernetProtocol::Ipv4 {
            return None;
        }
        let caps = ChecksumCapabilities::default();
        let ip = Ipv4Packet::new_checked(&frame[EthernetFrame::<&[u8]>::header_len()..]).ok()?;
        let ip_repr = Ipv4Repr::parse(&ip, &caps).ok()?;
        if ip_repr.next_header != IpProtocol::Udp
            || !(ip_repr.dst_addr == Ipv4Addr::BROADCAST || ip_repr.dst_addr == self.server)
        {
            return None;
        }
        let udp_bytes = ip.payload();
        let udp = UdpPacket::new_checked(udp_bytes).ok()?;
        let (src, dst) = (IpAddress::Ipv4(ip_repr.src_addr), IpAddress::Ipv4(ip_repr.dst_addr));
        let udp_repr = UdpRepr::parse(&udp, &src, &dst, &caps).ok()?;
        if udp_repr.dst_port != DHCP_SERVER_PORT {
            return None;
        }
        let len = usize::from(udp.len()).checked_sub(8)?;
        udp_bytes.get(8..8 + len)
    }

    /// `reply` as an Ethernet frame from `server_mac` and the server's address.
    fn reply_frame(&self, reply: &DhcpReply, server_mac: [u8; 6]) -> Vec<u8> {
        let (dst_ip, dst_mac) = match reply.to {
            DhcpTo::Broadcast => (Ipv4Addr::BROADCAST, [0xff; 6]),
            DhcpTo::Unicast { ip, mac } => (ip, mac),
        };
        let udp = UdpRepr { src_port: DHCP_SERVER_PORT, dst_port: DHCP_CLIENT_PORT };
        let udp_len = udp.header_len() + reply.payload.len();
        let ip = Ipv4Repr {
            src_addr: self.server,
            dst_addr: dst_ip,
            next_header: IpProtocol::Udp,
            payload_len: udp_len,
            hop_limit: 64,
        };
        let eth_len = EthernetFrame::<&[u8]>::header_len();
        let mut frame = vec![0; eth_len + ip.buffer_len() + udp_len];
        let mut eth = EthernetFrame::new_unchecked(&mut frame[..]);
        eth.set_dst_addr(EthernetAddress(dst_mac));
        eth.set_src_addr(EthernetAddress(server_mac));
        eth.set_ethertype(EthernetProtocol::Ipv4);
        let caps = ChecksumCapabilities::default();
        let mut ip_packet = Ipv4Packet::new_unchecked(&mut frame[eth_len..]);
        ip.emit(&mut ip_packet, &caps);
        let mut udp_packet = UdpPacket::new_unchecked(ip_packet.payload_mut());
        let (src, dst) = (IpAddress::Ipv4(self.server), IpAddress::Ipv4(dst_ip));
        udp.emit(&mut udp_packet, &src, &dst, reply.payload.len(), |buf| buf.copy_from_slice(&reply.payload), &caps);
        frame
    }

    fn handle_request(&mut self, now: Instant, mac: Mac, msg: &DhcpRepr<'_>) -> Option<DhcpReply> {
        // SELECTING: the client names the server it chose.
        if let Some(server) = msg.server_identifier
            && server != self.server
        {
            // Another server's offer won: ours is free again.
            if self.leases.get(&mac).is_some_and(|l| !l.bound) {
                self.leases.remove(&mac);
            }
            return None;
        }
        // SELECTING / INIT-REBOOT: the requested-address option;
        // RENEWING / REBINDING: the client's own address.
        let wanted = msg.requested_ip.or((!msg.client_ip.is_unspecified()).then_some(msg.client_ip));
        let Some(wanted) = wanted else { return Some(self.reply(msg, DhcpMessageType::Nak, Ipv4Addr::UNSPECIFIED)) };
        if !self.in_pool(wanted) || self.holder(wanted, now).is_some_and(|m| m != mac) {
            tracing::debug!(%mac, addr = %wanted, "dhcp request for a foreign address: nak");
            return Some(self.reply(msg, DhcpMessageType::Nak, Ipv4Addr::UNSPECIFIED));
        }
        self.leases.insert(mac, Lease { addr: wanted, expires: now + self.lease_time, bound: true });
        tracing::trace!(%mac, addr = %wanted, "dhcp lease bound");
        Some(self.reply(msg, DhcpMessageType::Ack, wanted))
    }

    fn in_pool(&self, addr: Ipv4Addr) -> bool {
        let a = u32::from(addr);
        a >= self.first && a - self.first < self.size && addr != self.server && addr != self.dns
    }

    /// Who holds `addr` (offered or bound, not expired) at `now`.
    fn holder(&self, addr: Ipv4Addr, now: Instant) -> Option<Mac> {
        self.leases.iter().find(|(_, l)| l.addr == addr && l.expires > now).map(|(m, _)| *m)
    }

    /// The address to offer `mac`: its own lease's (even expired, if still
    /// free), else the one it asks for (if free), else the first free one.
    fn allocate(&mut self, mac: Mac, requested: Option<Ipv4Addr>, now: Instant) -> Result<Ipv4Addr, DhcpError> {
        let free_for = |s: &DhcpServer, a: Ipv4Addr| s.in_pool(a) && s.holder(a, now).is_none_or(|m| m == mac);
        if let Some(lease) = self.leases.get(&mac).copied()
            && free_for(self, lease.addr)
        {
            return Ok(lease.addr);
        }
        if let Some(a) = requested
            && free_for(self, a)
        {
            return Ok(a);
        }
        // Expired leases of other clients give their addresses back.
        self.leases.retain(|m, l| *m == mac || l.expires > now);
        (0..self.size)
            .map(|i| Ipv4Addr::from(self.first + i))
            .find(|&a| free_for(self, a))
            .ok_or(DhcpError::PoolExhausted { mac, size: self.size })
    }

    fn reply(&self, msg: &DhcpRepr<'_>, kind: DhcpMessageType, addr: Ipv4Addr) -> DhcpReply {
        let nak = kind == DhcpMessageType::Nak;
        let mtu = self.mtu.to_be_bytes();
        let dns = self.dns.octets();
        let extra = [DhcpOption { kind: OPT_DNS, data: &dns }, DhcpOption { kind: OPT_MTU, data: &mtu }];
        let lease = u32::try_from(self.lease_time.as_secs()).unwrap_or(u32::MAX);
        let repr = DhcpRepr {
            message_type: kind,
            transaction_id: msg.transaction_id,
            secs: 0,
            client_hardware_address: msg.client_hardware_address,
            client_ip: if nak { Ipv4Addr::UNSPECIFIED } else { msg.client_ip },
            your_ip: addr,
            server_ip: Ipv4Addr::UNSPECIFIED,
            router: (!nak).then_some(self.server),
            subnet_mask: (!nak).then_some(self.mask),
            relay_agent_ip: msg.relay_agent_ip,
            broadcast: msg.broadcast,
            requested_ip: None,
            client_identifier: None,
            server_identifier: Some(self.server),
            parameter_request_list: None,
            dns_servers: None,
            max_size: None,
            // Not in a NAK nor in the ACK of an INFORM (RFC 2131 table 3).
            lease_duration: (!addr.is_unspecified()).then_some(lease),
            renew_duration: None,
            rebind_duration: None,
            additional_options: if nak { &[] } else { &extra },
        };
        let mut payload = vec![0; repr.buffer_len().max(MIN_REPLY_LEN)];
        repr.emit(&mut DhcpPacket::new_unchecked(&mut payload[..])).expect("the buffer fits the reply");
        // RFC 2131 4.1: a NAK is broadcast; a client with an address gets
        // unicast there; the broadcast flag asks for broadcast; else unicast
        // to the offered address at the client's hardware address.
        let to = if nak || (msg.client_ip.is_unspecified() && msg.broadcast) {
            DhcpTo::Broadcast
        } else if !msg.client_ip.is_unspecified() {
            DhcpTo::Unicast { ip: msg.client_ip, mac: msg.client_hardware_address.0 }
        } else {
            DhcpTo::Unicast { ip: addr, mac: msg.client_hardware_address.0 }
        };
        DhcpReply { payload, to }
    }
}

/// The network address and prefix length of `cidr` (from its text form).
pub(crate) fn cidr_parts(cidr: &Cidr) -> Option<(IpAddr, u8)> {
    let text = cidr.to_string();
    let (addr, prefix) = text.split_once('/')?;
    Some((addr.parse().ok()?, prefix.parse().ok()?))
}

#[cfg(test)]
pub(crate) mod tests;

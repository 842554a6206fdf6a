//! The DHCPv4 client's core side ([`StackConfig::dhcpv4`](crate::StackConfig::dhcpv4)):
//! smoltcp's dhcpv4 socket in a socket set of its own, fed the DHCP
//! replies (IPv4 UDP from port 67 to port 68) before the core's own UDP
//! sees them, polled for its messages when due, and its lease applied to
//! the interface (the IPv4 address, the default route) and to the core's
//! address list and configuration.

use std::net::IpAddr;

use smoltcp::iface::{SocketHandle, SocketSet};
use smoltcp::socket::dhcpv4;
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetFrame, EthernetProtocol, IpCidr, IpProtocol, Ipv4Packet, UdpPacket};

use super::{Bridge, Core};
use crate::device::{FrameBuf, Medium};
use crate::dhcp::Dhcpv4Lease;

/// The client's state in the core.
pub(super) struct DhcpClient {
    set: SocketSet<'static>,
    handle: SocketHandle,
    /// When the socket wants to run next (`ZERO`: at the next transmit poll).
    next: Option<Instant>,
    lease: Option<Dhcpv4Lease>,
    /// Bumped on every change of `lease`.
    generation: u64,
}

impl DhcpClient {
    pub(super) fn new() -> DhcpClient {
        let mut set = SocketSet::new(Vec::new());
        let handle = set.add(dhcpv4::Socket::new());
        DhcpClient { set, handle, next: Some(Instant::ZERO), lease: None, generation: 0 }
    }
}

/// Whether `frame` is an Ethernet frame carrying IPv4 UDP from the DHCP
/// server port to the client port.
fn is_dhcp_reply(frame: &[u8]) -> bool {
    let Ok(eth) = EthernetFrame::new_checked(frame) else { return false };
    if eth.ethertype() != EthernetProtocol::Ipv4 {
        return false;
    }
    let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) else { return false };
    if ip.next_header() != IpProtocol::Udp {
        return false;
    }
    let Ok(udp) = UdpPacket::new_checked(ip.payload()) else { return false };
    udp.src_port() == 67 && udp.dst_port() == 68
}

impl Core {
    /// Takes a DHCP reply for the client (`None`); gives back every other
    /// frame, and every frame when the client is off.
    pub(super) fn dhcp_ingress(&mut self, now: Instant, frame: FrameBuf, out: &mut Vec<FrameBuf>) -> Option<FrameBuf> {
        let Some(client) = self.dhcp.as_mut() else { return Some(frame) };
        if self.medium != Medium::Ethernet || !is_dhcp_reply(&frame) {
            return Some(frame);
        }
        let mut bridge = Bridge { rx: Some(frame), tx: out, pool: &self.pool, caps: &self.caps };
        let _ = self.iface.poll_ingress_single(now, &mut bridge, &mut client.set);
        // Its answer (a REQUEST after an OFFER) goes at the next transmit poll.
        client.next = Some(Instant::ZERO);
        self.dhcp_events();
        None
    }

    /// Runs the client when due: its messages into `out`, a new or lost
    /// lease applied.
    pub(super) fn dhcp_egress(&mut self, now: Instant, out: &mut Vec<FrameBuf>) {
        let Some(client) = self.dhcp.as_mut() else { return };
        if client.next.is_none_or(|at| at > now) {
            return;
        }
        let mut bridge = Bridge { rx: None, tx: out, pool: &self.pool, caps: &self.caps };
        let _ = self.iface.poll_egress(now, &mut bridge, &mut client.set);
        client.next = self.iface.poll_at(now, &client.set);
        self.dhcp_events();
    }

    /// When the client next wants to run.
    pub(super) fn dhcp_poll_at(&self) -> Option<Instant> {
        self.dhcp.as_ref().and_then(|c| c.next)
    }

    /// The lease now and its generation (bumped on every change); `None`
    /// when the client is off.
    pub(crate) fn dhcp_lease(&self) -> Option<(u64, Option<&Dhcpv4Lease>)> {
        self.dhcp.as_ref().map(|c| (c.generation, c.lease.as_ref()))
    }

    fn dhcp_events(&mut self) {
        let Some(client) = self.dhcp.as_mut() else { return };
        let lease = match client.set.get_mut::<dhcpv4::Socket<'static>>(client.handle).poll() {
            None => return,
            Some(dhcpv4::Event::Configured(c)) => Some(Dhcpv4Lease {
                address: c.address.address(),
                prefix: c.address.prefix_len(),
                router: c.router,
                dns_servers: c.dns_servers.iter().copied().collect(),
                server: c.server.address,
            }),
            Some(dhcpv4::Event::Deconfigured) => None,
        };
        tracing::debug!(?lease, "dhcpv4: lease changed");
        self.dhcp_apply(lease);
    }

    /// Replaces the IPv4 address and default route (static ones too) with
    /// the lease's, or removes them when the lease is gone.
    fn dhcp_apply(&mut self, lease: Option<Dhcpv4Lease>) {
        let cidr = lease.as_ref().map(|l| IpCidr::new(l.address.into(), l.prefix.min(32)));
        self.iface.update_ip_addrs(|addrs| {
            addrs.retain(|c| !matches!(c, IpCidr::Ipv4(_)));
            if let Some(c) = cidr {
                // At most 3 addresses before, IPv4 ones removed: room for one.
                let _ = addrs.insert(0, c);
            }
        });
        self.cidrs.retain(|c| !matches!(c, IpCidr::Ipv4(_)));
        self.addrs.retain(IpAddr::is_ipv6);
        self.iface.routes_mut().remove_default_ipv4_route();
        self.config.ipv4 = None;
        self.config.gateway_v4 = None;
        if let Some(l) = &lease {
            self.cidrs.insert(0, IpCidr::new(l.address.into(), l.prefix.min(32)));
            self.addrs.insert(0, l.address.into());
            self.config.ipv4 = Some((l.address, l.prefix));
            if let Some(router) = l.router {
                let _ = self.iface.routes_mut().add_default_ipv4_route(router);
                self.config.gateway_v4 = Some(router);
            }
        }
        if let Some(client) = self.dhcp.as_mut() {
            client.lease = lease;
            client.generation += 1;
        }
    }
}

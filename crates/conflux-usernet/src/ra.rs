//! IPv6 router advertisements for SLAAC, sans-IO: a builder of the RA
//! frame and the answer to a router solicitation.
//!
//! Invariant: nothing in this module does I/O or reads a clock; smoltcp's
//! wire types stay private.

use std::net::{IpAddr, Ipv6Addr};
use std::time::Duration;

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::time::Duration as SmolDuration;
use smoltcp::wire::{
    EthernetAddress, EthernetFrame, EthernetProtocol, Icmpv6Packet, Icmpv6Repr, IpProtocol, Ipv6Packet, Ipv6Repr,
    NdiscNeighborFlags, NdiscPrefixInfoFlags, NdiscPrefixInformation, NdiscRepr, NdiscRouterFlags, RawHardwareAddress,
};

use crate::UsernetConfig;
use crate::dhcp::cidr_parts;

/// All-nodes multicast (`ff02::1`), where unsolicited advertisements go.
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
/// All-routers multicast (`ff02::2`), where solicitations go.
const ALL_ROUTERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2);

/// RFC 4861's defaults: the router lifetime (3 x MaxRtrAdvInterval of 600 s).
pub const DEFAULT_ROUTER_LIFETIME: Duration = Duration::from_secs(1800);
/// RFC 4861's AdvValidLifetime default: 30 days.
const VALID_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);
/// RFC 4861's AdvPreferredLifetime default: 7 days.
const PREFERRED_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);
/// The RDNSS option's lifetime: RFC 8106 5.1's default, 3 x
/// MaxRtrAdvInterval ([`RA_INTERVAL`](crate::RA_INTERVAL), 600 s).
const RDNSS_LIFETIME: Duration = Duration::from_secs(3 * 600);
/// RFC 8106's Recursive DNS Server option type.
const OPTION_RDNSS: u8 = 25;
/// An RDNSS option with one address: type, length (in 8-octet units),
/// 2 reserved, the 4-byte lifetime, the address.
const RDNSS_LEN: usize = 8 + 16;

/// Builds the router advertisements of a guest network's gateway: the
/// network's /64 prefix as on-link and autonomous (the guest forms its
/// address by SLAAC), the router lifetime (the gateway as default route),
/// the link MTU, the router's link-layer address and the DNS address
/// (`fd00::3`: RFC 8106's RDNSS option, lifetime 1800 s, so that an
/// IPv6-only guest learns its resolver without DHCP).
///
/// The frames are whole Ethernet frames from the router's MAC and its
/// link-local address (`fe80::` + the MAC's EUI-64, as RFC 4861 requires
/// of an advertisement's source), hop limit 255.
///
/// Call order: send [`advertisement`](RouterAdvertiser::advertisement)
/// when the guest link comes up (and, if wanted, periodically); pass each
/// frame from the guest to [`handle_frame`](RouterAdvertiser::handle_frame)
/// and send the advertisement it returns for a router solicitation.
///
/// ```
/// use conflux_usernet::{RouterAdvertiser, UsernetConfig};
///
/// let ra = RouterAdvertiser::new(&UsernetConfig::new(), [2, 0, 0, 0, 0, 2]);
/// let frame = ra.advertisement();
/// assert_eq!(frame[..6], [0x33, 0x33, 0, 0, 0, 1]); // to all nodes
/// assert_eq!(frame[54], 134); // ICMPv6 router advertisement
/// ```
#[derive(Debug, Clone)]
pub struct RouterAdvertiser {
    mac: [u8; 6],
    link_local: Ipv6Addr,
    prefix: Ipv6Addr,
    prefix_len: u8,
    mtu: u32,
    router_lifetime: Duration,
    /// The RDNSS option's address (the config's IPv6 DNS address).
    dns: Option<Ipv6Addr>,
}

impl RouterAdvertiser {
    /// The advertiser of `config`'s IPv6 network for a router at `router_mac`.
    pub fn new(config: &UsernetConfig, router_mac: [u8; 6]) -> RouterAdvertiser {
        let (prefix, prefix_len, dns) = match cidr_parts(&config.network6) {
            Some((IpAddr::V6(p), len)) => (p, len, Some(config.dns6)),
            _ => (Ipv6Addr::UNSPECIFIED, 0, None),
        };
        RouterAdvertiser {
            mac: router_mac,
            link_local: link_local(router_mac),
            prefix,
            prefix_len,
            mtu: u32::try_from(config.mtu).unwrap_or(u32::MAX),
            router_lifetime: DEFAULT_ROUTER_LIFETIME,
            dns,
        }
    }

    /// Sets the router lifetime (zero: not a default router; at most 9000 s).
    pub fn router_lifetime(mut self, lifetime: Duration) -> RouterAdvertiser {
        self.router_lifetime = lifetime.min(Duration::from_secs(9000));
        self
    }

    /// The router's link-local address, the advertisements' source.
    pub fn link_local(&self) -> Ipv6Addr {
        self.link_local
    }

    /// An unsolicited advertisement to all nodes (`ff02::1`).
    pub fn advertisement(&self) -> Vec<u8> {
        self.build(ALL_NODES, multicast_mac(ALL_NODES))
    }

    /// The answer to `frame` (an Ethernet frame from the guest) if it is a
    /// valid router solicitation: an advertisement to the soliciting host
    /// (or to all nodes when it has no address yet). `None` for any other
    /// frame.
    pub fn handle_frame(&self, frame: &[u8]) -> Option<Vec<u8>> {
        let eth = EthernetFrame::new_checked(frame).ok()?;
        if eth.ethertype() != EthernetProtocol::Ipv6 {
            return None;
        }
        let ip = Ipv6Packet::new_checked(eth.payload()).ok()?;
        let ip_repr = Ipv6Repr::parse(&ip).ok()?;
        // RFC 4861 6.1.1: hop limit 255 (never forwarded), to a router address.
        let to_us = ip_repr.dst_addr == ALL_ROUTERS || ip_repr.dst_addr == self.link_local;
        if ip_repr.next_header != IpProtocol::Icmpv6 || ip_repr.hop_limit != 255 || !to_us {
            return None;
        }
        let icmp = Icmpv6Packet::new_checked(ip.payload()).ok()?;
        let caps = ChecksumCapabilities::default();
        let repr = Icmpv6Repr::parse(&ip_repr.src_addr, &ip_repr.dst_addr, &icmp, &caps).ok()?;
        let Icmpv6Repr::Ndisc(NdiscRepr::RouterSolicit { .. }) = repr else { return None };
        tracing::trace!(src = %ip_repr.src_addr, "router solicitation answered");
        if ip_repr.src_addr.is_unspecified() {
            Some(self.advertisement())
        } else {
            Some(self.build(ip_repr.src_addr, eth.src_addr().0))
        }
    }

    fn build(&self, dst: Ipv6Addr, dst_mac: [u8; 6]) -> Vec<u8> {
        let secs = |d: Duration| SmolDuration::from_secs(d.as_secs());
        let ndisc = NdiscRepr::RouterAdvert {
            hop_limit: 64,
            flags: NdiscRouterFlags::empty(),
            router_lifetime: secs(self.router_lifetime),
            reachable_time: SmolDuration::ZERO,
            retrans_time: SmolDuration::ZERO,
            lladdr: Some(RawHardwareAddress::from_bytes(&self.mac)),
            mtu: Some(self.mtu),
            prefix_info: Some(NdiscPrefixInformation {
                prefix_len: self.prefix_len,
                flags: NdiscPrefixInfoFlags::ON_LINK | NdiscPrefixInfoFlags::ADDRCONF,
                valid_lifetime: secs(VALID_LIFETIME),
                preferred_lifetime: secs(PREFERRED_LIFETIME),
                prefix: self.prefix,
            }),
        };
        let mut rdnss = [0u8; RDNSS_LEN];
        let options: &[u8] = match self.dns {
            Some(dns) => {
                rdnss[0] = OPTION_RDNSS;
                rdnss[1] = (RDNSS_LEN / 8) as u8;
                let lifetime = u32::try_from(RDNSS_LIFETIME.as_secs()).unwrap_or(u32::MAX);
                rdnss[4..8].copy_from_slice(&lifetime.to_be_bytes());
                rdnss[8..].copy_from_slice(&dns.octets());
                &rdnss
            }
            None => &[],
        };
        icmp_frame_with(Icmpv6Repr::Ndisc(ndisc), options, self.link_local, dst, self.mac, dst_mac)
    }
}

/// The answer to `frame` (an Ethernet frame from the guest) if it is a
/// valid neighbour solicitation for `target`: a neighbour advertisement
/// that `target` is at `mac` (solicited, override; to the soliciting host,
/// or to all nodes for duplicate address detection from `::`). `None` for
/// any other frame. How an address that is not the stack's own (the IPv6
/// DNS address) gets its frames to the stack.
pub(crate) fn neighbor_advert_for(frame: &[u8], target: Ipv6Addr, mac: [u8; 6]) -> Option<Vec<u8>> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    if eth.ethertype() != EthernetProtocol::Ipv6 {
        return None;
    }
    let ip = Ipv6Packet::new_checked(eth.payload()).ok()?;
    let ip_repr = Ipv6Repr::parse(&ip).ok()?;
    if ip_repr.next_header != IpProtocol::Icmpv6 || ip_repr.hop_limit != 255 {
        return None;
    }
    let icmp = Icmpv6Packet::new_checked(ip.payload()).ok()?;
    let caps = ChecksumCapabilities::default();
    let repr = Icmpv6Repr::parse(&ip_repr.src_addr, &ip_repr.dst_addr, &icmp, &caps).ok()?;
    let Icmpv6Repr::Ndisc(NdiscRepr::NeighborSolicit { target_addr, .. }) = repr else { return None };
    if target_addr != target {
        return None;
    }
    let (dst, dst_mac, flags) = if ip_repr.src_addr.is_unspecified() {
        (ALL_NODES, multicast_mac(ALL_NODES), NdiscNeighborFlags::OVERRIDE)
    } else {
        (ip_repr.src_addr, eth.src_addr().0, NdiscNeighborFlags::SOLICITED | NdiscNeighborFlags::OVERRIDE)
    };
    let ndisc =
        NdiscRepr::NeighborAdvert { flags, target_addr: target, lladdr: Some(RawHardwareAddress::from_bytes(&mac)) };
    Some(icmp_frame(Icmpv6Repr::Ndisc(ndisc), target, dst, mac, dst_mac))
}

/// An Ethernet frame from `src_mac` to `dst_mac` carrying `icmp` from `src`
/// to `dst`, hop limit 255, checksum computed.
fn icmp_frame(icmp: Icmpv6Repr<'_>, src: Ipv6Addr, dst: Ipv6Addr, src_mac: [u8; 6], dst_mac: [u8; 6]) -> Vec<u8> {
    icmp_frame_with(icmp, &[], src, dst, src_mac, dst_mac)
}

/// As [`icmp_frame`], with `options` (whole NDISC options smoltcp has no
/// representation of) after the message's own; the checksum covers them.
fn icmp_frame_with(
    icmp: Icmpv6Repr<'_>,
    options: &[u8],
    src: Ipv6Addr,
    dst: Ipv6Addr,
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
) -> Vec<u8> {
    let icmp_len = icmp.buffer_len();
    let ip = Ipv6Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: IpProtocol::Icmpv6,
        payload_len: icmp_len + options.len(),
        hop_limit: 255,
    };
    let mut frame = vec![0; EthernetFrame::<&[u8]>::header_len() + ip.buffer_len() + ip.payload_len];
    let mut eth = EthernetFrame::new_unchecked(&mut frame[..]);
    eth.set_dst_addr(EthernetAddress(dst_mac));
    eth.set_src_addr(EthernetAddress(src_mac));
    eth.set_ethertype(EthernetProtocol::Ipv6);
    let mut ip_packet = Ipv6Packet::new_unchecked(eth.payload_mut());
    ip.emit(&mut ip_packet);
    let mut icmp_packet = Icmpv6Packet::new_unchecked(ip_packet.payload_mut());
    icmp.emit(&src, &dst, &mut icmp_packet, &ChecksumCapabilities::default());
    if !options.is_empty() {
        icmp_packet.into_inner()[icmp_len..].copy_from_slice(options);
        let mut icmp_packet = Icmpv6Packet::new_unchecked(ip_packet.payload_mut());
        icmp_packet.fill_checksum(&src, &dst);
    }
    frame
}

/// `fe80::` plus the modified EUI-64 of `mac` (RFC 4291 appendix A).
fn link_local(mac: [u8; 6]) -> Ipv6Addr {
    let m = mac;
    Ipv6Addr::from([0xfe, 0x80, 0, 0, 0, 0, 0, 0, m[0] ^ 2, m[1], m[2], 0xff, 0xfe, m[3], m[4], m[5]])
}

/// The Ethernet address of an IPv6 multicast group: `33:33` + its last 32 bits.
fn multicast_mac(group: Ipv6Addr) -> [u8; 6] {
    let o = group.octets();
    [0x33, 0x33, o[12], o[13], o[14], o[15]]
}

#[cfg(test)]
pub(crate) mod tests;

//! Where a guest's connection or datagram goes on the host, or why not.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::config::{Cidr, UsernetConfig};

/// Why a guest's destination is not forwarded. The forwarder answers a
/// refused TCP connection with an RST (the guest sees "connection refused"
/// at once, not a timeout) and drops a refused datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The gateway address, without `--host-loopback`: the host's own
    /// services stay out of the guest's reach.
    #[error("{dst} is the gateway and the host's loopback is not reachable (no --host-loopback)")]
    Gateway {
        /// The destination the guest dialled.
        dst: SocketAddr,
    },
    /// The DNS forwarder address on a port other than 53, or without an
    /// upstream resolver.
    #[error("{dst} is the DNS forwarder: only port 53 is forwarded, to a known upstream")]
    Dns {
        /// The destination the guest dialled.
        dst: SocketAddr,
    },
    /// The host-side destination is outside every `--allow` network.
    #[error("{host} (dialled as {dst}) is outside the allowed networks")]
    NotAllowed {
        /// The destination the guest dialled.
        dst: SocketAddr,
        /// Where it would have gone on the host.
        host: SocketAddr,
    },
    /// Not an address one can reach: unspecified, multicast, broadcast, the
    /// guest network itself (other than the gateway and DNS addresses).
    #[error("{dst} is not a destination the forwarder reaches")]
    Unroutable {
        /// The destination the guest dialled.
        dst: SocketAddr,
    },
}

/// The forwarding decision of a [`UsernetConfig`]: pure, no I/O.
///
/// In order: the gateway address maps to the host's loopback (127.0.0.1 or
/// ::1) when `host_loopback` is on and is refused otherwise; the DNS address
/// on port 53 maps to the upstream resolver (other ports are refused);
/// other addresses of the guest network, unspecified, multicast and
/// broadcast addresses are unroutable; then `allow` (if any entry) is matched
/// against the **host-side** destination, after the mapping, so
/// `--host-loopback --allow 127.0.0.0/8` lets the guest reach the host's
/// loopback through the gateway and nothing else.
#[derive(Debug, Clone)]
pub struct Policy {
    network4: Cidr,
    network6: Cidr,
    gateway4: Ipv4Addr,
    gateway6: Ipv6Addr,
    dns4: Ipv4Addr,
    dns6: Ipv6Addr,
    host_loopback: bool,
    allow: Vec<Cidr>,
    dns_upstream: Option<SocketAddr>,
}

impl Policy {
    /// The policy of `config`. The DNS upstream is `config.dns_upstream`;
    /// give the host resolver's with [`with_dns_upstream`](Policy::with_dns_upstream)
    /// when the config has none.
    pub fn new(config: &UsernetConfig) -> Policy {
        Policy {
            network4: config.network4,
            network6: config.network6,
            gateway4: config.gateway4,
            gateway6: config.gateway6,
            dns4: config.dns4,
            dns6: config.dns6,
            host_loopback: config.host_loopback,
            allow: config.allow.clone(),
            dns_upstream: config.dns_upstream,
        }
    }

    /// Uses `upstream` for DNS queries if the config named none.
    pub fn with_dns_upstream(mut self, upstream: Option<SocketAddr>) -> Policy {
        self.dns_upstream = self.dns_upstream.or(upstream);
        self
    }

    /// Where a guest's flow or datagram to `dst` goes on the host (the same
    /// for TCP and UDP: DNS, too, goes over both).
    pub fn route(&self, dst: SocketAddr) -> Result<SocketAddr, Refusal> {
        let ip = dst.ip().to_canonical();
        let host = if ip == IpAddr::V4(self.gateway4) || ip == IpAddr::V6(self.gateway6) {
            if !self.host_loopback {
                return Err(Refusal::Gateway { dst });
            }
            let lo: IpAddr = if ip.is_ipv4() { Ipv4Addr::LOCALHOST.into() } else { Ipv6Addr::LOCALHOST.into() };
            SocketAddr::new(lo, dst.port())
        } else if ip == IpAddr::V4(self.dns4) || ip == IpAddr::V6(self.dns6) {
            match self.dns_upstream {
                Some(upstream) if dst.port() == 53 => upstream,
                _ => return Err(Refusal::Dns { dst }),
            }
        } else if ip.is_unspecified()
            || ip.is_multicast()
            || ip == IpAddr::V4(Ipv4Addr::BROADCAST)
            || self.network4.contains(ip)
            || self.network6.contains(ip)
            || dst.port() == 0
        {
            return Err(Refusal::Unroutable { dst });
        } else {
            SocketAddr::new(ip, dst.port())
        };
        if !self.allow.is_empty() && !self.allow.iter().any(|net| net.contains(host.ip())) {
            return Err(Refusal::NotAllowed { dst, host });
        }
        Ok(host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_gateway_is_the_host_loopback_only_when_asked() {
        let closed = Policy::new(&UsernetConfig::new());
        assert_eq!(closed.route(sa("10.0.2.2:80")), Err(Refusal::Gateway { dst: sa("10.0.2.2:80") }));
        assert!(matches!(closed.route(sa("[fd00::2]:80")), Err(Refusal::Gateway { .. })));
        let open = Policy::new(&UsernetConfig::new().host_loopback(true));
        assert_eq!(open.route(sa("10.0.2.2:80")), Ok(sa("127.0.0.1:80")));
        assert_eq!(open.route(sa("[fd00::2]:9")), Ok(sa("[::1]:9")));
        assert_eq!(open.route(sa("[::ffff:10.0.2.2]:80")), Ok(sa("127.0.0.1:80")), "IPv4-mapped");
    }

    #[test]
    fn dns_goes_to_the_upstream_on_port_53_only() {
        let none = Policy::new(&UsernetConfig::new());
        assert!(matches!(none.route(sa("10.0.2.3:53")), Err(Refusal::Dns { .. })), "no upstream known");
        let p = none.with_dns_upstream(Some(sa("127.0.0.1:5353")));
        assert_eq!(p.route(sa("10.0.2.3:53")), Ok(sa("127.0.0.1:5353")));
        assert_eq!(p.route(sa("[fd00::3]:53")), Ok(sa("127.0.0.1:5353")), "TCP DNS too");
        assert!(matches!(p.route(sa("10.0.2.3:80")), Err(Refusal::Dns { .. })));
        let configured = Policy::new(&UsernetConfig::new().dns_upstream(sa("127.0.0.1:53")))
            .with_dns_upstream(Some(sa("192.0.2.53:53")));
        assert_eq!(configured.route(sa("10.0.2.3:53")), Ok(sa("127.0.0.1:53")), "the config wins");
    }

    #[test]
    fn allow_matches_the_host_side_destination() {
        let p = Policy::new(&UsernetConfig::new().host_loopback(true).allow("127.0.0.0/8".parse().unwrap()));
        assert_eq!(p.route(sa("10.0.2.2:8080")), Ok(sa("127.0.0.1:8080")), "mapped, then allowed");
        assert_eq!(
            p.route(sa("192.0.2.1:80")),
            Err(Refusal::NotAllowed { dst: sa("192.0.2.1:80"), host: sa("192.0.2.1:80") })
        );
        assert!(matches!(p.route(sa("[fd00::2]:80")), Err(Refusal::NotAllowed { .. })), "::1 not allowed");
        let open = Policy::new(&UsernetConfig::new());
        assert_eq!(open.route(sa("192.0.2.1:80")), Ok(sa("192.0.2.1:80")), "no --allow: anything");
    }

    #[test]
    fn unroutable_destinations_are_refused() {
        let p = Policy::new(&UsernetConfig::new().host_loopback(true));
        for dst in [
            "0.0.0.0:80",
            "224.0.0.1:5353",
            "255.255.255.255:67",
            "10.0.2.100:80",
            "10.0.2.7:1",
            "[fd00::9]:80",
            "192.0.2.1:0",
        ] {
            assert_eq!(p.route(sa(dst)), Err(Refusal::Unroutable { dst: sa(dst) }), "{dst}");
        }
        let err = p.route(sa("10.0.2.100:80")).unwrap_err();
        assert!(err.to_string().contains("10.0.2.100:80"), "{err}");
    }
}

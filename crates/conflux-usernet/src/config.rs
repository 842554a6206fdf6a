//! The guest network's addresses and the forwarder's options, with
//! slirp4netns's defaults, and the parsers of `--allow CIDR` and `-p`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use conflux_tcp::Keepalive;

/// The default keepalive of the guest's side of a TCP flow (our stack's
/// connection with the guest): a probe every 30 s of silence, the guest
/// declared dead 120 s after the last segment heard from it (30 s + 3 x
/// 30 s), the same two minutes as the user timeout that ends a flow whose
/// data the guest leaves unacknowledged. The guest is on a local link (a
/// namespace, a VM on this machine): a live one answers at once, so a
/// short deadline only ever ends flows of a guest that is gone (killed,
/// or paused that long), and a probe per idle flow every 30 s costs
/// nothing worth counting.
pub const DEFAULT_GUEST_KEEPALIVE: Keepalive = Keepalive::new(Duration::from_secs(30), Duration::from_secs(30), 3);

/// The default keepalive of the host's side of a TCP flow (the kernel's
/// `SO_KEEPALIVE`, `TCP_KEEPIDLE` 60 s, `TCP_KEEPINTVL` 15 s,
/// `TCP_KEEPCNT` 4): a first probe after a minute of silence, the peer
/// declared dead 120 s after the last segment heard (60 s + 4 x 15 s).
/// Near Go's `net.Dialer` default (15 s, 15 s, 9 probes: 150 s), which Go
/// forwarders such as gvisor-tap-vsock get; far shorter than the kernel's
/// own default (2 h + 9 x 75 s), which would hold a flow to a vanished
/// host for over two hours, and libslirp's (no keepalive unless asked).
pub const DEFAULT_HOST_KEEPALIVE: Keepalive = Keepalive::new(Duration::from_secs(60), Duration::from_secs(15), 4);

/// A transport protocol of a forward or a guest flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

/// A bad `--allow` network or `-p` forward: what was given and which part is
/// wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Not `ADDRESS/PREFIX` with a prefix length the family allows.
    #[error("bad network {given:?}: {why}")]
    Cidr {
        /// The text given.
        given: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// Not `[tcp|udp:][HOST_IP:]HOST_PORT:GUEST_PORT`.
    #[error("bad port forward {given:?}: {why}")]
    Forward {
        /// The text given.
        given: String,
        /// What is wrong with it.
        why: &'static str,
    },
}

/// An IP network, `ADDRESS/PREFIX` (`10.0.0.0/8`, `::1/128`); an address
/// alone is a network of one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// The network of `addr`'s first `prefix` bits; `None` if `prefix` is
    /// longer than the family's addresses.
    pub fn new(addr: IpAddr, prefix: u8) -> Option<Cidr> {
        let bits = if addr.is_ipv4() { 32 } else { 128 };
        (prefix <= bits).then(|| Cidr { addr: mask(addr, prefix), prefix })
    }

    /// The network's first address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` is inside the network (an IPv4-mapped IPv6 address
    /// counts as its IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.addr.is_ipv4() && mask(ip, self.prefix) == self.addr
    }
}

fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let m = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(v4) & m))
        }
        IpAddr::V6(v6) => {
            let m = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & m))
        }
    }
}

impl FromStr for Cidr {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Cidr, ConfigError> {
        let err = |why| ConfigError::Cidr { given: s.to_owned(), why };
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| err("not an IPv4 or IPv6 address before the '/'"))?;
        let bits = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => bits,
            Some(p) => p.parse::<u8>().map_err(|_| err("the prefix length is not a number"))?,
        };
        Cidr::new(addr, prefix).ok_or_else(|| err("the prefix length is longer than the address"))
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// An inbound port forward, docker's `-p [tcp|udp:][HOST_IP:]HOST_PORT:GUEST_PORT`:
/// connections (or datagrams) to `host` on the host reach the guest's
/// `guest_port`. The host address defaults to 127.0.0.1, never to every
/// interface; an IPv6 host address is written in brackets (`[::1]:8080:80`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortForward {
    /// TCP or UDP (default TCP).
    pub proto: Proto,
    /// Where the forwarder listens on the host.
    pub host: SocketAddr,
    /// The guest's port.
    pub guest_port: u16,
}

impl FromStr for PortForward {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<PortForward, ConfigError> {
        let err = |why| ConfigError::Forward { given: s.to_owned(), why };
        let (proto, rest) = match s.split_once(':') {
            Some(("tcp", rest)) => (Proto::Tcp, rest),
            Some(("udp", rest)) => (Proto::Udp, rest),
            _ => (Proto::Tcp, s),
        };
        let port = |p: &str| match p.parse::<u16>() {
            Ok(0) => Err(err("port 0 is not a port one can forward")),
            Ok(n) => Ok(n),
            Err(_) => Err(err("a port is not a number from 1 to 65535")),
        };
        let (host_part, guest) = rest.rsplit_once(':').ok_or_else(|| err("expected HOST_PORT:GUEST_PORT"))?;
        let guest_port = port(guest)?;
        let host = match host_part.rsplit_once(':') {
            None => SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port(host_part)?),
            Some((ip, host_port)) => {
                let ip = ip.strip_prefix('[').and_then(|v6| v6.strip_suffix(']')).unwrap_or(ip);
                let ip: IpAddr = ip.parse().map_err(|_| err("the host address is not an IP address"))?;
                SocketAddr::new(ip, port(host_port)?)
            }
        };
        Ok(PortForward { proto, host, guest_port })
    }
}

impl std::fmt::Display for PortForward {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let proto = match self.proto {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        };
        write!(f, "{proto}:{}:{}", self.host, self.guest_port)
    }
}

/// The guest network and the forwarder's options. The defaults are
/// slirp4netns's: network 10.0.2.0/24 and fd00::/64, gateway (the host as the
/// guest sees it) 10.0.2.2 / fd00::2, DNS forwarder 10.0.2.3 / fd00::3,
/// guest 10.0.2.100 / fd00::100, MTU 1500; the host's loopback is not
/// reachable (`host_loopback` off), every destination is allowed (no
/// `allow` entry), no port forwards, the DNS upstream read from the host's
/// resolver configuration; TCP keepalive on both sides of every flow
/// ([`DEFAULT_GUEST_KEEPALIVE`], [`DEFAULT_HOST_KEEPALIVE`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsernetConfig {
    /// The guest network (IPv4).
    pub network4: Cidr,
    /// The gateway address (IPv4).
    pub gateway4: Ipv4Addr,
    /// The DNS forwarder address (IPv4).
    pub dns4: Ipv4Addr,
    /// The guest's address (IPv4).
    pub guest4: Ipv4Addr,
    /// The guest network (IPv6).
    pub network6: Cidr,
    /// The gateway address (IPv6).
    pub gateway6: Ipv6Addr,
    /// The DNS forwarder address (IPv6).
    pub dns6: Ipv6Addr,
    /// The guest's address (IPv6).
    pub guest6: Ipv6Addr,
    /// The link MTU.
    pub mtu: usize,
    /// Whether the gateway address maps to the host's loopback.
    pub host_loopback: bool,
    /// Host-side destinations the guest may reach (empty: any).
    pub allow: Vec<Cidr>,
    /// Where DNS queries to the forwarder go (`None`: the host resolver's
    /// first nameserver).
    pub dns_upstream: Option<SocketAddr>,
    /// Inbound port forwards.
    pub forwards: Vec<PortForward>,
    /// The TAP interface's name in a namespace (`tap0`, as slirp4netns).
    pub interface: String,
    /// Whether [`Usernet::spawn_netns`](crate::Usernet::spawn_netns)
    /// configures the interface (`--configure`: the guest's IPv4 address
    /// and prefix, the default route via the gateway, the MTU, up; the
    /// namespace's loopback up; the same for IPv6, `guest6` with the
    /// default route via `gateway6`, unless the namespace has IPv6 off).
    pub configure: bool,
    /// Keepalive on the guest's side of each TCP flow (our stack's
    /// connection with the guest, outbound and port forwards alike): a guest
    /// gone silent (killed without a reset) ends its idle flows, whose host
    /// side is then aborted. `None`: off (an idle flow of a vanished guest
    /// stays open).
    pub guest_keepalive: Option<Keepalive>,
    /// Keepalive on the host's side of each TCP flow (the host connection,
    /// through the TCP contract): a host peer gone silent ends its idle
    /// flows, and the guest gets a reset. `None`: off.
    pub host_keepalive: Option<Keepalive>,
}

impl Default for UsernetConfig {
    fn default() -> UsernetConfig {
        UsernetConfig::new()
    }
}

impl UsernetConfig {
    /// slirp4netns's defaults (see the type's doc).
    pub fn new() -> UsernetConfig {
        UsernetConfig {
            network4: Cidr { addr: Ipv4Addr::new(10, 0, 2, 0).into(), prefix: 24 },
            gateway4: Ipv4Addr::new(10, 0, 2, 2),
            dns4: Ipv4Addr::new(10, 0, 2, 3),
            guest4: Ipv4Addr::new(10, 0, 2, 100),
            network6: Cidr { addr: Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0).into(), prefix: 64 },
            gateway6: Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2),
            dns6: Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 3),
            guest6: Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x100),
            mtu: 1500,
            host_loopback: false,
            allow: Vec::new(),
            dns_upstream: None,
            forwards: Vec::new(),
            interface: "tap0".to_owned(),
            configure: false,
            guest_keepalive: Some(DEFAULT_GUEST_KEEPALIVE),
            host_keepalive: Some(DEFAULT_HOST_KEEPALIVE),
        }
    }

    /// Maps the gateway address to the host's loopback (`--host-loopback`).
    pub fn host_loopback(mut self, on: bool) -> UsernetConfig {
        self.host_loopback = on;
        self
    }

    /// Adds a host-side network the guest may reach (`--allow`); once any is
    /// given, everything else is refused.
    pub fn allow(mut self, network: Cidr) -> UsernetConfig {
        self.allow.push(network);
        self
    }

    /// Sends DNS queries to `upstream` (`--dns-upstream`).
    pub fn dns_upstream(mut self, upstream: SocketAddr) -> UsernetConfig {
        self.dns_upstream = Some(upstream);
        self
    }

    /// Adds an inbound port forward (`-p`).
    pub fn forward(mut self, forward: PortForward) -> UsernetConfig {
        self.forwards.push(forward);
        self
    }

    /// Names the TAP interface made in a namespace.
    pub fn interface(mut self, name: impl Into<String>) -> UsernetConfig {
        self.interface = name.into();
        self
    }

    /// Configures the interface made in a namespace (`--configure`).
    pub fn configure(mut self, on: bool) -> UsernetConfig {
        self.configure = on;
        self
    }

    /// Sets the guest side's keepalive (`None`: off).
    pub fn guest_keepalive(mut self, keepalive: Option<Keepalive>) -> UsernetConfig {
        self.guest_keepalive = keepalive;
        self
    }

    /// Sets the host side's keepalive (`None`: off).
    pub fn host_keepalive(mut self, keepalive: Option<Keepalive>) -> UsernetConfig {
        self.host_keepalive = keepalive;
        self
    }

    /// Sets the link MTU (`--mtu`).
    pub fn mtu(mut self, mtu: usize) -> UsernetConfig {
        self.mtu = mtu;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_parse_and_match() {
        let net: Cidr = "10.1.2.3/8".parse().unwrap();
        assert_eq!(net.to_string(), "10.0.0.0/8", "host bits cleared");
        assert!(net.contains("10.255.0.1".parse().unwrap()));
        assert!(!net.contains("11.0.0.1".parse().unwrap()));
        assert!(net.contains("::ffff:10.0.0.1".parse().unwrap()), "IPv4-mapped counts as IPv4");
        assert!(!net.contains("::1".parse().unwrap()), "other family");
        let one: Cidr = "::1".parse().unwrap();
        assert_eq!(one.to_string(), "::1/128");
        assert!(one.contains("::1".parse().unwrap()) && !one.contains("::2".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("192.0.2.7".parse().unwrap()));
        let v6: Cidr = "fd00::/64".parse().unwrap();
        assert!(v6.contains("fd00::100".parse().unwrap()) && !v6.contains("fd01::1".parse().unwrap()));
    }

    #[test]
    fn bad_cidrs_name_the_wrong_part() {
        for (given, part) in [
            ("10.0.0.0/33", "longer than the address"),
            ("::/129", "longer than the address"),
            ("10.0.0/8", "not an IPv4 or IPv6 address"),
            ("10.0.0.0/x", "not a number"),
            ("", "not an IPv4 or IPv6 address"),
        ] {
            let err = given.parse::<Cidr>().unwrap_err();
            assert!(err.to_string().contains(part), "{given}: {err}");
            assert!(err.to_string().contains(&format!("{given:?}")), "{given}: {err}");
        }
    }

    #[test]
    fn port_forwards_parse_as_docker_writes_them() {
        let cases = [
            ("8080:80", Proto::Tcp, "127.0.0.1:8080", 80),
            ("tcp:8080:80", Proto::Tcp, "127.0.0.1:8080", 80),
            ("udp:5353:53", Proto::Udp, "127.0.0.1:5353", 53),
            ("0.0.0.0:2222:22", Proto::Tcp, "0.0.0.0:2222", 22),
            ("udp:[::1]:9000:9", Proto::Udp, "[::1]:9000", 9),
            ("::1:9000:9", Proto::Tcp, "[::1]:9000", 9),
        ];
        for (given, proto, host, guest_port) in cases {
            let f: PortForward = given.parse().unwrap_or_else(|e| panic!("{given}: {e}"));
            assert_eq!(f, PortForward { proto, host: host.parse().unwrap(), guest_port }, "{given}");
            assert_eq!(f.to_string().parse::<PortForward>(), Ok(f), "{given} prints back");
        }
    }

    #[test]
    fn bad_port_forwards_name_the_wrong_part() {
        for (given, part) in [
            ("8080", "HOST_PORT:GUEST_PORT"),
            ("8080:0", "port 0"),
            ("8080:70000", "not a number"),
            ("sctp:1:2", "not an IP address"),
            ("host:1:2", "not an IP address"),
            ("tcp:", "HOST_PORT:GUEST_PORT"),
        ] {
            let err = given.parse::<PortForward>().unwrap_err();
            assert!(err.to_string().contains(part), "{given}: {err}");
        }
    }

    #[test]
    fn the_defaults_are_slirp4netns_s() {
        let c = UsernetConfig::default();
        assert_eq!(c.network4.to_string(), "10.0.2.0/24");
        assert_eq!(c.gateway4.to_string(), "10.0.2.2");
        assert_eq!(c.dns4.to_string(), "10.0.2.3");
        assert_eq!(c.guest4.to_string(), "10.0.2.100");
        assert_eq!(c.gateway6.to_string(), "fd00::2");
        assert_eq!(c.guest6.to_string(), "fd00::100");
        assert!(!c.host_loopback && c.allow.is_empty() && c.forwards.is_empty());
        // Both sides declare a silent peer dead two minutes after its last segment.
        let (guest, host) = (c.guest_keepalive.unwrap(), c.host_keepalive.unwrap());
        assert_eq!(conflux_netstack::keepalive_deadline(&guest), Duration::from_secs(120));
        assert_eq!(conflux_tcp_host::keepalive_deadline(&host), Duration::from_secs(120));
        let c = c.mtu(65520).dns_upstream("127.0.0.1:5353".parse().unwrap()).forward("1:2".parse().unwrap());
        assert_eq!((c.mtu, c.dns_upstream.unwrap().port(), c.forwards.len()), (65520, 5353, 1));
    }
}

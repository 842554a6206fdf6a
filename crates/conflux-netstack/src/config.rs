//! The stack's static configuration.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::ops::RangeInclusive;
use std::time::Duration;

/// Static configuration of a [`NetStack`](crate::NetStack): addresses,
/// routes, buffers and limits. Built with chained setters:
///
/// ```
/// use conflux_netstack::StackConfig;
/// let config = StackConfig::new()
///     .ipv4("10.0.0.1".parse().unwrap(), 24)
///     .gateway_v4("10.0.0.254".parse().unwrap())
///     .buffers(256 * 1024, 256 * 1024);
/// assert_eq!(config.rx_buffer, 256 * 1024);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackConfig {
    /// Our IPv4 address and prefix length.
    pub ipv4: Option<(Ipv4Addr, u8)>,
    /// Our global IPv6 address and prefix length. On Ethernet a link-local
    /// address derived from the MAC is added too.
    pub ipv6: Option<(Ipv6Addr, u8)>,
    /// The IPv4 default gateway.
    pub gateway_v4: Option<Ipv4Addr>,
    /// The IPv6 default gateway.
    pub gateway_v6: Option<Ipv6Addr>,
    /// Get the IPv4 address, default gateway and DNS servers by DHCPv4
    /// (smoltcp's client; Ethernet devices only): a lease replaces the static
    /// [`ipv4`](StackConfig::ipv4) and [`gateway_v4`](StackConfig::gateway_v4),
    /// a lost one removes them. See [`NetStack::wait_dhcpv4_lease`](crate::NetStack::wait_dhcpv4_lease).
    pub dhcpv4: bool,
    /// Our MAC address (Ethernet devices).
    pub mac: [u8; 6],
    /// Receive buffer per socket (the advertised window; window scaling follows it).
    pub rx_buffer: usize,
    /// Send buffer per socket.
    pub tx_buffer: usize,
    /// Kept for compatibility and ignored: every connection has its own
    /// smoltcp socket set, so a poll touches only connections with frames,
    /// writes or due timers, however many there are.
    pub shards: usize,
    /// Half-open (SYN received, handshake unfinished) sockets per listener.
    /// A SYN beyond the cap evicts the listener's oldest unfinished
    /// handshake (silently: no RST), so a flood of unanswered SYNs cannot
    /// lock legitimate clients out; a cap of 0 admits no SYN at all.
    pub max_half_open: usize,
    /// A handshake not finished this long after its SYN is dropped (after
    /// [`HeldSyn::accept`](crate::HeldSyn::accept), this long after the
    /// accept). A SYN held by an [`intercept`](crate::NetStack::intercept)
    /// and left undecided is forgotten after this or
    /// [`connect_timeout`](StackConfig::connect_timeout), whichever is longer.
    pub handshake_timeout: Duration,
    /// An open connection whose sent data stays unacknowledged this long,
    /// hearing nothing in sequence from its peer meanwhile, is aborted (an
    /// RST goes out) and its flow fails with a timed-out error: Linux's
    /// `TCP_USER_TIMEOUT`. smoltcp itself retransmits forever, so without
    /// it a vanished or desynchronized peer stalls the flow silently.
    pub user_timeout: Duration,
    /// The connect timeout when [`ConnectOptions`](conflux_tcp::ConnectOptions) gives none.
    pub connect_timeout: Duration,
    /// Local ports for outgoing connections and listeners on port 0.
    pub ephemeral_ports: RangeInclusive<u16>,
    /// A closed or dropped flow whose socket hears nothing from its peer for
    /// this long (counted from the close, or from the peer's last sign of
    /// life if later) is aborted (FIN_WAIT or LAST_ACK against a vanished
    /// peer).
    pub orphan_timeout: Duration,
    /// How long [`disconnect`](conflux_tcp::TcpStack::disconnect) waits for
    /// callback tasks before aborting them.
    pub disconnect_grace: Duration,
    /// Seed for initial sequence numbers and the ephemeral port start.
    pub seed: u64,
}

impl Default for StackConfig {
    fn default() -> StackConfig {
        StackConfig::new()
    }
}

impl StackConfig {
    /// No address, 64 KiB buffers, 256 socket sets, 64 half-open sockets per
    /// listener, 10 s handshake timeout, 30 s connect timeout, ports
    /// 49152-65535, 60 s orphan timeout, 2 s disconnect grace, a seed from
    /// the process's hasher keys.
    pub fn new() -> StackConfig {
        StackConfig {
            ipv4: None,
            ipv6: None,
            gateway_v4: None,
            gateway_v6: None,
            dhcpv4: false,
            mac: [0x02, 0x00, 0x00, 0x00, 0x00, 0x01],
            rx_buffer: 64 * 1024,
            tx_buffer: 64 * 1024,
            shards: 256,
            max_half_open: 64,
            handshake_timeout: Duration::from_secs(10),
            user_timeout: Duration::from_secs(120),
            connect_timeout: Duration::from_secs(30),
            ephemeral_ports: 49152..=65535,
            orphan_timeout: Duration::from_secs(60),
            disconnect_grace: Duration::from_secs(2),
            seed: random_seed(),
        }
    }

    /// Sets the IPv4 address.
    pub fn ipv4(mut self, addr: Ipv4Addr, prefix: u8) -> StackConfig {
        self.ipv4 = Some((addr, prefix));
        self
    }

    /// Sets the global IPv6 address.
    pub fn ipv6(mut self, addr: Ipv6Addr, prefix: u8) -> StackConfig {
        self.ipv6 = Some((addr, prefix));
        self
    }

    /// Sets the IPv4 default gateway.
    pub fn gateway_v4(mut self, gw: Ipv4Addr) -> StackConfig {
        self.gateway_v4 = Some(gw);
        self
    }

    /// Sets the IPv6 default gateway.
    pub fn gateway_v6(mut self, gw: Ipv6Addr) -> StackConfig {
        self.gateway_v6 = Some(gw);
        self
    }

    /// Makes the stack a DHCPv4 client (see [`dhcpv4`](StackConfig::dhcpv4)).
    pub fn dhcpv4(mut self) -> StackConfig {
        self.dhcpv4 = true;
        self
    }

    /// Sets the MAC address.
    pub fn mac(mut self, mac: [u8; 6]) -> StackConfig {
        self.mac = mac;
        self
    }

    /// Sets the receive and send buffer sizes per socket.
    pub fn buffers(mut self, rx: usize, tx: usize) -> StackConfig {
        self.rx_buffer = rx;
        self.tx_buffer = tx;
        self
    }

    /// Sets the number of socket sets (at least 1).
    pub fn shards(mut self, n: usize) -> StackConfig {
        self.shards = n.max(1);
        self
    }

    /// Sets the half-open cap per listener.
    pub fn max_half_open(mut self, n: usize) -> StackConfig {
        self.max_half_open = n;
        self
    }

    /// Sets the handshake timeout of accepted connections.
    pub fn handshake_timeout(mut self, t: Duration) -> StackConfig {
        self.handshake_timeout = t;
        self
    }

    /// Sets the [`user_timeout`](StackConfig::user_timeout).
    pub fn user_timeout(mut self, t: Duration) -> StackConfig {
        self.user_timeout = t;
        self
    }

    /// Sets the default connect timeout.
    pub fn connect_timeout(mut self, t: Duration) -> StackConfig {
        self.connect_timeout = t;
        self
    }

    /// Sets the ephemeral port range.
    pub fn ephemeral_ports(mut self, range: RangeInclusive<u16>) -> StackConfig {
        self.ephemeral_ports = range;
        self
    }

    /// Sets the disconnect grace period.
    pub fn disconnect_grace(mut self, t: Duration) -> StackConfig {
        self.disconnect_grace = t;
        self
    }

    /// Sets the seed.
    pub fn seed(mut self, seed: u64) -> StackConfig {
        self.seed = seed;
        self
    }
}

fn random_seed() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}

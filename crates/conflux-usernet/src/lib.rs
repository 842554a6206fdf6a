//! User-mode networking for conflux: what vpnkit, slirp4netns, passt and
//! gvisor-tap-vsock do. A guest (a network namespace or a VM) reaches the
//! network through conflux's userspace TCP/IP stack: every flow the guest
//! opens ends in that stack and is opened again as an ordinary host socket,
//! with no root on the host path, no NAT rules and no bridge.
//!
//! The forwarder, [`Usernet`]: a userspace stack on the guest's frame
//! device ([`Usernet::spawn`]: any `conflux_netstack::FrameDevice`; or
//! [`Usernet::spawn_netns`]: a TAP device it makes, and with `configure`
//! configures, inside a network namespace, which `conflux usernet --netns`
//! serves), whose own addresses are the gateway's (10.0.2.2, fd00::2):
//! - outbound TCP: each guest SYN is held until the host connection (the
//!   kernel's, through conflux-tcp-host and the `conflux_tcp::TcpStack`
//!   contract) is made; refused or failed -> the guest gets an RST at once,
//!   as for a closed port; then the relay, half-closes and resets passed on
//!   both ways;
//! - outbound UDP: a kernel UDP socket per guest source and destination in
//!   the bounded [`UdpTable`] (4096 entries, 60 s idle); replies come back
//!   from the address the guest sent to;
//! - DNS: UDP and TCP to the DNS address (10.0.2.3) port 53 go to the
//!   upstream (`dns_upstream`, or the first nameserver of the host's
//!   `/etc/resolv.conf`);
//! - ping to the gateway is answered by the stack;
//! - inbound port forwards (`-p`, TCP and UDP);
//! - one log line per flow (guest, destination, bytes each way, how it
//!   ended) and counters, [`Usernet::stats`];
//! - dead peers found on idle flows too: TCP keepalive on both sides of
//!   each flow. The guest's side (our stack's connection with the guest,
//!   [`DEFAULT_GUEST_KEEPALIVE`]: a probe every 30 s of silence) declares a
//!   guest that stopped answering dead 120 s after the last segment heard
//!   from it, the same two minutes as the user timeout that ends a flow
//!   whose data the guest leaves unacknowledged; the host's side (the
//!   kernel's keepalive on the host connection, [`DEFAULT_HOST_KEEPALIVE`]:
//!   60 s, then every 15 s, 4 probes) does the same for a host peer gone
//!   silent. Either way the flow fails timed out, the other side is
//!   aborted (the guest, or the host peer, reads a reset, never a FIN
//!   that would pass a dead peer's stream on as complete) and it counts in
//!   [`StatsSnapshot::flows_timed_out`]; `guest_keepalive` and
//!   `host_keepalive` in the [`UsernetConfig`] change or turn them off.
//!   Busy flows the same way: data a peer leaves unacknowledged for 120 s
//!   (the host keepalive's deadline, when that is on) ends the flow timed
//!   out, on both sides (a user timeout: our stack's on the guest's side,
//!   the kernel's `TCP_USER_TIMEOUT` on the host's).
//!
//! What it is made of (sans-IO where it can be, time an argument):
//! - [`UsernetConfig`]: the guest network's addresses with slirp4netns's
//!   defaults (10.0.2.0/24, gateway 10.0.2.2, DNS 10.0.2.3, guest 10.0.2.100;
//!   fd00::/64), MTU, `--host-loopback`, `--allow CIDR`, the DNS upstream and
//!   inbound port forwards ([`PortForward`], docker's `-p` syntax);
//! - [`Policy`]: where a guest's connection or datagram goes on the host
//!   (the gateway mapped to the host's loopback only when asked, the DNS
//!   address to the upstream resolver, `--allow` matched against the
//!   host-side destination) or why it is refused ([`Refusal`]);
//! - [`UdpTable`]: the bounded UDP NAT table (one entry per guest source and
//!   destination, idle timeout, the least recently used entry evicted when
//!   full);
//! - [`TcpForwarder`]: a guest connection's host connection (through any
//!   `conflux_tcp::TcpStack`), made before the guest is answered, then the
//!   relay with half-closes and resets passed on both ways, counted, and
//!   one log line per flow;
//! - [`TcpPortForward`]: an inbound forward (`-p`), a host listener whose
//!   connections are relayed into the guest through the stack;
//! - [`resolv_conf_upstream`]: the host resolver from `/etc/resolv.conf`;
//! - [`Stats`]: the counters a user and a test read;
//! - VM frame carriers: QEMU's stream framing (each Ethernet frame after its
//!   4-byte big-endian length; QEMU `-netdev stream`, passt,
//!   gvisor-tap-vsock) as a sans-IO codec ([`StreamHeader`],
//!   [`StreamDecoder`]), and [`StreamDevice`], a netstack `FrameDevice` in
//!   that framing over any `conflux_flow::Flow` (unix, TCP, vsock, ...);
//!   and [`DgramDevice`], one frame per AF_UNIX datagram (vfkit style);
//! - a VM guest's addresses: [`DhcpServer`], a DHCPv4 server (RFC 2131
//!   minimal: leases per hardware address, NAK for a foreign address), and
//!   [`RouterAdvertiser`], IPv6 router advertisements for SLAAC (the
//!   network's prefix, the router lifetime, the MTU and the DNS address,
//!   fd00::3, as RFC 8106's RDNSS option, so that an IPv6-only guest can
//!   resolve names), answering router solicitations.
//!
//! - a VM guest's link, [`GuestLink`], which [`Usernet::spawn_vm`] puts in
//!   front of the stack: the [`DhcpServer`] and the [`RouterAdvertiser`]
//!   (an advertisement as the link starts, every [`RA_INTERVAL`] and for
//!   each solicitation) answer the guest from the gateway, and ARP and
//!   neighbour solicitations for the DNS addresses are answered with the
//!   gateway's MAC; every other frame goes to the stack as it came;
//! - the end of a guest's device (a hypervisor that closed the carrier,
//!   vanished inside a frame or broke the framing), [`DeviceEnded`], which
//!   [`Usernet::device_ended`] waits for; [`Usernet::shutdown`] then
//!   closes every flow of that guest.
//!
//! What it does not do (yet): ICMP echo to addresses other than the
//! gateway's, ICMP errors to the guest, DHCPv6 (the router advertisements
//! carry the prefix and the DNS address instead). The DNS address is not
//! the stack's own (it has one IPv4 address): the frames sent to it reach
//! the stack because `configure` gives it a permanent neighbour entry (a
//! namespace) or the [`GuestLink`] answers ARP and neighbour solicitations
//! for it (a VM), and the intercepts take its flows.
//!
//! The policy alone:
//!
//! ```
//! use conflux_usernet::{Policy, UsernetConfig};
//!
//! let config: UsernetConfig = UsernetConfig::new().host_loopback(true).allow("127.0.0.0/8".parse()?);
//! let policy = Policy::new(&config);
//! // The guest dials the gateway: the host's loopback, allowed.
//! assert_eq!(policy.route("10.0.2.2:8080".parse()?)?, "127.0.0.1:8080".parse()?);
//! // Anything else is outside the allow list.
//! assert!(policy.route("192.0.2.1:80".parse()?).is_err());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The forwarder on one end of an in-memory link, a guest stack on the
//! other reaching a server on the host's loopback through the gateway:
//!
//! ```
//! use conflux_flow::FlowExt;
//! use conflux_netstack::{LinkConfig, NetStack, StackConfig, link_pair};
//! use conflux_tcp::{ConnectOptions, TcpStack};
//! use conflux_usernet::{Usernet, UsernetConfig};
//! use tokio::io::AsyncWriteExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let server = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let port = server.local_addr()?.port();
//! tokio::spawn(async move {
//!     let (mut s, _) = server.accept().await.unwrap();
//!     s.write_all(b"hello from the host").await.unwrap();
//! });
//! let (host_end, guest_end) = link_pair(LinkConfig::ethernet());
//! let config = UsernetConfig::new().host_loopback(true).allow("127.0.0.0/8".parse()?);
//! let usernet = Usernet::spawn(config, host_end)?;
//! let guest = NetStack::new(
//!     StackConfig::new().ipv4("10.0.2.100".parse()?, 24).gateway_v4("10.0.2.2".parse()?).mac([2, 0, 0, 0, 0, 9]),
//!     guest_end,
//! );
//! let mut flow = guest.create_connection(([10, 0, 2, 2], port).into(), ConnectOptions::new()).await?;
//! assert_eq!(flow.read_to_end().await?, b"hello from the host");
//! // A closed port is refused, not reset after a handshake.
//! drop(flow);
//! let closed = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
//! let refused = guest.create_connection(([10, 0, 2, 2], closed).into(), ConnectOptions::new()).await;
//! assert!(matches!(refused, Err(conflux_tcp::ConnectError::Refused { .. })));
//! assert_eq!(usernet.stats().refused, 1);
//! usernet.shutdown().await;
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod config;
mod dgram;
mod dhcp;
mod forward;
mod guest;
mod inbound;
mod inbound_udp;
mod nat;
mod policy;
mod qemu;
mod ra;
mod resolv;
mod runtime;
mod stats;
mod stream;
#[cfg(test)]
mod test_echo;
mod udp;

pub use crate::{
    config::{Cidr, ConfigError, DEFAULT_GUEST_KEEPALIVE, DEFAULT_HOST_KEEPALIVE, PortForward, Proto, UsernetConfig},
    dgram::DgramDevice,
    dhcp::{
        DEFAULT_LEASE_TIME, DHCP_CLIENT_PORT, DHCP_SERVER_PORT, DhcpError, DhcpFrame, DhcpReply, DhcpServer, DhcpTo,
        Mac,
    },
    forward::{FlowEnd, ForwardError, Relayed, TcpForwarder},
    guest::{DeviceEnded, GuestLink, RA_INTERVAL},
    inbound::TcpPortForward,
    nat::{UdpKey, UdpTable},
    policy::{Policy, Refusal},
    qemu::{
        ETHERNET_HEADER, FramePiece, StreamDecodeError, StreamDecoder, StreamHeader, StreamHeaderError, max_frame_len,
    },
    ra::{DEFAULT_ROUTER_LIFETIME, RouterAdvertiser},
    resolv::resolv_conf_upstream,
    runtime::{GATEWAY_MAC, Usernet, UsernetError},
    stats::{Stats, StatsSnapshot},
    stream::{StreamDevice, StreamDeviceError},
};

//! User-mode networking for conflux: what vpnkit, slirp4netns, passt and
//! gvisor-tap-vsock do. A guest (a network namespace or a VM) reaches the
//! network through conflux's userspace TCP/IP stack: every flow the guest
//! opens ends in that stack and is opened again as an ordinary host socket,
//! with no root on the host path, no NAT rules and no bridge.
//!
//! What is here so far (sans-IO, no I/O and no clock: time is an argument;
//! except the two frame devices, which do their socket's I/O):
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
//!   network's prefix, the router lifetime and the MTU), answering router
//!   solicitations.
//!
//! What is not here yet: the forwarder's guest side (it needs a public
//! API for the netstack core's held SYNs and UDP sockets on the stack; in
//! front of the stack it
//! will hand the guest's frames to [`DhcpServer::handle_frame`] and
//! [`RouterAdvertiser::handle_frame`]) and the `conflux usernet`
//! subcommand.
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
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod config;
mod dgram;
mod dhcp;
mod forward;
mod inbound;
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
    config::{Cidr, ConfigError, PortForward, Proto, UsernetConfig},
    dgram::DgramDevice,
    dhcp::{
        DEFAULT_LEASE_TIME, DHCP_CLIENT_PORT, DHCP_SERVER_PORT, DhcpError, DhcpFrame, DhcpReply, DhcpServer, DhcpTo,
        Mac,
    },
    forward::{FlowEnd, ForwardError, Relayed, TcpForwarder},
    inbound::TcpPortForward,
    nat::{UdpKey, UdpTable},
    policy::{Policy, Refusal},
    qemu::{
        ETHERNET_HEADER, FramePiece, StreamDecodeError, StreamDecoder, StreamHeader, StreamHeaderError, max_frame_len,
    },
    ra::{DEFAULT_ROUTER_LIFETIME, RouterAdvertiser},
    resolv::resolv_conf_upstream,
    runtime::{Usernet, UsernetError},
    stats::{Stats, StatsSnapshot},
    stream::{StreamDevice, StreamDeviceError},
};

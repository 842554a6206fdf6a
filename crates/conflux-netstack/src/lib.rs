//! A userspace TCP/IP stack for conflux: MirageOS's direct stack in Rust,
//! on [smoltcp](https://docs.rs/smoltcp) 0.14 and tokio.
//!
//! [`NetStack`] implements the TCP contract of `conflux-tcp`
//! ([`TcpStack`](conflux_tcp::TcpStack)): an application written against it
//! runs unchanged on the host kernel (`conflux-tcp-host`) or on this stack.
//!
//! What it does:
//! - IPv4 and IPv6 with static addresses and default gateways
//!   ([`StackConfig`]), ARP and NDP on Ethernet, ping replies;
//! - listeners keyed by (address, port): one on an address of ours takes
//!   the SYNs to that address only, one on `0.0.0.0` every IPv4 address of
//!   ours, one on `[::]` (the port-only `listen`) every address; where they
//!   share a port, the specific address wins;
//! - TCP with congestion control (CUBIC), one fresh socket per SYN to a
//!   listened port (no RST for the second concurrent client), a cap on
//!   half-open sockets per listener and a handshake timeout, an ephemeral
//!   port allocator, `Timeout` told apart from `Refused`, keepalive,
//!   a user timeout ([`StackConfig::user_timeout`]: sent data left
//!   unacknowledged fails the flow instead of retransmitting forever),
//!   `write_nodelay` that completes once the peer acknowledged every byte,
//!   closed sockets (TIME_WAIT included) reaped and their ports freed;
//! - devices behind [`FrameDevice`], a trait users implement to bring their
//!   own; shipped: an in-memory [`link_pair`] with seeded [`Faults`], Linux
//!   [`TapDevice`] (Ethernet; with [`TapDevice::open_with_offloads`], TCP
//!   segmentation and checksum offload to the kernel through virtio net
//!   headers) and TUN (IP) devices (created inside another network namespace
//!   with [`in_netns`]), and [`Pcap`] capture of any device;
//! - time from tokio's clock: under `tokio::time::pause()` the stack runs in
//!   virtual time (keepalive hours in milliseconds);
//! - transparent ("any-address") listening for tun2socks- and vpnkit-style
//!   users ([`NetStack::listen_transparent`]): connections to any address
//!   that is not ours are accepted and report the original destination as
//!   their `src` (smoltcp 0.14 drops packets to foreign addresses even with
//!   `any_ip`, so the stack rewrites them to its own address and back);
//!   [`NetStack::intercept`] does the same with every SYN held until the
//!   caller accepts or refuses it (a forwarder answers only after its own
//!   connect to the original destination succeeded), gateway addresses
//!   of ours included;
//! - no process-wide state: the crate logs with `tracing` and never sets a
//!   global logger or subscriber. smoltcp's own records are `log` records
//!   (targets `smoltcp::...`); a subscriber with `tracing-log` (the default
//!   of `tracing_subscriber::fmt().init()`) shows them.
//!
//! - UDP ([`NetStack::udp_bind`], [`UdpSocket`]) and a transparent UDP
//!   receive for user-mode forwarders ([`NetStack::udp_intercept`]: every
//!   datagram to an address that is not ours, with its original
//!   destination; replies sent from any address); datagrams up to the MTU,
//!   bounded receive queues that drop and count when full.
//!
//! - a device that fails or closes (a TAP removed, a hypervisor's carrier
//!   closed) stops the stack at once: flows read what they had received and
//!   then fail, connects, accepts, listens and UDP sockets fail, each with
//!   the device's error ([`DeviceError`]); nothing waits for its own timeout.
//!
//! What it does not do (yet): DHCP, SLAAC, IP fragmentation, and
//! local delivery of IPv6 on Ethernet (a stack reaches its own IPv4
//! addresses on any medium and its IPv6 addresses on IP links).
//!
//! Design: a sans-IO core (smoltcp's interface, one socket set per
//! connection, the connection table, listeners and ports; frames and the
//! time in, frames, events and the next deadline out; no async, locks or
//! tokio types) behind a thin async shell. The driver task owns the
//! device, feeds the core received frames in batches, sends its frames in
//! one batch and sleeps until its next deadline; flows lock the shell's
//! state only to move bytes and register wakers. Frames are pooled [`FrameBuf`]s, never zeroed after
//! their first allocation, parsed once with smoltcp's checked views. Because
//! smoltcp walks every socket of a set on each poll, every connection has
//! its own set: a frame is one hash lookup and one socket's poll, egress
//! touches only connections with writes or due timers, so a flow's cost does
//! not grow with idle flows.
//!
//! Received frames are checked (lengths; IPv4 and TCP checksums where the
//! device computes them) before the driver takes any decision on them: a
//! corrupted frame admits no SYN, resets nothing and moves no sequence
//! state. Under a SYN flood, a SYN beyond a listener's half-open cap evicts
//! its oldest unfinished handshake, so legitimate clients still get in.
//!
//! RFC 5961: out-of-window RSTs are dropped, out-of-window SYNs and data get
//! a (rate-limited) challenge ACK, an RST must match exactly in SYN_SENT, an
//! ACK beyond SND.NXT is discarded, and data with an old but acceptable ACK
//! is delivered (the core raises such an ACK to the highest one smoltcp
//! accepted, as smoltcp would drop the segment). An in-window RST that is not
//! exactly RCV.NXT and a SYN on a synchronized connection (bare, or in the
//! window) draw a challenge ACK too: smoltcp 0.14 would reset on the first
//! and drop the second silently, so the core turns such a segment into an
//! out-of-window pure ACK, which smoltcp answers with its own rate-limited
//! challenge ACK.
//!
//! Keepalive timing: the stack probes every `interval` of silence and
//! declares the peer dead `after + probes * interval` after the last
//! received segment: Linux's deadline ([`keepalive_deadline`]), not
//! upstream's `after + (probes + 1) * interval`. The first probe goes out
//! one `interval` into the silence (smoltcp has a single keepalive period).
//!
//! ```
//! use conflux_flow::FlowExt;
//! use conflux_netstack::{LinkConfig, NetStack, StackConfig, link_pair};
//! use conflux_tcp::{ConnectOptions, TcpStack};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let (a, b) = link_pair(LinkConfig::ethernet());
//! let client = NetStack::new(StackConfig::new().ipv4("10.0.0.1".parse().unwrap(), 24), a);
//! let server = NetStack::new(
//!     StackConfig::new().ipv4("10.0.0.2".parse().unwrap(), 24).mac([2, 0, 0, 0, 0, 2]),
//!     b,
//! );
//! server
//!     .listen(80, None, |mut flow| async move {
//!         let _ = flow.write("hello").await;
//!         let _ = flow.close().await;
//!     })
//!     .unwrap();
//! let mut flow = client.create_connection("10.0.0.2:80".parse().unwrap(), ConnectOptions::new()).await.unwrap();
//! assert_eq!(flow.read_to_end().await.unwrap(), b"hello");
//! # });
//! ```
#![deny(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod config;
mod core;
mod device;
mod dhcp;
mod driver;
mod flow;
mod intercept;
mod link;
mod netns;
mod pcap;
mod ports;
mod rewrite;
mod stack;
#[allow(unsafe_code)]
mod sys;
mod tap;
mod udp;
mod vnet;
mod wire;

pub use crate::udp::{Datagram, UdpError, UdpIntercept, UdpSocket};
pub use crate::{
    config::StackConfig,
    device::{
        Checksums, DeviceCaps, DirectSend, FrameBuf, FrameDevice, FrameMeta, FramePool, InlineReceiver, Medium, RxCsum,
    },
    dhcp::{DhcpWaitError, Dhcpv4Lease},
    flow::NetFlow,
    intercept::{HeldSyn, Intercept},
    link::{Faults, LinkConfig, LinkEnd, LinkSwitch, link_pair},
    netns::in_netns,
    pcap::Pcap,
    stack::{DeviceError, NetStack, WeakNetStack},
    tap::{TapDevice, TapStats, TunDevice},
};

/// When this stack declares a silent peer dead under `keepalive`, counted
/// from the last received segment: `after + probes * interval` (Linux's timing).
pub fn keepalive_deadline(keepalive: &conflux_tcp::Keepalive) -> std::time::Duration {
    keepalive.after.saturating_add(keepalive.interval.saturating_mul(keepalive.probes))
}

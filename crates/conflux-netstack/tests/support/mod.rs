//! Shared helpers: two stacks joined by an in-memory link.

#![allow(dead_code, unreachable_pub)]

pub mod frames;
pub mod inject;
pub mod peer;
pub mod tapns;

use std::net::{IpAddr, SocketAddr};

use conflux_netstack::{LinkConfig, LinkSwitch, NetStack, StackConfig, link_pair};

pub const A4: &str = "10.0.0.1";
pub const B4: &str = "10.0.0.2";
pub const A6: &str = "fd00::1";
pub const B6: &str = "fd00::2";

pub fn ip(s: &str) -> IpAddr {
    s.parse().expect("an IP")
}

pub fn addr(ip_s: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip(ip_s), port)
}

/// The config of side A (`a = true`) or B of a pair.
pub fn side(a: bool) -> StackConfig {
    let (v4, v6, mac) = if a { (A4, A6, 1) } else { (B4, B6, 2) };
    StackConfig::new()
        .ipv4(v4.parse().unwrap(), 24)
        .ipv6(v6.parse().unwrap(), 64)
        .mac([2, 0, 0, 0, 0, mac])
        .seed(u64::from(mac))
}

/// Stacks A and B on the two ends of a link built from `link`, with
/// `tweak` applied to both configs; and the link's switch.
pub fn pair_with(link: LinkConfig, tweak: impl Fn(StackConfig) -> StackConfig) -> (NetStack, NetStack, LinkSwitch) {
    let (a, b) = link_pair(link);
    let switch = a.switch();
    (NetStack::new(tweak(side(true)), a), NetStack::new(tweak(side(false)), b), switch)
}

/// Stacks A and B on a plain Ethernet link.
pub fn pair() -> (NetStack, NetStack, LinkSwitch) {
    pair_with(LinkConfig::ethernet(), |c| c)
}

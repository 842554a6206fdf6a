//! A test helper shared by the carriers' tests: two stacks echo TCP data
//! across a pair of frame devices.

use std::net::SocketAddr;

use conflux_conformance::{echo, echo_back};
use conflux_netstack::{FrameDevice, NetStack, StackConfig};
use conflux_tcp::{ConnectOptions, TcpStack};
use conflux_testkit::{TIMEOUT, payload, within};

/// A stack at `ip` over `device`.
pub(crate) fn stack_on<D: FrameDevice>(device: D, ip: &str, mac: u8) -> NetStack {
    let config = StackConfig::new().ipv4(ip.parse().unwrap(), 24).mac([2, 0, 0, 0, 0, mac]).seed(u64::from(mac));
    NetStack::new(config, device)
}

/// Stacks at 10.0.2.2 over `a` and 10.0.2.100 over `b`: B echoes on port 7,
/// A writes `len` bytes, half-closes and must read every byte back.
pub(crate) async fn echo_across<A: FrameDevice, B: FrameDevice>(a: A, b: B, len: usize) {
    let (a, b) = (stack_on(a, "10.0.2.2", 1), stack_on(b, "10.0.2.100", 2));
    let port = b.listen(7, None, echo).unwrap().port();
    let dst = SocketAddr::new("10.0.2.100".parse().unwrap(), port);
    let f = within("connect", TIMEOUT, a.create_connection(dst, ConnectOptions::new())).await.expect("connect");
    let data = payload(len as u64, len);
    let (_, got) = echo_back(f, data.clone()).await;
    let got = got.unwrap();
    assert_eq!(got.len(), data.len());
    assert!(got == data[..], "the echo is the data");
}

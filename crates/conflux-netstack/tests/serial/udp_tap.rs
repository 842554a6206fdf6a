//! UDP against the kernel over a TAP: kernel UDP sockets inside the test
//! namespace (made there with `in_netns`, used from here) exchange datagrams
//! with our stack both ways, IPv4 and IPv6, and through the intercept: the
//! namespace routes a foreign prefix via our stack, and the reply comes back
//! from the address the kernel sent to.

use std::net::SocketAddr;
use std::time::Duration;

use super::{rt, support};
use support::tapns::{KERNEL4, KERNEL6, OURS4, OURS6, TapNs, stack_on};

/// A kernel UDP socket bound on `addr` inside the namespace of `ns`.
fn kernel_socket(ns: &TapNs, addr: SocketAddr) -> tokio::net::UdpSocket {
    let sock = conflux_netstack::in_netns(&ns.path(), move || {
        let s = std::net::UdpSocket::bind(addr)?;
        s.set_nonblocking(true)?;
        Ok(s)
    })
    .expect("a kernel UDP socket in the namespace");
    tokio::net::UdpSocket::from_std(sock).expect("register with tokio")
}

async fn kernel_recv(sock: &tokio::net::UdpSocket, what: &str) -> (Vec<u8>, SocketAddr) {
    let mut buf = vec![0u8; 65_536];
    let (n, from) = tokio::time::timeout(Duration::from_secs(10), sock.recv_from(&mut buf))
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what} at the kernel"))
        .expect("kernel recv");
    buf.truncate(n);
    (buf, from)
}

#[test]
fn kernel_udp_sockets_exchange_datagrams_with_the_stack_both_ways() {
    need_tap!();
    // Plain, with virtio net headers (the kernel's partial checksums), and
    // at the MTU rootless setups use.
    for (offloads, mtu) in [(false, 1500), (true, 1500), (false, 65_520)] {
        rt().block_on(exchange(offloads, mtu));
    }
}

async fn exchange(offloads: bool, mtu: usize) {
    let (ns, dev) = TapNs::create_with(mtu, offloads).expect("TAP in a namespace");
    let stack = stack_on(dev, None);
    let ours = stack.udp_bind("[::]:0".parse().unwrap()).expect("bind");
    let port = ours.local_addr().port();
    for (kernel, our_ip, max) in [(KERNEL4, OURS4, mtu - 28), (KERNEL6, OURS6, mtu - 48)] {
        let k = kernel_socket(&ns, support::addr(kernel, 0));
        let k_addr = k.local_addr().unwrap();
        let to_us = support::addr(our_ip, port);
        for len in [1, 100, 1452, max] {
            let data = conflux_testkit::payload(len as u64, len);
            // Kernel -> us.
            k.send_to(&data, to_us).await.expect("kernel send");
            let (got, from) = tokio::time::timeout(Duration::from_secs(10), ours.recv_from())
                .await
                .unwrap_or_else(|_| panic!("timed out waiting for {len} bytes from {kernel}"))
                .unwrap();
            assert_eq!((got.len(), from), (len, k_addr));
            assert_eq!(got, data, "kernel -> us, {len} bytes, offloads {offloads}");
            // Us -> kernel: the kernel checks our checksums.
            ours.send_to(&got, from).await.expect("our send");
            let (back, from) = kernel_recv(&k, "our datagram").await;
            assert_eq!((back.len(), from), (len, to_us));
            assert_eq!(back, data, "us -> kernel, {len} bytes");
        }
    }

    // The intercept: the namespace routes documentation prefixes via us.
    ns.ip(&["route", "add", "203.0.113.0/24", "via", OURS4]).expect("IPv4 route");
    ns.ip(&["-6", "route", "add", "2001:db8::/64", "via", OURS6]).expect("IPv6 route");
    let icpt = stack.udp_intercept(Vec::new()).expect("intercept");
    for (kernel, dialled) in [(KERNEL4, "203.0.113.5:53"), (KERNEL6, "[2001:db8::5]:5353")] {
        let dialled: SocketAddr = dialled.parse().unwrap();
        let k = kernel_socket(&ns, support::addr(kernel, 0));
        k.send_to(b"question", dialled).await.expect("kernel send");
        let d = tokio::time::timeout(Duration::from_secs(10), icpt.recv())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for the datagram to {dialled}"))
            .unwrap();
        assert_eq!((&d.data[..], d.src, d.dst), (&b"question"[..], k.local_addr().unwrap(), dialled));
        icpt.send_from(b"answer", d.dst, d.src).await.expect("send_from");
        let (answer, from) = kernel_recv(&k, "the answer").await;
        assert_eq!((&answer[..], from), (&b"answer"[..], dialled), "the answer comes from {dialled}");
    }
}

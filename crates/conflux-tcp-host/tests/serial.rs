//! The TCP conformance kit over the kernel backend, and the namespace tests.
//!
//! Everything here is timing-sensitive, counts this process's descriptors, or
//! needs root: xtask runs this target with `--test-threads=1`. The namespace
//! cases (black hole, no route, keepalive over a cut link) re-execute
//! themselves inside a test namespace; see `support/netns.rs`.

mod support;

use conflux_conformance::tcp as kit;
use support::{HostFixture, netns::run_in_netns, rt, serial};

/// One test per kit case on 127.0.0.1, and the basic ones on ::1 too.
macro_rules! loopback_cases {
    ($($case:ident),* $(,)?) => {
        mod v4 {
            use super::*;
            $( #[test] fn $case() { let _serial = serial(); rt().block_on(kit::$case(&HostFixture::loopback("127.0.0.1"))) } )*
        }
        mod v6 {
            use super::*;
            $( #[test] fn $case() { let _serial = serial(); rt().block_on(kit::$case(&HostFixture::loopback("::1"))) } )*
        }
    };
}

loopback_cases!(
    connect_read_exact_and_dst,
    refused_on_closed_port,
    listen_on_port_zero,
    incoming_accepts_in_order_and_unlistens_on_drop,
    listeners_replace_each_other,
    unlisten_keeps_established_refuses_new,
    listen_disconnect_listen_same_port,
    panicking_callback_closes_its_flow,
    write_after_shutdown_is_closed,
    peer_abort_is_reset,
    write_nodelay_waits_for_ack,
    specific_address_takes_only_its_own,
    unlisten_takes_the_listen_key,
    two_addresses_share_a_port,
    specific_address_beside_wildcard,
);

/// Namespace cases: the test's own name, for re-executing it inside A.
macro_rules! netns_cases {
    ($($case:ident),* $(,)?) => {
        mod netns {
            use super::*;
            $( #[test] fn $case() {
                let _serial = serial();
                run_in_netns(concat!("netns::", stringify!($case)), |fx| rt().block_on(kit::$case(&fx)))
            } )*
        }
    };
}

netns_cases!(connect_timeout_black_hole, no_route_fails_at_once, keepalive_detects_cut_link);

/// The kit can fail: each broken stack is rejected by the case that checks
/// what it breaks.
mod broken {
    use super::*;
    use support::broken::{BrokenFixture, Defect};

    #[test]
    #[should_panic(expected = "write_nodelay returned")]
    fn stub_write_nodelay_is_rejected() {
        let _serial = serial();
        rt().block_on(kit::write_nodelay_waits_for_ack(&BrokenFixture::new(Defect::StubNodelay)))
    }

    #[test]
    #[should_panic(expected = "a reset, not Eof")]
    fn abort_as_close_is_rejected() {
        let _serial = serial();
        rt().block_on(kit::peer_abort_is_reset(&BrokenFixture::new(Defect::AbortIsClose)))
    }

    #[test]
    #[should_panic(expected = "after unlisten")]
    fn unlisten_that_keeps_listening_is_rejected() {
        let _serial = serial();
        rt().block_on(kit::unlisten_keeps_established_refuses_new(&BrokenFixture::new(Defect::UnlistenKeepsListening)))
    }

    #[test]
    #[should_panic(expected = "only 127.0.0.1")]
    fn listening_on_every_address_is_rejected() {
        let _serial = serial();
        rt().block_on(kit::specific_address_takes_only_its_own(&BrokenFixture::new(Defect::ListenIgnoresAddress)))
    }

    #[test]
    #[should_panic(expected = "leak")]
    fn leaking_flows_is_rejected() {
        let _serial = serial();
        rt().block_on(kit::listen_on_port_zero(&BrokenFixture::new(Defect::LeakFlows)))
    }
}

/// A loopback peer's handshake runs inside the `connect` call: the connect
/// is decided within its first poll (established, or refused by a closed
/// port), without a trip through the runtime's event loop. Tolerates a
/// few connects the kernel deferred (its softirq thread under load): a
/// connect that waits for writability is never ready at its first poll.
#[test]
fn loopback_connects_are_decided_within_their_first_poll() {
    use std::future::Future;
    use std::task::{Context, Poll, Waker};

    use conflux_tcp::{ConnectError, ConnectOptions, TcpFlow, TcpStack};
    use conflux_tcp_host::HostStack;

    let _serial = serial();
    rt().block_on(async {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let open = listener.local_addr().unwrap();
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let stack = HostStack::new();
        let (mut connected, mut refused) = (0, 0);
        for _ in 0..10 {
            for addr in [open, closed] {
                let mut connect = std::pin::pin!(stack.create_connection(addr, ConnectOptions::new()));
                let first = connect.as_mut().poll(&mut Context::from_waker(Waker::noop()));
                let decided = first.is_ready();
                let result = match first {
                    Poll::Ready(r) => r,
                    Poll::Pending => tokio::time::timeout(std::time::Duration::from_secs(5), connect)
                        .await
                        .expect("a loopback connect within 5 s"),
                };
                match result {
                    Ok(flow) => {
                        assert_eq!((addr, flow.dst()), (open, open));
                        connected += usize::from(decided);
                        drop(listener.accept().unwrap());
                    }
                    Err(e) => {
                        assert!(matches!(e, ConnectError::Refused { addr: a } if a == closed), "{addr}: {e:?}");
                        refused += usize::from(decided);
                    }
                }
            }
        }
        assert!(
            connected >= 5 && refused >= 5,
            "decided at the first poll: {connected}/10 connects, {refused}/10 refusals"
        );
    });
}

/// `src` is asked of the kernel on first use (a forwarder relaying short
/// connections never asks: one system call less per connection): the
/// address the server sees as its peer, kept once asked, and the
/// unspecified address when first asked after the flow closed.
#[test]
fn src_is_asked_lazily_and_kept() {
    use conflux_flow::FlowExt;
    use conflux_tcp::{ConnectOptions, TcpFlow, TcpStack};
    use conflux_tcp_host::HostStack;

    let _serial = serial();
    rt().block_on(async {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stack = HostStack::new();
        let connect = || {
            tokio::time::timeout(
                std::time::Duration::from_secs(5),
                stack.create_connection(addr, ConnectOptions::new()),
            )
        };
        let mut asked = connect().await.expect("in time").unwrap();
        let (_served, peer) = listener.accept().unwrap();
        assert_eq!(asked.src(), peer, "the server's peer");
        asked.close().await.unwrap();
        assert_eq!(asked.src(), peer, "kept after close");
        let mut never = connect().await.expect("in time").unwrap();
        drop(listener.accept().unwrap());
        never.close().await.unwrap();
        assert_eq!(never.src(), "0.0.0.0:0".parse().unwrap(), "first asked after close");
        assert_eq!(never.dst(), addr);
    });
}

/// A short read clears the socket's readiness (no `recv` that finds
/// nothing): bytes and the FIN that arrive after it still wake the reader,
/// and a FIN that came with the bytes reads as Eof at once.
#[test]
fn reads_after_a_short_read_still_see_later_bytes_and_the_fin() {
    use std::io::Write;

    use conflux_flow::FlowExt;
    use conflux_tcp::{ConnectOptions, TcpStack};
    use conflux_tcp_host::HostStack;

    let _serial = serial();
    rt().block_on(async {
        let within = std::time::Duration::from_secs(5);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let stack = HostStack::new();
        let addr = listener.local_addr().unwrap();
        let mut flow = tokio::time::timeout(within, stack.create_connection(addr, ConnectOptions::new()))
            .await
            .expect("in time")
            .unwrap();
        let (mut server, _) = listener.accept().unwrap();
        server.write_all(&[1; 100]).unwrap();
        let first = tokio::time::timeout(within, flow.read()).await.expect("in time").unwrap().unwrap();
        assert_eq!(first.len(), 100, "a short read");
        let writer = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(50));
            server.write_all(&[2; 100]).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(50));
            drop(server);
        });
        let second = tokio::time::timeout(within, flow.read()).await.expect("later bytes wake the reader").unwrap();
        assert_eq!(second.as_deref(), Some(&[2u8; 100][..]));
        let end = tokio::time::timeout(within, flow.read()).await.expect("the FIN wakes the reader").unwrap();
        assert!(end.is_none());
        writer.join().unwrap();

        // Bytes and the FIN together: the short read, then Eof.
        let mut flow = tokio::time::timeout(within, stack.create_connection(addr, ConnectOptions::new()))
            .await
            .expect("in time")
            .unwrap();
        let (mut server, _) = listener.accept().unwrap();
        server.write_all(&[3; 10]).unwrap();
        drop(server);
        std::thread::sleep(std::time::Duration::from_millis(20));
        let got = tokio::time::timeout(within, flow.read()).await.expect("in time").unwrap();
        assert_eq!(got.as_deref(), Some(&[3u8; 10][..]));
        let end = tokio::time::timeout(within, flow.read()).await.expect("Eof after the short read").unwrap();
        assert!(end.is_none());
    });
}

//! The userspace stack as a DHCPv4 client (`StackConfig::dhcpv4`, smoltcp's
//! client) against our DHCP server (`DhcpServer`) over an in-memory link:
//! the stack takes the address, router and DNS servers offered, and uses
//! them on the wire. (conflux-netstack cannot depend on this crate, so the
//! client's test lives here.)

use std::collections::VecDeque;
use std::future::poll_fn;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use conflux_netstack::{DhcpWaitError, FrameBuf, FrameDevice, LinkConfig, LinkEnd, NetStack, StackConfig, link_pair};
use conflux_tcp::{ConnectOptions, TcpStack};
use conflux_testkit::within;
use conflux_usernet::{DhcpFrame, DhcpServer, UsernetConfig};

const CLIENT_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x42];
const SERVER_MAC: [u8; 6] = [0x52, 0x55, 0x0a, 0x00, 0x02, 0x02];
const TIMEOUT: Duration = Duration::from_secs(30);

/// The server's side of the link: DHCP frames answered by `server` (when
/// `answer`), every other frame kept in `seen`.
async fn serve(
    mut end: LinkEnd,
    server: Arc<Mutex<DhcpServer>>,
    seen: Arc<Mutex<Vec<Vec<u8>>>>,
    answer: Arc<AtomicBool>,
) {
    loop {
        let mut frames = Vec::new();
        if poll_fn(|cx| end.poll_recv(cx, &mut frames, 64)).await.is_err() {
            return;
        }
        let mut out = VecDeque::new();
        for f in &frames {
            let handled = server.lock().unwrap().handle_frame(std::time::Instant::now(), f, SERVER_MAC);
            match handled {
                DhcpFrame::Reply(r) if answer.load(Ordering::SeqCst) => out.push_back(FrameBuf::from(r)),
                DhcpFrame::NotDhcp => seen.lock().unwrap().push(f.to_vec()),
                _ => {}
            }
        }
        if !out.is_empty() && poll_fn(|cx| end.poll_send_batch(cx, &mut out)).await.is_err() {
            return;
        }
    }
}

/// An ARP request's (sender IP, target IP).
fn arp_request(frame: &[u8]) -> Option<(Ipv4Addr, Ipv4Addr)> {
    let is_request = frame.len() >= 42 && frame[12..14] == [0x08, 0x06] && frame[20..22] == [0, 1];
    is_request.then(|| {
        let ip = |at: usize| Ipv4Addr::new(frame[at], frame[at + 1], frame[at + 2], frame[at + 3]);
        (ip(28), ip(38))
    })
}

#[tokio::test(start_paused = true)]
async fn a_netstack_takes_address_router_and_dns_from_our_dhcp_server_and_uses_them() {
    let config = UsernetConfig::new();
    let server = Arc::new(Mutex::new(DhcpServer::new(&config)));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (guest, host) = link_pair(LinkConfig::ethernet());
    tokio::spawn(serve(host, server.clone(), seen.clone(), Arc::new(AtomicBool::new(true))));
    let stack = NetStack::new(StackConfig::new().mac(CLIENT_MAC).dhcpv4(), guest);
    assert_eq!(stack.dhcpv4_lease(), None, "no lease before the server answered");

    let lease = within("the DHCP lease", TIMEOUT, stack.wait_dhcpv4_lease()).await.expect("a DHCP client");
    let bound = server.lock().unwrap().lease_of(CLIENT_MAC, std::time::Instant::now());
    assert_eq!(Some(lease.address), bound, "the address the server bound to our MAC");
    assert_eq!(lease.prefix, config.network4.prefix());
    assert_eq!(lease.router, Some(config.gateway4));
    assert_eq!(lease.dns_servers, vec![config.dns4]);
    assert_eq!(lease.server, config.gateway4);
    assert_eq!(stack.dhcpv4_lease(), Some(lease.clone()));
    assert!(stack.addrs().contains(&lease.address.into()), "{:?}", stack.addrs());

    // An off-link destination goes through the router, from the leased
    // address: the stack asks for the router's MAC as the leased address.
    let dst = SocketAddr::from(([192, 0, 2, 1], 80));
    let dialer = stack.clone();
    let connect = tokio::spawn(async move {
        let _ = dialer.create_connection(dst, ConnectOptions::new().timeout(Duration::from_secs(5))).await;
    });
    within("an ARP request for the router", TIMEOUT, async {
        loop {
            if seen.lock().unwrap().iter().filter_map(|f| arp_request(f)).any(|a| a == (lease.address, config.gateway4))
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    connect.abort();
}

#[tokio::test(start_paused = true)]
async fn without_an_answer_there_is_no_lease_and_a_static_stack_is_no_client() {
    let config = UsernetConfig::new();
    let server = Arc::new(Mutex::new(DhcpServer::new(&config)));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (guest, host) = link_pair(LinkConfig::ethernet());
    tokio::spawn(serve(host, server, seen, Arc::new(AtomicBool::new(false))));
    let stack = NetStack::new(StackConfig::new().mac(CLIENT_MAC).dhcpv4(), guest);
    let waited = tokio::time::timeout(Duration::from_secs(60), stack.wait_dhcpv4_lease()).await;
    assert!(waited.is_err(), "no lease without a server's answer: {waited:?}");
    assert_eq!(stack.dhcpv4_lease(), None);
    assert!(stack.addrs().iter().all(|a| !a.is_ipv4()), "{:?}", stack.addrs());

    let (plain, _peer) = link_pair(LinkConfig::ethernet());
    let stack = NetStack::new(StackConfig::new().ipv4(Ipv4Addr::new(10, 0, 2, 100), 24), plain);
    assert_eq!(stack.wait_dhcpv4_lease().await, Err(DhcpWaitError::NotEnabled));
    assert_eq!(stack.dhcpv4_lease(), None);
}

/// A lease the server stops renewing expires: the stack drops the address
/// and the route, and takes a new lease once the server answers again.
#[tokio::test(start_paused = true)]
async fn an_expired_lease_removes_the_address_until_the_next_one() {
    let config = UsernetConfig::new();
    let server = Arc::new(Mutex::new(DhcpServer::new(&config).lease_time(Duration::from_secs(120))));
    let answer = Arc::new(AtomicBool::new(true));
    let (guest, host) = link_pair(LinkConfig::ethernet());
    tokio::spawn(serve(host, server, Arc::new(Mutex::new(Vec::new())), answer.clone()));
    let stack = NetStack::new(StackConfig::new().mac(CLIENT_MAC).dhcpv4(), guest);
    let lease = within("the DHCP lease", TIMEOUT, stack.wait_dhcpv4_lease()).await.expect("a DHCP client");
    assert!(stack.addrs().contains(&lease.address.into()));

    answer.store(false, Ordering::SeqCst);
    within("the lease's expiry", Duration::from_secs(600), async {
        while stack.dhcpv4_lease().is_some() {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    })
    .await;
    assert!(stack.addrs().iter().all(|a| !a.is_ipv4()), "the address went with the lease: {:?}", stack.addrs());

    answer.store(true, Ordering::SeqCst);
    let again = within("a new lease", Duration::from_secs(600), stack.wait_dhcpv4_lease()).await.unwrap();
    assert_eq!(again.address, lease.address, "the server remembers our MAC");
    assert!(stack.addrs().contains(&again.address.into()));
}

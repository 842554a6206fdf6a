//! Kit cases on listeners keyed by (address, port): `listen_on` a specific
//! address, `unlisten_on` by the same key, two addresses on one port, a
//! specific address beside the wildcard.

use std::net::SocketAddr;

use conflux_flow::FlowExt;
use conflux_tcp::{ConnectError, ConnectOptions, ListenError, TcpFlow, TcpStack, any_addr};
use conflux_testkit::{TIMEOUT, within};

use super::{FlowOf, LeakCheck, TcpFixture, connect, echo, forward, ping, skip};

async fn expect_refused<F: TcpFixture>(stack: &F::Stack, addr: SocketAddr, why: &str) {
    match within("connect", TIMEOUT, stack.create_connection(addr, ConnectOptions::new())).await {
        Err(ConnectError::Refused { .. }) => {}
        Err(e) => panic!("expected Refused at {addr} ({why}), got {e:?}"),
        Ok(_) => panic!("connected to {addr}: {why}"),
    }
}

/// A listener on one address (loopback, for the kernel) takes the
/// connections to that address only: a connect to another address of the
/// stack on the same port is refused.
pub async fn specific_address_takes_only_its_own<F: TcpFixture>(fx: &F) {
    let other = match fx.other_local_ip() {
        Ok(ip) => ip,
        Err(u) => return skip(u),
    };
    let leaks = LeakCheck::start(fx);
    let stack = fx.new_stack();
    let listening = stack.listen_on(SocketAddr::new(fx.local_ip(), 0), None, echo::<FlowOf<F>>).expect("listen_on");
    let addr = listening.local_addr();
    assert_eq!(addr, SocketAddr::new(fx.local_ip(), listening.port()));
    let mut client = connect::<F>(&stack, addr).await;
    ping(&mut client, "mine").await;
    let elsewhere = SocketAddr::new(other, listening.port());
    expect_refused::<F>(&stack, elsewhere, &format!("only {addr} listens")).await;
    ping(&mut client, "still mine").await;
    client.close().await.expect("close");
    drop(client);
    assert!(stack.unlisten_on(addr));
    leaks.end(fx, &stack).await;
}

/// `unlisten_on` takes the key `listen_on` was given: the port-only
/// `unlisten` (the unspecified address) and other addresses leave a listener
/// on a specific address alone, and the other way round; the port-only
/// `listen` is keyed `[::]:port`.
pub async fn unlisten_takes_the_listen_key<F: TcpFixture>(fx: &F) {
    let leaks = LeakCheck::start(fx);
    let stack = fx.new_stack();
    let local = fx.local_ip();
    let listening = stack.listen_on(SocketAddr::new(local, 0), None, echo::<FlowOf<F>>).expect("listen_on");
    let port = listening.port();
    assert!(!stack.unlisten(port), "the port-only unlisten stopped the listener on {local}");
    if let Ok(other) = fx.other_local_ip() {
        assert!(!stack.unlisten_on(SocketAddr::new(other, port)), "unlisten_on({other}) stopped the one on {local}");
    }
    let mut client = connect::<F>(&stack, listening.local_addr()).await;
    ping(&mut client, "still listening").await;
    assert!(stack.unlisten_on(listening.local_addr()));
    assert!(!stack.unlisten_on(listening.local_addr()), "a second unlisten_on finds nothing");
    expect_refused::<F>(&stack, listening.local_addr(), "after unlisten_on").await;
    ping(&mut client, "established flows keep running").await;
    client.close().await.expect("close");
    drop(client);

    let wildcard = stack.listen(0, None, echo::<FlowOf<F>>).expect("listen");
    assert_eq!(wildcard.local_addr(), any_addr(wildcard.port()), "the port-only listen is keyed [::]:port");
    let at = SocketAddr::new(local, wildcard.port());
    assert!(!stack.unlisten_on(at), "unlisten_on({at}) stopped the wildcard listener");
    let mut client = connect::<F>(&stack, at).await;
    ping(&mut client, "wildcard").await;
    client.close().await.expect("close");
    drop(client);
    assert!(stack.unlisten(wildcard.port()), "the port-only unlisten stops the port-only listen");
    expect_refused::<F>(&stack, at, "after unlisten").await;
    leaks.end(fx, &stack).await;
}

/// Two listeners on two addresses of the stack share a port: each takes
/// the connections to its own address, and unlistening one leaves the other.
pub async fn two_addresses_share_a_port<F: TcpFixture>(fx: &F) {
    let other = match fx.other_local_ip() {
        Ok(ip) => ip,
        Err(u) => return skip(u),
    };
    let leaks = LeakCheck::start(fx);
    let stack = fx.new_stack();
    let (first_cb, mut first_rx) = forward::<FlowOf<F>>();
    let (second_cb, mut second_rx) = forward::<FlowOf<F>>();
    let first = stack.listen_on(SocketAddr::new(fx.local_ip(), 0), None, first_cb).expect("listen_on").local_addr();
    let second_addr = SocketAddr::new(other, first.port());
    let second = stack.listen_on(second_addr, None, second_cb).expect("listen_on a second address, same port");
    assert_eq!(second.local_addr(), second_addr);

    let to_first = connect::<F>(&stack, first).await;
    let served = within("the first listener", TIMEOUT, first_rx.recv()).await.expect("a flow");
    assert_eq!((served.src(), served.dst()), (first, to_first.src()));
    let to_second = connect::<F>(&stack, second_addr).await;
    let served2 = within("the second listener", TIMEOUT, second_rx.recv()).await.expect("a flow");
    assert_eq!((served2.src(), served2.dst()), (second_addr, to_second.src()));
    assert!(first_rx.try_recv().is_err() && second_rx.try_recv().is_err(), "a listener took the other's flow");
    drop((to_first, served, to_second, served2));

    assert!(stack.unlisten_on(second_addr));
    expect_refused::<F>(&stack, second_addr, "its listener was stopped").await;
    let again = connect::<F>(&stack, first).await;
    let served = within("the first listener, after the other stopped", TIMEOUT, first_rx.recv()).await.expect("a flow");
    assert_eq!(served.dst(), again.src());
    drop((again, served));
    assert!(stack.unlisten_on(first));
    leaks.end(fx, &stack).await;
}

/// Beside the stack's wildcard listener (`[::]`) on a port, a listener on
/// [`local_ip`](TcpFixture::local_ip) takes the connections to that address
/// and the wildcard the rest; unlistening it hands its address back to the
/// wildcard. On backends that refuse the pair
/// ([`specific_beside_wildcard`](TcpFixture::specific_beside_wildcard) false,
/// as Linux does), `listen_on` fails with `AddrInUse` naming the address, and
/// the wildcard listener keeps serving.
pub async fn specific_address_beside_wildcard<F: TcpFixture>(fx: &F) {
    let leaks = LeakCheck::start(fx);
    let stack = fx.new_stack();
    let (wild_cb, mut wild_rx) = forward::<FlowOf<F>>();
    let (spec_cb, mut spec_rx) = forward::<FlowOf<F>>();
    let port = stack.listen(0, None, wild_cb).expect("listen").port();
    let specific = SocketAddr::new(fx.local_ip(), port);
    match (stack.listen_on(specific, None, spec_cb), fx.specific_beside_wildcard()) {
        (Ok(l), true) => {
            assert_eq!(l.local_addr(), specific);
            let client = connect::<F>(&stack, specific).await;
            let served = within("the specific listener", TIMEOUT, spec_rx.recv()).await.expect("a flow");
            assert_eq!(served.dst(), client.src());
            assert!(wild_rx.try_recv().is_err(), "the wildcard took a connection to {specific}");
            drop((client, served));
            if let Ok(other) = fx.other_local_ip() {
                let client = connect::<F>(&stack, SocketAddr::new(other, port)).await;
                let served = within("the wildcard listener", TIMEOUT, wild_rx.recv()).await.expect("a flow");
                assert_eq!(served.dst(), client.src());
                drop((client, served));
            }
            assert!(stack.unlisten_on(specific));
        }
        (Err(ListenError::AddrInUse(a)), false) => assert_eq!(a, specific, "AddrInUse names the address"),
        (Ok(_), false) => panic!("the fixture says {specific} beside [::]:{port} is refused, yet it listens"),
        (Err(e), _) => panic!("listen_on({specific}) beside [::]:{port}: {e:?}"),
    }
    let client = connect::<F>(&stack, specific).await;
    let served = within("the wildcard listener", TIMEOUT, wild_rx.recv()).await.expect("a flow");
    assert_eq!(served.dst(), client.src());
    assert!(spec_rx.try_recv().is_err(), "a stopped or refused listener took a flow");
    drop((client, served));
    assert!(stack.unlisten(port));
    leaks.end(fx, &stack).await;
}

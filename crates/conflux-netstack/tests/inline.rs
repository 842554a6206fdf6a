//! Frames sent from a flow's own task: over a fault-free in-memory link a
//! write reaches the other stack's reader before either driver task runs;
//! over a link with faults (no shared transmit side) it waits for them.

mod support;

use std::future::Future;
use std::pin::pin;
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use conflux_flow::{Flow, FlowExt, Shutdown};
use conflux_netstack::{Faults, LinkConfig, NetFlow};
use conflux_tcp::{TcpFlow, TcpStack};
use conflux_testkit::{TIMEOUT, payload, within};
use support::*;

/// Polls `fut` once, without yielding to the runtime (no other task runs).
fn poll_once<F: Future>(fut: F) -> Poll<F::Output> {
    pin!(fut).poll(&mut Context::from_waker(Waker::noop()))
}

/// Reads what is there now, without yielding: `None` when nothing is.
fn read_now(flow: &mut NetFlow) -> Option<Bytes> {
    match flow.poll_read(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(r) => Some(r.expect("read").expect("not Eof")),
        Poll::Pending => None,
    }
}

/// Ping-pongs `rounds` times between a client on A and its server flow on
/// B, checking after each write, before anything yields, whether the bytes
/// are already readable on the other side: how many were.
async fn ping_pong_inline(link: LinkConfig, rounds: usize) -> usize {
    let keep = Mutex::new(Vec::new());
    let (mut client, mut server) = within("flow pair", TIMEOUT, flow_pair(link, &keep)).await.expect("pair");
    client.set_nodelay(true).expect("nodelay");
    server.set_nodelay(true).expect("nodelay");
    let mut at_once = 0;
    for i in 0..rounds {
        for dir in 0..2 {
            let (from, to) = if dir == 0 { (&mut client, &mut server) } else { (&mut server, &mut client) };
            let ping = payload(i as u64, 64);
            assert!(poll_once(from.write(ping.clone())).is_ready(), "64 bytes fit the send buffer");
            let got = match read_now(to) {
                Some(got) => {
                    at_once += 1;
                    got
                }
                None => within("the ping", TIMEOUT, to.read()).await.expect("read").expect("not Eof"),
            };
            assert_eq!(got, ping);
        }
    }
    client.close().await.expect("close");
    server.close().await.expect("close");
    at_once
}

#[tokio::test]
async fn a_write_is_readable_on_the_other_stack_before_any_driver_runs() {
    assert_eq!(ping_pong_inline(LinkConfig::ethernet(), 50).await, 100);
    assert_eq!(ping_pong_inline(LinkConfig::ip(), 50).await, 100);
}

#[tokio::test]
async fn a_link_with_faults_goes_through_the_drivers() {
    // A fault that never fires still takes the shared transmit side away.
    let faults = Faults { corrupt: 1e-12, ..Faults::NONE };
    assert_eq!(ping_pong_inline(LinkConfig::ethernet().faults(faults), 20).await, 0);
}

#[tokio::test]
async fn the_other_stacks_ack_frees_the_send_buffer_in_the_writers_round() {
    // A full send buffer (64 KiB) goes to the other stack as far as its
    // window (64 KiB) allows in the write's own round, and the other
    // stack's ACK comes back in that round too (taken by the writer's
    // round instead of queued for its driver), so most of a second
    // buffer's worth fits at once, before any driver runs. Queued for the
    // driver, the ACK would leave the send buffer full: nothing would fit.
    let keep = Mutex::new(Vec::new());
    let (mut client, mut server) =
        within("flow pair", TIMEOUT, flow_pair(LinkConfig::ip(), &keep)).await.expect("pair");
    // A megabyte first, read to the end: the congestion window is open.
    let warm = payload(0, 1 << 20);
    let (wrote, read) = tokio::join!(within("warm-up", TIMEOUT, client.write(warm.clone())), async {
        let mut n = 0;
        while n < warm.len() {
            n += within("warm-up", TIMEOUT, server.read()).await.expect("read").expect("not Eof").len();
        }
    });
    wrote.expect("write");
    let () = read;
    within("the warm-up's ACK", TIMEOUT, async {
        while client.unacked().expect("unacked") > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    })
    .await;
    let (first, second) = (payload(1, 64 * 1024), payload(2, 64 * 1024));
    assert!(poll_once(client.write(first.clone())).is_ready(), "the first buffer fits");
    let mut rest = second.clone();
    let polled = client.poll_write(&mut Context::from_waker(Waker::noop()), &mut rest);
    let taken = second.len() - rest.len();
    assert!(taken >= 32 * 1024, "only {taken} bytes of the second buffer fit at once ({polled:?})");
    if polled.is_pending() {
        within("the rest", TIMEOUT, client.write(rest)).await.expect("write");
    }
    let mut got = Vec::new();
    while got.len() < first.len() + second.len() {
        got.extend_from_slice(&within("the bytes", TIMEOUT, server.read()).await.expect("read").expect("not Eof"));
    }
    assert_eq!(got, [first, second].concat());
    // One write larger than the send buffer: the poll that fills the
    // buffer keeps filling once its own round freed room, instead of
    // returning pending and waking its task (it then takes more than the
    // buffer's 64 KiB in one poll).
    within("the ACK", TIMEOUT, async {
        while client.unacked().expect("unacked") > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    })
    .await;
    let big = payload(3, 96 * 1024);
    let mut rest = big.clone();
    let polled = client.poll_write(&mut Context::from_waker(Waker::noop()), &mut rest);
    let taken = big.len() - rest.len();
    assert!(taken > 64 * 1024, "one poll took {taken} bytes ({polled:?})");
    if polled.is_pending() {
        within("the rest", TIMEOUT, client.write(rest)).await.expect("write");
    }
    let mut got = Vec::new();
    while got.len() < big.len() {
        got.extend_from_slice(&within("the bytes", TIMEOUT, server.read()).await.expect("read").expect("not Eof"));
    }
    assert_eq!(got, big);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_both_ways_on_two_workers_arrives_whole_and_in_order() {
    // Inline deliveries race the drivers and each other here (the other
    // stack's lock is only tried): every byte must still arrive in order
    // (`bulk_both_ways` checks it).
    bulk_both_ways(LinkConfig::ethernet()).await;
}

/// The client half-closes first (the server's side is then in
/// CLOSE-WAIT); the server fills the client's receive window (the client
/// reads nothing), so part of its write waits unsent, and shuts down; then
/// the client reads everything. Returns how long (tokio's paused clock)
/// that read took.
async fn read_after_a_close_behind_a_zero_window(link: LinkConfig) -> std::time::Duration {
    let keep = Mutex::new(Vec::new());
    let (mut client, mut server) = within("flow pair", TIMEOUT, flow_pair(link, &keep)).await.expect("pair");
    client.shutdown(Shutdown::Write).await.expect("client shutdown");
    assert_eq!(within("the client's FIN", TIMEOUT, server.read()).await.expect("read"), None);
    // 64 KiB fill the client's window, 32 KiB wait in the server's buffer.
    let data = payload(9, 96 * 1024);
    within("the write", TIMEOUT, server.write(data.clone())).await.expect("write");
    server.shutdown(Shutdown::Write).await.expect("server shutdown");
    // Delayed ACKs and the zero window settle (far less than an RTO).
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let start = tokio::time::Instant::now();
    let got = within("the rest and the FIN", TIMEOUT, client.read_to_end()).await.expect("read to end");
    let took = start.elapsed();
    assert_eq!(got, data);
    took
}

#[tokio::test(start_paused = true)]
async fn a_window_reopened_after_a_close_in_close_wait_needs_no_probe() {
    // smoltcp in LAST-ACK ignores a bare window update, so a server whose
    // close had moved it there sent the rest only after its zero-window
    // probe, an RTO (1 s at least) after the window closed: about 950 ms
    // of this read. Now the close waits in CLOSE-WAIT until the bytes
    // left, and the window update that the client's read sends is heard.
    // (Paused time: the figure is virtual and exact, the test instant.)
    let bound = std::time::Duration::from_millis(200);
    let inline = read_after_a_close_behind_a_zero_window(LinkConfig::ethernet()).await;
    assert!(inline < bound, "over the inline path the rest came after {inline:?}");
    let faults = Faults { corrupt: 1e-12, ..Faults::NONE };
    let driven = read_after_a_close_behind_a_zero_window(LinkConfig::ethernet().faults(faults)).await;
    assert!(driven < bound, "through the drivers the rest came after {driven:?}");
}

#[test]
fn a_listen_callback_may_use_the_connecting_stack() {
    // The handshake's last ACK reaches B inline, from inside A's driver
    // (which holds A's lock): B's callback must not run there, or its call
    // into A deadlocks. Run on a thread of its own so a deadlock fails
    // the test instead of hanging it.
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let res = rt.block_on(async {
            let (a, b, _) = pair();
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let a2 = a.clone();
            let port = b
                .listen(0, None, move |f| {
                    // User code, run as the flow is handed over.
                    let _ = tx.send((f, a2.sockets()));
                    async {}
                })
                .expect("listen")
                .port();
            let mut clients = Vec::new();
            for _ in 0..5 {
                clients.push(
                    within("connect", TIMEOUT, a.create_connection(addr(B4, port), Default::default()))
                        .await
                        .expect("connect"),
                );
                let (_flow, sockets) = within("the callback", TIMEOUT, rx.recv()).await.expect("a flow");
                assert!(sockets >= 1, "A holds the connecting socket");
            }
            clients.len()
        });
        let _ = done_tx.send(res);
    });
    let accepted = done_rx.recv_timeout(TIMEOUT * 2).expect("no deadlock: the five connections were accepted");
    assert_eq!(accepted, 5);
}

#[test]
fn a_flow_used_from_another_runtime_goes_through_its_driver() {
    // The stacks and their drivers live on a runtime of their own thread;
    // the flows are driven from this one: their frames wait for the
    // drivers (no inline round off the stack's runtime), and still arrive.
    // That runtime is held still (its thread blocked) until the check that
    // nothing arrived at once is done, so no driver can run meanwhile.
    let (stacks_tx, stacks_rx) = std::sync::mpsc::channel();
    let (gate_tx, gate_rx) = std::sync::mpsc::channel::<()>();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let home = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(async {
            let keep = Mutex::new(Vec::new());
            let pair = flow_pair(LinkConfig::ethernet(), &keep).await.expect("pair");
            stacks_tx.send(pair).expect("send the flows");
            // Blocks this runtime's only thread: its drivers stay still.
            let _ = gate_rx.recv_timeout(TIMEOUT);
            let _ = stop_rx.await;
        });
    });
    let (mut client, mut server) = stacks_rx.recv_timeout(TIMEOUT).expect("the flows");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let ping = payload(3, 64);
        assert!(poll_once(client.write(ping.clone())).is_ready());
        assert!(read_now(&mut server).is_none(), "not delivered inline from a foreign runtime");
        gate_tx.send(()).expect("release the stacks' runtime");
        let got = within("the ping", TIMEOUT, server.read()).await.expect("read").expect("not Eof");
        assert_eq!(got, ping);
    });
    drop((client, server));
    let _ = stop_tx.send(());
    home.join().expect("the stacks' thread");
}

//! A VM guest served in-process, no root: a guest netstack's stream device
//! on one in-memory pipe, `Usernet::spawn_vm`'s on another, and a
//! "hypervisor" task carrying the QEMU stream bytes between them that can
//! vanish (inside a frame, or cleanly between frames).
//!
//! One test in this binary: it counts the process's open descriptors and
//! the runtime's live tasks, which another test running beside it would
//! disturb.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use conflux_flow::{FlowExt, Pipe, pipe};
use conflux_netstack::{NetStack, StackConfig};
use conflux_tcp::{ConnectOptions, TcpStack};
use conflux_testkit::within;
use conflux_usernet::{PortForward, Proto, StreamDevice, Usernet, UsernetConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

const T: Duration = Duration::from_secs(5);

/// How the hypervisor goes away.
#[derive(Debug, Clone, Copy)]
enum Vanish {
    /// After a frame header and part of its frame.
    MidFrame,
    /// Between two frames, closing the stream.
    Cleanly,
}

/// Carries bytes both ways between the guest's pipe end and ours until told
/// to vanish.
async fn hypervisor(mut guest: Pipe, mut ours: Pipe, vanish: oneshot::Receiver<Vanish>) {
    let mut vanish = vanish;
    loop {
        tokio::select! {
            how = &mut vanish => {
                if let Ok(Vanish::MidFrame) = how {
                    // A 100-byte frame announced, 10 bytes of it sent.
                    let mut partial = vec![0, 0, 0, 100];
                    partial.extend_from_slice(&[0xaa; 10]);
                    ours.write(Bytes::from(partial)).await.unwrap();
                }
                ours.close().await.unwrap();
                return;
            }
            chunk = guest.read() => match chunk {
                Ok(Some(chunk)) => ours.write(chunk).await.unwrap(),
                _ => return,
            },
            chunk = ours.read() => match chunk {
                Ok(Some(chunk)) => guest.write(chunk).await.unwrap(),
                _ => return,
            },
        }
    }
}

/// The test's config with a port forward from the host's
/// 127.0.0.1:`forward_port` to the guest's port 8080.
fn config(forward_port: u16) -> UsernetConfig {
    let forward = PortForward { proto: Proto::Tcp, host: ([127, 0, 0, 1], forward_port).into(), guest_port: 8080 };
    UsernetConfig::new()
        .forward(forward)
        .host_loopback(true)
        .allow("127.0.0.0/8".parse().unwrap())
        // Never used here; not the host's resolver.
        .dns_upstream("127.0.0.1:9".parse().unwrap())
}

/// A guest on a new carrier served by a new `spawn_vm`, with one forwarded
/// TCP connection to `server` and one through the port forward into the
/// guest, each having moved data both ways; the carrier then
/// vanishes `how`; then `shutdown`. Returns the device's end.
async fn serve_one_guest(server: &TcpListener, how: Vanish) -> conflux_usernet::DeviceEnded {
    let port = server.local_addr().unwrap().port();
    let (guest_end, guest_wire) = pipe(256 * 1024);
    let (our_wire, our_end) = pipe(256 * 1024);
    let (cut, vanish) = oneshot::channel();
    let hv = tokio::spawn(hypervisor(guest_wire, our_wire, vanish));
    let forward_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let usernet = Usernet::spawn_vm(config(forward_port), StreamDevice::new(our_end, 1500)).unwrap();
    let guest = NetStack::new(
        StackConfig::new()
            .disconnect_grace(Duration::from_millis(100))
            .ipv4("10.0.2.100".parse().unwrap(), 24)
            .gateway_v4("10.0.2.2".parse().unwrap())
            .mac([0x52, 0x54, 0, 0x12, 0x34, 0x56]),
        StreamDevice::new(guest_end, 1500),
    );
    // The guest's echo server behind the port forward.
    guest
        .listen(8080, None, |mut flow| async move {
            while let Ok(Some(chunk)) = flow.read().await {
                if flow.write(chunk).await.is_err() {
                    break;
                }
            }
        })
        .unwrap();
    let to: SocketAddr = ([10, 0, 2, 2], port).into();
    let mut flow = within("the guest's connect", T, guest.create_connection(to, ConnectOptions::new())).await.unwrap();
    let (mut conn, _): (TcpStream, _) = within("the host's accept", T, server.accept()).await.unwrap();
    flow.write(Bytes::from_static(b"ping")).await.unwrap();
    let mut got = [0; 4];
    within("ping", T, conn.read_exact(&mut got)).await.unwrap();
    assert_eq!(&got, b"ping");
    conn.write_all(b"pong").await.unwrap();
    let pong = within("pong", T, flow.read()).await.unwrap().unwrap();
    assert_eq!(&pong[..], b"pong");
    let mut inbound = within("the port forward", T, TcpStream::connect(("127.0.0.1", forward_port))).await.unwrap();
    inbound.write_all(b"in").await.unwrap();
    within("the guest's echo", T, inbound.read_exact(&mut got[..2])).await.unwrap();
    assert_eq!(&got[..2], b"in");
    assert_eq!(usernet.stats().flows_open, 2);

    cut.send(how).unwrap();
    let ended = within("the device's end", T, usernet.device_ended()).await;
    // Resolves again, with the same reason, for a later caller.
    assert_eq!(within("again", T, usernet.device_ended()).await, ended);
    let counters = usernet.counters();
    // The forwarder ends the guest's flows itself (their host sides
    // aborted, their bytes counted), before any shutdown.
    within("the flows' end", T, async {
        while counters.snapshot().flows_open > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    // A port-forward connection now: the guest is gone, so it is reset at
    // once (the stack fails the connect into it), and not counted as refused.
    let refused = counters.snapshot().refused;
    let mut late =
        within("a late port-forward connect", T, TcpStream::connect(("127.0.0.1", forward_port))).await.unwrap();
    let mut rest = Vec::new();
    let closed = within("the late connection's end", T, late.read_to_end(&mut rest)).await;
    assert!(matches!(closed, Ok(0)) || closed.is_err(), "{closed:?} {rest:?}");
    assert_eq!(counters.snapshot().refused, refused, "a gone guest is no refusal");
    within("shutdown", T, usernet.shutdown()).await;
    // The host server sees its connection closed.
    for (what, conn) in [("the host server's", &mut conn), ("the port forward's client", &mut inbound)] {
        let mut rest = Vec::new();
        let closed = within(what, T, conn.read_to_end(&mut rest)).await;
        assert!(matches!(closed, Ok(0)) || closed.is_err(), "{what}: {closed:?} {rest:?}");
    }
    let s = counters.snapshot();
    assert_eq!((s.flows_open, s.flows_total, s.bytes_out, s.bytes_in), (0, 2, 6, 6), "{s}");
    within("the hypervisor", T, hv).await.unwrap();
    drop(flow);
    // The guest's own echo task (its stack is cut off too) goes with it.
    within("the guest's disconnect", T, guest.disconnect()).await;
    drop(guest);
    ended
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0)
}

fn alive_tasks() -> usize {
    tokio::runtime::Handle::current().metrics().num_alive_tasks()
}

#[tokio::test]
async fn a_vanishing_hypervisor_ends_the_device_and_the_next_carrier_is_served() {
    let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (fds, tasks) = (open_fds(), alive_tasks());

    let ended = serve_one_guest(&server, Vanish::MidFrame).await;
    assert_eq!(ended.kind, ErrorKind::UnexpectedEof, "{ended}");
    assert!(ended.message.contains("stream truncated"), "{ended}");
    assert!(ended.to_string().starts_with("guest device ended: qemu stream: "), "{ended}");

    // A second carrier, a new forwarder: served the same; this one closes cleanly.
    let ended = serve_one_guest(&server, Vanish::Cleanly).await;
    assert_eq!(ended.kind, ErrorKind::ConnectionAborted, "{ended}");
    assert!(ended.message.contains("closed the stream"), "{ended}");

    // Nothing left behind: no task, no socket.
    let settled = async {
        while alive_tasks() > tasks || open_fds() > fds {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    if tokio::time::timeout(T, settled).await.is_err() {
        panic!("leaked: tasks {} (was {tasks}), fds {} (was {fds})", alive_tasks(), open_fds());
    }
}

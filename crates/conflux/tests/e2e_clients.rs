//! End to end with real clients: socat (`-t 30`), `nc -N` and kernel TCP
//! sockets -> `conflux relay` (the binary, as a process; tcp-listen on
//! 127.0.0.1 -> framed hybrid vsock, i.e. fc-vsock with `framing=shutdown`
//! through a fake Firecracker VMM's Unix socket) -> a framed echo.
//!
//! - The data is verified by SHA-256 on both sides (4 MiB).
//! - Half-close end to end: the echo answers only after its Eof, so a client
//!   that gets the echo has shut its write side and kept reading.
//! - Resets: a client's RST (linger 0) reaches the echo as a reset of the
//!   framed flow; the echo's transport vanishing without Close or
//!   ShutdownWrite reaches the client as an RST (ECONNRESET).
#![forbid(unsafe_code)]

mod e2e_support;

use std::io::ErrorKind;
use std::process::Command;

use conflux_testkit::{TempDir, have_command, payload, skip, within};
use e2e_support::{DEADLINE, End, Event, FramedEcho, Mode, Relay, assert_success, run_client, sha256_hex, write_input};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const LEN: usize = 4 << 20;

/// One client run through a relay to the echo: `client(port)` builds the
/// command; its stdout must be the input, and the echo must have read all
/// of it and then a clean Eof.
async fn through_relay(what: &'static str, seed: u64, client: impl FnOnce(u16) -> Command + Send + 'static) {
    let mut echo = FramedEcho::start(Mode::EchoAfterEof);
    let relay = Relay::start(&echo.uri, &[]);
    let dir = TempDir::new(what);
    let data = payload(seed, LEN);
    let input = write_input(dir.path(), "in", &data);
    let port = relay.port;
    let out = tokio::task::spawn_blocking(move || run_client(what, &mut client(port), &input)).await.unwrap();
    assert_success(what, out.status, &out);
    let seen = echo.done().await;
    assert_eq!(seen.end, End::Eof, "{what}: the echo's read ended with {:?}", seen.end);
    assert_eq!((seen.bytes, &seen.sha256), (LEN, &sha256_hex(&data)), "{what}: what the echo read");
    assert_eq!(out.stdout.len(), LEN, "{what}: bytes echoed back");
    assert_eq!(sha256_hex(&out.stdout), sha256_hex(&data), "{what}: SHA-256 of the echo");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socat_through_the_relay_sees_its_echo_after_its_own_eof() {
    if !have_command("socat") {
        skip!(Socat, "socat is not installed (cargo xtask install)");
    }
    through_relay("socat", 1, |port| {
        let mut cmd = Command::new("socat");
        cmd.args(["-t", "30", "-b", "65536", "-", &format!("TCP:127.0.0.1:{port}")]);
        cmd
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nc_through_the_relay_sees_its_echo_after_its_own_eof() {
    if !have_command("nc") {
        skip!(Netcat, "nc (netcat-openbsd) is not installed (cargo xtask install)");
    }
    through_relay("nc", 2, |port| {
        let mut cmd = Command::new("nc");
        cmd.args(["-N", "127.0.0.1", &port.to_string()]);
        cmd
    })
    .await;
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_reset_reaches_the_echo_as_a_reset() {
    let mut echo = FramedEcho::start(Mode::EchoAfterEof);
    let relay = Relay::start(&echo.uri, &[]);
    let mut client = within("connect", DEADLINE, TcpStream::connect(relay.addr())).await.expect("connect");
    client.write_all(&payload(3, 1024)).await.expect("write");
    // The flow reached the echo before the reset.
    assert!(matches!(echo.next().await, Event::FirstBytes));
    client.set_zero_linger().expect("SO_LINGER 0");
    drop(client); // RST
    let seen = echo.done().await;
    assert_eq!(seen.end, End::Reset, "the echo's read after the client's RST (saw {} bytes)", seen.bytes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_echo_vanishing_without_close_reaches_the_client_as_a_reset() {
    let mut echo = FramedEcho::start(Mode::AbortAfter(1024));
    let relay = Relay::start(&echo.uri, &[]);
    let mut client = within("connect", DEADLINE, TcpStream::connect(relay.addr())).await.expect("connect");
    client.write_all(&payload(4, 1024)).await.expect("write");
    let seen = echo.done().await;
    assert_eq!(seen.bytes, 1024);
    let mut buf = [0u8; 64];
    let read = within("the client's read after the far side vanished", DEADLINE, client.read(&mut buf)).await;
    match read {
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        other => panic!("the client read {other:?}, not ECONNRESET"),
    }
}

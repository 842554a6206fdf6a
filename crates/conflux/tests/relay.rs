//! `conflux relay`, the binary spawned as a process: tcp -> unix with the
//! half-close seen end to end, `--once` exit codes, a reset passed on both
//! ways (TCP RST <-> a framed peer's lost transport), and SIGTERM: stop
//! accepting, let open flows finish, abort them after `--grace`.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Running, WAIT};
use conflux_flow::FlowExt;
use conflux_hvsock::{FramingConfig, Listener, UnixAddr, UnixFamily};
use conflux_testkit::{TempDir, payload, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixListener};

/// A Unix server that reads until Eof, and only then answers with what it
/// read: the answer proves the client's half-close crossed the relay.
fn echo_after_eof(path: &Path) -> tokio::task::JoinHandle<usize> {
    echo_after_eof_telling(path, tokio::sync::oneshot::channel().0)
}

/// As [`echo_after_eof`], saying when it accepted.
fn echo_after_eof_telling(path: &Path, accepted: tokio::sync::oneshot::Sender<()>) -> tokio::task::JoinHandle<usize> {
    let listener = UnixListener::bind(path).unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let _ = accepted.send(());
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        s.write_all(&got).await.unwrap();
        s.shutdown().await.unwrap();
        got.len()
    })
}

fn relay(args: &[&str]) -> (Running, u16) {
    let mut all = vec!["relay"];
    all.extend_from_slice(args);
    let mut r = Running::spawn(&all);
    let port = r.tcp_port();
    (r, port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_to_unix_half_close_end_to_end_then_once_exits_0() {
    let dir = TempDir::new("relay-hc");
    let path = dir.path().join("echo.sock");
    let server = echo_after_eof(&path);
    let (mut relay, port) = relay(&["--once", "tcp://127.0.0.1:0", &format!("unix://{}", path.display())]);

    let data = payload(5, 300_000);
    let mut client = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let back = within("the echo after our Eof", WAIT, async {
        client.write_all(&data).await.unwrap();
        client.shutdown().await.unwrap(); // half-close: we still read
        let mut back = Vec::new();
        client.read_to_end(&mut back).await.unwrap();
        back
    })
    .await;
    assert_eq!(back.len(), data.len());
    assert!(back == data, "the echo is the data");
    assert_eq!(within("server", WAIT, server).await.unwrap(), data.len());

    assert_eq!(relay.wait(WAIT), Some(0), "--once, ended with eof:\n{}", relay.stderr());
    let log = relay.stderr();
    let line = log.lines().find(|l| l.contains("flow ended")).expect("one line per flow");
    for field in [
        "id=1",
        "from=127.0.0.1:",
        &format!("to=unix://{}", path.display()),
        "up=300000",
        "down=300000",
        "end=eof",
        "duration=",
    ] {
        assert!(line.contains(field), "`{field}` in {line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_exits_1_when_the_flow_fails() {
    let dir = TempDir::new("relay-fail");
    let path = dir.path().join("nobody.sock");
    let (mut relay, port) = relay(&["--once", "tcp://127.0.0.1:0", &format!("unix://{}", path.display())]);
    // The far side is unreachable: our flow is aborted (a reset, which may
    // arrive before connect returns) or ends.
    match TcpStream::connect(("127.0.0.1", port)).await {
        Ok(mut client) => {
            let mut buf = Vec::new();
            let got = within("the relay gives up", WAIT, client.read_to_end(&mut buf)).await;
            assert!(got.is_err() || buf.is_empty(), "{got:?}");
        }
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
    }
    assert_eq!(relay.wait(WAIT), Some(1), "{}", relay.stderr());
    let log = relay.stderr();
    assert!(log.contains("end=error"), "{log}");
    let last = log.lines().last().unwrap();
    assert!(last.starts_with("conflux: flow 1 ended with error") && last.contains("nobody.sock"), "{last}");
}

/// A framed listener on a Unix socket (conflux-hvsock), as a VM's service would be.
fn framed_listener(path: &Path) -> Listener<conflux_hvsock::UnixListener> {
    Listener::bind(&UnixFamily, &UnixAddr::new(path)).unwrap()
}

fn framing() -> FramingConfig {
    FramingConfig::new().close_timeout(Duration::from_secs(2))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_reset_reaches_the_framed_peer_as_a_reset() {
    let dir = TempDir::new("relay-rst1");
    let path = dir.path().join("framed.sock");
    let listener = framed_listener(&path);
    let (mut relay, port) =
        relay(&["--once", "tcp://127.0.0.1:0", &format!("unix://{}?framing=shutdown", path.display())]);

    let mut client = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    client.write_all(b"before the reset").await.unwrap();
    let (raw, _) = within("accept", WAIT, listener.accept()).await.unwrap();
    let mut peer = raw.into_framed(framing());
    let first = within("data", WAIT, peer.read()).await.unwrap().unwrap();
    assert!(b"before the reset".starts_with(&first));
    client.set_zero_linger().unwrap();
    drop(client); // an RST
    let e = within("the reset, passed on", WAIT, peer.read_to_end()).await.unwrap_err();
    assert!(e.is_reset(), "the framed peer reads a reset, not a clean Eof: {e}");
    assert_eq!(relay.wait(WAIT), Some(1), "--once: the flow ended with a reset");
    assert!(relay.stderr().contains("end=reset"), "{}", relay.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_framed_peer_lost_without_close_reaches_tcp_as_an_rst() {
    let dir = TempDir::new("relay-rst2");
    let path = dir.path().join("framed.sock");
    let listener = framed_listener(&path);
    let (mut relay, port) =
        relay(&["--once", "tcp://127.0.0.1:0", &format!("unix://{}?framing=shutdown", path.display())]);

    let mut client = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    client.write_all(b"hello").await.unwrap();
    let (raw, _) = within("accept", WAIT, listener.accept()).await.unwrap();
    let mut peer = raw.into_framed(framing());
    assert_eq!(within("data", WAIT, peer.read()).await.unwrap().unwrap(), "hello");
    peer.write("partial answer").await.unwrap();
    drop(peer); // gone without ShutdownWrite or Close: the service crashed
    let mut buf = Vec::new();
    let got = within("the reset, passed on", WAIT, client.read_to_end(&mut buf)).await;
    let e = got.expect_err("an RST, not a clean end: the answer is incomplete");
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
    assert_eq!(relay.wait(WAIT), Some(1));
    assert!(relay.stderr().contains("end=reset"), "{}", relay.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_accepting_and_lets_open_flows_finish() {
    let dir = TempDir::new("relay-term");
    let path = dir.path().join("echo.sock");
    let (accepted_tx, accepted) = tokio::sync::oneshot::channel();
    let server = echo_after_eof_telling(&path, accepted_tx);
    let (mut relay, port) = relay(&["--grace", "20s", "tcp://127.0.0.1:0", &format!("unix://{}", path.display())]);
    let mut client = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    client.write_all(b"in flight").await.unwrap();
    // The flow is open end to end before the signal.
    within("the flow to open", WAIT, accepted).await.unwrap();
    relay.sigterm();
    relay.wait_line("stopping");
    // No new flows: the listener is gone.
    let refused = TcpStream::connect(("127.0.0.1", port)).await;
    assert!(refused.is_err(), "new connections are refused after SIGTERM");
    // The open flow still completes, both ways.
    client.shutdown().await.unwrap();
    let mut back = Vec::new();
    within("the echo", WAIT, client.read_to_end(&mut back)).await.unwrap();
    assert_eq!(back, b"in flight");
    assert_eq!(within("server", WAIT, server).await.unwrap(), 9);
    assert_eq!(relay.wait(WAIT), Some(0), "all flows finished: exit 0\n{}", relay.stderr());
    assert!(relay.stderr().contains("end=eof"), "{}", relay.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_aborts_what_is_left_after_the_grace_period() {
    let dir = TempDir::new("relay-grace");
    let path = dir.path().join("echo.sock");
    let (accepted_tx, accepted) = tokio::sync::oneshot::channel();
    let _server = echo_after_eof_telling(&path, accepted_tx);
    let (mut relay, port) = relay(&["--grace", "300ms", "tcp://127.0.0.1:0", &format!("unix://{}", path.display())]);
    let mut client = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    client.write_all(b"never finished").await.unwrap();
    within("the flow to open", WAIT, accepted).await.unwrap();
    let started = std::time::Instant::now();
    relay.sigterm();
    assert_eq!(relay.wait(WAIT), Some(1), "a flow had to be aborted\n{}", relay.stderr());
    assert!(started.elapsed() < Duration::from_secs(10));
    let log = relay.stderr();
    assert!(log.contains("end=aborted") && log.contains("grace period"), "{log}");
    let mut buf = Vec::new();
    let got = within("our flow's end", WAIT, client.read_to_end(&mut buf)).await;
    assert!(got.is_err(), "aborted: an RST, {got:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_timeout_aborts_a_silent_flow() {
    let dir = TempDir::new("relay-idle");
    let path = dir.path().join("echo.sock");
    let (accepted_tx, accepted) = tokio::sync::oneshot::channel();
    let _server = echo_after_eof_telling(&path, accepted_tx);
    let (mut relay, port) =
        relay(&["--once", "--idle-timeout", "300ms", "tcp://127.0.0.1:0", &format!("unix://{}", path.display())]);
    let mut client = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    client.write_all(b"then silence").await.unwrap();
    within("the flow to open", WAIT, accepted).await.unwrap();
    let mut buf = Vec::new();
    let got = within("the idle timeout", WAIT, client.read_to_end(&mut buf)).await;
    assert!(got.is_err(), "aborted: an RST, {got:?}");
    assert_eq!(relay.wait(WAIT), Some(1), "--once: the flow timed out");
    let log = relay.stderr();
    assert!(log.contains("end=timeout") && log.contains("up=12"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_flows_holds_back_the_next_flow_until_one_ends() {
    let dir = TempDir::new("relay-max");
    let path = dir.path().join("count.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let (mut relay, port) = relay(&["--max-flows", "1", "tcp://127.0.0.1:0", &format!("unix://{}", path.display())]);
    let mut first = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    first.write_all(b"1").await.unwrap();
    let (mut s1, _) = within("the first flow", WAIT, listener.accept()).await.unwrap();
    let mut second = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    second.write_all(b"2").await.unwrap();
    // While the first is open the second is not relayed.
    let early = tokio::time::timeout(Duration::from_millis(300), listener.accept()).await;
    assert!(early.is_err(), "a second flow was relayed beyond --max-flows 1");
    // The first ends (both ways); then the second goes through.
    first.shutdown().await.unwrap();
    let mut got = Vec::new();
    s1.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"1");
    drop(s1);
    let (mut s2, _) = within("the second flow, once the first ended", WAIT, listener.accept()).await.unwrap();
    let mut b = [0u8; 1];
    s2.read_exact(&mut b).await.unwrap();
    assert_eq!(&b, b"2");
    relay.sigterm();
    drop((second, s2));
    assert!(relay.wait(WAIT).is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_forced_draws_the_live_line() {
    let dir = TempDir::new("relay-progress");
    let path = dir.path().join("echo.sock");
    let _server = echo_after_eof(&path);
    let (mut relay, _port) = relay(&["--progress=always", "tcp://127.0.0.1:0", &format!("unix://{}", path.display())]);
    // Redrawn every second with `\r`: the collected stderr holds it.
    relay.wait_line("0 accepted");
    assert!(relay.stderr().contains("\r\x1b[2Kup 0 B/s, down 0 B/s, 0 open, 0 accepted"), "{:?}", relay.stderr());
    relay.sigterm();
    assert_eq!(relay.wait(WAIT), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_timeout_bounds_the_connect_to_to() {
    // A hybrid vsock VMM that accepts and never answers the CONNECT.
    let dir = TempDir::new("relay-mute");
    let path = dir.path().join("v.sock");
    let mute = UnixListener::bind(&path).unwrap();
    let _held = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = mute.accept().await {
            held.push(s);
        }
    });
    let (mut relay, port) = relay(&[
        "--once",
        "--connect-timeout",
        "300ms",
        "tcp://127.0.0.1:0",
        &format!("fc-vsock://{}?port=5", path.display()),
    ]);
    let started = std::time::Instant::now();
    let _client = TcpStream::connect(("127.0.0.1", port)).await;
    assert_eq!(relay.wait(WAIT), Some(1), "{}", relay.stderr());
    assert!(started.elapsed() < Duration::from_secs(5), "bounded by --connect-timeout: {:?}", started.elapsed());
    let log = relay.stderr();
    assert!(log.contains("end=error") && log.contains("timed out"), "{log}");
}

/// The threads of process `pid` that tokio names as its workers.
fn tokio_workers(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.unwrap().path().join("comm")).ok())
        .filter(|name| name.trim() == "tokio-rt-worker")
        .count()
}

/// [`tokio_workers`] once it is `n`, or what it is after [`WAIT`]: a new
/// thread names itself once it runs, which a loaded machine may delay.
fn tokio_workers_reaching(pid: u32, n: usize) -> usize {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let now = tokio_workers(pid);
        if now == n || std::time::Instant::now() > deadline {
            return now;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A Unix server answering each connection's first bytes with the same,
/// connections served side by side.
fn echo_each(path: &Path) -> tokio::task::JoinHandle<()> {
    let listener = UnixListener::bind(path).unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 64];
                while let Ok(n @ 1..) = s.read(&mut buf).await {
                    if s.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    })
}

/// Writes `msg` on `client` and reads it back through the relay.
async fn echoed(client: &mut TcpStream, msg: &[u8]) -> Vec<u8> {
    client.write_all(msg).await.unwrap();
    let mut back = vec![0u8; msg.len()];
    within("the echo through the relay", WAIT, client.read_exact(&mut back)).await.unwrap();
    back
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_one_thread_relays_flows_side_by_side() {
    let dir = TempDir::new("relay-one-thread");
    let path = dir.path().join("echo.sock");
    let _server = echo_each(&path);
    let (mut relay, port) = relay(&["tcp://127.0.0.1:0", &format!("unix://{}", path.display())]);
    assert_eq!(tokio_workers(relay.child.id()), 0, "no worker threads: the relay runs on its main thread");
    // Two flows open at once, each answered while the other waits.
    let mut first = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut second = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    assert_eq!(echoed(&mut first, b"one").await, b"one");
    assert_eq!(echoed(&mut second, b"two").await, b"two");
    assert_eq!(echoed(&mut first, b"one again").await, b"one again");
    // Checked again once flows were served: a worker that had not yet
    // named itself at the first look would show by now.
    assert_eq!(tokio_workers(relay.child.id()), 0, "no worker threads after serving flows");
    relay.sigterm();
    drop((first, second));
    assert_eq!(relay.wait(WAIT), Some(0), "{}", relay.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn threads_spreads_flows_over_that_many_workers() {
    let dir = TempDir::new("relay-threads");
    let path = dir.path().join("echo.sock");
    let _server = echo_each(&path);
    // The option is global: after the subcommand too.
    let (mut relay, port) = relay(&["--threads", "3", "tcp://127.0.0.1:0", &format!("unix://{}", path.display())]);
    assert_eq!(tokio_workers_reaching(relay.child.id(), 3), 3, "--threads 3");
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(TcpStream::connect(("127.0.0.1", port)).await.unwrap());
    }
    for (i, client) in clients.iter_mut().enumerate() {
        let msg = format!("flow {i}");
        assert_eq!(echoed(client, msg.as_bytes()).await, msg.as_bytes());
    }
    relay.sigterm();
    drop(clients);
    assert_eq!(relay.wait(WAIT), Some(0), "{}", relay.stderr());
}

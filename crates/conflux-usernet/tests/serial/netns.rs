//! The forwarder serving a network namespace (slirp4netns's job), with the
//! kernel as the guest and real tools inside it: curl, nc, ping, python3.
//! Each test makes its own namespace, whose only link is the forwarder's
//! TAP; the forwarder reaches only the host's loopback (`--host-loopback
//! --allow 127.0.0.0/8`) and the guest dials the gateway, 10.0.2.2.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use conflux_testkit::{Netns, SkipReturn, TempDir, have_command, is_root, open_fds, payload, skip, tools, within};
use conflux_usernet::{PortForward, Proto, Usernet, UsernetConfig};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// The size of the HTTP download and upload.
const BULK: usize = 64 << 20;

/// A namespace served by a forwarder (configured, host loopback only).
struct Guest {
    usernet: Option<Usernet>,
    // Dropped last: kills what still runs inside and deletes the namespace.
    ns: Netns,
}

/// A guest, or none after a visible skip.
struct MaybeGuest(Option<Guest>);

impl SkipReturn for MaybeGuest {
    fn skipped() -> MaybeGuest {
        MaybeGuest(None)
    }
}

impl Guest {
    /// A fresh namespace and its forwarder, `config` on top of the test
    /// defaults; `None` after a visible skip when the machine lacks root,
    /// `ip` or one of `tools`.
    fn start(tag: &str, tools: &[&str], config: impl FnOnce(UsernetConfig) -> UsernetConfig) -> Option<Guest> {
        Guest::try_start(tag, tools, config).0
    }

    fn try_start(tag: &str, tools: &[&str], config: impl FnOnce(UsernetConfig) -> UsernetConfig) -> MaybeGuest {
        if !is_root() {
            skip!(Root, "a namespace and a TAP device need root");
        }
        if !have_command("ip") {
            skip!(Iproute2, "ip not on PATH");
        }
        for tool in tools {
            if !have_command(tool) {
                match *tool {
                    "curl" => skip!(Curl, "curl not on PATH (cargo xtask install)"),
                    "ping" => skip!(Ping, "ping not on PATH (cargo xtask install)"),
                    "nc" => skip!(Socat, "nc (netcat-openbsd) not on PATH (cargo xtask install)"),
                    "socat" => skip!(Socat, "socat not on PATH (cargo xtask install)"),
                    other => skip!(Capability, "{other} not on PATH"),
                }
            }
        }
        let ns = match Netns::create(tag) {
            Ok(ns) => ns,
            Err(e) => skip!(Netns, "{e}"),
        };
        let base = UsernetConfig::new().configure(true).host_loopback(true).allow("127.0.0.0/8".parse().unwrap());
        let usernet = Usernet::spawn_netns(config(base), &ns.path()).expect("serve the namespace");
        MaybeGuest(Some(Guest { usernet: Some(usernet), ns }))
    }

    fn usernet(&self) -> &Usernet {
        self.usernet.as_ref().expect("running")
    }

    /// Runs `program ARGS` inside the namespace to its end (bounded by the
    /// program's own timeout options), off the runtime's threads.
    async fn run(&self, program: &str, args: &[&str]) -> Output {
        run_in(&self.ns, program, args).await
    }

    /// Stops the forwarder; the TAP device must be gone from the namespace.
    async fn stop(mut self) {
        let usernet = self.usernet.take().expect("running");
        within("shutdown", Duration::from_secs(10), usernet.shutdown()).await;
        let links = Command::new("ip").args(["-n", self.ns.name(), "-o", "link"]).output().unwrap();
        let links = String::from_utf8_lossy(&links.stdout);
        assert!(!links.contains("tap0"), "the device is gone after shutdown: {links}");
    }
}

/// Runs `program ARGS` inside `ns` to its end (bounded by the program's
/// own timeout options), off the runtime's threads.
pub(crate) async fn run_in(ns: &Netns, program: &str, args: &[&str]) -> Output {
    let mut cmd = ns.cmd(program);
    cmd.args(args).stdin(Stdio::null());
    tokio::task::spawn_blocking(move || cmd.output().expect("spawn in the namespace")).await.unwrap()
}

fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn assert_ok(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what}: {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `PUT /upload`: `<length> <sha256>\n` of the body; `GET /download`:
/// [`BULK`] bytes of `payload(7, BULK)`.
async fn handle(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, hyper::Error> {
    if req.method() == Method::PUT && req.uri().path() == "/upload" {
        let mut body = req.into_body();
        let (mut len, mut hash) = (0usize, Sha256::new());
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame?.into_data() {
                len += data.len();
                hash.update(&data);
            }
        }
        let hex: String = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
        return Ok(Response::new(Full::new(Bytes::from(format!("{len} {hex}\n")))));
    }
    if req.uri().path() == "/download" {
        return Ok(Response::new(Full::new(payload(7, BULK))));
    }
    Ok(Response::new(Full::new(Bytes::from_static(b"hello\n"))))
}

/// A hyper HTTP/1.1 server on the host's 127.0.0.1; its port.
pub(crate) async fn serve_http() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), hyper::service::service_fn(handle));
                let _ = conn.await;
            });
        }
    });
    port
}

/// curl inside the namespace downloads and uploads 64 MiB from and to a
/// hyper server on the host's loopback through the gateway, both verified
/// by SHA-256; the counters saw the bytes and no flow is left open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_moves_64_mib_each_way_through_the_gateway() {
    let Some(guest) = Guest::start("uc", &["curl"], |c| c.mtu(65520)) else { return };
    let port = serve_http().await;
    let dir = TempDir::new("usernet-curl");
    let down = dir.path().join("down.bin");
    let url = format!("http://10.0.2.2:{port}");
    let started = Instant::now();
    let out = guest
        .run("curl", &["--http1.1", "-sS", "--fail", "--max-time", "60", "-o", path(&down), &format!("{url}/download")])
        .await;
    assert_ok("curl download", &out);
    let took_down = started.elapsed();
    let got = std::fs::read(&down).unwrap();
    assert_eq!(got.len(), BULK, "the download's length");
    assert_eq!(sha256_hex(&got), sha256_hex(&payload(7, BULK)), "the download's SHA-256");

    let up = dir.path().join("up.bin");
    let data = payload(9, BULK);
    std::fs::write(&up, &data).unwrap();
    let started = Instant::now();
    let out = guest
        .run("curl", &["--http1.1", "-sS", "--fail", "--max-time", "60", "-T", path(&up), &format!("{url}/upload")])
        .await;
    assert_ok("curl upload", &out);
    eprintln!("64 MiB down in {took_down:?}, up in {:?}", started.elapsed());
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{BULK} {}\n", sha256_hex(&data)));

    let s = wait_idle(guest.usernet()).await;
    assert_eq!(s.flows_total, 2, "{s}");
    assert!(s.bytes_in >= BULK as u64 && s.bytes_out >= BULK as u64, "{s}");
    assert_eq!(s.refused, 0, "{s}");
    guest.stop().await;
}

fn path(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

/// The counters once no flow is open (bounded).
pub(crate) async fn wait_idle(usernet: &Usernet) -> conflux_usernet::StatsSnapshot {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = usernet.stats();
        if s.flows_open == 0 || Instant::now() > deadline {
            assert_eq!(s.flows_open, 0, "flows still open: {s}");
            return s;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The gateway answers ping (the stack answers echo requests to its own
/// addresses).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_answers_ping() {
    let Some(guest) = Guest::start("up", &["ping"], |c| c) else { return };
    let out = guest.run("ping", &["-c", "1", "-W", "5", "10.0.2.2"]).await;
    assert_ok("ping 10.0.2.2", &out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 received"));
    guest.stop().await;
}

/// `nc -N` inside the namespace sends, shuts its write side, and still
/// reads the reply the host's server sends after seeing that Eof.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nc_half_close_still_reads_the_reply() {
    let Some(guest) = Guest::start("uh", &["nc", "sh"], |c| c) else { return };
    let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = server.local_addr().unwrap().port();
    let served = tokio::spawn(async move {
        let (mut s, _) = server.accept().await.unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        s.write_all(format!("got {} bytes after eof\n", got.len()).as_bytes()).await.unwrap();
        got
    });
    let script = format!("printf 'half-close' | nc -N -w 10 10.0.2.2 {port}");
    let out = guest.run("sh", &["-c", &script]).await;
    assert_ok("nc -N", &out);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "got 10 bytes after eof\n");
    assert_eq!(within("server", Duration::from_secs(5), served).await.unwrap(), b"half-close");
    let s = wait_idle(guest.usernet()).await;
    assert_eq!((s.flows_total, s.bytes_out, s.bytes_in), (1, 10, 23), "{s}");
    guest.stop().await;
}

/// `-p 127.0.0.1:PORT:8080`: the host's 127.0.0.1:PORT reaches a server
/// inside the namespace (nc listening on the guest's port 8080).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_forward_reaches_a_server_inside_the_namespace() {
    let host_port = tools::free_port();
    let forward =
        PortForward { proto: Proto::Tcp, host: SocketAddr::from(([127, 0, 0, 1], host_port)), guest_port: 8080 };
    let Some(guest) = Guest::start("uf", &["nc", "sh"], |c| c.forward(forward)) else { return };
    let server = guest
        .ns
        .cmd("sh")
        .args(["-c", "printf 'from the guest' | nc -N -l 10.0.2.100 8080"])
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let mut server = tools::KillOnDrop(server);
    // Until nc listens, the guest refuses and the host connection is reset.
    let attempt = || async {
        let mut c = tokio::net::TcpStream::connect(("127.0.0.1", host_port)).await?;
        c.write_all(b"from the host").await?;
        c.shutdown().await?;
        let mut reply = Vec::new();
        c.read_to_end(&mut reply).await?;
        Ok::<_, std::io::Error>(reply)
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let reply = loop {
        match within("an attempt", Duration::from_secs(10), attempt()).await {
            Ok(reply) if !reply.is_empty() => break reply,
            _ => {}
        }
        assert!(Instant::now() < deadline, "nc in the namespace never answered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(reply, b"from the guest");
    let mut stdout = server.0.stdout.take().unwrap();
    let got = tokio::task::spawn_blocking(move || {
        let mut out = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut out).unwrap();
        out
    });
    assert_eq!(within("nc's output", Duration::from_secs(10), got).await.unwrap(), "from the host");
    let _ = server.0.wait();
    guest.stop().await;
}

/// `-p udp:127.0.0.1:PORT:9000`: datagrams to the host's 127.0.0.1:PORT
/// reach a UDP server inside the namespace (socat, answering each datagram
/// with the sender's address and port as it saw them): every host peer is seen as the
/// gateway, from one port of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_udp_port_forward_reaches_a_udp_server_inside_the_namespace() {
    let host_port = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let host = SocketAddr::from(([127, 0, 0, 1], host_port));
    let forward = PortForward { proto: Proto::Udp, host, guest_port: 9000 };
    let Some(guest) = Guest::start("uu", &["socat"], |c| c.forward(forward)) else { return };
    let server = guest
        .ns
        .cmd("socat")
        .args(["UDP4-RECVFROM:9000,bind=10.0.2.100,fork", "SYSTEM:echo $SOCAT_PEERADDR $SOCAT_PEERPORT"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let _server = tools::KillOnDrop(server);
    // Until socat binds, the guest's kernel drops (or refuses) the datagrams.
    let ask = |peer: std::sync::Arc<tokio::net::UdpSocket>| async move {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut buf = [0u8; 256];
        loop {
            peer.send_to(b"who am I?", host).await.unwrap();
            if let Ok(Ok((n, from))) = tokio::time::timeout(Duration::from_millis(200), peer.recv_from(&mut buf)).await
            {
                assert_eq!(from, host);
                return String::from_utf8_lossy(&buf[..n]).trim().to_owned();
            }
            assert!(Instant::now() < deadline, "socat in the namespace never answered");
        }
    };
    let a = std::sync::Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let b = std::sync::Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let a1 = ask(a.clone()).await;
    let b1 = ask(b.clone()).await;
    let a2 = ask(a).await;
    for seen in [&a1, &b1, &a2] {
        assert!(seen.starts_with("10.0.2.2 "), "the guest sees the gateway: {seen}");
    }
    assert_eq!(a1, a2, "one host peer, one gateway port");
    assert_ne!(a1, b1, "two host peers, two gateway ports");
    assert!(guest.usernet().stats().bytes_out >= 3 * "10.0.2.2 1\n".len() as u64);
    guest.stop().await;
}

/// An echo server on the host's loopback: each connection's bytes back,
/// then close at its Eof.
async fn serve_echo() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    port
}

/// `--configure` gives the guest IPv6 too: fd00::100/64 and the default
/// route via fd00::2, whose connections reach the host's [::1] (with
/// `--host-loopback --allow ::1/128`), and the gateway answers ping.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configure_gives_the_guest_ipv6_through_the_gateway() {
    let listener = match TcpListener::bind("[::1]:0").await {
        Ok(l) => l,
        Err(e) => skip!(Capability, "no IPv6 loopback on this host: {e}"),
    };
    let port = listener.local_addr().unwrap().port();
    let served = tokio::spawn(async move {
        let (mut s, from) = listener.accept().await.unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        s.write_all(format!("[::1] got {got:?}", got = String::from_utf8_lossy(&got)).as_bytes()).await.unwrap();
        from
    });
    let Some(guest) = Guest::start("u6", &["nc", "sh", "ping"], |c| c.allow("::1/128".parse().unwrap())) else {
        return;
    };
    let addrs = guest.run("ip", &["-6", "-o", "addr", "show", "dev", "tap0"]).await;
    assert_ok("ip -6 addr", &addrs);
    assert!(String::from_utf8_lossy(&addrs.stdout).contains("inet6 fd00::100/64"), "{addrs:?}");
    let script = format!("printf 'over IPv6' | nc -N -w 10 fd00::2 {port}");
    let out = guest.run("sh", &["-c", &script]).await;
    assert_ok("nc -N fd00::2", &out);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "[::1] got \"over IPv6\"");
    let from = within("the [::1] server", Duration::from_secs(10), served).await.unwrap();
    assert!(from.is_ipv6(), "the host side dialled over IPv6: {from}");
    let ping = guest.run("ping", &["-6", "-c", "1", "-W", "5", "fd00::2"]).await;
    assert_ok("ping -6 fd00::2", &ping);
    guest.stop().await;
}

/// 1,000 short connections (50 at a time) from inside the namespace all
/// succeed; afterwards no flow is open and the forwarder's process holds no
/// more descriptors than before (no host socket leaked).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_short_connections_leave_nothing_behind() {
    let Some(guest) = Guest::start("un", &["python3"], |c| c) else { return };
    let port = serve_echo().await;
    let fds_before = open_fds();
    let script = format!(
        r#"
import socket, concurrent.futures
def one(i):
    s = socket.create_connection(("10.0.2.2", {port}), timeout=20)
    msg = b"connection %d " % i * 8
    s.sendall(msg)
    s.shutdown(socket.SHUT_WR)
    got = b""
    while True:
        b = s.recv(65536)
        if not b:
            break
        got += b
    s.close()
    return got == msg
with concurrent.futures.ThreadPoolExecutor(50) as pool:
    ok = sum(pool.map(one, range(1000)))
print("ok", ok)
"#
    );
    let started = Instant::now();
    let out = guest.run("python3", &["-c", &script]).await;
    assert_ok("the python client", &out);
    eprintln!("1000 connections in {:?}", started.elapsed());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok 1000");
    let s = wait_idle(guest.usernet()).await;
    assert_eq!((s.flows_total, s.refused), (1000, 0), "{s}");
    // Host sockets close with their flows: the descriptor count is back.
    let deadline = Instant::now() + Duration::from_secs(10);
    while open_fds() > fds_before && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("descriptors: {fds_before} before, {} after", open_fds());
    assert!(open_fds() <= fds_before, "descriptors grew: {} before, {} after", fds_before, open_fds());
    guest.stop().await;
}

/// A closed port on the host's loopback is refused inside the namespace at
/// once (curl exit 7, "couldn't connect"), not after a timeout and not as
/// a connection that resets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_host_port_is_refused_at_once() {
    let Some(guest) = Guest::start("ur", &["curl"], |c| c) else { return };
    let port = tools::free_port();
    let started = Instant::now();
    let out = guest.run("curl", &["--http1.1", "-sS", "--max-time", "10", &format!("http://10.0.2.2:{port}/")]).await;
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(7), "curl: {}", String::from_utf8_lossy(&out.stderr));
    eprintln!("refused after {took:?} (curl under ip netns exec)");
    assert!(took < Duration::from_secs(1), "refused after {took:?}");
    let s = wait_idle(guest.usernet()).await;
    assert_eq!((s.flows_total, s.refused), (0, 1), "{s}");
    guest.stop().await;
}

/// A UDP echo server on the host's loopback answers a datagram sent from
/// inside the namespace to the gateway; the association shows in the
/// counters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_udp_echo_on_the_host_answers_the_namespace() {
    let Some(guest) = Guest::start("uu", &["python3"], |c| c) else { return };
    let echo = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = echo.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        while let Ok((n, from)) = echo.recv_from(&mut buf).await {
            let mut reply = b"echo: ".to_vec();
            reply.extend_from_slice(&buf[..n]);
            let _ = echo.send_to(&reply, from).await;
        }
    });
    let script = format!(
        r#"
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(5)
for i in range(3):
    s.sendto(b"datagram %d" % i, ("10.0.2.2", {port}))
    data, src = s.recvfrom(65536)
    print(data.decode(), src[0], src[1] == {port})
"#
    );
    let out = guest.run("python3", &["-c", &script]).await;
    assert_ok("the UDP client", &out);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "echo: datagram 0 10.0.2.2 True\necho: datagram 1 10.0.2.2 True\necho: datagram 2 10.0.2.2 True\n",
        "the replies come from the address and port the guest sent to"
    );
    let s = guest.usernet().stats();
    assert_eq!((s.udp_entries, s.bytes_out, s.bytes_in), (1, 30, 48), "{s}");
    guest.stop().await;
}

/// `dig @10.0.2.3` inside the namespace is answered by a dnsmasq on the
/// host's 127.0.0.1 (a test port, `--dns-upstream`) through the forwarder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dig_at_the_dns_address_is_answered_by_the_upstream() {
    if is_root()
        && let Some(m) = tools::missing(&["dnsmasq", "dig"])
    {
        skip!(m.kind, "{}", m.detail);
    }
    let dnsmasq = tools::Dnsmasq::start();
    let Some(guest) = Guest::start("ud", &[], |c| c.dns_upstream(dnsmasq.addr())) else { return };
    dig_until_answered(&guest.ns, &["@10.0.2.3"]).await;
    // TCP to the DNS address goes to the upstream too.
    let out = guest.run("dig", &["@10.0.2.3", "conflux.test", "A", "+short", "+tcp", "+time=2", "+tries=1"]).await;
    assert_ok("dig +tcp", &out);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "192.0.2.55");
    guest.stop().await;
}

/// `dig [extra] conflux.test A` inside `ns` until it answers (bounded to
/// 10 s; see [`tools::dig_until_answered`]), off the runtime's worker.
pub(crate) async fn dig_until_answered(ns: &Netns, extra: &[&str]) {
    tokio::task::block_in_place(|| tools::dig_until_answered(ns, extra, Duration::from_secs(10)));
}

/// A veth pair from the host to `other`: `host_addr` (ADDR/PREFIX) on the
/// host's end, `ns_addr` on the end moved into `other`, both up. The
/// guard deletes the pair on drop, at once: a deleted namespace's devices
/// go only when the kernel gets round to cleaning it up, seconds later
/// under load, and a lingering host end on the same subnet would take the
/// next run's route.
fn veth_to(other: &Netns, host_addr: &str, ns_addr: &str) -> HostLink {
    let (host_end, ns_end) = (conflux_testkit::unique_name("va"), conflux_testkit::unique_name("vb"));
    conflux_testkit::ip(&["link", "add", &host_end, "type", "veth", "peer", "name", &ns_end]).unwrap();
    let link = HostLink { host_end, ns_end };
    other.take_link(&link.ns_end).unwrap();
    conflux_testkit::ip(&["addr", "add", host_addr, "dev", &link.host_end]).unwrap();
    conflux_testkit::ip(&["link", "set", &link.host_end, "up"]).unwrap();
    other.ip(&["addr", "add", ns_addr, "dev", &link.ns_end]).unwrap();
    other.ip(&["link", "set", &link.ns_end, "up"]).unwrap();
    link
}

/// [`veth_to`]'s pair, deleted on drop.
struct HostLink {
    host_end: String,
    ns_end: String,
}

impl Drop for HostLink {
    fn drop(&mut self) {
        let _ = conflux_testkit::ip(&["link", "del", &self.host_end]);
    }
}

/// With `--allow 127.0.0.0/8`, a server in a second namespace of the
/// test's, reachable from the host over a veth pair the test made, is
/// refused inside the guest at once (the policy matches the host-side
/// destination: nothing is dialled), while the host itself reaches it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_outside_allow_is_refused_at_once() {
    let Some(guest) = Guest::start("ua", &["curl", "python3"], |c| c) else { return };
    let other = Netns::create("ub").expect("a second namespace");
    let _link = veth_to(&other, "10.201.0.1/30", "10.201.0.2/30");
    // Answers every connection (a one-shot server gone after the host's
    // probe would refuse the guest too, whatever the policy said).
    let script = "import socket\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\ns.bind(('10.201.0.2',8080))\ns.listen(16)\nwhile True:\n    c,_=s.accept()\n    c.sendall(b'HTTP/1.0 200 OK\\r\\n\\r\\nup')\n    c.close()\n";
    let server = other.cmd("python3").args(["-c", script]).stdin(Stdio::null()).stdout(Stdio::null()).spawn().unwrap();
    let _server = tools::KillOnDrop(server);
    // The host reaches it (so a refusal inside is the policy's).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::net::TcpStream::connect("10.201.0.2:8080").await {
            Ok(_) => break,
            Err(e) => assert!(Instant::now() < deadline, "the second namespace's server: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let started = Instant::now();
    let out = guest.run("curl", &["--http1.1", "-sS", "--max-time", "10", "http://10.201.0.2:8080/"]).await;
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(7), "curl: {}", String::from_utf8_lossy(&out.stderr));
    eprintln!("refused after {took:?} (curl under ip netns exec)");
    assert!(took < Duration::from_secs(1), "refused after {took:?}");
    let s = wait_idle(guest.usernet()).await;
    assert_eq!((s.flows_total, s.refused), (0, 1), "{s}");
    guest.stop().await;
    drop(other);
}

/// `iperf3 -c 10.0.2.2 -t 2 EXTRA` inside `ns` against a one-shot iperf3
/// server on the host's 127.0.0.1, which must succeed (see
/// [`tools::iperf3_through`]), off the runtime's worker.
pub(crate) async fn iperf3_through_the_gateway(ns: &Netns, extra: &[&str]) -> tools::Iperf3Report {
    let report = tokio::task::block_in_place(|| tools::iperf3_through(ns, "10.0.2.2", extra));
    eprintln!("iperf3 {extra:?}: {report}");
    report
}

/// iperf3 inside the namespace against an iperf3 server on the host's
/// loopback, through the gateway: out of the namespace, into it (`-R`) and
/// four streams (`-P 4`), 2 s each (MTU 65520).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iperf3_runs_both_ways_through_the_gateway() {
    if is_root()
        && let Some(m) = tools::missing(&["iperf3"])
    {
        skip!(m.kind, "{}", m.detail);
    }
    let Some(guest) = Guest::start("ui", &[], |c| c.mtu(65520)) else { return };
    for extra in [&[][..], &["-R"][..], &["-P", "4"][..]] {
        iperf3_through_the_gateway(&guest.ns, extra).await;
    }
    let s = wait_idle(guest.usernet()).await;
    assert_eq!(s.refused, 0, "{s}");
    guest.stop().await;
}

/// The kernel as the guest answers our stack's keepalive probes: an idle
/// connection from inside the namespace outlives several keepalive
/// deadlines (1 s, 1 s, 2 probes: 3 s). Once the guest stops answering
/// (its address flushed: the kernel drops what reaches it, no reset, as
/// a VM that vanished) the flow ends at that deadline, the host's server
/// reads a reset and the counters say it timed out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kernel_guests_idle_flow_lives_on_keepalives_and_ends_when_it_falls_silent() {
    let ka = conflux_tcp::Keepalive::new(Duration::from_secs(1), Duration::from_secs(1), 2);
    let Some(guest) = Guest::start("uk", &["nc", "sh"], |c| c.guest_keepalive(Some(ka))) else { return };
    let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = server.local_addr().unwrap().port();
    // An idle client: nc holds the connection while its input stays open.
    let mut client = guest
        .ns
        .cmd("sh")
        .args(["-c", &format!("sleep 60 | nc 10.0.2.2 {port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (mut s, _) = within("the guest's connection", Duration::from_secs(10), server.accept()).await.unwrap();
    let mut byte = [0u8; 1];
    let idle = tokio::time::timeout(Duration::from_secs(6), s.read(&mut byte)).await;
    assert!(idle.is_err(), "the idle flow ended while the guest was alive: {idle:?}");
    assert_eq!(guest.usernet().stats().flows_open, 1);
    let flush = Command::new("ip").args(["-n", guest.ns.name(), "addr", "flush", "dev", "tap0"]).output().unwrap();
    assert_ok("ip addr flush", &flush);
    let cut = Instant::now();
    let read = within("the server's end", Duration::from_secs(10), s.read(&mut byte)).await;
    let took = cut.elapsed();
    assert!(
        read.as_ref().is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "the host side is reset: {read:?}"
    );
    assert!(took <= Duration::from_secs(5), "ended {took:?} after the guest fell silent (the deadline: 3 s)");
    let s = wait_idle(guest.usernet()).await;
    assert_eq!((s.flows_total, s.flows_failed, s.flows_timed_out), (1, 1, 1), "{s}");
    let _ = client.kill();
    let _ = client.wait();
    guest.stop().await;
}

/// A host peer that vanishes silently while the flow idles: the server in
/// a second namespace of the test's (reached from the host over a veth
/// pair the test made, on a subnet of its own) holds the connection from
/// inside the guest idle, the host connection's kernel keepalive (1 s, 1 s,
/// 2 probes: 3 s) is answered while it lives; then its address is flushed
/// (its kernel drops what reaches it, no reset) and the guest's connection
/// is reset at the keepalive deadline, the flow counted timed out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_host_peer_resets_the_kernel_guests_idle_flow() {
    a_silent_host_peer_resets_the_kernel_guest(false).await;
}

/// A host peer that vanishes silently while the guest is sending to it:
/// keepalive never probes a connection with data in flight, so the host
/// connection's user timeout (the host keepalive's deadline, 1 s + 2 x 1 s
/// here) ends the flow, and the guest's connection is reset; without it the
/// flow would wait out the kernel's retransmissions, about 15 minutes. The
/// server reads everything until its address is flushed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_host_peer_resets_the_kernel_guests_busy_flow() {
    a_silent_host_peer_resets_the_kernel_guest(true).await;
}

/// The two tests above: the guest's client idles, or (`busy`) sends 1 KiB
/// every 10 ms, to a server in a second namespace that falls silent.
async fn a_silent_host_peer_resets_the_kernel_guest(busy: bool) {
    let (tags, net) = if busy { (("ux", "uy"), 8) } else { (("uv", "uw"), 4) };
    let (subnet, host_addr, server_addr) =
        (format!("10.201.0.{net}/30"), format!("10.201.0.{}/30", net + 1), format!("10.201.0.{}", net + 2));
    let ka = conflux_tcp::Keepalive::new(Duration::from_secs(1), Duration::from_secs(1), 2);
    let allow = |c: UsernetConfig| c.allow(subnet.parse().unwrap()).host_keepalive(Some(ka));
    let Some(guest) = Guest::start(tags.0, &["python3"], allow) else { return };
    let other = Netns::create(tags.1).expect("a second namespace");
    let link = veth_to(&other, &host_addr, &format!("{server_addr}/30"));
    // Holds every connection it accepts, silent, or reads (and drops)
    // everything on each.
    let serve = if busy {
        "def serve(c):\n    while c.recv(65536):\n        pass\n"
    } else {
        "def serve(c):\n    threading.Event().wait()\n"
    };
    let script = format!(
        "import socket,threading\n{serve}s=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\ns.bind(('{server_addr}',8080))\ns.listen(16)\nwhile True:\n    c,_=s.accept()\n    threading.Thread(target=serve,args=(c,),daemon=True).start()\n"
    );
    let server = other.cmd("python3").args(["-c", &script]).stdin(Stdio::null()).stdout(Stdio::null()).spawn().unwrap();
    let _server = tools::KillOnDrop(server);
    // The host reaches it before the guest tries (the veth's neighbours
    // resolved, the server listening).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match tokio::net::TcpStream::connect(format!("{server_addr}:8080")).await {
            Ok(_) => break,
            Err(e) => assert!(Instant::now() < deadline, "the second namespace's server: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The guest's client: connects (retrying until the server listens),
    // then waits for the end of the stream (or sends for at most 30 s) and
    // says how it ended.
    let then = if busy {
        "end=time.time()+30\ntry:\n    while time.time()<end:\n        s.sendall(b'x'*1024)\n        time.sleep(0.01)\n    print('still open')\nexcept (ConnectionResetError,BrokenPipeError):\n    print('reset')\nexcept OSError as e:\n    print('error', e)\n"
    } else {
        "s.settimeout(30)\ntry:\n    print('eof' if not s.recv(1) else 'data')\nexcept ConnectionResetError:\n    print('reset')\n"
    };
    let client = format!(
        "import socket,time\nfor i in range(100):\n    try:\n        s=socket.create_connection(('{server_addr}',8080),timeout=5)\n        break\n    except OSError:\n        time.sleep(0.1)\n{then}"
    );
    let client =
        guest.ns.cmd("python3").args(["-c", &client]).stdin(Stdio::null()).stdout(Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while guest.usernet().stats().flows_open == 0 {
        assert!(Instant::now() < deadline, "no flow: {}", guest.usernet().stats());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Alive for a while: idle for two deadlines (the peer's kernel answers
    // the probes), or with data moving and acknowledged.
    tokio::time::sleep(Duration::from_secs(if busy { 1 } else { 6 })).await;
    assert_eq!(guest.usernet().stats().flows_open, 1, "ended while the host peer was alive");
    other.ip(&["addr", "flush", "dev", &link.ns_end]).unwrap();
    let cut = Instant::now();
    let s = wait_idle(guest.usernet()).await;
    let took = cut.elapsed();
    assert_eq!((s.flows_total, s.flows_failed, s.flows_timed_out), (1, 1, 1), "{s}");
    assert!(took <= Duration::from_secs(6), "ended {took:?} after the host peer fell silent (the deadline: 3 s)");
    let out = tokio::task::spawn_blocking(move || client.wait_with_output()).await.unwrap().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "reset", "the guest's connection is reset");
    guest.stop().await;
    drop(other);
}

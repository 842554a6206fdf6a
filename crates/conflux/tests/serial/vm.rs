//! `conflux usernet --listen URI` and `--connect URI` with the kernel as a
//! VM-like guest: a TAP device in a test namespace, bridged by the test to
//! the carrier in QEMU's stream framing (a 4-byte big-endian length before
//! each Ethernet frame), as a hypervisor does with its guest's NIC. The
//! guest gets its address from our DHCP server (busybox `udhcpc` with a
//! script that only records) and fetches from a server on the host's
//! 127.0.0.1 through the gateway 10.0.2.2 with curl. The forwarder reaches
//! only the host's loopback (`--host-loopback --allow 127.0.0.0/8`).

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use conflux_flow::BoxFlow;
use conflux_hvsock::{Family, FramingConfig, RawFlow};
use conflux_testkit::{Netns, TempDir, have_command, is_root, skip, tools};

use super::bridge::{Bridge, runtime, unix_carrier};
use super::{Forwarder, MaybeNs, conflux};

/// The forwarder's options in every test here: the guest reaches the host's
/// loopback through the gateway, and nothing else.
const SAFE: [&str; 3] = ["--host-loopback", "--allow", "127.0.0.0/8"];

/// The bound on one wait of these tests.
const WAIT: Duration = Duration::from_secs(10);

/// Root, ip, curl, udhcpc and a namespace, or none after a visible skip.
fn vm_prerequisites() -> MaybeNs {
    if !is_root() {
        skip!(Root, "a namespace and a TAP device need root");
    }
    if !have_command("ip") {
        skip!(Iproute2, "ip not on PATH");
    }
    if !have_command("curl") {
        skip!(Curl, "curl not on PATH (cargo xtask install)");
    }
    if !have_command("udhcpc") {
        skip!(Capability, "udhcpc (busybox) not on PATH (cargo xtask install)");
    }
    match Netns::create("v") {
        Ok(ns) => MaybeNs(Some(ns)),
        Err(e) => skip!(Netns, "{e}"),
    }
}

/// What the guest's DHCP client was offered, as its script recorded it.
fn dhcp(ns: &Netns, tap: &str, dir: &Path) -> String {
    let script = dir.join("udhcpc.sh");
    let record = dir.join("lease");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n# Records what was offered; configures nothing.\n\
             echo \"$1 ip=$ip subnet=$subnet router=$router dns=$dns mtu=$mtu lease=$lease serverid=$serverid\" >> {}\n",
            record.display()
        ),
    )
    .unwrap();
    let chmod = Command::new("chmod").arg("+x").arg(&script).status().unwrap();
    assert!(chmod.success());
    let out = ns
        .cmd("udhcpc")
        .args(["-f", "-q", "-n", "-t", "5", "-T", "1", "-i", tap, "-s"])
        .arg(&script)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let recorded = std::fs::read_to_string(&record).unwrap_or_default();
    assert!(out.status.success(), "udhcpc: {out:?}\nrecorded: {recorded}");
    recorded.lines().find(|l| l.starts_with("bound ")).unwrap_or_else(|| panic!("no lease: {recorded}")).to_owned()
}

/// Configures the guest with the leased address (as the default script
/// would) and the default route via the gateway.
fn configure(ns: &Netns, tap: &str, addr: &str) {
    ns.ip(&["addr", "add", addr, "dev", tap]).unwrap();
    ns.ip(&["route", "add", "default", "via", "10.0.2.2", "dev", tap]).unwrap();
}

/// `curl http://10.0.2.2:PORT/` in the guest: the body.
fn curl(ns: &Netns, port: u16) -> String {
    let out = ns
        .cmd("curl")
        .args(["-sS", "--max-time", "10", &format!("http://10.0.2.2:{port}/")])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "curl: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// An HTTP server on the host's 127.0.0.1 answering every request with `body`.
fn http_server(body: &'static str) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut s in listener.incoming().map_while(Result::ok) {
            let _ = s.set_read_timeout(Some(WAIT));
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(n @ 1..) => req.extend_from_slice(&buf[..n]),
                    _ => break,
                }
            }
            let head = format!("HTTP/1.0 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
            let _ = s.write_all(head.as_bytes()).and_then(|()| s.write_all(body.as_bytes()));
        }
    });
    port
}

/// The descriptors `pid` holds.
fn fds_of(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(Iterator::count).unwrap_or(0)
}

/// A dnsmasq for `--dns-upstream`, or none after a skip.
struct MaybeDns(Option<tools::Dnsmasq>);

impl conflux_testkit::SkipReturn for MaybeDns {
    fn skipped() -> MaybeDns {
        MaybeDns(None)
    }
}

/// iperf3, dnsmasq and dig, or none after a visible skip: a dnsmasq for
/// `--dns-upstream` (see [`tools::Dnsmasq`]).
fn iperf3_and_dns_prerequisites() -> MaybeDns {
    if let Some(m) = tools::missing(&["iperf3", "dnsmasq", "dig"]) {
        skip!(m.kind, "{}", m.detail);
    }
    MaybeDns(Some(tools::Dnsmasq::start()))
}

/// `dig @10.0.2.3 conflux.test A` in the guest until it answers (bounded by `WAIT`).
fn dig_through_the_dns_address(ns: &Netns) {
    tools::dig_until_answered(ns, &["@10.0.2.3"], WAIT);
}

/// `iperf3 -c 10.0.2.2 -t 2` in the guest against a one-shot iperf3 server
/// on the host's 127.0.0.1 (see [`tools::iperf3_through`]).
fn iperf3_through_the_gateway(ns: &Netns) -> tools::Iperf3Report {
    tools::iperf3_through(ns, "10.0.2.2", &[])
}

#[test]
fn usernet_listen_serves_a_vm_on_a_unix_socket_its_address_by_dhcp() {
    let MaybeNs(Some(ns)) = vm_prerequisites() else { return };
    let MaybeDns(Some(dnsmasq)) = iperf3_and_dns_prerequisites() else { return };
    let upstream = dnsmasq.addr().to_string();
    let dir = TempDir::new("vm");
    let sock = dir.path().join("vm.sock");
    let port = http_server("through the stream carrier");
    let uri = format!("unix://{}", sock.display());
    let mut fwd = Forwarder::spawn(&[&["usernet", "--listen", &uri, "--dns-upstream", &upstream], &SAFE[..]].concat());
    fwd.wait_line(&format!("listening on {uri}"));
    let rt = runtime();
    let bridge = Bridge::start(&rt, &ns, unix_carrier(&rt, &sock, false));
    fwd.wait_line("guest 1 from");
    let lease = dhcp(&ns, &bridge.tap, dir.path());
    for offered in ["ip=10.0.2.100 ", "subnet=255.255.255.0 ", "router=10.0.2.2 ", "dns=10.0.2.3 "] {
        assert!(lease.contains(offered), "{offered} in {lease}");
    }
    configure(&ns, &bridge.tap, "10.0.2.100/24");
    assert_eq!(curl(&ns, port), "through the stream carrier");
    // iperf3 -t 2 through the gateway, and DNS at the address DHCP gave.
    let receiver = iperf3_through_the_gateway(&ns);
    eprintln!("iperf3 through `conflux usernet --listen unix://`: {receiver}");
    dig_through_the_dns_address(&ns);
    // SIGTERM: the guest stopped, the counters printed, exit 0, the socket path removed.
    fwd.signal("-TERM");
    let status = fwd.wait_exit();
    assert!(status.success(), "{status:?}");
    fwd.wait_line(&format!("guest 1 from {uri} stopped after"));
    let last = fwd.wait_line("usernet: flows");
    // curl's flow and iperf3's two (control and data), at least; none open.
    let total: Option<u64> = last
        .strip_prefix("usernet: flows open 0 (total ")
        .and_then(|rest| rest.split(')').next())
        .and_then(|n| n.parse().ok());
    assert!(total.is_some_and(|n| n >= 3), "{last}");
    assert!(!sock.exists(), "{} is still there", sock.display());
}

#[test]
fn usernet_listen_serves_a_vm_over_hybrid_vsock_with_the_shutdown_framing() {
    let MaybeNs(Some(ns)) = vm_prerequisites() else { return };
    let MaybeDns(Some(dnsmasq)) = iperf3_and_dns_prerequisites() else { return };
    let upstream = dnsmasq.addr().to_string();
    let dir = TempDir::new("vm");
    let vmm = dir.path().join("v.sock");
    let port = http_server("through hybrid vsock, framed");
    // The socket a Firecracker VMM connects to when its guest dials host
    // port 1024: `<path>_1024`.
    let uri = format!("fc-vsock://{}?port=1024&framing=shutdown", vmm.display());
    let fwd = Forwarder::spawn(&[&["usernet", "--listen", &uri, "--dns-upstream", &upstream], &SAFE[..]].concat());
    fwd.wait_line("listening on");
    let rt = runtime();
    let carrier = unix_carrier(&rt, &dir.path().join("v.sock_1024"), true);
    let mut bridge = Bridge::start(&rt, &ns, carrier);
    fwd.wait_line("guest 1 from");
    let lease = dhcp(&ns, &bridge.tap, dir.path());
    assert!(lease.contains("ip=10.0.2.100 ") && lease.contains("router=10.0.2.2 "), "{lease}");
    configure(&ns, &bridge.tap, "10.0.2.100/24");
    assert_eq!(curl(&ns, port), "through hybrid vsock, framed");
    let receiver = iperf3_through_the_gateway(&ns);
    eprintln!("iperf3 through `conflux usernet --listen fc-vsock://...?framing=shutdown`: {receiver}");
    dig_through_the_dns_address(&ns);
    // The hypervisor closes its end (a ShutdownWrite in the framing): the guest ended, the next awaited.
    bridge.close();
    let end = fwd.wait_line("ended after");
    assert!(end.contains("qemu stream: the peer closed the stream"), "{end}");
    fwd.wait_line("waiting for the next guest");
}

#[test]
fn usernet_connect_reaches_a_frame_server_and_connects_again_after_an_end() {
    let MaybeNs(Some(ns)) = vm_prerequisites() else { return };
    let dir = TempDir::new("vm");
    let sock = dir.path().join("frames.sock");
    let port = http_server("the binary connected");
    let rt = runtime();
    let bind = || {
        let _in_rt = rt.enter();
        tokio::net::UnixListener::bind(&sock).unwrap()
    };
    let accept = |listener: &tokio::net::UnixListener, what: &str| {
        let (stream, _) = rt
            .block_on(async { tokio::time::timeout(WAIT, listener.accept()).await })
            .unwrap_or_else(|_| panic!("no {what} connection"))
            .unwrap();
        BoxFlow::new(conflux_flow::FromTokio::new(stream))
    };
    let listener = bind();
    let uri = format!("unix://{}", sock.display());
    let mut fwd = Forwarder::spawn(&[&["usernet", "--connect", &uri], &SAFE[..]].concat());
    let bridge = Bridge::start(&rt, &ns, accept(&listener, "first"));
    fwd.wait_line("guest 1 from");
    let lease = dhcp(&ns, &bridge.tap, dir.path());
    assert!(lease.contains("ip=10.0.2.100 "), "{lease}");
    configure(&ns, &bridge.tap, "10.0.2.100/24");
    assert_eq!(curl(&ns, port), "the binary connected");
    // The server ends the carrier and stops listening: conflux connects
    // again 100 ms later, is refused, and tries again after 200 ms, 400 ms, ...
    drop(listener);
    drop(bridge);
    fwd.wait_line("ended after");
    fwd.wait_line("again in 100ms");
    let refused = fwd.wait_line("again in 200ms");
    assert!(refused.contains(&format!("cannot connect to {uri}")) && refused.contains("refused"), "{refused}");
    // The server is back: the next try connects.
    std::fs::remove_file(&sock).unwrap();
    let listener = bind();
    let bridge = Bridge::start(&rt, &ns, accept(&listener, "second"));
    fwd.wait_line("guest 2 from");
    configure(&ns, &bridge.tap, "10.0.2.100/24");
    assert_eq!(curl(&ns, port), "the binary connected");
    fwd.signal("-TERM");
    let status = fwd.wait_exit();
    assert!(status.success(), "{status:?}");
    assert!(fwd.wait_line("stopped after").contains("guest 2 from unix://"));
    assert!(fwd.wait_line("usernet: flows").starts_with("usernet: flows open 0 (total 1)"));
}

#[test]
fn usernet_listen_accepts_the_next_vm_after_one_vanished_mid_frame_and_closes_its_flows_and_forwards() {
    let MaybeNs(Some(ns)) = vm_prerequisites() else { return };
    if !have_command("nc") {
        skip!(Netcat, "nc (netcat-openbsd) not on PATH (cargo xtask install)");
    }
    let dir = TempDir::new("vm");
    let sock = dir.path().join("vm.sock");
    let port = http_server("the next guest");
    // A host server whose connection from the first guest stays open until the forwarder closes it.
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let held_port = held.local_addr().unwrap().port();
    let (closed_tx, closed) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = held.accept() {
            let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
            let mut buf = [0u8; 64];
            if let Ok(1..) = s.read(&mut buf) {
                let _ = closed_tx.send("open");
            }
            while let Ok(1..) = s.read(&mut buf) {}
            let _ = closed_tx.send("closed");
        }
    });
    let uri = format!("unix://{}", sock.display());
    // A port forward into whichever guest is there (bound again for each).
    let published = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let forward = format!("{published}:8080");
    let fwd = Forwarder::spawn(&[&["usernet", "--listen", &uri, "-p", &forward], &SAFE[..]].concat());
    fwd.wait_line("listening on");
    let fds_before = fds_of(fwd.child.id());
    let rt = runtime();
    let mut first = Bridge::start(&rt, &ns, unix_carrier(&rt, &sock, false));
    fwd.wait_line("guest 1 from");
    configure(&ns, &first.tap, "10.0.2.100/24");
    let mut nc = ns
        .cmd("nc")
        .args(["10.0.2.2", &held_port.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    nc.stdin.as_mut().unwrap().write_all(b"held\n").unwrap();
    assert_eq!(closed.recv_timeout(WAIT), Ok("open"));
    first.vanish_mid_frame();
    let end = fwd.wait_line("ended after");
    assert!(end.contains("guest 1 from") && end.contains("stream truncated"), "{end}");
    assert!(end.contains("1400 frame bytes missing") && end.contains("flows open 0 (total 1)"), "{end}");
    assert_eq!(closed.recv_timeout(WAIT), Ok("closed"), "the guest's flow was closed on the host");
    fwd.wait_line("waiting for the next guest");
    let fds_after = fds_of(fwd.child.id());
    assert_eq!(fds_after, fds_before, "descriptors before the guest and after it ended");
    let _ = nc.kill();
    let _ = nc.wait();
    drop(first);
    let second = Bridge::start(&rt, &ns, unix_carrier(&rt, &sock, false));
    fwd.wait_line("guest 2 from");
    configure(&ns, &second.tap, "10.0.2.100/24");
    assert_eq!(curl(&ns, port), "the next guest");
    // The host's 127.0.0.1:PUBLISHED reaches the second guest's port 8080.
    let mut server = ns.cmd("sh").args(["-c", "printf forwarded | nc -N -l 10.0.2.100 8080"]).spawn().unwrap();
    let deadline = Instant::now() + WAIT;
    let got = loop {
        let mut got = String::new();
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", published)) {
            let _ = s.set_read_timeout(Some(WAIT));
            let _ = s.read_to_string(&mut got);
        }
        if !got.is_empty() || Instant::now() > deadline {
            break got;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(got, "forwarded");
    let _ = server.kill();
    let _ = server.wait();
}

#[test]
fn usernet_vm_errors_name_what_was_wrong() {
    let dir = TempDir::new("vm");
    let sock = dir.path().join("vm.sock");
    let run = |args: &[&str]| {
        let out = conflux().args(args).stdin(Stdio::null()).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or_default().to_owned())
    };
    // Usage (2): no guest, two guests, a bad URI, a TAP option with a VM.
    let (code, err) = run(&["usernet", "--host-loopback"]);
    assert_eq!(
        (code, err.as_str()),
        (Some(2), "conflux: usernet needs a guest: --netns PID|PATH, --listen URI or --connect URI")
    );
    let (code, err) = run(&["usernet", "--listen", "unix:///a.sock", "--connect", "unix:///b.sock"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.starts_with("conflux: --listen and --connect: give only one of"), "{err}");
    let (code, err) = run(&["usernet", "--listen", "unix://"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.starts_with("conflux: bad --listen URI `unix://`"), "{err}");
    let (code, err) = run(&["usernet", "--connect", "unix:///a.sock", "--configure"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.starts_with("conflux: --configure is for --netns only"), "{err}");
    // Runtime (1): an unreachable carrier, a socket path in use.
    let missing = format!("unix://{}", dir.path().join("nobody.sock").display());
    let (code, err) = run(&["usernet", "--connect", &missing]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.starts_with(&format!("conflux: cannot connect to {missing}: ")), "{err}");
    let uri = format!("unix://{}", sock.display());
    let fwd = Forwarder::spawn(&["usernet", "--listen", &uri]);
    fwd.wait_line("listening on");
    let (code, err) = run(&["usernet", "--listen", &uri]);
    assert_eq!(
        (code, err),
        (Some(1), format!("conflux: cannot listen on {}: a listener is there already", sock.display()))
    );
}

#[test]
fn usernet_connect_dials_a_vm_through_hybrid_vsock_with_the_shutdown_framing() {
    let MaybeNs(Some(ns)) = vm_prerequisites() else { return };
    let dir = TempDir::new("vm");
    let port = http_server("CONNECT 1024, then frames");
    let rt = runtime();
    // A Firecracker-style VMM socket: conflux sends `CONNECT 1024\n`, the
    // guest's listener on port 1024 gets the socket.
    let (vmm, guest_port) = {
        let _in_rt = rt.enter();
        let vmm = conflux_hvsock::testing::FakeVmm::start(dir.path().join("vmm.sock")).unwrap();
        let guest_port = vmm.guest_listener(1024, 4);
        (vmm, guest_port)
    };
    let uri = format!("fc-vsock://{}?port=1024&framing=shutdown", vmm.path().display());
    let mut fwd = Forwarder::spawn(&[&["usernet", "--connect", &uri], &SAFE[..]].concat());
    let (sock, _) = rt
        .block_on(async { tokio::time::timeout(WAIT, conflux_hvsock::FamilyListener::accept(&guest_port)).await })
        .expect("conflux connected through the VMM")
        .unwrap();
    let carrier = BoxFlow::new(RawFlow::new(sock).into_framed(FramingConfig::default()));
    let bridge = Bridge::start(&rt, &ns, carrier);
    fwd.wait_line("guest 1 from fc-vsock://");
    let lease = dhcp(&ns, &bridge.tap, dir.path());
    assert!(lease.contains("ip=10.0.2.100 ") && lease.contains("dns=10.0.2.3 "), "{lease}");
    configure(&ns, &bridge.tap, "10.0.2.100/24");
    assert_eq!(curl(&ns, port), "CONNECT 1024, then frames");
    fwd.signal("-TERM");
    let status = fwd.wait_exit();
    assert!(status.success(), "{status:?}");
}

#[test]
fn usernet_listen_serves_a_vm_over_vsock_loopback() {
    let MaybeNs(Some(ns)) = vm_prerequisites() else { return };
    if !Path::new("/dev/vsock").exists() {
        skip!(NoVsockLoopback, "no /dev/vsock on this machine");
    }
    let port = http_server("over vsock");
    let fwd = Forwarder::spawn(&[&["usernet", "--listen", "vsock://:0"], &SAFE[..]].concat());
    let line = fwd.wait_line("listening on vsock://");
    let rest = &line[line.find("vsock://").unwrap() + "vsock://".len()..];
    let vport: u32 = rest.split(':').nth(1).and_then(|p| p.parse().ok()).unwrap_or_else(|| panic!("{line}"));
    let rt = runtime();
    // CID 1, the local loopback (never CID 2), probed once with 300 ms.
    let dialled = rt.block_on(conflux_hvsock::VsockFamily.connect(
        &conflux_hvsock::VsockAddr::new(conflux_hvsock::VsockAddr::CID_LOCAL, vport),
        Some(Duration::from_millis(300)),
    ));
    let sock = match dialled {
        Ok(sock) => sock,
        Err(e) => skip!(NoVsockLoopback, "connect to CID 1 failed: {e}"),
    };
    let bridge = Bridge::start(&rt, &ns, BoxFlow::new(RawFlow::new(sock)));
    fwd.wait_line("guest 1 from");
    configure(&ns, &bridge.tap, "10.0.2.100/24");
    assert_eq!(curl(&ns, port), "over vsock");
}

#[test]
fn usernet_listen_stdio_serves_one_guest_on_stdin_and_stdout() {
    let mut child = conflux()
        .args(["usernet", "--listen", "stdio:"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Who has 10.0.2.2? Tell 10.0.2.100 (02:00:00:00:00:01), in QEMU stream framing.
    let guest_mac = [2, 0, 0, 0, 0, 1];
    let mut arp = vec![0xff; 6];
    arp.extend_from_slice(&guest_mac);
    arp.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    arp.extend_from_slice(&guest_mac);
    arp.extend_from_slice(&[10, 0, 2, 100, 0, 0, 0, 0, 0, 0, 10, 0, 2, 2]);
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&(arp.len() as u32).to_be_bytes()).unwrap();
    stdin.write_all(&arp).unwrap();
    stdin.flush().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let (tx, frames) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut len = [0u8; 4];
        while stdout.read_exact(&mut len).is_ok() {
            let mut frame = vec![0u8; u32::from_be_bytes(len) as usize];
            if stdout.read_exact(&mut frame).is_err() || tx.send(frame).is_err() {
                break;
            }
        }
    });
    // Router advertisements may come first; the ARP reply is from the gateway's MAC.
    let deadline = Instant::now() + WAIT;
    let reply = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let frame = frames.recv_timeout(left).expect("an ARP reply on stdout");
        if frame.len() >= 42 && frame[12..14] == [0x08, 0x06] {
            break frame;
        }
    };
    assert_eq!(&reply[..6], &guest_mac, "to the guest");
    assert_eq!(&reply[20..22], &[0, 2], "an ARP reply");
    assert_eq!(&reply[22..32], &[0x52, 0x55, 0x0a, 0x00, 0x02, 0x02, 10, 0, 2, 2], "10.0.2.2 is at 52:55:0a:00:02:02");
    // The hypervisor's end (stdin's Eof) ends the guest, and conflux with it.
    drop(stdin);
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "conflux did not exit after stdin's end");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success(), "{status:?}");
}

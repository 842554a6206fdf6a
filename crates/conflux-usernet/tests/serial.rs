//! Root tests with peers nobody here wrote: passt, a real QEMU-stream
//! peer, run inside a namespace the test makes whose only link is a veth
//! pair with both ends inside it (nothing it forwards leaves the machine);
//! and the kernel as a guest on a TAP inside a namespace, configured by
//! busybox udhcpc (with a script of the test's that only records) and by
//! SLAAC. Modules: `netns` (the forwarder serving a namespace, slirp4netns's
//! job) and `vm` (the kernel as a VM-like guest behind a stream carrier,
//! served by `Usernet::spawn_vm`). xtask runs this target with
//! `--test-threads=1`.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use conflux_flow::{FlowExt, FromTokio};
use conflux_netstack::{FrameBuf, FrameDevice, NetStack, StackConfig};
use conflux_tcp::{ConnectOptions, TcpStack};
use conflux_testkit::{Netns, TIMEOUT, TempDir, have_command, is_root, skip, within};
use conflux_usernet::StreamDevice;

#[path = "serial/netns.rs"]
mod netns;
#[path = "serial/vm.rs"]
mod vm;

/// The guest's MAC (QEMU's default).
const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
/// The namespace's interface address: what passt gives the guest.
const NS_ADDR: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 1);
/// The namespace's default gateway: passt maps it to the namespace's loopback.
const NS_GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 254);

/// A namespace with an interface 10.200.0.1/24 (one end of a veth pair
/// whose other end is in the namespace too) and a default route via
/// 10.200.0.254, and passt serving a unix socket from inside it; the
/// namespace (with passt and the servers in it) goes on drop.
struct Passt {
    sock: PathBuf,
    /// passt and the servers: killed and reaped on drop.
    procs: Mutex<Vec<Child>>,
    // Dropped first: its drop kills what runs inside.
    ns: Netns,
    _dir: TempDir,
}

impl Passt {
    fn start() -> Result<Passt, String> {
        let ns = Netns::create("p")?;
        // A veth pair with both ends inside (the `dummy` module may be missing).
        ns.ip(&["link", "add", "d0", "type", "veth", "peer", "name", "d1"])?;
        ns.ip(&["addr", "add", "10.200.0.1/24", "dev", "d0"])?;
        ns.ip(&["link", "set", "d1", "up"])?;
        ns.ip(&["link", "set", "d0", "up"])?;
        ns.ip(&["route", "add", "default", "via", "10.200.0.254"])?;
        let dir = TempDir::new("passt");
        let sock = dir.path().join("passt.sock");
        let passt = ns
            .cmd("passt")
            .args(["--runas", "0", "-f", "-s"])
            .arg(&sock)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("spawn passt: {e}"))?;
        Ok(Passt { sock, procs: Mutex::new(vec![passt]), ns, _dir: dir })
    }

    /// A one-shot TCP server on the namespace's 127.0.0.1:`port` sending `len` bytes of `i % 251`.
    fn serve(&self, port: u16, len: usize) {
        let script = format!(
            "import socket\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\ns.bind(('127.0.0.1',{port}))\ns.listen(1)\nprint('up',flush=True)\nc,_=s.accept()\nc.sendall(bytes(i%251 for i in range({len})))\nc.close()\n"
        );
        let mut child = self
            .ns
            .cmd("python3")
            .args(["-c", &script])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn python3");
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
        assert_eq!(line.trim(), "up");
        self.procs.lock().unwrap().push(child);
    }

    async fn connect(&self) -> StreamDevice {
        let stream = within("passt's socket", TIMEOUT, async {
            loop {
                match tokio::net::UnixStream::connect(&self.sock).await {
                    Ok(s) => break s,
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        })
        .await;
        StreamDevice::new(FromTokio::new(stream), 65520)
    }
}

impl Drop for Passt {
    fn drop(&mut self) {
        for child in self.procs.get_mut().unwrap().iter_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Skips the test (visibly) unless it can run passt in a namespace.
macro_rules! require_passt {
    () => {
        if !is_root() {
            skip!(Root, "namespaces need root");
        }
        if !have_command("ip") {
            skip!(Iproute2, "ip not on PATH");
        }
        if !have_command("passt") || !have_command("python3") {
            skip!(Capability, "passt or python3 not on PATH (apt-get install passt)");
        }
    };
}

/// The ones' complement sum of `parts`, folded and inverted.
fn csum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    for p in parts {
        for c in p.chunks(2) {
            sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A DHCPDISCOVER from `MAC` as a broadcast Ethernet frame (0.0.0.0:68 -> 255.255.255.255:67).
fn discover_frame(xid: u32) -> Vec<u8> {
    let mut dhcp = vec![0u8; 240];
    dhcp[..4].copy_from_slice(&[1, 1, 6, 0]);
    dhcp[4..8].copy_from_slice(&xid.to_be_bytes());
    dhcp[28..34].copy_from_slice(&MAC);
    dhcp[236..240].copy_from_slice(&[0x63, 0x82, 0x53, 0x63]);
    dhcp.extend_from_slice(&[53, 1, 1, 55, 4, 1, 3, 6, 26, 255]);
    dhcp.resize(300, 0);
    let udp_len = (8 + dhcp.len()) as u16;
    let mut udp = [&68u16.to_be_bytes()[..], &67u16.to_be_bytes(), &udp_len.to_be_bytes(), &[0, 0], &dhcp].concat();
    let ck = csum(&[&[0; 4], &[255; 4], &[0, 17], &udp_len.to_be_bytes(), &udp]);
    udp[6..8].copy_from_slice(&ck.to_be_bytes());
    let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0, 0, 0, 0, 0, 255, 255, 255, 255];
    ip[2..4].copy_from_slice(&(20 + udp_len).to_be_bytes());
    let ck = csum(&[&ip]);
    ip[10..12].copy_from_slice(&ck.to_be_bytes());
    [&[0xff; 6][..], &MAC, &[0x08, 0x00], &ip, &udp].concat()
}

/// The DHCP message in `frame` if it is an IPv4 UDP datagram to port 68 for `xid`.
fn dhcp_reply(frame: &[u8], xid: u32) -> Option<&[u8]> {
    let ip = frame.get(14..)?;
    if frame.get(12..14)? != [0x08, 0x00] || ip[9] != 17 {
        return None;
    }
    let udp = &ip[usize::from(ip[0] & 15) * 4..];
    let dhcp = udp.get(8..)?;
    (udp[2..4] == 68u16.to_be_bytes() && dhcp.get(4..8)? == xid.to_be_bytes()).then_some(dhcp)
}

#[tokio::test]
async fn passt_answers_a_dhcp_discover_sent_through_the_stream_device() {
    require_passt!();
    let passt = match Passt::start() {
        Ok(p) => p,
        Err(e) => skip!(Netns, "{e}"),
    };
    let mut dev = passt.connect().await;
    let mut tx: VecDeque<FrameBuf> = [FrameBuf::from(discover_frame(0x1234_5678))].into();
    within("send", TIMEOUT, poll_fn(|cx| dev.poll_send_batch(cx, &mut tx))).await.unwrap();
    let offer = within("passt's offer", TIMEOUT, async {
        loop {
            let mut frames = Vec::new();
            poll_fn(|cx| dev.poll_recv(cx, &mut frames, 64)).await.expect("the stream stays up");
            if let Some(dhcp) = frames.iter().find_map(|f| dhcp_reply(f, 0x1234_5678)) {
                break dhcp.to_vec();
            }
        }
    })
    .await;
    assert_eq!(offer[0], 2, "a BOOTREPLY");
    assert_eq!(offer[16..20], NS_ADDR.octets(), "passt offers the namespace interface's address");
    assert_eq!(offer[28..34], MAC);
    let opts = &offer[240..];
    assert!(opts.windows(3).any(|w| w == [53, 1, 2]), "message type OFFER in {opts:02x?}");
}

#[tokio::test]
async fn a_netstack_fetches_data_through_passt() {
    require_passt!();
    let passt = match Passt::start() {
        Ok(p) => p,
        Err(e) => skip!(Netns, "{e}"),
    };
    let len = 4 << 20;
    passt.serve(5555, len);
    let dev = passt.connect().await;
    // The address and the gateway come from passt's DHCP (smoltcp's client).
    let stack = NetStack::new(StackConfig::new().mac(MAC).dhcpv4(), dev);
    let lease = within("passt's DHCP lease", TIMEOUT, stack.wait_dhcpv4_lease()).await.expect("a DHCP client");
    assert_eq!((lease.address, lease.prefix), (NS_ADDR, 24), "the namespace interface's address: {lease:?}");
    assert_eq!(lease.router, Some(NS_GATEWAY), "the namespace's gateway: {lease:?}");
    assert!(stack.addrs().contains(&NS_ADDR.into()), "{:?}", stack.addrs());
    // passt maps the namespace's gateway address to its loopback.
    let dst = SocketAddr::new(NS_GATEWAY.into(), 5555);
    let mut flow = within("connect through passt", TIMEOUT, stack.create_connection(dst, ConnectOptions::new()))
        .await
        .expect("connect");
    let got = within("download", TIMEOUT, flow.read_to_end()).await.expect("read");
    assert_eq!(got.len(), len);
    assert!(got.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8), "the bytes the server sent");
    let _ = flow.close().await;
}

/// The gateway's MAC in the kernel-guest test (slirp's for 10.0.2.2).
const GW_MAC: [u8; 6] = [0x52, 0x55, 0x0a, 0x00, 0x02, 0x02];

/// Serves DHCP and router advertisements on `tap` until it fails; counts
/// the DHCP replies and the advertisements sent.
async fn serve_guest_link(
    mut tap: conflux_netstack::TapDevice,
    replies: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    adverts: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::sync::atomic::Ordering::Relaxed;
    let config = conflux_usernet::UsernetConfig::new();
    let mut dhcp = conflux_usernet::DhcpServer::new(&config);
    let ra = conflux_usernet::RouterAdvertiser::new(&config, GW_MAC);
    loop {
        let mut frames = Vec::new();
        if poll_fn(|cx| tap.poll_recv(cx, &mut frames, 64)).await.is_err() {
            return;
        }
        let mut out = VecDeque::new();
        for f in &frames {
            if let conflux_usernet::DhcpFrame::Reply(r) = dhcp.handle_frame(std::time::Instant::now(), f, GW_MAC) {
                replies.fetch_add(1, Relaxed);
                out.push_back(FrameBuf::from(r));
            }
            if let Some(r) = ra.handle_frame(f) {
                adverts.fetch_add(1, Relaxed);
                out.push_back(FrameBuf::from(r));
            }
        }
        if !out.is_empty() && poll_fn(|cx| tap.poll_send_batch(cx, &mut out)).await.is_err() {
            return;
        }
    }
}

/// busybox `udhcpc -f -q -n` on `iface` inside `ns` with a script of ours
/// that only records what it was given (never the default script, which
/// rewrites the machine's `/etc/resolv.conf`); the `bound` line it
/// recorded: `bound ip=.. subnet=.. router=.. dns=.. mtu=.. lease=.. serverid=..`.
async fn udhcpc_bound(ns: &Netns, iface: &str) -> String {
    let dir = TempDir::new("udhcpc");
    let script = dir.path().join("script.sh");
    let record = dir.path().join("record");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$1 ip=$ip subnet=$subnet router=$router dns=$dns mtu=$mtu lease=$lease serverid=$serverid\" >> {}\n",
            record.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut cmd = ns.cmd("udhcpc");
    cmd.args(["-f", "-q", "-n", "-t", "5", "-T", "1", "-i", iface, "-s"]).arg(&script);
    let out = within("udhcpc", Duration::from_secs(30), tokio::task::spawn_blocking(move || cmd.output()))
        .await
        .unwrap()
        .unwrap();
    let recorded = std::fs::read_to_string(&record).unwrap_or_default();
    assert!(out.status.success(), "udhcpc failed: {}\nrecorded: {recorded}", String::from_utf8_lossy(&out.stderr));
    let bound = recorded.lines().find(|l| l.starts_with("bound"));
    bound.unwrap_or_else(|| panic!("no bound event: {recorded}")).to_owned()
}

/// The kernel as the guest: busybox udhcpc on a TAP inside a namespace gets
/// its address, router, DNS, MTU and lease from `DhcpServer`, and the
/// kernel configures an fd00::/64 address by SLAAC from `RouterAdvertiser`'s
/// answer to its router solicitation.
#[tokio::test]
async fn udhcpc_and_the_kernels_slaac_configure_a_guest_from_our_dhcp_server_and_advertisements() {
    if !is_root() {
        skip!(Root, "namespaces and TAP devices need root");
    }
    if !have_command("ip") {
        skip!(Iproute2, "ip not on PATH");
    }
    if !have_command("udhcpc") {
        skip!(Capability, "udhcpc not on PATH (apt-get install udhcpc)");
    }
    let ns = match Netns::create("g") {
        Ok(ns) => ns,
        Err(e) => skip!(Netns, "{e}"),
    };
    let name = conflux_testkit::unique_name("t");
    let tap_name = name.clone();
    let tap = conflux_netstack::in_netns(&ns.path(), move || {
        let tap = conflux_netstack::TapDevice::open(&tap_name, 1500)?;
        conflux_testkit::ip(&["link", "set", "dev", &tap_name, "up"]).map_err(std::io::Error::other)?;
        Ok(tap)
    });
    let tap = match tap {
        Ok(tap) => tap,
        Err(e) => skip!(Tap, "a TAP inside the namespace: {e}"),
    };
    let replies = std::sync::Arc::new(AtomicUsize::new(0));
    let adverts = std::sync::Arc::new(AtomicUsize::new(0));
    let server = tokio::spawn(serve_guest_link(tap, replies.clone(), adverts.clone()));

    let bound = udhcpc_bound(&ns, &name).await;
    assert_eq!(
        bound,
        "bound ip=10.0.2.100 subnet=255.255.255.0 router=10.0.2.2 dns=10.0.2.3 mtu=1500 lease=3600 serverid=10.0.2.2"
    );
    assert!(replies.load(Ordering::Relaxed) >= 2, "an OFFER and an ACK");

    // SLAAC: the kernel solicits, we advertise fd00::/64, it forms an address.
    let slaac = within("a SLAAC address", Duration::from_secs(20), async {
        loop {
            let out =
                ns.cmd("ip").args(["-6", "-o", "addr", "show", "dev", &name, "scope", "global"]).output().unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            if text.contains("inet6 fd00::") {
                break text;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(slaac.contains("/64"), "{slaac}");
    assert!(adverts.load(Ordering::Relaxed) >= 1, "a solicitation was answered");
    let route = ns.cmd("ip").args(["-6", "route", "show", "default"]).output().unwrap();
    let route = String::from_utf8_lossy(&route.stdout);
    assert!(route.contains("via fe80::5055:aff:fe00:202"), "the default route is our router: {route}");
    server.abort();
    drop(ns);
}

//! The kernel as a VM-like guest: a TAP in a test namespace is the guest's
//! NIC, a copy loop of the test's (the "hypervisor") carries its frames in
//! QEMU's stream framing over a unix stream socket, and
//! `Usernet::spawn_vm` serves the other end. The guest configures itself
//! from our DHCP server (udhcpc with a recording script), then curl,
//! iperf3 and dig (through `/etc/netns/<ns>/resolv.conf`) go through.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::io::ErrorKind;
use std::net::Ipv4Addr;
use std::task::Poll;
use std::time::{Duration, Instant};

use conflux_flow::FromTokio;
use conflux_netstack::{FrameBuf, FrameDevice, FramePool, TapDevice};
use conflux_testkit::{Netns, have_command, is_root, skip, within};
use conflux_usernet::{StreamDevice, Usernet, UsernetConfig};

use crate::netns::{assert_ok, dig_until_answered, iperf3_through_the_gateway, run_in, serve_http, wait_idle};
use crate::udhcpc_bound;

/// Moves frames both ways between the TAP and the stream carrier until
/// either fails (or the task is aborted: the carrier then closes).
async fn hypervisor(mut tap: TapDevice, mut wire: StreamDevice) {
    tap.set_pool(FramePool::new());
    wire.set_pool(FramePool::new());
    let (mut to_wire, mut to_tap) = (VecDeque::<FrameBuf>::new(), VecDeque::<FrameBuf>::new());
    let mut got = Vec::new();
    let ended = poll_fn(|cx| {
        loop {
            let mut progress = false;
            if !to_wire.is_empty()
                && let Poll::Ready(r) = wire.poll_send_batch(cx, &mut to_wire)
            {
                r?;
            }
            if !to_tap.is_empty()
                && let Poll::Ready(r) = tap.poll_send_batch(cx, &mut to_tap)
            {
                r?;
            }
            if to_wire.is_empty()
                && let Poll::Ready(r) = tap.poll_recv(cx, &mut got, 64)
            {
                r?;
                to_wire.extend(got.drain(..));
                progress = true;
            }
            if to_tap.is_empty()
                && let Poll::Ready(r) = wire.poll_recv(cx, &mut got, 64)
            {
                r?;
                to_tap.extend(got.drain(..));
                progress = true;
            }
            if !progress {
                return Poll::Pending::<std::io::Result<()>>;
            }
        }
    })
    .await;
    eprintln!("the hypervisor's copy loop ended: {ended:?}");
}

/// Listens on rtnetlink's ND user-option group inside the namespace (a
/// python3 one-liner: the kernel's own ndisc parser validated what it
/// passes on), bounces `dev` so the kernel sends a router solicitation, and
/// returns the first RDNSS option the kernel hands on from the answer:
/// `ADDR lifetime SECS`.
async fn kernel_rdnss_after_solicit(ns: &Netns, dev: &str) -> String {
    use std::io::BufRead;
    const LISTEN: &str = r#"
import ipaddress, socket, struct, sys
s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
s.bind((0, 0))
s.setsockopt(270, 1, 20)  # SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, RTNLGRP_ND_USEROPT
print("ready", flush=True)
s.settimeout(15)
while True:
    data = s.recv(65536)
    while len(data) >= 16:
        length, kind = struct.unpack_from("=IH", data)
        if kind == 68:  # RTM_NEWNDUSEROPT: nduseroptmsg (16 bytes), then the options
            optlen = struct.unpack_from("=H", data, 18)[0]
            opts = data[32:32 + optlen]
            while len(opts) >= 8 and opts[1]:
                if opts[0] == 25 and opts[1] >= 3:
                    life = struct.unpack_from("!I", opts, 4)[0]
                    print(ipaddress.IPv6Address(opts[8:24]), "lifetime", life, flush=True)
                    sys.exit(0)
                opts = opts[opts[1] * 8:]
        data = data[(length + 3) & ~3:]
"#;
    let mut child = ns
        .cmd("python3")
        .args(["-c", LISTEN])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 in the namespace");
    let stdout = child.stdout.take().unwrap();
    let dev = dev.to_owned();
    let lines = tokio::task::spawn_blocking(move || {
        let mut lines = std::io::BufReader::new(stdout).lines();
        assert_eq!(lines.next().and_then(Result::ok).as_deref(), Some("ready"));
        lines
    });
    let mut lines = within("the netlink listener", Duration::from_secs(10), lines).await.unwrap();
    ns.ip(&["link", "set", "dev", &dev, "down"]).unwrap();
    ns.ip(&["link", "set", "dev", &dev, "up"]).unwrap();
    // The listener gives up by itself after 15 s without a message.
    let line = tokio::task::spawn_blocking(move || lines.next().and_then(Result::ok));
    let line = within("the kernel's RDNSS", Duration::from_secs(20), line).await.unwrap();
    let status = child.wait().unwrap();
    line.unwrap_or_else(|| panic!("no RDNSS option from the kernel ({status})"))
}

/// The value of `key=` in udhcpc's recorded line.
fn field<'a>(line: &'a str, key: &str) -> &'a str {
    let at = format!("{key}=");
    line.split_whitespace().find_map(|w| w.strip_prefix(at.as_str())).unwrap_or_else(|| panic!("no {key} in {line}"))
}

/// A VM-like kernel guest on a TAP bridged to the stream carrier gets its
/// address, router and DNS from `spawn_vm`'s DHCP server (and an IPv6
/// address by SLAAC from its advertisements), configures itself from what
/// udhcpc recorded, and reaches the host: curl, `iperf3 -t 2`, and a DNS
/// lookup of the resolver it was given, and one over IPv6 to fd00::3 (a
/// dnsmasq on the host's loopback as the upstream); the kernel reads fd00::3
/// from the advertisements' RDNSS option. The carrier then closes: the device's end names it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kernel_guest_on_a_stream_carrier_gets_dhcp_and_reaches_the_host() {
    if !is_root() {
        skip!(Root, "namespaces and TAP devices need root");
    }
    if !have_command("ip") {
        skip!(Iproute2, "ip not on PATH");
    }
    if let Some(m) = conflux_testkit::tools::missing(&["udhcpc", "curl", "iperf3", "dnsmasq", "dig", "python3"]) {
        skip!(m.kind, "{}", m.detail);
    }
    let ns = match Netns::create("vm") {
        Ok(ns) => ns,
        Err(e) => skip!(Netns, "{e}"),
    };
    let name = conflux_testkit::unique_name("t");
    let tap_name = name.clone();
    let tap = conflux_netstack::in_netns(&ns.path(), move || {
        let tap = TapDevice::open(&tap_name, 1500)?;
        conflux_testkit::ip(&["link", "set", "dev", &tap_name, "up"]).map_err(std::io::Error::other)?;
        Ok(tap)
    });
    let tap = match tap {
        Ok(tap) => tap,
        Err(e) => skip!(Tap, "a TAP inside the namespace: {e}"),
    };
    let dnsmasq = conflux_testkit::tools::Dnsmasq::start();
    let config =
        UsernetConfig::new().host_loopback(true).allow("127.0.0.0/8".parse().unwrap()).dns_upstream(dnsmasq.addr());
    let (ours, theirs) = tokio::net::UnixStream::pair().unwrap();
    let usernet = Usernet::spawn_vm(config, StreamDevice::new(FromTokio::new(ours), 1500)).unwrap();
    let hv = tokio::spawn(hypervisor(tap, StreamDevice::new(FromTokio::new(theirs), 1500)));
    let started = Instant::now();

    // The guest asks our DHCP server, and configures itself from the answer.
    let bound = udhcpc_bound(&ns, &name).await;
    let (ip, subnet, router, dns, mtu) = (
        field(&bound, "ip"),
        field(&bound, "subnet"),
        field(&bound, "router"),
        field(&bound, "dns"),
        field(&bound, "mtu"),
    );
    assert_eq!(
        (ip, subnet, router, dns, mtu),
        ("10.0.2.100", "255.255.255.0", "10.0.2.2", "10.0.2.3", "1500"),
        "{bound}"
    );
    let prefix = u32::from(subnet.parse::<Ipv4Addr>().unwrap()).count_ones();
    ns.ip(&["addr", "add", &format!("{ip}/{prefix}"), "dev", &name]).unwrap();
    ns.ip(&["link", "set", "dev", &name, "mtu", mtu]).unwrap();
    ns.ip(&["route", "add", "default", "via", router]).unwrap();
    // `/etc/netns/<ns>/resolv.conf` (what `ip netns exec` mounts over
    // `/etc/resolv.conf`), removed with the directories made for it.
    let _resolv = ns.etc_file("resolv.conf", &format!("nameserver {dns}\n")).unwrap();

    let port = serve_http().await;
    let out =
        run_in(&ns, "curl", &["--http1.1", "-sS", "--fail", "--max-time", "10", &format!("http://{router}:{port}/")])
            .await;
    assert_ok("curl through the carrier", &out);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n");
    iperf3_through_the_gateway(&ns, &[]).await;
    // The resolver udhcpc recorded, through /etc/netns/<ns>/resolv.conf:
    // the guest ARPs for 10.0.2.3, the guest link answers.
    dig_until_answered(&ns, &[]).await;
    // SLAAC from the advertisements (the first one went out as the link started).
    within("a SLAAC address", Duration::from_secs(10), async {
        loop {
            let out = run_in(&ns, "ip", &["-6", "-o", "addr", "show", "dev", &name, "scope", "global"]).await;
            if String::from_utf8_lossy(&out.stdout).contains("inet6 fd00::") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    // DNS over IPv6 to fd00::3: the guest link answers its neighbour solicitation.
    dig_until_answered(&ns, &["@fd00::3"]).await;
    // The kernel read the DNS address from the advertisements' RDNSS
    // option: it hands the option to userspace (RTM_NEWNDUSEROPT), caught
    // here after a link down/up makes it solicit again.
    let rdnss = kernel_rdnss_after_solicit(&ns, &name).await;
    assert_eq!(rdnss, "fd00::3 lifetime 1800");
    let s = wait_idle(&usernet).await;
    assert_eq!(s.refused, 0, "{s}");
    assert!(s.flows_total >= 3, "curl and iperf3's control and data connections: {s}");
    eprintln!("the kernel guest over the stream carrier: {:?}", started.elapsed());

    // The hypervisor goes away: the carrier closes between frames.
    hv.abort();
    let ended = within("the device's end", Duration::from_secs(5), usernet.device_ended()).await;
    assert_eq!(ended.kind, ErrorKind::ConnectionAborted, "{ended}");
    within("shutdown", Duration::from_secs(10), usernet.shutdown()).await;
    drop(ns);
}

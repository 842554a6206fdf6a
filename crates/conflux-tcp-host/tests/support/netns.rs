//! Test namespaces: A and B joined by a veth pair. The test body runs in A as
//! a re-executed child of the test binary (`ip netns exec A <this binary>`:
//! we never call `setns` ourselves); kernel-side peers run in B.
//!
//! Layout: A has 10.77.0.1/24 on its veth and no default route (so 10.99.0.1
//! has no route), a permanent neighbour 10.77.0.3 at an unused MAC (a black
//! hole: SYNs leave and are never answered); B has 10.77.0.2/24.

use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use conflux_conformance::tcp::Unavailable;
use conflux_testkit::{SkipKind, have_command, is_root, skip};

use super::HostFixture;

/// Set in the child: the names of A, B and B's veth, separated by spaces.
const CHILD_ENV: &str = "CFX_TCP_HOST_NETNS";

use conflux_testkit::ip;

/// The two namespaces, removed (with every process left in them) on drop.
pub(crate) struct Netns {
    a: conflux_testkit::Netns,
    b: conflux_testkit::Netns,
    vb: String,
}

impl Netns {
    /// Creates A and B and the veth pair between them.
    pub(crate) fn create() -> Result<Netns, String> {
        let (a, b) = (conflux_testkit::Netns::create("a")?, conflux_testkit::Netns::create("b")?);
        let (va, vb) = (format!("{}v", a.name()), format!("{}v", b.name()));
        a.ip(&["link", "add", &va, "type", "veth", "peer", "name", &vb, "netns", b.name()])?;
        for (n, dev, addr) in [(&a, &va, "10.77.0.1/24"), (&b, &vb, "10.77.0.2/24")] {
            n.ip(&["addr", "add", addr, "dev", dev])?;
            n.ip(&["link", "set", "dev", dev, "up"])?;
        }
        a.ip(&["neigh", "add", "10.77.0.3", "lladdr", "02:00:00:00:00:09", "dev", &va, "nud", "permanent"])?;
        Ok(Netns { a, b, vb })
    }

    /// Runs test `name` of this binary inside A; panics if it fails, hangs
    /// (120 s) or did not run.
    fn run_child(&self, name: &str) {
        let exe = std::env::current_exe().expect("current_exe");
        let child = Command::new("ip")
            .args(["netns", "exec", self.a.name()])
            .arg(exe)
            .args(["--exact", name, "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, format!("{} {} {}", self.a.name(), self.b.name(), self.vb))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ip netns exec");
        let pid = child.id();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || drop(tx.send(child.wait_with_output())));
        let out = match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(out) => out.expect("wait for the child"),
            Err(_) => {
                let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
                panic!("the child running {name} in {} hung", self.a.name());
            }
        };
        let stdout = String::from_utf8_lossy(&out.stdout);
        eprintln!("--- child {name} in {} ---\n{stdout}{}", self.a.name(), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "{name} failed inside namespace {}", self.a.name());
        assert!(stdout.contains("1 passed"), "{name} did not run inside namespace {}", self.a.name());
    }
}

/// Runs `body` with a fixture inside namespace A: in the parent, creates the
/// namespaces and re-executes test `name` inside A; in that child, runs `body`.
/// Skips (visibly) without root or iproute2.
pub(crate) fn run_in_netns(name: &str, body: impl FnOnce(HostFixture)) {
    if let Some(child) = Child::from_env() {
        return body(HostFixture::in_netns(child));
    }
    if !is_root() {
        skip!(Root, "network namespaces need root (CAP_NET_ADMIN)");
    }
    if !have_command("ip") {
        skip!(Iproute2, "the ip command (iproute2) is not on PATH");
    }
    let ns = match Netns::create() {
        Ok(ns) => ns,
        Err(e) => skip!(Netns, "cannot create the test namespaces: {e}"),
    };
    ns.run_child(name);
}

/// The child's view of the namespaces (it runs inside A).
pub(crate) struct Child {
    b: String,
    vb: String,
    pub(crate) ip_a: IpAddr,
    pub(crate) black_hole: IpAddr,
    pub(crate) no_route: IpAddr,
    peers: Mutex<Vec<std::process::Child>>,
}

impl Child {
    fn from_env() -> Option<Child> {
        let spec = std::env::var(CHILD_ENV).ok()?;
        let mut it = spec.split(' ').skip(1).map(str::to_owned);
        Some(Child {
            b: it.next()?,
            vb: it.next()?,
            ip_a: IpAddr::from([10, 77, 0, 1]),
            black_hole: IpAddr::from([10, 77, 0, 3]),
            no_route: IpAddr::from([10, 99, 0, 1]),
            peers: Mutex::new(Vec::new()),
        })
    }

    /// A socat in B connects to `addr` and echoes.
    pub(crate) fn remote_echo_client(&self, addr: std::net::SocketAddr) -> Result<(), Unavailable> {
        if !have_command("socat") {
            return Err(Unavailable::new(SkipKind::Socat, "socat is not on PATH"));
        }
        let peer = Command::new("ip")
            .args(["netns", "exec", &self.b, "socat", "-t", "30", &format!("TCP:{addr}"), "EXEC:cat"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| Unavailable::new(SkipKind::Socat, format!("cannot start socat: {e}")))?;
        self.peers.lock().unwrap().push(peer);
        Ok(())
    }

    /// Takes B's end of the veth down: nothing crosses, B sends nothing.
    pub(crate) fn cut_link(&self) {
        ip(&["-n", &self.b, "link", "set", "dev", &self.vb, "down"]).expect("cut the link");
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        for mut peer in self.peers.lock().unwrap().drain(..) {
            let _ = peer.kill();
            let _ = peer.wait();
        }
    }
}

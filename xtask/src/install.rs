//! Installing what tests use, and removing what crashed test runs left.

use std::process::{Command, Stdio};

use crate::util;

/// Debian packages the tests and benches call (`ip`, `iperf3`, `socat`, `nc
/// -N`, `ping`, `curl`; `passt` and `udhcpc`: conflux-usernet's VM-carrier
/// tests; `dnsmasq-base` and `bind9-dnsutils`: its DNS forwarding test;
/// `slirp4netns` and `passt`'s `pasta`: the `usernet` bench group's
/// baselines).
const PACKAGES: &[&str] = &[
    "iproute2",
    "iperf3",
    "socat",
    "netcat-openbsd",
    "iputils-ping",
    "curl",
    "passt",
    "udhcpc",
    "dnsmasq-base",
    "bind9-dnsutils",
    "slirp4netns",
];

/// The prefix of every namespace and link the tests create.
const NAME_PREFIX: &str = "cfx";

/// Installs missing packages (only if `packages`) and deletes stale `cfx*`
/// namespaces and links. Needs root; returns false if an install failed.
pub(crate) fn run(packages: bool) -> bool {
    if !util::is_root() {
        eprintln!("xtask install: needs root (apt-get, ip netns); skipping");
        return !packages;
    }
    let ok = !packages || install_packages();
    let ok = (!packages || crate::install_py9p::install()) && ok;
    remove_stale_network_objects();
    ok
}

fn is_installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|o| o.status.success() && o.stdout.ends_with(b"install ok installed"))
}

fn install_packages() -> bool {
    let missing: Vec<&str> = PACKAGES.iter().copied().filter(|p| !is_installed(p)).collect();
    if missing.is_empty() {
        println!("packages present: {}", PACKAGES.join(" "));
        return true;
    }
    util::heading(&format!("apt-get install {}", missing.join(" ")));
    let env = [("DEBIAN_FRONTEND", "noninteractive")];
    util::status_ok(Command::new("apt-get").arg("update").envs(env))
        && util::status_ok(
            Command::new("apt-get").args(["install", "-y", "--no-install-recommends"]).args(&missing).envs(env),
        )
}

fn ip(args: &[&str]) -> Option<String> {
    let out = Command::new("ip").args(args).stderr(Stdio::null()).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Deletes `cfx*` namespaces and links; failures (no `ip`, already gone) are
/// ignored.
fn remove_stale_network_objects() {
    let netns = ip(&["netns", "list"]).unwrap_or_default();
    for name in stale_netns(&netns) {
        println!("removing stale netns {name}");
        let _ = ip(&["netns", "delete", name]);
    }
    let links = ip(&["-o", "link"]).unwrap_or_default();
    for name in stale_links(&links) {
        println!("removing stale link {name}");
        let _ = ip(&["link", "delete", name]);
    }
}

/// Names from `ip netns list` lines such as `cfx12a (id: 0)`.
fn stale_netns(list: &str) -> Vec<&str> {
    list.lines().filter_map(|l| l.split_whitespace().next()).filter(|n| n.starts_with(NAME_PREFIX)).collect()
}

/// Names from `ip -o link` lines such as `7: cfxv1@if6: <...> ...`.
fn stale_links(list: &str) -> Vec<&str> {
    list.lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n))
        .filter(|n| n.starts_with(NAME_PREFIX))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installs_what_the_end_to_end_tests_run() {
        // crates/conflux/tests/e2e_*.rs: socat, nc -N, curl, ip netns.
        for pkg in ["socat", "netcat-openbsd", "curl", "iproute2"] {
            assert!(PACKAGES.contains(&pkg), "{pkg}");
        }
        // crates/conflux-usernet/tests/serial.rs: a real QEMU-stream peer, a real DHCP client.
        for pkg in ["passt", "udhcpc"] {
            assert!(PACKAGES.contains(&pkg), "{pkg}");
        }
        // crates/conflux-usernet/tests/serial/netns.rs: a real upstream DNS server and client.
        for pkg in ["dnsmasq-base", "bind9-dnsutils"] {
            assert!(PACKAGES.contains(&pkg), "{pkg}");
        }
        // crates/conflux-bench/src/usernet.rs: the baselines (pasta is passt's) and iperf3.
        for pkg in ["slirp4netns", "passt", "iperf3"] {
            assert!(PACKAGES.contains(&pkg), "{pkg}");
        }
    }

    #[test]
    fn parses_ip_output() {
        assert_eq!(stale_netns("cfx1a (id: 0)\nother\ncfx2b\n"), ["cfx1a", "cfx2b"]);
        let links = "1: lo: <LOOPBACK,UP> mtu 65536\n\
                     7: cfxv1@if6: <BROADCAST> mtu 1500\n\
                     8: cfxtap0: <NO-CARRIER> mtu 1500\n";
        assert_eq!(stale_links(links), ["cfxv1", "cfxtap0"]);
    }
}

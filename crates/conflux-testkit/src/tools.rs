//! The external programs the serial tests drive through a test namespace:
//! iperf3 (a one-shot server on the host's 127.0.0.1, its client inside the
//! namespace, every wait bounded), a dnsmasq answering one name, and dig.
//!
//! Everything here blocks (tests on a tokio runtime call it from
//! `tokio::task::block_in_place` or `spawn_blocking`). Prerequisites stay
//! with the test: [`missing`] says which program is absent and with which
//! skip kind, and the test skips through [`skip!`](crate::skip!), so the
//! skip names the test's crate.
//!
//! ```
//! use conflux_testkit::{skip, tools};
//!
//! fn needs_dns() {
//!     if let Some(m) = tools::missing(&["dnsmasq", "dig"]) {
//!         skip!(m.kind, "{}", m.detail);
//!     }
//!     let dns = tools::Dnsmasq::start();
//!     // ... `dig @...` inside a namespace: tools::dig_until_answered ...
//!     # drop(dns);
//! }
//! # let _ = needs_dns; // not called: a doctest must not add to the skip log
//! ```

use std::fmt;
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::{Netns, SkipKind, have_command};

/// A child process killed and reaped when dropped (a failing test leaves none).
#[derive(Debug)]
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A port on the host's 127.0.0.1 that was free a moment ago (bound, read
/// back, released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("bind 127.0.0.1:0").port()
}

/// A program a test needs that is not on `PATH`: the skip kind CI judges it
/// by, and the line to say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    /// `Iperf3` for iperf3 and `Curl` for curl (CI installs them and
    /// refuses those skips), else `Capability`.
    pub kind: SkipKind,
    /// `<program> not on PATH`, with the package that brings it.
    pub detail: String,
}

/// The first of `programs` not on `PATH`, if any.
pub fn missing(programs: &[&str]) -> Option<Missing> {
    let program = programs.iter().find(|p| !have_command(p))?;
    let (kind, package) = match *program {
        "iperf3" => (SkipKind::Iperf3, "iperf3"),
        "curl" => (SkipKind::Curl, "curl"),
        "dnsmasq" => (SkipKind::Capability, "dnsmasq-base"),
        "dig" => (SkipKind::Capability, "bind9-dnsutils"),
        other => (SkipKind::Capability, other),
    };
    Some(Missing { kind, detail: format!("{program} ({package}) not on PATH (cargo xtask install)") })
}

/// The name [`Dnsmasq`] answers, and its answer.
pub const DNS_NAME: &str = "conflux.test";
/// The A record [`Dnsmasq`] gives [`DNS_NAME`].
pub const DNS_ANSWER: &str = "192.0.2.55";

/// A dnsmasq on the host's 127.0.0.1 answering [`DNS_NAME`] with
/// [`DNS_ANSWER`] and nothing else (no upstream, no hosts file), over UDP
/// and TCP; stopped on drop.
#[derive(Debug)]
pub struct Dnsmasq {
    _child: KillOnDrop,
    addr: SocketAddr,
}

impl Dnsmasq {
    /// Starts it on a free port of 127.0.0.1 ([`addr`](Dnsmasq::addr)) and
    /// waits (up to 5 s) until it listens. A port taken between
    /// [`free_port`] and dnsmasq's bind makes it exit: the next free port
    /// is tried (3 in all), and a dnsmasq that never listens fails the test
    /// here, saying so, not later as a DNS query without an answer.
    pub fn start() -> Dnsmasq {
        let mut exits = Vec::new();
        for _ in 0..3 {
            let port = free_port();
            let child = Command::new("dnsmasq")
                .args(["--no-daemon", "--no-resolv", "--no-hosts", "--bind-interfaces", "--pid-file"])
                .args(["--listen-address", "127.0.0.1", "--port", &port.to_string()])
                .arg(format!("--address=/{DNS_NAME}/{DNS_ANSWER}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn dnsmasq");
            let mut child = KillOnDrop(child);
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                if let Ok(Some(status)) = child.0.try_wait() {
                    exits.push(format!("port {port}: exited at start ({status})"));
                    break;
                }
                if listening(port) {
                    return Dnsmasq { _child: child, addr: SocketAddr::from(([127, 0, 0, 1], port)) };
                }
                assert!(Instant::now() < deadline, "dnsmasq on 127.0.0.1:{port} not listening within 5 s");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        panic!("dnsmasq did not start: {}", exits.join("; "));
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// `dig [extra] conflux.test A +short` inside `ns` (each try bounded to
/// 1 s by dig itself) until it answers [`DNS_ANSWER`]; panics after `within`.
pub fn dig_until_answered(ns: &Netns, extra: &[&str], within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let out = dig(ns, extra);
        if out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == DNS_ANSWER {
            return;
        }
        assert!(Instant::now() < deadline, "dig {extra:?} {DNS_NAME}: no answer within {within:?}: {out:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One `dig [extra] conflux.test A +short +time=1 +tries=1` inside `ns`
/// (`+tcp` in `extra` asks over TCP).
pub fn dig(ns: &Netns, extra: &[&str]) -> Output {
    ns.cmd("dig")
        .args(extra)
        .args([DNS_NAME, "A", "+short", "+time=1", "+tries=1"])
        .stdin(Stdio::null())
        .output()
        .expect("spawn dig in the namespace")
}

/// What an iperf3 client reported (`-J`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Iperf3Report {
    /// The receiver's `end.sum_received.bits_per_second`.
    pub received_bps: f64,
    /// The receiver's `end.sum_received.bytes`.
    pub received_bytes: u64,
    /// The sender's retransmits, when iperf3 counted them.
    pub retransmits: Option<u64>,
}

impl fmt::Display for Iperf3Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "receiver {:.2} Gbit/s, {} bytes", self.received_bps / 1e9, self.received_bytes)?;
        if let Some(r) = self.retransmits {
            write!(f, ", {r} retransmits")?;
        }
        Ok(())
    }
}

/// Reads iperf3's `-J` output; an `error` it reports, or a missing figure,
/// is the error.
pub fn parse_iperf3_json(json: &[u8]) -> Result<Iperf3Report, String> {
    let v: serde_json::Value = serde_json::from_slice(json).map_err(|e| format!("not iperf3 JSON: {e}"))?;
    if let Some(err) = v.get("error").and_then(|e| e.as_str()) {
        return Err(format!("iperf3: {err}"));
    }
    let received = |field: &str| {
        v.pointer(&format!("/end/sum_received/{field}"))
            .ok_or_else(|| format!("iperf3 JSON without end.sum_received.{field}"))
    };
    let received_bps = received("bits_per_second")?.as_f64().ok_or("bits_per_second is not a number")?;
    let received_bytes = received("bytes")?.as_u64().ok_or("bytes is not a whole number")?;
    let retransmits = v.pointer("/end/sum_sent/retransmits").and_then(serde_json::Value::as_u64);
    Ok(Iperf3Report { received_bps, received_bytes, retransmits })
}

/// How long an iperf3 client may take beyond its `-t`.
const IPERF3_SLACK: Duration = Duration::from_secs(20);

/// `iperf3 -c HOST -p PORT -t 2 -J EXTRA` inside `ns` against a one-shot
/// iperf3 server on the host's 127.0.0.1 that `host` leads to (the
/// forwarder's gateway). The server is awaited until it listens; the client
/// is bounded (5 s to connect, 2 s of data, killed 20 s later); a failed
/// attempt (a loaded machine) gets a fresh server, up to 3. Panics if none
/// succeeds.
pub fn iperf3_through(ns: &Netns, host: &str, extra: &[&str]) -> Iperf3Report {
    let mut attempts = 0;
    loop {
        attempts += 1;
        match iperf3_once(ns, host, extra) {
            Ok(report) => return report,
            Err(e) if attempts < 3 => eprintln!("iperf3 {extra:?} attempt {attempts}: {e}"),
            Err(e) => panic!("iperf3 -c {host} {extra:?}: {attempts} attempts failed, the last: {e}"),
        }
    }
}

fn iperf3_once(ns: &Netns, host: &str, extra: &[&str]) -> Result<Iperf3Report, String> {
    let port = free_port();
    let port_s = port.to_string();
    let server = Command::new("iperf3")
        .args(["-s", "-1", "-B", "127.0.0.1", "-p", &port_s])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn iperf3 -s");
    let mut server = KillOnDrop(server);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !listening(port) {
        if let Ok(Some(status)) = server.0.try_wait() {
            return Err(format!("the iperf3 server exited before listening: {status}"));
        }
        if Instant::now() >= deadline {
            return Err(format!("the iperf3 server did not listen on 127.0.0.1:{port} within 10 s"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let client = ns
        .cmd("iperf3")
        .args(["-c", host, "-p", &port_s, "-t", "2", "-J", "--connect-timeout", "5000"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the iperf3 client in the namespace");
    let out = output_within(client, Duration::from_secs(2) + IPERF3_SLACK)?;
    let report = parse_iperf3_json(&out.stdout);
    if !out.status.success() {
        let why = report.err().unwrap_or_else(|| String::from_utf8_lossy(&out.stderr).trim().to_owned());
        return Err(format!("{}: {why}", out.status));
    }
    report
}

/// Waits for `child` within `timeout` (killing it then) and gives its output.
fn output_within(mut child: Child, timeout: Duration) -> Result<Output, String> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return child.wait_with_output().map_err(|e| e.to_string()),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let out = child.wait_with_output().map_err(|e| e.to_string())?;
                return Err(format!(
                    "no end within {timeout:?} (killed); stderr: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Whether a TCP socket listens on 127.0.0.1:`port` (from `/proc/net/tcp`:
/// a test connection would use up a one-shot iperf3 server).
pub fn listening(port: u16) -> bool {
    let want = format!("0100007F:{port:04X}");
    std::fs::read_to_string("/proc/net/tcp").is_ok_and(|table| {
        table.lines().skip(1).any(|l| {
            let mut cols = l.split_whitespace();
            cols.nth(1) == Some(want.as_str()) && cols.nth(1) == Some("0A")
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_iperf3_json_and_its_errors() {
        let json = br#"{"start":{},"end":{"sum_sent":{"bits_per_second":2e9,"retransmits":4},
            "sum_received":{"bits_per_second":1.5e9,"bytes":375000000}}}"#;
        let r = parse_iperf3_json(json).unwrap();
        assert_eq!(r, Iperf3Report { received_bps: 1.5e9, received_bytes: 375_000_000, retransmits: Some(4) });
        assert_eq!(r.to_string(), "receiver 1.50 Gbit/s, 375000000 bytes, 4 retransmits");
        let failed = br#"{"start":{},"end":{},"error":"unable to connect to server: Connection refused"}"#;
        assert!(parse_iperf3_json(failed).unwrap_err().contains("Connection refused"));
        assert!(parse_iperf3_json(b"{}").unwrap_err().contains("sum_received.bits_per_second"));
        assert!(parse_iperf3_json(b"iperf3: error").unwrap_err().contains("not iperf3 JSON"));
    }

    #[test]
    fn names_the_missing_program_and_its_kind() {
        assert_eq!(missing(&["sh"]), None);
        let m = missing(&["sh", "conflux-no-such-program"]).unwrap();
        assert_eq!(m.kind, SkipKind::Capability);
        assert!(m.detail.starts_with("conflux-no-such-program"), "{}", m.detail);
    }

    #[test]
    fn sees_a_listener_and_a_free_port() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        assert!(listening(port));
        drop(l);
        assert!(!listening(port));
        assert_ne!(free_port(), 0);
    }

    #[test]
    fn a_child_past_its_time_is_killed() {
        let child = Command::new("sleep").arg("30").stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let started = Instant::now();
        let e = output_within(child, Duration::from_millis(100)).unwrap_err();
        assert!(e.contains("killed"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}

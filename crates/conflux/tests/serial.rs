//! `conflux usernet` as a person runs it (root; namespaces the tests make
//! and remove): it serves a namespace until SIGTERM, or until the process
//! named by `--netns PID` exits, then removes its device; SIGUSR1 and the
//! exit print the counters on stderr. VM guests (`--listen`, `--connect`)
//! are in `serial/vm.rs`. The forwarder reaches only the host's
//! loopback (`--host-loopback --allow 127.0.0.0/8`). xtask runs this target
//! with `--test-threads=1`.
#![forbid(unsafe_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use conflux_testkit::{Netns, SkipReturn, have_command, is_root, skip};

/// `conflux usernet --listen/--connect`: VM guests (a TAP bridged to the
/// carrier by the test).
#[path = "serial/vm.rs"]
mod vm;

/// The VM tests' hypervisor: a TAP bridged to a carrier flow.
#[path = "serial/bridge.rs"]
mod bridge;

/// The binary under test.
fn conflux() -> Command {
    Command::new(env!("CARGO_BIN_EXE_conflux"))
}

/// A running `conflux usernet`: its stderr lines arrive on `lines`; killed
/// and reaped on drop.
struct Forwarder {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Forwarder {
    fn start(netns: &str) -> Forwarder {
        Forwarder::spawn(&["usernet", "--netns", netns, "--configure", "--host-loopback", "--allow", "127.0.0.0/8"])
    }

    /// Runs `conflux ARGS`.
    fn spawn(args: &[&str]) -> Forwarder {
        let mut child = conflux()
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn conflux usernet");
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("conflux: {line}");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Forwarder { child, lines }
    }

    /// The next stderr line containing `text` (bounded).
    fn wait_line(&self, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(text) => return line,
                Ok(_) => {}
                Err(e) => panic!("no stderr line with {text:?}: {e}"),
            }
        }
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill").args([sig, &self.child.id().to_string()]).status().unwrap().success();
        assert!(ok, "kill {sig}");
    }

    /// Its exit status (bounded).
    fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "conflux usernet did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn has_tap(ns: &Netns) -> bool {
    let out = Command::new("ip").args(["-n", ns.name(), "-o", "addr", "show"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).contains("10.0.2.100/24")
}

/// A namespace, or none after a visible skip.
struct MaybeNs(Option<Netns>);

impl SkipReturn for MaybeNs {
    fn skipped() -> MaybeNs {
        MaybeNs(None)
    }
}

fn prerequisites() -> MaybeNs {
    if !is_root() {
        skip!(Root, "a namespace and a TAP device need root");
    }
    if !have_command("ip") {
        skip!(Iproute2, "ip not on PATH");
    }
    if !have_command("nc") {
        skip!(Socat, "nc (netcat-openbsd) not on PATH (cargo xtask install)");
    }
    match Netns::create("c") {
        Ok(ns) => MaybeNs(Some(ns)),
        Err(e) => skip!(Netns, "{e}"),
    }
}

#[test]
fn usernet_serves_a_namespace_until_sigterm_then_removes_its_device() {
    let MaybeNs(Some(ns)) = prerequisites() else { return };
    let echo = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = echo.local_addr().unwrap().port();
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = echo.accept() {
            let mut r = s.try_clone().unwrap();
            let _ = std::io::copy(&mut r, &mut s);
        }
    });
    let mut fwd = Forwarder::start(ns.path().to_str().unwrap());
    fwd.wait_line("serving");
    assert!(has_tap(&ns), "tap0 configured");
    let out = ns.cmd("sh").args(["-c", &format!("printf through | nc -N -w 10 10.0.2.2 {port}")]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "through", "{out:?}");
    fwd.signal("-USR1");
    let line = fwd.wait_line("usernet: flows");
    assert!(line.contains("(total 1)") && line.contains("bytes out 7 in 7"), "{line}");
    fwd.signal("-TERM");
    let status = fwd.wait_exit();
    assert!(status.success(), "{status:?}");
    let last = fwd.wait_line("usernet: flows");
    assert!(last.starts_with("usernet: flows open 0 (total 1)"), "{last}");
    assert!(!has_tap(&ns), "the device is gone");
}

#[test]
fn usernet_with_a_pid_exits_when_that_process_does() {
    let MaybeNs(Some(ns)) = prerequisites() else { return };
    // `ip netns exec` execs: the child's PID is the sleep's, inside the namespace.
    let mut sleeper = ns.cmd("sleep").arg("60").stdin(Stdio::null()).spawn().unwrap();
    let pid = sleeper.id();
    let ready = Instant::now() + Duration::from_secs(10);
    let netns_of = |pid: u32| std::fs::read_link(format!("/proc/{pid}/ns/net")).ok();
    while netns_of(pid) == netns_of(std::process::id()) {
        assert!(Instant::now() < ready, "the sleeper never entered the namespace");
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut fwd = Forwarder::start(&pid.to_string());
    fwd.wait_line("serving");
    assert!(has_tap(&ns), "tap0 configured in the process's namespace");
    sleeper.kill().unwrap();
    sleeper.wait().unwrap();
    let started = Instant::now();
    let status = fwd.wait_exit();
    assert!(status.success(), "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(2), "exited {:?} after the process", started.elapsed());
    fwd.wait_line("usernet: flows open 0");
}

#[test]
fn usernet_names_a_missing_process() {
    let out = conflux().args(["usernet", "--netns", "4000000000"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("conflux: --netns 4000000000: no such process"), "{err}");
}

#[test]
fn usernet_lets_open_flows_finish_after_sigterm_and_refuses_new_ones() {
    let MaybeNs(Some(ns)) = prerequisites() else { return };
    let echo = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = echo.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut s in echo.incoming().map_while(Result::ok) {
            std::thread::spawn(move || {
                let mut r = s.try_clone().unwrap();
                let _ = std::io::copy(&mut r, &mut s);
            });
        }
    });
    let mut fwd = Forwarder::start(ns.path().to_str().unwrap());
    fwd.wait_line("serving");
    // A flow that sends, waits 1.5 s, sends again, then half-closes.
    let slow = format!("(printf early; sleep 1.5; printf late) | nc -N -w 10 10.0.2.2 {port}");
    let slow = ns.cmd("sh").args(["-c", &slow]).stdout(Stdio::piped()).stdin(Stdio::null()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        fwd.signal("-USR1");
        if fwd.wait_line("usernet: flows").starts_with("usernet: flows open 1") {
            break;
        }
        assert!(Instant::now() < deadline, "the slow flow never opened");
        std::thread::sleep(Duration::from_millis(20));
    }
    let stopped = Instant::now();
    fwd.signal("-TERM");
    fwd.wait_line("letting open flows finish");
    // A new connection is refused at once.
    let new = ns.cmd("sh").args(["-c", &format!("printf new | nc -N -w 5 10.0.2.2 {port}")]).output().unwrap();
    assert!(!new.status.success() && new.stdout.is_empty(), "a new connection during the grace: {new:?}");
    // The open one finishes, and conflux exits then, not at the end of the grace.
    let slow = slow.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&slow.stdout), "earlylate");
    let status = fwd.wait_exit();
    assert!(status.success(), "{status:?}");
    assert!(stopped.elapsed() < Duration::from_secs(4), "exited {:?} after SIGTERM", stopped.elapsed());
    let last = fwd.wait_line("usernet: flows");
    assert!(last.starts_with("usernet: flows open 0 (total 1), refused 1"), "{last}");
    assert!(!has_tap(&ns), "the device is gone");
}

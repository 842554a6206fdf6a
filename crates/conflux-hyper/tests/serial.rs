//! Root tests (xtask runs this target with `--test-threads=1`): the
//! `unikernel_http` example, axum on conflux's userspace stack on a TAP
//! device, reached by curl from the kernel side in a namespace of the
//! test's own; a guard removes the device and the namespace.

#[path = "../examples/unikernel_http.rs"]
#[allow(dead_code)]
mod unikernel_http;

use std::process::{Command, Stdio};
use std::time::Duration;

use conflux_mimic::{Registry, register_all};

const LIMIT: Duration = Duration::from_secs(90);

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).stdin(Stdio::null()).output().expect("ip runs");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
}

/// A TAP device made in the root namespace and a namespace for its kernel
/// side; both removed on drop.
struct Device {
    name: String,
    ns: String,
}

impl Device {
    fn new() -> Device {
        let base = format!("cfh{:x}", std::process::id());
        let d = Device { name: format!("{base}d"), ns: format!("{base}n") };
        ip(&["tuntap", "add", "dev", &d.name, "mode", "tap"]);
        d
    }

    /// Moves the device into the namespace, `addr` on the kernel's side, up.
    fn move_to_ns(&self, addr: &str) {
        ip(&["netns", "add", &self.ns]);
        ip(&["link", "set", "dev", &self.name, "netns", &self.ns]);
        ip(&["-n", &self.ns, "addr", "add", addr, "dev", &self.name]);
        ip(&["-n", &self.ns, "link", "set", "dev", &self.name, "up"]);
        ip(&["-n", &self.ns, "link", "set", "dev", "lo", "up"]);
    }

    /// curl inside the namespace, with `args`; its stdout.
    async fn curl(&self, args: &[&str]) -> Vec<u8> {
        let run = tokio::process::Command::new("ip")
            .args(["netns", "exec", &self.ns, "curl", "-sS", "--fail", "--max-time", "60"])
            .args(args)
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(LIMIT, run).await.expect("curl finished in time").expect("curl runs");
        assert!(out.status.success(), "curl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        out.stdout
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        if let Ok(out) = Command::new("ip").args(["netns", "pids", &self.ns]).output() {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("kill").args(["-9", pid]).status();
            }
        }
        let quiet = |args: &[&str]| Command::new("ip").args(args).stderr(Stdio::null()).status();
        let _ = quiet(&["netns", "del", &self.ns]);
        let _ = quiet(&["link", "del", "dev", &self.name]);
    }
}

#[tokio::test]
async fn curl_reaches_axum_on_the_userspace_stack_over_tap() {
    if !conflux_testkit::is_root() {
        conflux_testkit::skip!(Root, "TAP devices and namespaces need root (CAP_NET_ADMIN)");
    }
    if !conflux_testkit::have_command("ip") {
        conflux_testkit::skip!(Iproute2, "the ip command (iproute2) is not on PATH");
    }
    if !std::path::Path::new("/dev/net/tun").exists() {
        conflux_testkit::skip!(Tap, "/dev/net/tun is missing");
    }
    if !conflux_testkit::have_command("curl") {
        conflux_testkit::skip!(Curl, "curl is not on PATH");
    }
    let dev = Device::new();
    let registry = Registry::new();
    register_all(&registry);
    let uri = format!("netstack://{}/10.83.0.2/24:8080", dev.name);
    let listener = unikernel_http::listen(&registry, &uri).await.unwrap();
    dev.move_to_ns("10.83.0.1/24");
    let server = tokio::spawn(async move { axum::serve(listener, unikernel_http::app()).await });

    assert_eq!(dev.curl(&["http://10.83.0.2:8080/hello"]).await, b"hello from a userspace stack\n");
    // A body both ways (1 MiB), over the same stack.
    let tmp = conflux_testkit::TempDir::new("unikernel-http");
    let body = conflux_testkit::payload(5, 1 << 20);
    let file = tmp.path().join("body");
    std::fs::write(&file, &body).unwrap();
    let back = dev.curl(&["--data-binary", &format!("@{}", file.display()), "http://10.83.0.2:8080/echo"]).await;
    assert!(back == body, "{} bytes back of {}", back.len(), body.len());
    server.abort();
}

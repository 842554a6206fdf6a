//! Root tests (xtask runs this target with `--test-threads=1`): `netstack://`
//! on real TAP and TUN devices. Each test makes its device with `ip tuntap`,
//! opens it by URI in the root namespace, then moves it into a namespace of
//! its own whose kernel side runs the peers (`ip netns exec`); a guard
//! removes both.
#![forbid(unsafe_code)]

use std::process::{Command, Stdio};
use std::time::Duration;

use conflux_flow::{BoxFlow, FlowExt};
use conflux_mimic::{ListenError, RegisterOptions, Registry, register_netstack};
use conflux_testkit::{TIMEOUT, payload, within};
use conflux_uri::{Uri, UriPart};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Skips (visibly) unless TAP devices and namespaces can be made here.
macro_rules! need_tap {
    () => {
        if !conflux_testkit::is_root() {
            conflux_testkit::skip!(Root, "TAP devices and namespaces need root (CAP_NET_ADMIN)");
        }
        if !conflux_testkit::have_command("ip") {
            conflux_testkit::skip!(Iproute2, "the ip command (iproute2) is not on PATH");
        }
        if !std::path::Path::new("/dev/net/tun").exists() {
            conflux_testkit::skip!(Tap, "/dev/net/tun is missing");
        }
        if !conflux_testkit::have_command("socat") {
            conflux_testkit::skip!(Socat, "socat is not on PATH");
        }
    };
}

fn ip(args: &[&str]) {
    conflux_testkit::ip(args).unwrap_or_else(|e| panic!("{e}"));
}

/// A persistent TAP or TUN device made in the root namespace and a
/// namespace for its kernel side; both are removed on drop.
struct Device {
    name: String,
    ns: conflux_testkit::Netns,
}

impl Device {
    /// Makes device `mode` (`tap` or `tun`); it stays in the root namespace
    /// until [`move_to_ns`](Device::move_to_ns).
    fn new(mode: &str) -> Device {
        let ns = conflux_testkit::Netns::create("m").expect("a test namespace");
        let d = Device { name: format!("{}d", ns.name()), ns };
        ip(&["tuntap", "add", "dev", &d.name, "mode", mode]);
        d
    }

    /// Moves the device into the namespace with `addr` (`10.x.y.1/24`) on
    /// the kernel's side, up.
    fn move_to_ns(&self, addr: &str) {
        let up = |args: &[&str]| self.ns.ip(args).unwrap_or_else(|e| panic!("{e}"));
        self.ns.take_link(&self.name).unwrap_or_else(|e| panic!("{e}"));
        up(&["addr", "add", addr, "dev", &self.name]);
        up(&["link", "set", "dev", &self.name, "up"]);
    }

    /// A command run inside the namespace.
    fn cmd(&self, program: &str) -> tokio::process::Command {
        let mut c = tokio::process::Command::from(self.ns.cmd(program));
        c.kill_on_drop(true);
        c
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        // Still in the root namespace if never moved (the namespace, dropped
        // next, takes it along otherwise).
        let _ = Command::new("ip").args(["link", "del", "dev", &self.name]).stderr(Stdio::null()).status();
    }
}

fn registry() -> Registry {
    let registry = Registry::new();
    register_netstack(&registry, RegisterOptions::new());
    registry
}

fn uri(s: &str) -> Uri {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// Echoes every accepted flow until it ends, then closes it.
fn echo(mut listener: conflux_mimic::Listener) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Ok(a) = listener.accept().await {
            tokio::spawn(async move {
                let mut f = a.flow;
                let got = f.read_to_end().await.unwrap_or_default();
                let _ = f.write(got).await;
                let _ = f.close().await;
            });
        }
    })
}

/// A kernel client in the namespace sends `data` to `addr:port` with socat,
/// half-closes, and returns what came back.
async fn kernel_echo(dev: &Device, addr: &str, port: u16, data: &[u8]) -> Vec<u8> {
    let mut cmd = dev.cmd("socat");
    cmd.args(["-t", "30", "-", &format!("TCP:{addr}:{port}")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("socat runs");
    let mut stdin = child.stdin.take().unwrap();
    let data = data.to_vec();
    let writer = tokio::spawn(async move {
        stdin.write_all(&data).await.unwrap();
        drop(stdin);
    });
    let mut stdout = child.stdout.take().unwrap();
    let mut back = Vec::new();
    within("the kernel client's echo", Duration::from_secs(60), stdout.read_to_end(&mut back)).await.unwrap();
    writer.await.unwrap();
    let out = within("socat's exit", TIMEOUT, child.wait_with_output()).await.unwrap();
    assert!(out.status.success(), "socat: {}", String::from_utf8_lossy(&out.stderr));
    back
}

/// Dials by URI, retrying while the kernel-side listener is not up yet.
async fn dial_retrying(registry: &Registry, text: &str) -> BoxFlow {
    let ctx = registry.ctx_from_uri(&uri(text)).unwrap();
    for _ in 0..100 {
        match registry.resolve(&ctx).await {
            Ok(f) => return f,
            Err(e) if e.to_string().contains("refused") => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(e) => panic!("{text}: {e}"),
        }
    }
    panic!("{text}: never listened");
}

#[tokio::test]
async fn tap_in_a_namespace_kernel_client_reaches_our_listener_and_uris_share_the_stack() {
    need_tap!();
    let dev = Device::new("tap");
    let registry = registry();
    let name = &dev.name;
    let listener = registry.listen(&uri(&format!("netstack-listen://{name}/10.79.0.2/24?mtu=1500"))).await.unwrap();
    let port = listener.local_uri().port().unwrap();
    assert_ne!(port, 0);
    assert_eq!(listener.local_uri(), &uri(&format!("netstack://{name}/10.79.0.2/24:{port}?mtu=1500")));
    // A second URI on the device shares its stack (a second open would be EBUSY)...
    let second = registry.listen(&uri(&format!("netstack://{name}/10.79.0.2/24:7002"))).await.unwrap();
    // ...and one with another address is refused, naming the device.
    let err = registry.listen(&uri(&format!("netstack://{name}/10.79.0.3/24:7003"))).await.unwrap_err();
    let ListenError::Uri(e) = &err else { panic!("{err:?}") };
    assert_eq!((e.part(), e.value()), (UriPart::Host, name.as_str()), "{err}");
    assert!(err.to_string().contains("already has a stack on it as 10.79.0.2/24"), "{err}");
    let err = registry.listen(&uri(&format!("netstack://{name}/10.79.0.2/24:7004?mtu=1400"))).await.unwrap_err();
    let ListenError::Uri(e) = &err else { panic!("{err:?}") };
    assert_eq!((e.part(), e.value()), (UriPart::Query, "mtu"), "{err}");

    dev.move_to_ns("10.79.0.1/24");
    let (_e1, _e2) = (echo(listener), echo(second));
    for (p, seed) in [(port, 1), (7002, 2)] {
        let data = payload(seed, 2 << 20);
        let back = kernel_echo(&dev, "10.79.0.2", p, &data).await;
        assert!(back == data, "port {p}: {} bytes back of {}", back.len(), data.len());
    }

    // Our client through the same device's stack -> a kernel server in the namespace.
    let tmp = conflux_testkit::TempDir::new("nsuri");
    let out = tmp.path().join("out");
    let mut server = dev.cmd("socat");
    server.args(["-t", "30", "-u", "TCP-LISTEN:5002,reuseaddr", &format!("CREATE:{}", out.display())]);
    let server = server.stdin(Stdio::null()).output();
    let server = tokio::spawn(server);
    let mut f = dial_retrying(&registry, &format!("netstack://{name}/10.79.0.2/24?dst=10.79.0.1:5002")).await;
    let data = payload(3, 1 << 20);
    f.write(data.clone()).await.unwrap();
    f.close().await.unwrap();
    let status = within("the kernel server", Duration::from_secs(60), server).await.unwrap().unwrap();
    assert!(status.status.success(), "socat server: {}", String::from_utf8_lossy(&status.stderr));
    assert!(std::fs::read(&out).unwrap() == data, "the kernel server got other bytes");
}

#[tokio::test]
async fn tun_in_a_namespace_kernel_client_reaches_our_listener() {
    need_tap!();
    let dev = Device::new("tun");
    let registry = registry();
    let listener = registry.listen(&uri(&format!("netstack://{}/10.81.0.2/24:7100", dev.name))).await.unwrap();
    dev.move_to_ns("10.81.0.1/24");
    let _echo = echo(listener);
    let data = payload(4, 1 << 20);
    let back = kernel_echo(&dev, "10.81.0.2", 7100, &data).await;
    assert!(back == data, "{} bytes back of {}", back.len(), data.len());
}

#[tokio::test]
async fn a_device_is_released_with_its_last_listener_and_opens_again() {
    need_tap!();
    let dev = Device::new("tap");
    let registry = registry();
    let text = format!("netstack://{}/10.82.0.2/24:7200", dev.name);
    for round in 0..3 {
        let listener = registry.listen(&uri(&text)).await.unwrap_or_else(|e| panic!("round {round}: {e}"));
        drop(listener);
    }
    // Another address is fine once nothing uses the device.
    let other = registry.listen(&uri(&format!("netstack://{}/10.82.0.3/24:7200", dev.name))).await.unwrap();
    drop(other);
}

//! End to end through conflux's userspace stack on a TAP device: in a
//! network namespace the test creates (and removes), curl -> `conflux relay`
//! (tcp-listen on the namespace's 127.0.0.1 -> `netstack://TAP/10.77.0.2/24?
//! dst=10.77.0.1:PORT`, the relay's far side a userspace stack on the TAP)
//! -> the namespace's kernel TCP -> socat -> a Unix socket -> a hyper server
//! in the test process: a 64 MiB upload checked by SHA-256, then a second
//! request on the kept-alive connection. Needs root (skipped visibly
//! otherwise; CI runs as root).
#![forbid(unsafe_code)]

mod e2e_support;

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use conflux_testkit::{TempDir, have_command, is_root, skip};
use e2e_support::http::{curl_upload_then_hello, serve_http_unix};
use e2e_support::{KillOnDrop, NetnsTap, Relay, wait_listening_in};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_through_a_relay_whose_far_side_is_a_userspace_stack_on_a_tap_in_a_namespace() {
    if !is_root() {
        skip!(Root, "creating a namespace and a TAP device needs root");
    }
    if !have_command("ip") {
        skip!(Iproute2, "ip is not installed (cargo xtask install)");
    }
    if !have_command("curl") {
        skip!(Curl, "curl is not installed (cargo xtask install)");
    }
    if !have_command("socat") {
        skip!(Socat, "socat is not installed (cargo xtask install)");
    }
    let dir = TempDir::new("tap-http");
    let sock = dir.path().join("http.sock");
    let connections = Arc::new(AtomicUsize::new(0));
    serve_http_unix(tokio::net::UnixListener::bind(&sock).expect("bind the HTTP socket"), connections.clone());

    let net = NetnsTap::new("10.77.0.1/24");
    let mut socat = KillOnDrop(
        Command::new("ip")
            .args(["netns", "exec", &net.netns, "socat", "-t", "30", "TCP-LISTEN:0,bind=10.77.0.1,fork"])
            .arg(format!("UNIX-CONNECT:{}", sock.display()))
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn socat in the namespace"),
    );
    let port = wait_listening_in("socat in the namespace", &mut socat.0, Ipv4Addr::new(10, 77, 0, 1));
    let to = format!("netstack://{}/10.77.0.2/24?dst=10.77.0.1:{port}", net.tap);
    let relay = Relay::start_in(Some(&net.netns), &to, &[]);
    curl_upload_then_hello(Some(&net.netns), relay.port, connections).await;
    drop(relay);
    drop(socat);
}

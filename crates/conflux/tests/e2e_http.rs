//! End to end with curl: `curl --http1.1` -> `conflux relay` (the binary, as
//! a process; tcp-listen on 127.0.0.1 -> framed fc-vsock through a fake
//! Firecracker VMM) -> a hyper server speaking HTTP/1.1 over the framed flow.
//! One curl run uploads 64 MiB (PUT, `Expect: 100-continue`) and then asks
//! for a second URL on the same kept-alive connection: the server hashes the
//! body (SHA-256) and counts connections.
#![forbid(unsafe_code)]

mod e2e_support;

use conflux_testkit::{have_command, skip};
use e2e_support::http::{curl_upload_then_hello, serve_http_framed};
use e2e_support::{FramedEcho, Relay, fake_vmm, guest};
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_uploads_64_mib_and_keeps_the_connection_alive_through_the_relay() {
    if !have_command("curl") {
        skip!(Curl, "curl is not installed (cargo xtask install)");
    }
    let (_vmm_dir, vmm, uri) = fake_vmm("http");
    let connections = Arc::new(AtomicUsize::new(0));
    serve_http_framed(guest(&vmm, FramedEcho::PORT), connections.clone());
    let relay = Relay::start(&uri, &[]);

    curl_upload_then_hello(None, relay.port, connections).await;
}

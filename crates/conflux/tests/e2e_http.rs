//! End to end with curl: `curl --http1.1` -> `conflux relay` (the binary, as
//! a process; tcp-listen on 127.0.0.1 -> framed fc-vsock through a fake
//! Firecracker VMM) -> a hyper server speaking HTTP/1.1 over the framed flow.
//! One curl run uploads 64 MiB (PUT, `Expect: 100-continue`) and then asks
//! for a second URL on the same kept-alive connection: the server hashes the
//! body (SHA-256) and counts connections.
#![forbid(unsafe_code)]

mod e2e_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use conflux_flow::FlowExt;
use conflux_hvsock::{FamilyListener, RawFlow};
use conflux_testkit::{TempDir, have_command, payload, skip};
use e2e_support::{FramedEcho, Relay, assert_success, fake_vmm, framing, guest, run_client, sha256_hex, write_input};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};
use std::process::Command;

const UPLOAD: usize = 64 << 20;

/// `PUT /upload`: `<length> <sha256>\n` of the body; anything else: `hello\n`.
async fn handle(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, hyper::Error> {
    if req.method() == Method::PUT && req.uri().path() == "/upload" {
        let mut body = req.into_body();
        let (mut len, mut hash) = (0usize, Sha256::new());
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame?.into_data() {
                len += data.len();
                hash.update(&data);
            }
        }
        let hex: String = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
        return Ok(Response::new(Full::new(Bytes::from(format!("{len} {hex}\n")))));
    }
    Ok(Response::new(Full::new(Bytes::from_static(b"hello\n"))))
}

/// Serves HTTP/1.1 with keep-alive on every flow `listener` accepts,
/// counting them; each flow is closed (Close, acknowledged) when its
/// connection ends.
fn serve_http(listener: conflux_hvsock::testing::GuestListener, connections: Arc<AtomicUsize>) {
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            connections.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let io = TokioIo::new(RawFlow::new(sock).into_framed(framing()).into_tokio());
                let conn = hyper::server::conn::http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(io, hyper::service::service_fn(handle))
                    .without_shutdown();
                if let Ok(parts) = conn.await {
                    let (mut flow, _) = parts.io.into_inner().into_parts();
                    let _ = flow.close().await;
                }
            });
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_uploads_64_mib_and_keeps_the_connection_alive_through_the_relay() {
    if !have_command("curl") {
        skip!(Curl, "curl is not installed (cargo xtask install)");
    }
    let (_vmm_dir, vmm, uri) = fake_vmm("http");
    let connections = Arc::new(AtomicUsize::new(0));
    serve_http(guest(&vmm, FramedEcho::PORT), connections.clone());
    let relay = Relay::start(&uri, &[]);

    let dir = TempDir::new("curl");
    let data = payload(11, UPLOAD);
    let input = write_input(dir.path(), "upload.bin", &data);
    let base = format!("http://127.0.0.1:{}", relay.port);
    let w = "\\nconnects=%{num_connects}\\n";
    let mut cmd = Command::new("curl");
    cmd.args(["--http1.1", "-sS", "--fail", "--max-time", "50", "-T"])
        .arg(&input)
        .args(["-w", w, &format!("{base}/upload"), "--next", "--http1.1", "-sS", "--fail", "--max-time", "50"])
        .args(["-w", w, &format!("{base}/hello")]);
    let devnull = dir.path().join("empty");
    std::fs::write(&devnull, b"").unwrap();
    let out = tokio::task::spawn_blocking(move || run_client("curl", &mut cmd, &devnull)).await.unwrap();
    assert_success("curl", out.status, &out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let want = format!("{UPLOAD} {}\n\nconnects=1\nhello\n\nconnects=0\n", sha256_hex(&data));
    assert_eq!(stdout, want, "curl's output (the upload's length and SHA-256, then the kept-alive request)");
    assert_eq!(connections.load(Ordering::SeqCst), 1, "both requests on one connection");
}

//! The HTTP side of the end-to-end tests: a hyper server (HTTP/1.1,
//! keep-alive) over a framed fc-vsock flow or a Unix socket, and a curl run
//! that uploads [`UPLOAD`] bytes and then asks again on the same connection.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use conflux_flow::FlowExt;
use conflux_hvsock::testing::GuestListener;
use conflux_hvsock::{FamilyListener, RawFlow};
use conflux_testkit::{TempDir, payload};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};

use super::{assert_success, framing, run_client, sha256_hex, write_input};

/// The size of curl's upload.
pub const UPLOAD: usize = 64 << 20;

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
pub fn serve_http_framed(listener: GuestListener, connections: Arc<AtomicUsize>) {
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

/// Serves HTTP/1.1 with keep-alive on every connection of the Unix
/// `listener`, counting them.
pub fn serve_http_unix(listener: tokio::net::UnixListener, connections: Arc<AtomicUsize>) {
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            connections.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let conn = hyper::server::conn::http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), hyper::service::service_fn(handle));
                let _ = conn.await;
            });
        }
    });
}

/// curl (inside `netns` if given) uploads [`UPLOAD`] bytes to
/// `127.0.0.1:port/upload`, then gets `/hello` on the same connection; the
/// answers must be the upload's length and SHA-256 and `hello`, and the
/// server must have seen one connection.
pub async fn curl_upload_then_hello(netns: Option<&str>, port: u16, connections: Arc<AtomicUsize>) {
    let dir = TempDir::new("curl");
    let data = payload(11, UPLOAD);
    let input = write_input(dir.path(), "upload.bin", &data);
    let base = format!("http://127.0.0.1:{port}");
    let w = "\\nconnects=%{num_connects}\\n";
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, "curl"]);
            c
        }
        None => Command::new("curl"),
    };
    cmd.args(["--http1.1", "-sS", "--fail", "--max-time", "50", "-T"])
        .arg(&input)
        .args(["-w", w, &format!("{base}/upload"), "--next", "--http1.1", "-sS", "--fail", "--max-time", "50"])
        .args(["-w", w, &format!("{base}/hello")]);
    let empty = write_input(dir.path(), "empty", b"");
    let out = tokio::task::spawn_blocking(move || run_client("curl", &mut cmd, &empty)).await.unwrap();
    assert_success("curl", out.status, &out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let want = format!("{UPLOAD} {}\n\nconnects=1\nhello\n\nconnects=0\n", sha256_hex(&data));
    assert_eq!(stdout, want, "curl's output (the upload's length and SHA-256, then the kept-alive request)");
    assert_eq!(connections.load(Ordering::SeqCst), 1, "both requests on one connection");
}

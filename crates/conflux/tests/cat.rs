//! `conflux cat` against the framing's peer models (the old Go peer and the
//! OCaml peer, byte for byte as conflux-hvsock's tests model them), both
//! ways: cat connecting (role C of test vector 5) and cat accepting one flow
//! on a `-listen` URI (role S); plus raw cat over TCP with half-close.

mod common;
#[path = "../../conflux-hvsock/tests/peers/mod.rs"]
mod peers;

use std::path::Path;
use std::time::Duration;

use common::{WAIT, run};
use conflux_testkit::{TempDir, within};
use peers::{go_peer, ocaml_peer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

async fn cat(args: Vec<String>, stdin: &'static [u8]) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run(&args, stdin)
    })
    .await
    .unwrap()
}

fn framed_uri(scheme: &str, path: &Path) -> String {
    format!("{scheme}://{}?framing=shutdown", path.display())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cat_connects_to_the_go_and_ocaml_peers() {
    for peer in ["go", "ocaml"] {
        let dir = TempDir::new(peer);
        let path = dir.path().join("s.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let model = tokio::spawn(async move {
            let (sock, _) = listener.accept().await.unwrap();
            if peer == "go" { go_peer(sock, false).await } else { ocaml_peer(sock, false).await }
        });
        let started = std::time::Instant::now();
        let out = cat(vec!["cat".into(), framed_uri("unix", &path)], b"hello").await;
        assert_eq!(out.status.code(), Some(0), "{peer}: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(out.stdout, b"world", "{peer}");
        assert_eq!(within("the model", WAIT, model).await.unwrap(), b"hello", "{peer}");
        assert!(started.elapsed() < Duration::from_secs(4), "{peer}: acknowledged, no close timeout");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cat_accepts_the_ocaml_peer() {
    // (The old Go peer cannot be C against a closing S that half-closes first:
    // it takes any marker but Close for an error. The OCaml peer skips them.)
    let dir = TempDir::new("listen");
    let path = dir.path().join("l.sock");
    let uri = framed_uri("unix-listen", &path);
    let cat = tokio::spawn(cat(vec!["cat".into(), uri], b"world"));
    let sock = within("cat's listener", WAIT, async {
        loop {
            if let Ok(s) = UnixStream::connect(&path).await {
                break s;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let received = within("the model", WAIT, ocaml_peer(sock, true)).await;
    assert_eq!(received, b"world");
    let out = within("cat", WAIT, cat).await.unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.stdout, b"hello");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_cat_over_tcp_half_closes_at_stdin_eof() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap(); // only ends if cat half-closed
        s.write_all(b"got: ").await.unwrap();
        s.write_all(&got).await.unwrap();
        got
    });
    let out = cat(vec!["cat".into(), format!("tcp://127.0.0.1:{port}")], b"ping").await;
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.stdout, b"got: ping");
    assert_eq!(within("server", WAIT, server).await.unwrap(), b"ping");
}

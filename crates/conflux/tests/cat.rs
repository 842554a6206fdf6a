//! `conflux cat` against the framing's peer models (the old Go peer and the
//! OCaml peer, byte for byte as conflux-hvsock's tests model them), both
//! ways: cat connecting (role C of test vector 5) and cat accepting one flow
//! on a `-listen` URI (role S); plus raw cat over TCP with half-close.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{WAIT, run};
use conflux_testkit::{TempDir, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

const C_TO_S: [u8; 13] = [0x05, 0, 0, 0, 0x68, 0x65, 0x6c, 0x6c, 0x6f, 0xad, 0xde, 0xef, 0xbe];
const S_TO_C: [u8; 13] = [0x05, 0, 0, 0, 0x77, 0x6f, 0x72, 0x6c, 0x64, 0xad, 0xde, 0xad, 0xde];
const CLOSE: [u8; 4] = [0xad, 0xde, 0xad, 0xde];

/// The old Go peer in role S: a header is one `read` of 4 bytes, `Data(0)`
/// skipped; reads until ShutdownWrite, sends "world" and Close, then expects
/// exactly one message: the acknowledgement.
async fn go_peer_s(mut sock: UnixStream) -> Vec<u8> {
    async fn read_header(sock: &mut UnixStream) -> u32 {
        let mut h = [0u8; 4];
        let n = sock.read(&mut h).await.unwrap();
        assert_eq!(n, 4, "the Go peer reads a header with one read");
        u32::from_le_bytes(h)
    }
    let mut received = Vec::new();
    loop {
        match read_header(&mut sock).await {
            0xBEEF_DEAD => break,
            0 => {}
            n if n < 1 << 31 => {
                let mut p = vec![0u8; n as usize];
                sock.read_exact(&mut p).await.unwrap();
                received.extend_from_slice(&p);
            }
            other => panic!("unexpected header {other:#x}"),
        }
    }
    sock.write_all(&S_TO_C).await.unwrap();
    assert_eq!(read_header(&mut sock).await, 0xDEAD_DEAD, "exactly one message: the ack");
    received
}

/// One frame as the OCaml peer reads it (full reads); `None` at Eof.
async fn frame(sock: &mut UnixStream) -> Option<(u32, Vec<u8>)> {
    let mut h = [0u8; 4];
    sock.read_exact(&mut h).await.ok()?;
    let n = u32::from_le_bytes(h);
    let mut p = Vec::new();
    if n < 1 << 31 {
        p.resize(n as usize, 0);
        sock.read_exact(&mut p).await.ok()?;
    }
    Some((n, p))
}

/// The OCaml peer in role S or C; returns the data it received.
async fn ocaml_peer(mut sock: UnixStream, role_c: bool) -> Vec<u8> {
    let mut received = Vec::new();
    if role_c {
        sock.write_all(&C_TO_S).await.unwrap();
        while let Some((h, p)) = frame(&mut sock).await {
            received.extend_from_slice(&p);
            if h == 0xDEAD_DEAD {
                sock.write_all(&CLOSE).await.unwrap();
                break;
            }
        }
    } else {
        while let Some((h, p)) = frame(&mut sock).await {
            received.extend_from_slice(&p);
            if h == 0xBEEF_DEAD {
                break;
            }
        }
        sock.write_all(&S_TO_C).await.unwrap();
        while let Some((h, _)) = frame(&mut sock).await {
            if h == 0xDEAD_DEAD || h == 0xDEAD_BEEF {
                break;
            }
        }
    }
    received
}

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
            if peer == "go" { go_peer_s(sock).await } else { ocaml_peer(sock, false).await }
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

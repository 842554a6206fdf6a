//! The real client: py9p (PyPI `p9fs==0.0.4`, installed by `cargo xtask install`
//! into `<target>/py9p-venv`, or the venv named by `CONFLUX_PY9P_VENV`) lists,
//! reads, creates, writes, stats and removes files through our server over TCP,
//! with 9P2000.u and with 9P2000. Skips (kind `p9fs`) when the venv is missing.
#![cfg(target_os = "linux")]

use std::path::PathBuf;
use std::process::Command;

use conflux_9p::{HostFs, Server};
use conflux_tcp::TcpStack;

/// `<target>/py9p-venv/bin/python3`, the target dir found from this test binary
/// (`<target>/<profile>/deps/p9fs-*`).
fn venv_python() -> PathBuf {
    let venv = std::env::var_os("CONFLUX_PY9P_VENV").map(PathBuf::from).unwrap_or_else(|| {
        let exe = std::env::current_exe().unwrap();
        exe.ancestors().nth(3).unwrap().join("py9p-venv")
    });
    venv.join("bin/python3")
}

async fn drive(version: &str) {
    let python = venv_python();
    if !python.exists() {
        conflux_testkit::skip!(P9fs, "no py9p venv at {} (run `cargo xtask install`)", python.display());
    }
    let dir = std::env::temp_dir().join(format!("conflux-9p-py9p-{}-{version}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::write(dir.join("hello.txt"), "hello from conflux").unwrap();
    std::fs::write(dir.join("sub/deep.txt"), "deep").unwrap();

    let server = Server::new(HostFs::new(&dir).unwrap());
    let stack = conflux_tcp_host::HostStack::new();
    let listening = stack
        .listen(0, None, move |flow| {
            let server = server.clone();
            async move {
                if let Err(e) = server.serve(flow).await {
                    panic!("session failed: {e}");
                }
            }
        })
        .unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py9p_client.py");
    let port = listening.port().to_string();
    let v = version.to_owned();
    let out = tokio::task::spawn_blocking(move || {
        let version = v;
        Command::new(python).args([script, &port, &version]).output().unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "py9p failed: {}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    let got: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(got["version"], version);
    assert_eq!(got["ls"], serde_json::json!(["hello.txt", "sub"]));
    assert_eq!(got["hello"], "hello from conflux");
    assert_eq!(got["deep"], "deep");
    assert_eq!(got["new"], "written by py9p");
    assert_eq!(got["new_length"], 15);
    assert_eq!(got["ls_after"], serde_json::json!(["new.txt", "sub"]));
    assert_eq!(got["missing"], "No such file or directory");
    assert_eq!(std::fs::read(dir.join("new.txt")).unwrap(), b"written by py9p");
    assert!(!dir.join("hello.txt").exists());
    stack.disconnect().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn py9p_dotu() {
    drive("9P2000.u").await;
}

#[tokio::test]
async fn py9p_plain() {
    drive("9P2000").await;
}

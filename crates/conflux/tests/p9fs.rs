//! The real client against the binary: py9p (PyPI `p9fs==0.0.4`, installed
//! by `cargo xtask install` into `<target>/py9p-venv`, or the venv named by
//! `CONFLUX_PY9P_VENV`) lists, reads, creates, writes, stats and removes
//! files through `conflux serve-9p` over TCP, with 9P2000.u and with 9P2000;
//! with `--read-only` its writes are refused. Skips (kind `p9fs`) when the
//! venv is missing.
#![cfg(target_os = "linux")]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{Running, WAIT};
use conflux_testkit::TempDir;

/// `<target>/py9p-venv/bin/python3`, the target dir found from this test
/// binary (`<target>/<profile>/deps/p9fs-*`).
fn venv_python() -> PathBuf {
    let venv = std::env::var_os("CONFLUX_PY9P_VENV").map(PathBuf::from).unwrap_or_else(|| {
        let exe = std::env::current_exe().unwrap();
        exe.ancestors().nth(3).unwrap().join("py9p-venv")
    });
    venv.join("bin/python3")
}

fn tree(tag: &str) -> TempDir {
    let dir = TempDir::new(tag);
    std::fs::create_dir_all(dir.path().join("sub")).unwrap();
    std::fs::write(dir.path().join("hello.txt"), "hello from conflux").unwrap();
    std::fs::write(dir.path().join("sub/deep.txt"), "deep").unwrap();
    dir
}

/// Serves `dir` with `conflux serve-9p` and runs the py9p script against it.
fn drive(python: &Path, dir: &Path, version: &str, extra: &[&str]) -> (Output, Running) {
    let dir_text = dir.display().to_string();
    let mut args = vec!["serve-9p", "tcp://127.0.0.1:0", &dir_text];
    args.extend_from_slice(extra);
    let mut server = Running::spawn(&args);
    let port = server.tcp_port().to_string();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py9p_client.py");
    let mut child = Command::new(python)
        .args([script, &port, version])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(started.elapsed() < WAIT, "py9p did not finish within {WAIT:?}");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    (child.wait_with_output().unwrap(), server)
}

fn py9p(version: &str) {
    let python = venv_python();
    if !python.exists() {
        conflux_testkit::skip!(P9fs, "no py9p venv at {} (run `cargo xtask install`)", python.display());
    }
    let dir = tree(&format!("py9p-{version}"));
    let (out, mut server) = drive(&python, dir.path(), version, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "py9p failed: {}\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.stderr()
    );
    let got: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(got["version"], version);
    assert_eq!(got["ls"], serde_json::json!(["hello.txt", "sub"]));
    assert_eq!(got["hello"], "hello from conflux");
    assert_eq!(got["deep"], "deep");
    assert_eq!(got["new"], "written by py9p");
    assert_eq!(got["new_length"], 15);
    assert_eq!(got["ls_after"], serde_json::json!(["new.txt", "sub"]));
    assert_eq!(got["missing"], "No such file or directory");
    assert_eq!(std::fs::read(dir.path().join("new.txt")).unwrap(), b"written by py9p");
    assert!(!dir.path().join("hello.txt").exists());
    server.sigterm();
    assert_eq!(server.wait(WAIT), Some(0), "SIGTERM ends the server cleanly\n{}", server.stderr());
    assert!(server.stderr().contains("9P session ended"), "{}", server.stderr());
}

#[test]
fn py9p_dotu() {
    py9p("9P2000.u");
}

#[test]
fn py9p_plain() {
    py9p("9P2000");
}

#[test]
fn py9p_read_only() {
    let python = venv_python();
    if !python.exists() {
        conflux_testkit::skip!(P9fs, "no py9p venv at {} (run `cargo xtask install`)", python.display());
    }
    let dir = tree("py9p-ro");
    let (out, _server) = drive(&python, dir.path(), "9P2000.u", &["--read-only"]);
    // The script reads first, then its create is refused.
    assert!(!out.status.success(), "a write got through --read-only");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("RpcError"), "refused by the server: {err}");
    assert!(dir.path().join("hello.txt").exists() && !dir.path().join("new.txt").exists());
}

#[test]
fn missing_directory_is_bad_input() {
    let out = common::run(&["serve-9p", "tcp://127.0.0.1:0", "/nonexistent/conflux-9p-dir"], b"");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("conflux: /nonexistent/conflux-9p-dir"), "{err}");
}

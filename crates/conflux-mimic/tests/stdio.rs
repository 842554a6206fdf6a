//! `stdio:` through [`register_all`], in a child process: this test binary
//! runs itself with its stdin and stdout as pipes. Listening yields exactly
//! one flow (stdin and stdout) and then ends; dialling gives that flow too;
//! `framing=shutdown` frames it.
#![forbid(unsafe_code)]

use std::io::{Read, Write};
use std::process::{Command, Stdio};

use conflux_flow::{FlowExt, Shutdown};
use conflux_mimic::{Registry, register_all};

/// Set in the child: which side of `stdio:` it runs.
const CHILD: &str = "CONFLUX_STDIO_CHILD";

/// Runs the ignored test `name` of this binary as a child with `input` on
/// its stdin; its stdout.
fn run_child(name: &str, mode: &str, input: &[u8]) -> Vec<u8> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", name, "--test-threads=1", "--quiet"])
        .env(CHILD, mode)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input).unwrap();
    drop(stdin);
    let mut out = Vec::new();
    child.stdout.take().unwrap().read_to_end(&mut out).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "child {name} ({mode}) failed: {status}; stdout {:?}", String::from_utf8_lossy(&out));
    out
}

/// What the child wrote between its markers (the test harness writes its own lines around them).
fn between_markers(out: &[u8]) -> &[u8] {
    let text = out;
    let start = text.windows(7).position(|w| w == b"<<BEG>>").expect("begin marker") + 7;
    let end = text.windows(7).rposition(|w| w == b"<<END>>").expect("end marker");
    &text[start..end]
}

#[test]
fn listening_on_stdio_yields_that_one_flow_then_ends() {
    let out = run_child("stdio_child", "listen", b"hello through stdin");
    assert_eq!(between_markers(&out), b"echo: hello through stdin; then no more flows");
}

#[test]
fn dialling_stdio_gives_stdin_and_stdout() {
    let out = run_child("stdio_child", "dial", b"dialled");
    assert_eq!(between_markers(&out), b"echo: dialled");
}

/// The child: echoes stdin to stdout between markers, through `stdio:`.
#[tokio::test]
#[ignore = "run by the other tests of this file, as a child process"]
async fn stdio_child() {
    let Ok(mode) = std::env::var(CHILD) else { return };
    let registry = Registry::new();
    register_all(&registry);
    let uri = "stdio:".parse().unwrap();
    let (mut flow, mut listener) = if mode == "listen" {
        let mut listener = registry.listen(&uri).await.unwrap();
        assert_eq!(listener.local_uri().to_string(), "stdio:");
        let a = listener.accept().await.unwrap();
        assert_eq!(a.peer, "stdio");
        (a.flow, Some(listener))
    } else {
        (registry.dial(&uri).await.unwrap(), None)
    };
    let got = flow.read_to_end().await.unwrap();
    let mut reply = b"<<BEG>>echo: ".to_vec();
    reply.extend_from_slice(&got);
    if let Some(listener) = listener.as_mut() {
        let err = listener.accept().await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::NotConnected, "{err}");
        reply.extend_from_slice(b"; then no more flows");
    }
    reply.extend_from_slice(b"<<END>>");
    flow.write(reply).await.unwrap();
    flow.shutdown(Shutdown::Write).await.unwrap();
    flow.close().await.unwrap();
}

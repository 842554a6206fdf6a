//! `stdio:` through [`register_all`], in a child process: this test binary
//! runs itself with its stdin and stdout as pipes. Listening yields exactly
//! one flow (stdin and stdout) and then ends; dialling gives that flow too;
//! `framing=shutdown` frames it (the child's stdin and stdout then a Unix
//! socket pair, framed on this side too).
#![forbid(unsafe_code)]

use std::io::{Read, Write};
use std::process::{Command, Stdio};

use conflux_flow::{FlowExt, Shutdown};
use conflux_mimic::{Registry, register_all};
use conflux_testkit::{TIMEOUT, within};

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

/// `stdio:?framing=shutdown`: the child's stdin and stdout are one end of a
/// Unix socket pair, whose other end this test frames too. The child first
/// prints a marker line (the test harness writes before it).
#[tokio::test]
async fn listening_on_framed_stdio_speaks_the_framing() {
    use conflux_hvsock::{FramingConfig, RawFlow, UnixSocket};
    use std::os::fd::OwnedFd;
    use tokio::io::AsyncReadExt;

    let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    let stdin: OwnedFd = theirs.try_clone().unwrap().into();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "stdio_child", "--test-threads=1", "--quiet", "--nocapture"])
        .env(CHILD, "framed-listen")
        .stdin(Stdio::from(stdin))
        .stdout(Stdio::from(OwnedFd::from(theirs)))
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    ours.set_nonblocking(true).unwrap();
    // Kept open to drain what the child's test harness writes after the flow.
    let harness = tokio::net::UnixStream::from_std(ours.try_clone().unwrap()).unwrap();
    let mut stream = tokio::net::UnixStream::from_std(ours).unwrap();
    // Up to the marker, byte by byte: what follows is framed.
    let mut seen = Vec::new();
    within("marker", TIMEOUT, async {
        while !seen.ends_with(b"<<FRAMED>>\n") {
            seen.push(stream.read_u8().await.unwrap());
        }
    })
    .await;
    let config = FramingConfig::new().close_timeout(std::time::Duration::from_secs(2));
    let mut flow = RawFlow::new(UnixSocket::from_tokio(stream).unwrap()).into_framed(config);
    flow.write("framed stdio").await.unwrap();
    flow.shutdown(Shutdown::Write).await.unwrap();
    assert_eq!(within("echo", TIMEOUT, flow.read_to_end()).await.unwrap(), b"echo: framed stdio");
    within("close", TIMEOUT, flow.close()).await.unwrap();
    assert!(!flow.close_timed_out(), "the child answered our Close");
    let mut rest = Vec::new();
    let mut harness = harness;
    within("the child's harness", TIMEOUT, harness.read_to_end(&mut rest)).await.unwrap();
    let status = tokio::task::spawn_blocking(move || child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status}");
}

/// The child: echoes stdin to stdout between markers, through `stdio:`.
#[tokio::test]
#[ignore = "run by the other tests of this file, as a child process"]
async fn stdio_child() {
    let Ok(mode) = std::env::var(CHILD) else { return };
    let registry = Registry::new();
    register_all(&registry);
    if mode == "framed-listen" {
        println!("<<FRAMED>>");
        std::io::stdout().flush().unwrap();
        let mut listener = registry.listen(&"stdio:?framing=shutdown".parse().unwrap()).await.unwrap();
        let mut a = listener.accept().await.unwrap();
        let got = a.flow.read_to_end().await.unwrap();
        let mut reply = b"echo: ".to_vec();
        reply.extend_from_slice(&got);
        a.flow.write(reply).await.unwrap();
        a.flow.shutdown(Shutdown::Write).await.unwrap();
        a.flow.close().await.unwrap();
        return;
    }
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

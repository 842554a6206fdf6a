//! Listening and dialling by URI through [`register_all`]: an echo over each
//! scheme both ways, the bind address and port 0, socket paths (stale,
//! live, not a socket, removed on drop), and bad input naming its part.
#![forbid(unsafe_code)]

use conflux_flow::{BoxFlow, FlowExt, Shutdown};
use conflux_mimic::{ListenError, Listener, Registry, register_all};
use conflux_testkit::{TIMEOUT, TempDir, within};
use conflux_uri::{Host, Target, Uri, UriPart};

fn registry() -> Registry {
    let registry = Registry::new();
    register_all(&registry);
    registry
}

fn uri(s: &str) -> Uri {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// Serves one echo on the next accepted flow.
fn echo_one(mut listener: Listener) -> tokio::task::JoinHandle<(Listener, String)> {
    tokio::spawn(async move {
        let mut a = within("accept", TIMEOUT, listener.accept()).await.unwrap();
        let got = within("echo read", TIMEOUT, a.flow.read_to_end()).await.unwrap();
        a.flow.write(got).await.unwrap();
        a.flow.close().await.unwrap();
        (listener, a.peer)
    })
}

async fn ping(mut flow: BoxFlow, text: &str) {
    flow.write(text.to_string()).await.unwrap();
    flow.shutdown(Shutdown::Write).await.unwrap();
    let back = within("echo", TIMEOUT, flow.read_to_end()).await.unwrap();
    assert_eq!(back, text.as_bytes());
    flow.close().await.unwrap();
}

#[tokio::test]
async fn tcp_listens_on_loopback_by_default_and_reports_the_port() {
    let registry = registry();
    let listener = registry.listen(&uri("tcp-listen://:0")).await.unwrap();
    let local = listener.local_uri().clone();
    let Target::Tcp { host: Host::Ip(ip), port } = local.target() else { panic!("{local}") };
    assert_eq!(ip.to_string(), "127.0.0.1", "an empty host is 127.0.0.1");
    assert_ne!(*port, 0, "port 0 is replaced by the bound port");
    assert!(!local.listen());
    let server = echo_one(listener);
    ping(registry.dial(&local).await.unwrap(), "tcp").await;
    let (_, peer) = within("server", TIMEOUT, server).await.unwrap();
    assert!(peer.starts_with("127.0.0.1:"), "{peer}");
}

#[tokio::test]
async fn tcp_honours_the_bind_address() {
    let registry = registry();
    let listener = registry.listen(&uri("tcp://127.0.0.2:0")).await.unwrap();
    let local = listener.local_uri().clone();
    assert!(local.to_string().starts_with("tcp://127.0.0.2:"), "{local}");
    let server = echo_one(listener);
    ping(registry.dial(&local).await.unwrap(), "bound").await;
    within("server", TIMEOUT, server).await.unwrap();
    // Nothing listens on 127.0.0.1 at that port.
    let port = local.port().unwrap();
    let err = registry.dial(&uri(&format!("tcp://127.0.0.1:{port}"))).await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains(&format!("127.0.0.1:{port}")) && text.contains("refused"), "{text}");
    assert!(!text.contains('\n'), "one line: {text}");
    assert!(!err.is_timeout(), "refused is not a timeout");
}

#[tokio::test]
async fn tcp_listens_on_a_domain_names_address() {
    let registry = registry();
    let listener = registry.listen(&uri("tcp-listen://localhost:0")).await.unwrap();
    let local = listener.local_uri().clone();
    let Some(Host::Ip(ip)) = local.host() else { panic!("{local}") };
    assert!(ip.is_loopback(), "{local}");
    let server = echo_one(listener);
    ping(registry.dial(&local).await.unwrap(), "localhost").await;
    within("server", TIMEOUT, server).await.unwrap();
}

#[tokio::test]
async fn tcp_with_framing_on_both_sides() {
    let registry = registry();
    let listener = registry.listen(&uri("tcp-listen://127.0.0.1:0?framing=shutdown")).await.unwrap();
    let local = listener.local_uri().clone();
    assert_eq!(local.options().framing, Some(conflux_uri::Framing::Shutdown), "{local}");
    let server = echo_one(listener);
    ping(registry.dial(&local).await.unwrap(), "framed tcp").await;
    within("server", TIMEOUT, server).await.unwrap();
}

#[tokio::test]
async fn unix_listens_dials_and_removes_its_path() {
    let dir = TempDir::new("listen-unix");
    let path = dir.path().join("echo.sock");
    let registry = registry();
    for framing in ["", "?framing=shutdown"] {
        let listener = registry.listen(&uri(&format!("unix-listen://{}{framing}", path.display()))).await.unwrap();
        let local = listener.local_uri().clone();
        assert_eq!(local.to_string(), format!("unix://{}{framing}", path.display()));
        let server = echo_one(listener);
        ping(registry.dial(&local).await.unwrap(), "unix").await;
        let (listener, _) = within("server", TIMEOUT, server).await.unwrap();
        assert!(path.exists());
        drop(listener);
        assert!(!path.exists(), "the listener removes the socket it created");
    }
}

#[tokio::test]
async fn unix_reuses_a_stale_socket_refuses_a_live_one_and_never_replaces_a_file() {
    let dir = TempDir::new("listen-paths");
    let registry = registry();
    // A stale socket: bound, never listened on.
    let stale = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixDatagram::bind(&stale).unwrap());
    assert!(stale.exists());
    let listener = registry.listen(&uri(&format!("unix://{}", stale.display()))).await.unwrap();
    // A live one: this listener.
    let err = registry.listen(&uri(&format!("unix://{}", stale.display()))).await.unwrap_err();
    let ListenError::Io { what, source } = &err else { panic!("{err:?}") };
    assert_eq!(source.kind(), std::io::ErrorKind::AddrInUse, "{err}");
    assert!(what.contains("stale.sock"), "{err}");
    drop(listener);
    // A regular file is never replaced.
    let file = dir.path().join("file");
    std::fs::write(&file, "keep me").unwrap();
    let err = registry.listen(&uri(&format!("unix://{}", file.display()))).await.unwrap_err();
    assert!(err.to_string().contains("not a socket"), "{err}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
}

#[tokio::test]
async fn a_path_replaced_after_listening_is_not_removed() {
    let dir = TempDir::new("listen-replaced");
    let path = dir.path().join("s.sock");
    let registry = registry();
    let listener = registry.listen(&uri(&format!("unix://{}", path.display()))).await.unwrap();
    std::fs::remove_file(&path).unwrap();
    std::fs::write(&path, "someone else's").unwrap();
    drop(listener);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "someone else's");
}

#[tokio::test]
async fn bad_listen_input_names_its_part() {
    let registry = registry();
    // An unknown parameter: the parser names it before any listener sees it.
    let err = "tcp-listen://:0?colour=blue".parse::<Uri>().unwrap_err();
    assert_eq!((err.part(), err.value()), (UriPart::Query, "colour"), "{err}");
    // A parameter the listener does not use.
    let err = registry.listen(&uri("tcp-listen://:0?connect_timeout=1s")).await.unwrap_err();
    let ListenError::Uri(e) = &err else { panic!("{err:?}") };
    assert_eq!((e.part(), e.value()), (UriPart::Query, "connect_timeout"), "{err}");
    let err = registry.listen(&uri("unix-listen:///tmp/x.sock?keepalive=1s,1s,1")).await.unwrap_err();
    let ListenError::Uri(e) = &err else { panic!("{err:?}") };
    assert_eq!(e.value(), "keepalive", "{err}");
    // An address in use: ListenError::Io naming it.
    let first = registry.listen(&uri("tcp://127.0.0.1:0")).await.unwrap();
    let taken = first.local_uri().clone();
    let err = registry.listen(&taken).await.unwrap_err();
    let ListenError::Io { what, source } = &err else { panic!("{err:?}") };
    assert_eq!(source.kind(), std::io::ErrorKind::AddrInUse, "{err}");
    assert!(what.contains(&format!("127.0.0.1:{}", taken.port().unwrap())), "{err}");
    assert!(!err.to_string().contains('\n'));
    // A scheme nothing listens on here.
    let err = Registry::new().listen(&uri("unix:///tmp/x.sock")).await.unwrap_err();
    let ListenError::Uri(e) = &err else { panic!("{err:?}") };
    assert_eq!((e.part(), e.value()), (UriPart::Scheme, "unix"), "{err}");
    let err = registry.listen(&uri("stdio:?keepalive=1s,1s,1")).await.unwrap_err();
    let ListenError::Uri(e) = &err else { panic!("{err:?}") };
    assert_eq!(e.value(), "keepalive", "{err}");
    let err = registry.listen(&uri("hvsock:///0b95756a-9985-48ad-9470-78e060895be7")).await.unwrap_err();
    assert!(err.to_string().contains("hvsock"), "{err}");
}

#[tokio::test]
async fn bad_dial_input_names_its_part() {
    let registry = registry();
    let err = registry.dial(&uri("tcp-listen://127.0.0.1:80")).await.unwrap_err();
    assert!(err.to_string().contains("tcp-listen"), "{err}");
    let err = registry.dial(&uri("unix:///x.sock?keepalive=1s,1s,1")).await.unwrap_err();
    let e = err.from_uri_error().and_then(|e| e.uri()).unwrap();
    assert_eq!(e.value(), "keepalive");
    let err = registry.dial(&uri("stdio:?connect_timeout=1s")).await.unwrap_err();
    assert_eq!(err.from_uri_error().and_then(|e| e.uri()).map(|e| e.value()), Some("connect_timeout"), "{err}");
    let dir = TempDir::new("dial-missing");
    let missing = dir.path().join("nobody.sock");
    let err = registry.dial(&uri(&format!("unix://{}", missing.display()))).await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("nobody.sock") && !text.contains('\n'), "{text}");
    assert!(err.resolve_error().is_some());
    // No TLS config (no `ca=`, and no webpki roots unless a workspace build
    // unified that feature in): the key never provided is named.
    let tls = uri("tls://127.0.0.1:1");
    if registry.ctx_from_uri(&tls).unwrap().get(&conflux_mimic::TlsKeys::get().config).is_none() {
        let err = registry.dial(&tls).await.unwrap_err();
        let text = err.to_string();
        assert!(text.contains("tls.config") && !text.contains('\n'), "{text}");
    }
}

#[tokio::test]
async fn a_connect_that_times_out_says_so_naming_the_uri() {
    // A VMM socket that accepts and never answers the hybrid vsock handshake.
    let dir = TempDir::new("dial-mute");
    let mute = dir.path().join("mute.sock");
    let registry = registry();
    let listener = registry.listen(&uri(&format!("unix://{}", mute.display()))).await.unwrap();
    let target = uri(&format!("fc-vsock://{}?port=5&connect_timeout=200ms", mute.display()));
    let err = within("dial", TIMEOUT, registry.dial(&target)).await.unwrap_err();
    let text = err.to_string();
    assert!(err.is_timeout(), "{err:?}");
    assert!(text.contains("mute.sock") && text.contains("timed out"), "{text}");
    assert!(!text.contains('\n'), "one line: {text}");
    drop(listener);
}

/// G5 for the framing over a TCP flow: closing the framed flow closes the
/// TCP flow under it (the dialling stack counts none left open).
#[tokio::test]
async fn the_framing_over_tcp_closes_the_tcp_flow_under_it() {
    use conflux_mimic::{FramingKeys, RegisterOptions, Tcp, register_hvsock, register_tcp_with};
    use conflux_tcp::TcpStack;
    use conflux_tcp_host::HostStack;
    let stack = HostStack::new();
    let dialler = Registry::new();
    register_tcp_with(&dialler, Tcp::new(stack.clone()), RegisterOptions::new());
    let framing = conflux_hvsock::FramingConfig::new().close_timeout(std::time::Duration::from_secs(2));
    register_hvsock(&dialler, RegisterOptions::new(), framing);
    let ctx = conflux_mimic::Ctx::new().add(&FramingKeys::get().config, framing);
    let listener = registry().listen_with(&uri("tcp://127.0.0.1:0?framing=shutdown"), &ctx).await.unwrap();
    let local = listener.local_uri().clone();
    let server = echo_one(listener);
    let flow = dialler.dial_with(&local, &ctx).await.unwrap();
    assert_eq!(stack.open_flows(), 1);
    ping(flow, "g5").await;
    within("server", TIMEOUT, server).await.unwrap();
    // The framing hands the TCP flow to a background close once its own close is done.
    within("the tcp flow closes", TIMEOUT, async {
        while stack.open_flows() != 0 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await;
}

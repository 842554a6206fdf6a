//! `tls://` both ways through [`register_all`]: a listener's certificate
//! and key, client certificates required by `ca=` on a listener (and given
//! by `cert=`/`key=` on a dial), TLS over another listened stream, and the
//! errors naming the query key or the file.
#![forbid(unsafe_code)]

use std::path::Path;

use conflux_flow::{BoxFlow, FlowExt, Shutdown};
use conflux_mimic::{FromUriError, ListenError, Listener, Registry, register_all};
use conflux_testkit::{TIMEOUT, TempDir, within};
use conflux_uri::{Target, Uri, UriPart};

fn registry() -> Registry {
    let registry = Registry::new();
    register_all(&registry);
    registry
}

fn uri(s: &str) -> Uri {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// A self-signed certificate for `localhost` and 127.0.0.1 in `dir`:
/// `<name>.pem` and `<name>-key.pem`.
fn write_cert(dir: &Path, name: &str) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    std::fs::write(dir.join(format!("{name}.pem")), cert.cert.pem()).unwrap();
    std::fs::write(dir.join(format!("{name}-key.pem")), cert.key_pair.serialize_pem()).unwrap();
}

fn echo_one(mut listener: Listener) -> tokio::task::JoinHandle<Listener> {
    tokio::spawn(async move {
        let mut a = within("accept", TIMEOUT, listener.accept()).await.unwrap();
        let got = within("echo read", TIMEOUT, a.flow.read_to_end()).await.unwrap();
        a.flow.write(got).await.unwrap();
        a.flow.close().await.unwrap();
        listener
    })
}

async fn ping(mut flow: BoxFlow, text: &str) {
    flow.write(text.to_string()).await.unwrap();
    flow.shutdown(Shutdown::Write).await.unwrap();
    assert_eq!(within("echo", TIMEOUT, flow.read_to_end()).await.unwrap(), text.as_bytes());
    flow.close().await.unwrap();
}

#[tokio::test]
async fn a_tls_listener_serves_a_client_that_trusts_its_certificate() {
    let dir = TempDir::new("tls-listen");
    let d = dir.path().display();
    write_cert(dir.path(), "server");
    let registry = registry();
    let listener =
        registry.listen(&uri(&format!("tls-listen://:0?cert={d}/server.pem&key={d}/server-key.pem"))).await.unwrap();
    let local = listener.local_uri().to_string();
    assert!(local.starts_with("tls://127.0.0.1:") && !local.contains('?'), "no cert or key in {local}");
    let server = echo_one(listener);
    // A client that does not trust the certificate: one line naming the URI and why.
    write_cert(dir.path(), "other");
    let err = registry.dial(&uri(&format!("{local}?ca={d}/other.pem"))).await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains(&local) && text.contains("certificate") && !text.contains('\n'), "{text}");
    // The listener dropped that one and serves the next.
    ping(registry.dial(&uri(&format!("{local}?ca={d}/server.pem"))).await.unwrap(), "tls").await;
    within("server", TIMEOUT, server).await.unwrap();
}

#[tokio::test]
async fn ca_on_a_listener_requires_client_certificates() {
    let dir = TempDir::new("tls-mtls");
    let d = dir.path().display();
    write_cert(dir.path(), "server");
    write_cert(dir.path(), "client");
    write_cert(dir.path(), "stranger");
    let registry = registry();
    let mut listener = registry
        .listen(&uri(&format!("tls://127.0.0.1:0?cert={d}/server.pem&key={d}/server-key.pem&ca={d}/client.pem")))
        .await
        .unwrap();
    let local = listener.local_uri().to_string();
    // Handshakes run while the listener is polled, as a server's accept loop does.
    let (tx, mut accepted) = tokio::sync::mpsc::channel(4);
    let server = tokio::spawn(async move {
        while let Ok(a) = listener.accept().await {
            if tx.send(a).await.is_err() {
                break;
            }
        }
    });

    // Without a client certificate, or with one the listener does not trust:
    // the server refuses the handshake, and the client's read fails.
    for who in ["", "&cert={d}/stranger.pem&key={d}/stranger-key.pem"] {
        let who = who.replace("{d}", &d.to_string());
        let mut flow = registry.dial(&uri(&format!("{local}?ca={d}/server.pem{who}"))).await.unwrap();
        let _ = flow.write("let me in").await;
        let read = within("refused read", TIMEOUT, flow.read_to_end()).await;
        assert!(read.is_err(), "{who}: {read:?}");
    }

    // With the trusted one, the flow is accepted.
    let trusted = uri(&format!("{local}?ca={d}/server.pem&cert={d}/client.pem&key={d}/client-key.pem"));
    let dial = registry.dial(&trusted);
    let (client, accepted) = tokio::join!(dial, within("accept", TIMEOUT, accepted.recv()));
    let (mut client, mut accepted) = (client.unwrap(), accepted.expect("only the trusted client is accepted"));
    assert!(accepted.peer.starts_with("127.0.0.1:"), "{}", accepted.peer);
    client.write("mutual").await.unwrap();
    client.shutdown(Shutdown::Write).await.unwrap();
    assert_eq!(within("read", TIMEOUT, accepted.flow.read_to_end()).await.unwrap(), b"mutual");
    let (a, b) = tokio::join!(client.close(), accepted.flow.close());
    a.unwrap();
    b.unwrap();
    server.abort();
}

#[tokio::test]
async fn tls_over_a_listened_unix_socket() {
    let dir = TempDir::new("tls-over");
    let d = dir.path().display();
    write_cert(dir.path(), "server");
    let registry = registry();
    let listen = format!(
        "tls-listen://localhost?cert={d}/server.pem&key={d}/server-key.pem&over=unix-listen://{d}/s.sock%3Fframing%3Dshutdown"
    );
    let listener = registry.listen(&uri(&listen)).await.unwrap();
    let local = listener.local_uri().clone();
    let Target::Tls { over: Some(over), .. } = local.target() else { panic!("{local}") };
    assert_eq!(over.to_string(), format!("unix://{d}/s.sock?framing=shutdown"));
    let server = echo_one(listener);
    ping(registry.dial(&uri(&format!("{local}&ca={d}/server.pem"))).await.unwrap(), "tls over framed unix").await;
    within("server", TIMEOUT, server).await.unwrap();
}

#[tokio::test]
async fn bad_tls_input_names_the_key_or_the_file() {
    let dir = TempDir::new("tls-bad");
    let d = dir.path().display();
    write_cert(dir.path(), "server");
    let registry = registry();
    let listen_uri_err = |e: ListenError| match e {
        ListenError::Uri(e) => (e.part(), e.value().to_string()),
        e => panic!("{e:?}"),
    };
    for (text, key) in [
        (format!("tls-listen://:0?key={d}/server-key.pem"), "cert"),
        (format!("tls-listen://:0?cert={d}/server.pem"), "key"),
        (format!("tls-listen://:0?cert={d}/server.pem&key={d}/server-key.pem&sni=x.test"), "sni"),
        (format!("tls-listen://:0?cert={d}/server.pem&key={d}/server-key.pem&connect_timeout=1s"), "connect_timeout"),
    ] {
        let err = registry.listen(&uri(&text)).await.unwrap_err();
        assert!(err.to_string().contains(key), "{text}: {err}");
        assert_eq!(listen_uri_err(err), (UriPart::Query, key.to_string()), "{text}");
    }
    // Files that cannot be loaded: the error names the key and the path.
    for (text, needle) in [
        (format!("tls-listen://:0?cert={d}/missing.pem&key={d}/server-key.pem"), "cert="),
        (format!("tls-listen://:0?cert={d}/server.pem&key={d}/server.pem"), "key="),
        (format!("tls-listen://:0?cert={d}/server.pem&key={d}/server-key.pem&ca={d}/server-key.pem"), "ca="),
    ] {
        let err = registry.listen(&uri(&text)).await.unwrap_err();
        assert!(matches!(err, ListenError::Io { .. }), "{text}: {err:?}");
        assert!(err.to_string().contains(needle), "{text}: {err}");
    }
    // Dialling: a certificate needs its key and the other way round; a file
    // that cannot be loaded is named.
    for (text, key) in [
        (format!("tls://127.0.0.1:1?cert={d}/server.pem"), "key"),
        (format!("tls://127.0.0.1:1?key={d}/server-key.pem"), "cert"),
    ] {
        let err = registry.dial(&uri(&text)).await.unwrap_err();
        let e = err.from_uri_error().and_then(FromUriError::uri).unwrap_or_else(|| panic!("{err:?}"));
        assert_eq!((e.part(), e.value()), (UriPart::Query, key), "{text}");
    }
    let err = registry.dial(&uri(&format!("tls://127.0.0.1:1?cert={d}/nope.pem&key={d}/server-key.pem"))).await;
    let err = err.unwrap_err();
    assert!(matches!(err.from_uri_error(), Some(FromUriError::File { param: "cert", .. })), "{err:?}");
    assert!(err.to_string().contains("nope.pem"), "{err}");
}

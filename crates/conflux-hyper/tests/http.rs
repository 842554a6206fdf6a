//! hyper-util's pooled client, through [`Connector`], against axum served by
//! [`AxumListener`] over tcp, unix (raw and framed) and fc-vsock (a fake
//! VMM): keep-alive reuse, 64 MiB both ways, a reset mid-body; curl against
//! axum over a unix listener.

use std::error::Error as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use conflux_hyper::{AxumListener, Connector};
use conflux_mimic::{Accepted, Listener, Registry, register_all};
use conflux_uri::Uri;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

const BIG: usize = 64 << 20;
const LIMIT: Duration = Duration::from_secs(120);

fn registry() -> Registry {
    let registry = Registry::new();
    register_all(&registry);
    registry
}

/// A body that sends one chunk, waits a little (so headers and chunk go
/// out), then fails: hyper's server drops the connection mid-body.
fn broken_body() -> Body {
    let steps = futures_util::stream::unfold(0, |step| async move {
        match step {
            0 => Some((Ok(Bytes::from(vec![7u8; 64 << 10])), 1)),
            1 => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                Some((Err(std::io::Error::other("the handler gives up mid-body")), 2))
            }
            _ => None,
        }
    });
    Body::from_stream(steps)
}

fn app() -> Router {
    Router::new()
        .route("/hello", get(|| async { "hello" }))
        .route("/echo", post(|body: Bytes| async move { body }))
        .route("/big", get(|| async { conflux_testkit::payload(2, BIG) }))
        .route(
            "/reset",
            get(|| async {
                axum::response::Response::builder()
                    .header("content-length", (1u64 << 20).to_string())
                    .body(broken_body())
                    .unwrap()
            }),
        )
        .layer(DefaultBodyLimit::disable())
}

/// axum serving `listener`; the count of connections it accepted.
fn serve(listener: Listener) -> (Uri, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    let uri = listener.local_uri().clone();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    let listener = AxumListener::new(listener).tap_io(move |_| {
        count.fetch_add(1, Ordering::SeqCst);
    });
    let task = tokio::spawn(async move { axum::serve(listener, app()).await.unwrap() });
    (uri, accepted, task)
}

/// Lets the client's pool take the finished connection back: on the
/// current-thread runtime every ready task (the connection's, the pool's)
/// runs before the timer fires, so the next request finds it idle.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(2)).await;
}

/// Every check of the suite through `connector`, whose requests say `base`.
async fn suite(connector: Connector, base: &str, accepted: &AtomicUsize) {
    let client: Client<Connector, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    let get = |path: &str| hyper::Request::get(format!("{base}{path}")).body(Full::default()).unwrap();

    // Keep-alive: ten requests, one connection.
    for _ in 0..10 {
        let resp = client.request(get("/hello")).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "hello");
        settle().await;
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "ten sequential requests share one pooled connection");

    // 64 MiB up and back.
    let sent = conflux_testkit::payload(1, BIG);
    let req = hyper::Request::post(format!("{base}/echo")).body(Full::new(sent.clone())).unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let back = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(back == sent, "64 MiB echoed: {} bytes back", back.len());
    settle().await;

    // 64 MiB down.
    let resp = client.request(get("/big")).await.unwrap();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(body == conflux_testkit::payload(2, BIG), "64 MiB down: {} bytes", body.len());
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "the big bodies reused the connection too");

    // A server that gives up mid-body: an error, never a truncated OK.
    let resp = client.request(get("/reset")).await.unwrap();
    assert_eq!(resp.status(), 200);
    let err = resp.into_body().collect().await.expect_err("a body cut short is an error");
    assert!(err.is_incomplete_message() || err.source().is_some(), "{err:?}");
}

async fn over(listen: &str, dial_query: &str) {
    let registry = registry();
    let listener = registry.listen(&listen.parse().unwrap()).await.unwrap();
    let (uri, accepted, task) = serve(listener);
    let endpoint: Uri = format!("{uri}{dial_query}").parse().unwrap();
    tokio::time::timeout(LIMIT, suite(Connector::new(registry, endpoint), "http://localhost", &accepted))
        .await
        .expect("the suite finished in time");
    task.abort();
}

#[tokio::test]
async fn over_tcp_by_authority() {
    let registry = registry();
    let listener = registry.listen(&"tcp://127.0.0.1:0".parse().unwrap()).await.unwrap();
    let (uri, accepted, task) = serve(listener);
    let port = uri.to_string().rsplit(':').next().unwrap().to_string();
    let connector = Connector::by_authority(registry, "");
    assert_eq!(
        connector.endpoint(&format!("http://127.0.0.1:{port}/x").parse().unwrap()).unwrap().to_string(),
        format!("tcp://127.0.0.1:{port}")
    );
    tokio::time::timeout(LIMIT, suite(connector, &format!("http://127.0.0.1:{port}"), &accepted)).await.unwrap();
    task.abort();
}

#[tokio::test]
async fn over_unix_raw() {
    let dir = conflux_testkit::TempDir::new("hyper-unix");
    over(&format!("unix://{}/s.sock", dir.path().display()), "").await;
}

#[tokio::test]
async fn over_unix_framed() {
    let dir = conflux_testkit::TempDir::new("hyper-unix-framed");
    // `local_uri()` keeps `framing=shutdown`: the client dials it framed.
    over(&format!("unix://{}/s.sock?framing=shutdown", dir.path().display()), "").await;
}

/// The client dials `fc-vsock://vmm.sock?port=52`: the fake VMM's
/// `CONNECT 52` handshake, then the guest's listener (axum) gets the socket.
#[tokio::test]
async fn over_fc_vsock() {
    use conflux_hvsock::testing::FakeVmm;
    use conflux_hvsock::{FamilyListener, RawFlow};
    let dir = conflux_testkit::TempDir::new("hyper-fc");
    let path = dir.path().join("v.sock");
    let vmm = FakeVmm::start(&path).unwrap();
    let guest = vmm.guest_listener(52, 16);
    let endpoint: Uri = format!("fc-vsock://{}?port=52", path.display()).parse().unwrap();
    let accepts = futures_util::stream::unfold(guest, |guest| async move {
        let accepted = guest.accept().await.map(|(socket, peer)| Accepted {
            flow: conflux_flow::BoxFlow::new(RawFlow::new(socket)),
            peer: format!("{peer:?}"),
        });
        Some((accepted, guest))
    });
    let (_, accepted, task) = serve(Listener::new("vsock://3:52".parse().unwrap(), accepts));
    tokio::time::timeout(LIMIT, suite(Connector::new(registry(), endpoint), "http://guest", &accepted)).await.unwrap();
    task.abort();
    drop(vmm);
}

/// `route` overrides the default endpoint for one authority.
#[tokio::test]
async fn a_route_overrides_the_default() {
    let connector =
        Connector::by_authority(registry(), "framing=shutdown").route("vm1", "unix:///run/vm1.sock".parse().unwrap());
    let endpoint = |u: &str| connector.endpoint(&u.parse().unwrap()).map(|e| e.to_string());
    assert_eq!(endpoint("http://vm1/x").unwrap(), "unix:///run/vm1.sock");
    assert_eq!(endpoint("https://example.test/x").unwrap(), "tls://example.test:443?framing=shutdown");
    assert_eq!(endpoint("http://example.test:8080/").unwrap(), "tcp://example.test:8080?framing=shutdown");
    let err = endpoint("ftp://example.test/").unwrap_err();
    assert!(err.to_string().contains("`ftp`"), "{err}");
}

/// A dial that fails reaches the client as an error naming the endpoint.
#[tokio::test]
async fn a_failed_dial_is_an_error() {
    let dir = conflux_testkit::TempDir::new("hyper-nobody");
    let endpoint: Uri = format!("unix://{}/nobody.sock", dir.path().display()).parse().unwrap();
    let client: Client<Connector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(Connector::new(registry(), endpoint));
    let req = hyper::Request::get("http://localhost/").body(Full::default()).unwrap();
    let err = tokio::time::timeout(LIMIT, client.request(req)).await.unwrap().unwrap_err();
    assert!(err.is_connect(), "{err:?}");
    let source = err.source().map(|s| s.to_string()).unwrap_or_default();
    assert!(source.contains("nobody.sock"), "{source}");
}

/// curl `--unix-socket` against axum over a unix listener.
#[tokio::test]
async fn curl_over_unix() {
    if !conflux_testkit::have_command("curl") {
        conflux_testkit::skip!(Curl, "curl is not installed");
    }
    let dir = conflux_testkit::TempDir::new("hyper-curl");
    let path = dir.path().join("s.sock");
    let listener = registry().listen(&format!("unix://{}", path.display()).parse().unwrap()).await.unwrap();
    let (_, _, task) = serve(listener);
    let out = tokio::time::timeout(
        LIMIT,
        tokio::process::Command::new("curl")
            .args(["-sS", "--max-time", "30", "--unix-socket"])
            .arg(&path)
            .arg("http://localhost/hello")
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(out.status.success(), "curl: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.stdout, b"hello");
    task.abort();
}

/// `https://127.0.0.1:PORT` by authority to `tls://127.0.0.1:PORT?ca=..`
/// (plus `query`), against axum on `tls-listen://` with a self-signed
/// certificate (plus `query`).
async fn over_tls(query: &str) {
    let dir = conflux_testkit::TempDir::new("hyper-tls");
    let d = dir.path().display();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    std::fs::write(dir.path().join("c.pem"), cert.cert.pem()).unwrap();
    std::fs::write(dir.path().join("k.pem"), cert.key_pair.serialize_pem()).unwrap();
    let registry = registry();
    let listen = format!("tls-listen://127.0.0.1:0?cert={d}/c.pem&key={d}/k.pem{query}");
    let (uri, accepted, task) = serve(registry.listen(&listen.parse().unwrap()).await.unwrap());
    let port = uri.to_string().split('?').next().unwrap().rsplit(':').next().unwrap().to_string();
    let connector = Connector::by_authority(registry, &format!("ca={d}/c.pem{query}"));
    let base = format!("https://127.0.0.1:{port}");
    assert_eq!(
        connector.endpoint(&base.parse().unwrap()).unwrap().to_string(),
        format!("tls://127.0.0.1:{port}?ca={d}/c.pem{query}")
    );
    tokio::time::timeout(LIMIT, suite(connector, &base, &accepted)).await.unwrap();
    task.abort();
}

#[tokio::test]
async fn over_tls_by_authority() {
    over_tls("").await;
}

#[tokio::test]
async fn over_tls_framed_by_authority() {
    over_tls("&framing=shutdown").await;
}

/// HTTP/2 over `tls://` by URI alone: a listener on
/// `tls-listen://..?alpn=h2,http/1.1` and a connector whose endpoints say
/// `alpn=h2,http/1.1` agree on `h2`, so hyper-util's pooled client speaks
/// HTTP/2 (one connection for every request of the suite); a client that
/// offers only `http/1.1` gets HTTP/1.1 from the same listener.
#[tokio::test]
async fn h2_over_tls_by_alpn_in_the_uri() {
    let dir = conflux_testkit::TempDir::new("hyper-h2");
    let d = dir.path().display();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    std::fs::write(dir.path().join("c.pem"), cert.cert.pem()).unwrap();
    std::fs::write(dir.path().join("k.pem"), cert.key_pair.serialize_pem()).unwrap();
    let registry = registry();
    let listen = format!("tls-listen://127.0.0.1:0?cert={d}/c.pem&key={d}/k.pem&alpn=h2,http/1.1");
    let (uri, accepted, task) = serve(registry.listen(&listen.parse().unwrap()).await.unwrap());
    assert!(uri.to_string().contains("alpn=h2,http/1.1"), "the local URI offers the same: {uri}");
    let port = uri.to_string().split('?').next().unwrap().rsplit(':').next().unwrap().to_string();
    let base = format!("https://127.0.0.1:{port}");
    let version = |alpn: &str| {
        let connector = Connector::by_authority(registry.clone(), &format!("ca={d}/c.pem&alpn={alpn}"));
        let client: Client<Connector, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
        let req = hyper::Request::get(format!("{base}/hello")).body(Full::default()).unwrap();
        async move { tokio::time::timeout(LIMIT, client.request(req)).await.unwrap().unwrap().version() }
    };
    assert_eq!(version("h2,http/1.1").await, hyper::Version::HTTP_2, "ALPN agreed on h2");
    assert_eq!(version("http/1.1").await, hyper::Version::HTTP_11, "a client offering http/1.1 only");
    accepted.store(0, Ordering::SeqCst);
    let connector = Connector::by_authority(registry, &format!("ca={d}/c.pem&alpn=h2,http/1.1"));
    tokio::time::timeout(LIMIT, suite(connector, &base, &accepted)).await.unwrap();
    task.abort();
}

/// HTTP/2 over `tls://`: the server's TLS config offers `h2` by ALPN, the
/// client's config (in the connector's context) too; the handshake picks
/// `h2`, the connector says so, and hyper-util's client speaks HTTP/2 on
/// one connection.
#[tokio::test]
async fn h2_over_tls_by_alpn() {
    use std::sync::Arc;

    use conflux_mimic::{TlsFlow, TlsKeys};
    use futures_util::StreamExt;

    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let der = cert.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::try_from(cert.key_pair.serialize_der()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![der.clone()], key)
        .unwrap();
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let server = Arc::new(server);
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der).unwrap();
    let mut client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];

    let registry = registry();
    let tcp = registry.listen(&"tcp://127.0.0.1:0".parse().unwrap()).await.unwrap();
    let port = tcp.local_uri().to_string().rsplit(':').next().unwrap().to_string();
    let handshakes = tcp.then(move |accepted| {
        let server = server.clone();
        async move {
            let accepted = accepted?;
            let flow = TlsFlow::accept(server, accepted.flow).await?;
            Ok(Accepted { flow: conflux_flow::BoxFlow::new(flow), peer: accepted.peer })
        }
    });
    let (_, accepted, task) = serve(Listener::new(format!("tls://127.0.0.1:{port}").parse().unwrap(), handshakes));

    let ctx = conflux_mimic::Ctx::new().add(&TlsKeys::get().config, Arc::new(client));
    let connector = Connector::by_authority(registry, "").with_ctx(ctx);
    let base = format!("https://127.0.0.1:{port}");
    let h2: Client<Connector, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(connector.clone());
    let resp = tokio::time::timeout(
        LIMIT,
        h2.request(hyper::Request::get(format!("{base}/hello")).body(Full::default()).unwrap()),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(resp.version(), hyper::Version::HTTP_2, "ALPN h2 makes the pooled client speak HTTP/2");
    drop((resp, h2));
    // The suite's own client counts its connections from zero.
    accepted.store(0, Ordering::SeqCst);
    tokio::time::timeout(LIMIT, suite(connector, &base, &accepted)).await.unwrap();
    task.abort();
}

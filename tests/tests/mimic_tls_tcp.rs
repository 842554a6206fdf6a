//! `tcp://` and `tls://` resolved through the registry against local servers
//! on 127.0.0.1 (a self-signed certificate made here with rcgen), including
//! the no-fallback guard and the TLS flow closing its lower flow.
#![forbid(unsafe_code)]

use std::sync::Arc;
use std::time::Duration;

use conflux_flow::{FlowExt, Shutdown};
use conflux_mimic::report::{AttemptOutcome, Reason};
use conflux_mimic::{RegisterOptions, Registry, TcpEndpoint, TlsFlow, TlsKeys, UriKeys, register_tcp, register_tls};
use conflux_tcp::{Keepalive, TcpFlow as _};
use conflux_testkit::{TIMEOUT, within};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A self-signed certificate for `localhost` and 127.0.0.1, with client and server configs.
fn configs() -> (Arc<rustls::ClientConfig>, Arc<rustls::ServerConfig>) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let der: CertificateDer<'static> = cert.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.key_pair.serialize_der()));
    let server = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![der.clone()], key)
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    (Arc::new(client), Arc::new(server))
}

/// Echoes one connection until Eof, then closes; returns what it read.
async fn echo_once(listener: TcpListener) -> Vec<u8> {
    let (mut s, _) = listener.accept().await.unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).await.unwrap();
    s.write_all(&got).await.unwrap();
    s.shutdown().await.unwrap();
    got
}

#[tokio::test]
async fn tcp_uri_resolves_to_kernel_tcp() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(echo_once(listener));

    let registry = Registry::new();
    let (_, tcp) = register_tcp(&registry, Some(20));
    let ctx = registry.ctx_from_uri(&format!("tcp://127.0.0.1:{port}").parse().unwrap()).unwrap();
    let mut flow = within("resolve", TIMEOUT, registry.resolve(&ctx)).await.unwrap();
    assert!(tcp.is(&flow), "{flow:?}");
    flow.write("ping").await.unwrap();
    flow.shutdown(Shutdown::Write).await.unwrap();
    assert_eq!(within("echo", TIMEOUT, flow.read_to_end()).await.unwrap(), b"ping");
    flow.close().await.unwrap();
    assert_eq!(server.await.unwrap(), b"ping");
    assert!(tcp.downcast(flow).is_ok());
}

#[tokio::test]
async fn tcp_by_domain_name_goes_through_dns() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(echo_once(listener));
    let registry = Registry::new();
    register_tcp(&registry, None);
    // `localhost` may also resolve to ::1, where nothing listens: that candidate fails and the next is tried.
    let ctx = registry.ctx_from_uri(&format!("tcp://localhost:{port}").parse().unwrap()).unwrap();
    let mut flow = within("resolve", TIMEOUT, registry.resolve(&ctx)).await.unwrap();
    flow.write("dns").await.unwrap();
    flow.shutdown(Shutdown::Write).await.unwrap();
    assert_eq!(within("echo", TIMEOUT, flow.read_to_end()).await.unwrap(), b"dns");
    flow.close().await.unwrap();
    server.await.unwrap();
}

#[tokio::test]
async fn tls_uri_resolves_to_tls_over_tcp() {
    let (client, server_cfg) = configs();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let (s, _) = listener.accept().await.unwrap();
        let mut tls = tokio_rustls::TlsAcceptor::from(server_cfg).accept(s).await.unwrap();
        let mut got = Vec::new();
        tls.read_to_end(&mut got).await.unwrap();
        tls.write_all(b"pong").await.unwrap();
        tls.shutdown().await.unwrap();
        // The client's close shut the TCP stream under TLS too: nothing more arrives.
        let mut rest = Vec::new();
        let (tcp, _) = tls.get_mut();
        tcp.read_to_end(&mut rest).await.unwrap();
        (got, rest)
    });

    let registry = Registry::new();
    register_tcp(&registry, Some(20));
    let (_, tls) = register_tls(&registry, RegisterOptions::new().priority(10).no_fallback());
    let ctx = registry
        .ctx_from_uri(&format!("tls://127.0.0.1:{port}?sni=localhost").parse().unwrap())
        .unwrap()
        .add(&TlsKeys::get().config, client);
    let mut flow = within("resolve", TIMEOUT, registry.resolve(&ctx)).await.unwrap();
    assert!(tls.is(&flow), "{flow:?}");
    flow.write("ping").await.unwrap();
    flow.shutdown(Shutdown::Write).await.unwrap();
    assert_eq!(within("reply", TIMEOUT, flow.read_to_end()).await.unwrap(), b"pong");
    within("close", TIMEOUT, flow.close()).await.unwrap();
    flow.close().await.unwrap();
    let (got, rest) = within("server", TIMEOUT, server).await.unwrap();
    assert_eq!(got, b"ping");
    assert!(rest.is_empty());
    let _: TlsFlow = tls.downcast(flow).unwrap();
}

#[tokio::test]
async fn a_guarded_tls_failure_does_not_fall_back_to_plain_tcp() {
    let (client, _) = configs();
    // A plain TCP server: the TLS handshake fails against it, a plain connect would succeed.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let _ = s.write_all(b"HTTP/1.0 400 not tls\r\n\r\n").await;
        }
    });
    let registry = Registry::new();
    let (tcp_key, _) = register_tcp(&registry, Some(20));
    register_tls(&registry, RegisterOptions::new().priority(10).no_fallback());
    let ctx = registry
        .ctx_from_uri(&format!("tls://127.0.0.1:{}?sni=localhost", addr.port()).parse().unwrap())
        .unwrap()
        .add(&TlsKeys::get().config, client)
        .add(&tcp_key, TcpEndpoint::from(addr));
    let err = within("resolve", TIMEOUT, registry.resolve(&ctx)).await.unwrap_err();
    let report = err.not_found().unwrap_or_else(|| panic!("{err}"));
    assert_eq!(report.reason(), &Reason::FallbackForbidden { protocol: "tls".into() });
    let attempts: Vec<_> = report.attempts().iter().map(|a| (a.protocol(), a.outcome())).collect();
    assert!(matches!(attempts[0], ("tls", AttemptOutcome::Failed(e)) if e.to_string().contains("TLS handshake")));
    assert!(matches!(attempts.last().unwrap(), ("tcp", AttemptOutcome::NotTried)), "{err}");
}

#[tokio::test]
async fn a_missing_tls_config_is_named() {
    let registry = Registry::new();
    register_tcp(&registry, Some(20));
    register_tls(&registry, RegisterOptions::new().priority(10).no_fallback());
    let ctx = registry.ctx_from_uri(&"tls://127.0.0.1:1".parse().unwrap()).unwrap();
    let err = registry.resolve(&ctx).await.unwrap_err();
    assert!(err.to_string().contains("required key `tls.config` was never provided"), "{err}");
}

#[tokio::test]
async fn tcp_uri_modifiers_and_context_values_reach_the_connect() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(echo_once(listener));
    let registry = Registry::new();
    let (key, tcp) = register_tcp(&registry, None);
    let uri = format!("tcp://127.0.0.1:{port}?connect_timeout=3s&keepalive=20s,5s,4").parse().unwrap();
    let ctx = registry.ctx_from_uri(&uri).unwrap();
    let unfolded = registry.unfold(&ctx).await.unwrap();
    let e = unfolded.find(&key).unwrap();
    assert_eq!(e.options().timeout, Some(Duration::from_secs(3)));
    assert_eq!(e.options().keepalive, Some(Keepalive::new(Duration::from_secs(20), Duration::from_secs(5), 4)));
    // A value the caller adds later is newer than the URI's.
    let ctx = ctx.add(&UriKeys::get().connect_timeout, Duration::from_millis(1500));
    let unfolded = registry.unfold(&ctx).await.unwrap();
    assert_eq!(unfolded.find(&key).unwrap().options().timeout, Some(Duration::from_millis(1500)));
    let mut flow = within("resolve", TIMEOUT, registry.connect(&unfolded)).await.unwrap();
    assert_eq!(tcp.downcast_ref(&flow).unwrap().dst().port(), port);
    flow.write("ka").await.unwrap();
    flow.shutdown(Shutdown::Write).await.unwrap();
    assert_eq!(within("echo", TIMEOUT, flow.read_to_end()).await.unwrap(), b"ka");
    flow.close().await.unwrap();
    server.await.unwrap();
}

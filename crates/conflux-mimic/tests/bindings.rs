//! The URI bindings never ignore what a URI says: `tls://...?ca=PATH` loads
//! its roots (a bad path is an error naming it), and a query parameter or
//! modifier a binding does not use is an error naming it, for every binding.
#![forbid(unsafe_code)]

use std::error::Error as _;
use std::sync::Arc;
use std::time::Duration;

use conflux_flow::{FlowExt, Shutdown};
use conflux_hvsock::FramingConfig;
use conflux_mimic::{
    FromUriError, RegisterOptions, Registry, TlsKeys, UriKeys, register_hvsock, register_tcp, register_tls,
};
use conflux_testkit::{TIMEOUT, TempDir, within};
use conflux_uri::UriPart;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A CA (its PEM) and a server config whose certificate for `localhost` it signed.
fn ca_and_server() -> (String, Arc<rustls::ServerConfig>) {
    let ca_key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, "conflux test CA");
    let ca = params.self_signed(&ca_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf =
        CertificateParams::new(vec!["localhost".to_string()]).unwrap().signed_by(&leaf_key, &ca, &ca_key).unwrap();
    let chain: Vec<CertificateDer<'static>> = vec![leaf.der().clone()];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let server = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    (ca.pem(), Arc::new(server))
}

/// Every message of an error and its sources, one per line.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push('\n');
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

fn tcp_tls() -> Registry {
    let registry = Registry::new();
    register_tcp(&registry, Some(20));
    register_tls(&registry, RegisterOptions::new().priority(10).no_fallback());
    registry
}

#[tokio::test]
async fn tls_ca_parameter_loads_the_roots_it_names() {
    let (ca_pem, server_cfg) = ca_and_server();
    let dir = TempDir::new("ca");
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, ca_pem).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    // Echoes every connection whose handshake succeeds.
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let acceptor = tokio_rustls::TlsAcceptor::from(server_cfg.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(s).await else { return };
                let mut got = Vec::new();
                tls.read_to_end(&mut got).await.unwrap();
                tls.write_all(&got).await.unwrap();
                tls.shutdown().await.unwrap();
            });
        }
    });
    let registry = tcp_tls();

    // Without `ca=`, a config trusting nothing: the server's issuer is unknown.
    let no_roots = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let ctx = registry
        .ctx_from_uri(&format!("tls://127.0.0.1:{port}?sni=localhost").parse().unwrap())
        .unwrap()
        .add(&TlsKeys::get().config, Arc::new(no_roots));
    let err = within("resolve", TIMEOUT, registry.resolve(&ctx)).await.unwrap_err();
    let report = err.not_found().unwrap();
    let text = match report.attempts()[0].outcome() {
        conflux_mimic::report::AttemptOutcome::Failed(e) => chain(&**e),
        other => panic!("{other:?}"),
    };
    assert!(text.contains("UnknownIssuer"), "{text}");

    // With `ca=`, the binding's own config trusts the CA: no config from the caller.
    let uri = format!("tls://127.0.0.1:{port}?sni=localhost&ca={}", ca_path.display());
    let ctx = registry.ctx_from_uri(&uri.parse().unwrap()).unwrap();
    let mut flow = within("resolve", TIMEOUT, registry.resolve(&ctx)).await.unwrap();
    flow.write("trusted").await.unwrap();
    flow.shutdown(Shutdown::Write).await.unwrap();
    assert_eq!(within("echo", TIMEOUT, flow.read_to_end()).await.unwrap(), b"trusted");
    within("close", TIMEOUT, flow.close()).await.unwrap();
}

#[test]
fn a_bad_ca_path_is_an_error_naming_the_path() {
    let registry = tcp_tls();
    let dir = TempDir::new("badca");
    let missing = dir.path().join("missing.pem");
    let err =
        registry.ctx_from_uri(&format!("tls://127.0.0.1:1?ca={}", missing.display()).parse().unwrap()).unwrap_err();
    assert!(matches!(&err, FromUriError::Ca { path, .. } if *path == missing), "{err:?}");
    assert_eq!(err.ca_path(), Some(missing.as_path()));
    assert!(err.to_string().contains(&missing.display().to_string()), "{err}");
    assert!(err.source().is_some_and(|s| s.to_string().contains("No such file")), "{err:?}");

    // A file that holds no certificate is refused too.
    let not_pem = dir.path().join("not.pem");
    std::fs::write(&not_pem, "hello").unwrap();
    let err =
        registry.ctx_from_uri(&format!("tls://127.0.0.1:1?ca={}", not_pem.display()).parse().unwrap()).unwrap_err();
    assert_eq!(err.ca_path(), Some(not_pem.as_path()), "{err:?}");
    assert!(chain(&err).contains("no CERTIFICATE"), "{}", chain(&err));
}

fn all_bindings() -> Registry {
    let registry = tcp_tls();
    register_hvsock(&registry, RegisterOptions::new(), FramingConfig::new());
    registry
}

/// `uri` is refused, naming `key` as the query parameter: at parse time for
/// an unknown key, by the binding for a modifier it does not use.
#[track_caller]
fn refused(registry: &Registry, uri: &str, key: &str) {
    let err = match uri.parse::<conflux_uri::Uri>() {
        Err(e) => e,
        Ok(uri) => match registry.ctx_from_uri(&uri) {
            Ok(ctx) => panic!("{uri} accepted: {ctx:?}"),
            Err(e) => e.uri().cloned().unwrap_or_else(|| panic!("{uri}: {e:?}")),
        },
    };
    assert_eq!((err.part(), err.value()), (UriPart::Query, key), "{uri}: {err}");
    assert!(err.to_string().contains(key), "{err}");
}

#[test]
fn every_binding_refuses_a_parameter_it_does_not_use_naming_it() {
    let registry = all_bindings();
    // tcp (and dns: a domain name goes through the DNS function).
    refused(&registry, "tcp://127.0.0.1:1?bogus=1", "bogus");
    refused(&registry, "tcp://example.test:1?bogus=1", "bogus");
    // tls: its modifiers belong to the stream under it, whose binding judges them.
    refused(&registry, "tls://127.0.0.1:1?bogus=1", "bogus");
    refused(&registry, "tls://127.0.0.1:1?over=unix:///run/x.sock&keepalive=1s,1s,3", "keepalive");
    // hvsock schemes: no keepalive.
    refused(&registry, "unix:///run/x.sock?bogus=1", "bogus");
    refused(&registry, "unix:///run/x.sock?keepalive=1s,1s,3", "keepalive");
    refused(&registry, "fc-vsock:///run/v.sock?port=5&keepalive=1s,1s,3", "keepalive");
    refused(&registry, "hyperkit://:80/run/hk?keepalive=1s,1s,3", "keepalive");
    refused(&registry, "vsock://3:80?keepalive=1s,1s,3", "keepalive");
    refused(&registry, "vsock://3:80?bogus=1", "bogus");
    // What a binding uses is accepted.
    for ok in [
        "tcp://127.0.0.1:1?connect_timeout=1s&keepalive=1s,1s,3",
        "tls://127.0.0.1:1?keepalive=1s,1s,3",
        "unix:///run/x.sock?framing=shutdown&connect_timeout=1s",
        // With the `hvsock` feature the framing runs over any stream (see tests/listen.rs).
        "tcp://127.0.0.1:1?framing=shutdown",
        "tcp://example.test:1?framing=shutdown",
        "tls://127.0.0.1:1?framing=shutdown",
    ] {
        registry.ctx_from_uri(&ok.parse().unwrap()).unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
    // Any CID is for listening only.
    let err = registry.ctx_from_uri(&"vsock://:80".parse().unwrap()).unwrap_err();
    assert_eq!(err.uri().map(|e| e.part()), Some(UriPart::Host), "{err}");
    // A listening URI cannot be resolved: the registry connects.
    let err = registry.ctx_from_uri(&"tcp-listen://127.0.0.1:1".parse().unwrap()).unwrap_err();
    assert_eq!(err.uri().map(|e| e.part()), Some(UriPart::Scheme), "{err}");
}

#[tokio::test]
async fn tls_modifiers_reach_the_tcp_connect_under_it() {
    let registry = Registry::new();
    let (tcp, _) = register_tcp(&registry, Some(20));
    let (tls, _) = register_tls(&registry, RegisterOptions::new().priority(10));
    let ctx = registry
        .ctx_from_uri(&"tls://127.0.0.1:1?sni=localhost&connect_timeout=3s&keepalive=20s,5s,4".parse().unwrap())
        .unwrap()
        .add(
            &TlsKeys::get().config,
            Arc::new(
                rustls::ClientConfig::builder_with_provider(provider())
                    .with_safe_default_protocol_versions()
                    .unwrap()
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth(),
            ),
        );
    let unfolded = registry.unfold(&ctx).await.unwrap();
    let endpoint = unfolded.find(&tls).unwrap();
    let lower = registry.unfold(endpoint.over()).await.unwrap();
    let e = lower.find(&tcp).unwrap();
    assert_eq!(e.options().timeout, Some(Duration::from_secs(3)));
    assert!(e.options().keepalive.is_some());
    assert_eq!(endpoint.over().get(&UriKeys::get().connect_timeout), Some(&Duration::from_secs(3)));
}

//! The `axum_over_vsock` example, over unix (framed) and over Firecracker's
//! hybrid vsock listening side (this machine has no vsock loopback).

#[path = "../examples/axum_over_vsock.rs"]
#[allow(dead_code)]
mod axum_over_vsock;

use std::time::Duration;

use conflux_mimic::{Registry, register_all};

const LIMIT: Duration = Duration::from_secs(60);

fn registry() -> Registry {
    let registry = Registry::new();
    register_all(&registry);
    registry
}

async fn round_trip(listen_uri: &str) {
    let registry = registry();
    let listener = axum_over_vsock::listen(&registry, listen_uri).await.unwrap();
    let dial = listener.local_uri().to_string();
    let server = tokio::spawn(axum_over_vsock::serve(listener));
    let (status, body) =
        tokio::time::timeout(LIMIT, axum_over_vsock::fetch(&registry, &dial, "/hello")).await.unwrap().unwrap();
    assert_eq!((status, body.as_str()), (200, "hello from axum over conflux\n"));
    let (status, peer) =
        tokio::time::timeout(LIMIT, axum_over_vsock::fetch(&registry, &dial, "/peer")).await.unwrap().unwrap();
    assert_eq!(status, 200);
    assert!(!peer.trim().is_empty(), "the listener names the peer");
    server.abort();
}

#[tokio::test]
async fn example_over_unix_framed() {
    let dir = conflux_testkit::TempDir::new("axum-example-unix");
    round_trip(&format!("unix://{}/app.sock?framing=shutdown", dir.path().display())).await;
}

/// Where a Firecracker VMM delivers a guest's connections to host port
/// 8080 (`<path>_8080`); the client dials that socket as the VMM would.
#[tokio::test]
async fn example_over_fc_vsock_listen() {
    let dir = conflux_testkit::TempDir::new("axum-example-fc");
    round_trip(&format!("fc-vsock://{}/v.sock?port=8080", dir.path().display())).await;
}

#[test]
fn defaults_parse() {
    assert!(axum_over_vsock::SERVE_DEFAULT.parse::<conflux_uri::Uri>().is_ok());
    assert!(axum_over_vsock::GET_DEFAULT.parse::<conflux_uri::Uri>().is_ok());
}

#[test]
fn get_splits_the_request_path_off() {
    let split = |u: &str| axum_over_vsock::split_path(u);
    assert_eq!(split("vsock://3:8080/peer"), ("vsock://3:8080".to_string(), Some("/peer".to_string())));
    assert_eq!(
        split("tcp://127.0.0.1:80/a?framing=shutdown"),
        ("tcp://127.0.0.1:80?framing=shutdown".into(), Some("/a".into()))
    );
    assert_eq!(split("unix:///run/app.sock"), ("unix:///run/app.sock".to_string(), None));
    assert_eq!(split("vsock://3:8080"), ("vsock://3:8080".to_string(), None));
}

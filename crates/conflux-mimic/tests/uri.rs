//! URIs meet the registry: `Ctx::from_uri` fills the well-known keys, and a
//! registry without a binding for a scheme says so. The grammar itself is
//! tested in conflux-uri.
#![forbid(unsafe_code)]

use std::net::{IpAddr, Ipv4Addr};

use conflux_mimic::{Ctx, Registry, UriKeys};
use conflux_uri::{Scheme, UriPart};

#[test]
fn from_uri_fills_scheme_host_and_port() {
    let k = UriKeys::get();
    let ctx = Ctx::from_uri(&"tcp://127.0.0.1:8080".parse().unwrap());
    assert_eq!(ctx.get(&k.scheme), Some(&Scheme::Tcp));
    assert_eq!(ctx.get(&k.ip), Some(&IpAddr::V4(Ipv4Addr::LOCALHOST)));
    assert_eq!(ctx.get(&k.port), Some(&8080));
    assert!(ctx.get(&k.domain).is_none());
    let ctx = Ctx::from_uri(&"tls://example.test".parse().unwrap());
    assert_eq!(ctx.get(&k.domain).map(String::as_str), Some("example.test"));
    assert_eq!(ctx.get(&k.port), Some(&443));
}

#[test]
fn a_registry_without_a_binding_for_the_scheme_says_so() {
    let registry = Registry::new();
    registry.register_scheme(Scheme::Stdio, |_, ctx| Ok(ctx));
    let err = registry.ctx_from_uri(&"vsock://3:1".parse().unwrap()).unwrap_err();
    assert_eq!(err.uri().map(|e| e.part()), Some(UriPart::Scheme));
    assert!(err.to_string().contains("served: stdio"), "{err}");
    assert!(registry.ctx_from_uri(&"stdio:".parse().unwrap()).is_ok());
}

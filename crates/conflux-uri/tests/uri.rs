//! The one URI grammar (`shared/spec/uri.md`): every scheme round-trips, and
//! errors name the wrong part.
#![forbid(unsafe_code)]

use std::time::Duration;

use conflux_uri::{Guid, Host, HvVm, Scheme, Target, Uri, UriPart};

const EXAMPLES: &[&str] = &[
    "vsock://2:80/",
    "tcp://127.0.0.1:8080",
    "tcp://[::1]:80",
    "tcp://example.test:443",
    "tcp-listen://:8080",
    "tcp://:8080",
    "tls://example.test:443",
    "tls://example.test",
    "tls://10.0.0.1:8443?sni=api.example.test&ca=/etc/ca.pem",
    "tls://example.test?over=vsock://3:5000",
    "tls://example.test?over=tcp://[::1]:8443%3Fconnect_timeout%3D2s",
    "unix:///run/app.sock",
    "unix-listen:///run/app%20space.sock",
    "vsock://3:5000",
    "vsock://:5000",
    "vsock://host:22",
    "hvsock://e0e16197-dd56-4a10-9195-5ee7a155a838/00005653-facb-11e6-bd58-64006a7986d3",
    "hvsock:///0b95756a-9985-48ad-9470-78e060895be7",
    "hvsock://myvm/5000",
    "fc-vsock:///srv/vm1/v.sock?port=52",
    "hyperkit://:80/var/run/hk",
    "netstack://tap0/10.0.0.2/24:8080?gw=10.0.0.1",
    "netstack://tun1/fd00::2/64?mtu=1400",
    "stdio:",
    "tcp://127.0.0.1:80?framing=shutdown&connect_timeout=1500ms&keepalive=30s,5s,3",
];

#[test]
fn every_example_round_trips() {
    for text in EXAMPLES {
        let uri: Uri = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
        let printed = uri.to_string();
        let again: Uri = printed.parse().unwrap_or_else(|e| panic!("{text} printed as {printed}: {e}"));
        assert_eq!(again, uri, "{text} -> {printed}");
        assert_eq!(again.to_string(), printed, "printing is stable");
    }
}

#[test]
fn every_scheme_is_covered() {
    for scheme in Scheme::ALL {
        assert!(EXAMPLES.iter().any(|e| e.parse::<Uri>().unwrap().scheme() == scheme), "no example of {scheme}");
    }
}

#[test]
fn typed_values() {
    let uri: Uri = "vsock://host:22".parse().unwrap();
    assert_eq!(uri.target(), &Target::Vsock { cid: Some(2), port: 22 });
    let uri: Uri = "hvsock://myvm/5000".parse().unwrap();
    let Target::Hvsock { vm, service } = uri.target() else { panic!() };
    assert_eq!(vm, &HvVm::Name("myvm".into()));
    assert_eq!(service.vsock_port(), Some(5000));
    assert_eq!(service.to_string(), "00001388-facb-11e6-bd58-64006a7986d3");
    assert_eq!(Guid::from_vsock_port(0x5653).to_string(), "00005653-facb-11e6-bd58-64006a7986d3");
    let uri: Uri = "tcp-listen://:8080".parse().unwrap();
    assert!(uri.listen());
    assert_eq!(uri.host(), Some(&Host::Any));
    let uri: Uri = "tcp://Example.TEST.:1".parse().unwrap();
    assert_eq!(uri.host(), Some(&Host::Domain("example.test".into())));
    let uri: Uri = "tcp://1.2.3.4:80?keepalive=30s,5s,3&connect_timeout=2m".parse().unwrap();
    assert_eq!(uri.options().connect_timeout, Some(Duration::from_secs(120)));
    assert_eq!(uri.options().keepalive.unwrap().probes, 3);
    let uri: Uri = "tls://example.test?over=vsock://3:5000".parse().unwrap();
    let Target::Tls { over: Some(over), port: None, .. } = uri.target() else { panic!() };
    assert_eq!(over.scheme(), Scheme::Vsock);
    assert_eq!(uri.port(), Some(443), "tls defaults to 443");
}

#[test]
fn errors_name_the_wrong_part() {
    let cases: &[(&str, UriPart, &str)] = &[
        (
            "ftp://example.test",
            UriPart::Scheme,
            "known: tcp, tls, unix, vsock, hvsock, fc-vsock, hyperkit, netstack, stdio",
        ),
        ("example.test:80", UriPart::Scheme, "unknown scheme"),
        ("localhost", UriPart::Scheme, "missing `scheme:`"),
        ("tcp:1.2.3.4:80", UriPart::Scheme, "expected `://`"),
        ("tcp://exa_mple.test:80", UriPart::Host, "not an IP address or a domain name"),
        ("tcp://1.2.3.400:80", UriPart::Host, "not an IPv4 address"),
        ("tcp://::1:80", UriPart::Host, "needs brackets"),
        ("tcp://[::g]:80", UriPart::Host, "not an IPv6 address"),
        ("tcp://example.test:http", UriPart::Port, "not a number"),
        ("tcp://example.test:65536", UriPart::Port, "out of range"),
        ("tcp://example.test", UriPart::Port, "missing"),
        ("tcp://example.test:80/index.html", UriPart::Path, "no path"),
        ("unix://relative", UriPart::Host, "no host"),
        ("unix://", UriPart::Path, "absolute path"),
        ("vsock://guest:5", UriPart::Host, "not a CID"),
        ("hvsock://vm/not-a-guid", UriPart::Path, "service GUID"),
        ("fc-vsock:///v.sock", UriPart::Query, "missing"),
        ("fc-vsock:///v.sock?port=x", UriPart::Query, "not a number"),
        ("netstack://tap0/10.0.0.2/33", UriPart::Path, "prefix length"),
        ("netstack://tap0/10.0.0.300/24", UriPart::Host, "not an IPv4 or IPv6 address"),
        ("tcp://a.test:1?colour=blue", UriPart::Query, "unknown for this scheme"),
        ("tcp://a.test:1?sni=x", UriPart::Query, "unknown for this scheme"),
        ("tcp://a.test:1?framing=lines", UriPart::Query, "only framing"),
        ("tcp://a.test:1?connect_timeout=5y", UriPart::Query, "unknown unit"),
        ("tcp://a.test:1?keepalive=1,2", UriPart::Query, "AFTER,INTERVAL,PROBES"),
        ("tls://a.test?sni=x&sni=y", UriPart::Query, "given twice"),
        ("tls://a.test?over=ftp://x", UriPart::Query, "unknown scheme"),
        ("stdio://x", UriPart::Path, "no address"),
    ];
    for (text, part, needle) in cases {
        let err = text.parse::<Uri>().expect_err(text);
        assert_eq!(err.part(), *part, "{text}: {err}");
        assert!(err.to_string().contains(needle), "{text}: {err:?} lacks {needle:?}");
    }
}

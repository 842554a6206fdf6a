//! The one URI grammar (`docs/uri.md`): every scheme round-trips, and
//! errors name the wrong part.
#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

use conflux_uri::{Guid, Host, HvVm, MAX_OVER_DEPTH, Scheme, Target, Uri, UriErrorKind, UriPart};

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
    "netstack://tap0/10.0.0.2/24?gw=10.0.0.1&dst=10.0.0.1:80",
    "netstack://mem_0.a-b/fd00::2/64?dst=[fd00::1]:8080&framing=shutdown",
    "netstack-listen://tap0/10.0.0.2/24:0",
    "stdio:",
    "stdio:?framing=shutdown",
    "tls-listen://:8443?cert=/etc/tls/cert.pem&key=/etc/tls/key%20file.pem",
    "tls-listen://127.0.0.1:0?cert=/c.pem&key=/k.pem&ca=/clients.pem&over=unix-listen:///run/s.sock",
    "tls://a.test?cert=/c.pem&key=/k.pem",
    "tls://a.test:8443?ca=/ca.pem&alpn=h2,http/1.1",
    "tls-listen://:8443?cert=/c.pem&key=/k.pem&alpn=h2",
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
fn tls_cert_and_key_are_typed_paths() {
    let uri: Uri = "tls-listen://:8443?cert=/etc/c.pem&key=/etc/k.pem&ca=/etc/ca.pem".parse().unwrap();
    let Target::Tls { cert, key, ca, sni: None, over: None, .. } = uri.target() else { panic!("{uri:?}") };
    assert_eq!(cert.as_deref(), Some(std::path::Path::new("/etc/c.pem")));
    assert_eq!(key.as_deref(), Some(std::path::Path::new("/etc/k.pem")));
    assert_eq!(ca.as_deref(), Some(std::path::Path::new("/etc/ca.pem")));
    assert_eq!(uri.to_string(), "tls-listen://:8443?ca=/etc/ca.pem&cert=/etc/c.pem&key=/etc/k.pem");
    let uri: Uri = "stdio:?framing=shutdown".parse().unwrap();
    assert_eq!(uri.options().framing, Some(conflux_uri::Framing::Shutdown));
}

#[test]
fn tls_alpn_is_a_list_of_protocol_names() {
    let uri: Uri = "tls://a.test?alpn=h2,http/1.1".parse().unwrap();
    let Target::Tls { alpn, .. } = uri.target() else { panic!("{uri:?}") };
    assert_eq!(alpn, &["h2", "http/1.1"]);
    assert_eq!(uri.to_string(), "tls://a.test?alpn=h2,http/1.1");
    let uri: Uri = "tls://a.test".parse().unwrap();
    assert!(matches!(uri.target(), Target::Tls { alpn, .. } if alpn.is_empty()), "no alpn= offers none");
    for bad in ["tls://a.test?alpn=", "tls://a.test?alpn=h2,,http/1.1", "tls://a.test?alpn=h2,"] {
        let e = bad.parse::<Uri>().unwrap_err();
        assert_eq!((e.part(), e.value()), (UriPart::Query, "alpn"), "{bad}: {e}");
    }
    let long = format!("tls://a.test?alpn={}", "x".repeat(256));
    assert_eq!(long.parse::<Uri>().unwrap_err().part(), UriPart::Query);
    assert!("tcp://a.test:1?alpn=h2".parse::<Uri>().is_err(), "alpn= is tls's only");
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
    let uri: Uri = "netstack://tap0/10.0.0.2/24?gw=10.0.0.1&mtu=1400&dst=10.0.0.1:80".parse().unwrap();
    assert_eq!(
        uri.target(),
        &Target::Netstack {
            device: "tap0".into(),
            addr: [10, 0, 0, 2].into(),
            prefix: 24,
            port: None,
            gw: Some([10, 0, 0, 1].into()),
            mtu: Some(1400),
            dst: Some(([10, 0, 0, 1], 80).into()),
        }
    );
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
        ("netstack:///10.0.0.2/24", UriPart::Host, "missing device"),
        ("netstack://tap0123456789abcd/10.0.0.2/24", UriPart::Host, "not a device name"),
        ("netstack://ta%20p/10.0.0.2/24", UriPart::Host, "not a device name"),
        ("netstack://../10.0.0.2/24", UriPart::Host, "not a device name"),
        ("netstack://tap0", UriPart::Path, "expected `/addr/prefix[:port]`"),
        ("netstack://tap0/10.0.0.2/24:http", UriPart::Port, "not a number"),
        ("netstack://tap0/10.0.0.2/24?gw=fd00::1", UriPart::Query, "is IPv6 but the stack's address is IPv4"),
        ("netstack://tap0/10.0.0.2/24?gw=gateway", UriPart::Query, "not an IP address"),
        ("netstack://tap0/10.0.0.2/24?mtu=big", UriPart::Query, "not a number"),
        ("netstack://tap0/10.0.0.2/24?dst=10.0.0.1", UriPart::Query, "not ADDR:PORT"),
        ("netstack://tap0/10.0.0.2/24?dst=fd00::1:80", UriPart::Query, "not ADDR:PORT"),
        ("netstack://tap0/10.0.0.2/24?dst=10.0.0.1:0", UriPart::Query, "port 0"),
        ("netstack://tap0/fd00::2/64?dst=10.0.0.1:80", UriPart::Query, "is IPv4 but the stack's address is IPv6"),
        ("netstack://tap0/10.0.0.2/24?dest=10.0.0.1:80", UriPart::Query, "unknown for this scheme"),
        ("tcp://a.test:1?colour=blue", UriPart::Query, "unknown for this scheme"),
        ("tcp://a.test:1?sni=x", UriPart::Query, "unknown for this scheme"),
        ("tcp://a.test:1?framing=lines", UriPart::Query, "only framing"),
        ("tcp://a.test:1?connect_timeout=5y", UriPart::Query, "unknown unit"),
        ("tcp://a.test:1?keepalive=1,2", UriPart::Query, "AFTER,INTERVAL,PROBES"),
        ("tls://a.test?sni=x&sni=y", UriPart::Query, "given twice"),
        ("tls://a.test?over=ftp://x", UriPart::Query, "unknown scheme"),
        ("stdio://x", UriPart::Path, "no address"),
        ("stdio:?keepalive=1,2", UriPart::Query, "AFTER,INTERVAL,PROBES"),
        ("stdio:?colour=blue", UriPart::Query, "unknown for this scheme"),
        ("tls://a.test?cert=/c.pem&cert=/d.pem", UriPart::Query, "given twice"),
        ("tcp://a.test:1?cert=/c.pem", UriPart::Query, "unknown for this scheme"),
        // Numbers are ASCII digits only (`str::parse` would take a `+`), and
        // an escape is `%` and two hexadecimal digits (`from_str_radix` too).
        ("vsock://+3:5", UriPart::Host, "not a CID"),
        ("hvsock://vm/+5000", UriPart::Path, "service GUID"),
        ("netstack://tap0/10.0.0.2/+24", UriPart::Path, "prefix length"),
        ("tcp://a.test:1?keepalive=1,2,+3", UriPart::Query, "probes is not a number"),
        ("unix:///a%+1", UriPart::Path, "bad `%+1` escape"),
        ("tcp://a.test:1?sni%+1=x", UriPart::Query, "bad `%+1` escape"),
    ];
    for (text, part, needle) in cases {
        let err = text.parse::<Uri>().expect_err(text);
        assert_eq!(err.part(), *part, "{text}: {err}");
        assert!(err.to_string().contains(needle), "{text}: {err:?} lacks {needle:?}");
    }
}

/// `tls://a?over=` (with `extra` query pairs before `over=`) wrapped `n`
/// times around `tcp://b:1`, each inner URI escaped as a query value.
fn nested(n: usize, extra: &str) -> String {
    let mut s = "tcp://b:1".to_string();
    for _ in 0..n {
        s = format!("tls://a?{extra}over={}", s.replace('%', "%25").replace('&', "%26"));
    }
    s
}

fn depth(uri: &Uri) -> usize {
    match uri.target() {
        Target::Tls { over: Some(o), .. } => 1 + depth(o),
        _ => 0,
    }
}

#[test]
fn over_nests_up_to_the_limit_and_round_trips() {
    for extra in ["", "sni=s&", "sni=s&ca=/c&"] {
        let text = nested(MAX_OVER_DEPTH, extra);
        let uri: Uri = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(depth(&uri), MAX_OVER_DEPTH);
        let printed = uri.to_string();
        let again: Uri = printed.parse().unwrap_or_else(|e| panic!("{printed}: {e}"));
        assert_eq!(again, uri);
        assert_eq!(again.to_string(), printed, "printing is stable");
        if extra.is_empty() {
            assert_eq!(printed, text, "a nested `over=` with no `&` prints unescaped");
        }
        // Each level escapes the `&` of the levels inside it once more, but the
        // bounded depth keeps the printed size a small multiple of the input.
        assert!(printed.len() <= 4 * text.len(), "{} bytes printed from {}", printed.len(), text.len());
    }
}

#[test]
fn over_deeper_than_the_limit_is_a_typed_error() {
    let err = nested(MAX_OVER_DEPTH + 1, "").parse::<Uri>().unwrap_err();
    assert_eq!(err.kind(), UriErrorKind::TooDeep { limit: MAX_OVER_DEPTH });
    assert_eq!(err.part(), UriPart::Query);
    assert_eq!(err.value(), "over");
    assert!(err.to_string().contains(&format!("deeper than {MAX_OVER_DEPTH} levels")), "{err}");
    // Ordinary errors are of the other kind, also inside `over=`.
    let err = "tls://a.test?over=ftp://x".parse::<Uri>().unwrap_err();
    assert_eq!(err.kind(), UriErrorKind::Invalid);
}

/// 2,000 levels (a 26 KB string) used to recurse 2,000 times and overflow a
/// tokio worker's 2 MiB stack; now parsing stops at the limit, on a 256 KiB
/// stack, at once.
#[test]
fn a_deep_over_fails_fast_on_a_small_stack() {
    let text = nested(2_000, "");
    assert!(text.len() > 26_000);
    let t = std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(move || {
            let start = Instant::now();
            let err = text.parse::<Uri>().unwrap_err();
            (err.kind(), start.elapsed())
        })
        .unwrap();
    let (kind, took) = t.join().expect("parsing a deep `over=` must not overflow the stack");
    assert_eq!(kind, UriErrorKind::TooDeep { limit: MAX_OVER_DEPTH });
    assert!(took < Duration::from_millis(500), "took {took:?}");
}

/// Printing at the limit is a small, quick job: its cost is bounded by the
/// depth, not quadratic in it (n = 1,000 levels used to print 2 MB in 2.5 s).
#[test]
fn printing_at_the_limit_is_small_and_fast() {
    let text = nested(MAX_OVER_DEPTH, "sni=s&");
    let uri: Uri = text.parse().unwrap();
    let start = Instant::now();
    let mut total = 0;
    for _ in 0..1_000 {
        total += uri.to_string().len();
    }
    let took = start.elapsed();
    assert!(total <= 1_000 * 4 * text.len(), "{total}");
    assert!(took < Duration::from_secs(2), "1,000 prints took {took:?}");
}

/// Every crate that reads a URI depends on this one, so it stays a leaf:
/// `thiserror` and nothing else (no transport crate, no I/O crate).
#[test]
fn depends_on_thiserror_only() {
    let manifest = include_str!("../Cargo.toml");
    let mut section = "";
    let mut deps = Vec::new();
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line;
        } else if section.ends_with("dependencies]")
            && !section.contains("dev-")
            && !line.is_empty()
            && let Some((name, _)) = line.split_once('=')
        {
            deps.push(name.trim().split('.').next().unwrap().to_string());
        }
    }
    assert_eq!(deps, ["thiserror"], "conflux-uri's dependencies");
}

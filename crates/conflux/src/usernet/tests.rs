//! The guest arguments' rules, the port forwards' early check and the reconnect backoff.

use super::vm::Backoff;
use super::*;
use crate::error::Exit;

#[test]
fn numbers_are_pids_and_the_rest_paths() {
    assert_eq!(Target::parse("4242"), Target::Pid(4242));
    assert_eq!(Target::parse("4242").path(), PathBuf::from("/proc/4242/ns/net"));
    assert_eq!(Target::parse("/run/netns/x"), Target::Path("/run/netns/x".into()));
    assert!(!process_gone(std::process::id()));
    assert!(process_gone(u32::MAX));
}

fn args(netns: Option<&str>, listen: Option<&str>, connect: Option<&str>) -> GuestArgs {
    GuestArgs {
        netns: netns.map(Into::into),
        listen: listen.map(Into::into),
        connect: connect.map(Into::into),
        ..GuestArgs::default()
    }
}

/// The usage error `args` give (exit 2), its message.
fn usage(args: &GuestArgs) -> String {
    let e = Guest::from_args(args).expect_err("a usage error");
    assert_eq!(e.exit, Exit::Usage, "{e}");
    e.to_string()
}

#[test]
fn exactly_one_guest() {
    assert_eq!(Guest::from_args(&args(Some("7"), None, None)).unwrap(), Guest::Netns(Target::Pid(7)));
    let listen = Guest::from_args(&args(None, Some("unix:///run/vm0.sock"), None)).unwrap();
    assert!(matches!(&listen, Guest::Listen(u) if u.to_string() == "unix:///run/vm0.sock"), "{listen:?}");
    let connect = Guest::from_args(&args(None, None, Some("unix:///tmp/passt_1.socket"))).unwrap();
    assert!(matches!(&connect, Guest::Connect(u) if u.to_string() == "unix:///tmp/passt_1.socket"), "{connect:?}");

    let none = usage(&args(None, None, None));
    assert_eq!(none, "usernet needs a guest: --netns PID|PATH, --listen URI or --connect URI");
    let two = usage(&args(Some("/run/netns/x"), Some("unix:///a"), None));
    assert_eq!(two, "--netns and --listen: give only one of --netns, --listen, --connect");
    let two = usage(&args(None, Some("unix:///a"), Some("unix:///b")));
    assert!(two.starts_with("--listen and --connect: give only one"), "{two}");
    let three = usage(&args(Some("1"), Some("unix:///a"), Some("unix:///b")));
    assert!(three.starts_with("--netns and --listen: give only one"), "{three}");
}

#[test]
fn the_tap_options_are_for_a_namespace_only() {
    let mut a = args(None, Some("unix:///a"), None);
    a.configure = true;
    assert!(usage(&a).starts_with("--configure is for --netns only (with --listen"), "{}", usage(&a));
    let mut a = args(None, None, Some("unix:///a"));
    a.interface = Some("tap1".into());
    assert_eq!(usage(&a), "--interface is for --netns only (not --connect)");
    let mut a = args(Some("/run/netns/x"), None, None);
    a.configure = true;
    a.interface = Some("tap1".into());
    assert!(Guest::from_args(&a).is_ok());
    a.interface = Some("a-name-of-16-byte".into());
    assert_eq!(usage(&a), "--interface \"a-name-of-16-byte\": 1 to 15 bytes");
}

#[test]
fn guest_uris_are_checked_and_named() {
    let bad = usage(&args(None, Some("nope://x"), None));
    assert!(bad.starts_with("bad --listen URI `nope://x`: "), "{bad}");
    let bad = usage(&args(None, None, Some("unix://")));
    assert!(bad.starts_with("bad --connect URI `unix://`: "), "{bad}");
    let listening = usage(&args(None, None, Some("unix-listen:///a")));
    assert!(listening.starts_with("--connect unix-listen:///a: a listening URI (use --listen"), "{listening}");
    // Listening takes a `-listen` URI and a plain one alike, framed or not.
    for uri in ["unix-listen:///a", "fc-vsock:///srv/v.sock?port=1024&framing=shutdown", "vsock://:1024"] {
        assert!(matches!(Guest::from_args(&args(None, Some(uri), None)), Ok(Guest::Listen(_))), "{uri}");
    }
}

#[test]
fn port_forwards_are_checked_before_a_guest_comes() {
    // Each protocol's host address is checked as that protocol's: taken,
    // the forward is refused and named; released, it passes.
    for proto in ["tcp", "udp"] {
        let (taken, port): (Box<dyn std::any::Any>, u16) = if proto == "tcp" {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let port = l.local_addr().unwrap().port();
            (Box::new(l), port)
        } else {
            let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            let port = s.local_addr().unwrap().port();
            (Box::new(s), port)
        };
        let config = UsernetConfig::new().forward(format!("{proto}:{port}:80").parse().unwrap());
        let e = check_forwards(&config).unwrap_err();
        assert_eq!(e.exit, Exit::Runtime);
        let named = format!("-p {proto}:127.0.0.1:{port}:80: cannot listen on 127.0.0.1:{port}: ");
        assert!(e.to_string().starts_with(&named), "{e}");
        drop(taken);
        assert!(check_forwards(&config).is_ok(), "{proto}");
    }
}

#[test]
fn reconnects_back_off_to_a_bound_and_start_over_after_a_long_guest() {
    let mut b = Backoff::new();
    let delays: Vec<u64> = (0..8).map(|_| b.delay().as_millis() as u64).collect();
    assert_eq!(delays, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
    b.served(Duration::from_secs(1));
    assert_eq!(b.delay(), Duration::from_secs(5));
    b.served(Duration::from_secs(10));
    assert_eq!(b.delay(), Duration::from_millis(100));
}

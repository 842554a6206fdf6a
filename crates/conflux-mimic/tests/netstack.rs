//! `netstack://` through the registry on in-process stacks (memory links):
//! the flow kit over pairs made by listening and connecting by URI, shared
//! stacks, and errors naming the wrong part. TAP and TUN devices: `serial`.
#![forbid(unsafe_code)]

use std::io;
use std::sync::Mutex;
use std::time::Duration;

use conflux_conformance::{Caps, FlowFactory, PairFuture, flow_conformance};
use conflux_flow::{BoxFlow, FlowError, FlowExt};
use conflux_hvsock::FramingConfig;
use conflux_mimic::{
    Ctx, FramingKeys, ListenError, NetstackDevice, NetstackEndpoint, NetstackKeys, RegisterOptions, Registry,
    register_netstack,
};
use conflux_netstack::{LinkConfig, NetStack, StackConfig, link_pair};
use conflux_tcp::TcpStack;
use conflux_testkit::{TIMEOUT, payload, within};
use conflux_uri::{Uri, UriPart};

/// Two stacks on one memory link: `mem0` (10.0.0.1) and `mem1` (10.0.0.2),
/// both in the returned context.
fn two_stacks() -> (Ctx, NetStack, NetStack) {
    let (a, b) = link_pair(LinkConfig::ethernet());
    let s0 = NetStack::new(StackConfig::new().ipv4("10.0.0.1".parse().unwrap(), 24), a);
    let s1 = NetStack::new(StackConfig::new().ipv4("10.0.0.2".parse().unwrap(), 24).mac([2, 0, 0, 0, 0, 2]), b);
    let devices = &NetstackKeys::get().devices;
    let ctx = Ctx::new()
        .add(devices, NetstackDevice::new("mem0", s0.clone()))
        .add(devices, NetstackDevice::new("mem1", s1.clone()));
    (ctx, s0, s1)
}

fn registry() -> Registry {
    let registry = Registry::new();
    register_netstack(&registry, RegisterOptions::new());
    registry
}

fn uri(s: &str) -> Uri {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// Connects by URI through the registry, with `ctx`'s in-process stacks.
async fn dial(registry: &Registry, text: &str, ctx: &Ctx) -> Result<BoxFlow, String> {
    registry.dial_with(&uri(text), ctx).await.map_err(|e| e.to_string())
}

/// Pairs made the way a user would: listen on `netstack://mem1/...:0`,
/// connect with `netstack://mem0/...?dst=`, both through one registry made
/// by `register_all`; with `query` (`&framing=shutdown`) on both URIs.
#[derive(Default)]
struct RegistryPairs {
    query: &'static str,
    stacks: Mutex<Vec<NetStack>>,
}

/// The framing's close timeout in the framed pairs: short, so the kit's close cases stay fast.
const CLOSE_TIMEOUT: Duration = Duration::from_millis(500);

impl FlowFactory for RegistryPairs {
    type Flow = BoxFlow;

    fn caps(&self) -> Caps {
        if self.query.is_empty() {
            Caps::in_memory()
        } else {
            // As for the framing over kernel TCP: our ShutdownRead marker only
            // reaches a peer that reads, and close waits (bounded) for the peer's Close.
            Caps { peer_sees_read_shutdown: false, close_waits_for_peer: true, ..Caps::in_memory() }
        }
    }

    fn pair(&self) -> PairFuture<'_, BoxFlow> {
        Box::pin(async move {
            let (ctx, s0, s1) = two_stacks();
            let ctx = ctx.add(&FramingKeys::get().config, FramingConfig::new().close_timeout(CLOSE_TIMEOUT));
            let registry = Registry::new();
            conflux_mimic::register_all(&registry);
            let q = self.query;
            let mut listener = registry
                .listen_with(&uri(&format!("netstack://mem1/10.0.0.2/24?{q}")), &ctx)
                .await
                .map_err(FlowError::other)?;
            let port = listener.local_uri().port().ok_or_else(FlowError::closed)?;
            let client = dial(&registry, &format!("netstack://mem0/10.0.0.1/24?dst=10.0.0.2:{port}&{q}"), &ctx)
                .await
                .map_err(FlowError::other)?;
            let server = listener.accept().await.map_err(FlowError::other)?;
            self.stacks.lock().unwrap().extend([s0, s1]);
            Ok((client, server.flow))
        })
    }

    fn open_resources(&self) -> Option<usize> {
        Some(self.stacks.lock().unwrap().iter().map(TcpStack::open_flows).sum())
    }
}

flow_conformance!(registry_mem, RegistryPairs::default());
flow_conformance!(registry_mem_framed, RegistryPairs { query: "framing=shutdown", ..RegistryPairs::default() });

#[tokio::test(start_paused = true)]
async fn register_all_serves_netstack_both_ways() {
    let (ctx, _s0, _s1) = two_stacks();
    let registry = Registry::new();
    conflux_mimic::register_all(&registry);
    assert!(registry.listen_schemes().contains(&conflux_uri::Scheme::Netstack));
    let mut listener = registry.listen_with(&uri("netstack://mem1/10.0.0.2/24:99"), &ctx).await.unwrap();
    let mut f = registry.dial_with(&uri("netstack://mem0/10.0.0.1/24?dst=10.0.0.2:99"), &ctx).await.unwrap();
    let mut server = within("accept", TIMEOUT, listener.accept()).await.unwrap().flow;
    f.write("ping").await.unwrap();
    f.close().await.unwrap();
    assert_eq!(server.read_to_end().await.unwrap(), b"ping");
}

#[tokio::test(start_paused = true)]
async fn listen_and_connect_by_uri_carry_data_both_ways() {
    let (ctx, _s0, _s1) = two_stacks();
    let registry = registry();
    let mut listener = registry.listen_with(&uri("netstack-listen://mem1/10.0.0.2/24:8080"), &ctx).await.unwrap();
    assert_eq!(listener.local_uri(), &uri("netstack://mem1/10.0.0.2/24:8080"), "no -listen, the port bound");
    let data = payload(7, 1 << 20);
    let mut client = dial(&registry, "netstack://mem0/10.0.0.1/24?dst=10.0.0.2:8080", &ctx).await.unwrap();
    let accepted = within("accept", TIMEOUT, listener.accept()).await.unwrap();
    assert!(accepted.peer.starts_with("10.0.0.1:"), "peer {}", accepted.peer);
    let mut server = accepted.flow;
    let echo = tokio::spawn(async move {
        let got = server.read_to_end().await.unwrap();
        server.write(got).await.unwrap();
        server.close().await.unwrap();
    });
    client.write(data.clone()).await.unwrap();
    client.shutdown(conflux_flow::Shutdown::Write).await.unwrap();
    let back = within("the echo", TIMEOUT, client.read_to_end()).await.unwrap();
    assert_eq!(back, data);
    echo.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn the_endpoint_carries_dst_and_the_connect_options() {
    let (ctx, _s0, _s1) = two_stacks();
    let registry = Registry::new();
    let (key, _) = register_netstack(&registry, RegisterOptions::new());
    let c = registry
        .ctx_from_uri(&uri("netstack://mem0/10.0.0.1/24?dst=10.0.0.2:80&connect_timeout=3s&keepalive=10s,2s,3"))
        .unwrap()
        .merge(&ctx);
    let unfolded = registry.unfold(&c).await.unwrap();
    let e: Vec<&NetstackEndpoint> = unfolded.values(&key).collect();
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].device(), "mem0");
    assert_eq!(e[0].dst(), "10.0.0.2:80".parse().unwrap());
    assert_eq!(e[0].options().timeout, Some(Duration::from_secs(3)));
    assert_eq!(e[0].options().keepalive.map(|k| k.probes), Some(3));
}

#[tokio::test(start_paused = true)]
async fn uris_on_one_device_share_its_stack_and_a_port_is_not_taken_twice() {
    let (ctx, _s0, s1) = two_stacks();
    let registry = registry();
    let mut a = registry.listen_with(&uri("netstack://mem1/10.0.0.2/24:81"), &ctx).await.unwrap();
    let mut b = registry.listen_with(&uri("netstack://mem1/10.0.0.2/24:82"), &ctx).await.unwrap();
    for (port, listener) in [(81, &mut a), (82, &mut b)] {
        let mut f = dial(&registry, &format!("netstack://mem0/10.0.0.1/24?dst=10.0.0.2:{port}"), &ctx).await.unwrap();
        let mut got = within("accept", TIMEOUT, listener.accept()).await.unwrap().flow;
        f.write(format!("to {port}")).await.unwrap();
        f.close().await.unwrap();
        assert_eq!(got.read_to_end().await.unwrap(), format!("to {port}").as_bytes());
    }
    assert_eq!(s1.ports_in_use(), 2, "both listeners on the one stack");
    // A third URI on port 81 would silently replace the first listener: refused.
    let err = registry.listen_with(&uri("netstack://mem1/10.0.0.2/24:81"), &ctx).await.unwrap_err();
    let ListenError::Io { what, source } = &err else { panic!("{err:?}") };
    assert_eq!(source.kind(), io::ErrorKind::AddrInUse, "{err}");
    assert!(what.contains("10.0.0.2:81") && what.contains("mem1"), "{err}");
    // Once the first listener goes, its port is free again.
    drop(a);
    let _again = registry.listen_with(&uri("netstack://mem1/10.0.0.2/24:81"), &ctx).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn listening_errors_name_the_wrong_part() {
    let (ctx, _s0, _s1) = two_stacks();
    let registry = registry();
    let cases: &[(&str, UriPart, &str, &str)] = &[
        ("netstack://mem1/10.0.0.9/24:80", UriPart::Host, "10.0.0.9", "not an address of the in-process stack `mem1`"),
        ("netstack://mem1/10.0.0.2/24:80?gw=10.0.0.1", UriPart::Query, "gw", "configured by its maker"),
        ("netstack://mem1/10.0.0.2/24:80?mtu=1400", UriPart::Query, "mtu", "configured by its maker"),
        ("netstack://mem1/10.0.0.2/24:80?dst=10.0.0.1:80", UriPart::Query, "dst", "takes no destination"),
        ("netstack://mem1/10.0.0.2/24:80?connect_timeout=1s", UriPart::Query, "connect_timeout", "does not use it"),
    ];
    for (text, part, value, needle) in cases {
        let err = registry.listen_with(&uri(text), &ctx).await.unwrap_err();
        let ListenError::Uri(e) = &err else { panic!("{text}: {err:?}") };
        assert_eq!((e.part(), e.value()), (*part, *value), "{text}: {err}");
        assert!(err.to_string().contains(needle), "{text}: {err}");
    }
    // A query key the grammar does not know fails at parse time, naming it.
    let err = "netstack://mem1/10.0.0.2/24:80?colour=blue".parse::<Uri>().unwrap_err();
    assert_eq!((err.part(), err.value()), (UriPart::Query, "colour"));
}

#[tokio::test]
async fn a_missing_device_or_one_that_is_not_tap_or_tun_is_an_io_error_naming_it() {
    let registry = registry();
    let name = format!("cfxnone{}", std::process::id() % 100_000);
    for (text, kind, needle) in [
        (format!("netstack://{name}/10.0.0.2/24:80"), io::ErrorKind::NotFound, "no such network device"),
        ("netstack://lo/10.0.0.2/24:80".to_string(), io::ErrorKind::InvalidInput, "not a TAP or TUN device"),
    ] {
        let err = registry.listen(&uri(&text)).await.unwrap_err();
        let ListenError::Io { what, source } = &err else { panic!("{text}: {err:?}") };
        let device = uri(&text).to_string().split('/').nth(2).unwrap().to_string();
        assert_eq!(what, &format!("netstack device `{device}`"), "{err}");
        assert_eq!(source.kind(), kind, "{text}: {err}");
        assert!(err.to_string().contains(needle), "{text}: {err}");
    }
    // Connecting through it fails the same way, in the resolve's report.
    let err =
        dial(&registry, &format!("netstack://{name}/10.0.0.2/24?dst=10.0.0.1:80"), &Ctx::new()).await.unwrap_err();
    assert!(err.contains(&format!("netstack device `{name}`: no such network device")), "{err}");
}

#[test]
fn connecting_errors_name_the_wrong_part() {
    let registry = registry();
    let cases: &[(&str, UriPart, &str, &str)] = &[
        ("netstack://mem0/10.0.0.1/24", UriPart::Query, "dst", "needs `dst=ADDR:PORT`"),
        ("netstack://mem0/10.0.0.1/24:80?dst=10.0.0.2:80", UriPart::Port, "80", "the stack's pick"),
        (
            "netstack-listen://mem0/10.0.0.1/24?dst=10.0.0.2:80",
            UriPart::Scheme,
            "netstack-listen",
            "the registry connects",
        ),
    ];
    for (text, part, value, needle) in cases {
        let err = registry.ctx_from_uri(&uri(text)).unwrap_err();
        let e = err.uri().unwrap_or_else(|| panic!("{text}: {err:?}"));
        assert_eq!((e.part(), e.value()), (*part, *value), "{text}: {err}");
        assert!(err.to_string().contains(needle), "{text}: {err}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_connect_through_an_in_process_stack_without_that_address_names_it() {
    let (ctx, _s0, _s1) = two_stacks();
    let registry = registry();
    let err = dial(&registry, "netstack://mem0/10.0.0.7/24?dst=10.0.0.2:80", &ctx).await.unwrap_err();
    assert!(err.contains("not an address of the in-process stack `mem0`"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn dropping_the_listener_stops_listening() {
    let (ctx, _s0, s1) = two_stacks();
    let registry = registry();
    let listener = registry.listen_with(&uri("netstack://mem1/10.0.0.2/24:90"), &ctx).await.unwrap();
    assert_eq!(s1.ports_in_use(), 1);
    drop(listener);
    assert_eq!(s1.ports_in_use(), 0);
    let err = dial(&registry, "netstack://mem0/10.0.0.1/24?dst=10.0.0.2:90", &ctx).await.unwrap_err();
    assert!(err.contains("refused"), "{err}");
}

/// IPv6 addresses in the URI (`dst=[..]:port`), and a listener on the older
/// of two in-context stacks (found by unfolding the context).
#[tokio::test(start_paused = true)]
async fn ipv6_and_an_older_in_context_stack() {
    let (a, b) = link_pair(LinkConfig::ethernet());
    let s0 = NetStack::new(StackConfig::new().ipv6("fd00::1".parse().unwrap(), 64), a);
    let s1 = NetStack::new(StackConfig::new().ipv6("fd00::2".parse().unwrap(), 64).mac([2, 0, 0, 0, 0, 2]), b);
    let devices = &NetstackKeys::get().devices;
    // The listening stack is the older value: not what `Ctx::get` returns.
    let ctx = Ctx::new().add(devices, NetstackDevice::new("v6b", s1)).add(devices, NetstackDevice::new("v6a", s0));
    let registry = registry();
    let mut listener = registry.listen_with(&uri("netstack://v6b/fd00::2/64:443"), &ctx).await.unwrap();
    assert_eq!(listener.local_uri().to_string(), "netstack://v6b/fd00::2/64:443");
    let mut f = dial(&registry, "netstack://v6a/fd00::1/64?dst=[fd00::2]:443", &ctx).await.unwrap();
    let accepted = within("accept", TIMEOUT, listener.accept()).await.unwrap();
    assert!(accepted.peer.starts_with("[fd00::1]:"), "peer {}", accepted.peer);
    let mut server = accepted.flow;
    f.write("over v6").await.unwrap();
    f.close().await.unwrap();
    assert_eq!(server.read_to_end().await.unwrap(), b"over v6");
}

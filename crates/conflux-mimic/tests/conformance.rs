//! Flow conformance, section H: H1, the flow kit (A-F, G1, G2, J) over flows
//! resolved through a [`Registry`] as [`BoxFlow`]s (an in-memory pipe
//! protocol, kernel TCP on 127.0.0.1, hvsock framed over a Unix socket, TLS
//! over kernel TCP);
//! H2, a resolved flow downcasts to its concrete type and not to another
//! protocol's.
//!
//! Each factory's `pair()` resolves the client side through the registry; the
//! server side is the accepted flow, wrapped with the protocol's handle
//! (`inject`), as a server would.
#![forbid(unsafe_code)]

mod fixtures;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use conflux_conformance::{Caps, FlowFactory, PairFuture, flow_conformance};
use conflux_flow::BoxFlow;
use conflux_flow::{FlowError, FlowExt, Pipe, Shutdown, pipe};
use conflux_hvsock::{Family, FamilyListener, FramedFlow, FramingConfig, UnixAddr, UnixFamily, UnixSocket};
use conflux_mimic::{
    Ctx, Handle, Key, Protocol, RegisterOptions, Registry, Tcp, TlsFlow, TlsKeys, register_hvsock, register_tcp_with,
    register_tls,
};
use conflux_tcp::TcpStack;
use conflux_tcp_host::HostFlow;
use conflux_tcp_host::HostStack;
use conflux_testkit::TempDir;
use conflux_testkit::{TIMEOUT, within};
use tokio::sync::mpsc;

/// An in-memory protocol: a connect makes a pipe, keeps one end and hands the
/// other to whoever listens on the endpoint's channel.
#[derive(Debug, Clone)]
struct PipeEndpoint {
    capacity: usize,
    peers: mpsc::UnboundedSender<Pipe>,
}

struct PipeProto;

impl Protocol for PipeProto {
    type Endpoint = PipeEndpoint;
    type Flow = Pipe;
    type Error = FlowError;
    async fn connect(&self, e: PipeEndpoint) -> Result<Pipe, FlowError> {
        let (ours, theirs) = pipe(e.capacity);
        e.peers.send(theirs).map_err(|_| FlowError::other("nobody listens on this endpoint"))?;
        Ok(ours)
    }
}

fn resolve_error(e: conflux_mimic::ResolveError) -> FlowError {
    FlowError::other(e.to_string())
}

struct RegistryPipes {
    registry: Registry,
    key: Key<PipeEndpoint>,
    handle: Handle<Pipe>,
}

impl RegistryPipes {
    fn new() -> RegistryPipes {
        let registry = Registry::new();
        let (key, handle) = registry.register("pipe", Some(10), PipeProto);
        RegistryPipes { registry, key, handle }
    }
}

impl FlowFactory for RegistryPipes {
    type Flow = BoxFlow;

    fn caps(&self) -> Caps {
        // What conflux-conformance's PipeFactory declares for the same pipes.
        Caps { peer_sees_read_shutdown: true, ..Caps::in_memory() }
    }

    fn pair(&self) -> PairFuture<'_, BoxFlow> {
        Box::pin(async move {
            let (peers, mut accepted) = mpsc::unbounded_channel();
            let ctx = Ctx::new().add(&self.key, PipeEndpoint { capacity: 64 * 1024, peers });
            let client = self.registry.resolve(&ctx).await.map_err(resolve_error)?;
            let server = accepted.recv().await.ok_or_else(|| FlowError::other("no peer end"))?;
            Ok((client, self.handle.inject(server)))
        })
    }
}

/// `tcp://127.0.0.1:PORT` resolved through the tcp binding; the server side
/// is accepted by a listener of the same kernel stack, stopped once the pair exists.
struct RegistryTcp {
    stack: HostStack,
    registry: Registry,
    handle: Handle<HostFlow>,
}

impl RegistryTcp {
    fn new() -> RegistryTcp {
        let stack = HostStack::new();
        let registry = Registry::new();
        let (_, handle) = register_tcp_with(&registry, Tcp::new(stack.clone()), RegisterOptions::new().priority(20));
        RegistryTcp { stack, registry, handle }
    }
}

impl FlowFactory for RegistryTcp {
    type Flow = BoxFlow;

    fn caps(&self) -> Caps {
        Caps::kernel()
    }

    fn pair(&self) -> PairFuture<'_, BoxFlow> {
        Box::pin(async move {
            let (tx, mut rx) = mpsc::unbounded_channel();
            let listening = self
                .stack
                .listen(0, None, move |flow| {
                    let _ = tx.send(flow);
                    std::future::ready(())
                })
                .map_err(FlowError::other)?;
            let addr = SocketAddr::from(([127, 0, 0, 1], listening.port()));
            let uri = format!("tcp://{addr}").parse().map_err(FlowError::other)?;
            let ctx = self.registry.ctx_from_uri(&uri).map_err(FlowError::other)?;
            let client = self.registry.resolve(&ctx).await.map_err(resolve_error);
            let server = rx.recv().await;
            self.stack.unlisten(listening.port());
            let server = server.ok_or_else(|| FlowError::other("the listener ended without a flow"))?;
            Ok((client?, self.handle.inject(server)))
        })
    }

    fn open_resources(&self) -> Option<usize> {
        Some(self.stack.open_flows())
    }
}

/// The framed flow's close timeout: C5 waits for it when the peer never
/// closes, D1 needs it short (as in conflux-hvsock's own kit).
const CLOSE_TIMEOUT: Duration = Duration::from_millis(500);

fn framing() -> FramingConfig {
    FramingConfig::new().close_timeout(CLOSE_TIMEOUT)
}

/// `unix:///tmp/.../sN?framing=shutdown` resolved through the hvsock binding.
struct RegistryUnixFramed {
    dir: TempDir,
    n: AtomicU32,
    registry: Registry,
    handle: Handle<FramedFlow<UnixSocket>>,
}

impl RegistryUnixFramed {
    fn new() -> RegistryUnixFramed {
        let registry = Registry::new();
        let hv = register_hvsock(&registry, RegisterOptions::new(), framing());
        RegistryUnixFramed {
            dir: TempDir::new("kit-unix"),
            n: AtomicU32::new(0),
            registry,
            handle: hv.unix.framed_handle,
        }
    }
}

impl FlowFactory for RegistryUnixFramed {
    type Flow = BoxFlow;

    fn caps(&self) -> Caps {
        // As conflux-hvsock's kit declares for the framed flow on Unix sockets:
        // no reset on a Unix socket, our ShutdownRead marker only reaches a
        // peer that reads, and close waits (bounded) for the peer's Close.
        Caps { abort_resets: false, peer_sees_read_shutdown: false, close_waits_for_peer: true, ..Caps::kernel() }
    }

    fn pair(&self) -> PairFuture<'_, BoxFlow> {
        Box::pin(async move {
            let path = self.dir.path().join(format!("s{}", self.n.fetch_add(1, Ordering::Relaxed)));
            let listener = UnixFamily.listen(&UnixAddr::new(&path), 4).map_err(FlowError::from)?;
            let uri = format!("unix://{}?framing=shutdown", path.display()).parse().map_err(FlowError::other)?;
            let ctx = self.registry.ctx_from_uri(&uri).map_err(FlowError::other)?;
            let (client, server) = tokio::join!(self.registry.resolve(&ctx), listener.accept());
            let _ = std::fs::remove_file(&path);
            let server = FramedFlow::new(server.map_err(FlowError::from)?.0, framing());
            Ok((client.map_err(resolve_error)?, self.handle.inject(server)))
        })
    }
}

/// `tls://127.0.0.1:PORT` resolved through the tls binding, which resolves
/// the tcp binding under it; the server wraps each accepted kernel flow in
/// TLS. Both sides are `TlsFlow`s over `HostFlow`s of one stack.
struct RegistryTls {
    tcp: RegistryTcp,
    client: Arc<rustls::ClientConfig>,
    server: Arc<rustls::ServerConfig>,
    handle: Handle<TlsFlow>,
}

impl RegistryTls {
    fn new() -> RegistryTls {
        let tcp = RegistryTcp::new();
        let (_, handle) = register_tls(&tcp.registry, RegisterOptions::new().priority(10).no_fallback());
        let (client, server) = fixtures::tls_configs();
        RegistryTls { tcp, client, server, handle }
    }
}

impl FlowFactory for RegistryTls {
    type Flow = BoxFlow;

    fn caps(&self) -> Caps {
        // Kernel TCP underneath; TLS has no read shutdown on the wire (as the default says).
        Caps::kernel()
    }

    fn pair(&self) -> PairFuture<'_, BoxFlow> {
        Box::pin(async move {
            let (tx, mut rx) = mpsc::unbounded_channel();
            let stack = &self.tcp.stack;
            let listening = stack
                .listen(0, None, move |flow| {
                    let _ = tx.send(flow);
                    std::future::ready(())
                })
                .map_err(FlowError::other)?;
            let uri =
                format!("tls://127.0.0.1:{}?sni=localhost", listening.port()).parse().map_err(FlowError::other)?;
            let ctx = self
                .tcp
                .registry
                .ctx_from_uri(&uri)
                .map_err(FlowError::other)?
                .add(&TlsKeys::get().config, self.client.clone());
            let server = async {
                let lower = rx.recv().await.ok_or_else(|| FlowError::other("the listener ended without a flow"))?;
                TlsFlow::accept(self.server.clone(), lower).await.map_err(FlowError::from)
            };
            let (client, server) = tokio::join!(self.tcp.registry.resolve(&ctx), server);
            stack.unlisten(listening.port());
            Ok((client.map_err(resolve_error)?, self.handle.inject(server?)))
        })
    }

    fn open_resources(&self) -> Option<usize> {
        self.tcp.open_resources()
    }
}

flow_conformance!(h1_registry_pipe, RegistryPipes::new());
flow_conformance!(h1_registry_tcp, RegistryTcp::new());
flow_conformance!(h1_registry_unix_framed, RegistryUnixFramed::new());
flow_conformance!(h1_registry_tls_over_tcp, RegistryTls::new());

/// A protocol of another flow type, for the failing downcasts.
struct Never;

impl Protocol for Never {
    type Endpoint = ();
    type Flow = fixtures::IntFlow;
    type Error = Infallible;
    async fn connect(&self, (): ()) -> Result<fixtures::IntFlow, Infallible> {
        Ok(fixtures::IntFlow(0))
    }
}

#[tokio::test]
async fn h2_a_resolved_pipe_downcasts_to_pipe_and_not_to_another_protocols_flow() {
    let f = RegistryPipes::new();
    let (_, other) = f.registry.register("int", None, Never);
    let (client, server) = f.pair().await.unwrap();
    assert!(f.handle.is(&client) && !other.is(&client));
    // A failed downcast gives the flow back, still usable.
    let client = other.downcast(client).unwrap_err();
    let mut client: Pipe = f.handle.downcast(client).unwrap();
    let mut server: Pipe = f.handle.downcast(server).unwrap();
    client.write("h2").await.unwrap();
    client.shutdown(Shutdown::Write).await.unwrap();
    assert_eq!(server.read_to_end().await.unwrap(), b"h2");
}

#[tokio::test]
async fn h2_a_resolved_tcp_flow_downcasts_to_the_host_flow_and_not_to_an_hvsock_flow() {
    let f = RegistryTcp::new();
    let hv = register_hvsock(&f.registry, RegisterOptions::new(), framing());
    let (client, mut server) = within("pair", TIMEOUT, f.pair()).await.unwrap();
    assert!(hv.unix.raw_handle.downcast_ref(&client).is_none());
    let client = hv.unix.framed_handle.downcast(client).unwrap_err();
    let mut client: HostFlow = f.handle.downcast(client).unwrap();
    assert_eq!(conflux_tcp::TcpFlow::dst(&client).ip(), std::net::Ipv4Addr::LOCALHOST);
    client.write("tcp").await.unwrap();
    client.close().await.unwrap();
    assert_eq!(within("read", TIMEOUT, server.read_to_end()).await.unwrap(), b"tcp");
    server.close().await.unwrap();
    assert_eq!(f.stack.open_flows(), 0);
}

#[tokio::test]
async fn h2_a_resolved_framed_flow_downcasts_to_the_framed_type_and_not_to_the_raw_one() {
    let f = RegistryUnixFramed::new();
    let (_, tcp) = register_tcp_with(&f.registry, Tcp::default(), RegisterOptions::new());
    let (client, mut server) = within("pair", TIMEOUT, f.pair()).await.unwrap();
    assert!(tcp.downcast_ref(&client).is_none());
    let mut client: FramedFlow<UnixSocket> = f.handle.downcast(client).unwrap();
    client.write("framed").await.unwrap();
    client.shutdown(Shutdown::Write).await.unwrap();
    assert_eq!(within("read", TIMEOUT, server.read_to_end()).await.unwrap(), b"framed");
    let (a, b) = tokio::join!(client.close(), server.close());
    a.unwrap();
    b.unwrap();
    assert!(client.is_socket_closed() && !client.close_timed_out());
}

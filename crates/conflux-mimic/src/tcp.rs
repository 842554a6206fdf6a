//! `tcp://` over kernel TCP (feature `tcp`): conflux-tcp-host's [`HostStack`].

use std::net::SocketAddr;
use std::time::Duration;

use conflux_tcp::{ConnectError, ConnectOptions, TcpStack};
use conflux_tcp_host::{HostFlow, HostStack};

use crate::{Ctx, Handle, Key, Protocol, RegisterOptions, Registry, UriKeys, all, check_modifiers, opt, req};
use conflux_uri::{Keepalive, Scheme};

/// Where a TCP connect goes, and how: the address plus the connect options
/// (keepalive, connect timeout) the context asked for.
///
/// ```
/// use std::time::Duration;
/// use conflux_mimic::TcpEndpoint;
/// let e = TcpEndpoint::new(([127, 0, 0, 1], 8080).into()).connect_timeout(Duration::from_secs(2));
/// assert_eq!(e.addr().port(), 8080);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpEndpoint {
    addr: SocketAddr,
    options: ConnectOptions,
}

impl TcpEndpoint {
    /// `addr` with the stack's defaults (no keepalive, the stack's connect timeout).
    pub fn new(addr: SocketAddr) -> TcpEndpoint {
        TcpEndpoint { addr, options: ConnectOptions::new() }
    }

    /// Bounds the connect.
    pub fn connect_timeout(mut self, timeout: Duration) -> TcpEndpoint {
        self.options.timeout = Some(timeout);
        self
    }

    /// Turns keepalive on for the new flow.
    pub fn keepalive(mut self, keepalive: Keepalive) -> TcpEndpoint {
        self.options.keepalive = Some(keepalive);
        self
    }

    /// The address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The options passed to `create_connection`.
    pub fn options(&self) -> &ConnectOptions {
        &self.options
    }
}

impl From<SocketAddr> for TcpEndpoint {
    fn from(addr: SocketAddr) -> TcpEndpoint {
        TcpEndpoint::new(addr)
    }
}

/// Kernel TCP: `create_connection` on a [`HostStack`] (Nagle stays as the
/// kernel starts it; `write_nodelay` is there for latency-sensitive writes).
///
/// Cloning shares the stack, so a test or server can count its open flows.
#[derive(Debug, Clone, Default)]
pub struct Tcp {
    stack: HostStack,
}

impl Tcp {
    /// Connects through `stack`.
    pub fn new(stack: HostStack) -> Tcp {
        Tcp { stack }
    }

    /// The stack connects go through.
    pub fn stack(&self) -> &HostStack {
        &self.stack
    }
}

impl Protocol for Tcp {
    type Endpoint = TcpEndpoint;
    type Flow = HostFlow;
    type Error = ConnectError;
    fn connect(&self, e: TcpEndpoint) -> impl Future<Output = Result<HostFlow, ConnectError>> + Send {
        self.stack.create_connection(e.addr, e.options)
    }
}

/// Registers kernel TCP (a new [`HostStack`]) as `tcp` and binds the `tcp`
/// scheme: a context made by [`Registry::ctx_from_uri`] from a `tcp://` URI
/// gets [`tcp_endpoints`]. The binding uses `connect_timeout=` and
/// `keepalive=`; any other modifier (`framing=`) is an error naming it.
pub fn register_tcp(registry: &Registry, priority: Option<u32>) -> (Key<TcpEndpoint>, Handle<HostFlow>) {
    let mut options = RegisterOptions::new();
    if let Some(p) = priority {
        options = options.priority(p);
    }
    register_tcp_with(registry, Tcp::default(), options)
}

/// As [`register_tcp`], through a given stack and with every registration option.
pub fn register_tcp_with(
    registry: &Registry,
    tcp: Tcp,
    options: RegisterOptions,
) -> (Key<TcpEndpoint>, Handle<HostFlow>) {
    let (key, handle) = registry.register_with("tcp", options, tcp);
    let k = key.clone();
    registry.register_scheme(Scheme::Tcp, move |uri, ctx| {
        check_modifiers(uri, "tcp", &["connect_timeout", "keepalive"])?;
        Ok(tcp_endpoints(&ctx, &k))
    });
    (key, handle)
}

/// Adds the function building TCP endpoints from a URI's context: one per
/// address of the host (a DNS lookup first when the host is a domain name),
/// all with the URI's port, and with [`UriKeys::connect_timeout`] and
/// [`UriKeys::keepalive`] when the context has them (from the URI's
/// modifiers, or added by the caller: the newest wins).
pub fn tcp_endpoints(ctx: &Ctx, key: &Key<TcpEndpoint>) -> Ctx {
    let k = UriKeys::get();
    let ctx = if ctx.get(&k.domain).is_some() { crate::dns_lookup(ctx) } else { ctx.clone() };
    ctx.fold(
        key,
        (req(&k.scheme), all(&k.ip), req(&k.port), opt(&k.connect_timeout), opt(&k.keepalive)),
        |(scheme, ips, port, timeout, keepalive)| {
            ips.into_iter()
                .filter(move |_| scheme == Scheme::Tcp)
                .map(move |ip| {
                    let mut e = TcpEndpoint::new(SocketAddr::new(ip, port));
                    if let Some(t) = timeout {
                        e = e.connect_timeout(t);
                    }
                    if let Some(ka) = keepalive {
                        e = e.keepalive(ka);
                    }
                    e
                })
                .collect::<Vec<_>>()
        },
    )
}

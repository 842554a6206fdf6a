//! `tcp://` over kernel TCP (feature `tcp`): conflux-tcp-host's [`HostStack`].

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use conflux_flow::BoxFlow;
use conflux_tcp::{ConnectError, ConnectOptions, Incoming, TcpFlow, TcpStack};
use conflux_tcp_host::{HostFlow, HostStack};
use futures_core::Stream;

use crate::args::FewValues;
use crate::{
    Accepted, Ctx, Handle, Key, ListenError, Listener, Protocol, RegisterOptions, Registry, UriKeys,
    check_listen_modifiers, check_modifiers, opt, req,
};
use conflux_uri::{Host, Keepalive, Scheme, Target, Uri, UriError, UriPart};

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
/// gets [`tcp_endpoints`]; [`Registry::listen`] on a `tcp://` URI listens
/// through a kernel stack of the same config (one per listener, so that a
/// second listen on a bound address is `AddrInUse` rather than a silent
/// takeover of the first listener). The binding uses `connect_timeout=` and
/// `keepalive=`, and `framing=shutdown` with the `hvsock` feature (the
/// framing over the TCP flow; without the feature it is an error naming
/// it); any other modifier is an error naming it.
pub fn register_tcp(registry: &Registry, priority: Option<u32>) -> (Key<TcpEndpoint>, Handle<HostFlow>) {
    let mut options = RegisterOptions::new();
    if let Some(p) = priority {
        options = options.priority(p);
    }
    register_tcp_with(registry, Tcp::default(), options)
}

/// The modifiers the tcp binding uses.
#[cfg(feature = "hvsock")]
const TCP_MODIFIERS: &[&str] = &["connect_timeout", "keepalive", "framing"];
#[cfg(not(feature = "hvsock"))]
const TCP_MODIFIERS: &[&str] = &["connect_timeout", "keepalive"];

/// As [`register_tcp`], through a given stack and with every registration option.
///
/// Listening (`tcp://host:port`, `tcp-listen://host:port`): the address as
/// written, an empty host meaning 127.0.0.1 (every address only when written:
/// `0.0.0.0`, `[::]`), a domain name its first address; port 0 picks one,
/// which [`Listener::local_uri`](crate::Listener::local_uri) gives.
/// `keepalive=` applies to each accepted flow, `framing=shutdown` frames it;
/// `connect_timeout=` is an error naming it.
pub fn register_tcp_with(
    registry: &Registry,
    tcp: Tcp,
    options: RegisterOptions,
) -> (Key<TcpEndpoint>, Handle<HostFlow>) {
    let stack = tcp.stack.clone();
    #[cfg(feature = "hvsock")]
    let (framed, _) = registry.register_with("tcp+framing", options, crate::framing::FramedProtocol(tcp.clone()));
    let (key, handle) = registry.register_with("tcp", options, tcp);
    let k = key.clone();
    registry.register_scheme(Scheme::Tcp, move |uri, ctx| {
        check_modifiers(uri, "tcp", TCP_MODIFIERS).map_err(no_framing)?;
        #[cfg(feature = "hvsock")]
        if uri.options().framing.is_some() {
            let unframed = Key::new("tcp.unframed");
            let cfg = &crate::FramingKeys::get().config;
            return Ok(tcp_endpoints(&ctx, &unframed).fold(
                &framed,
                (crate::all(&unframed), opt(cfg)),
                |(endpoints, config): (Vec<TcpEndpoint>, Option<_>)| {
                    let config = config.unwrap_or_default();
                    endpoints.into_iter().map(move |e| (e, config)).collect::<Vec<_>>()
                },
            ));
        }
        Ok(tcp_endpoints(&ctx, &k))
    });
    registry.register_listener(Scheme::Tcp, move |uri, ctx| Box::pin(listen(stack.clone(), uri.clone(), ctx.clone())));
    (key, handle)
}

/// A `framing` refused because the `hvsock` feature is off says so.
fn no_framing(e: conflux_uri::UriError) -> conflux_uri::UriError {
    refused_framing(e, cfg!(feature = "hvsock"))
}

fn refused_framing(e: conflux_uri::UriError, built_in: bool) -> conflux_uri::UriError {
    if built_in || e.value() != "framing" {
        return e;
    }
    conflux_uri::UriError::new(
        conflux_uri::UriPart::Query,
        "framing",
        "the shutdown framing over tcp needs conflux-mimic's `hvsock` feature, not built in",
    )
}

async fn listen(stack: HostStack, uri: Uri, ctx: Ctx) -> Result<Listener, ListenError> {
    check_listen_modifiers(&uri, "tcp", &TCP_MODIFIERS[1..]).map_err(no_framing)?;
    let Target::Tcp { host, port } = uri.target() else {
        return Err(
            UriError::new(UriPart::Scheme, uri.scheme().as_str(), "the tcp listener listens on tcp only").into()
        );
    };
    let ip = match host {
        Host::Any => IpAddr::V4(Ipv4Addr::LOCALHOST),
        Host::Ip(ip) => *ip,
        Host::Domain(d) => tokio::net::lookup_host((d.as_str(), *port))
            .await
            .map_err(|e| ListenError::io(d, e))?
            .next()
            .ok_or_else(|| ListenError::io(d, io::Error::new(io::ErrorKind::NotFound, "the name has no address")))?
            .ip(),
    };
    let addr = SocketAddr::new(ip, *port);
    // A stack of its own (same config): a second listen on the same address
    // is then the kernel's AddrInUse, not a silent replacement of the first
    // listener, which is what one stack does with its own listen keys.
    let stack = HostStack::with_config(stack.config().clone());
    let incoming = Incoming::bind(&stack, addr, uri.options().keepalive, BACKLOG).map_err(|e| {
        let kind = match &e {
            conflux_tcp::ListenError::AddrInUse(_) => io::ErrorKind::AddrInUse,
            conflux_tcp::ListenError::PermissionDenied(_) => io::ErrorKind::PermissionDenied,
            conflux_tcp::ListenError::AddrNotAvailable(_) => io::ErrorKind::AddrNotAvailable,
            _ => io::ErrorKind::Other,
        };
        let source = match kind {
            io::ErrorKind::Other => io::Error::other(e),
            kind => io::Error::from(kind),
        };
        ListenError::io(addr, source)
    })?;
    let local = incoming.local_addr();
    let local_uri =
        Uri::new(Target::Tcp { host: Host::Ip(local.ip()), port: local.port() }).with_options(*uri.options());
    let framing = crate::listen::framing_of(&uri, &ctx);
    Ok(Listener::new(local_uri, Accepts { incoming, framing }))
}

/// How many established flows wait for `accept`.
const BACKLOG: usize = 128;

/// The accepted flows of a TCP listener, framed when the URI says so.
struct Accepts {
    incoming: Incoming<HostStack>,
    framing: crate::listen::FramingOf,
}

impl Stream for Accepts {
    type Item = io::Result<Accepted>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let Some(flow) = ready!(Pin::new(&mut self.incoming).poll_next(cx)) else { return Poll::Ready(None) };
        let peer = flow.dst().to_string();
        #[cfg(feature = "hvsock")]
        if let Some(config) = self.framing {
            let flow = crate::framing::frame(BoxFlow::new(flow), &peer, config);
            return Poll::Ready(Some(Ok(Accepted { flow, peer })));
        }
        let _ = &self.framing;
        Poll::Ready(Some(Ok(Accepted { flow: BoxFlow::new(flow), peer })))
    }
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
        // `all` without a vector for a lone address (what a URI with an IP address gives).
        (req(&k.scheme), crate::args::few(&k.ip), req(&k.port), opt(&k.connect_timeout), opt(&k.keepalive)),
        |(scheme, ips, port, timeout, keepalive)| TcpEndpoints {
            ips: if scheme == Scheme::Tcp { ips } else { FewValues::Many(Vec::new()) },
            port,
            timeout,
            keepalive,
        },
    )
}

/// What the endpoint function of [`tcp_endpoints`] gives: one endpoint per
/// address, made as the resolve takes them (no vector of endpoints).
struct TcpEndpoints {
    ips: FewValues<IpAddr>,
    port: u16,
    timeout: Option<Duration>,
    keepalive: Option<Keepalive>,
}

impl TcpEndpoints {
    fn endpoints(self) -> impl Iterator<Item = TcpEndpoint> {
        let TcpEndpoints { ips, port, timeout, keepalive } = self;
        ips.into_iter().map(move |ip| {
            let mut e = TcpEndpoint::new(SocketAddr::new(ip, port));
            if let Some(t) = timeout {
                e = e.connect_timeout(t);
            }
            if let Some(ka) = keepalive {
                e = e.keepalive(ka);
            }
            e
        })
    }
}

impl crate::FnOutput<TcpEndpoint> for TcpEndpoints {
    fn into_values(self) -> Result<Vec<TcpEndpoint>, String> {
        Ok(self.endpoints().collect())
    }
    fn for_each_value(self, f: &mut dyn FnMut(TcpEndpoint)) -> Result<(), String> {
        self.endpoints().for_each(f);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_without_the_hvsock_feature_names_it_and_the_feature() {
        let refused = UriError::new(UriPart::Query, "framing", "the tcp binding does not use it");
        let e = refused_framing(refused.clone(), false);
        assert_eq!((e.part(), e.value()), (UriPart::Query, "framing"));
        assert!(e.to_string().contains("`hvsock` feature"), "{e}");
        assert_eq!(refused_framing(refused.clone(), true), refused);
        let other = UriError::new(UriPart::Query, "connect_timeout", "x");
        assert_eq!(refused_framing(other.clone(), false), other);
    }
}

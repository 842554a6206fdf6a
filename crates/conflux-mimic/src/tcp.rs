//! `tcp://` over kernel TCP (feature `tcp`).
//!
//! Note: this binds plain `tokio::net::TcpStream` through `FromTokio` because
//! the kernel TCP crate (`conflux-tcp-host`) has not landed yet. Once it has,
//! switch [`Tcp`] to it (its flow type then replaces [`TcpFlow`]); the endpoint
//! key, the scheme binding and the context functions stay as they are.

use std::io;
use std::net::SocketAddr;

use conflux_flow::FromTokio;
use tokio::net::TcpStream;

use crate::args::{all, req};
use crate::ctx::Ctx;
use crate::key::Key;
use crate::keys::UriKeys;
use crate::registry::{Handle, Protocol, Registry};
use crate::uri::Scheme;

/// The flow of [`Tcp`]: a kernel TCP stream as a flow.
pub type TcpFlow = FromTokio<TcpStream>;

/// Kernel TCP: connects to a socket address (`TCP_NODELAY` set).
#[derive(Debug, Clone, Copy, Default)]
pub struct Tcp;

impl Protocol for Tcp {
    type Endpoint = SocketAddr;
    type Flow = TcpFlow;
    type Error = io::Error;
    async fn connect(&self, addr: SocketAddr) -> Result<TcpFlow, io::Error> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(FromTokio::new(stream))
    }
}

/// Registers [`Tcp`] as `tcp` and binds the `tcp` scheme: a context made by
/// [`Registry::ctx_from_uri`] from a `tcp://` URI gets [`tcp_endpoints`].
pub fn register_tcp(registry: &Registry, priority: Option<u32>) -> (Key<SocketAddr>, Handle<TcpFlow>) {
    let (key, handle) = registry.register("tcp", priority, Tcp);
    let k = key.clone();
    registry.register_scheme(Scheme::Tcp, move |ctx| tcp_endpoints(&ctx, &k));
    (key, handle)
}

/// Adds the functions building TCP endpoints from a URI's context: one per
/// address of the host (a DNS lookup first when the host is a domain name),
/// all with the URI's port.
pub fn tcp_endpoints(ctx: &Ctx, key: &Key<SocketAddr>) -> Ctx {
    let k = UriKeys::get();
    let ctx = if ctx.get(&k.domain).is_some() { crate::dns::dns_lookup(ctx) } else { ctx.clone() };
    ctx.fold(key, (req(&k.scheme), all(&k.ip), req(&k.port)), |(scheme, ips, port)| {
        if scheme == Scheme::Tcp { ips.into_iter().map(|ip| SocketAddr::new(ip, port)).collect() } else { Vec::new() }
    })
}

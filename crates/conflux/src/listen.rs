//! The listen side of each scheme, registered on the registry with
//! `Registry::register_listener`: kernel TCP through conflux-tcp's
//! `Incoming`, the hvsock families (unix, vsock, fc-vsock, hyperkit) through
//! their listeners, raw or framed; and `stdio:` as a listener of one flow.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use conflux_flow::{BoxFlow, FlowExt};
use conflux_hvsock::{Family, FramingConfig, HybridAddr, HybridFamily, HyperkitAddr, HyperkitFamily, UnixFamily};
use conflux_mimic::{Accepted, ListenError, ListenFuture, Listener, Registry};
use conflux_tcp::{Incoming, TcpFlow};
use conflux_tcp_host::HostStack;
use conflux_uri::{Framing, Host, Scheme, Target, Uri, UriError, UriPart};
use futures_util::stream;

/// How many accepted flows may wait for the relay to take them.
const BACKLOG: u32 = 128;

/// Registers the listen side of tcp, unix, fc-vsock, hyperkit and vsock.
pub(crate) fn register_listeners(registry: &Registry) {
    registry.register_listener(Scheme::Tcp, |uri, _| listen_tcp(uri.clone()));
    registry.register_listener(Scheme::Unix, |uri, _| {
        let uri = uri.clone();
        Box::pin(async move {
            let Target::Unix { path } = uri.target() else { return Err(wrong_target(&uri)) };
            let addr = conflux_hvsock::UnixAddr::new(path.clone());
            listen_family(UnixFamily, addr, &uri)
        })
    });
    registry.register_listener(Scheme::FcVsock, |uri, _| {
        let uri = uri.clone();
        Box::pin(async move {
            let Target::FcVsock { path, port } = uri.target() else { return Err(wrong_target(&uri)) };
            listen_family(HybridFamily, HybridAddr::new(path.clone(), *port), &uri)
        })
    });
    registry.register_listener(Scheme::Hyperkit, |uri, _| {
        let uri = uri.clone();
        Box::pin(async move {
            let Target::Hyperkit { port, dir } = uri.target() else { return Err(wrong_target(&uri)) };
            listen_family(HyperkitFamily, HyperkitAddr::new(dir.clone(), *port), &uri)
        })
    });
    #[cfg(target_os = "linux")]
    registry.register_listener(Scheme::Vsock, |uri, _| {
        let uri = uri.clone();
        Box::pin(async move {
            let Target::Vsock { cid, port } = uri.target() else { return Err(wrong_target(&uri)) };
            let addr = match cid {
                Some(cid) => conflux_hvsock::VsockAddr::new(*cid, *port),
                None => conflux_hvsock::VsockAddr::any(*port),
            };
            listen_family(conflux_hvsock::VsockFamily, addr, &uri)
        })
    });
}

fn wrong_target(uri: &Uri) -> ListenError {
    UriError::new(UriPart::Scheme, uri.scheme().as_str(), "not this listener's scheme").into()
}

/// Refuses the modifiers a listener does not use, naming the first.
fn check_listen_modifiers(uri: &Uri, binding: &str, uses: &[&str]) -> Result<(), ListenError> {
    let o = uri.options();
    for (name, present) in [
        ("framing", o.framing.is_some()),
        ("connect_timeout", o.connect_timeout.is_some()),
        ("keepalive", o.keepalive.is_some()),
    ] {
        if present && !uses.contains(&name) {
            let used = if uses.is_empty() { "none".to_owned() } else { uses.join(", ") };
            return Err(UriError::new(
                UriPart::Query,
                name,
                format!("the {binding} listener does not use it (it uses: {used})"),
            )
            .into());
        }
    }
    Ok(())
}

fn listen_tcp(uri: Uri) -> ListenFuture {
    Box::pin(async move {
        check_listen_modifiers(&uri, "tcp", &["keepalive"])?;
        let Target::Tcp { host, port } = uri.target() else { return Err(wrong_target(&uri)) };
        let ip = match host {
            Host::Any => IpAddr::V4(Ipv4Addr::LOCALHOST),
            Host::Ip(ip) => *ip,
            Host::Domain(d) => {
                return Err(UriError::new(UriPart::Host, d, "listening needs an address, not a name").into());
            }
        };
        let stack = HostStack::new();
        let addr = SocketAddr::new(ip, *port);
        let incoming = Incoming::bind(&stack, addr, uri.options().keepalive, BACKLOG as usize)
            .map_err(|e| ListenError::io(addr, io::Error::other(e)))?;
        let local = incoming.local_addr();
        let local_uri = Uri::new(Target::Tcp { host: Host::Ip(local.ip()), port: local.port() });
        let accepted = stream::unfold(incoming, |mut incoming| async move {
            let flow = incoming.accept().await?;
            let peer = flow.dst().to_string();
            Some((Ok(Accepted { flow: flow.boxed(), peer }), incoming))
        });
        Ok(Listener::new(local_uri, accepted))
    })
}

fn listen_family<F: Family>(family: F, addr: F::Addr, uri: &Uri) -> Result<Listener, ListenError> {
    check_listen_modifiers(uri, uri.scheme().as_str(), &["framing"])?;
    let framed = uri.options().framing == Some(Framing::Shutdown);
    let listener =
        conflux_hvsock::Listener::bind_with_backlog(&family, &addr, BACKLOG).map_err(|e| ListenError::io(&addr, e))?;
    let local_uri = uri.clone().with_listen(false);
    let accepted = stream::unfold(listener, move |listener| async move {
        let item = match listener.accept().await {
            Ok((raw, peer)) => {
                let flow: BoxFlow = if framed { raw.into_framed(FramingConfig::new()).boxed() } else { raw.boxed() };
                Ok(Accepted { flow, peer: peer.to_string() })
            }
            Err(e) => Err(e),
        };
        Some((item, listener))
    });
    Ok(Listener::new(local_uri, accepted))
}

/// `stdio:` as a listener: its one flow, then no more.
pub(crate) fn stdio_listener(uri: Uri, flow: BoxFlow) -> Listener {
    let one = stream::iter([Ok(Accepted { flow, peer: "stdio".to_owned() })]);
    Listener::new(uri.with_listen(false), one)
}

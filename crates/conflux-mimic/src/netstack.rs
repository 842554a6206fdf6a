//! `netstack://` (feature `netstack`): conflux-netstack's userspace stack on
//! a TAP or TUN device, or on an in-process stack put in the context.
//!
//! Listening (`netstack://tap0/10.0.0.2/24:8080?gw=10.0.0.1&mtu=1500`, or
//! `netstack-listen://`) opens the device, makes a stack with that address,
//! prefix, gateway and MTU (the device's own MTU when `mtu=` is absent), and
//! accepts on the port with [`conflux_tcp::Incoming`]. Connecting
//! (`netstack://tap0/10.0.0.2/24?dst=10.0.0.1:80`) goes through the same
//! stack to `dst=`. Whether the device is a TAP (Ethernet) or a TUN (IP) is
//! read from the device (`/sys/class/net/<device>/tun_flags`).
//!
//! One stack per device and process: every URI naming a device shares the
//! stack the first one opened, while anything (a listener, a flow) still uses
//! it; a URI with another address or prefix (or another `gw=`, `mtu=`) is an
//! error naming it. The device is closed when the last user goes.
//!
//! An in-process stack (say over conflux-netstack's memory links) is put in
//! the context under [`NetstackKeys::devices`] with a name; a URI naming
//! that device uses it instead of opening one:
//! `ctx.add(&NetstackKeys::get().devices, NetstackDevice::new("mem0", stack))`.

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use conflux_flow::BoxFlow;
use conflux_netstack::{NetFlow, NetStack, StackConfig, TapDevice, TunDevice, WeakNetStack};
use conflux_tcp::{ConnectOptions, Incoming, TcpFlow, TcpStack};
use conflux_uri::{Scheme, Target, Uri, UriError, UriPart};
use futures_core::Stream;

use crate::{
    Accepted, BoxError, Ctx, Handle, Key, ListenError, Listener, Protocol, RegisterOptions, Registry, UriKeys,
    WeakRegistry, all, check_listen_modifiers, check_modifiers, opt,
};

/// The context keys of the netstack binding.
#[derive(Debug)]
pub struct NetstackKeys {
    /// In-process stacks, by device name: a `netstack://NAME/...` URI uses
    /// the stack added here under `NAME` instead of opening a device.
    pub devices: Key<NetstackDevice>,
}

static KEYS: LazyLock<NetstackKeys> = LazyLock::new(|| NetstackKeys { devices: Key::new("netstack.devices") });

impl NetstackKeys {
    /// The keys.
    pub fn get() -> &'static NetstackKeys {
        &KEYS
    }
}

/// A stack under a device name: what [`NetstackKeys::devices`] holds.
///
/// Clones share the stack and the record of the ports listened on through
/// URIs (a second listener on a port is refused, not swapped in): add one
/// `NetstackDevice` per stack and clone it.
///
/// ```
/// use conflux_mimic::{Ctx, NetstackDevice, NetstackKeys};
/// use conflux_netstack::{LinkConfig, NetStack, StackConfig, link_pair};
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let (a, _b) = link_pair(LinkConfig::ethernet());
/// let stack = NetStack::new(StackConfig::new().ipv4("10.0.0.2".parse().unwrap(), 24), a);
/// // `netstack://mem0/10.0.0.2/24:80` now listens (or connects) on `stack`.
/// let ctx = Ctx::new().add(&NetstackKeys::get().devices, NetstackDevice::new("mem0", stack));
/// assert_eq!(ctx.get(&NetstackKeys::get().devices).unwrap().name(), "mem0");
/// # });
/// ```
#[derive(Clone)]
pub struct NetstackDevice {
    name: Arc<str>,
    stack: NetStack,
    ports: Arc<Mutex<HashSet<u16>>>,
}

impl std::fmt::Debug for NetstackDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetstackDevice").field("name", &self.name).field("stack", &self.stack).finish()
    }
}

impl NetstackDevice {
    /// `stack` under the device name `name`.
    pub fn new(name: impl Into<String>, stack: NetStack) -> NetstackDevice {
        NetstackDevice { name: name.into().into(), stack, ports: Arc::default() }
    }

    /// The device name URIs use.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The stack.
    pub fn stack(&self) -> &NetStack {
        &self.stack
    }

    /// Takes `port` for a listener made through a URI, unless one has it.
    fn claim(&self, port: u16) -> Option<PortClaim> {
        lock(&self.ports).insert(port).then(|| PortClaim { ports: self.ports.clone(), port })
    }
}

/// A port listened on through a URI; given back on drop.
struct PortClaim {
    ports: Arc<Mutex<HashSet<u16>>>,
    port: u16,
}

impl Drop for PortClaim {
    fn drop(&mut self) {
        lock(&self.ports).remove(&self.port);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What a `netstack://` URI says about the stack.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Spec {
    device: String,
    addr: IpAddr,
    prefix: u8,
    gw: Option<IpAddr>,
    mtu: Option<u16>,
}

impl Spec {
    fn of(target: &Target) -> Option<Spec> {
        match target {
            Target::Netstack { device, addr, prefix, gw, mtu, .. } => {
                Some(Spec { device: device.clone(), addr: *addr, prefix: *prefix, gw: *gw, mtu: *mtu })
            }
            _ => None,
        }
    }
}

/// Why a URI's stack could not be had.
#[derive(Debug)]
enum StackError {
    Uri(UriError),
    Io { device: String, source: io::Error },
}

impl StackError {
    fn io(device: &str, kind: io::ErrorKind, text: impl Into<String>) -> StackError {
        StackError::Io { device: device.to_string(), source: io::Error::new(kind, text.into()) }
    }
}

impl From<StackError> for ListenError {
    fn from(e: StackError) -> ListenError {
        match e {
            StackError::Uri(e) => ListenError::Uri(e),
            StackError::Io { device, source } => ListenError::io(format_args!("netstack device `{device}`"), source),
        }
    }
}

impl From<StackError> for BoxError {
    fn from(e: StackError) -> BoxError {
        match e {
            StackError::Uri(e) => e.into(),
            StackError::Io { device, source } => {
                io::Error::new(source.kind(), format!("netstack device `{device}`: {source}")).into()
            }
        }
    }
}

/// A device this process opened: its stack (held weakly, so the device
/// closes when nothing uses it), what it was opened with, and its ports.
struct Opened {
    stack: WeakNetStack,
    addr: IpAddr,
    prefix: u8,
    gw: Option<IpAddr>,
    mtu: u16,
    ports: Arc<Mutex<HashSet<u16>>>,
}

/// Devices are a process-wide resource (a TAP or TUN takes one opener), so
/// the table of stacks on them is process-wide too.
static OPENED: LazyLock<Mutex<HashMap<String, Opened>>> = LazyLock::new(Mutex::default);

/// `ioctl(TUNSETIFF)` flags, as `tun_flags` shows them.
const IFF_TUN: u32 = 0x0001;
const IFF_TAP: u32 = 0x0002;
const IFF_MULTI_QUEUE: u32 = 0x0100;

/// The stack a URI names: the in-context one of that name, or the one this
/// process has on the device (opening it if nothing uses it).
async fn stack_for(spec: &Spec, in_context: Option<NetstackDevice>) -> Result<NetstackDevice, StackError> {
    match in_context {
        Some(d) => check_in_context(d, spec),
        None => shared(spec).await,
    }
}

fn check_in_context(d: NetstackDevice, spec: &Spec) -> Result<NetstackDevice, StackError> {
    let addrs = d.stack.addrs();
    if !addrs.contains(&spec.addr) {
        let list: Vec<String> = addrs.iter().map(ToString::to_string).collect();
        return Err(StackError::Uri(UriError::new(
            UriPart::Host,
            &spec.addr.to_string(),
            format!("not an address of the in-process stack `{}` (it has: {})", d.name, list.join(", ")),
        )));
    }
    for (key, given) in [("gw", spec.gw.is_some()), ("mtu", spec.mtu.is_some())] {
        if given {
            return Err(StackError::Uri(UriError::new(
                UriPart::Query,
                key,
                format!("the in-process stack `{}` is configured by its maker: the URI cannot set it", d.name),
            )));
        }
    }
    Ok(d)
}

/// The stack this process has on `spec.device`, opened now if none is alive.
async fn shared(spec: &Spec) -> Result<NetstackDevice, StackError> {
    // A stack just dropped releases its device from its driver task: an
    // open racing with that sees the device busy and waits (up to 1 s).
    let mut was_open = false;
    for _ in 0..100 {
        {
            let mut opened = lock(&OPENED);
            if let Some(o) = opened.get(&spec.device) {
                if let Some(stack) = o.stack.upgrade() {
                    compatible(spec, o)?;
                    return Ok(NetstackDevice { name: spec.device.as_str().into(), stack, ports: o.ports.clone() });
                }
                opened.remove(&spec.device);
                was_open = true;
            }
            match open(spec) {
                Ok((stack, mtu)) => {
                    let ports: Arc<Mutex<HashSet<u16>>> = Arc::default();
                    let o = Opened {
                        stack: stack.downgrade(),
                        addr: spec.addr,
                        prefix: spec.prefix,
                        gw: spec.gw,
                        mtu,
                        ports: ports.clone(),
                    };
                    opened.insert(spec.device.clone(), o);
                    return Ok(NetstackDevice { name: spec.device.as_str().into(), stack, ports });
                }
                Err(StackError::Io { source, .. }) if was_open && source.kind() == io::ErrorKind::ResourceBusy => {}
                Err(e) => return Err(e),
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Err(StackError::io(&spec.device, io::ErrorKind::ResourceBusy, "still busy 1 s after its last stack was dropped"))
}

/// Whether a URI fits the stack already open on its device.
fn compatible(spec: &Spec, o: &Opened) -> Result<(), StackError> {
    if (spec.addr, spec.prefix) != (o.addr, o.prefix) {
        return Err(StackError::Uri(UriError::new(
            UriPart::Host,
            &spec.device,
            format!(
                "this process already has a stack on it as {}/{}: one stack per device, and it takes no other address",
                o.addr, o.prefix
            ),
        )));
    }
    if let Some(gw) = spec.gw
        && o.gw != Some(gw)
    {
        let was = o.gw.map_or("none".to_string(), |g| g.to_string());
        let reason = format!("the stack already on `{}` has gateway {was}", spec.device);
        return Err(StackError::Uri(UriError::new(UriPart::Query, "gw", reason)));
    }
    if let Some(mtu) = spec.mtu
        && mtu != o.mtu
    {
        let reason = format!("the stack already on `{}` has MTU {}", spec.device, o.mtu);
        return Err(StackError::Uri(UriError::new(UriPart::Query, "mtu", reason)));
    }
    Ok(())
}

/// Opens `spec.device` (TAP or TUN, as its `tun_flags` say) with a new stack;
/// gives the stack and the MTU it uses.
fn open(spec: &Spec) -> Result<(NetStack, u16), StackError> {
    let name = spec.device.as_str();
    let sys = Path::new("/sys/class/net").join(name);
    let flags = match std::fs::read_to_string(sys.join("tun_flags")) {
        Ok(text) => {
            let hex = text.trim().trim_start_matches("0x");
            u32::from_str_radix(hex, 16).map_err(|_| {
                StackError::io(name, io::ErrorKind::InvalidData, format!("unreadable tun_flags {:?}", text.trim()))
            })?
        }
        Err(_) if !sys.exists() => {
            return Err(StackError::io(
                name,
                io::ErrorKind::NotFound,
                format!(
                    "no such network device, nor an in-process stack of that name in the context \
                     (create the device first: `ip tuntap add dev {name} mode tap`)"
                ),
            ));
        }
        Err(_) => return Err(StackError::io(name, io::ErrorKind::InvalidInput, "not a TAP or TUN device")),
    };
    if flags & IFF_MULTI_QUEUE != 0 {
        return Err(StackError::io(name, io::ErrorKind::Unsupported, "multi-queue TAP/TUN devices are not supported"));
    }
    let mtu = spec.mtu.or_else(|| std::fs::read_to_string(sys.join("mtu")).ok()?.trim().parse().ok()).unwrap_or(1500);
    let mut config = match spec.addr {
        IpAddr::V4(a) => StackConfig::new().ipv4(a, spec.prefix),
        IpAddr::V6(a) => StackConfig::new().ipv6(a, spec.prefix),
    };
    config = match spec.gw {
        Some(IpAddr::V4(g)) => config.gateway_v4(g),
        Some(IpAddr::V6(g)) => config.gateway_v6(g),
        None => config,
    };
    // A locally administered MAC from the address's last four bytes, so
    // stacks on one bridge differ.
    let tail = match spec.addr {
        IpAddr::V4(a) => a.octets(),
        IpAddr::V6(a) => {
            let o = a.octets();
            [o[12], o[13], o[14], o[15]]
        }
    };
    config = config.mac([0x02, 0x00, tail[0], tail[1], tail[2], tail[3]]);
    let opening = |e: io::Error| {
        let text = format!("cannot attach to it through /dev/net/tun: {e}");
        StackError::Io { device: name.to_string(), source: io::Error::new(e.kind(), text) }
    };
    let stack = if flags & IFF_TAP != 0 {
        NetStack::new(config, TapDevice::open(name, usize::from(mtu)).map_err(opening)?)
    } else if flags & IFF_TUN != 0 {
        NetStack::new(config, TunDevice::open(name, usize::from(mtu)).map_err(opening)?)
    } else {
        return Err(StackError::io(
            name,
            io::ErrorKind::InvalidInput,
            format!("neither TAP nor TUN (tun_flags {flags:#x})"),
        ));
    };
    tracing::debug!(device = name, tap = flags & IFF_TAP != 0, addr = %spec.addr, prefix = spec.prefix, mtu, "netstack device opened");
    Ok((stack, mtu))
}

/// Where a connect through a netstack goes: the stack (named by the URI),
/// the destination and the connect options.
#[derive(Debug, Clone)]
pub struct NetstackEndpoint {
    spec: Spec,
    in_context: Option<NetstackDevice>,
    dst: SocketAddr,
    options: ConnectOptions,
}

impl NetstackEndpoint {
    /// The device whose stack connects.
    pub fn device(&self) -> &str {
        &self.spec.device
    }

    /// The destination (`dst=`).
    pub fn dst(&self) -> SocketAddr {
        self.dst
    }

    /// The options passed to `create_connection` (`connect_timeout=`, `keepalive=`).
    pub fn options(&self) -> &ConnectOptions {
        &self.options
    }
}

/// Connects through the URI's stack.
struct Netstack;

impl Protocol for Netstack {
    type Endpoint = NetstackEndpoint;
    type Flow = NetFlow;
    type Error = BoxError;
    async fn connect(&self, e: NetstackEndpoint) -> Result<NetFlow, BoxError> {
        let device = stack_for(&e.spec, e.in_context).await?;
        Ok(device.stack.create_connection(e.dst, e.options).await?)
    }
}

/// Registers the netstack protocol (as `netstack`) and binds the `netstack`
/// scheme both ways.
///
/// Connecting: a context made by [`Registry::ctx_from_uri`] from
/// `netstack://DEVICE/ADDR/PREFIX?dst=HOST:PORT` gets an endpoint connecting
/// to `dst=` through the stack on `DEVICE` (the in-context stack of that name,
/// see [`NetstackKeys`], or the device's shared stack, opened at connect
/// time). `connect_timeout=` and `keepalive=` apply; a missing `dst=` or a
/// `:port` (the stack picks the local port) is an error naming it.
///
/// Listening ([`Registry::listen`], [`Registry::listen_with`] for in-context
/// stacks): `netstack://DEVICE/ADDR/PREFIX[:PORT]` accepts on `ADDR:PORT`
/// (port 0 or none picks one; [`Listener::local_uri`] names it), with
/// `keepalive=` on each accepted flow; `dst=` and `connect_timeout=` are
/// errors naming them.
///
/// `framing=shutdown` (feature `hvsock`; an error naming it without) puts
/// the shutdown framing on the flows both ways (the protocol
/// `netstack+framing`), with the context's `FramingKeys` config or the
/// default one. A missing device, one that is not a
/// TAP or TUN, or no permission to open it is a [`ListenError::Io`] naming
/// the device; a port another URI of this process listens on on the same
/// stack is one naming the address ([`io::ErrorKind::AddrInUse`]).
pub fn register_netstack(registry: &Registry, options: RegisterOptions) -> (Key<NetstackEndpoint>, Handle<NetFlow>) {
    #[cfg(feature = "hvsock")]
    let (framed, _) = registry.register_with("netstack+framing", options, crate::framing::FramedProtocol(Netstack));
    let (key, handle) = registry.register_with("netstack", options, Netstack);
    let k = key.clone();
    registry.register_scheme(Scheme::Netstack, move |uri, ctx| {
        check_modifiers(uri, "netstack", MODIFIERS).map_err(no_framing)?;
        let Target::Netstack { port, dst, .. } = uri.target() else { return Ok(ctx) };
        let spec = Spec::of(uri.target()).expect("a netstack target");
        if let Some(p) = port {
            return Err(UriError::new(
                UriPart::Port,
                &p.to_string(),
                "a connect's local port is the stack's pick: `:port` is a listener's (the service goes in `dst=`)",
            )
            .into());
        }
        let dst = dst.ok_or_else(|| {
            UriError::new(UriPart::Query, "dst", "missing: a connect through the stack needs `dst=ADDR:PORT`")
        })?;
        let (n, u) = (NetstackKeys::get(), UriKeys::get());
        let endpoint = move |devices: Vec<NetstackDevice>, timeout, keepalive| {
            let in_context = devices.into_iter().find(|d| *d.name == *spec.device);
            NetstackEndpoint { spec: spec.clone(), in_context, dst, options: ConnectOptions { keepalive, timeout } }
        };
        #[cfg(feature = "hvsock")]
        if uri.options().framing.is_some() {
            let cfg = &crate::FramingKeys::get().config;
            let args = (all(&n.devices), opt(&u.connect_timeout), opt(&u.keepalive), opt(cfg));
            return Ok(ctx.fold(&framed, args, move |(devices, timeout, keepalive, config)| {
                Some((endpoint(devices, timeout, keepalive), config.unwrap_or_default()))
            }));
        }
        let args = (all(&n.devices), opt(&u.connect_timeout), opt(&u.keepalive));
        Ok(ctx.fold(&k, args, move |(devices, timeout, keepalive)| Some(endpoint(devices, timeout, keepalive))))
    });
    let weak = registry.downgrade();
    registry.register_listener(Scheme::Netstack, move |uri, ctx| {
        let (uri, ctx, weak) = (uri.clone(), ctx.clone(), weak.clone());
        Box::pin(async move { listen(&uri, &ctx, &weak).await })
    });
    (key, handle)
}

/// The modifiers the binding uses (connecting; a listener all but `connect_timeout`).
#[cfg(feature = "hvsock")]
const MODIFIERS: &[&str] = &["connect_timeout", "keepalive", "framing"];
#[cfg(not(feature = "hvsock"))]
const MODIFIERS: &[&str] = &["connect_timeout", "keepalive"];

/// A `framing` refused because the `hvsock` feature is off says so.
fn no_framing(e: UriError) -> UriError {
    if cfg!(feature = "hvsock") || e.value() != "framing" {
        return e;
    }
    UriError::new(
        UriPart::Query,
        "framing",
        "the shutdown framing over netstack needs conflux-mimic's `hvsock` feature, not built in",
    )
}

/// How many established flows wait for `accept`.
const BACKLOG: usize = 128;

async fn listen(uri: &Uri, ctx: &Ctx, registry: &WeakRegistry) -> Result<Listener, ListenError> {
    let Some(spec) = Spec::of(uri.target()) else {
        return Err(UriError::new(UriPart::Scheme, uri.scheme().as_str(), "not a netstack URI").into());
    };
    let Target::Netstack { port, dst, .. } = uri.target() else { unreachable!("Spec::of matched") };
    if dst.is_some() {
        return Err(
            UriError::new(UriPart::Query, "dst", "a listener takes no destination (`dst=` is for connecting)").into()
        );
    }
    let o = uri.options();
    check_listen_modifiers(uri, "netstack", &MODIFIERS[1..]).map_err(no_framing)?;
    let device = stack_for(&spec, in_context(ctx, &spec.device, registry).await?).await?;
    let at = SocketAddr::new(spec.addr, port.unwrap_or(0));
    let in_use = || {
        ListenError::io(
            format_args!("{at} on netstack device `{}`", spec.device),
            io::Error::new(io::ErrorKind::AddrInUse, "another listener of this process has it"),
        )
    };
    let early = match at.port() {
        0 => None,
        p => Some(device.claim(p).ok_or_else(in_use)?),
    };
    let incoming = Incoming::bind(&device.stack, at, o.keepalive, BACKLOG).map_err(|e| {
        let kind = match e {
            conflux_tcp::ListenError::AddrInUse(_) => io::ErrorKind::AddrInUse,
            conflux_tcp::ListenError::AddrNotAvailable(_) => io::ErrorKind::AddrNotAvailable,
            conflux_tcp::ListenError::PermissionDenied(_) => io::ErrorKind::PermissionDenied,
            _ => io::ErrorKind::Other,
        };
        ListenError::io(format_args!("{at} on netstack device `{}`", spec.device), io::Error::new(kind, e))
    })?;
    let bound = incoming.local_addr().port();
    let claim = match early {
        Some(c) => c,
        None => device.claim(bound).ok_or_else(in_use)?,
    };
    let Target::Netstack { device: name, addr, prefix, gw, mtu, .. } = uri.target().clone() else {
        unreachable!("Spec::of matched")
    };
    let local = Uri::new(Target::Netstack { device: name, addr, prefix, port: Some(bound), gw, mtu, dst: None })
        .with_options(*o);
    tracing::debug!(local = %local, "netstack listening");
    let framing = crate::listen::framing_of(uri, ctx);
    Ok(Listener::new(local, Accepting { incoming, framing, _claim: claim, _device: device }))
}

/// The in-context stack named `name`, if the context has one.
async fn in_context(ctx: &Ctx, name: &str, registry: &WeakRegistry) -> Result<Option<NetstackDevice>, ListenError> {
    let key = &NetstackKeys::get().devices;
    if ctx.is_empty() {
        return Ok(None);
    }
    if let Some(d) = ctx.get(key).filter(|d| *d.name == *name) {
        return Ok(Some(d.clone()));
    }
    // Older values, or values computed by functions: unfold.
    let registry = registry.upgrade().unwrap_or_default();
    let unfolded = registry
        .unfold(ctx)
        .await
        .map_err(|cycle| ListenError::io("the context", io::Error::new(io::ErrorKind::InvalidInput, cycle)))?;
    Ok(unfolded.values(key).find(|d| *d.name == *name).cloned())
}

/// The accept loop of a netstack listener: the accepted flows, boxed, with
/// what must live as long as the listener.
struct Accepting {
    incoming: Incoming<NetStack>,
    framing: crate::listen::FramingOf,
    _claim: PortClaim,
    _device: NetstackDevice,
}

impl Stream for Accepting {
    type Item = io::Result<Accepted>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<io::Result<Accepted>>> {
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

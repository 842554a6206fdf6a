//! The forwarder at work: a userspace stack over the guest's frame device,
//! its guest connections forwarded to host sockets, port forwards into it.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use conflux_netstack::{FrameDevice, HeldSyn, Intercept, NetStack, StackConfig, TapDevice, UdpError, in_netns};
use conflux_tcp::{ListenError, TcpStack};
use conflux_tcp_host::{HostConfig, HostStack};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::config::{PortForward, Proto, UsernetConfig};
use crate::forward::{Expiring, TcpForwarder};
use crate::guest::{DeviceEnded, GuestLink};
use crate::inbound::TcpPortForward;
use crate::inbound_udp::UdpPortForward;
use crate::policy::Policy;
use crate::resolv::resolv_conf_upstream;
use crate::stats::{Stats, StatsSnapshot};

/// How long [`Usernet::shutdown`] waits for the device to be released
/// after the flows were closed.
const RELEASE_WAIT: Duration = Duration::from_secs(2);

/// The forwarder's stack's user timeout: a guest flow whose data the
/// guest leaves unacknowledged this long (a guest gone without a reset: a
/// VM paused or killed, its link down) fails as timed out, its host side
/// is aborted and it counts in [`StatsSnapshot::flows_timed_out`]. The
/// netstack's default, said here so the forwarder keeps it.
const USER_TIMEOUT: Duration = Duration::from_secs(120);

/// The gateway's MAC address (slirp4netns's, 52:55:0a:00:02:02): the
/// forwarder's stack's, and what a [`GuestLink`] in front of it answers
/// from.
pub const GATEWAY_MAC: [u8; 6] = [0x52, 0x55, 0x0a, 0x00, 0x02, 0x02];

/// Why a forwarder could not start.
#[derive(Debug, thiserror::Error)]
pub enum UsernetError {
    /// The TAP device could not be made inside the namespace.
    #[error("opening TAP device {interface} in {}: {source}", netns.display())]
    Device {
        /// The interface name.
        interface: String,
        /// The namespace's path.
        netns: PathBuf,
        /// The system's error.
        source: io::Error,
    },
    /// `--configure` failed (an `ip` command inside the namespace).
    #[error("configuring {interface} in {}: {source}", netns.display())]
    Configure {
        /// The interface name.
        interface: String,
        /// The namespace's path.
        netns: PathBuf,
        /// The command and its error.
        source: io::Error,
    },
    /// The stack refused the interception of the guest's connections.
    #[error("intercepting the guest's connections: {0}")]
    Listen(ListenError),
    /// The stack refused the interception of the guest's datagrams.
    #[error("intercepting the guest's datagrams: {0}")]
    Udp(UdpError),
    /// A port forward's host address could not be listened on.
    #[error("port forward {forward}: {source}")]
    Forward {
        /// The forward.
        forward: PortForward,
        /// Why.
        source: ListenError,
    },
    /// A UDP port forward's host address could not be bound.
    #[error("port forward {forward}: {source}")]
    UdpForward {
        /// The forward.
        forward: PortForward,
        /// Why.
        source: io::Error,
    },
}

/// A running forwarder: a userspace TCP/IP stack on the guest's device
/// whose addresses are the gateway's, every guest connection to another
/// address (and to the gateway, mapped by the [`Policy`]) forwarded to a
/// host socket, and the configured inbound port forwards.
///
/// Dropping it without [`shutdown`](Usernet::shutdown) leaves the open
/// flows running until they end; the device is released when the last
/// one does.
pub struct Usernet {
    stack: NetStack,
    stats: Arc<Stats>,
    /// The TCP and UDP forwarding loops, the UDP port forwards, then the
    /// TCP port forwards' listeners: aborting one drops what it holds
    /// (flows, host sockets).
    tasks: Vec<JoinHandle<()>>,
    /// Where the TCP port forwards' listeners start in `tasks`.
    listeners: usize,
    /// Tells the TCP loop to stop taking guest connections.
    stop: Arc<Notify>,
}

impl std::fmt::Debug for Usernet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Usernet").field("stack", &self.stack).field("stats", &self.stats()).finish_non_exhaustive()
    }
}

/// The stack's configuration for `config`: the gateway addresses are its
/// own.
fn stack_config(config: &UsernetConfig) -> StackConfig {
    let mut sc = StackConfig::new()
        .mac(GATEWAY_MAC)
        .buffers(512 * 1024, 512 * 1024)
        .max_half_open(256)
        .user_timeout(USER_TIMEOUT);
    if config.network4.addr().is_ipv4() {
        sc = sc.ipv4(config.gateway4, config.network4.prefix());
    }
    if config.network6.addr().is_ipv6() {
        sc = sc.ipv6(config.gateway6, config.network6.prefix());
    }
    sc
}

/// The kernel stack the host side of each TCP flow goes through. Its
/// connections get a user timeout (`TCP_USER_TIMEOUT`): data the host peer
/// leaves unacknowledged that long ends the flow as timed out, as
/// [`USER_TIMEOUT`] does on the guest's side (without it, a busy flow to a
/// host peer gone silent would wait out the kernel's retransmissions, about
/// 15 minutes). It is the host keepalive's deadline when that is on: Linux
/// lets a user timeout decide when keepalive gives up too, so the two must
/// agree.
///
/// Both are set on a connection to a peer on this machine only once it has
/// lived [`HOST_OPTIONS_DELAY`] (a guest's short request to a host
/// service never pays their five system calls); Linux times them from
/// the last segment heard and the oldest unacknowledged one, so a dead
/// peer is still found at the same deadline.
fn host_stack(config: &UsernetConfig) -> HostStack {
    let user_timeout = config.host_keepalive.as_ref().map_or(USER_TIMEOUT, conflux_tcp_host::keepalive_deadline);
    HostStack::with_config(HostConfig::new().user_timeout(Some(user_timeout)).defer_options(Some(HOST_OPTIONS_DELAY)))
}

/// How long a host connection to a peer on this machine lives before its
/// keepalive and user timeout are set ([`HostConfig::defer_options`]).
const HOST_OPTIONS_DELAY: Duration = Duration::from_millis(250);

impl Usernet {
    /// Serves `config` over `device` (spawns its tasks; call within a tokio
    /// runtime). The DNS upstream, when `config` names none, is the first
    /// nameserver of the host's `/etc/resolv.conf`.
    ///
    /// The device is served as it is: a VM guest, which needs its
    /// addresses from us, is served by [`spawn_vm`](Usernet::spawn_vm).
    pub fn spawn<D: FrameDevice>(config: UsernetConfig, device: D) -> Result<Usernet, UsernetError> {
        let host = host_stack(&config);
        Usernet::spawn_on(config, device, host)
    }

    /// As [`spawn`](Usernet::spawn), the guest's connections made through
    /// `outbound` (the kernel's [`HostStack`] there; an in-memory stack in
    /// the tests that run on virtual time).
    fn spawn_on<D: FrameDevice, S: TcpStack>(
        config: UsernetConfig,
        device: D,
        outbound: S,
    ) -> Result<Usernet, UsernetError> {
        let upstream = match config.dns_upstream {
            Some(up) => Some(up),
            None => std::fs::read_to_string("/etc/resolv.conf").ok().and_then(|t| resolv_conf_upstream(&t)),
        };
        let policy = Policy::new(&config).with_dns_upstream(upstream);
        let stack = NetStack::new(stack_config(&config), device);
        let stats = Arc::new(Stats::default());
        let host = host_stack(&config);
        // Port forwards first: a host address in use fails before anything runs.
        let mut forwards = Vec::new();
        let mut udp_forwards = Vec::new();
        for forward in &config.forwards {
            let to = SocketAddr::new(config.guest4.into(), forward.guest_port);
            if forward.proto == Proto::Udp {
                let gateway = SocketAddr::new(config.gateway4.into(), 0);
                let pf = UdpPortForward::bind(forward.host, stack.clone(), gateway, to, stats.clone())
                    .map_err(|source| UsernetError::UdpForward { forward: *forward, source })?;
                tracing::info!(from = ?pf.local_addr(), %to, "UDP port forward");
                udp_forwards.push(pf);
                continue;
            }
            let (host_ka, guest_ka) = (config.host_keepalive, config.guest_keepalive);
            let pf = TcpPortForward::bind(&host, forward.host, host_ka, stack.clone(), to, guest_ka, stats.clone())
                .map_err(|source| UsernetError::Forward { forward: *forward, source })?;
            tracing::info!(from = %pf.local_addr(), %to, "port forward");
            forwards.push(pf);
        }
        let own = vec![config.gateway4.into(), config.gateway6.into()];
        // The guest's side of each flow gets the guest keepalive (the
        // intercept sets it on every accepted connection).
        let intercept = stack.intercept(own.clone(), config.guest_keepalive).map_err(UsernetError::Listen)?;
        let udp = stack.udp_intercept(own).map_err(UsernetError::Udp)?;
        let forwarder =
            Arc::new(TcpForwarder::new(policy.clone(), outbound, stats.clone()).keepalive(config.host_keepalive));
        let stop = Arc::new(Notify::new());
        let mut tasks = vec![
            tokio::spawn(serve_tcp(intercept, forwarder, stop.clone())),
            tokio::spawn(crate::udp::serve(udp, policy, stats.clone())),
        ];
        // UDP forwards, like UDP, go on until `shutdown`; the TCP forwards'
        // listeners come last (`stop_accepting` stops them).
        tasks.extend(udp_forwards.into_iter().map(|pf| tokio::spawn(pf.serve())));
        let listeners = tasks.len();
        tasks.extend(forwards.into_iter().map(|pf| tokio::spawn(pf.serve())));
        let usernet = Usernet { stack, stats, tasks, listeners, stop };
        Ok(usernet)
    }

    /// As [`spawn`](Usernet::spawn), for a VM guest on `device` (a
    /// [`StreamDevice`](crate::StreamDevice), a
    /// [`DgramDevice`](crate::DgramDevice), a TAP bridged to one, ...): a
    /// [`GuestLink`] in front of the stack answers DHCPv4, router
    /// solicitations (and advertises when the link starts and every
    /// [`RA_INTERVAL`](crate::RA_INTERVAL)) and ARP (and neighbour
    /// solicitations) for the DNS address, and hands every other frame to
    /// the stack. The MTU the guest is told (DHCP option 26, the
    /// advertisements' MTU option) is `config.mtu`, or the device's when
    /// that is smaller.
    ///
    /// A hypervisor that goes away ends the device; the forwarder says why:
    ///
    /// ```
    /// use conflux_flow::FlowExt;
    /// use conflux_usernet::{StreamDevice, Usernet, UsernetConfig};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let (ours, mut hypervisor) = conflux_flow::pipe(256 * 1024);
    /// let config = UsernetConfig::new().dns_upstream("127.0.0.1:53".parse()?);
    /// let usernet = Usernet::spawn_vm(config, StreamDevice::new(ours, 1500))?;
    /// // The first router advertisement, in QEMU's framing.
    /// let first = hypervisor.read().await?.expect("a frame");
    /// assert_eq!(first[4 + 54], 134);
    /// // The hypervisor closes the stream between two frames.
    /// hypervisor.close().await?;
    /// let ended = usernet.device_ended().await;
    /// assert_eq!(ended.kind, std::io::ErrorKind::ConnectionAborted);
    /// assert_eq!(ended.to_string(), "guest device ended: qemu stream: the peer closed the stream");
    /// usernet.shutdown().await;
    /// # Ok(())
    /// # }
    /// ```
    pub fn spawn_vm<D: FrameDevice>(config: UsernetConfig, device: D) -> Result<Usernet, UsernetError> {
        // The guest is never told an MTU its carrier cannot take (a stream
        // device ends at a frame above its own).
        let mut told = config.clone();
        told.mtu = told.mtu.min(device.caps().mtu);
        let link = GuestLink::new(&told, GATEWAY_MAC, device);
        Usernet::spawn(config, link)
    }

    /// Resolves once the guest's device has ended (the hypervisor closed
    /// the carrier, vanished inside a frame or sent a bad frame; a TAP
    /// device failed), with why; at once if it already has. The stack
    /// stops with its device, and the guest's forwarded connections end
    /// as if the guest had reset them (their host sockets aborted, their
    /// bytes counted in [`stats`](Usernet::stats), one log line each).
    /// Call [`shutdown`](Usernet::shutdown) next, which closes whatever is
    /// left of the guest (UDP associations, port forwards, the stack).
    /// Never resolves while the device lives.
    pub async fn device_ended(&self) -> DeviceEnded {
        self.stack.device_error().await.into()
    }

    /// Opens a TAP device inside the namespace at `netns` (a path such as
    /// `/proc/PID/ns/net` or `/run/netns/NAME`), configures it when
    /// `config.configure` (address, route, MTU, up) and serves it. The
    /// device goes away when the forwarder stops. Needs root
    /// (CAP_SYS_ADMIN and CAP_NET_ADMIN).
    pub fn spawn_netns(config: UsernetConfig, netns: &Path) -> Result<Usernet, UsernetError> {
        let interface = config.interface.clone();
        let path = netns.to_owned();
        let setup = config.clone();
        let opened = in_netns(netns, move || {
            let tap = TapDevice::open_with_offloads(&setup.interface, setup.mtu)?;
            if setup.configure {
                // Told apart from the open's error by its inner type.
                configure(&setup).map_err(|e| io::Error::other(ConfigureFailed(e)))?;
            }
            Ok(tap)
        });
        let tap = match opened {
            Ok(tap) => tap,
            Err(e) if e.get_ref().is_some_and(|inner| inner.is::<ConfigureFailed>()) => {
                let source = e.into_inner().and_then(|b| b.downcast::<ConfigureFailed>().ok()).map(|c| c.0);
                let source = source.unwrap_or_else(|| io::Error::other("configuring failed"));
                return Err(UsernetError::Configure { interface, netns: path, source });
            }
            Err(source) => return Err(UsernetError::Device { interface, netns: path, source }),
        };
        let (gateway, dns, guest, mtu) = (config.gateway4, config.dns4, config.guest4, config.mtu);
        let usernet = Usernet::spawn(config, tap)?;
        tracing::info!(%interface, netns = %path.display(), %gateway, %dns, %guest, mtu, "serving");
        Ok(usernet)
    }

    /// The counters now.
    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    /// Stops taking new connections: the guest's SYNs are refused (an RST)
    /// and the TCP port forwards stop listening, while open flows (and UDP,
    /// UDP port forwards included) go on until [`shutdown`](Usernet::shutdown). What `conflux usernet`
    /// does at SIGTERM before its grace period.
    pub fn stop_accepting(&self) {
        self.stop.notify_one();
        for task in &self.tasks[self.listeners..] {
            task.abort();
        }
    }

    /// The live counters, readable after [`shutdown`](Usernet::shutdown) too.
    pub fn counters(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// Stops: no new guest connection is taken, port forwards stop
    /// listening, open flows get the stack's disconnect grace (2 s) and are
    /// then aborted, and the device is released (a TAP device disappears).
    pub async fn shutdown(self) {
        let Usernet { stack, tasks, .. } = self;
        // No new guest connection or datagram; open flows and host sockets
        // dropped (the guest's flows are reset by the disconnect below).
        for task in &tasks {
            task.abort();
        }
        for task in tasks {
            let _ = task.await;
        }
        stack.disconnect().await;
        let weak = stack.downgrade();
        drop(stack);
        // Port forwards' relays end with the disconnect's aborts; the
        // driver then stops and closes the device.
        if tokio::time::timeout(RELEASE_WAIT, weak.stopped()).await.is_err() {
            tracing::warn!("the device is still held {RELEASE_WAIT:?} after the flows were closed");
        }
    }
}

/// A configuring step's failure, carried through `in_netns`'s io::Error.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct ConfigureFailed(io::Error);

/// Configures the interface from inside the namespace (the calling thread
/// is in it): loopback up, MTU, up, the guest's IPv4 address, the default
/// route via the gateway, the DNS address's neighbour entry; the same for
/// IPv6 when the namespace has it.
fn configure(config: &UsernetConfig) -> io::Result<()> {
    let dev = config.interface.as_str();
    let addr = format!("{}/{}", config.guest4, config.network4.prefix());
    let mtu = config.mtu.to_string();
    let gw = config.gateway4.to_string();
    let dns = config.dns4.to_string();
    let mac = GATEWAY_MAC.map(|b| format!("{b:02x}")).join(":");
    let steps: [&[&str]; 5] = [
        &["link", "set", "dev", "lo", "up"],
        &["link", "set", "dev", dev, "mtu", &mtu, "up"],
        &["addr", "add", &addr, "dev", dev],
        &["route", "add", "default", "via", &gw, "dev", dev],
        // The DNS address is not the stack's own (it has one IPv4
        // address, the gateway's), so nothing answers ARP for it: the
        // gateway's MAC takes its frames, the intercepts its flows.
        &["neigh", "replace", &dns, "lladdr", &mac, "dev", dev, "nud", "permanent"],
    ];
    steps.iter().try_for_each(|args| ip(args))?;
    // IPv6 as well, unless the namespace has it off (a host booted with
    // ipv6.disable, or disable_ipv6 inherited): the static guest address
    // (no duplicate detection: the link has only us), the default route
    // via the gateway and, as for IPv4, the DNS address's neighbour entry.
    let ipv6_off = std::fs::read_to_string(format!("/proc/sys/net/ipv6/conf/{dev}/disable_ipv6"))
        .map_or(true, |v| v.trim() != "0");
    if ipv6_off {
        tracing::info!(interface = dev, "IPv6 is off in the namespace: configured for IPv4 only");
        return Ok(());
    }
    let addr6 = format!("{}/{}", config.guest6, config.network6.prefix());
    let (gw6, dns6) = (config.gateway6.to_string(), config.dns6.to_string());
    let steps6: [&[&str]; 3] = [
        &["-6", "addr", "add", &addr6, "dev", dev, "nodad"],
        &["-6", "route", "add", "default", "via", &gw6, "dev", dev],
        &["-6", "neigh", "replace", &dns6, "lladdr", &mac, "dev", dev, "nud", "permanent"],
    ];
    steps6.iter().try_for_each(|args| ip(args))
}

/// Runs `ip ARGS` to its end; its stderr in the error when it fails.
fn ip(args: &[&str]) -> io::Result<()> {
    let out = std::process::Command::new("ip")
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| io::Error::new(e.kind(), format!("ip {}: {e}", args.join(" "))))?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// The guest's held SYNs: each answered only once its host connection is
/// made (refused or failed -> an RST), then relayed, one task per flow;
/// dropping the future drops every flow.
///
/// Finished flows' tasks are reaped as the next SYNs arrive, not waited
/// for: waiting would wake this task once more per connection.
async fn serve_tcp<S: TcpStack>(mut intercept: Intercept, forwarder: Arc<TcpForwarder<S>>, stop: Arc<Notify>) {
    let mut flows = tokio::task::JoinSet::new();
    // One registration with `stop` for the whole loop, not one per SYN.
    let stopped = stop.notified();
    tokio::pin!(stopped);
    let mut stopping = false;
    loop {
        let held = tokio::select! {
            () = &mut stopped, if !stopping => {
                stopping = true;
                continue;
            }
            held = intercept.next() => held,
        };
        while flows.try_join_next().is_some() {}
        match held {
            // Refused once stopping; the open flows go on.
            Some(syn) if stopping => {
                forwarder.stats().refused();
                tracing::debug!(guest = %syn.src(), dst = %syn.dst(), "guest connection refused: stopping");
                syn.refuse();
            }
            Some(syn) => {
                flows.spawn(forward(forwarder.clone(), syn));
            }
            None => break,
        }
    }
    while flows.join_next().await.is_some() {}
}

/// One guest connection: the host connection first, then the guest's
/// handshake and the relay. Once the guest's device ended the stack fails
/// the guest's flow (a reset naming the device's error), so the relay ends
/// as for a guest's reset: the host side aborted.
async fn forward<S: TcpStack>(forwarder: Arc<TcpForwarder<S>>, syn: HeldSyn) {
    let (guest, dst) = (syn.src(), syn.dst());
    let host = match forwarder.connect(guest, dst).await {
        Ok(host) => host,
        Err(_) => return syn.refuse(),
    };
    match syn.accept().await {
        Ok(flow) => {
            // The guest's keepalive expiry fails the flow timed out.
            forwarder.relay(Expiring::new(flow, "guest"), host, guest, dst).await;
        }
        Err(e) => {
            tracing::debug!(%guest, %dst, error = %e, "the guest's handshake failed");
            let mut host = host;
            let _ = conflux_flow::FlowExt::abort(&mut host).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use conflux_netstack::{LinkConfig, link_pair};

    use super::*;

    /// The forwarder (`config`, allowing 192.0.2.0/24, DNS to 127.0.0.1,
    /// outbound through `outbound`) on one end of an Ethernet link, the
    /// guest's stack (10.0.2.100) on the other, and the link's switch.
    fn forwarder_and_guest(
        config: UsernetConfig,
        outbound: &NetStack,
    ) -> (Usernet, NetStack, conflux_netstack::LinkSwitch) {
        let (ours, guest_end) = link_pair(LinkConfig::ethernet());
        let switch = guest_end.switch();
        let config = config.allow("192.0.2.0/24".parse().unwrap()).dns_upstream("127.0.0.1:53".parse().unwrap());
        let usernet = Usernet::spawn_on(config, ours, outbound.clone()).unwrap();
        let guest = NetStack::new(
            StackConfig::new()
                .ipv4([10, 0, 2, 100].into(), 24)
                .gateway_v4([10, 0, 2, 2].into())
                .mac([2, 0, 0, 0, 0, 9]),
            guest_end,
        );
        (usernet, guest, switch)
    }

    #[tokio::test]
    async fn a_port_forward_on_a_taken_address_fails_the_start_and_names_it() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let forward: PortForward = format!("{}:80", taken.local_addr().unwrap().port()).parse().unwrap();
        let (ours, _guest) = link_pair(LinkConfig::ethernet());
        let err = Usernet::spawn(UsernetConfig::new().forward(forward), ours).unwrap_err();
        assert!(matches!(err, UsernetError::Forward { .. }), "{err:?}");
        assert!(err.to_string().contains(&forward.to_string()), "{err}");
        let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let udp: PortForward = format!("udp:{}:53", taken.local_addr().unwrap().port()).parse().unwrap();
        let (ours, _guest) = link_pair(LinkConfig::ethernet());
        let err = Usernet::spawn(UsernetConfig::new().forward(udp), ours).unwrap_err();
        assert!(matches!(err, UsernetError::UdpForward { .. }), "{err:?}");
        assert!(err.to_string().starts_with(&format!("port forward {udp}: ")), "{err}");
    }

    /// A guest that vanishes (its link goes down for good, no reset) while
    /// the host side sends it data: its flow fails at the forwarder's user
    /// timeout, 120 s after the last progress, not before; the host side
    /// is aborted (its peer sees a reset), the flow's socket is gone from
    /// the stack and the counters say it timed out. All in memory on
    /// virtual time: the host side is a second userspace stack.
    #[tokio::test(start_paused = true)]
    async fn a_vanished_guests_flow_ends_at_the_user_timeout() {
        use conflux_flow::FlowExt;
        use conflux_tcp::ConnectOptions;
        use conflux_testkit::within;

        // The host's network: the forwarder's outbound stack and a server,
        // on an IP link (no neighbour cache to expire while it idles: an
        // abort's RST sent after 60 s idle on Ethernet is lost while the
        // stack resolves the neighbour again).
        let (out_end, server_end) = link_pair(LinkConfig::ip());
        let outbound =
            NetStack::new(StackConfig::new().ipv4([192, 0, 2, 1].into(), 24).mac([2, 0, 0, 0, 1, 1]), out_end);
        let server =
            NetStack::new(StackConfig::new().ipv4([192, 0, 2, 10].into(), 24).mac([2, 0, 0, 0, 1, 2]), server_end);
        let (go, wait) = tokio::sync::oneshot::channel::<()>();
        let (ended_tx, ended) = tokio::sync::oneshot::channel();
        let slot = Arc::new(std::sync::Mutex::new(Some((wait, ended_tx))));
        let _listening = server
            .listen(80, None, move |mut f| {
                let taken = slot.lock().unwrap().take();
                async move {
                    let Some((wait, ended_tx)) = taken else { return };
                    f.write("hello").await.unwrap();
                    // More once the guest is gone: left unacknowledged.
                    wait.await.unwrap();
                    f.write("into the void").await.unwrap();
                    let _ = ended_tx.send(f.read().await);
                }
            })
            .unwrap();

        // The guest and the forwarder.
        let (usernet, guest, switch) = forwarder_and_guest(UsernetConfig::new(), &outbound);
        let mut flow = within(
            "connect",
            Duration::from_secs(5),
            guest.create_connection(([192, 0, 2, 10], 80).into(), ConnectOptions::new()),
        )
        .await
        .unwrap();
        assert_eq!(within("hello", Duration::from_secs(5), flow.read()).await.unwrap().as_deref(), Some(&b"hello"[..]));
        let sockets = usernet.stack.sockets();
        assert_eq!(usernet.stats().flows_open, 1);

        // The guest vanishes; the server sends more.
        switch.set_up(false);
        let cut = tokio::time::Instant::now();
        go.send(()).unwrap();
        tokio::time::sleep(Duration::from_secs(119)).await;
        let s = usernet.stats();
        assert_eq!((s.flows_open, s.flows_failed), (1, 0), "still open 119 s after the last progress: {s}");
        assert_eq!(usernet.stack.sockets(), sockets);
        while usernet.stats().flows_open > 0 {
            assert!(cut.elapsed() < Duration::from_secs(125), "still open after {:?}", cut.elapsed());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let took = cut.elapsed();
        assert!(took >= USER_TIMEOUT && took < USER_TIMEOUT + Duration::from_secs(2), "ended after {took:?}");
        let s = usernet.stats();
        assert_eq!((s.flows_total, s.flows_failed, s.flows_timed_out), (1, 1, 1), "{s}");
        // The guest flow's RST waits for the guest's neighbour entry (expired
        // after 60 s of silence), which the vanished guest never answers:
        // the socket goes once the stack gives up on it, 3 s on.
        let gone = within("the guest flow's socket", Duration::from_secs(5), async {
            while usernet.stack.sockets() != sockets - 1 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        gone.await;
        assert_eq!(usernet.stack.tcp_resets_abandoned(), 1, "its RST given up on, counted");
        // The host side was aborted, not closed: the server's read fails
        // with a reset (a FIN would pass the guest's stream on as complete).
        let read = within("the server's end", Duration::from_secs(5), ended).await.unwrap();
        assert!(read.as_ref().is_err_and(|e| e.is_reset()), "{read:?}");
        assert_eq!((outbound.sockets(), server.sockets()), (0, 0));
        drop(flow);
        usernet.shutdown().await;
    }

    /// A guest and the forwarder on an Ethernet link, and the host's
    /// network, on an IP link (no neighbour cache to expire while a flow
    /// idles): the forwarder's outbound stack and a server at 192.0.2.10
    /// whose accepted flows come out of `accepted`. All userspace stacks,
    /// so that virtual time runs the keepalives.
    struct Idle {
        usernet: Usernet,
        guest: NetStack,
        outbound: NetStack,
        _server: NetStack,
        guest_link: conflux_netstack::LinkSwitch,
        host_link: conflux_netstack::LinkSwitch,
        accepted: tokio::sync::mpsc::UnboundedReceiver<conflux_netstack::NetFlow>,
        _listening: conflux_tcp::Listening,
    }

    impl Idle {
        fn new(config: UsernetConfig) -> Idle {
            let (out_end, server_end) = link_pair(LinkConfig::ip());
            let host_link = server_end.switch();
            let outbound =
                NetStack::new(StackConfig::new().ipv4([192, 0, 2, 1].into(), 24).mac([2, 0, 0, 0, 1, 1]), out_end);
            let server =
                NetStack::new(StackConfig::new().ipv4([192, 0, 2, 10].into(), 24).mac([2, 0, 0, 0, 1, 2]), server_end);
            let (tx, accepted) = tokio::sync::mpsc::unbounded_channel();
            let _listening = server
                .listen(80, None, move |f| {
                    let _ = tx.send(f);
                    async {}
                })
                .unwrap();
            let (usernet, guest, guest_link) = forwarder_and_guest(config, &outbound);
            Idle { usernet, guest, outbound, _server: server, guest_link, host_link, accepted, _listening }
        }

        /// A flow from the guest to the server, a message each way, then
        /// ten minutes of silence that both live peers outlast (their
        /// stacks answer the probes): the guest's end and the server's.
        async fn idle_flow(&mut self) -> (conflux_netstack::NetFlow, conflux_netstack::NetFlow) {
            use conflux_flow::FlowExt;
            use conflux_tcp::ConnectOptions;
            use conflux_testkit::within;

            let connect = self.guest.create_connection(([192, 0, 2, 10], 80).into(), ConnectOptions::new());
            let mut flow = within("connect", Duration::from_secs(5), connect).await.unwrap();
            let mut srv = within("accept", Duration::from_secs(5), self.accepted.recv()).await.unwrap();
            flow.write("ping").await.unwrap();
            assert_eq!(
                within("ping", Duration::from_secs(5), srv.read()).await.unwrap().as_deref(),
                Some(&b"ping"[..])
            );
            srv.write("pong").await.unwrap();
            assert_eq!(
                within("pong", Duration::from_secs(5), flow.read()).await.unwrap().as_deref(),
                Some(&b"pong"[..])
            );
            tokio::time::sleep(Duration::from_secs(600)).await;
            let s = self.usernet.stats();
            assert_eq!((s.flows_open, s.flows_failed), (1, 0), "alive peers keep an idle flow: {s}");
            (flow, srv)
        }

        /// Waits (at most `limit`) until the forwarder holds no flow: how long that took.
        async fn flow_gone(&self, limit: Duration) -> Duration {
            let start = tokio::time::Instant::now();
            while self.usernet.stats().flows_open > 0 {
                assert!(start.elapsed() < limit, "still open after {:?}: {}", start.elapsed(), self.usernet.stats());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            start.elapsed()
        }
    }

    /// A guest that vanishes (no FIN, no reset ever reaches us) while its
    /// flow idles: the guest keepalive (a probe every 30 s of silence)
    /// declares it dead 120 s after the last segment heard from it, so 90
    /// to 120 s after the cut; the host side is aborted (the server reads a
    /// reset, not a FIN that would pass the stream on as complete), the
    /// guest's socket leaves the stack and the counters say the flow
    /// failed timed out. Without the keepalive the flow stays open.
    #[tokio::test(start_paused = true)]
    async fn a_vanished_guests_idle_flow_ends_at_the_keepalive_deadline() {
        use conflux_flow::FlowExt;
        use conflux_testkit::within;

        let mut net = Idle::new(UsernetConfig::new());
        let (_flow, mut srv) = net.idle_flow().await;
        let sockets = net.usernet.stack.sockets();
        net.guest_link.set_up(false);
        let took = net.flow_gone(Duration::from_secs(130)).await;
        let deadline = conflux_netstack::keepalive_deadline(&crate::DEFAULT_GUEST_KEEPALIVE);
        assert!(took > Duration::from_secs(89) && took <= deadline + Duration::from_secs(1), "ended after {took:?}");
        let s = net.usernet.stats();
        assert_eq!((s.flows_total, s.flows_failed, s.flows_timed_out), (1, 1, 1), "{s}");
        let read = within("the server's end", Duration::from_secs(5), srv.read()).await;
        assert!(read.as_ref().is_err_and(|e| e.is_reset()), "the host side aborted: {read:?}");
        within("the guest flow's socket", Duration::from_secs(5), async {
            while net.usernet.stack.sockets() != sockets - 1 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await;
        assert_eq!(net.outbound.sockets(), 0, "the host connection is gone");
        net.usernet.shutdown().await;
    }

    /// With the guest keepalive off, that flow outlives the guest: what the
    /// forwarder did before it had one.
    #[tokio::test(start_paused = true)]
    async fn without_the_guest_keepalive_a_vanished_guests_idle_flow_stays() {
        let mut net = Idle::new(UsernetConfig::new().guest_keepalive(None));
        let (_flow, _srv) = net.idle_flow().await;
        net.guest_link.set_up(false);
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert_eq!(net.usernet.stats().flows_open, 1);
        net.usernet.shutdown().await;
    }

    /// A host peer that vanishes silently (its machine gone: no reset)
    /// while the flow idles: the host connection's keepalive (60 s, then
    /// every 15 s; 4 probes) declares it dead 120 s after the last segment
    /// heard, so 105 to 120 s after the cut; the guest reads a reset (not
    /// the FIN a keepalive expiry's Eof would become) and the counters say
    /// the flow failed timed out.
    #[tokio::test(start_paused = true)]
    async fn a_vanished_host_peer_resets_the_guests_idle_flow() {
        use conflux_flow::FlowExt;
        use conflux_testkit::within;

        let mut net = Idle::new(UsernetConfig::new());
        let (mut flow, _srv) = net.idle_flow().await;
        net.host_link.set_up(false);
        let cut = tokio::time::Instant::now();
        let read = within("the guest's end", Duration::from_secs(130), flow.read()).await;
        let took = cut.elapsed();
        assert!(read.as_ref().is_err_and(|e| e.is_reset()), "the guest gets a reset: {read:?}");
        let deadline = conflux_tcp_host::keepalive_deadline(&crate::DEFAULT_HOST_KEEPALIVE);
        assert!(took > Duration::from_secs(104) && took <= deadline + Duration::from_secs(1), "ended after {took:?}");
        net.flow_gone(Duration::from_secs(5)).await;
        let s = net.usernet.stats();
        assert_eq!((s.flows_total, s.flows_failed, s.flows_timed_out), (1, 1, 1), "{s}");
        net.usernet.shutdown().await;
    }

    #[tokio::test]
    async fn a_vm_guest_is_never_told_an_mtu_above_its_carriers() {
        use conflux_flow::FlowExt;
        for (config_mtu, device_mtu, told) in [(65520, 1500, 1500u32), (1400, 1500, 1400)] {
            let (ours, mut hypervisor) = conflux_flow::pipe(64 * 1024);
            let config = UsernetConfig::new().mtu(config_mtu).dns_upstream("127.0.0.1:53".parse().unwrap());
            let usernet = Usernet::spawn_vm(config, crate::StreamDevice::new(ours, device_mtu)).unwrap();
            let read = tokio::time::timeout(Duration::from_secs(5), hypervisor.read()).await;
            let chunk = read.expect("the first advertisement in time").unwrap().unwrap();
            // After the 4-byte length: an RA whose third option is the MTU.
            let ra = &chunk[4..];
            assert_eq!((ra[54], ra[78], ra[79]), (134, 5, 1), "{ra:02x?}");
            assert_eq!(u32::from_be_bytes([ra[82], ra[83], ra[84], ra[85]]), told);
            // The last option: RDNSS (RFC 8106) naming fd00::3.
            let rdnss = &ra[ra.len() - 24..];
            assert_eq!(rdnss[..2], [25, 3], "{ra:02x?}");
            assert_eq!(rdnss[8..], "fd00::3".parse::<std::net::Ipv6Addr>().unwrap().octets());
            usernet.shutdown().await;
        }
    }
}

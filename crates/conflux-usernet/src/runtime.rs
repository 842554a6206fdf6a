//! The forwarder at work: a userspace stack over the guest's frame device,
//! its guest connections forwarded to host sockets, port forwards into it.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use conflux_flow::FlowExt;
use conflux_netstack::{FrameDevice, NetFlow, NetStack, StackConfig, TapDevice, in_netns};
use conflux_tcp::{ListenError, TcpFlow, TcpStack};
use conflux_tcp_host::HostStack;
use tokio::task::JoinHandle;

use crate::config::{PortForward, Proto, UsernetConfig};
use crate::forward::TcpForwarder;
use crate::inbound::TcpPortForward;
use crate::policy::Policy;
use crate::resolv::resolv_conf_upstream;
use crate::stats::{Stats, StatsSnapshot};

/// How long [`Usernet::shutdown`] waits for the device to be released
/// after the flows were closed.
const RELEASE_WAIT: Duration = Duration::from_secs(2);

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
    /// The stack refused the transparent listener.
    #[error("listening for the guest's connections: {0}")]
    Listen(ListenError),
    /// A port forward's host address could not be listened on.
    #[error("port forward {forward}: {source}")]
    Forward {
        /// The forward.
        forward: PortForward,
        /// Why.
        source: ListenError,
    },
    /// A UDP port forward: not supported yet.
    #[error("port forward {0}: UDP forwards are not supported yet")]
    UdpForward(PortForward),
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
    tasks: Vec<JoinHandle<()>>,
    transparent_port: u16,
}

impl std::fmt::Debug for Usernet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Usernet").field("stack", &self.stack).field("stats", &self.stats()).finish_non_exhaustive()
    }
}

/// The stack's configuration for `config`: the gateway addresses are its
/// own.
fn stack_config(config: &UsernetConfig) -> StackConfig {
    let mut sc = StackConfig::new().buffers(512 * 1024, 512 * 1024).max_half_open(256);
    if config.network4.addr().is_ipv4() {
        sc = sc.ipv4(config.gateway4, config.network4.prefix());
    }
    if config.network6.addr().is_ipv6() {
        sc = sc.ipv6(config.gateway6, config.network6.prefix());
    }
    sc
}

impl Usernet {
    /// Serves `config` over `device` (spawns its tasks; call within a tokio
    /// runtime). The DNS upstream, when `config` names none, is the first
    /// nameserver of the host's `/etc/resolv.conf`.
    pub fn spawn<D: FrameDevice>(config: UsernetConfig, device: D) -> Result<Usernet, UsernetError> {
        if let Some(f) = config.forwards.iter().find(|f| f.proto == Proto::Udp) {
            return Err(UsernetError::UdpForward(*f));
        }
        let upstream = match config.dns_upstream {
            Some(up) => Some(up),
            None => std::fs::read_to_string("/etc/resolv.conf").ok().and_then(|t| resolv_conf_upstream(&t)),
        };
        let policy = Policy::new(&config).with_dns_upstream(upstream);
        let stack = NetStack::new(stack_config(&config), device);
        let stats = Arc::new(Stats::default());
        let host = HostStack::new();
        let forwarder = Arc::new(TcpForwarder::new(policy, host.clone(), stats.clone()));
        let listening = stack
            .listen_transparent(None, move |flow: NetFlow| {
                let forwarder = forwarder.clone();
                async move { forward(&forwarder, flow).await }
            })
            .map_err(UsernetError::Listen)?;
        let mut usernet = Usernet { stack, stats, tasks: Vec::new(), transparent_port: listening.port() };
        for forward in &config.forwards {
            let to = SocketAddr::new(config.guest4.into(), forward.guest_port);
            let pf = TcpPortForward::bind(&host, forward.host, usernet.stack.clone(), to, usernet.stats.clone())
                .map_err(|source| UsernetError::Forward { forward: *forward, source })?;
            tracing::info!(from = %pf.local_addr(), %to, "port forward");
            usernet.tasks.push(tokio::spawn(pf.serve()));
        }
        Ok(usernet)
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
                // Told apart from the open's error by its kind.
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
        tracing::info!(
            %interface,
            netns = %path.display(),
            gateway = %config.gateway4,
            dns = %config.dns4,
            guest = %config.guest4,
            mtu = config.mtu,
            "serving"
        );
        Usernet::spawn(config, tap)
    }

    /// The counters now.
    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    /// The live counters, readable after [`shutdown`](Usernet::shutdown) too.
    pub fn counters(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// Stops: no new guest connection is taken, port forwards stop
    /// listening, open flows get the stack's disconnect grace (2 s) and are
    /// then aborted, and the device is released (a TAP device disappears).
    pub async fn shutdown(self) {
        let Usernet { stack, tasks, transparent_port, .. } = self;
        for task in &tasks {
            task.abort();
        }
        stack.unlisten(transparent_port);
        stack.disconnect().await;
        let weak = stack.downgrade();
        drop(stack);
        // Flows still held by relays end with the aborts; the driver then
        // releases the device.
        let deadline = tokio::time::Instant::now() + RELEASE_WAIT;
        while weak.upgrade().is_some() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for task in tasks {
            let _ = task.await;
        }
    }
}

/// A configuring step's failure, carried through `in_netns`'s io::Error.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct ConfigureFailed(io::Error);

/// Configures the interface from inside the namespace (the calling thread
/// is in it): loopback up, the guest's IPv4 address, MTU, up, the default
/// route via the gateway.
fn configure(config: &UsernetConfig) -> io::Result<()> {
    let dev = config.interface.as_str();
    let addr = format!("{}/{}", config.guest4, config.network4.prefix());
    let mtu = config.mtu.to_string();
    let gw = config.gateway4.to_string();
    let steps: [&[&str]; 4] = [
        &["link", "set", "dev", "lo", "up"],
        &["link", "set", "dev", dev, "mtu", &mtu, "up"],
        &["addr", "add", &addr, "dev", dev],
        &["route", "add", "default", "via", &gw, "dev", dev],
    ];
    for args in steps {
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
    }
    Ok(())
}

/// One guest connection: the host connection, then the relay; refused
/// (policy or host) -> the guest's flow is aborted (an RST).
async fn forward(forwarder: &TcpForwarder<HostStack>, mut flow: NetFlow) {
    let (dst, guest) = (flow.src(), flow.dst());
    match forwarder.connect(guest, dst).await {
        Ok(host) => {
            forwarder.relay(flow, host, guest, dst).await;
        }
        Err(_) => {
            let _ = flow.abort().await;
        }
    }
}

//! `conflux usernet`: user-mode networking for one guest, served by
//! conflux-usernet's forwarder from here. The guest is either
//! - a network namespace (`--netns PID|PATH [--configure]`, slirp4netns's
//!   job): a TAP device made inside it; or
//! - a VM whose hypervisor carries the guest NIC's Ethernet frames in QEMU's
//!   stream framing (a 4-byte big-endian length before each frame) over a
//!   flow of any scheme: `--listen URI` serves each hypervisor that
//!   connects, one at a time (QEMU `-netdev stream`, a VMM over vsock or
//!   hybrid vsock); `--connect URI` connects to a frame server (passt,
//!   gvisor-tap-vsock) and reconnects after an end (see [`vm`]).
//!
//! Port forwards, `--allow`, `--host-loopback`, `--dns-upstream` and
//! `--mtu` apply to every guest. SIGINT/SIGTERM stop every mode the same
//! way: no new guest connection, open flows get `--grace`, then the rest is
//! aborted (a second signal: at once); SIGUSR1 prints the counters.

mod vm;

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use conflux_uri::Uri;
use conflux_usernet::{Proto, Usernet, UsernetConfig};
use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::endpoints::Endpoints;
use crate::error::CliError;
use crate::signals::Signals;

/// How often `--netns PID` checks whether the process is still there, and
/// the grace period whether the open flows have ended.
const POLL: Duration = Duration::from_millis(100);

/// Which namespace: a process's (`--netns PID`, served while it lives) or a
/// path (`/run/netns/NAME`, `/proc/PID/ns/net`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    Pid(u32),
    Path(PathBuf),
}

impl Target {
    /// A number is a PID; anything else a path.
    pub(crate) fn parse(text: &str) -> Target {
        match text.parse::<u32>() {
            Ok(pid) => Target::Pid(pid),
            Err(_) => Target::Path(PathBuf::from(text)),
        }
    }

    fn path(&self) -> PathBuf {
        match self {
            Target::Pid(pid) => PathBuf::from(format!("/proc/{pid}/ns/net")),
            Target::Path(p) => p.clone(),
        }
    }
}

/// The guest `conflux usernet` serves: exactly one of `--netns`,
/// `--listen`, `--connect`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Guest {
    /// A namespace, a TAP device in it.
    Netns(Target),
    /// A VM whose hypervisor connects to this listening URI.
    Listen(Uri),
    /// A VM's frames from the server at this URI.
    Connect(Uri),
}

/// The guest-selecting arguments as given on the command line.
#[derive(Debug, Clone, Default)]
pub(crate) struct GuestArgs {
    pub(crate) netns: Option<String>,
    pub(crate) listen: Option<String>,
    pub(crate) connect: Option<String>,
    pub(crate) configure: bool,
    pub(crate) interface: Option<String>,
}

impl Guest {
    /// Checks the rules between the arguments: exactly one guest; the
    /// TAP's options (`--configure`, `--interface`) only with `--netns`;
    /// a URI that parses (and, for `--connect`, one that connects).
    pub(crate) fn from_args(args: &GuestArgs) -> Result<Guest, CliError> {
        let given: Vec<&str> = [("--netns", &args.netns), ("--listen", &args.listen), ("--connect", &args.connect)]
            .into_iter()
            .filter_map(|(name, v)| v.as_ref().map(|_| name))
            .collect();
        match given.as_slice() {
            [] => {
                return Err(CliError::usage("usernet needs a guest: --netns PID|PATH, --listen URI or --connect URI"));
            }
            [_] => {}
            [first, second, ..] => {
                return Err(CliError::usage(format!(
                    "{first} and {second}: give only one of --netns, --listen, --connect"
                )));
            }
        }
        if args.netns.is_none() {
            let mode = given[0];
            if args.configure {
                return Err(CliError::usage(format!(
                    "--configure is for --netns only (with {mode}, the VM configures its own interface)"
                )));
            }
            if args.interface.is_some() {
                return Err(CliError::usage(format!("--interface is for --netns only (not {mode})")));
            }
        }
        if let Some(name) = &args.interface
            && (name.is_empty() || name.len() > 15)
        {
            return Err(CliError::usage(format!("--interface {name:?}: 1 to 15 bytes")));
        }
        let guest = if let Some(netns) = &args.netns {
            Guest::Netns(Target::parse(netns))
        } else if let Some(text) = &args.listen {
            Guest::Listen(parse_uri("--listen", text)?)
        } else {
            let text = args.connect.as_deref().unwrap_or_default();
            let uri = parse_uri("--connect", text)?;
            if uri.listen() {
                return Err(CliError::usage(format!(
                    "--connect {text}: a listening URI (use --listen to serve a hypervisor that connects)"
                )));
            }
            Guest::Connect(uri)
        };
        Ok(guest)
    }
}

/// Parses a guest URI; a bad one is a usage error naming the part.
fn parse_uri(flag: &str, text: &str) -> Result<Uri, CliError> {
    text.parse().map_err(|e| CliError::usage(format!("bad {flag} URI `{text}`: {e}")))
}

/// Whether process `pid` is gone (no such process, or a zombie).
fn process_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // `pid (comm) S ...`: the state follows the last ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_none_or(|state| matches!(state, "Z" | "X" | "x")),
        Err(_) => true,
    }
}

/// Serves `guest` until SIGINT/SIGTERM; prints the counters on stderr on
/// SIGUSR1 and at the end.
pub(crate) async fn run(ep: Endpoints, guest: Guest, config: UsernetConfig, grace: Duration) -> Result<(), CliError> {
    match guest {
        Guest::Netns(target) => run_netns(target, config, grace).await,
        Guest::Listen(uri) => vm::listen(ep, uri, config, grace).await,
        Guest::Connect(uri) => {
            ep.check_connect(&uri)?;
            vm::connect(ep, uri, config, grace).await
        }
    }
}

/// Serves the namespace until a signal or, for `--netns PID`, until that
/// process exits (the namespace is gone: at once).
async fn run_netns(target: Target, config: UsernetConfig, grace: Duration) -> Result<(), CliError> {
    let path = target.path();
    if let Target::Pid(pid) = target
        && process_gone(pid)
    {
        return Err(CliError::usage(format!("--netns {pid}: no such process")));
    }
    let mut control = Control::new()?;
    let usernet = Usernet::spawn_netns(config, &path).map_err(|e| CliError::runtime(e.to_string()))?;
    let counters = usernet.counters();
    let exited = async move {
        let Target::Pid(pid) = target else { return std::future::pending().await };
        let mut poll = tokio::time::interval(POLL);
        loop {
            poll.tick().await;
            if process_gone(pid) {
                tracing::info!(pid, "the namespace's process exited");
                return Ended::ProcessExited;
            }
        }
    };
    serve(&usernet, &mut control, grace, exited).await;
    usernet.shutdown().await;
    eprintln!("usernet: {}", counters.snapshot());
    Ok(())
}

/// Checks the port forwards before any guest is there: a host address in
/// use is named (a VM's forwarder starts only when its hypervisor
/// connects; this says at once what would fail then).
fn check_forwards(config: &UsernetConfig) -> Result<(), CliError> {
    for forward in &config.forwards {
        let bound = match forward.proto {
            Proto::Tcp => std::net::TcpListener::bind(forward.host).map(drop),
            Proto::Udp => std::net::UdpSocket::bind(forward.host).map(drop),
        };
        bound.map_err(|e| CliError::runtime(format!("-p {forward}: cannot listen on {}: {e}", forward.host)))?;
    }
    Ok(())
}

/// The signals a serving `conflux usernet` answers.
pub(crate) struct Control {
    /// SIGINT, SIGTERM: stop.
    signals: Signals,
    /// SIGUSR1: print the counters.
    usr1: Signal,
}

impl Control {
    pub(crate) fn new() -> Result<Control, CliError> {
        let usr1 = signal(SignalKind::user_defined1())
            .map_err(|e| CliError::runtime(format!("cannot handle SIGUSR1: {e}")))?;
        Ok(Control { signals: Signals::new()?, usr1 })
    }

    /// The next SIGINT or SIGTERM (a SIGUSR1 meanwhile prints `counters`, when there are).
    async fn stop_signal(&mut self, counters: Option<&conflux_usernet::Stats>) {
        loop {
            tokio::select! {
                () = self.signals.recv() => return,
                _ = self.usr1.recv() => match counters {
                    Some(c) => eprintln!("usernet: {}", c.snapshot()),
                    None => eprintln!("usernet: no guest"),
                },
            }
        }
    }
}

/// Why serving one guest ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ended {
    /// SIGINT or SIGTERM.
    Signal,
    /// The `--netns PID` process exited.
    ProcessExited,
    /// The VM's frame carrier ended (the hypervisor closed it, vanished
    /// mid-frame, sent a bad frame, or the flow failed): why.
    Device(String),
}

/// Serves `usernet` until `end` resolves or a stop signal; after a signal,
/// refuses new connections and lets open flows finish for `grace` (or until
/// a second signal, or `end`). The caller then shuts it down (every flow of
/// that guest closed, its device released).
async fn serve(usernet: &Usernet, control: &mut Control, grace: Duration, end: impl Future<Output = Ended>) -> Ended {
    let counters = usernet.counters();
    let mut end = std::pin::pin!(end);
    let ended = tokio::select! {
        () = control.stop_signal(Some(&counters)) => Ended::Signal,
        e = &mut end => e,
    };
    if ended == Ended::Signal && counters.snapshot().flows_open > 0 {
        usernet.stop_accepting();
        tracing::info!(open = counters.snapshot().flows_open, ?grace, "stopping: letting open flows finish");
        let drained = async {
            let mut poll = tokio::time::interval(POLL);
            while counters.snapshot().flows_open > 0 {
                poll.tick().await;
            }
        };
        tokio::select! {
            () = control.stop_signal(Some(&counters)) => {}
            () = tokio::time::sleep(grace) => {}
            () = drained => {}
            _ = &mut end => {}
        }
    }
    ended
}

#[cfg(test)]
mod tests;

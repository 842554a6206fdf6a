//! `conflux usernet --listen URI` and `--connect URI`: a VM guest whose
//! hypervisor carries the guest NIC's Ethernet frames in QEMU's stream
//! framing over a flow of any scheme (unix, tcp, vsock, fc-vsock, hyperkit;
//! `?framing=shutdown` on any of them).
//!
//! Each carrier flow is one guest: a `conflux_usernet::StreamDevice` on it,
//! served by `Usernet::spawn_vm` (DHCPv4, router advertisements, ARP for
//! the DNS address in front of the stack) until the device ends (the
//! hypervisor closed the carrier, vanished inside a frame, sent a bad
//! frame), which is logged with the reason; every flow of that guest is
//! then closed. `--listen` then accepts the next hypervisor (one guest at a
//! time: a second one waits in the listen backlog; `stdio:`, a listener
//! of one flow, serves one guest and exits); `--connect` connects
//! again after a backoff (100 ms, doubling to 5 s; back to 100 ms after a
//! guest that lasted 10 s).

use std::time::Duration;

use conflux_flow::BoxFlow;
use conflux_mimic::Accepted;
use conflux_uri::Uri;
use conflux_usernet::{StatsSnapshot, StreamDevice, Usernet, UsernetConfig};
use tokio::time::Instant;

use super::{Control, Ended, check_forwards, serve};
use crate::endpoints::Endpoints;
use crate::error::CliError;

/// The first reconnect delay of `--connect`.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// The longest reconnect delay of `--connect`.
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A guest served this long resets the reconnect delay.
const BACKOFF_RESET: Duration = Duration::from_secs(10);
/// The bound on each connect of `--connect` (unless the URI has its own).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The pause after a failed accept (out of descriptors, ...).
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// The reconnect delays of `--connect`: doubling from 100 ms to 5 s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Backoff {
    next: Duration,
}

impl Backoff {
    pub(super) fn new() -> Backoff {
        Backoff { next: BACKOFF_MIN }
    }

    /// The delay before the next attempt; the one after doubles, up to the cap.
    pub(super) fn delay(&mut self) -> Duration {
        let now = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        now
    }

    /// A guest was served for `lasted`: a long one starts the delays over.
    pub(super) fn served(&mut self, lasted: Duration) {
        if lasted >= BACKOFF_RESET {
            self.next = BACKOFF_MIN;
        }
    }
}

/// Serves each hypervisor that connects to `uri`, one at a time, until
/// SIGINT/SIGTERM.
pub(super) async fn listen(ep: Endpoints, uri: Uri, config: UsernetConfig, grace: Duration) -> Result<(), CliError> {
    check_forwards(&config)?;
    let mut control = Control::new()?;
    let mut listener = ep.listen(&uri).await?;
    let local = listener.local_uri().clone();
    tracing::info!("listening on {local}: a VM's frames (QEMU stream framing), one guest at a time");
    let mut last = None;
    let mut id = 0u64;
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = control.stop_signal(None) => break,
        };
        let Accepted { flow, peer } = match accepted {
            Ok(a) => a,
            // A listener of one flow (`stdio:`) after its guest: done.
            Err(e) if e.kind() == std::io::ErrorKind::NotConnected && id > 0 => {
                tracing::info!("{e}: stopping");
                break;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotConnected => {
                return Err(CliError::runtime(format!("listening on {local}: {e}")));
            }
            Err(e) => {
                tracing::warn!("accept on {local}: {e}");
                tokio::select! {
                    () = tokio::time::sleep(ACCEPT_RETRY) => continue,
                    () = control.stop_signal(None) => break,
                }
            }
        };
        id += 1;
        // A hypervisor's Unix socket has no name: say where it came in.
        let peer = if peer.ends_with("(unnamed)") { format!("{local}") } else { peer };
        let (ended, stats) = guest(id, &peer, flow, &config, &mut control, grace).await?;
        last = Some(stats);
        if ended == Ended::Signal {
            break;
        }
        tracing::info!("waiting for the next guest on {local}");
    }
    print_counters(last);
    Ok(())
}

/// Connects to `uri` and serves the guest on it; after an end, connects
/// again (with a backoff) until SIGINT/SIGTERM. The first connect failing
/// is an error (exit 1); later ones are logged and retried.
pub(super) async fn connect(ep: Endpoints, uri: Uri, config: UsernetConfig, grace: Duration) -> Result<(), CliError> {
    check_forwards(&config)?;
    let mut control = Control::new()?;
    let mut backoff = Backoff::new();
    let mut last = None;
    let mut id = 0u64;
    loop {
        let dialled = tokio::select! {
            d = ep.connect(&uri, Some(CONNECT_TIMEOUT)) => d,
            () = control.stop_signal(None) => break,
        };
        let delay = match dialled {
            Ok(flow) => {
                id += 1;
                let started = Instant::now();
                let (ended, stats) = guest(id, &uri.to_string(), flow, &config, &mut control, grace).await?;
                last = Some(stats);
                if ended == Ended::Signal {
                    break;
                }
                backoff.served(started.elapsed());
                let delay = backoff.delay();
                tracing::info!("connecting to {uri} again in {delay:?}");
                delay
            }
            Err(e) if id == 0 => return Err(e),
            Err(e) => {
                let delay = backoff.delay();
                tracing::warn!("{e}; trying again in {delay:?}");
                delay
            }
        };
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = control.stop_signal(None) => break,
        }
    }
    print_counters(last);
    Ok(())
}

/// The last guest's counters on stderr, as `--netns` prints them at the end.
fn print_counters(last: Option<StatsSnapshot>) {
    match last {
        Some(stats) => eprintln!("usernet: {stats}"),
        None => eprintln!("usernet: no guest was served"),
    }
}

/// Serves guest `id` (its hypervisor `peer`) on `flow` until its device
/// ends or a signal, then closes every flow of it; logs its start and end.
async fn guest(
    id: u64,
    peer: &str,
    flow: BoxFlow,
    config: &UsernetConfig,
    control: &mut Control,
    grace: Duration,
) -> Result<(Ended, StatsSnapshot), CliError> {
    let device = StreamDevice::new(flow, config.mtu);
    let usernet = Usernet::spawn_vm(config.clone(), device).map_err(|e| CliError::runtime(e.to_string()))?;
    let (gateway, dns, guest, mtu) = (config.gateway4, config.dns4, config.guest4, config.mtu);
    tracing::info!(%gateway, %dns, %guest, mtu, "guest {id} from {peer}: serving");
    let started = Instant::now();
    let end = async { Ended::Device(usernet.device_ended().await.message) };
    let ended = serve(&usernet, control, grace, end).await;
    let counters = usernet.counters();
    usernet.shutdown().await;
    let stats = counters.snapshot();
    let lasted = started.elapsed();
    match &ended {
        Ended::Device(why) => tracing::info!("guest {id} from {peer} ended after {lasted:.1?}: {why}; {stats}"),
        _ => tracing::info!("guest {id} from {peer} stopped after {lasted:.1?}; {stats}"),
    }
    Ok((ended, stats))
}

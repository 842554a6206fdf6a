//! `conflux relay FROM TO`: accept flows on FROM, connect each to TO, proxy
//! both ways.
//!
//! Each relayed flow ends in one of these ways, logged in one line:
//! - `eof`: both directions reached Eof (each Eof passed on as a half-close,
//!   `shutdown(Write)`, of the other side), then both sides were closed;
//! - `reset`: one side was reset; the other side is aborted (conflux-flow's
//!   `abort`: an RST with linger 0 on kernel TCP; on a framed flow the
//!   socket is released without Close or ShutdownWrite, which the framed
//!   peer reads as a reset; AF_UNIX and AF_VSOCK have no RST, so a raw
//!   Unix or vsock peer sees its socket end);
//! - `timeout`: nothing moved either way for `--idle-timeout`: both aborted;
//! - `error`: connecting to TO failed (the accepted side is aborted) or a
//!   side failed otherwise (both aborted);
//! - `aborted`: the relay was stopped (SIGINT/SIGTERM) and the flow was
//!   still open after the grace period.

use std::fmt;
use std::future::pending;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use conflux_flow::{BoxFlow, FlowExt, ProxyError, proxy};
use conflux_mimic::Accepted;
use conflux_uri::Uri;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::endpoints::{Endpoints, chain};
use crate::error::CliError;
use crate::meter::{FlowMeter, Metered, Totals};
use crate::{progress, signals::Signals};

/// What `conflux relay` was asked to do besides FROM and TO.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RelayOptions {
    /// Flows relayed at once; more wait in the listener's backlog.
    pub(crate) max_flows: Option<usize>,
    /// A flow that moves no byte for this long is aborted.
    pub(crate) idle_timeout: Option<Duration>,
    /// Bound on each connect to TO.
    pub(crate) connect_timeout: Option<Duration>,
    /// Relay one flow, then exit with its outcome.
    pub(crate) once: bool,
    /// Show the live line on stderr.
    pub(crate) progress: bool,
    /// After SIGINT/SIGTERM, how long open flows may still run.
    pub(crate) grace: Duration,
}

/// How a relayed flow ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    Eof,
    Reset,
    Timeout,
    Error,
    Aborted,
}

impl fmt::Display for End {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            End::Eof => "eof",
            End::Reset => "reset",
            End::Timeout => "timeout",
            End::Error => "error",
            End::Aborted => "aborted",
        })
    }
}

/// One flow's outcome: how it ended and, unless cleanly, why.
#[derive(Debug)]
struct FlowEnd {
    id: u64,
    end: End,
    detail: Option<String>,
}

/// Runs the relay until the listener ends, `--once` is done, or a signal
/// stopped it and every flow finished (or the grace period ran out).
pub(crate) async fn run(ep: Endpoints, from: Uri, to: Uri, opts: RelayOptions) -> Result<(), CliError> {
    ep.check_connect(&to)?;
    let mut signals = Signals::new()?;
    let mut listener = ep.listen(&from).await?;
    tracing::info!("listening on {}, relaying to {to}", listener.local_uri());
    let totals = Arc::new(Totals::default());
    let progress = opts.progress.then(|| tokio::spawn(progress::run(totals.clone())));
    let limit = Arc::new(Semaphore::new(opts.max_flows.unwrap_or(Semaphore::MAX_PERMITS).max(1)));
    let (abort_tx, abort_rx) = watch::channel(false);
    let mut tasks: JoinSet<FlowEnd> = JoinSet::new();
    let mut signalled = false;
    let mut next_id = 0u64;
    let mut first: Option<FlowEnd> = None;
    loop {
        while let Some(done) = tasks.try_join_next() {
            note_first(&mut first, done);
        }
        let permit = tokio::select! {
            p = limit.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            _ = signals.recv() => { signalled = true; break; }
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = signals.recv() => { signalled = true; break; }
        };
        match accepted {
            Ok(accepted) => {
                next_id += 1;
                totals.accepted.fetch_add(1, Ordering::Relaxed);
                let flow =
                    relay_flow(next_id, accepted, ep.clone(), to.clone(), opts, totals.clone(), abort_rx.clone());
                tasks.spawn(async move {
                    let end = flow.await;
                    drop(permit);
                    end
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotConnected => break,
            Err(e) => {
                // EMFILE and friends: say so, and do not spin.
                tracing::warn!("accept on {from}: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        }
        if opts.once {
            break;
        }
    }
    drop(listener);
    if !signalled {
        tokio::select! {
            () = join_all(&mut tasks, &mut first) => {}
            _ = signals.recv() => signalled = true,
        }
    }
    let mut unfinished = 0;
    if signalled && !tasks.is_empty() {
        tracing::info!("stopping: {} flow(s) open, {:?} to finish", totals.open.load(Ordering::Relaxed), opts.grace);
        if tokio::time::timeout(opts.grace, join_all(&mut tasks, &mut first)).await.is_err() {
            unfinished = tasks.len();
            let _ = abort_tx.send(true);
            join_all(&mut tasks, &mut first).await;
        }
    }
    if let Some(p) = progress {
        p.abort();
        progress::finish();
    }
    if unfinished > 0 {
        return Err(CliError::runtime(format!("{unfinished} flow(s) aborted after the {:?} grace period", opts.grace)));
    }
    match first {
        Some(FlowEnd { id, end, detail }) if opts.once && end != End::Eof => Err(CliError::runtime(format!(
            "flow {id} ended with {end}{}",
            detail.map(|d| format!(": {d}")).unwrap_or_default()
        ))),
        _ => Ok(()),
    }
}

fn note_first(first: &mut Option<FlowEnd>, done: Result<FlowEnd, tokio::task::JoinError>) {
    let end = done.unwrap_or_else(|e| FlowEnd { id: 0, end: End::Error, detail: Some(format!("relay task: {e}")) });
    if first.as_ref().is_none_or(|f| end.id < f.id) {
        *first = Some(end);
    }
}

async fn join_all(tasks: &mut JoinSet<FlowEnd>, first: &mut Option<FlowEnd>) {
    while let Some(done) = tasks.join_next().await {
        note_first(first, done);
    }
}

/// Resolves once the relay aborts every flow; never if it does not.
async fn aborted(rx: &mut watch::Receiver<bool>) {
    if rx.wait_for(|a| *a).await.is_err() {
        pending::<()>().await;
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => pending().await,
    }
}

enum Outcome {
    Done(Result<(), ProxyError>),
    Idle,
    Aborted,
}

/// Relays one accepted flow to a new connection to `to`; logs its end.
async fn relay_flow(
    id: u64,
    accepted: Accepted,
    ep: Endpoints,
    to: Uri,
    opts: RelayOptions,
    totals: Arc<Totals>,
    mut abort: watch::Receiver<bool>,
) -> FlowEnd {
    totals.open.fetch_add(1, Ordering::Relaxed);
    let started = Instant::now();
    let meter = FlowMeter::new(totals.clone());
    let peer = accepted.peer;
    let mut a = Metered::new(accepted.flow, meter.clone(), true);
    let connected = tokio::select! {
        c = ep.connect(&to, opts.connect_timeout) => c,
        () = aborted(&mut abort) => Err(CliError::runtime("stopped while connecting")),
    };
    let (end, detail) = match connected {
        Err(e) => {
            let _ = a.abort().await;
            (End::Error, Some(e.to_string()))
        }
        Ok(b) => {
            let mut b: Metered<BoxFlow> = Metered::new(b, meter.clone(), false);
            let outcome = {
                let relaying = proxy(&mut a, &mut b);
                tokio::pin!(relaying);
                loop {
                    let idle_deadline = opts.idle_timeout.map(|d| meter.last_activity() + d);
                    tokio::select! {
                        r = &mut relaying => break Outcome::Done(r.map(|_| ())),
                        () = sleep_until(idle_deadline) => {
                            if opts.idle_timeout.is_some_and(|t| meter.last_activity() + t <= Instant::now()) {
                                break Outcome::Idle;
                            }
                        }
                        () = aborted(&mut abort) => break Outcome::Aborted,
                    }
                }
            };
            finish(outcome, &mut a, &mut b, opts.idle_timeout).await
        }
    };
    let (up, down) = meter.bytes();
    let duration = started.elapsed();
    match &detail {
        None => tracing::info!(id, from = %peer, to = %to, up, down, ?duration, end = %end, "flow ended"),
        Some(why) => {
            tracing::info!(id, from = %peer, to = %to, up, down, ?duration, end = %end, why = %why, "flow ended")
        }
    }
    totals.open.fetch_sub(1, Ordering::Relaxed);
    FlowEnd { id, end, detail }
}

/// Closes or aborts both sides as the outcome says.
async fn finish(
    outcome: Outcome,
    a: &mut Metered<BoxFlow>,
    b: &mut Metered<BoxFlow>,
    idle: Option<Duration>,
) -> (End, Option<String>) {
    match outcome {
        Outcome::Done(Ok(())) => {
            let (ra, rb) = tokio::join!(a.close(), b.close());
            if let Err(e) = ra.and(rb) {
                tracing::debug!("close after eof: {e}");
            }
            (End::Eof, None)
        }
        Outcome::Done(Err(e)) => {
            // proxy aborted the other side already when this is a reset.
            let end = if e.source.is_reset() { End::Reset } else { End::Error };
            let _ = tokio::join!(a.abort(), b.abort());
            let side = match (e.direction, e.side) {
                (conflux_flow::Direction::AToB, conflux_flow::Side::Source)
                | (conflux_flow::Direction::BToA, conflux_flow::Side::Destination) => "FROM",
                _ => "TO",
            };
            (end, Some(format!("{side} side: {}", chain(&e.source))))
        }
        Outcome::Idle => {
            let _ = tokio::join!(a.abort(), b.abort());
            (End::Timeout, Some(format!("idle for {:?}", idle.unwrap_or_default())))
        }
        Outcome::Aborted => {
            let _ = tokio::join!(a.abort(), b.abort());
            (End::Aborted, Some("the grace period ran out".to_owned()))
        }
    }
}

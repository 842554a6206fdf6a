//! `conflux usernet --netns PID|PATH [--configure] ...`: user-mode
//! networking for a network namespace, slirp4netns's job: a TAP device made
//! inside the namespace, served by conflux-usernet's forwarder from here.

use std::path::PathBuf;
use std::time::Duration;

use conflux_usernet::{Usernet, UsernetConfig};
use tokio::signal::unix::{SignalKind, signal};

use crate::error::CliError;
use crate::signals::Signals;

/// How often `--netns PID` checks whether the process is still there.
const PID_POLL: Duration = Duration::from_millis(100);

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

/// Serves until SIGINT/SIGTERM (then refuses new connections and lets
/// open flows finish for `grace`, or until a second signal) or, for
/// `--netns PID`, until that process exits (the namespace is gone: at
/// once); prints the counters on stderr on SIGUSR1 and at the end.
pub(crate) async fn run(target: Target, config: UsernetConfig, grace: Duration) -> Result<(), CliError> {
    let path = target.path();
    if let Target::Pid(pid) = target
        && process_gone(pid)
    {
        return Err(CliError::usage(format!("--netns {pid}: no such process")));
    }
    let mut signals = Signals::new()?;
    let mut usr1 =
        signal(SignalKind::user_defined1()).map_err(|e| CliError::runtime(format!("cannot handle SIGUSR1: {e}")))?;
    let usernet = Usernet::spawn_netns(config, &path).map_err(|e| CliError::runtime(e.to_string()))?;
    let counters = usernet.counters();
    let mut poll = tokio::time::interval(PID_POLL);
    let signalled = loop {
        tokio::select! {
            () = signals.recv() => break true,
            _ = usr1.recv() => eprintln!("usernet: {}", counters.snapshot()),
            _ = poll.tick() => {
                if let Target::Pid(pid) = target && process_gone(pid) {
                    tracing::info!(pid, "the namespace's process exited");
                    break false;
                }
            }
        }
    };
    if signalled && counters.snapshot().flows_open > 0 {
        usernet.stop_accepting();
        tracing::info!(open = counters.snapshot().flows_open, ?grace, "stopping: letting open flows finish");
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            tokio::select! {
                () = signals.recv() => break,
                _ = usr1.recv() => eprintln!("usernet: {}", counters.snapshot()),
                () = tokio::time::sleep_until(deadline) => break,
                _ = poll.tick() => {
                    if counters.snapshot().flows_open == 0 {
                        break;
                    }
                }
            }
        }
    }
    usernet.shutdown().await;
    eprintln!("usernet: {}", counters.snapshot());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_pids_and_the_rest_paths() {
        assert_eq!(Target::parse("4242"), Target::Pid(4242));
        assert_eq!(Target::parse("4242").path(), PathBuf::from("/proc/4242/ns/net"));
        assert_eq!(Target::parse("/run/netns/x"), Target::Path("/run/netns/x".into()));
        assert!(!process_gone(std::process::id()));
        assert!(process_gone(u32::MAX));
    }
}

//! SIGINT and SIGTERM as one stream of "stop" requests.

use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::error::CliError;

/// Both stop signals, installed once.
pub(crate) struct Signals {
    int: Signal,
    term: Signal,
}

impl Signals {
    pub(crate) fn new() -> Result<Signals, CliError> {
        let install = |kind| signal(kind).map_err(|e| CliError::runtime(format!("cannot handle signals: {e}")));
        Ok(Signals { int: install(SignalKind::interrupt())?, term: install(SignalKind::terminate())? })
    }

    /// The next SIGINT or SIGTERM.
    pub(crate) async fn recv(&mut self) {
        tokio::select! {
            _ = self.int.recv() => tracing::debug!("SIGINT"),
            _ = self.term.recv() => tracing::debug!("SIGTERM"),
        }
    }
}

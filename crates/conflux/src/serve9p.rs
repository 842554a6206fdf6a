//! `conflux serve-9p LISTEN-URI DIR [--read-only]`: conflux-9p's server over
//! a host directory confined to DIR, one session per accepted flow.

use std::path::PathBuf;

use conflux_9p::{HostFs, Server};
use conflux_uri::Uri;
use tokio::task::JoinSet;

use crate::endpoints::{Endpoints, chain};
use crate::error::CliError;
use crate::signals::Signals;

/// Serves until SIGINT/SIGTERM (or until a listener of one flow, `stdio:`,
/// has served it).
pub(crate) async fn run(ep: Endpoints, uri: Uri, dir: PathBuf, read_only: bool) -> Result<(), CliError> {
    let fs = HostFs::new(&dir).map_err(|e| CliError::usage(format!("{}: {e}", dir.display())))?;
    let server = Server::new(fs.read_only(read_only));
    let mut signals = Signals::new()?;
    let mut listener = ep.listen(&uri).await?;
    tracing::info!(
        "serving {} over 9P on {}{}",
        dir.display(),
        listener.local_uri(),
        if read_only { " (read-only)" } else { "" }
    );
    let mut sessions = JoinSet::new();
    loop {
        while sessions.try_join_next().is_some() {}
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = signals.recv() => break,
        };
        match accepted {
            Ok(accepted) => {
                let server = server.clone();
                let peer = accepted.peer;
                sessions.spawn(async move {
                    match server.serve(accepted.flow).await {
                        Ok(()) => tracing::info!(%peer, "9P session ended"),
                        Err(e) => tracing::info!(%peer, error = %chain(&e), "9P session failed"),
                    }
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotConnected => {
                while sessions.join_next().await.is_some() {}
                break;
            }
            Err(e) => {
                tracing::warn!("accept on {uri}: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
    sessions.shutdown().await;
    Ok(())
}

//! `conflux cat URI`: one flow between stdin/stdout and URI, netcat for
//! every scheme. stdin's Eof half-closes the flow (`shutdown(Write)`); the
//! peer's Eof ends stdout; the command exits once both directions ended.

use std::time::Duration;

use conflux_flow::{FlowExt, proxy};
use conflux_uri::Uri;

use crate::endpoints::{Endpoints, chain, stdio_flow};
use crate::error::CliError;

/// Connects (or, with a `-listen` URI, accepts one flow) and copies both ways.
pub(crate) async fn run(ep: Endpoints, uri: Uri, connect_timeout: Option<Duration>) -> Result<(), CliError> {
    let (mut flow, peer) = ep.one_flow(&uri, connect_timeout).await?;
    tracing::debug!("connected with {peer}");
    let mut stdio = stdio_flow();
    match proxy(&mut stdio, &mut flow).await {
        Ok(stats) => {
            if let Err(e) = flow.close().await {
                tracing::debug!("close: {e}");
            }
            tracing::debug!(sent = stats.a_to_b.bytes, received = stats.b_to_a.bytes, "done");
            Ok(())
        }
        Err(e) => {
            let _ = flow.abort().await;
            Err(CliError::runtime(format!("{peer}: {}", chain(&e.source))))
        }
    }
}

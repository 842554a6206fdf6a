//! Endpoints by URI: the registry the commands connect and listen through,
//! and the one-line errors they print when that fails.

use std::time::Duration;

use conflux_flow::BoxFlow;
use conflux_mimic::{Accepted, DialError, ListenError, Listener, Registry, UriKeys};
use conflux_uri::Uri;

use crate::error::CliError;

/// Every scheme this build connects to and listens on.
#[derive(Debug, Clone)]
pub(crate) struct Endpoints {
    registry: Registry,
}

impl Endpoints {
    /// A registry with every binding (conflux-mimic's `register_all`): tcp,
    /// tls, unix, vsock, fc-vsock, hyperkit and stdio, each raw or framed.
    pub(crate) fn new() -> Endpoints {
        let registry = Registry::new();
        conflux_mimic::register_all(&registry);
        Endpoints { registry }
    }

    /// Checks that `uri` can be connected to (its scheme is bound, every
    /// parameter is used) without connecting.
    pub(crate) fn check_connect(&self, uri: &Uri) -> Result<(), CliError> {
        self.registry.ctx_from_uri(uri).map(|_| ()).map_err(|e| CliError::usage(format!("{uri}: {}", chain(&e))))
    }

    /// Connects to `uri` (`connect_timeout` bounds it unless the URI has its own).
    pub(crate) async fn connect(&self, uri: &Uri, connect_timeout: Option<Duration>) -> Result<BoxFlow, CliError> {
        let mut ctx = conflux_mimic::Ctx::new();
        if let Some(t) = connect_timeout
            && uri.options().connect_timeout.is_none()
        {
            ctx = ctx.add(&UriKeys::get().connect_timeout, t);
        }
        self.registry.dial_with(uri, &ctx).await.map_err(|e| match e {
            DialError::Uri(e) => CliError::usage(format!("{uri}: {}", chain(&e))),
            other => CliError::runtime(chain(&other)),
        })
    }

    /// Listens on `uri` (whether or not its scheme says `-listen`).
    pub(crate) async fn listen(&self, uri: &Uri) -> Result<Listener, CliError> {
        self.registry.listen(uri).await.map_err(|e| match e {
            ListenError::Uri(u) => CliError::usage(format!("{uri}: {u}")),
            other => CliError::runtime(chain(&other)),
        })
    }

    /// One flow on `uri`: accepted when it says `-listen`, connected otherwise.
    pub(crate) async fn one_flow(
        &self,
        uri: &Uri,
        connect_timeout: Option<Duration>,
    ) -> Result<(BoxFlow, String), CliError> {
        if uri.listen() {
            let mut listener = self.listen(uri).await?;
            tracing::info!("listening on {}", listener.local_uri());
            let Accepted { flow, peer } =
                listener.accept().await.map_err(|e| CliError::runtime(format!("accept on {uri}: {e}")))?;
            Ok((flow, peer))
        } else {
            Ok((self.connect(uri, connect_timeout).await?, uri.to_string()))
        }
    }
}

/// stdin and stdout as one flow.
pub(crate) fn stdio_flow() -> BoxFlow {
    conflux_flow::FlowExt::boxed(conflux_flow::FromTokio::new(tokio::io::join(tokio::io::stdin(), tokio::io::stdout())))
}

/// `err` and its sources on one line.
pub(crate) fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !out.contains(&s_text) {
            out.push_str(": ");
            out.push_str(&s_text);
        }
        source = s.source();
    }
    out.replace('\n', "; ")
}

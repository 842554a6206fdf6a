//! Endpoints by URI: the registry the commands connect and listen through,
//! and the one-line errors they print when that fails.

use std::time::Duration;

use conflux_flow::{BoxFlow, FlowExt, FromTokio};
use conflux_mimic::{Accepted, Listener, Registry, UriKeys};
use conflux_uri::{Target, Uri};

use crate::error::CliError;
use crate::listen;

/// Every scheme this build connects to and listens on.
#[derive(Debug, Clone)]
pub(crate) struct Endpoints {
    registry: Registry,
}

impl Endpoints {
    /// A registry with every binding: tcp, tls, unix, vsock, fc-vsock,
    /// hyperkit (raw or framed), plus `stdio:` handled here.
    pub(crate) fn new() -> Endpoints {
        let registry = Registry::new();
        conflux_mimic::register_tcp(&registry, None);
        conflux_mimic::register_tls(&registry, conflux_mimic::RegisterOptions::new());
        conflux_mimic::register_hvsock(
            &registry,
            conflux_mimic::RegisterOptions::new(),
            conflux_hvsock::FramingConfig::new(),
        );
        listen::register_listeners(&registry);
        Endpoints { registry }
    }

    /// Checks that `uri` can be connected to (its scheme is bound, every
    /// parameter is used) without connecting.
    pub(crate) fn check_connect(&self, uri: &Uri) -> Result<(), CliError> {
        if matches!(uri.target(), Target::Stdio) {
            return Ok(());
        }
        self.registry.ctx_from_uri(uri).map(|_| ()).map_err(|e| CliError::usage(format!("{uri}: {e}")))
    }

    /// Connects to `uri` (`connect_timeout` bounds it unless the URI has its own).
    pub(crate) async fn connect(&self, uri: &Uri, connect_timeout: Option<Duration>) -> Result<BoxFlow, CliError> {
        if matches!(uri.target(), Target::Stdio) {
            return Ok(stdio_flow());
        }
        let mut ctx = self.registry.ctx_from_uri(uri).map_err(|e| CliError::usage(format!("{uri}: {e}")))?;
        if let Some(t) = connect_timeout
            && uri.options().connect_timeout.is_none()
        {
            ctx = ctx.add(&UriKeys::get().connect_timeout, t);
        }
        self.registry.resolve(&ctx).await.map_err(|e| CliError::runtime(connect_failure(uri, &e)))
    }

    /// Listens on `uri` (whether or not its scheme says `-listen`).
    pub(crate) async fn listen(&self, uri: &Uri) -> Result<Listener, CliError> {
        if matches!(uri.target(), Target::Stdio) {
            return Ok(listen::stdio_listener(uri.clone(), stdio_flow()));
        }
        self.registry.listen(uri).await.map_err(|e| match e {
            conflux_mimic::ListenError::Uri(u) => CliError::usage(format!("{uri}: {u}")),
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
    FromTokio::new(tokio::io::join(tokio::io::stdin(), tokio::io::stdout())).boxed()
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

/// One line for a failed connect: the URI, then each candidate's error
/// (the address it tried, the errno).
fn connect_failure(uri: &Uri, err: &conflux_mimic::ResolveError) -> String {
    use conflux_mimic::report::AttemptOutcome;
    let Some(report) = err.not_found() else { return format!("cannot connect to {uri}: {}", chain(err)) };
    let reasons: Vec<String> = report
        .attempts()
        .iter()
        .filter_map(|a| match a.outcome() {
            AttemptOutcome::Failed(e) => Some(chain(&**e)),
            AttemptOutcome::TimedOut(d) => Some(format!("timed out after {d:?}")),
            AttemptOutcome::Panicked(m) => Some(format!("panicked: {m}")),
            _ => None,
        })
        .collect();
    if reasons.is_empty() {
        format!("cannot connect to {uri}: {}", chain(err))
    } else {
        format!("cannot connect to {uri}: {}", reasons.join("; "))
    }
}

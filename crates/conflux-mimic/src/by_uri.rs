//! Connecting and listening by URI: [`Registry::dial`] is
//! [`Registry::ctx_from_uri`] then [`Registry::resolve`], with an error that
//! fits on one line; [`Registry::listen`] hands the URI to the listener
//! registered for its scheme.
//!
//! The framing (`framing=shutdown`) is the bindings' business: each binding
//! that accepts the modifier puts the framed flow's endpoint in the context,
//! so a dial (and a resolve of the same context) hands back the framed flow.

use std::sync::Arc;

use conflux_flow::BoxFlow;
use conflux_uri::{Uri, UriError, UriPart};

use crate::ctx::Ctx;
use crate::listen::{ListenError, ListenFuture, Listener};
use crate::registry::Registry;
use crate::report::{AttemptOutcome, Reason};
use crate::resolve::ResolveError;
use crate::uri::FromUriError;

/// Why [`Registry::dial`] gave no flow.
///
/// Display is one line naming what was wrong: the URI part (scheme, host,
/// port, path, query key, a CA or certificate file), or the URI that was
/// dialled and what its connect said (the address refused, timed out...).
/// The full [`NotFound`](crate::report::NotFound) report is kept:
/// [`resolve_error`](DialError::resolve_error).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DialError {
    /// The URI names something no binding here can use.
    #[error(transparent)]
    Uri(#[from] FromUriError),
    /// The URI made sense, but connecting failed.
    #[error("cannot connect to {uri}: {reason}")]
    Connect {
        /// The URI dialled.
        uri: String,
        /// What the last failing connect said, on one line.
        reason: String,
        /// The resolve's report (not the error's `source`: its text is `reason` already).
        report: ResolveError,
    },
}

impl DialError {
    fn connect(uri: &Uri, report: ResolveError) -> DialError {
        DialError::Connect { uri: uri.to_string(), reason: one_line_reason(&report), report }
    }

    /// The wrong part of the URI, if that is what this is.
    pub fn from_uri_error(&self) -> Option<&FromUriError> {
        match self {
            DialError::Uri(e) => Some(e),
            DialError::Connect { .. } => None,
        }
    }

    /// The resolve's full report, if the connect itself failed.
    pub fn resolve_error(&self) -> Option<&ResolveError> {
        match self {
            DialError::Connect { report, .. } => Some(report),
            DialError::Uri(_) => None,
        }
    }

    /// Whether the connect ran out of time (an attempt's or the overall timeout).
    pub fn is_timeout(&self) -> bool {
        let Some(nf) = self.resolve_error().and_then(ResolveError::not_found) else { return false };
        matches!(nf.reason(), Reason::OverallTimeout(_))
            || last_tried(nf).is_some_and(|a| match a.outcome() {
                AttemptOutcome::TimedOut(_) => true,
                AttemptOutcome::Failed(e) => error_chain(e.as_ref()).any(|e| {
                    e.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::TimedOut)
                        || e.to_string().contains("timed out")
                }),
                _ => false,
            })
    }
}

fn error_chain<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(e), |e| e.source())
}

fn last_tried(nf: &crate::report::NotFound) -> Option<&crate::report::Attempt> {
    nf.attempts().iter().rev().find(|a| !matches!(a.outcome(), AttemptOutcome::NotTried | AttemptOutcome::Cancelled))
}

/// What a failed resolve says, on one line: the last attempt's error chain
/// (which names the address for TCP), or the report's first line.
fn one_line_reason(e: &ResolveError) -> String {
    let Some(nf) = e.not_found() else { return flatten(&e.to_string()) };
    let tried = nf.attempts().iter().filter(|a| !matches!(a.outcome(), AttemptOutcome::NotTried)).count();
    let last = last_tried(nf).map(|a| match a.outcome() {
        AttemptOutcome::Failed(e) => {
            let mut parts: Vec<String> = Vec::new();
            for e in error_chain(e.as_ref()) {
                let s = e.to_string();
                // Wrappers that print their source again would repeat it.
                if !parts.last().is_some_and(|p| p.contains(&s)) {
                    parts.push(s);
                }
            }
            parts.join(": ")
        }
        AttemptOutcome::TimedOut(d) => format!("timed out after {d:?}"),
        AttemptOutcome::Panicked(m) => format!("the connect panicked: {m}"),
        AttemptOutcome::Cancelled | AttemptOutcome::NotTried => "not tried".to_string(),
    });
    let text = match (nf.reason(), last) {
        (Reason::OverallTimeout(d), _) => format!("timed out after {d:?}"),
        (_, Some(last)) if tried > 1 => format!("all {tried} candidates failed, the last: {last}"),
        (_, Some(last)) => last,
        (_, None) => {
            let first = e.to_string().lines().next().unwrap_or_default().to_string();
            match nf.missing_keys() {
                missing if missing.is_empty() => first,
                missing => format!("{first}; never provided: {}", missing.join(", ")),
            }
        }
    };
    flatten(&text)
}

fn flatten(s: &str) -> String {
    s.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("; ")
}

impl Registry {
    /// Connects to `uri`: [`ctx_from_uri`](Registry::ctx_from_uri) (the
    /// bindings of its scheme add their functions; `framing=shutdown` gives
    /// the framed flow), then [`resolve`](Registry::resolve). A listening URI
    /// (`tcp-listen://`) is an error naming the scheme.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let registry = conflux_mimic::Registry::new();
    /// let err = registry.dial(&"tcp://127.0.0.1:1".parse().unwrap()).await.unwrap_err();
    /// // No binding registered: the error names the scheme.
    /// assert!(err.to_string().starts_with("invalid scheme `tcp`"), "{err}");
    /// # });
    /// ```
    pub async fn dial(&self, uri: &Uri) -> Result<BoxFlow, DialError> {
        self.dial_with(uri, &Ctx::new()).await
    }

    /// As [`dial`](Registry::dial), with a context of values the bindings
    /// may use (a TLS config, a framing config, a stack...); its values are
    /// newer than the URI's, so they win.
    pub async fn dial_with(&self, uri: &Uri, ctx: &Ctx) -> Result<BoxFlow, DialError> {
        let from_uri = self.ctx_from_uri(uri)?;
        let ctx = from_uri.merge(ctx);
        self.resolve(&ctx).await.map_err(|e| DialError::connect(uri, e))
    }
}

impl Registry {
    /// Declares that this registry can listen on URIs of `scheme` with
    /// `listen`. As with [`register_scheme`](Registry::register_scheme), the
    /// function must refuse, naming it, a query parameter it does not use.
    /// A later registration for the same scheme replaces the earlier one.
    pub fn register_listener(
        &self,
        scheme: conflux_uri::Scheme,
        listen: impl Fn(&Uri, &Ctx) -> ListenFuture + Send + Sync + 'static,
    ) {
        self.set_listener(scheme, Arc::new(listen));
    }

    /// Listens on `uri` (listening whether or not the scheme says `-listen`),
    /// through the binding registered for its scheme.
    pub async fn listen(&self, uri: &Uri) -> Result<Listener, ListenError> {
        self.listen_with(uri, &Ctx::new()).await
    }

    /// As [`listen`](Registry::listen), with a context of values the binding
    /// may use (such as an in-process stack).
    pub async fn listen_with(&self, uri: &Uri, ctx: &Ctx) -> Result<Listener, ListenError> {
        let Some(f) = self.listener(uri.scheme()) else {
            let known: Vec<&str> = self.listen_schemes().iter().map(|s| s.as_str()).collect();
            return Err(UriError::new(
                UriPart::Scheme,
                uri.scheme().as_str(),
                format!("no binding of this registry listens on it (listening: {})", known.join(", ")),
            )
            .into());
        };
        f(uri, ctx).await
    }
}

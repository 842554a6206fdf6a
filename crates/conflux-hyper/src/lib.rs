//! hyper, tower and axum over any conflux flow.
//!
//! - [`Connector`]: a `tower_service::Service<http::Uri>` dialling through a
//!   conflux-mimic [`Registry`](conflux_mimic::Registry), so hyper-util's
//!   pooled client (`hyper_util::client::legacy::Client`) talks HTTP over
//!   `unix://`, `vsock://`, `fc-vsock://`, `tcp://`, `tls://`, framed or not.
//! - [`HyperFlow`]: any flow as hyper's `rt::Read`/`rt::Write` directly (no
//!   tokio adapter), for the connector and hyper's server connections.
//! - [`AxumListener`] (feature `axum`, on by default): axum 0.8's
//!   `serve::Listener` for any URI the registry listens on.
#![forbid(unsafe_code)]

mod connect;
mod io;
#[cfg(feature = "axum")]
mod listen;

#[cfg(feature = "axum")]
pub use crate::listen::{AxumListener, Peer};
pub use connect::{ConnectError, ConnectFuture, Connector};
pub use io::HyperFlow;

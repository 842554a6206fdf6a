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
//! - Feature `tls`: a `tls://` connection whose handshake agreed on `h2` by
//!   ALPN is HTTP/2 to hyper-util's client (tonic clients work over it).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! use conflux_hyper::{AxumListener, Connector};
//! use hyper_util::client::legacy::Client;
//!
//! let registry = conflux_mimic::Registry::new();
//! conflux_mimic::register_all(&registry);
//!
//! // In the guest: axum on vsock port 8080.
//! let listener = AxumListener::bind(&registry, &"vsock://:8080".parse()?).await?;
//! let app = axum::Router::new().route("/hello", axum::routing::get(|| async { "hello" }));
//! tokio::spawn(async move { axum::serve(listener, app).await });
//!
//! // On the host: hyper-util's pooled client through the VMM's hybrid vsock socket.
//! let connector = Connector::new(registry, "fc-vsock:///srv/vm1/v.sock?port=8080".parse()?);
//! let client: Client<_, http_body_util::Empty<bytes::Bytes>> =
//!     Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector);
//! let response = client.get("http://vm1/hello".parse()?).await?;
//! assert_eq!(response.status(), 200);
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]

mod connect;
mod io;
#[cfg(feature = "axum")]
mod listen;

#[cfg(feature = "axum")]
pub use crate::listen::{AxumListener, Peer};
pub use connect::{ConnectError, ConnectFuture, Connector};
pub use io::HyperFlow;

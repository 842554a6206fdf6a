//! The TCP contract of conflux: MirageOS's `Tcpip.Tcp.S` in Rust.
//!
//! An application written against [`TcpStack`] and [`TcpFlow`] runs unchanged
//! on the host kernel (`conflux-tcp-host`) or on a userspace stack.
//!
//! What is here:
//! - [`TcpStack`]: `create_connection` with keepalive and a connect timeout
//!   ([`ConnectOptions`]), `listen_on(addr, keepalive, callback)` keyed by
//!   (address, port) and returning the bound address ([`Listening`]),
//!   `unlisten_on(addr)`, MirageOS's port-only `listen(port, ..)` and
//!   `unlisten(port)` (the unspecified address `[::]`, [`any_addr`]),
//!   `disconnect`, `open_flows`;
//! - [`TcpFlow`]: the flow contract of `conflux-flow` plus `dst`/`src`,
//!   `set_nodelay` and `write_nodelay`/`writev_nodelay` ([`TcpFlowExt`]),
//!   which complete only once the peer acknowledged every byte;
//! - [`Keepalive`] (the workspace's one keepalive type, defined in
//!   `conflux-uri` so that `keepalive=` in a URI parses straight into it);
//! - typed errors per operation: [`ConnectError`], [`ListenError`]; flow
//!   operations fail with [`FlowError`](conflux_flow::FlowError) (`Closed`,
//!   `is_reset()`);
//! - backend-independent listener plumbing ([`Listeners`]): which listener is
//!   current under an (address, port) key, one task per accepted flow, a panicking callback
//!   logged and its flow closed, disconnect with a grace period then abort;
//! - [`Incoming`]: an accept-style listener (`accept().await`, a `Stream`)
//!   for any backend, an adapter over `listen_on`;
//!
//! The TCP conformance kit every backend runs lives in the dev-only
//! `conflux-conformance` crate (feature `tcp`, module `tcp`).
//!
//! What is not: no sockets, no I/O, no runtime of its own (it needs tokio's
//! `rt`, `sync` and `time`, never `net`). The semantics that differ from
//! upstream are deliberate: a write after `shutdown(Write)` is `Closed` (not
//! `Not_ready`), `write_nodelay` really waits for acknowledgements, and no
//! callback fires after `unlisten` returns.
//!
//! ```
//! use std::net::Ipv4Addr;
//! use std::time::Duration;
//! use conflux_flow::{FlowExt, Shutdown};
//! use conflux_tcp::{Keepalive, TcpStack};
//!
//! /// An echo server on loopback (127.0.0.1 only), for any backend.
//! fn serve_echo<S: TcpStack>(stack: &S) -> Result<u16, conflux_tcp::ListenError> {
//!     let ka = Keepalive::new(Duration::from_secs(60), Duration::from_secs(10), 3);
//!     let listening = stack.listen_on((Ipv4Addr::LOCALHOST, 0).into(), Some(ka), |mut flow| async move {
//!         while let Ok(Some(chunk)) = flow.read().await {
//!             if flow.write(chunk).await.is_err() {
//!                 return;
//!             }
//!         }
//!         let _ = flow.shutdown(Shutdown::Write).await;
//!     })?;
//!     Ok(listening.port())
//! }
//! ```
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod error;
mod incoming;
mod listeners;
mod stack;

pub use crate::{
    error::{BoxError, ConnectError, ListenError},
    incoming::Incoming,
    listeners::{BoxFuture, Callback, Listener, Listeners, StopFn},
    stack::{ConnectOptions, Listening, TcpFlow, TcpFlowExt, TcpStack, WriteNodelayFuture, any_addr, canonical_addr},
};

/// Keepalive settings: `conflux-uri`'s type (a URI's `keepalive=` parses into it).
pub use conflux_uri::Keepalive;

//! The kernel TCP backend of conflux: the `conflux-tcp` contract on tokio and socket2.
//!
//! [`HostStack`] implements [`TcpStack`](conflux_tcp::TcpStack) and
//! [`HostFlow`] implements [`Flow`](conflux_flow::Flow) and
//! [`TcpFlow`](conflux_tcp::TcpFlow) over the host's sockets:
//!
//! - listeners bound to exactly the address asked for (`listen_on`; the
//!   port-only `listen` is dual-stack `[::]` with `IPV6_V6ONLY` off) with
//!   `SO_REUSEADDR` and a configurable backlog; `unlisten_on` refuses new
//!   connections at once while established flows keep running;
//! - keepalive through the kernel, rounded up to whole seconds (at least 1)
//!   with 1..=127 probes ([`kernel_keepalive`]); Linux timing: a silent peer
//!   is dead at `after + probes * interval` ([`keepalive_deadline`]), after
//!   which reads return Eof and writes `Closed`;
//! - a connect timeout; errors tell timeout, refused, no route and a
//!   disconnected stack apart; optional `TCP_USER_TIMEOUT`;
//! - `ECONNRESET` is an error with `is_reset()`, `EPIPE` on write is `Closed`,
//!   `abort` sends a RST (`SO_LINGER` 0);
//! - `write_nodelay` completes only once the kernel's unacknowledged-bytes
//!   counter (`SIOCOUTQ`) reads 0;
//! - `disconnect` closes every flow gracefully, waits for callbacks for a
//!   grace period, then aborts them; `open_flows` counts open flows.
//!
//! What it does not do: no TLS, no proxying, no userspace TCP; it never
//! changes process-wide state (signals, namespaces). Only the `sys` module
//! contains `unsafe` (the `SIOCOUTQ` ioctl and `TCP_INFO`); no public
//! signature mentions socket2. Needs a tokio runtime with I/O and time enabled.
//!
//! ```
//! use conflux_flow::{FlowExt, Shutdown};
//! use conflux_tcp::{ConnectOptions, TcpFlow, TcpStack};
//! use conflux_tcp_host::HostStack;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let stack = HostStack::new();
//! // Echo with half-close: read to Eof, send everything back, then FIN.
//! // On loopback only: other hosts cannot connect.
//! let listening = stack.listen_on(([127, 0, 0, 1], 0).into(), None, |mut flow| async move {
//!     if let Ok(data) = flow.read_to_end().await {
//!         let _ = flow.write(data).await;
//!     }
//!     let _ = flow.close().await;
//! })?;
//!
//! let addr = listening.local_addr();
//! let mut client = stack.create_connection(addr, ConnectOptions::new()).await?;
//! assert_eq!(client.dst(), addr);
//! client.write("hello").await?;
//! client.shutdown(Shutdown::Write).await?;
//! assert_eq!(client.read_to_end().await?, b"hello");
//! client.close().await?;
//! stack.disconnect().await;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```
#![deny(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod config;
mod flow;
mod stack;
#[allow(unsafe_code)]
mod sys;
mod tuning;

pub use crate::{
    config::{HostConfig, keepalive_deadline, kernel_keepalive},
    flow::HostFlow,
    stack::HostStack,
};

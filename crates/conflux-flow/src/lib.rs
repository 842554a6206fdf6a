//! The flow contract of conflux: MirageOS's `Mirage_flow.S` in Rust.
//!
//! A [`Flow`] is one reliable, ordered, bidirectional byte stream to one
//! endpoint. Reads hand out owned, never-empty [`Bytes`] or Eof; writes take
//! ownership of their buffers; either direction can be shut down on its own
//! (half-close); close terminates and frees. Every transport in the workspace
//! (in-memory pipes, kernel and userspace TCP, vsock with or without its shutdown
//! framing, TLS) implements this one trait, and every one of them passes the same
//! conformance kit (the dev-only `conflux-conformance` crate).
//!
//! What is here:
//! - the poll-based, dyn-compatible [`Flow`] trait and its async sugar [`FlowExt`];
//! - [`FlowError`], where `Closed` and a reset are always distinguishable;
//! - [`BoxFlow`], a type-erased flow that downcasts back to its concrete type;
//! - owned [`ReadHalf`]/[`WriteHalf`] for full duplex and a cloneable [`SharedWriter`];
//! - [`pipe`], an in-memory pair with backpressure and real half-close;
//! - adapters both ways with tokio: [`FlowIo`] (a flow as `AsyncRead + AsyncWrite +
//!   AsyncBufRead`) and [`FromTokio`] (any `AsyncRead + AsyncWrite` as a flow);
//! - the combinators [`copy`] and [`proxy`] with per-direction [`CopyStats`];
//! - [`FnFlow`], a flow backed by functions (Mirage's `F`);
//! - [`bufs`], for flows that hand their pending writes to a vectored socket write.
//!
//! What is not: no networking, no runtime of its own (it needs tokio's `rt`,
//! `sync`, `time` and `io-util` pieces, never `net`), no global state.
//!
//! ```
//! use conflux_flow::{FlowExt, Shutdown, pipe, proxy};
//! # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
//! // client <-> (a | proxy | b) <-> server
//! let (mut client, mut a) = pipe(64 * 1024);
//! let (mut b, mut server) = pipe(64 * 1024);
//! let relay = tokio::spawn(async move { proxy(&mut a, &mut b).await });
//!
//! client.write("ping").await?;
//! client.shutdown(Shutdown::Write).await?;
//! assert_eq!(server.read_to_end().await?, b"ping");
//! server.write("pong").await?;
//! server.shutdown(Shutdown::Write).await?;
//! assert_eq!(client.read_to_end().await?, b"pong");
//!
//! let stats = relay.await.unwrap().unwrap();
//! assert_eq!((stats.a_to_b.bytes, stats.b_to_a.bytes), (4, 4));
//! # Ok::<(), conflux_flow::FlowError>(())
//! # }).unwrap();
//! ```
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod adapter;
mod boxed;
pub mod bufs;
mod combinators;
mod error;
mod flow;
mod fnflow;
mod pipe;
mod split;

pub use bytes::Bytes;

pub use crate::{
    adapter::{DEFAULT_READ_CHUNK, FlowIo, FromTokio},
    boxed::BoxFlow,
    combinators::{CopyError, CopyStats, Direction, ProxyError, ProxyStats, Side, copy, proxy},
    error::{ErrorKind, FlowError},
    flow::{
        CloseFuture, Flow, FlowExt, ReadFuture, Shutdown, ShutdownFuture, WriteFuture, WritevFuture,
        poll_read_chunk_into,
    },
    fnflow::{FnFlow, OutputBuffer},
    pipe::{Pipe, pipe},
    split::{DROP_SHUTDOWN_TIMEOUT, ReadHalf, ReuniteError, SharedWriter, WriteHalf},
};

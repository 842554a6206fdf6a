//! 9P2000 and 9P2000.u over any conflux flow.
//!
//! What is here:
//! - [`wire`]: a sans-IO codec: typed [`Msg`]s, [`Frame`] parse/emit, a
//!   [`Decoder`] whose frame cap is the negotiated msize (golden vectors in its
//!   tests), and [`RecvBuf`], which slices frames out of received chunks without copying;
//! - [`Server`]: serves a [`Filesystem`] over any [`Flow`](conflux_flow::Flow):
//!   Tversion then attach, concurrent requests, Tflush, one writer, typed
//!   protocol errors ([`ServeError`]);
//! - [`Client`]: walk/open/read/write/stat/create/remove with many requests in flight;
//! - two file systems: [`MemFs`] (in memory) and, on Linux, [`HostFs`] (a host
//!   directory confined to its root, resolving every name beneath a held
//!   directory descriptor without following symlinks).
//!
//! What is not: no 9P2000.L, no authentication (Tauth is answered with Rerror
//! "authentication not required"), no permission checks against uname, no
//! networking of its own: flows come from the transport crates.
//!
//! ```
//! use conflux_9p::{Client, MemFs, Server, fs::OREAD};
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let fs = MemFs::new();
//! fs.add_file("notes/hello.txt", "hello, 9P").unwrap();
//! let (a, b) = conflux_flow::pipe(64 * 1024);
//! let server = tokio::spawn(async move { Server::new(fs).serve(b).await });
//!
//! let client = Client::connect(a, 8192, "9P2000.u").await?;
//! let (root, _) = client.attach("me", "").await?;
//! let (fid, _) = client.walk(root, &["notes", "hello.txt"]).await?;
//! client.open(fid, OREAD).await?;
//! assert_eq!(client.read_all(fid).await?, b"hello, 9P");
//! drop(client);
//! server.await.unwrap().unwrap();
//! # Ok::<(), conflux_9p::ClientError>(())
//! # }).unwrap();
//! ```
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod client;
pub mod fs;
#[cfg(target_os = "linux")]
mod hostfs;
mod memfs;
mod server;
pub mod wire;

#[cfg(target_os = "linux")]
pub use crate::hostfs::{HostFs, HostNode};
pub use crate::{
    client::{Call, Client, ClientError},
    fs::{Filesystem, FsError, Walked},
    memfs::{MemFs, MemNode},
    server::{DEFAULT_MSIZE, MAX_IN_FLIGHT, MIN_MSIZE, ServeError, Server},
    wire::{Decoder, Dialect, Frame, IOHDRSZ, MAXWELEM, Msg, NOFID, NONUNAME, NOTAG, ParseError, Qid, RecvBuf, Stat},
};

//! Hypervisor sockets as conflux flows, and the hvsock shutdown framing.
//!
//! What it does:
//!
//! - **Socket families** behind one trait ([`Family`], OCaml's `Af_common.S`):
//!   AF_VSOCK on Linux ([`VsockFamily`]: close-on-exec, non-blocking connect
//!   that checks `SO_ERROR`, the kernel connect-timeout option, [`local_cid`]
//!   from `/dev/vsock`), Firecracker / Cloud Hypervisor hybrid vsock over a Unix
//!   socket ([`HybridFamily`]), hyperkit-style paths ([`HyperkitFamily`]) and
//!   plain Unix sockets ([`UnixFamily`]). With the `testing` feature, the
//!   `testing` module adds a deterministic in-memory family (`MemFamily`), a
//!   fault-injecting wrapper over any family (`FaultFamily`) and a fake VMM
//!   for hybrid vsock (`FakeVmm`).
//! - **Two flows** implementing [`conflux_flow::Flow`] over any family: the
//!   [`RawFlow`] (real `shutdown(2)`: what Firecracker, Cloud Hypervisor, Kata
//!   and virtsock peers speak; the default) and the opt-in [`FramedFlow`] (the
//!   shutdown framing of OCaml's `Hvsock_lwt.Flow_shutdown`, for peers that
//!   speak it: in-band ShutdownRead / ShutdownWrite / Close markers, and a close
//!   that waits, bounded by a timeout, for the peer's acknowledgement).
//! - A tokio-vsock-like API: [`Listener::bind`] / [`Listener::accept`] /
//!   [`Listener::incoming`], [`connect`] with a timeout, [`connect_retry`],
//!   `into_split`, `local_addr` / `peer_addr`, `AsFd`.
//! - The framing itself, sans-IO, in [`framing`]: the header, the incremental
//!   decoder, the batching encoder and the endpoint state machine.
//! - Addresses: [`VsockAddr`], [`HvsockAddr`] (with `conflux_uri::Guid`:
//!   Windows byte order, well-known VM ids, vsock-port service ids), and the
//!   endpoint URIs of the `vsock`, `hvsock`, `fc-vsock`, `hyperkit` and `unix`
//!   schemes ([`HvUri`]; errors are `conflux_uri::UriError`).
//!
//! What it does not do: no AF_HYPERV sockets outside Windows (the address and
//! GUID code is everywhere; the Windows socket layer is a thin `cfg(windows)`
//! module this workspace cannot type-check), no relay or port forwarding, no
//! URI registry (conflux-mimic owns that), and the framed flow never shuts the
//! transport down.
//!
//! ```
//! use conflux_flow::{FlowExt, Shutdown};
//! use conflux_hvsock::testing::{MemAddr, MemFamily}; // the `testing` feature
//! use conflux_hvsock::{FramingConfig, Listener, connect};
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let family = MemFamily::new();
//! let listener = Listener::bind(&family, &MemAddr::from("echo"))?;
//! let server = tokio::spawn(async move {
//!     let (flow, _peer) = listener.accept().await?;
//!     let mut flow = flow.into_framed(FramingConfig::new());
//!     let got = flow.read_to_end().await?;
//!     flow.write(got).await?;
//!     flow.close().await?; // Close, then wait for the acknowledgement
//!     Ok::<_, conflux_flow::FlowError>(())
//! });
//!
//! let mut client = connect(&family, &MemAddr::from("echo"), None).await?.into_framed(FramingConfig::new());
//! client.write("hello").await?;
//! client.shutdown(Shutdown::Write).await?; // the ShutdownWrite marker
//! assert_eq!(client.read_to_end().await?, b"hello");
//! client.close().await?;
//! server.await??;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```
#![deny(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod addr;
mod codec;
mod endpoint;
mod family;
#[cfg(any(test, feature = "testing"))]
mod fault;
#[cfg(unix)]
mod listener;
#[cfg(any(test, feature = "testing"))]
mod mem;
mod uri;

#[cfg(unix)]
mod framed;
#[cfg(unix)]
mod hybrid;
#[cfg(windows)]
mod hyperv;
#[cfg(unix)]
mod raw;
#[allow(unsafe_code)]
mod sys;
#[cfg(unix)]
mod unix;
#[cfg(target_os = "linux")]
mod vsock;

pub use crate::{
    addr::{HvsockAddr, HybridAddr, HyperkitAddr, VsockAddr},
    endpoint::FramingConfig,
    family::{Family, FamilyListener, Socket},
    uri::{HvUri, SCHEMES, UriAddr},
};

#[cfg(unix)]
pub use crate::{
    framed::FramedFlow,
    hybrid::{HYBRID_DEFAULT_CONNECT_TIMEOUT, HybridFamily, HybridListener, HyperkitFamily, HyperkitListener},
    listener::{DEFAULT_BACKLOG, Incoming, Listener, RetryPolicy, connect, connect_retry},
    raw::RawFlow,
    unix::{UnixAddr, UnixFamily, UnixListener, UnixSocket},
};

#[cfg(windows)]
pub use crate::hyperv::{hyperv_connect, hyperv_listen};

#[cfg(target_os = "linux")]
pub use crate::vsock::{VSOCK_DEFAULT_CONNECT_TIMEOUT, VsockFamily, VsockListener, VsockSocket, local_cid};

/// The shutdown framing itself, sans-IO: what [`FramedFlow`] runs on a
/// socket, for running it over some other transport.
///
/// [`Header`](framing::Header) with parse/emit, the incremental
/// [`Decoder`](framing::Decoder) (`Ok(None)` for "need more bytes"), the
/// batching [`Encoder`](framing::Encoder), and the [`Endpoint`](framing::Endpoint)
/// state machine whose type doc gives the call order. No I/O, no clock.
pub mod framing {
    pub use crate::codec::{DEFAULT_MAX_FRAME, DecodeError, Decoder, Encoder, Frame, Header, HeaderError};
    pub use crate::endpoint::{DEFAULT_CLOSE_TIMEOUT, Endpoint, EndpointError, ReadEvent};
}

/// Test doubles, behind the `testing` feature: for this crate's tests and for
/// other crates' tests and benchmarks, never for production.
///
/// - [`MemFamily`](testing::MemFamily): a deterministic in-memory family
///   (bounded buffers, virtual-time friendly);
/// - [`FaultFamily`](testing::FaultFamily): a fault-injecting wrapper over any
///   family ([`Faults`](testing::Faults): chunked reads, Eof or reset after N
///   bytes, unread bytes discarded on close as vsock does);
/// - [`FakeVmm`](testing::FakeVmm) (Unix): a stand-in for a Firecracker / Cloud
///   Hypervisor hybrid vsock socket, with in-process
///   [`GuestListener`](testing::GuestListener)s.
#[cfg(feature = "testing")]
pub mod testing {
    pub use crate::fault::{FaultFamily, FaultListener, FaultSocket, Faults};
    #[cfg(unix)]
    pub use crate::hybrid::fake::{FakeVmm, GuestListener};
    pub use crate::mem::{MEM_DEFAULT_CAPACITY, MemAddr, MemFamily, MemListener, MemSocket};
}

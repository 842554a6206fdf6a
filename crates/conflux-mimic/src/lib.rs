//! A typed protocol registry: OCaml's mimic in Rust.
//!
//! Applications say *what* they want to reach in a [`Ctx`] of typed values
//! (a host, a port, a TLS config...) and functions computing more values
//! from them; a [`Registry`] of protocols says *how*. [`Registry::resolve`]
//! runs the functions, lists every endpoint it can build, and connects
//! through the best protocol, handing back one [`BoxFlow`](conflux_flow::BoxFlow) that the protocol's
//! [`Handle`] downcasts to the concrete flow.
//!
//! What is here:
//! - typed [`Key`]s (never equal across makes, even with the same name);
//! - the persistent [`Ctx`]: `add`, `get`, `replace`, `fold`, `merge`, `empty`;
//!   function arguments [`req`], [`opt`], [`dft`], [`map`], [`all`] with typed arity (tuples);
//! - the explicit [`Registry`]: `register(name, priority, protocol)` gives an
//!   endpoint key and a [`Handle`]; ties go to the most recent registration;
//!   [`unfold`](Registry::unfold) lists every binding (plain and computed),
//!   [`connect`](Registry::connect) tries them, [`resolve`](Registry::resolve) does both;
//! - on purpose, beyond upstream: real dependency [`Cycle`](report::Cycle)s naming
//!   the keys (only those an endpoint needs fail a resolve);
//!   a structured [`NotFound`](report::NotFound) report (each attempt with protocol, priority,
//!   error or timeout, elapsed; functions that gave nothing, returned an error
//!   or panicked; functions dropped for a missing key, naming it; an empty
//!   context, an empty registry, another registry's endpoints each say so);
//!   each function runs at most once per resolve (merges included); a panic
//!   in a function or a connect is that step's failure; per-attempt and overall timeouts; an
//!   optional staggered race ([`ResolveOptions::race`]); a per-protocol
//!   "no fallback past me" guard ([`RegisterOptions::no_fallback`]);
//!   [`Registry::plan`] as text or Graphviz; a tracing span per resolve with
//!   an event per function and per attempt.
//!
//! By URI: [`Registry::dial`] (the context from the URI, then resolve; a
//! one-line [`DialError`] naming the wrong part or the address that refused)
//! and [`Registry::listen`] (a [`Listener`]: accepted flows with their peer,
//! as a `Stream` or one [`accept`](Listener::accept) at a time, and the
//! [`local_uri`](Listener::local_uri) a client dials); [`register_all`]
//! registers every binding the build has. The grammar and what each scheme
//! does on each side: `docs/uri.md`.
//!
//! Bindings, each behind a feature (the transport crates never know the
//! registry exists; the bindings use this crate's public API only), each
//! connecting and listening: `tcp` (kernel TCP through conflux-tcp-host,
//! with `connect_timeout` and `keepalive` from the URI or the context; the
//! bind address honoured, an empty host meaning 127.0.0.1), `tls` (rustls
//! over any flow; `?ca=` loaded, `?cert=&key=` a listener's certificate or a
//! client's, `ca=` on a listener requiring client certificates;
//! `tls-webpki-roots` adds the webpki roots), `hvsock` (`unix`, `vsock`,
//! `fc-vsock`, `hyperkit` over conflux-hvsock, raw or framed with
//! `framing=shutdown`; with it the framing also runs over tcp and stdio
//! flows), `stdio` (stdin and stdout as one flow), `netstack` (`netstack://`
//! over conflux-netstack's userspace stack on a TAP or TUN device, one stack
//! per device and process, or on an in-process stack put in the context: see
//! `NetstackKeys`) and `dns`. A binding refuses, naming it, any query
//! parameter of a URI it does not use. Not bound yet: `hvsock://` (Windows
//! AF_HYPERV).
//!
//! Modules, bottom up (each uses only those before it): keys (`key`), function
//! arguments (`args`), contexts (`ctx`), URIs' keys (`uri`), reports
//! (`report`), listeners (`listen`: [`Listener`], [`ListenError`]), the
//! registry (`registry`), unfolding (`unfold`), resolving (`resolve`: the
//! candidates' policy in `schedule`, its driver in `race`), dialling and
//! listening by URI (`by_uri`), plans (`plan`), then the bindings (`tcp`,
//! `tls`, `hvsock` and its listeners `hvlisten`, the framing over any flow
//! `framing`, `stdio`, `netstack`, `dns`).
//!
//! What is not: the core does no networking and knows no transport (it needs
//! tokio's `time` only, for timeouts and races); there is no global registry.
//!
//! ```
//! use conflux_flow::{FlowExt, FnFlow};
//! use conflux_mimic::{Ctx, Key, Registry, protocol_fn, req};
//! # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
//! let registry = Registry::new();
//! // A protocol whose endpoint is the text the flow will read.
//! let (text, handle) = registry.register(
//!     "text",
//!     Some(10),
//!     protocol_fn(|s: String| async move { Ok::<_, std::io::Error>(FnFlow::new().with_input_chunks([s])) }),
//! );
//! let name: Key<String> = Key::new("name");
//! let ctx = Ctx::new()
//!     .fold(&text, req(&name), |name| Some(format!("hello {name}")))
//!     .add(&name, "world".to_string());
//!
//! let flow = registry.resolve(&ctx).await.unwrap();
//! let mut flow: FnFlow = handle.downcast(flow).unwrap();
//! assert_eq!(flow.read_to_end().await.unwrap(), b"hello world");
//!
//! // Without a name the report says why.
//! let err = registry.resolve(&Ctx::new().fold(&text, req(&name), |n| Some(n))).await.unwrap_err();
//! assert!(err.to_string().contains("required key `name` was never provided"));
//! # });
//! ```
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod args;
mod by_uri;
mod catch;
mod ctx;
#[cfg(feature = "dns")]
mod dns;
#[cfg(feature = "hvsock")]
mod framing;
#[cfg(feature = "hvsock")]
mod hvlisten;
#[cfg(feature = "hvsock")]
mod hvsock;
mod key;
mod listen;
#[cfg(feature = "netstack")]
mod netstack;
pub mod plan;
mod registry;
pub mod report;
mod resolve;
#[cfg(feature = "stdio")]
mod stdio;
#[cfg(feature = "tcp")]
mod tcp;
#[cfg(feature = "tls")]
mod tls;
mod unfold;
mod uri;

/// The argument types of context functions, for code generic over them (the
/// functions building them, [`req`], [`opt`], [`dft`], [`map`] and [`all`],
/// are at the crate root).
pub mod arg {
    pub use crate::args::{All, Arg, Args, Dft, Map, Opt, Req};
}

pub use crate::{
    args::{all, dft, map, opt, req},
    by_uri::DialError,
    ctx::{Ctx, FnOutput},
    key::{BoxError, Key},
    listen::{Accepted, ListenError, ListenFuture, Listener},
    registry::{FnProtocol, Handle, Protocol, RegisterOptions, Registry, ResolveOptions, WeakRegistry, protocol_fn},
    resolve::ResolveError,
    unfold::{Binding, Unfolded},
    uri::{FromUriError, UriKeys, check_listen_modifiers, check_modifiers},
};

#[cfg(feature = "dns")]
#[cfg_attr(docsrs, doc(cfg(feature = "dns")))]
pub use crate::dns::dns_lookup;
#[cfg(feature = "netstack")]
#[cfg_attr(docsrs, doc(cfg(feature = "netstack")))]
pub use crate::netstack::{NetstackDevice, NetstackEndpoint, NetstackKeys, register_netstack};
#[cfg(feature = "stdio")]
#[cfg_attr(docsrs, doc(cfg(feature = "stdio")))]
pub use crate::stdio::{StdioFlow, register_stdio};
#[cfg(feature = "tcp")]
#[cfg_attr(docsrs, doc(cfg(feature = "tcp")))]
pub use crate::tcp::{Tcp, TcpEndpoint, register_tcp, register_tcp_with, tcp_endpoints};
#[cfg(feature = "tls")]
#[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
pub use crate::tls::{TlsConnectError, TlsEndpoint, TlsFlow, TlsKeys, register_tls};
#[cfg(feature = "hvsock")]
#[cfg_attr(docsrs, doc(cfg(feature = "hvsock")))]
pub use crate::{
    framing::FramingKeys,
    hvsock::{HvEndpoint, Hvsock, HvsockProtocols, register_hvsock},
};

/// Registers every binding this build has, with its defaults, so that
/// [`Registry::dial`] and [`Registry::listen`] serve every scheme compiled
/// in: `tcp` (feature `tcp`, DNS included), `tls` (feature `tls`; priority
/// 10, no fallback), `unix`, `vsock`, `fc-vsock` and `hyperkit` (feature
/// `hvsock`, the default framing config), `netstack` (feature `netstack`)
/// and `stdio` (feature `stdio`).
///
/// ```
/// let registry = conflux_mimic::Registry::new();
/// conflux_mimic::register_all(&registry);
/// # #[cfg(feature = "tcp")]
/// assert!(registry.listen_schemes().contains(&conflux_uri::Scheme::Tcp));
/// ```
pub fn register_all(registry: &Registry) {
    let _ = registry; // a build without bindings registers nothing
    #[cfg(feature = "tcp")]
    register_tcp(registry, None);
    #[cfg(feature = "tls")]
    register_tls(registry, RegisterOptions::new().priority(10).no_fallback());
    #[cfg(feature = "hvsock")]
    register_hvsock(registry, RegisterOptions::new(), conflux_hvsock::FramingConfig::new());
    #[cfg(feature = "netstack")]
    register_netstack(registry, RegisterOptions::new());
    #[cfg(feature = "stdio")]
    register_stdio(registry, RegisterOptions::new());
}

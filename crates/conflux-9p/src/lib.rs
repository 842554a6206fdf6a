//! 9P2000 and 9P2000.u over any conflux flow.
//!
//! What is here:
//! - [`wire`]: a sans-IO codec: typed [`Msg`]s, [`Frame`] parse/emit, a
//!   [`Decoder`] whose frame cap is the negotiated msize (golden vectors in its tests);
//!
//! What is not: no 9P2000.L, no authentication (Tauth is answered with Rerror
//! "authentication not required"), no networking of its own: flows come from
//! the transport crates.
//!
//! ```
//! use conflux_9p::{Dialect, Frame, Msg, NOTAG, Decoder};
//! let wire = Frame { tag: NOTAG, msg: Msg::Tversion { msize: 8192, version: "9P2000.u".into() } }
//!     .emit(Dialect::P2000U);
//! let mut buf = bytes::BytesMut::from(&wire[..]);
//! let frame = Decoder::new(8192, Dialect::P2000U).decode(&mut buf).unwrap().unwrap();
//! assert!(matches!(frame.msg, Msg::Tversion { msize: 8192, .. }));
//! ```
#![forbid(unsafe_code)]

pub mod wire;

pub use crate::wire::{Decoder, Dialect, Frame, IOHDRSZ, MAXWELEM, Msg, NOFID, NONUNAME, NOTAG, ParseError, Qid, Stat};

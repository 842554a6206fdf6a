//! Hypervisor sockets as conflux flows, with the optional shutdown framing.
//!
//! (Crate documentation in progress.)
#![deny(unsafe_code)]

mod codec;
mod endpoint;

pub use crate::{
    codec::{DEFAULT_MAX_FRAME, DecodeError, Decoder, Encoder, Frame, Header, HeaderError},
    endpoint::{DEFAULT_CLOSE_TIMEOUT, Endpoint, EndpointError, FramingConfig, ReadEvent},
};

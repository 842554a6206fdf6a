//! Factories for the in-memory flows of `conflux-flow`.

use conflux_flow::{FromTokio, Pipe, pipe};
use tokio::io::DuplexStream;

use crate::{Caps, FlowFactory, PairFuture};

/// Pairs of [`conflux_flow::pipe`]: every capability, virtual time by default.
#[derive(Debug, Clone, Copy)]
pub struct PipeFactory {
    /// The buffer of each direction, in bytes.
    pub capacity: usize,
    /// Run under tokio's paused clock (current-thread runtime); `false` runs the
    /// cases on the two-worker runtime in real time.
    pub virtual_time: bool,
}

impl PipeFactory {
    /// 64 KiB per direction, virtual time.
    pub const fn new() -> PipeFactory {
        PipeFactory { capacity: 64 * 1024, virtual_time: true }
    }

    /// The same pipes on the multi-thread runtime in real time.
    pub const fn real_time(self) -> PipeFactory {
        PipeFactory { virtual_time: false, ..self }
    }
}

impl Default for PipeFactory {
    fn default() -> PipeFactory {
        PipeFactory::new()
    }
}

impl FlowFactory for PipeFactory {
    type Flow = Pipe;

    fn caps(&self) -> Caps {
        Caps { peer_sees_read_shutdown: true, virtual_time: self.virtual_time, ..Caps::in_memory() }
    }

    fn pair(&self) -> PairFuture<'_, Pipe> {
        let capacity = self.capacity;
        Box::pin(async move { Ok(pipe(capacity)) })
    }
}

/// Pairs of [`FromTokio`] over [`tokio::io::duplex`]: real time on the
/// multi-thread runtime by default. Dropping a duplex end reads as Eof, so there
/// is no reset (`abort_resets` off), and `shutdown(Read)` is a local flag.
#[derive(Debug, Clone, Copy)]
pub struct DuplexFactory {
    /// The duplex buffer of each direction, in bytes.
    pub capacity: usize,
    /// Run under tokio's paused clock.
    pub virtual_time: bool,
}

impl DuplexFactory {
    /// 64 KiB per direction, real time.
    pub const fn new() -> DuplexFactory {
        DuplexFactory { capacity: 64 * 1024, virtual_time: false }
    }
}

impl Default for DuplexFactory {
    fn default() -> DuplexFactory {
        DuplexFactory::new()
    }
}

impl FlowFactory for DuplexFactory {
    type Flow = FromTokio<DuplexStream>;

    fn caps(&self) -> Caps {
        Caps { abort_resets: false, virtual_time: self.virtual_time, ..Caps::in_memory() }
    }

    fn pair(&self) -> PairFuture<'_, FromTokio<DuplexStream>> {
        let capacity = self.capacity;
        Box::pin(async move {
            let (a, b) = tokio::io::duplex(capacity);
            Ok((FromTokio::new(a), FromTokio::new(b)))
        })
    }
}

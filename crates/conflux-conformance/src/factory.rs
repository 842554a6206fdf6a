//! The factory a transport implements to run the kit, and a boxing wrapper.

use std::future::Future;
use std::pin::Pin;

use conflux_flow::{BoxFlow, Flow, FlowError, FlowExt};

use crate::Caps;

/// The future returned by [`FlowFactory::pair`].
pub type PairFuture<'a, F> = Pin<Box<dyn Future<Output = Result<(F, F), FlowError>> + Send + 'a>>;

/// Makes connected pairs of one kind of flow for the kit.
///
/// ```
/// use conflux_conformance::{Caps, FlowFactory, PairFuture};
/// use conflux_flow::{Pipe, pipe};
///
/// struct Pipes;
/// impl FlowFactory for Pipes {
///     type Flow = Pipe;
///     fn caps(&self) -> Caps {
///         Caps::in_memory()
///     }
///     fn pair(&self) -> PairFuture<'_, Pipe> {
///         Box::pin(async { Ok(pipe(64 * 1024)) })
///     }
/// }
/// ```
pub trait FlowFactory: Send + Sync + 'static {
    /// The flow under test.
    type Flow: Flow;

    /// What the transport can do; see [`Caps`].
    fn caps(&self) -> Caps;

    /// Two connected flows: what one writes, the other reads. Called inside the
    /// kit's runtime (so it may bind sockets and spawn I/O tasks), once or more
    /// per case.
    fn pair(&self) -> PairFuture<'_, Self::Flow>;

    /// How many resources (connections, sockets, tasks) this factory's flows hold
    /// right now, if the transport counts them: F3 checks the count returns to its
    /// value from before a pair was made, after close and after drop. Keep the
    /// counter per factory value: tests of one binary run in parallel.
    fn open_resources(&self) -> Option<usize> {
        None
    }
}

/// The flows of `F`, each boxed into a [`BoxFlow`]: the kit run against the
/// type-erased flow that registries hand out.
///
/// ```
/// use conflux_conformance::{Boxed, PipeFactory, flow_conformance};
/// flow_conformance!(boxed_pipe, Boxed(PipeFactory::new()));
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Boxed<F>(pub F);

impl<F: FlowFactory> FlowFactory for Boxed<F> {
    type Flow = BoxFlow;

    fn caps(&self) -> Caps {
        self.0.caps()
    }

    fn pair(&self) -> PairFuture<'_, BoxFlow> {
        Box::pin(async move {
            let (a, b) = self.0.pair().await?;
            Ok((a.boxed(), b.boxed()))
        })
    }

    fn open_resources(&self) -> Option<usize> {
        self.0.open_resources()
    }
}

//! The flow conformance suite against the in-memory flows of `conflux-flow`,
//! plain and boxed.

use conflux_conformance::{Boxed, Caps, DuplexFactory, FlowFactory, PairFuture, PipeFactory, flow_conformance};
use conflux_flow::FromTokio;
use tokio::io::{BufWriter, DuplexStream};

flow_conformance!(pipe, PipeFactory::new());
flow_conformance!(pipe_threads, PipeFactory::new().real_time());
flow_conformance!(pipe_boxed, Boxed(PipeFactory::new()));
flow_conformance!(duplex, DuplexFactory::new());
flow_conformance!(duplex_boxed, Boxed(DuplexFactory::new()));
flow_conformance!(duplex_buffered, BufferedDuplex);

/// `FromTokio` over a duplex behind a small `BufWriter`: flushes that stay pending.
struct BufferedDuplex;

impl FlowFactory for BufferedDuplex {
    type Flow = FromTokio<BufWriter<DuplexStream>>;

    fn caps(&self) -> Caps {
        DuplexFactory::new().caps()
    }

    fn pair(&self) -> PairFuture<'_, Self::Flow> {
        Box::pin(async {
            let (a, b) = tokio::io::duplex(16 * 1024);
            let wrap = |s| FromTokio::new(BufWriter::with_capacity(8 * 1024, s));
            Ok((wrap(a), wrap(b)))
        })
    }
}

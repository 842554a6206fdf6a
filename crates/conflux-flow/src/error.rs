//! The one error type of the flow contract.

use std::fmt;
use std::io;

/// What went wrong, coarsely. New kinds may be added; match with a wildcard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The flow can no longer send (or was closed locally): Mirage's `` `Closed ``.
    Closed,
    /// The peer reset the connection (TCP RST, an aborted pipe). Never a clean Eof.
    Reset,
    /// The peer broke a wire protocol (a malformed frame, an impossible length).
    Protocol,
    /// A deadline passed.
    TimedOut,
    /// Any other failure of the transport underneath.
    Other,
}

impl ErrorKind {
    fn describe(self) -> &'static str {
        match self {
            ErrorKind::Closed => "attempted to write to a closed flow",
            ErrorKind::Reset => "connection reset by peer",
            ErrorKind::Protocol => "protocol error",
            ErrorKind::TimedOut => "timed out",
            ErrorKind::Other => "flow error",
        }
    }
}

/// The error of every flow operation.
///
/// `Closed` and a reset are always distinguishable ([`is_closed`](Self::is_closed),
/// [`is_reset`](Self::is_reset)); everything else is opaque but printable.
///
/// The cause is printed once: like [`io::Error`] with a custom error inside,
/// `Display` prints the kind, the message and the cause's own message, and
/// [`source`](std::error::Error::source) continues the chain from the
/// cause's source (the cause itself is reachable through
/// [`get_ref`](Self::get_ref)). So a report that walks the chain (anyhow,
/// eyre) shows every text once.
pub struct FlowError {
    kind: ErrorKind,
    msg: Option<Box<str>>,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl FlowError {
    /// An error of the given kind with no further detail.
    pub fn new(kind: ErrorKind) -> FlowError {
        FlowError { kind, msg: None, source: None }
    }

    /// `Closed`: the flow can no longer send. Prints as "attempted to write to a closed flow".
    pub fn closed() -> FlowError {
        FlowError::new(ErrorKind::Closed)
    }

    /// A reset by the peer.
    pub fn reset() -> FlowError {
        FlowError::new(ErrorKind::Reset)
    }

    /// A protocol violation by the peer, described by `msg`.
    pub fn protocol(msg: impl Into<String>) -> FlowError {
        FlowError::new(ErrorKind::Protocol).with_message(msg)
    }

    /// A deadline passed while waiting for `what`.
    pub fn timed_out(what: impl Into<String>) -> FlowError {
        FlowError::new(ErrorKind::TimedOut).with_message(what)
    }

    /// Any other failure, wrapping its cause.
    pub fn other<E>(source: E) -> FlowError
    where
        E: Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    {
        FlowError { kind: ErrorKind::Other, msg: None, source: Some(source.into()) }
    }

    /// Adds a human-readable detail, printed after the kind.
    pub fn with_message(mut self, msg: impl Into<String>) -> FlowError {
        self.msg = Some(msg.into().into_boxed_str());
        self
    }

    /// Adds an underlying cause.
    pub fn with_source<E>(mut self, source: E) -> FlowError
    where
        E: Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    {
        self.source = Some(source.into());
        self
    }

    /// The underlying cause, if any (printed by `Display`, so not returned by
    /// [`source`](std::error::Error::source)); downcast it to inspect it.
    pub fn get_ref(&self) -> Option<&(dyn std::error::Error + Send + Sync + 'static)> {
        self.source.as_deref()
    }

    /// The coarse kind of this error.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// True for `Closed`: the flow can no longer send.
    pub fn is_closed(&self) -> bool {
        self.kind == ErrorKind::Closed
    }

    /// True when the peer reset the connection.
    pub fn is_reset(&self) -> bool {
        self.kind == ErrorKind::Reset
    }

    /// True when the peer violated a wire protocol.
    pub fn is_protocol(&self) -> bool {
        self.kind == ErrorKind::Protocol
    }

    /// True when a deadline passed.
    pub fn is_timed_out(&self) -> bool {
        self.kind == ErrorKind::TimedOut
    }

    /// A copy of this error for latching (an error returned again on later calls).
    /// The cause is kept as its printed text.
    pub fn latched(&self) -> FlowError {
        FlowError { kind: self.kind, msg: self.msg.clone(), source: self.source.as_ref().map(|s| s.to_string().into()) }
    }
}

impl fmt::Display for FlowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind.describe())?;
        if let Some(msg) = &self.msg {
            write!(f, ": {msg}")?;
        }
        if let Some(source) = &self.source {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for FlowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("FlowError");
        d.field("kind", &self.kind);
        if let Some(msg) = &self.msg {
            d.field("msg", msg);
        }
        if let Some(source) = &self.source {
            d.field("source", source);
        }
        d.finish()
    }
}

impl std::error::Error for FlowError {
    /// The cause's own source: `Display` already printed the cause.
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().and_then(|s| s.source())
    }
}

impl From<io::Error> for FlowError {
    /// Maps I/O errors onto the contract: a reset stays a reset, a broken pipe is
    /// `Closed`, a `FlowError` carried inside an `io::Error` comes back unchanged.
    fn from(err: io::Error) -> FlowError {
        let kind = match err.kind() {
            io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted => ErrorKind::Reset,
            io::ErrorKind::BrokenPipe | io::ErrorKind::NotConnected => ErrorKind::Closed,
            io::ErrorKind::TimedOut => ErrorKind::TimedOut,
            io::ErrorKind::InvalidData => ErrorKind::Protocol,
            _ => ErrorKind::Other,
        };
        if err.get_ref().is_some_and(|e| e.is::<FlowError>()) {
            let inner = err.into_inner().expect("checked above");
            return *inner.downcast::<FlowError>().expect("checked above");
        }
        if kind == ErrorKind::Other { FlowError::other(err) } else { FlowError::new(kind).with_source(err) }
    }
}

impl From<FlowError> for io::Error {
    /// Carries the flow error inside an `io::Error` of the matching kind, so that
    /// converting back yields the same `FlowError`.
    fn from(err: FlowError) -> io::Error {
        let kind = match err.kind {
            ErrorKind::Closed => io::ErrorKind::BrokenPipe,
            ErrorKind::Reset => io::ErrorKind::ConnectionReset,
            ErrorKind::Protocol => io::ErrorKind::InvalidData,
            ErrorKind::TimedOut => io::ErrorKind::TimedOut,
            ErrorKind::Other => io::ErrorKind::Other,
        };
        io::Error::new(kind, err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closed_prints_like_mirage() {
        assert_eq!(FlowError::closed().to_string(), "attempted to write to a closed flow");
    }

    #[test]
    fn io_round_trip_keeps_kind_and_message() {
        let e = FlowError::protocol("length 4294967295 too large");
        let io: io::Error = e.into();
        assert_eq!(io.kind(), io::ErrorKind::InvalidData);
        let back = FlowError::from(io);
        assert!(back.is_protocol());
        assert_eq!(back.to_string(), "protocol error: length 4294967295 too large");
    }

    #[test]
    fn io_kinds_map_onto_the_contract() {
        let reset = FlowError::from(io::Error::from(io::ErrorKind::ConnectionReset));
        assert!(reset.is_reset() && !reset.is_closed());
        let pipe = FlowError::from(io::Error::from(io::ErrorKind::BrokenPipe));
        assert!(pipe.is_closed() && !pipe.is_reset());
        let other = FlowError::from(io::Error::other("disk on fire"));
        assert_eq!(other.kind(), ErrorKind::Other);
        assert!(other.to_string().contains("disk on fire"));
    }

    /// A cause with a cause of its own.
    #[derive(Debug)]
    struct Outer(io::Error);

    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("the handshake failed")
        }
    }

    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    /// Every message of the chain, as a report walking `source()` prints it.
    fn chain(e: &dyn std::error::Error) -> Vec<String> {
        std::iter::successors(Some(e), |e| e.source()).map(ToString::to_string).collect()
    }

    fn assert_no_repeats(chain: &[String]) {
        for (i, outer) in chain.iter().enumerate() {
            for inner in &chain[i + 1..] {
                assert!(!outer.contains(inner.as_str()), "{inner:?} is printed twice in the chain {chain:?}");
            }
        }
    }

    #[test]
    fn the_chain_prints_each_cause_once() {
        let root = || io::Error::new(io::ErrorKind::InvalidData, "bad certificate");
        let cases = [
            FlowError::other(Outer(root())),
            FlowError::protocol("while reading the header").with_source(Outer(root())),
            FlowError::from(io::Error::other(Outer(root()))),
            FlowError::from(io::Error::from(FlowError::other(Outer(root())))),
            FlowError::other(Outer(root())).latched(),
        ];
        for e in cases {
            let c = chain(&e);
            assert_no_repeats(&c);
            let all = c.join(": ");
            assert!(all.contains("the handshake failed"), "{all}");
            if e.get_ref().is_some_and(|s| s.is::<Outer>()) {
                assert!(all.contains("bad certificate"), "the root cause is lost: {all}");
            }
        }
        let e = FlowError::other(Outer(root()));
        assert_eq!(chain(&e), ["flow error: the handshake failed", "bad certificate"]);
        assert!(e.get_ref().is_some_and(|s| s.is::<Outer>()), "the cause can be downcast");
    }
}

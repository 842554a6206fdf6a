//! Errors of the stack operations (flow operations use [`FlowError`](conflux_flow::FlowError)).

use std::net::SocketAddr;

/// A boxed cause, for the `Other` variants.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why [`create_connection`](crate::TcpStack::create_connection) failed.
///
/// Each variant but `Disconnected` names the address dialled ([`addr`](Self::addr)).
/// A cause is returned from [`source`](std::error::Error::source), never
/// printed in `Display`, so a report walking the chain prints it once.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// No answer before the connect timeout (or the kernel's own SYN retries) ran out.
    #[error("connecting to {addr} timed out")]
    Timeout {
        /// The address dialled.
        addr: SocketAddr,
    },
    /// The peer answered with a reset: nothing listens there.
    #[error("connection to {addr} refused")]
    Refused {
        /// The address dialled.
        addr: SocketAddr,
    },
    /// No route to the destination: failed at once, nothing was sent.
    #[error("no route to {addr}")]
    NoRoute {
        /// The address dialled.
        addr: SocketAddr,
    },
    /// The stack was disconnected ([`disconnect`](crate::TcpStack::disconnect)).
    #[error("the TCP stack is disconnected")]
    Disconnected,
    /// Anything else (an unusable address, out of descriptors, ...): the cause
    /// is the [`source`](std::error::Error::source).
    #[error("connecting to {addr} failed")]
    Other {
        /// The address dialled.
        addr: SocketAddr,
        /// What went wrong.
        #[source]
        source: BoxError,
    },
}

impl ConnectError {
    /// The address dialled (`None` for `Disconnected`).
    pub fn addr(&self) -> Option<SocketAddr> {
        match self {
            ConnectError::Timeout { addr }
            | ConnectError::Refused { addr }
            | ConnectError::NoRoute { addr }
            | ConnectError::Other { addr, .. } => Some(*addr),
            ConnectError::Disconnected => None,
        }
    }

    /// `Other` at `addr` with `source` as its cause.
    pub fn other(addr: SocketAddr, source: impl Into<BoxError>) -> ConnectError {
        ConnectError::Other { addr, source: source.into() }
    }
}

/// Why [`listen_on`](crate::TcpStack::listen_on) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ListenError {
    /// Something holds the address and port: outside this stack, or (on
    /// backends that refuse it) this stack's listener on an overlapping
    /// address of the same port.
    #[error("{0} is in use")]
    AddrInUse(SocketAddr),
    /// The port needs privileges this process lacks.
    #[error("no permission to listen on {0}")]
    PermissionDenied(SocketAddr),
    /// The address is not one of this stack's.
    #[error("{0} is not an address of this host")]
    AddrNotAvailable(SocketAddr),
    /// The stack was disconnected ([`disconnect`](crate::TcpStack::disconnect)).
    #[error("the TCP stack is disconnected")]
    Disconnected,
    /// Anything else (out of ports, out of descriptors, no runtime): prints
    /// as its cause, whose own source is this error's
    /// [`source`](std::error::Error::source).
    #[error(transparent)]
    Other(BoxError),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every message of the chain, as a report walking `source()` prints it.
    fn chain(e: &dyn std::error::Error) -> Vec<String> {
        std::iter::successors(Some(e), |e| e.source()).map(ToString::to_string).collect()
    }

    #[test]
    fn errors_name_the_address() {
        let addr = SocketAddr::from(([127, 0, 0, 1], 80));
        assert_eq!(ConnectError::Refused { addr }.to_string(), "connection to 127.0.0.1:80 refused");
        assert_eq!(ConnectError::Timeout { addr }.to_string(), "connecting to 127.0.0.1:80 timed out");
        assert_eq!(ConnectError::NoRoute { addr }.to_string(), "no route to 127.0.0.1:80");
        assert_eq!(ConnectError::Refused { addr }.addr(), Some(addr));
        assert_eq!(ListenError::AddrInUse(addr).to_string(), "127.0.0.1:80 is in use");
    }

    #[test]
    fn causes_print_once() {
        let addr = SocketAddr::from(([127, 0, 0, 1], 80));
        let e = ConnectError::other(addr, std::io::Error::other("out of descriptors"));
        assert_eq!(chain(&e), ["connecting to 127.0.0.1:80 failed", "out of descriptors"]);
        let e = ListenError::Other("the ephemeral port range is exhausted".into());
        assert_eq!(chain(&e), ["the ephemeral port range is exhausted"]);
        // Wrapped in a flow error, still once each.
        let e = conflux_flow::FlowError::other(ConnectError::other(addr, std::io::Error::other("out of descriptors")));
        assert_eq!(chain(&e), ["flow error: connecting to 127.0.0.1:80 failed", "out of descriptors"]);
    }
}

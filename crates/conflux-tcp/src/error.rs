//! Errors of the stack operations (flow operations use [`FlowError`](conflux_flow::FlowError)).

use std::net::SocketAddr;

/// A boxed cause, for the `Other` variants.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why [`create_connection`](crate::TcpStack::create_connection) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// No answer before the connect timeout (or the kernel's own SYN retries) ran out.
    #[error("connection timed out")]
    Timeout,
    /// The peer answered with a reset: nothing listens there.
    #[error("connection refused")]
    Refused,
    /// No route to the destination: failed at once, nothing was sent.
    #[error("no route to host")]
    NoRoute,
    /// The stack was disconnected ([`disconnect`](crate::TcpStack::disconnect)).
    #[error("the TCP stack is disconnected")]
    Disconnected,
    /// Anything else (an unusable address, out of descriptors, ...).
    #[error("connect failed: {0}")]
    Other(#[source] BoxError),
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
    /// Anything else.
    #[error("listen failed: {0}")]
    Other(#[source] BoxError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_print_something_meaningful() {
        assert_eq!(ConnectError::Refused.to_string(), "connection refused");
        assert_eq!(ConnectError::Timeout.to_string(), "connection timed out");
        let addr = SocketAddr::from(([127, 0, 0, 1], 80));
        assert_eq!(ListenError::AddrInUse(addr).to_string(), "127.0.0.1:80 is in use");
        let other = ConnectError::Other("out of descriptors".into());
        assert!(other.to_string().contains("out of descriptors"));
        assert!(std::error::Error::source(&other).is_some());
    }
}

//! Errors of the stack operations (flow operations use [`FlowError`](conflux_flow::FlowError)).

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

/// Why [`listen`](crate::TcpStack::listen) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ListenError {
    /// Something outside this stack holds the port.
    #[error("port {0} is in use")]
    AddrInUse(u16),
    /// The port needs privileges this process lacks.
    #[error("no permission to listen on port {0}")]
    PermissionDenied(u16),
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
        assert_eq!(ListenError::AddrInUse(80).to_string(), "port 80 is in use");
        let other = ConnectError::Other("out of descriptors".into());
        assert!(other.to_string().contains("out of descriptors"));
        assert!(std::error::Error::source(&other).is_some());
    }
}

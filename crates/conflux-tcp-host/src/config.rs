//! The kernel stack's settings and the keepalive rounding rules.

use std::time::Duration;

use conflux_tcp::Keepalive;

/// Settings of a [`HostStack`](crate::HostStack). Every wait on a peer is bounded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostConfig {
    pub(crate) connect_timeout: Duration,
    pub(crate) backlog: u32,
    pub(crate) user_timeout: Option<Duration>,
    pub(crate) disconnect_grace: Duration,
    pub(crate) ack_timeout: Duration,
    pub(crate) read_chunk: usize,
    pub(crate) send_buffer_size: Option<usize>,
    pub(crate) recv_buffer_size: Option<usize>,
    pub(crate) defer_options: Option<Duration>,
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            connect_timeout: Duration::from_secs(30),
            backlog: 1024,
            user_timeout: None,
            disconnect_grace: Duration::from_secs(5),
            ack_timeout: Duration::from_secs(60),
            read_chunk: 64 * 1024,
            send_buffer_size: None,
            recv_buffer_size: None,
            defer_options: None,
        }
    }
}

impl HostConfig {
    /// The defaults: connect timeout 30 s, backlog 1024, no `TCP_USER_TIMEOUT`,
    /// disconnect grace 5 s, acknowledgement timeout 60 s, 64 KiB reads, the
    /// kernel's buffer sizes, options set at once.
    pub fn new() -> HostConfig {
        HostConfig::default()
    }

    /// The connect timeout used when [`ConnectOptions`](conflux_tcp::ConnectOptions) has none.
    pub fn connect_timeout(mut self, timeout: Duration) -> HostConfig {
        self.connect_timeout = timeout;
        self
    }

    /// The listen backlog (pending, not yet accepted connections).
    pub fn backlog(mut self, backlog: u32) -> HostConfig {
        self.backlog = backlog;
        self
    }

    /// `TCP_USER_TIMEOUT`: how long written data may stay unacknowledged
    /// before the kernel drops the connection (then writes fail, reads end).
    pub fn user_timeout(mut self, timeout: Option<Duration>) -> HostConfig {
        self.user_timeout = timeout;
        self
    }

    /// How long [`disconnect`](conflux_tcp::TcpStack::disconnect) waits for
    /// callback tasks before aborting them.
    pub fn disconnect_grace(mut self, grace: Duration) -> HostConfig {
        self.disconnect_grace = grace;
        self
    }

    /// How long `write_nodelay` waits for the peer's acknowledgements before
    /// failing with a timed-out error.
    pub fn ack_timeout(mut self, timeout: Duration) -> HostConfig {
        self.ack_timeout = timeout;
        self
    }

    /// The most bytes one read returns (at least 1).
    pub fn read_chunk(mut self, bytes: usize) -> HostConfig {
        self.read_chunk = bytes.max(1);
        self
    }

    /// `SO_SNDBUF` for every new flow (before connect; listeners pass it on
    /// to accepted flows). The kernel doubles the value for bookkeeping.
    pub fn send_buffer_size(mut self, bytes: Option<usize>) -> HostConfig {
        self.send_buffer_size = bytes;
        self
    }

    /// Sets the user timeout and the keepalive of a connection made by
    /// `create_connection` whose handshake completed within its `connect`
    /// call (a peer on this machine) only once it has lived `delay` (within
    /// 1.5 `delay`, by a task of the stack): a connection that ends sooner
    /// never pays their five system calls. They only matter to a
    /// connection that lives long (a peer silent for the keepalive's idle
    /// time, or data unacknowledged for the user timeout), and Linux times
    /// them from the last segment received and from the oldest
    /// unacknowledged segment's first send, as if set at the connect.
    /// Other connections (the handshake still under way after the call,
    /// or accepted by a listener) get them at once. `None` (the default):
    /// at once, every connection.
    pub fn defer_options(mut self, delay: Option<Duration>) -> HostConfig {
        self.defer_options = delay;
        self
    }

    /// `SO_RCVBUF` for every new flow (before connect or listen, so the window
    /// scale fits it).
    pub fn recv_buffer_size(mut self, bytes: Option<usize>) -> HostConfig {
        self.recv_buffer_size = bytes;
        self
    }
}

/// Linux's limit on `TCP_KEEPIDLE` and `TCP_KEEPINTVL`, in seconds.
const MAX_KEEPALIVE_SECS: u64 = 32_767;

/// Whole seconds, rounded up, at least 1 and at most Linux's limit.
fn whole_secs(d: Duration) -> Duration {
    let secs = d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0));
    Duration::from_secs(secs.clamp(1, MAX_KEEPALIVE_SECS))
}

/// The keepalive the kernel will really run: `after` and `interval` rounded
/// up to whole seconds (at least 1, at most 32767), `probes` clamped to
/// 1..=127.
pub fn kernel_keepalive(ka: &Keepalive) -> Keepalive {
    Keepalive { after: whole_secs(ka.after), interval: whole_secs(ka.interval), probes: ka.probes.clamp(1, 127) }
}

/// When Linux declares a silent peer dead, counted from the last received
/// segment: `after + probes * interval` of [`kernel_keepalive`] (measured 4.09
/// s for 1 s / 1 s / 3). Upstream's direct stack waits one interval more.
pub fn keepalive_deadline(ka: &Keepalive) -> Duration {
    let k = kernel_keepalive(ka);
    k.after + k.interval * k.probes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_rules() {
        let ka = Keepalive::new(Duration::from_millis(1500), Duration::ZERO, 0);
        let k = kernel_keepalive(&ka);
        assert_eq!((k.after, k.interval, k.probes), (Duration::from_secs(2), Duration::from_secs(1), 1));
        let huge = Keepalive::new(Duration::MAX, Duration::from_secs(3), 1000);
        let k = kernel_keepalive(&huge);
        assert_eq!((k.after, k.probes), (Duration::from_secs(32_767), 127));
        let exact = Keepalive::new(Duration::from_secs(1), Duration::from_secs(1), 3);
        assert_eq!(keepalive_deadline(&exact), Duration::from_secs(4));
    }
}

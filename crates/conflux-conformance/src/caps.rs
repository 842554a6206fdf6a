//! Capability flags: what a transport promises beyond the always-required core.

use std::time::Duration;

/// What a transport under test can do, as declared by its [`FlowFactory`](crate::FlowFactory).
///
/// A case (or part of a case) that needs a capability the transport lacks is
/// reported as a visible `capability` skip, never passed silently.
///
/// [`Caps::default`] is a conservative, full-featured kernel-like set (what kernel
/// TCP on loopback offers): everything on except `close_waits_for_peer`,
/// `peer_sees_read_shutdown` and `virtual_time`. In-memory transports start from
/// [`Caps::in_memory`]. Adjust with struct update syntax:
///
/// ```
/// use conflux_conformance::Caps;
/// let caps = Caps { abort_resets: false, ..Caps::in_memory() };
/// assert!(caps.virtual_time && !caps.kernel_fds);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// `shutdown(Write)` gives the peer Eof while the other direction keeps
    /// working. Without it B1-B6, B8, B9, F2, G1, G2, J1 and J2 are skipped.
    pub half_close: bool,
    /// `shutdown(Read)` makes later reads return Eof at once. Without it B7 and B8
    /// are skipped, and B2 skips its shutdown(Read) part.
    pub read_shutdown: bool,
    /// After our `shutdown(Read)` the peer's writes fail within a bounded number of
    /// attempts (the pipe does this; kernel TCP does not: `SHUT_RD` is local). With
    /// it B7 also checks the peer's side.
    pub peer_sees_read_shutdown: bool,
    /// `close` waits (bounded) until the peer closes too, as the hvsock framing
    /// does. The kit then closes both ends together wherever a case closes one, and
    /// C5 allows close up to the case timeout minus two seconds instead of two seconds.
    pub close_waits_for_peer: bool,
    /// Each direction buffers a bounded amount: a 16 MiB write with no reader stays
    /// pending. Without it A6 is skipped.
    pub bounded_buffer: bool,
    /// `abort` makes the peer read an error with `is_reset()`. Without it the abort
    /// parts of C4, D4 and J1/J2 are skipped, and D2 (which needs a way to provoke a
    /// read error) is skipped.
    pub abort_resets: bool,
    /// The factory works under tokio's paused clock (in-memory transports only:
    /// the paused clock jumps ahead while a kernel call is pending). The kit then
    /// runs each case on a current-thread runtime with `start_paused`; otherwise on
    /// a multi-thread runtime with two workers.
    pub virtual_time: bool,
    /// The flows hold kernel file descriptors: F3 also checks that every socket
    /// descriptor opened by a pair is gone from `/proc/self/fd` after close or drop.
    pub kernel_fds: bool,
    /// The bound on one whole case; a case still running then fails as a hang.
    pub case_timeout: Duration,
}

impl Caps {
    /// The default case timeout: generous for debug builds on two cores, still bounded.
    pub const CASE_TIMEOUT: Duration = Duration::from_secs(20);

    /// A full-featured in-memory transport: the default set with `virtual_time`
    /// on and `kernel_fds` off.
    pub const fn in_memory() -> Caps {
        Caps { virtual_time: true, kernel_fds: false, ..Caps::kernel() }
    }

    /// The default: what kernel TCP on loopback offers.
    pub const fn kernel() -> Caps {
        Caps {
            half_close: true,
            read_shutdown: true,
            peer_sees_read_shutdown: false,
            close_waits_for_peer: false,
            bounded_buffer: true,
            abort_resets: true,
            virtual_time: false,
            kernel_fds: true,
            case_timeout: Caps::CASE_TIMEOUT,
        }
    }
}

impl Default for Caps {
    fn default() -> Caps {
        Caps::kernel()
    }
}

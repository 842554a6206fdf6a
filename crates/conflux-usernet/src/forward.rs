//! The TCP side of the forwarder: a guest connection's host connection
//! first, then the relay between the two.

use std::io::IoSlice;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use conflux_flow::{Direction, Flow, FlowError, FlowExt, ProxyError, Shutdown, proxy};
use conflux_tcp::{ConnectError, ConnectOptions, Keepalive, TcpFlow, TcpStack};
use tokio::io::ReadBuf;

use crate::policy::{Policy, Refusal};
use crate::stats::Stats;

/// Why a guest connection got no host connection: the guest is answered
/// with an RST either way.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// The policy refused the destination; nothing was dialled.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The host connect failed (refused, timed out, no route).
    #[error(transparent)]
    Connect(#[from] ConnectError),
}

/// How a relayed flow ended.
#[derive(Debug)]
pub enum FlowEnd {
    /// Both directions reached Eof (half-closes passed on).
    Closed,
    /// A reset or another error on one side ended it (a keepalive expiry
    /// too: a side whose peer stopped answering fails timed out); the other
    /// side was aborted.
    Failed(ProxyError),
}

/// What a relay moved, and how it ended.
#[derive(Debug)]
pub struct Relayed {
    /// Bytes from the guest to the host side.
    pub out: u64,
    /// Bytes from the host side to the guest.
    pub inn: u64,
    /// How it ended.
    pub end: FlowEnd,
}

/// The forwarder's TCP half over any host-side [`TcpStack`] (the kernel's
/// through conflux-tcp-host, or another userspace stack).
///
/// For each guest connection the caller first calls
/// [`connect`](TcpForwarder::connect) (before the guest's SYN is answered,
/// so a refused host port is refused to the guest, not a connection that
/// resets at once), then accepts the guest's flow and hands both to
/// [`relay`](TcpForwarder::relay), which passes data, half-closes and resets
/// on both ways, counts in [`Stats`] and logs one line per flow. A host
/// connection whose keepalive expires (its peer gone silent) ends the flow
/// as timed out, the guest's side aborted (the guest reads a reset), never
/// as the host's FIN.
pub struct TcpForwarder<S> {
    policy: Policy,
    host: S,
    stats: Arc<Stats>,
    options: ConnectOptions,
    next_id: AtomicU64,
}

impl<S> std::fmt::Debug for TcpForwarder<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpForwarder").field("policy", &self.policy).finish_non_exhaustive()
    }
}

impl<S: TcpStack> TcpForwarder<S> {
    /// A forwarder deciding with `policy`, connecting through `host`,
    /// counting in `stats`; host connects time out after 10 s.
    pub fn new(policy: Policy, host: S, stats: Arc<Stats>) -> TcpForwarder<S> {
        let options = ConnectOptions { timeout: Some(Duration::from_secs(10)), ..ConnectOptions::new() };
        TcpForwarder { policy, host, stats, options, next_id: AtomicU64::new(1) }
    }

    /// Host connects give up after `timeout` (the guest then gets an RST).
    pub fn connect_timeout(mut self, timeout: Duration) -> TcpForwarder<S> {
        self.options.timeout = Some(timeout);
        self
    }

    /// Keepalive on the host connections (`None`, the default here: off;
    /// a [`Usernet`](crate::Usernet) sets its config's `host_keepalive`).
    pub fn keepalive(mut self, keepalive: Option<Keepalive>) -> TcpForwarder<S> {
        self.options.keepalive = keepalive;
        self
    }

    /// The counters.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// The host connection for the guest's connection from `guest` to `dst`:
    /// where the policy sends it, connected. A refusal or failure is counted
    /// (and logged at debug).
    pub async fn connect(&self, guest: SocketAddr, dst: SocketAddr) -> Result<S::Flow, ForwardError> {
        let result = match self.policy.route(dst) {
            Ok(host) => self.host.create_connection(host, self.options).await.map_err(ForwardError::from),
            Err(refusal) => Err(refusal.into()),
        };
        if let Err(e) = &result {
            self.stats.refused();
            tracing::debug!(%guest, %dst, error = %e, "guest connection refused");
        }
        result
    }

    /// Relays between the guest's flow and its host connection until both
    /// directions end, then closes both (aborts both when it failed: a
    /// reset, a timeout, an error; the host connection's keepalive expiry
    /// is such a timeout, not an end of its stream). Logs one line (id,
    /// guest, dst, bytes each way, duration, how it ended).
    pub async fn relay<G: Flow>(
        &self,
        guest_flow: G,
        host_flow: S::Flow,
        guest: SocketAddr,
        dst: SocketAddr,
    ) -> Relayed {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        relay(guest_flow, Expiring::new(host_flow, "host"), &self.stats, id, guest, dst).await
    }
}

/// A TCP flow whose keepalive expiry, an Eof by the TCP contract (told
/// apart from the peer's FIN by [`TcpFlow::expired`]), reads as a timed-out
/// error instead, and so do the writes that fail after it: the relay then
/// aborts the other side and counts the flow timed out, where an Eof would
/// pass a FIN on and hand a dead peer's stream on as complete.
pub(crate) struct Expiring<F> {
    inner: F,
    /// Whose peer it is, for the error: "guest" or "host".
    side: &'static str,
}

impl<F: TcpFlow> Expiring<F> {
    pub(crate) fn new(inner: F, side: &'static str) -> Expiring<F> {
        Expiring { inner, side }
    }

    fn timed_out(&self) -> FlowError {
        FlowError::timed_out(format!("keepalive: the {} stopped answering", self.side))
    }

    /// A write's error: timed out once the keepalive expired.
    fn write_error<T>(&self, polled: Poll<Result<T, FlowError>>) -> Poll<Result<T, FlowError>> {
        match polled {
            Poll::Ready(Err(e)) if e.is_closed() && self.inner.expired() => Poll::Ready(Err(self.timed_out())),
            other => other,
        }
    }
}

impl<F: TcpFlow> Flow for Expiring<F> {
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, FlowError>> {
        match self.inner.poll_read(cx) {
            Poll::Ready(Ok(None)) if self.inner.expired() => Poll::Ready(Err(self.timed_out())),
            other => other,
        }
    }

    fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
        rest: &mut Bytes,
    ) -> Poll<Result<(), FlowError>> {
        let (filled, room) = (buf.filled().len(), buf.remaining() > 0);
        match self.inner.poll_read_into(cx, buf, rest) {
            // Eof: nothing read into the room there was.
            Poll::Ready(Ok(())) if room && buf.filled().len() == filled && rest.is_empty() && self.inner.expired() => {
                Poll::Ready(Err(self.timed_out()))
            }
            other => other,
        }
    }

    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &mut Bytes) -> Poll<Result<(), FlowError>> {
        let polled = self.inner.poll_write(cx, buf);
        self.write_error(polled)
    }

    fn poll_writev(&mut self, cx: &mut Context<'_>, bufs: &mut [Bytes]) -> Poll<Result<(), FlowError>> {
        let polled = self.inner.poll_writev(cx, bufs);
        self.write_error(polled)
    }

    fn poll_write_borrowed(&mut self, cx: &mut Context<'_>, bufs: &[IoSlice<'_>]) -> Poll<Result<usize, FlowError>> {
        let polled = self.inner.poll_write_borrowed(cx, bufs);
        self.write_error(polled)
    }

    fn is_write_borrowed(&self) -> bool {
        self.inner.is_write_borrowed()
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), FlowError>> {
        let polled = self.inner.poll_flush(cx);
        self.write_error(polled)
    }

    fn poll_shutdown(&mut self, cx: &mut Context<'_>, how: Shutdown) -> Poll<Result<(), FlowError>> {
        self.inner.poll_shutdown(cx, how)
    }

    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), FlowError>> {
        self.inner.poll_close(cx)
    }

    fn poll_abort(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), FlowError>> {
        self.inner.poll_abort(cx)
    }
}

/// Relays between `a` (the guest's side: bytes from it count as out) and
/// `b` until both directions end, then closes both (aborts both after a
/// failure); counts and logs it.
pub(crate) async fn relay<A: Flow, B: Flow>(
    mut a: A,
    mut b: B,
    stats: &Stats,
    id: u64,
    from: SocketAddr,
    to: SocketAddr,
) -> Relayed {
    stats.flow_opened();
    // A relay dropped midway (its task aborted) still counts its flow closed.
    let mut open = OpenFlow(Some(stats));
    let started = std::time::Instant::now();
    let result = proxy(&mut a, &mut b).await;
    let (out, inn, end) = match result {
        Ok(s) => (s.a_to_b.bytes, s.b_to_a.bytes, FlowEnd::Closed),
        Err(e) => (e.stats.a_to_b.bytes, e.stats.b_to_a.bytes, FlowEnd::Failed(e)),
    };
    match &end {
        FlowEnd::Closed => {
            let _ = a.close().await;
            let _ = b.close().await;
        }
        // A reset was passed on already; any other failure (a side's stack
        // timed it out, an I/O error) ends both sides with an abort too:
        // a FIN would hand the other side a truncated stream as complete.
        FlowEnd::Failed(_) => {
            let _ = a.abort().await;
            let _ = b.abort().await;
        }
    }
    open.0 = None;
    stats.flow_closed(out, inn);
    if let FlowEnd::Failed(e) = &end {
        stats.flow_failed(e.source.is_timed_out());
    }
    let how = how_it_ended(&end);
    tracing::info!(id, %from, %to, out, inn, ms = started.elapsed().as_millis() as u64, end = %how, "flow ended");
    Relayed { out, inn, end }
}

/// How a relay (`a` the guest's side) ended, for its log line: `eof`,
/// `reset (guest -> host)`, `timed out (host -> guest): timed out:
/// keepalive: the host stopped answering`, `error: ...`. Written out only
/// for a flow that failed: a clean end costs no allocation.
fn how_it_ended(end: &FlowEnd) -> std::borrow::Cow<'static, str> {
    let FlowEnd::Failed(e) = end else { return "eof".into() };
    let direction = match e.direction {
        Direction::AToB => "guest -> host",
        Direction::BToA => "host -> guest",
    };
    if e.source.is_reset() {
        format!("reset ({direction})").into()
    } else if e.source.is_timed_out() {
        format!("timed out ({direction}): {}", e.source).into()
    } else {
        format!("error ({direction}): {e}").into()
    }
}

/// Counts a flow closed when dropped armed.
struct OpenFlow<'a>(Option<&'a Stats>);

impl Drop for OpenFlow<'_> {
    fn drop(&mut self) {
        if let Some(stats) = self.0.take() {
            stats.flow_closed(0, 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use conflux_flow::pipe;

    use super::*;

    /// A guest flow whose stack gave up on it: every read fails timed out
    /// (what a netstack flow returns at its user timeout).
    struct TimedOut;

    impl Flow for TimedOut {
        fn poll_read(&mut self, _cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, FlowError>> {
            Poll::Ready(Err(FlowError::timed_out("sent data unacknowledged for the user timeout")))
        }
        fn poll_write(&mut self, _cx: &mut Context<'_>, buf: &mut Bytes) -> Poll<Result<(), FlowError>> {
            buf.clear();
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(&mut self, _cx: &mut Context<'_>, _how: Shutdown) -> Poll<Result<(), FlowError>> {
            Poll::Ready(Ok(()))
        }
        fn poll_close(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), FlowError>> {
            Poll::Ready(Ok(()))
        }
    }

    /// A TCP flow at its end: every read is Eof, every write `Closed`;
    /// `expired` says whether that end was a keepalive expiry.
    struct Ended {
        expired: bool,
    }

    impl Flow for Ended {
        fn poll_read(&mut self, _cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, FlowError>> {
            Poll::Ready(Ok(None))
        }
        fn poll_write(&mut self, _cx: &mut Context<'_>, _buf: &mut Bytes) -> Poll<Result<(), FlowError>> {
            Poll::Ready(Err(FlowError::closed()))
        }
        fn poll_shutdown(&mut self, _cx: &mut Context<'_>, _how: Shutdown) -> Poll<Result<(), FlowError>> {
            Poll::Ready(Ok(()))
        }
        fn poll_close(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), FlowError>> {
            Poll::Ready(Ok(()))
        }
    }

    impl TcpFlow for Ended {
        fn dst(&self) -> SocketAddr {
            "192.0.2.10:80".parse().unwrap()
        }
        fn src(&self) -> SocketAddr {
            "192.0.2.1:40000".parse().unwrap()
        }
        fn set_nodelay(&mut self, _nodelay: bool) -> Result<(), FlowError> {
            Ok(())
        }
        fn poll_writev_nodelay(&mut self, _cx: &mut Context<'_>, _bufs: &mut [Bytes]) -> Poll<Result<(), FlowError>> {
            Poll::Ready(Err(FlowError::closed()))
        }
        fn expired(&self) -> bool {
            self.expired
        }
    }

    /// An expiry's Eof, read either way, and the writes after it fail timed
    /// out, naming the side; a FIN's Eof and a write after it pass as they
    /// came.
    #[tokio::test]
    async fn an_expirys_eof_reads_as_timed_out_and_a_fins_as_eof() {
        let mut dead = Expiring::new(Ended { expired: true }, "host");
        let read = dead.read().await;
        assert!(read.as_ref().is_err_and(FlowError::is_timed_out), "{read:?}");
        assert_eq!(read.unwrap_err().to_string(), "timed out: keepalive: the host stopped answering");
        let mut room = [0u8; 16];
        let mut buf = ReadBuf::new(&mut room);
        let into = std::future::poll_fn(|cx| dead.poll_read_into(cx, &mut buf, &mut Bytes::new())).await;
        assert!(into.is_err_and(|e| e.is_timed_out()));
        assert!(dead.write("x").await.is_err_and(|e| e.is_timed_out()));
        // No room to read into is not an Eof.
        let mut none = ReadBuf::new(&mut []);
        assert!(std::future::poll_fn(|cx| dead.poll_read_into(cx, &mut none, &mut Bytes::new())).await.is_ok());

        let mut fin = Expiring::new(Ended { expired: false }, "guest");
        assert!(matches!(fin.read().await, Ok(None)));
        let mut buf = ReadBuf::new(&mut room);
        assert!(std::future::poll_fn(|cx| fin.poll_read_into(cx, &mut buf, &mut Bytes::new())).await.is_ok());
        assert!(fin.write("x").await.is_err_and(|e| e.is_closed()));
    }

    /// A guest flow that timed out ends its host side with an abort (the
    /// host peer reads a reset), never a FIN that would pass the guest's
    /// truncated stream on as complete; counted failed and timed out.
    #[tokio::test]
    async fn a_timed_out_guest_flow_aborts_its_host_side() {
        let (host_side, mut host_peer) = pipe(64 * 1024);
        let stats = Stats::default();
        let (from, to) = ("10.0.2.100:40000".parse().unwrap(), "192.0.2.10:80".parse().unwrap());
        let relayed = relay(TimedOut, host_side, &stats, 1, from, to).await;
        assert!(matches!(&relayed.end, FlowEnd::Failed(e) if e.source.is_timed_out()), "{:?}", relayed.end);
        let read = host_peer.read().await;
        assert!(read.as_ref().is_err_and(FlowError::is_reset), "{read:?}");
        let s = stats.snapshot();
        assert_eq!((s.flows_open, s.flows_total, s.flows_failed, s.flows_timed_out), (0, 1, 1, 1), "{s}");
        assert_eq!(
            how_it_ended(&relayed.end),
            "timed out (guest -> host): timed out: sent data unacknowledged for the user timeout"
        );
    }
}

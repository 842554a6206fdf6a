//! A tokio-vsock-like API over any family: listeners, `incoming()`, connect
//! with a timeout, and a connect retry helper.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::Stream;

use crate::family::{Family, FamilyListener, Socket};
use crate::raw::RawFlow;

/// The backlog [`Listener::bind`] uses.
pub const DEFAULT_BACKLOG: u32 = 128;

/// A listening socket of any family that accepts [`RawFlow`]s
/// (call [`RawFlow::into_framed`] for the framing).
///
/// ```
/// use conflux_hvsock::testing::{MemAddr, MemFamily}; // the `testing` feature
/// use conflux_hvsock::{Listener, connect};
/// use conflux_flow::{FlowExt, Shutdown};
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let family = MemFamily::new();
/// let listener = Listener::bind(&family, &MemAddr::from("svc"))?;
/// let mut client = connect(&family, &MemAddr::from("svc"), None).await?;
/// let (mut server, peer) = listener.accept().await?;
/// client.write("hi").await?;
/// client.shutdown(Shutdown::Write).await?;
/// assert_eq!(server.read_to_end().await?, b"hi");
/// # let _ = peer;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
#[derive(Debug)]
pub struct Listener<L> {
    inner: L,
}

impl<L: FamilyListener> Listener<L> {
    /// Wraps a family listener.
    pub fn new(inner: L) -> Listener<L> {
        Listener { inner }
    }

    /// Creates, binds and listens on `addr` with [`DEFAULT_BACKLOG`].
    pub fn bind<F>(family: &F, addr: &F::Addr) -> io::Result<Listener<F::Listener>>
    where
        F: Family<Listener = L>,
    {
        Listener::bind_with_backlog(family, addr, DEFAULT_BACKLOG)
    }

    /// Creates, binds and listens on `addr` with `backlog`.
    pub fn bind_with_backlog<F>(family: &F, addr: &F::Addr, backlog: u32) -> io::Result<Listener<F::Listener>>
    where
        F: Family<Listener = L>,
    {
        Ok(Listener { inner: family.listen(addr, backlog)? })
    }

    /// Waits for a connection: the flow and the peer's address.
    pub async fn accept(&self) -> io::Result<(RawFlow<L::Socket>, L::Addr)> {
        let (sock, peer) = self.inner.accept().await?;
        Ok((RawFlow::new(sock), peer))
    }

    /// The address listened on.
    pub fn local_addr(&self) -> io::Result<L::Addr> {
        self.inner.local_addr()
    }

    /// The family listener underneath.
    pub fn get_ref(&self) -> &L {
        &self.inner
    }

    /// A stream of accepted flows (errors included; it never ends).
    pub fn incoming(&self) -> Incoming<'_, L::Socket> {
        let accept = move || {
            let fut = self.inner.accept();
            Box::pin(async move { fut.await.map(|(s, _)| RawFlow::new(s)) }) as AcceptFuture<'_, L::Socket>
        };
        Incoming { next: Box::new(accept), pending: None }
    }
}

type AcceptFuture<'a, S> = Pin<Box<dyn Future<Output = io::Result<RawFlow<S>>> + Send + 'a>>;

/// The stream of [`Listener::incoming`].
pub struct Incoming<'a, S: Socket> {
    next: Box<dyn Fn() -> AcceptFuture<'a, S> + Send + Sync + 'a>,
    pending: Option<AcceptFuture<'a, S>>,
}

impl<S: Socket> std::fmt::Debug for Incoming<'_, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Incoming").finish_non_exhaustive()
    }
}

impl<S: Socket> Stream for Incoming<'_, S> {
    type Item = io::Result<RawFlow<S>>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let fut = this.pending.get_or_insert_with(|| (this.next)());
        let r = std::task::ready!(fut.as_mut().poll(cx));
        this.pending = None;
        Poll::Ready(Some(r))
    }
}

/// Connects to `addr` on a fresh socket; `Err(TimedOut)` after `timeout`
/// (the family's default when `None`).
/// The future holds no borrow of `family` or `addr`.
pub fn connect<F: Family>(
    family: &F,
    addr: &F::Addr,
    timeout: Option<Duration>,
) -> impl Future<Output = io::Result<RawFlow<F::Socket>>> + Send + 'static {
    let fut = family.connect(addr, timeout);
    async move { Ok(RawFlow::new(fut.await?)) }
}

/// How [`connect_retry`] retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all (at least 1).
    pub attempts: u32,
    /// The bound on each attempt.
    pub attempt_timeout: Option<Duration>,
    /// The pause after the first failure; doubled after each, up to `max_delay`.
    pub initial_delay: Duration,
    /// The longest pause.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    /// 10 attempts of 2 s each, pausing 50 ms, doubling up to 1 s.
    fn default() -> Self {
        RetryPolicy {
            attempts: 10,
            attempt_timeout: Some(Duration::from_secs(2)),
            initial_delay: Duration::from_millis(50),
            max_delay: Duration::from_secs(1),
        }
    }
}

/// Connects with retries, a fresh socket per attempt (a vsock socket whose
/// connect failed cannot be reused). Retries refused, timed-out, reset and
/// not-found failures (a VM still booting); other errors end at once. Returns
/// the last error when every attempt failed.
pub async fn connect_retry<F: Family>(
    family: &F,
    addr: &F::Addr,
    policy: RetryPolicy,
) -> io::Result<RawFlow<F::Socket>> {
    let mut delay = policy.initial_delay;
    let attempts = policy.attempts.max(1);
    let mut attempt = 1;
    loop {
        match connect(family, addr, policy.attempt_timeout).await {
            Ok(flow) => return Ok(flow),
            Err(e) if attempt < attempts && retryable(&e) => {
                tracing::debug!(attempt, error = %e, %addr, "connect failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(policy.max_delay);
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

fn retryable(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::TimedOut
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::NotFound
            | io::ErrorKind::Interrupted
    ) || e.raw_os_error() == Some(libc::ENODEV)
        || e.raw_os_error() == Some(libc::EHOSTUNREACH)
}

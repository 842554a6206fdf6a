//! The TLS flow as a layered flow: G5 (it closes its lower flow on close,
//! after close_notify, and once the session is fully shut down), observed on
//! the lower flow itself; and the flow kit over TLS over an in-memory pipe.
#![forbid(unsafe_code)]

mod fixtures;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use conflux_conformance::{Caps, FlowFactory, PairFuture, flow_conformance};
use conflux_flow::{Bytes, Flow, FlowError, FlowExt, FlowIo, Pipe, Shutdown, pipe};
use conflux_mimic::TlsFlow;
use conflux_testkit::{TIMEOUT, within};
use fixtures::tls_configs as configs;
use rustls::pki_types::ServerName;
use tokio::io::AsyncReadExt;

fn localhost() -> ServerName<'static> {
    ServerName::try_from("localhost").unwrap()
}

/// What happened to a lower flow, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ev {
    ShutdownWrite,
    ShutdownRead,
    Close,
    Abort,
}

type Log = Arc<Mutex<Vec<Ev>>>;

/// A pipe end that logs its shutdowns, closes and aborts.
#[derive(Debug)]
struct Logged {
    inner: Pipe,
    log: Log,
}

impl Logged {
    fn new(inner: Pipe) -> (Logged, Log) {
        let log = Log::default();
        (Logged { inner, log: log.clone() }, log)
    }

    fn push(&self, ev: Ev) {
        self.log.lock().unwrap().push(ev);
    }
}

impl Flow for Logged {
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, FlowError>> {
        self.inner.poll_read(cx)
    }
    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &mut Bytes) -> Poll<Result<(), FlowError>> {
        self.inner.poll_write(cx, buf)
    }
    fn poll_writev(&mut self, cx: &mut Context<'_>, bufs: &mut [Bytes]) -> Poll<Result<(), FlowError>> {
        self.inner.poll_writev(cx, bufs)
    }
    fn poll_shutdown(&mut self, cx: &mut Context<'_>, how: Shutdown) -> Poll<Result<(), FlowError>> {
        let r = ready!(self.inner.poll_shutdown(cx, how));
        if how.writes() {
            self.push(Ev::ShutdownWrite);
        }
        if how.reads() {
            self.push(Ev::ShutdownRead);
        }
        Poll::Ready(r)
    }
    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), FlowError>> {
        let r = ready!(self.inner.poll_close(cx));
        self.push(Ev::Close);
        Poll::Ready(r)
    }
    fn poll_abort(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), FlowError>> {
        let r = ready!(self.inner.poll_abort(cx));
        self.push(Ev::Abort);
        Poll::Ready(r)
    }
}

fn events(log: &Log) -> Vec<Ev> {
    log.lock().unwrap().clone()
}

#[tokio::test]
async fn g5_close_sends_close_notify_then_closes_the_lower_flow() {
    let (client_cfg, server_cfg) = configs();
    let (a, b) = pipe(64 * 1024);
    let (lower, log) = Logged::new(a);
    // The server is plain tokio-rustls over the raw pipe end, so the test can
    // read that pipe itself once TLS is done with it.
    let (client, server) = tokio::join!(
        TlsFlow::connect(client_cfg, localhost(), lower),
        tokio_rustls::TlsAcceptor::from(server_cfg).accept(FlowIo::new(b))
    );
    let (mut client, mut server) = (client.unwrap(), server.unwrap());
    client.write("before close").await.unwrap();
    let mut got = vec![0; 12];
    within("read", TIMEOUT, server.read_exact(&mut got)).await.unwrap();
    assert_eq!(got, b"before close");
    assert!(events(&log).is_empty() && !client.is_lower_closed());

    within("close", TIMEOUT, client.close()).await.unwrap();
    // close_notify went out with the lower flow's shutdown(Write), then the lower flow was closed.
    assert_eq!(events(&log), [Ev::ShutdownWrite, Ev::Close]);
    assert!(client.is_lower_closed() && client.lower().is_none());
    // The peer reads the close_notify as a clean end of the TLS stream...
    let mut rest = Vec::new();
    within("tls eof", TIMEOUT, server.read_to_end(&mut rest)).await.unwrap();
    assert!(rest.is_empty());
    // ...and the lower pipe under it ends right after: Eof, nothing more, writes refused.
    let (io, _) = server.into_inner();
    let (mut raw, leftover) = io.into_parts();
    assert!(leftover.is_empty(), "bytes after close_notify: {leftover:?}");
    assert_eq!(within("raw eof", TIMEOUT, raw.read()).await.unwrap(), None);
    assert!(raw.write("late").await.unwrap_err().is_closed());

    // A second close does nothing more.
    client.close().await.unwrap();
    assert_eq!(events(&log), [Ev::ShutdownWrite, Ev::Close]);
    assert!(client.write("x").await.unwrap_err().is_closed());
}

#[tokio::test]
async fn g5_a_fully_shut_down_session_closes_its_lower_flow_without_waiting_for_close() {
    let (client_cfg, server_cfg) = configs();
    let (a, b) = pipe(64 * 1024);
    let (a, client_log) = Logged::new(a);
    let (b, server_log) = Logged::new(b);
    let (client, server) = tokio::join!(TlsFlow::connect(client_cfg, localhost(), a), TlsFlow::accept(server_cfg, b));
    let (mut client, mut server) = (client.unwrap(), server.unwrap());

    // The client half-closes: close_notify and the lower shutdown(Write), the lower flow stays open.
    client.write("request").await.unwrap();
    client.shutdown(Shutdown::Write).await.unwrap();
    assert_eq!(events(&client_log), [Ev::ShutdownWrite]);
    assert_eq!(within("request", TIMEOUT, server.read_to_end()).await.unwrap(), b"request");
    // The server has read the client's close_notify but not sent its own: still open.
    assert!(events(&server_log).is_empty() && !server.is_lower_closed());
    server.write("response").await.unwrap();
    // Its close_notify completes the session: its lower flow is closed at once.
    server.shutdown(Shutdown::Write).await.unwrap();
    assert_eq!(events(&server_log), [Ev::ShutdownWrite, Ev::Close]);
    assert!(server.is_lower_closed());

    // The client reads the response, then the server's close_notify: its lower flow is closed too.
    assert_eq!(within("response", TIMEOUT, client.read_to_end()).await.unwrap(), b"response");
    assert_eq!(events(&client_log), [Ev::ShutdownWrite, Ev::Close]);
    assert!(client.is_lower_closed());

    // Closing afterwards closes nothing twice.
    client.close().await.unwrap();
    server.close().await.unwrap();
    assert_eq!(events(&client_log), [Ev::ShutdownWrite, Ev::Close]);
    assert_eq!(events(&server_log), [Ev::ShutdownWrite, Ev::Close]);
}

#[tokio::test]
async fn g5_a_local_read_shutdown_is_not_a_full_shutdown_and_abort_aborts_the_lower_flow() {
    let (client_cfg, server_cfg) = configs();
    let (a, b) = pipe(64 * 1024);
    let (a, log) = Logged::new(a);
    let (client, server) = tokio::join!(TlsFlow::connect(client_cfg, localhost(), a), TlsFlow::accept(server_cfg, b));
    let (mut client, mut server) = (client.unwrap(), server.unwrap());
    client.shutdown(Shutdown::Both).await.unwrap();
    // Our reads end locally, the peer may still be sending: the lower flow stays open.
    assert_eq!(events(&log), [Ev::ShutdownWrite]);
    assert!(!client.is_lower_closed());
    assert_eq!(within("eof", TIMEOUT, server.read()).await.unwrap(), None);
    client.abort().await.unwrap();
    assert_eq!(events(&log), [Ev::ShutdownWrite, Ev::Abort]);
    let err = within("reset", TIMEOUT, async {
        loop {
            match server.write("x").await {
                Ok(()) => tokio::task::yield_now().await,
                Err(e) => return e,
            }
        }
    })
    .await;
    assert!(err.is_closed() || err.is_reset(), "{err}");
}

/// A pipe end counted while it exists: the lower flows a TLS pair still holds.
#[derive(Debug)]
struct Tracked {
    inner: Pipe,
    live: Arc<AtomicUsize>,
}

impl Tracked {
    fn new(inner: Pipe, live: &Arc<AtomicUsize>) -> Tracked {
        live.fetch_add(1, Ordering::SeqCst);
        Tracked { inner, live: live.clone() }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.live.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Flow for Tracked {
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, FlowError>> {
        self.inner.poll_read(cx)
    }
    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &mut Bytes) -> Poll<Result<(), FlowError>> {
        self.inner.poll_write(cx, buf)
    }
    fn poll_writev(&mut self, cx: &mut Context<'_>, bufs: &mut [Bytes]) -> Poll<Result<(), FlowError>> {
        self.inner.poll_writev(cx, bufs)
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

/// TLS client and server over an in-memory pipe, under virtual time. F3
/// counts the lower pipe ends still held: a closed or dropped TLS flow must
/// have released its lower flow.
struct TlsPipes {
    client: Arc<rustls::ClientConfig>,
    server: Arc<rustls::ServerConfig>,
    live: Arc<AtomicUsize>,
}

impl TlsPipes {
    fn new() -> TlsPipes {
        let (client, server) = configs();
        TlsPipes { client, server, live: Arc::default() }
    }
}

impl FlowFactory for TlsPipes {
    type Flow = TlsFlow;

    fn caps(&self) -> Caps {
        // TLS has no read shutdown on the wire: the peer never sees ours.
        Caps { peer_sees_read_shutdown: false, ..Caps::in_memory() }
    }

    fn pair(&self) -> PairFuture<'_, TlsFlow> {
        Box::pin(async move {
            let (a, b) = pipe(64 * 1024);
            let (a, b) = (Tracked::new(a, &self.live), Tracked::new(b, &self.live));
            let (c, s) = tokio::join!(
                TlsFlow::connect(self.client.clone(), localhost(), a),
                TlsFlow::accept(self.server.clone(), b)
            );
            Ok((c?, s?))
        })
    }

    fn open_resources(&self) -> Option<usize> {
        Some(self.live.load(Ordering::SeqCst))
    }
}

flow_conformance!(tls_over_pipe, TlsPipes::new());

/// Each error of `e`'s source chain, outermost first.
fn chain(e: &(dyn std::error::Error + 'static)) -> Vec<String> {
    let mut out = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push(s.to_string());
        cur = s.source();
    }
    out
}

#[tokio::test]
async fn tls_connect_errors_say_each_message_once_along_the_source_chain() {
    use conflux_mimic::report::AttemptOutcome;
    use conflux_mimic::{Ctx, RegisterOptions, Registry, TlsEndpoint, protocol_fn, register_tls};
    let registry = Registry::new();
    let (tls, _) = register_tls(&registry, RegisterOptions::new().priority(10));
    // A lower flow whose peer answers in plain text: the handshake fails.
    let (plain, _) = registry.register(
        "plain",
        None,
        protocol_fn(|_: ()| async {
            let (a, mut b) = pipe(64 * 1024);
            tokio::spawn(async move {
                let _ = b.write("HTTP/1.0 400 not tls\r\n\r\n").await;
                let _ = b.close().await;
            });
            Ok::<_, std::io::Error>(a)
        }),
    );
    let (client_cfg, _) = configs();
    let handshake = TlsEndpoint::new(client_cfg.clone(), "localhost", Ctx::new().add(&plain, ())).unwrap();
    // A lower context with nothing in it: the lower flow cannot be resolved.
    let lower = TlsEndpoint::new(client_cfg, "localhost", Ctx::new()).unwrap();
    for (endpoint, first) in [(handshake, "TLS handshake failed"), (lower, "the flow under TLS could not be resolved")]
    {
        let err = within("resolve", TIMEOUT, registry.resolve(&Ctx::new().add(&tls, endpoint))).await.unwrap_err();
        let report = err.not_found().unwrap();
        let AttemptOutcome::Failed(e) = report.attempts()[0].outcome() else { panic!("{err}") };
        let messages = chain(&**e);
        assert_eq!(messages[0], first);
        assert!(messages.len() >= 2, "the cause is the source: {messages:?}");
        for pair in messages.windows(2) {
            assert!(!pair[0].contains(&pair[1]), "{:?} repeats its source {:?}", pair[0], pair[1]);
        }
        // The report still shows the whole chain, once.
        let text = err.to_string();
        assert!(text.contains(&messages.join(": ")), "{text}");
    }
}

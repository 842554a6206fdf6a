//! The `http` benchmark scenario group (`conflux-hyper`), on one
//! current_thread runtime per scenario.
//!
//! - `http-unix` (rate, requests/s): hyper-util's pooled client through
//!   conflux-hyper's `Connector` to `unix://` (the registry's raw Unix flow),
//!   against axum served by `AxumListener` on the same URI: `GET` of a 1 KiB
//!   body, keep-alive, 4 concurrent request loops, 5,000 requests a run (after
//!   an untimed warm-up run that opens the pooled connections), 15 runs of
//!   each side (31 in a full run), the two sides alternating run by run:
//!   short rounds and many pairs, so that the load of a shared machine hits
//!   both sides alike and the median ratio is steady.
//!   Baseline `hyper-unix`: the same client and app over tokio's
//!   `UnixStream` directly (`TokioIo`, `axum::serve` on a `UnixListener`),
//!   same run. Goal: ratio >= 0.95.
//! - `http-unix-framed` (rate): the same with `?framing=shutdown` on both
//!   sides; baseline `http-unix`, the unframed figure of the same run.
//!   Goal: ratio >= 0.9.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::Router;
use axum::routing::get;
use bytes::Bytes;
use conflux_hyper::{AxumListener, Connector};
use conflux_mimic::{Registry, register_all};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{UnixListener, UnixStream};

use crate::data::runtime;
use crate::{Ctx, Goal, Metric, Record, Scenario, Skip, measure_pair, rate_per_sec};

const REQUESTS: u64 = 5_000;
/// Runs of each side: full, quick.
const RUNS: (usize, usize) = (31, 15);
const CONCURRENCY: u64 = 4;
const BODY: usize = 1024;

/// The scenarios of the `http` group, in the order they run.
pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario { name: "http-unix", metric: Metric::Rate, goal: Goal::RatioAtLeast(0.95), run: unix },
        Scenario { name: "http-unix-framed", metric: Metric::Rate, goal: Goal::RatioAtLeast(0.9), run: unix_framed },
    ]
}

fn app() -> Router {
    let body = Bytes::from(vec![b'x'; BODY]);
    Router::new().route("/", get(move || std::future::ready(body.clone())))
}

/// Requests/s of `client`: `CONCURRENCY` loops sharing `REQUESTS` GETs.
async fn hammer<C>(client: &Client<C, Empty<Bytes>>) -> f64
where
    C: hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
{
    let start = Instant::now();
    let loops = (0..CONCURRENCY).map(|_| async {
        for _ in 0..REQUESTS / CONCURRENCY {
            let req = hyper::Request::get("http://localhost/").body(Empty::new()).expect("request");
            let resp = client.request(req).await.expect("response");
            let body = resp.into_body().collect().await.expect("body").to_bytes();
            assert_eq!(body.len(), BODY);
        }
    });
    futures_join_all(loops).await;
    rate_per_sec(REQUESTS, start.elapsed())
}

/// Runs the futures side by side on this task.
async fn futures_join_all<F: Future<Output = ()>>(futures: impl Iterator<Item = F>) {
    let mut futures: Vec<Pin<Box<F>>> = futures.map(Box::pin).collect();
    std::future::poll_fn(move |cx| {
        futures.retain_mut(|f| f.as_mut().poll(cx).is_pending());
        if futures.is_empty() { Poll::Ready(()) } else { Poll::Pending }
    })
    .await
}

/// hyper-util's connector for the baseline: tokio's `UnixStream` at one path.
#[derive(Clone)]
struct TokioUnix(PathBuf);

impl tower_service::Service<http::Uri> for TokioUnix {
    type Response = TokioIo<UnixStream>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<TokioIo<UnixStream>>> + Send>>;
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, _uri: http::Uri) -> Self::Future {
        let path = self.0.clone();
        Box::pin(async move { Ok(TokioIo::new(UnixStream::connect(path).await?)) })
    }
}

/// A client through conflux-hyper to axum on `uri` (listening there now).
async fn conflux_side(registry: &Registry, uri: &str) -> Result<Client<Connector, Empty<Bytes>>, Skip> {
    let listener = AxumListener::bind(registry, &uri.parse().map_err(|e| Skip::new(format!("uri: {e}")))?)
        .await
        .map_err(|e| Skip::new(format!("listen {uri}: {e}")))?;
    let endpoint = listener.local_uri().clone();
    tokio::spawn(async move { axum::serve(listener, app()).await });
    Ok(Client::builder(TokioExecutor::new()).build(Connector::new(registry.clone(), endpoint)))
}

/// The baseline: tokio's Unix sockets under the same client and app.
async fn tokio_side(path: &Path) -> Result<Client<TokioUnix, Empty<Bytes>>, Skip> {
    let listener = UnixListener::bind(path).map_err(|e| Skip::new(format!("bind {}: {e}", path.display())))?;
    tokio::spawn(async move { axum::serve(listener, app()).await });
    Ok(Client::builder(TokioExecutor::new()).build(TokioUnix(path.to_path_buf())))
}

fn unix(ctx: &Ctx<'_>) -> Result<Vec<Record>, Skip> {
    let rt = runtime();
    let dir = tempfile::tempdir().map_err(|e| Skip::new(format!("tempdir: {e}")))?;
    let registry = Registry::new();
    register_all(&registry);
    let (conflux, baseline) = rt.block_on(async {
        let conflux = conflux_side(&registry, &format!("unix://{}/conflux.sock", dir.path().display())).await?;
        let baseline = tokio_side(&dir.path().join("tokio.sock")).await?;
        Ok::<_, Skip>((conflux, baseline))
    })?;
    rt.block_on(async { (hammer(&conflux).await, hammer(&baseline).await) });
    let pair =
        measure_pair(ctx.runs(RUNS.0, RUNS.1), || rt.block_on(hammer(&conflux)), || rt.block_on(hammer(&baseline)));
    Ok(vec![ctx.record(&pair.measured).with_baseline("hyper-unix", &pair.baseline)])
}

fn unix_framed(ctx: &Ctx<'_>) -> Result<Vec<Record>, Skip> {
    let rt = runtime();
    let dir = tempfile::tempdir().map_err(|e| Skip::new(format!("tempdir: {e}")))?;
    let registry = Registry::new();
    register_all(&registry);
    let (framed, raw) = rt.block_on(async {
        let framed =
            conflux_side(&registry, &format!("unix://{}/framed.sock?framing=shutdown", dir.path().display())).await?;
        let raw = conflux_side(&registry, &format!("unix://{}/raw.sock", dir.path().display())).await?;
        Ok::<_, Skip>((framed, raw))
    })?;
    rt.block_on(async { (hammer(&framed).await, hammer(&raw).await) });
    let pair = measure_pair(ctx.runs(RUNS.0, RUNS.1), || rt.block_on(hammer(&framed)), || rt.block_on(hammer(&raw)));
    Ok(vec![ctx.record(&pair.measured).with_baseline("http-unix", &pair.baseline)])
}

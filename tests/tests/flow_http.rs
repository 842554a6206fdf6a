//! G4: an HTTP/1 request and response with hyper (server and client
//! connections through `hyper_util::rt::TokioIo`) over an in-memory flow
//! through `FlowIo`.

use bytes::Bytes;
use conflux_flow::{BoxFlow, Flow, FlowExt, FlowIo, pipe};
use conflux_testkit::{TIMEOUT, payload, within};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};

/// Answers `"<METHOD> <path>: <n> bytes, sum <s>"`, or 404 for `/missing`.
async fn handle(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let head = format!("{} {}", req.method(), req.uri().path());
    let missing = req.uri().path() == "/missing";
    let body = req.into_body().collect().await?.to_bytes();
    let sum: u64 = body.iter().map(|&b| u64::from(b)).sum();
    let mut resp = Response::new(Full::new(Bytes::from(format!("{head}: {} bytes, sum {sum}", body.len()))));
    if missing {
        *resp.status_mut() = StatusCode::NOT_FOUND;
    }
    Ok(resp)
}

/// Waits until the connection takes a request (hyper refuses one sent before
/// the previous response was fully read on a busy connection), then sends it.
async fn send(
    sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    what: &str,
    req: Request<Full<Bytes>>,
) -> Response<Incoming> {
    within(what, TIMEOUT, sender.ready()).await.unwrap_or_else(|e| panic!("{what}: connection not ready: {e}"));
    within(what, TIMEOUT, sender.send_request(req)).await.unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// Serves `server_side` with hyper and runs three requests over `client_side`.
async fn exchange<F: Flow>(client_side: F, server_side: F) {
    let server = tokio::spawn(async move {
        hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .serve_connection(TokioIo::new(FlowIo::new(server_side)), service_fn(handle))
            .await
    });
    let (mut sender, conn) = within(
        "the client handshake",
        TIMEOUT,
        hyper::client::conn::http1::handshake(TokioIo::new(FlowIo::new(client_side))),
    )
    .await
    .expect("client handshake");
    let client_conn = tokio::spawn(conn);

    let get = Request::get("/hello").header("host", "conflux.test").body(Full::new(Bytes::new())).unwrap();
    let resp = send(&mut sender, "GET", get).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let body = resp.into_body().collect().await.expect("GET body").to_bytes();
    assert_eq!(body, "GET /hello: 0 bytes, sum 0");

    // A body much larger than the pipe's buffer: backpressure through hyper.
    let upload = payload(0x64, 1 << 20);
    let sum: u64 = upload.iter().map(|&b| u64::from(b)).sum();
    let post = Request::post("/upload").header("host", "conflux.test").body(Full::new(upload)).unwrap();
    let resp = send(&mut sender, "POST", post).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let body = resp.into_body().collect().await.expect("POST body").to_bytes();
    assert_eq!(body, format!("POST /upload: 1048576 bytes, sum {sum}"));

    let missing = Request::get("/missing").header("host", "conflux.test").body(Full::new(Bytes::new())).unwrap();
    let resp = send(&mut sender, "GET /missing", missing).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);

    // Dropping the sender closes the client connection; the server then sees Eof and ends cleanly.
    drop(sender);
    within("the client connection's end", TIMEOUT, client_conn).await.unwrap().expect("client connection");
    within("the server connection's end", TIMEOUT, server).await.unwrap().expect("server connection");
}

#[tokio::test]
async fn request_and_response_over_a_pipe() {
    let (client, server) = pipe(16 * 1024);
    exchange(client, server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_and_response_over_boxed_pipes_on_two_threads() {
    let (client, server) = pipe(16 * 1024);
    exchange::<BoxFlow>(client.boxed(), server.boxed()).await;
}

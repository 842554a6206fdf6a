//! axum over vsock, or over any URI conflux listens on, and its client.
//!
//! In a VM (or an enclave) serve on a vsock port; from the host, ask it:
//!
//! ```text
//! cargo run -p conflux-hyper --example axum_over_vsock -- serve                    # vsock://:8080
//! cargo run -p conflux-hyper --example axum_over_vsock -- get vsock://3:8080/hello
//! cargo run -p conflux-hyper --example axum_over_vsock -- get 'fc-vsock:///srv/vm1/v.sock?port=8080'
//! cargo run -p conflux-hyper --example axum_over_vsock -- serve 'unix:///tmp/app.sock?framing=shutdown'
//! ```
//!
//! `serve URI` (default `vsock://:8080`: every CID, port 8080) prints the
//! URI a client dials, then serves `/hello` and `/peer`; `get URI[/PATH]`
//! (default `vsock://3:8080`, path `/hello`) prints the response body. A
//! path in `get`'s URI is split off as the request path, except for the
//! schemes whose address is a path (`unix`, `fc-vsock`): give those the
//! request path as a third argument.

use axum::Router;
use axum::extract::ConnectInfo;
use axum::routing::get;
use conflux_hyper::{AxumListener, Connector, Peer};
use conflux_mimic::{Registry, register_all};
use conflux_uri::Uri;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// The default listening URI.
pub(crate) const SERVE_DEFAULT: &str = "vsock://:8080";
/// The default URI the client dials.
pub(crate) const GET_DEFAULT: &str = "vsock://3:8080";

/// The app: `/hello` and `/peer` (who connected, as the listener saw it).
pub(crate) fn app() -> Router {
    Router::new()
        .route("/hello", get(|| async { "hello from axum over conflux\n" }))
        .route("/peer", get(|ConnectInfo(peer): ConnectInfo<Peer>| async move { format!("{peer}\n") }))
}

/// Listens on `uri`.
pub(crate) async fn listen(registry: &Registry, uri: &str) -> Result<AxumListener, Box<dyn std::error::Error>> {
    Ok(AxumListener::bind(registry, &uri.parse::<Uri>()?).await?)
}

/// Serves [`app`] on `listener` until the process ends.
pub(crate) async fn serve(listener: AxumListener) -> std::io::Result<()> {
    axum::serve(listener, app().into_make_service_with_connect_info::<Peer>()).await
}

/// GETs `path` from the server at `endpoint`; the status and body.
pub(crate) async fn fetch(
    registry: &Registry,
    endpoint: &str,
    path: &str,
) -> Result<(u16, String), Box<dyn std::error::Error + Send + Sync>> {
    let connector = Connector::new(registry.clone(), endpoint.parse()?);
    let client: Client<Connector, Full<bytes::Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    let request = hyper::Request::get(format!("http://localhost{path}")).body(Full::default())?;
    let response = client.request(request).await?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// `vsock://3:8080/peer` to (`vsock://3:8080`, `/peer`); URIs whose address
/// is a path keep it.
pub(crate) fn split_path(uri: &str) -> (String, Option<String>) {
    let path_schemes = ["unix:", "fc-vsock:", "hyperkit:", "stdio:"];
    if path_schemes.iter().any(|s| uri.starts_with(s)) {
        return (uri.to_string(), None);
    }
    let Some((scheme, rest)) = uri.split_once("://") else { return (uri.to_string(), None) };
    let (rest, query) = rest.split_once('?').map_or((rest, None), |(r, q)| (r, Some(q)));
    match rest.find('/') {
        Some(i) => {
            let query = query.map(|q| format!("?{q}")).unwrap_or_default();
            (format!("{scheme}://{}{query}", &rest[..i]), Some(rest[i..].to_string()))
        }
        None => (uri.to_string(), None),
    }
}

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        // The whole chain: hyper-util's own text is only "client error (Connect)".
        let chain: Vec<String> = std::iter::successors(Some(&*e as &dyn std::error::Error), |e| e.source())
            .map(ToString::to_string)
            .collect();
        eprintln!("axum_over_vsock: {}", chain.join(": "));
        std::process::exit(1);
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let registry = Registry::new();
    register_all(&registry);
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("serve") => {
            let uri = args.get(1).map_or(SERVE_DEFAULT, String::as_str);
            let listener = listen(&registry, uri).await.map_err(|e| e.to_string())?;
            println!("listening; dial {}", listener.local_uri());
            serve(listener).await?;
        }
        Some("get") => {
            let (endpoint, path) = split_path(args.get(1).map_or(GET_DEFAULT, String::as_str));
            let path = args.get(2).cloned().or(path).unwrap_or_else(|| "/hello".to_string());
            let (status, body) = fetch(&registry, &endpoint, &path).await?;
            if status != 200 {
                return Err(format!("HTTP {status}: {body}").into());
            }
            print!("{body}");
        }
        _ => return Err("usage: axum_over_vsock serve [URI] | get [URI[/PATH]] [PATH]".into()),
    }
    Ok(())
}

//! A unikernel-style HTTP server: axum whose only network is conflux's
//! userspace TCP/IP stack on a TAP device (no kernel socket in the process;
//! the kernel only moves Ethernet frames through the TAP file descriptor).
//!
//! ```text
//! sudo ip tuntap add dev tap0 mode tap
//! sudo cargo run -p conflux-hyper --example unikernel_http -- 'netstack://tap0/10.0.0.2/24:8080'
//! sudo ip addr add 10.0.0.1/24 dev tap0 && sudo ip link set tap0 up
//! curl http://10.0.0.2:8080/hello
//! ```
//!
//! The argument is any `netstack://` listening URI (device, address/prefix,
//! `:port`, `?gw=`, `?mtu=`); the default is `netstack://tap0/10.0.0.2/24:8080`.

use axum::Router;
use axum::routing::get;
use conflux_hyper::AxumListener;
use conflux_mimic::{Registry, register_all};

/// The default listening URI.
pub(crate) const DEFAULT: &str = "netstack://tap0/10.0.0.2/24:8080";

/// The app: `/hello`, and `/echo` returning the request body.
pub(crate) fn app() -> Router {
    Router::new()
        .route("/hello", get(|| async { "hello from a userspace stack\n" }))
        .route("/echo", axum::routing::post(|body: axum::body::Bytes| async move { body }))
}

/// Listens on `uri` (a `netstack://` URI) through `registry`.
pub(crate) async fn listen(registry: &Registry, uri: &str) -> Result<AxumListener, Box<dyn std::error::Error>> {
    Ok(AxumListener::bind(registry, &uri.parse()?).await?)
}

#[tokio::main]
async fn main() {
    let uri = std::env::args().nth(1).unwrap_or_else(|| DEFAULT.to_string());
    let registry = Registry::new();
    register_all(&registry);
    let listener = match listen(&registry, &uri).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("unikernel_http: {e}");
            std::process::exit(1);
        }
    };
    println!("serving on {}", listener.local_uri());
    if let Err(e) = axum::serve(listener, app()).await {
        eprintln!("unikernel_http: {e}");
        std::process::exit(1);
    }
}

//! Serves a host directory over 9P2000(.u), one session per connection.
//!
//! ```text
//! cargo run -p conflux-9p --example serve_9p -- --listen tcp://127.0.0.1:5640 DIR [--read-only]
//! cargo run -p conflux-9p --example serve_9p -- --listen unix:///tmp/9p.sock DIR
//! cargo run -p conflux-9p --example serve_9p -- --listen 127.0.0.1:5640 DIR
//! ```
//!
//! The library alone, without the registry: TCP through `conflux-tcp-host`,
//! Unix sockets through tokio, both as flows handed to [`Server::serve`].
//! The command is `conflux serve-9p LISTEN-URI DIR [--read-only]`
//! (crates/conflux), which listens on any endpoint URI.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use conflux_9p::{HostFs, Server};
use conflux_tcp::TcpStack;

struct Args {
    listen: String,
    dir: PathBuf,
    read_only: bool,
}

fn parse() -> Result<Args, String> {
    let mut listen = None;
    let mut dir = None;
    let mut read_only = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--listen" => listen = Some(args.next().ok_or("--listen needs a value")?),
            "--read-only" => read_only = true,
            s if s.starts_with("--") => return Err(format!("unknown option {s}")),
            _ if dir.is_none() => dir = Some(PathBuf::from(a)),
            _ => return Err(format!("unexpected argument {a}")),
        }
    }
    Ok(Args { listen: listen.ok_or("--listen is required")?, dir: dir.ok_or("DIR is required")?, read_only })
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!(
                "serve_9p: {e}\nusage: serve_9p --listen tcp://ADDR:PORT|unix:///PATH|ADDR:PORT DIR [--read-only]"
            );
            return ExitCode::from(2);
        }
    };
    let fs = match HostFs::new(&args.dir) {
        Ok(fs) => fs.read_only(args.read_only),
        Err(e) => {
            eprintln!("serve_9p: {}: {e}", args.dir.display());
            return ExitCode::FAILURE;
        }
    };
    let server = Server::new(fs);
    let result = if let Some(path) = args.listen.strip_prefix("unix://") {
        serve_unix(server, path).await
    } else {
        serve_tcp(server, args.listen.strip_prefix("tcp://").unwrap_or(&args.listen)).await
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("serve_9p: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve_tcp(server: Server<HostFs>, addr: &str) -> Result<(), String> {
    let addr: SocketAddr = addr.parse().map_err(|e| format!("bad address {addr}: {e}"))?;
    let stack = conflux_tcp_host::HostStack::new();
    let listening = stack
        .listen(addr.port(), None, move |flow| {
            let server = server.clone();
            async move {
                if let Err(e) = server.serve(flow).await {
                    eprintln!("serve_9p: session ended: {e}");
                }
            }
        })
        .map_err(|e| e.to_string())?;
    println!("serving 9P on tcp port {}", listening.port());
    let _ = tokio::signal::ctrl_c().await;
    stack.disconnect().await;
    Ok(())
}

async fn serve_unix(server: Server<HostFs>, path: &str) -> Result<(), String> {
    let _ = std::fs::remove_file(path);
    let listener = tokio::net::UnixListener::bind(path).map_err(|e| format!("{path}: {e}"))?;
    println!("serving 9P on unix socket {path}");
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = accepted.map_err(|e| e.to_string())?;
                let server = server.clone();
                tokio::spawn(async move {
                    if let Err(e) = server.serve(conflux_flow::FromTokio::new(stream)).await {
                        eprintln!("serve_9p: session ended: {e}");
                    }
                });
            }
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

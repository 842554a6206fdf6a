//! An echo server on the kernel backend, with half-close.
//!
//! `cargo run -p conflux-tcp-host --example echo [PORT | ADDR:PORT]` listens
//! on `127.0.0.1:PORT` (loopback only; default: an ephemeral port, printed),
//! or on `ADDR:PORT` as given (`[::]:PORT` or `0.0.0.0:PORT` for every
//! address), and, for every connection, sends back what it reads; when the
//! client shuts its write side down (Eof), the server finishes sending and
//! shuts its own write side down, so the client reads everything and then
//! Eof. Try it with `nc -N 127.0.0.1 PORT < somefile`.
//!
//! With `--self-test` it connects to itself once, checks the echo and exits.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use conflux_flow::{FlowExt, Shutdown};
use conflux_tcp::{ConnectOptions, Keepalive, TcpFlow, TcpStack};
use conflux_tcp_host::{HostFlow, HostStack};

/// Echoes until Eof, then half-closes and closes.
async fn echo(mut flow: HostFlow) {
    let peer = flow.dst();
    let mut bytes = 0usize;
    loop {
        match flow.read().await {
            Ok(Some(chunk)) => {
                bytes += chunk.len();
                if let Err(e) = flow.write(chunk).await {
                    eprintln!("{peer}: write failed: {e}");
                    return;
                }
            }
            Ok(None) => break,
            Err(e) => {
                eprintln!("{peer}: read failed: {e}");
                return;
            }
        }
    }
    // Half-close: the client has sent everything; tell it we have too.
    if let Err(e) = flow.shutdown(Shutdown::Write).await {
        eprintln!("{peer}: shutdown failed: {e}");
    }
    let _ = flow.close().await;
    eprintln!("{peer}: echoed {bytes} bytes");
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let self_test = args.iter().any(|a| a == "--self-test");
    let addr: SocketAddr = match args.iter().find(|a| !a.starts_with("--")) {
        Some(a) => match a.parse::<SocketAddr>() {
            Ok(addr) => addr,
            Err(_) => (Ipv4Addr::LOCALHOST, a.parse::<u16>()?).into(),
        },
        None => (Ipv4Addr::LOCALHOST, 0).into(),
    };
    let stack = HostStack::new();
    let keepalive = Keepalive::new(Duration::from_secs(60), Duration::from_secs(10), 5);
    let listening = stack.listen_on(addr, Some(keepalive), echo)?;
    println!("echo listening on {}", listening.local_addr());

    if self_test {
        let mut addr = listening.local_addr();
        if addr.ip().is_unspecified() {
            addr.set_ip(IpAddr::V4(Ipv4Addr::LOCALHOST));
        }
        let mut client = stack.create_connection(addr, ConnectOptions::new()).await?;
        client.write("hello, half-closed world").await?;
        client.shutdown(Shutdown::Write).await?;
        let back = tokio::time::timeout(Duration::from_secs(10), client.read_to_end()).await??;
        assert_eq!(back, b"hello, half-closed world");
        println!("self-test ok: {}", String::from_utf8_lossy(&back));
        client.close().await?;
        stack.disconnect().await;
        return Ok(());
    }
    tokio::signal::ctrl_c().await?;
    stack.disconnect().await;
    Ok(())
}

//! Two flows proxied through `proxy`: a client and a server on in-memory pipes,
//! a relay between them, half-close passed along, and the relay's statistics.
//!
//! Run with `cargo run -p conflux-flow --example proxy`.

use conflux_flow::{FlowError, FlowExt, Shutdown, pipe, proxy};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), FlowError> {
    // client <-> a | relay | b <-> server
    let (mut client, mut a) = pipe(64 * 1024);
    let (mut b, mut server) = pipe(64 * 1024);
    let relay = tokio::spawn(async move { proxy(&mut a, &mut b).await });

    // The server upper-cases what it reads until Eof, then says goodbye and shuts down.
    let server_task = tokio::spawn(async move {
        while let Some(chunk) = server.read().await? {
            server.write(chunk.to_ascii_uppercase()).await?;
        }
        server.write(" (server saw Eof)").await?;
        server.shutdown(Shutdown::Write).await?;
        Ok::<_, FlowError>(())
    });

    client.write("hello through the relay").await?;
    client.shutdown(Shutdown::Write).await?; // half-close: the server sees Eof, replies still flow
    let reply = client.read_to_end().await?;
    println!("client got: {}", String::from_utf8_lossy(&reply));

    server_task.await.expect("server task")?;
    match relay.await.expect("relay task") {
        Ok(stats) => println!("relay: {stats}"),
        Err(e) => println!("relay failed: {e}"),
    }
    client.close().await
}

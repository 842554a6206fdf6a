//! `usernet-crr`: connect / request / response / close from inside the
//! namespace to a server on the host's loopback (see the group's doc).
//!
//! The client is this binary in the role [`CLIENT_ROLE`] under `ip netns
//! exec`: `CONCURRENCY` tasks on one current_thread runtime take connection
//! numbers from a shared counter; the warm-up connections first, then the
//! timed ones; it prints `elapsed_us N` for the timed ones. The server is a
//! thread of the bench process (one current_thread runtime): it reads each
//! 1 KiB request, compares it, answers 1 KiB and waits for the client's close.

use std::net::SocketAddr;
use std::process::{ExitCode, Stdio};
use std::rc::Rc;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, atomic};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::{CHILD_FLAG, GATEWAY, Side, can_run, measure_guests, output_within};
use crate::data::{runtime, source};
use crate::{Ctx, Record, Skip, rate_per_sec};

/// The child role of the client.
pub(super) const CLIENT_ROLE: &str = "crr-client";
const MESSAGE: usize = 1024;
const CONCURRENCY: usize = 8;
const COUNT: u64 = 2000;
const WARMUP: u64 = 200;
/// The bound on one connection (connect, request, response).
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);
/// The bound on one client run.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// The request and the response, cut from the shared source.
fn messages() -> (bytes::Bytes, bytes::Bytes) {
    let src = source();
    (src.slice(..MESSAGE), src.slice(MESSAGE..2 * MESSAGE))
}

pub(super) fn run(ctx: &Ctx<'_>) -> Result<Vec<Record>, Skip> {
    can_run(&[("slirp4netns", "--version")])?;
    let server = Server::start();
    let exe = std::env::current_exe().expect("the bench binary's path");
    let at = SocketAddr::new(GATEWAY.parse().expect("the gateway"), server.port);
    let pair = measure_guests(ctx.runs_mt(5, 3), Side::Slirp4netns, |guest| {
        let mut cmd = guest.ns.exec(&exe);
        cmd.args([CHILD_FLAG, CLIENT_ROLE, &at.to_string()]);
        cmd.args([CONCURRENCY.to_string(), WARMUP.to_string(), COUNT.to_string()]);
        let child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("start the crr client");
        let out = output_within(child, RUN_TIMEOUT, "the crr client");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "the crr client: {}; stderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        let us: u64 = stdout
            .lines()
            .find_map(|l| l.strip_prefix("elapsed_us "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("the crr client printed {stdout:?}"));
        rate_per_sec(COUNT, Duration::from_micros(us))
    });
    drop(server);
    Ok(vec![ctx.record(&pair.measured).with_baseline(Side::Slirp4netns.name(), &pair.baseline)])
}

/// The server on the host's 127.0.0.1, stopped and joined on drop.
struct Server {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    fn start() -> Server {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        std_listener.set_nonblocking(true).expect("a nonblocking listener");
        let port = std_listener.local_addr().expect("the listener's address").port();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            let rt = runtime();
            let (request, response) = messages();
            rt.block_on(async move {
                let listener = TcpListener::from_std(std_listener).expect("register the listener");
                while !stopping.load(atomic::Ordering::Relaxed) {
                    // Wake now and then to see the stop flag.
                    let Ok(accepted) = tokio::time::timeout(Duration::from_millis(100), listener.accept()).await else {
                        continue;
                    };
                    let Ok((conn, _)) = accepted else { continue };
                    let (request, response) = (request.clone(), response.clone());
                    tokio::spawn(async move {
                        let _ = tokio::time::timeout(CONNECTION_TIMEOUT, serve(conn, &request, &response)).await;
                    });
                }
            });
        });
        Server { port, stop, thread: Some(thread) }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One connection: the request read and compared (a wrong one is dropped
/// unanswered, failing the client), the response, then the client's close.
async fn serve(mut conn: TcpStream, request: &[u8], response: &[u8]) -> std::io::Result<()> {
    let _ = conn.set_nodelay(true);
    let mut buf = vec![0u8; MESSAGE];
    conn.read_exact(&mut buf).await?;
    if buf != request {
        return Err(std::io::Error::other("a wrong request"));
    }
    conn.write_all(response).await?;
    // The client closes first.
    while conn.read(&mut buf).await? > 0 {}
    Ok(())
}

/// The client: `ADDR CONCURRENCY WARMUP COUNT`; prints `elapsed_us N` for the
/// `COUNT` connections after the warm-up.
pub(super) fn client_child(args: &[String]) -> ExitCode {
    let parsed = match args {
        [addr, conc, warmup, count] => addr
            .parse::<SocketAddr>()
            .ok()
            .zip(conc.parse::<usize>().ok())
            .zip(warmup.parse::<u64>().ok())
            .zip(count.parse::<u64>().ok()),
        _ => None,
    };
    let Some((((at, conc), warmup), count)) = parsed else {
        eprintln!("{CLIENT_ROLE}: expected ADDR CONCURRENCY WARMUP COUNT, got {args:?}");
        return ExitCode::from(2);
    };
    let rt = runtime();
    let result = rt.block_on(async {
        let (request, response) = messages();
        connections(at, conc, warmup, &request, &response).await?;
        let start = Instant::now();
        connections(at, conc, count, &request, &response).await?;
        Ok::<_, String>(start.elapsed())
    });
    match result {
        Ok(elapsed) => {
            println!("elapsed_us {}", elapsed.as_micros().max(1));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{CLIENT_ROLE}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `count` connections to `at`, `conc` at a time.
async fn connections(at: SocketAddr, conc: usize, count: u64, request: &[u8], response: &[u8]) -> Result<(), String> {
    let next = Rc::new(std::cell::Cell::new(0u64));
    let local = tokio::task::LocalSet::new();
    let mut tasks: Vec<tokio::task::JoinHandle<Result<(), String>>> = Vec::new();
    for _ in 0..conc {
        let next = next.clone();
        let (request, response) = (request.to_vec(), response.to_vec());
        tasks.push(local.spawn_local(async move {
            loop {
                let i = next.get();
                if i >= count {
                    return Ok(());
                }
                next.set(i + 1);
                tokio::time::timeout(CONNECTION_TIMEOUT, one(at, &request, &response))
                    .await
                    .map_err(|_| format!("connection {i} to {at} timed out"))?
                    .map_err(|e| format!("connection {i} to {at}: {e}"))?;
            }
        }));
    }
    local
        .run_until(async move {
            for t in tasks {
                t.await.map_err(|e| format!("a client task: {e}"))??;
            }
            Ok(())
        })
        .await
}

/// Connect, send the request, read and compare the response, close.
async fn one(at: SocketAddr, request: &[u8], response: &[u8]) -> std::io::Result<()> {
    let mut conn = TcpStream::connect(at).await?;
    conn.set_nodelay(true)?;
    conn.write_all(request).await?;
    let mut buf = vec![0u8; MESSAGE];
    conn.read_exact(&mut buf).await?;
    if buf != response {
        return Err(std::io::Error::other("the response differs"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_and_server_agree_on_loopback() {
        let server = Server::start();
        let at = SocketAddr::from(([127, 0, 0, 1], server.port));
        let (request, response) = messages();
        let rt = runtime();
        rt.block_on(connections(at, CONCURRENCY, 50, &request, &response)).unwrap();
        // A request the server does not expect goes unanswered: the client fails.
        let err = rt.block_on(connections(at, 2, 4, &response, &response)).unwrap_err();
        assert!(err.contains("connection"), "{err}");
    }

    #[test]
    fn a_wrong_response_fails_the_client() {
        let rt = runtime();
        let (request, response) = messages();
        rt.block_on(async {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let at = l.local_addr().unwrap();
            tokio::spawn(async move {
                let (mut conn, _) = l.accept().await.unwrap();
                let mut buf = vec![0u8; MESSAGE];
                conn.read_exact(&mut buf).await.unwrap();
                conn.write_all(&buf).await.unwrap();
                let _ = conn.read(&mut buf).await;
            });
            let err = connections(at, 1, 1, &request, &response).await.unwrap_err();
            assert!(err.contains("the response differs"), "{err}");
        });
    }
}

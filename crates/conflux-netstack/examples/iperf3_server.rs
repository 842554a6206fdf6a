//! An iperf3-compatible server (TCP, client sends) on the TCP contract of
//! `conflux-tcp`, so Debian's `iperf3 -c` can drive either backend.
//!
//! ```text
//! cargo run -p conflux-netstack --example iperf3_server -- host [PORT]
//! cargo run -p conflux-netstack --example iperf3_server -- tap TAPNAME IPV4/PREFIX [PORT]
//! ```
//!
//! `host` serves on the kernel backend (`conflux-tcp-host`) on 127.0.0.1
//! (loopback only); `tap` opens (or creates) TAP device TAPNAME and serves
//! on this crate's userspace stack at IPV4 (bring the TAP up and address its
//! kernel side with `ip`). The default port is 5201. One test at a time; others are refused with ACCESS_DENIED.
//!
//! Protocol (iperf3's control channel): the client sends a 37-byte cookie;
//! we send PARAM_EXCHANGE (9); it sends its parameters as JSON with a 4-byte
//! big-endian length; we send CREATE_STREAMS (10) and it opens the data
//! connections, each starting with the same cookie; we send TEST_START (1)
//! and TEST_RUNNING (2); it sends data, then TEST_END (4); we send
//! EXCHANGE_RESULTS (13), read its results and send ours (bytes received per
//! stream); DISPLAY_RESULTS (14); it answers IPERF_DONE (16). Reverse mode,
//! UDP and bidirectional tests are refused.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use conflux_flow::{FlowError, FlowExt};
use conflux_tcp::{TcpFlow, TcpStack};
use tokio::sync::mpsc;

const COOKIE_LEN: usize = 37;
const TEST_START: u8 = 1;
const TEST_RUNNING: u8 = 2;
const TEST_END: u8 = 4;
const PARAM_EXCHANGE: u8 = 9;
const CREATE_STREAMS: u8 = 10;
const EXCHANGE_RESULTS: u8 = 13;
const DISPLAY_RESULTS: u8 = 14;
const IPERF_DONE: u8 = 16;
const ACCESS_DENIED: u8 = 0xff; // -1
/// Bound on every wait for the client (beyond the test's own duration).
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// A flow with a read buffer, for exact reads.
struct Conn<F> {
    flow: F,
    buf: BytesMut,
}

impl<F: TcpFlow> Conn<F> {
    async fn read_exact(&mut self, n: usize) -> Result<Bytes, String> {
        while self.buf.len() < n {
            match tokio::time::timeout(STEP_TIMEOUT, self.flow.read()).await {
                Ok(Ok(Some(chunk))) => self.buf.extend_from_slice(&chunk),
                Ok(Ok(None)) => return Err("the client closed the connection".into()),
                Ok(Err(e)) => return Err(e.to_string()),
                Err(_) => return Err("the client went silent".into()),
            }
        }
        Ok(self.buf.split_to(n).freeze())
    }

    async fn read_json(&mut self) -> Result<serde_json::Value, String> {
        let len = self.read_exact(4).await?.get_u32() as usize;
        if len > 1 << 20 {
            return Err(format!("a {len}-byte JSON message"));
        }
        let body = self.read_exact(len).await?;
        serde_json::from_slice(&body).map_err(|e| format!("bad JSON from the client: {e}"))
    }

    async fn send(&mut self, bytes: impl Into<Bytes>) -> Result<(), String> {
        self.flow.write(bytes.into()).await.map_err(|e: FlowError| e.to_string())
    }

    async fn send_json(&mut self, v: &serde_json::Value) -> Result<(), String> {
        let body = serde_json::to_vec(v).map_err(|e| e.to_string())?;
        let mut msg = (body.len() as u32).to_be_bytes().to_vec();
        msg.extend_from_slice(&body);
        self.send(msg).await
    }
}

/// The test in progress: its cookie and where its data streams go.
struct Active<F> {
    cookie: Bytes,
    streams: mpsc::UnboundedSender<Conn<F>>,
}

/// Serves iperf3 tests on `addr` of `stack` until the stack is disconnected.
/// Each finished test's byte count (what the results told the client) is
/// sent on `results`. Returns the bound port.
pub(crate) fn serve<S: TcpStack>(
    stack: &S,
    addr: SocketAddr,
    results: mpsc::UnboundedSender<u64>,
) -> Result<u16, String> {
    let active: Arc<Mutex<Option<Active<S::Flow>>>> = Arc::new(Mutex::new(None));
    let listening = stack
        .listen_on(addr, None, move |flow| {
            let active = active.clone();
            let results = results.clone();
            async move {
                let mut conn = Conn { flow, buf: BytesMut::new() };
                let Ok(cookie) = conn.read_exact(COOKIE_LEN).await else { return };
                let control = {
                    let mut slot = active.lock().unwrap();
                    match &*slot {
                        Some(test) if test.cookie == cookie => {
                            let _ = test.streams.send(conn);
                            return;
                        }
                        Some(_) => None,
                        None => {
                            let (tx, rx) = mpsc::unbounded_channel();
                            *slot = Some(Active { cookie, streams: tx });
                            Some(rx)
                        }
                    }
                };
                match control {
                    None => {
                        let _ = conn.send(vec![ACCESS_DENIED]).await;
                    }
                    Some(streams) => {
                        match run_test(&mut conn, streams).await {
                            Ok(bytes) => {
                                println!("iperf3 test done: received {bytes} bytes");
                                let _ = results.send(bytes);
                            }
                            Err(e) => eprintln!("iperf3 test failed: {e}"),
                        }
                        *active.lock().unwrap() = None;
                    }
                }
                let _ = conn.flow.close().await;
            }
        })
        .map_err(|e| e.to_string())?;
    Ok(listening.port())
}

/// Runs one test on its control connection; returns the bytes received.
async fn run_test<F: TcpFlow>(
    control: &mut Conn<F>,
    mut streams: mpsc::UnboundedReceiver<Conn<F>>,
) -> Result<u64, String> {
    control.send(vec![PARAM_EXCHANGE]).await?;
    let params = control.read_json().await?;
    if params.get("tcp").and_then(|v| v.as_bool()) != Some(true)
        || params.get("reverse").is_some()
        || params.get("bidirectional").is_some()
    {
        control.send(vec![ACCESS_DENIED]).await?;
        return Err(format!("unsupported test parameters: {params}"));
    }
    let parallel = params.get("parallel").and_then(|v| v.as_u64()).unwrap_or(1).clamp(1, 128) as usize;
    let duration = params.get("time").and_then(|v| v.as_u64()).unwrap_or(10);
    control.send(vec![CREATE_STREAMS]).await?;

    let mut counters = Vec::new();
    let mut readers = Vec::new();
    for i in 0..parallel {
        let stream = tokio::time::timeout(STEP_TIMEOUT, streams.recv())
            .await
            .map_err(|_| "the client did not open its data streams".to_owned())?
            .ok_or("no data stream")?;
        // iperf3 numbers streams 1, 3, 4, ... (as its iperf_add_stream does).
        let id = if i == 0 { 1 } else { i as u64 + 2 };
        let counter = Arc::new(AtomicU64::new(stream.buf.len() as u64));
        counters.push((id, counter.clone()));
        let mut flow = stream.flow;
        readers.push(tokio::spawn(async move {
            while let Ok(Some(chunk)) = flow.read().await {
                counter.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            }
        }));
    }
    let started = Instant::now();
    control.send(vec![TEST_START]).await?;
    control.send(vec![TEST_RUNNING]).await?;

    let state = tokio::time::timeout(Duration::from_secs(duration) + STEP_TIMEOUT, control.read_exact(1))
        .await
        .map_err(|_| "no TEST_END".to_owned())??;
    if state[0] != TEST_END {
        return Err(format!("expected TEST_END, got state {}", state[0] as i8));
    }
    let elapsed = started.elapsed().as_secs_f64();
    // The count at TEST_END is what the client is told (and what we report).
    let counts: Vec<(u64, u64)> = counters.iter().map(|(id, c)| (*id, c.load(Ordering::Relaxed))).collect();
    control.send(vec![EXCHANGE_RESULTS]).await?;
    let _client_results = control.read_json().await?;
    let streams_json: Vec<serde_json::Value> = counts
        .iter()
        .map(|(id, bytes)| {
            serde_json::json!({
                "id": id, "bytes": bytes, "retransmits": -1, "jitter": 0, "errors": 0,
                "packets": 0, "start_time": 0, "end_time": elapsed,
            })
        })
        .collect();
    let ours = serde_json::json!({
        "cpu_util_total": 0, "cpu_util_user": 0, "cpu_util_system": 0,
        "sender_has_retransmits": -1, "streams": streams_json,
    });
    control.send_json(&ours).await?;
    control.send(vec![DISPLAY_RESULTS]).await?;
    // IPERF_DONE, or the client just closes.
    if let Ok(done) = control.read_exact(1).await
        && done[0] != IPERF_DONE
    {
        eprintln!("iperf3: expected IPERF_DONE, got state {}", done[0] as i8);
    }
    for r in readers {
        r.abort();
    }
    Ok(counts.iter().map(|(_, b)| b).sum())
}

#[allow(dead_code)]
fn usage() -> ! {
    eprintln!("usage: iperf3_server host [PORT] | iperf3_server tap TAPNAME IPV4/PREFIX [PORT]");
    std::process::exit(2)
}

#[allow(dead_code)]
#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let port = |i: usize| args.get(i).map_or(Ok(5201), |p| p.parse::<u16>()).unwrap_or_else(|_| usage());
    let (tx, mut rx) = mpsc::unbounded_channel();
    // The userspace stack lives as long as `main`.
    let mut tap_stack = None;
    let bound = match args.first().map(String::as_str) {
        Some("host") => serve(&conflux_tcp_host::HostStack::new(), (Ipv4Addr::LOCALHOST, port(1)).into(), tx),
        Some("tap") => {
            let (Some(name), Some(cidr)) = (args.get(1), args.get(2)) else { usage() };
            let (ip, prefix) = cidr.split_once('/').unwrap_or_else(|| usage());
            let (Ok(ip), Ok(prefix)) = (ip.parse(), prefix.parse()) else { usage() };
            let tap = conflux_netstack::TapDevice::open(name, 1500).unwrap_or_else(|e| {
                eprintln!("cannot open TAP {name}: {e}");
                std::process::exit(1)
            });
            let stack = conflux_netstack::NetStack::new(
                conflux_netstack::StackConfig::new().ipv4(ip, prefix).buffers(1 << 20, 1 << 20),
                tap,
            );
            let res = serve(&stack, (ip, port(3)).into(), tx);
            tap_stack = Some(stack);
            res
        }
        _ => usage(),
    };
    match bound {
        Ok(port) => println!("iperf3 server listening on port {port}"),
        Err(e) => {
            eprintln!("cannot listen: {e}");
            std::process::exit(1);
        }
    }
    while rx.recv().await.is_some() {}
    drop(tap_stack);
}

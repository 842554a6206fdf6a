//! `conflux demo [--json]`: what conflux does, shown in-process in a few
//! seconds, with no root, no setup and no network: everything runs on
//! in-memory links (conflux-netstack's `link_pair`) and in-memory socket
//! families (conflux-hvsock's test doubles, which model the transports).
//!
//! Steps: two userspace stacks talk over an in-memory Ethernet link; a
//! client reaches a server through the registry by URI; a framed flow runs
//! over an in-memory socket family; the fault model (a transport that
//! discards unread bytes at shutdown, as Hyper-V sockets do) makes a raw
//! flow lose bytes and leaves the framed flow whole.

use std::future::Future;
use std::time::{Duration, Instant};

use bytes::Bytes;
use conflux_flow::{Flow, FlowExt, Shutdown};
use conflux_hvsock::testing::{FaultFamily, Faults, MemAddr, MemFamily};
use conflux_hvsock::{FramingConfig, Listener, connect};
use conflux_mimic::{Ctx, NetstackDevice, NetstackKeys, Registry};
use conflux_netstack::{LinkConfig, NetStack, StackConfig, link_pair};
use conflux_tcp::{ConnectOptions, TcpStack};
use serde_json::{Value, json};

use crate::error::CliError;
use crate::progress::human_bytes;

/// No step may take longer than this.
const STEP_TIMEOUT: Duration = Duration::from_secs(20);

/// One step's result: what it shows, its figures, and whether it succeeded.
struct Step {
    name: &'static str,
    title: &'static str,
    ok: bool,
    /// What happened, in plain words.
    lines: Vec<String>,
    /// The same facts for `--json`.
    facts: Value,
}

/// Runs every step, prints them (as text or JSON); fails when one failed.
pub(crate) async fn run(json: bool) -> Result<(), CliError> {
    let started = Instant::now();
    if !json {
        println!("conflux demo: everything below runs inside this process, on in-memory links.\n");
    }
    let mut steps = Vec::new();
    for (i, step) in [
        step("stacks", "Two userspace TCP/IP stacks on an in-memory Ethernet link", stacks()).await,
        step("registry", "A client reaches a server through the registry, by URI", registry()).await,
        step("framed", "A framed flow (the shutdown framing) over an in-memory socket family", framed()).await,
        step("fault-model", "The fault model: the transport loses unread bytes at shutdown", fault_model()).await,
    ]
    .into_iter()
    .enumerate()
    {
        if !json {
            println!("{}. {} [{}]", i + 1, step.title, if step.ok { "ok" } else { "FAILED" });
            for line in &step.lines {
                println!("   {line}");
            }
            println!();
        }
        steps.push(step);
    }
    let ok = steps.iter().all(|s| s.ok);
    let elapsed = started.elapsed();
    if json {
        let steps: Vec<Value> = steps
            .iter()
            .map(|s| {
                let mut v = json!({"name": s.name, "title": s.title, "ok": s.ok, "summary": s.lines});
                if let (Value::Object(o), Value::Object(facts)) = (&mut v, &s.facts) {
                    o.extend(facts.clone());
                }
                v
            })
            .collect();
        let out = json!({"ok": ok, "seconds": elapsed.as_secs_f64(), "steps": steps});
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    } else if ok {
        println!("All {} steps succeeded in {:.2} s.", steps.len(), elapsed.as_secs_f64());
    }
    if ok {
        Ok(())
    } else {
        let failed: Vec<&str> = steps.iter().filter(|s| !s.ok).map(|s| s.name).collect();
        Err(CliError::runtime(format!("demo steps failed: {}", failed.join(", "))))
    }
}

/// Runs one step's body under [`STEP_TIMEOUT`].
async fn step(
    name: &'static str,
    title: &'static str,
    body: impl Future<Output = Result<(Vec<String>, Value), String>>,
) -> Step {
    let (ok, lines, facts) = match tokio::time::timeout(STEP_TIMEOUT, body).await {
        Ok(Ok((lines, facts))) => (true, lines, facts),
        Ok(Err(e)) => (false, vec![format!("failed: {e}")], json!({"error": e})),
        Err(_) => {
            let e = format!("did not finish within {STEP_TIMEOUT:?}");
            (false, vec![e.clone()], json!({"error": e}))
        }
    };
    Step { name, title, ok, lines, facts }
}

/// Deterministic bytes to send.
fn payload(len: usize, seed: u8) -> Bytes {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect::<Vec<u8>>().into()
}

/// Echoes until Eof, then half-closes and closes; the bytes echoed.
async fn echo<F: Flow>(mut flow: F) -> u64 {
    let mut n = 0;
    while let Ok(Some(chunk)) = flow.read().await {
        n += chunk.len() as u64;
        if flow.write(chunk).await.is_err() {
            break;
        }
    }
    let _ = flow.shutdown(Shutdown::Write).await;
    let _ = flow.close().await;
    n
}

/// Writes `data` (in 16 KiB pieces) then half-closes, while reading
/// everything back; the bytes read back.
async fn send_and_read_back<F: Flow>(flow: F, data: Bytes) -> Result<Vec<u8>, String> {
    let (mut r, mut w) = flow.split();
    let writer = async move {
        let mut rest = data;
        while !rest.is_empty() {
            let chunk = rest.split_to(rest.len().min(16 * 1024));
            w.write(chunk).await.map_err(|e| format!("write: {e}"))?;
        }
        w.shutdown().await.map_err(|e| format!("shutdown: {e}"))?;
        Ok::<_, String>(w)
    };
    let reader = async move {
        let mut got = Vec::new();
        let result = loop {
            match r.read().await {
                Ok(Some(chunk)) => got.extend_from_slice(&chunk),
                Ok(None) => break Ok(()),
                Err(e) => break Err(format!("read: {e}")),
            }
        };
        (r, got, result)
    };
    let (w, (r, got, read)) = tokio::join!(writer, reader);
    let w = w?;
    read?;
    if let Ok(mut flow) = r.reunite(w) {
        let _ = flow.close().await;
    }
    Ok(got)
}

fn rate(bytes: u64, took: Duration) -> String {
    let secs = took.as_secs_f64().max(1e-9);
    format!("{}/s", human_bytes((bytes as f64 / secs) as u64))
}

fn two_stacks() -> (NetStack, NetStack) {
    let (a, b) = link_pair(LinkConfig::ethernet());
    let client = NetStack::new(StackConfig::new().ipv4([10, 0, 0, 1].into(), 24).mac([2, 0, 0, 0, 0, 1]), a);
    let server = NetStack::new(StackConfig::new().ipv4([10, 0, 0, 2].into(), 24).mac([2, 0, 0, 0, 0, 2]), b);
    (client, server)
}

/// Step 1: a userspace stack connects to another over an in-memory link; 1 MiB echoed.
async fn stacks() -> Result<(Vec<String>, Value), String> {
    let (client, server) = two_stacks();
    server
        .listen(7, None, |flow| async move {
            echo(flow).await;
        })
        .map_err(|e| format!("listen: {e}"))?;
    let size = 1_000_000;
    let data = payload(size, 1);
    let started = Instant::now();
    let flow = client
        .create_connection("10.0.0.2:7".parse().expect("an address"), ConnectOptions::new())
        .await
        .map_err(|e| format!("connect 10.0.0.2:7: {e}"))?;
    let back = send_and_read_back(flow, data.clone()).await?;
    let took = started.elapsed();
    client.disconnect().await;
    server.disconnect().await;
    if back != data {
        return Err(format!("sent {size} bytes, {} came back, not the same", back.len()));
    }
    let moved = 2 * size as u64;
    Ok((
        vec![
            "stack 10.0.0.1 connected to an echo server on stack 10.0.0.2, port 7 (smoltcp, in this process)".into(),
            format!(
                "{} sent and echoed back intact in {:.3} s: {} through both stacks",
                human_bytes(size as u64),
                took.as_secs_f64(),
                rate(moved, took)
            ),
        ],
        json!({"bytes_sent": size, "bytes_back": back.len(), "seconds": took.as_secs_f64(),
               "throughput_bytes_per_s": moved as f64 / took.as_secs_f64().max(1e-9)}),
    ))
}

/// Step 2: both ends by URI through one registry (conflux-mimic's
/// `netstack://` binding): the server listens on
/// `netstack://mem2/10.0.0.2/24:7`, the client dials
/// `netstack://mem1/10.0.0.1/24?dst=10.0.0.2:7`; the two in-process stacks
/// are in the context under those device names.
async fn registry() -> Result<(Vec<String>, Value), String> {
    let (client, server) = two_stacks();
    let k = NetstackKeys::get();
    let ctx = Ctx::new()
        .add(&k.devices, NetstackDevice::new("mem1", client.clone()))
        .add(&k.devices, NetstackDevice::new("mem2", server.clone()));
    let registry = Registry::new();
    conflux_mimic::register_all(&registry);
    let listen_text = "netstack://mem2/10.0.0.2/24:7";
    let dial_text = "netstack://mem1/10.0.0.1/24?dst=10.0.0.2:7";
    let listen_uri = listen_text.parse().map_err(|e| format!("{listen_text}: {e}"))?;
    let dial_uri = dial_text.parse().map_err(|e| format!("{dial_text}: {e}"))?;
    let mut listener = registry.listen_with(&listen_uri, &ctx).await.map_err(|e| format!("listen: {e}"))?;
    let local = listener.local_uri().to_string();
    let serving = tokio::spawn(async move {
        let accepted = listener.accept().await.map_err(|e| format!("accept: {e}"))?;
        Ok::<_, String>((accepted.peer, echo(accepted.flow).await))
    });
    let started = Instant::now();
    let flow = registry.dial_with(&dial_uri, &ctx).await.map_err(|e| format!("dial: {e}"))?;
    let message = Bytes::from_static(b"hello through the registry");
    let back = send_and_read_back(flow, message.clone()).await?;
    let took = started.elapsed();
    let (peer, _) = serving.await.map_err(|e| format!("server task: {e}"))??;
    client.disconnect().await;
    server.disconnect().await;
    if back != message {
        return Err(format!("sent {message:?}, got {:?} back", String::from_utf8_lossy(&back)));
    }
    Ok((
        vec![
            format!("the server listens by URI: {listen_text} (listening on {local})"),
            format!("the client dials by URI:   {dial_text} (the server saw it come from {peer})"),
            format!(
                "\"{}\" went there and came back in {:.3} s",
                String::from_utf8_lossy(&message),
                took.as_secs_f64()
            ),
        ],
        json!({"listen_uri": listen_text, "dial_uri": dial_text, "peer": peer, "bytes_sent": message.len(),
               "bytes_back": back.len(), "seconds": took.as_secs_f64()}),
    ))
}

/// Step 3: a framed flow over the in-memory family: 1 MiB each way, then
/// the close handshake.
async fn framed() -> Result<(Vec<String>, Value), String> {
    let family = MemFamily::new();
    let addr = MemAddr::from("echo");
    let listener = Listener::bind(&family, &addr).map_err(|e| format!("listen {addr}: {e}"))?;
    let cfg = FramingConfig::new().close_timeout(Duration::from_secs(2));
    let server = tokio::spawn(async move {
        let (raw, _) = listener.accept().await.map_err(|e| format!("accept: {e}"))?;
        Ok::<_, String>(echo(raw.into_framed(cfg)).await)
    });
    let size = 1_000_000;
    let data = payload(size, 3);
    let started = Instant::now();
    let raw = connect(&family, &addr, None).await.map_err(|e| format!("connect {addr}: {e}"))?;
    let back = send_and_read_back(raw.into_framed(cfg), data.clone()).await?;
    let took = started.elapsed();
    let echoed = server.await.map_err(|e| format!("echo task: {e}"))??;
    if back != data {
        return Err(format!("sent {size} bytes, {} came back, not the same", back.len()));
    }
    let moved = 2 * size as u64;
    Ok((
        vec![
            format!("{addr}: each 4 KiB of data is a frame; shutdown(Write) and close are frames too"),
            format!(
                "{} sent, {} echoed, all back intact in {:.3} s ({}), closed by handshake",
                human_bytes(size as u64),
                human_bytes(echoed),
                took.as_secs_f64(),
                rate(moved, took)
            ),
        ],
        json!({"bytes_sent": size, "bytes_back": back.len(), "seconds": took.as_secs_f64(),
               "throughput_bytes_per_s": moved as f64 / took.as_secs_f64().max(1e-9)}),
    ))
}

/// What one run of the fault model moved.
struct Run {
    sent: u64,
    back: u64,
    discarded: u64,
}

/// `conns` clients each send `size` bytes, half-close and read the echo back,
/// over a family that loses what the peer has not read at a shutdown.
async fn fault_run(framed: bool, conns: usize, size: usize) -> Result<Run, String> {
    let family = FaultFamily::new(MemFamily::with_capacity(64 * 1024), Faults::new().discard_unread(true));
    let addr = MemAddr::from(if framed { "framed" } else { "raw" });
    let listener = Listener::bind(&family, &addr).map_err(|e| format!("listen {addr}: {e}"))?;
    let cfg = FramingConfig::new().close_timeout(Duration::from_secs(2));
    let server = tokio::spawn(async move {
        let mut echoes = Vec::new();
        for _ in 0..conns {
            let (raw, _) = listener.accept().await.map_err(|e| format!("accept: {e}"))?;
            echoes.push(tokio::spawn(async move {
                // A slow reader: the sender is done (and shuts down) while
                // its last bytes still wait in the transport.
                tokio::time::sleep(Duration::from_millis(20)).await;
                if framed { echo(raw.into_framed(cfg)).await } else { echo(raw).await }
            }));
        }
        for e in echoes {
            let _ = e.await;
        }
        Ok::<_, String>(())
    });
    let mut clients = Vec::new();
    for i in 0..conns {
        let (family, addr) = (family.clone(), addr.clone());
        clients.push(tokio::spawn(async move {
            let raw = connect(&family, &addr, None).await.map_err(|e| format!("connect {addr}: {e}"))?;
            let data = payload(size, 10 + i as u8);
            let back = if framed {
                send_and_read_back(raw.into_framed(cfg), data.clone()).await
            } else {
                // The raw flow may well see its peer vanish mid-way: what came back counts.
                Ok(send_and_read_back(raw, data.clone()).await.unwrap_or_default())
            }?;
            if framed && back != data {
                return Err(format!("framed: sent {size} bytes, {} came back, not the same", back.len()));
            }
            Ok::<_, String>(back.len() as u64)
        }));
    }
    let mut back = 0;
    for c in clients {
        back += c.await.map_err(|e| format!("client task: {e}"))??;
    }
    server.await.map_err(|e| format!("server task: {e}"))??;
    Ok(Run { sent: (conns * size) as u64, back, discarded: family.discarded() })
}

/// Step 4: the same workload raw and framed over a family with the
/// Hyper-V bug modelled (unread bytes discarded at shutdown).
async fn fault_model() -> Result<(Vec<String>, Value), String> {
    let (conns, size) = (4, 250_000);
    let raw = fault_run(false, conns, size).await?;
    let framed = fault_run(true, conns, size).await?;
    let raw_lost = raw.sent - raw.back;
    let framed_lost = framed.sent - framed.back;
    if raw_lost == 0 {
        return Err("the raw flow lost nothing: the fault model did not bite".into());
    }
    if framed_lost != 0 || framed.discarded != 0 {
        return Err(format!("the framed flow lost {framed_lost} bytes ({} discarded)", framed.discarded));
    }
    Ok((
        vec![
            format!(
                "{conns} clients each send {}, shut down their write side and read the echo back",
                human_bytes(size as u64)
            ),
            format!(
                "raw flow:    {} sent, {} came back: {} lost ({} discarded by the transport)",
                human_bytes(raw.sent),
                human_bytes(raw.back),
                human_bytes(raw_lost),
                human_bytes(raw.discarded)
            ),
            format!(
                "framed flow: {} sent, {} came back: nothing lost (shutdown is a frame; the transport stays open)",
                human_bytes(framed.sent),
                human_bytes(framed.back)
            ),
        ],
        json!({
            "raw": {"bytes_sent": raw.sent, "bytes_back": raw.back, "lost": raw_lost, "discarded": raw.discarded},
            "framed": {"bytes_sent": framed.sent, "bytes_back": framed.back, "lost": framed_lost,
                       "discarded": framed.discarded},
        }),
    ))
}

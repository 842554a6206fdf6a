//! The `netstack_frames` fuzz harness, shared by the fuzz target
//! (`fuzz/fuzz_targets/netstack_frames.rs`, which includes this file) and
//! the regression test replaying what the fuzzer found
//! (`tests/robustness.rs`).
//!
//! A stack holding an established connection (echo server on A, client on
//! B, an IP link with checksums on) receives arbitrary frames: raw bytes, and
//! segments built on the connection's 4-tuple with fuzzed flags, sequence and
//! acknowledgment offsets from the client's last segment, windows and
//! payloads (with valid checksums: under `cargo fuzz`, `cfg(fuzzing)` makes
//! smoltcp's checksum checks pass anyway). Then, within 60 s of virtual time,
//! the connection either still echoes or has reported Eof, a reset or an
//! error to its flow (never a silent stall), and a fresh connection to the
//! listener succeeds and echoes. A also has a UDP socket (port 53) and the
//! UDP intercept: afterwards a datagram from B still reaches the socket.
//!
//! The stacks' user timeout is 20 s: a segment placed in window can
//! desynchronize the two ends for good (TCP cannot repair that), and the user
//! timeout is what turns it into an error.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::time::Duration;

use conflux_flow::{FlowExt, Shutdown};
use conflux_netstack::{LinkConfig, NetStack, StackConfig, link_pair};
use conflux_tcp::{ConnectOptions, TcpFlow, TcpStack};

use super::inject::{Last, Merge};
use super::peer::build as segment;

fn config(addr: &str, mac: u8) -> StackConfig {
    StackConfig::new()
        .ipv4(addr.parse().unwrap(), 24)
        .mac([2, 0, 0, 0, 0, mac])
        .seed(u64::from(mac))
        .shards(4)
        .user_timeout(Duration::from_secs(20))
}

/// Writes `probe` on `flow` and reads: true if at least its length came
/// back (the echo, or data the fuzzer slipped in ahead of it), or the flow
/// reported its end (Eof, reset, error); false on a silent stall.
async fn echoes_or_ends(flow: &mut conflux_netstack::NetFlow, probe: &'static [u8]) -> bool {
    let run = async {
        if flow.write(probe).await.is_err() {
            return true;
        }
        let mut got = 0;
        while got < probe.len() {
            match flow.read().await {
                Ok(Some(b)) => got += b.len(),
                Ok(None) | Err(_) => return true,
            }
        }
        true
    };
    tokio::time::timeout(Duration::from_secs(60), run).await.unwrap_or(false)
}

/// Runs one input (see the module doc); panics on a silent stall or a
/// failed fresh connection.
pub async fn run(input: &[u8]) {
    let (ea, eb) = link_pair(LinkConfig::ip());
    let last = Last::default();
    let (merged, inject) = Merge::watching(ea, last.clone());
    let a = NetStack::new(config("10.0.0.1", 1), merged);
    let b = NetStack::new(config("10.0.0.2", 2), eb);
    let port = a
        .listen(80, None, |mut f| async move {
            while let Ok(Some(buf)) = f.read().await {
                if f.write(buf).await.is_err() {
                    return;
                }
            }
            let _ = f.shutdown(Shutdown::Write).await;
        })
        .unwrap()
        .port();
    let server: SocketAddr = ([10, 0, 0, 1], port).into();
    let udp = a.udp_bind(([10, 0, 0, 1], 53).into()).unwrap();
    let _intercept = a.udp_intercept(Vec::new()).unwrap();
    let mut c = b.create_connection(server, ConnectOptions::new()).await.expect("the first connect");
    assert!(echoes_or_ends(&mut c, b"hello").await, "the first echo");
    let client = c.src();

    let mut rest = input;
    while let Some((&kind, tail)) = rest.split_first() {
        rest = tail;
        match kind % 4 {
            // Raw bytes as a frame.
            0 => {
                let Some((&len, tail)) = rest.split_first() else { break };
                let n = usize::from(len).min(tail.len());
                let _ = inject.send(tail[..n].to_vec());
                rest = &tail[n..];
            }
            // A segment on the connection's 4-tuple.
            1 => {
                if rest.len() < 12 {
                    break;
                }
                let (h, tail) = rest.split_at(12);
                let flags = h[0];
                let seq_delta = i32::from_le_bytes(h[1..5].try_into().unwrap());
                let ack_delta = i32::from_le_bytes(h[5..9].try_into().unwrap());
                let window = u16::from_le_bytes([h[9], h[10]]);
                let n = usize::from(h[11]).min(tail.len());
                let (seq, ack) = *last.lock().unwrap();
                let f = segment(
                    client,
                    server,
                    seq.wrapping_add_signed(seq_delta),
                    ack.wrapping_add_signed(ack_delta),
                    flags,
                    window,
                    &tail[..n],
                );
                let _ = inject.send(f);
                rest = &tail[n..];
            }
            // Let time pass.
            2 => {
                let Some((&ms, tail)) = rest.split_first() else { break };
                tokio::time::sleep(Duration::from_millis(u64::from(ms) * 4)).await;
                rest = tail;
            }
            // The client writes.
            _ => {
                let _ = tokio::time::timeout(Duration::from_secs(1), c.write(&b"data"[..])).await;
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(echoes_or_ends(&mut c, b"probe").await, "a silent stall: neither an echo nor an end within 60 s");
    drop(c);

    let mut fresh = tokio::time::timeout(Duration::from_secs(60), b.create_connection(server, ConnectOptions::new()))
        .await
        .expect("a fresh connect within 60 s")
        .expect("a fresh connection to the listener");
    let echoed = async {
        fresh.write(&b"again"[..]).await.unwrap();
        fresh.read().await
    };
    let got = tokio::time::timeout(Duration::from_secs(60), echoed).await.expect("the fresh echo within 60 s");
    assert_eq!(got.expect("the fresh echo").as_deref(), Some(&b"again"[..]));
    fresh.abort().await.ok();

    // UDP still works: what the input queued is drained, then B's datagram arrives.
    while let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(10), udp.recv_from()).await {}
    let sender = b.udp_bind(([10, 0, 0, 2], 0).into()).unwrap();
    sender.send_to(b"udp probe", udp.local_addr()).await.expect("a UDP send");
    let arrived = async {
        loop {
            match udp.recv_from().await {
                Ok((data, from)) if from == sender.local_addr() && data[..] == b"udp probe"[..] => return,
                Ok(_) => {}
                Err(e) => panic!("the UDP socket failed: {e}"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), arrived).await.expect("the UDP probe within 60 s");
}

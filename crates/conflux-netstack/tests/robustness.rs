//! Robustness against bad segments: corrupted frames on a checksummed link
//! never stall a connection (a soak over many seeds, in virtual time),
//! single forged or corrupted segments with an acknowledgment ahead of what
//! we sent leave the connection working, and SYN floods leave room for
//! legitimate clients.

mod support;

use std::time::Duration;

use bytes::Bytes;
use conflux_flow::{FlowExt, Shutdown};
use conflux_netstack::{Checksums, Faults, FrameDevice, LinkConfig};
use conflux_tcp::{ConnectOptions, TcpStack};
use conflux_testkit::within;
use support::peer::{ACK, PSH, Peer};
use support::{B4, addr, pair_with};

const SECOND: Duration = Duration::from_secs(1);

/// Echoes 1 MB through a server on B from a client on A over a link with
/// `faults`; `Err` says what did not complete within `limit` of virtual
/// time. Returns the virtual time it took.
async fn echo_1mb(link: LinkConfig, limit: Duration) -> Result<Duration, String> {
    let start = tokio::time::Instant::now();
    const TOTAL: usize = 1 << 20;
    let (a, b, _switch) = pair_with(link, |c| c);
    let port = b
        .listen(0, None, |mut f| async move {
            while let Ok(Some(buf)) = f.read().await {
                if f.write(buf).await.is_err() {
                    return;
                }
            }
            let _ = f.shutdown(Shutdown::Write).await;
        })
        .map_err(|e| format!("listen: {e}"))?
        .port();
    let progress = std::sync::atomic::AtomicUsize::new(0);
    let run = async {
        let c =
            a.create_connection(addr(B4, port), ConnectOptions::new()).await.map_err(|e| format!("connect: {e}"))?;
        let data = conflux_testkit::payload(7, TOTAL);
        let (mut r, mut w) = c.split();
        let writer = async {
            for chunk in data.chunks(8192) {
                w.write(Bytes::copy_from_slice(chunk)).await.map_err(|e| format!("write: {e}"))?;
            }
            w.shutdown().await.map_err(|e| format!("shutdown: {e}"))
        };
        let reader = async {
            let mut got = Vec::with_capacity(TOTAL);
            while let Some(buf) = r.read().await.map_err(|e| format!("read after {} bytes: {e}", got.len()))? {
                got.extend_from_slice(&buf);
                progress.store(got.len(), std::sync::atomic::Ordering::Relaxed);
            }
            Ok::<_, String>(got)
        };
        let ((), got) = tokio::try_join!(writer, reader)?;
        if got != data {
            return Err(format!("echo differs ({} of {TOTAL} bytes)", got.len()));
        }
        Ok(())
    };
    let res = match tokio::time::timeout(limit, run).await {
        Ok(r) => r.map(|()| start.elapsed()),
        Err(_) => Err(format!(
            "stalled: not done within {limit:?} of virtual time ({} of {TOTAL} bytes echoed)",
            progress.load(std::sync::atomic::Ordering::Relaxed)
        )),
    };
    drop((a, b));
    res
}

/// Virtual time a 1 MB echo may take under corruption. smoltcp recovers
/// from a lost segment by fast retransmit or, with too few duplicate ACKs in
/// flight, by its retransmission timeout (backed off when the retransmission
/// is lost too): at 5% loss each way an echo takes from a few seconds to
/// about two virtual minutes. A stall never finishes.
const SOAK_LIMIT: Duration = Duration::from_secs(600);

async fn soak(rate: f64, seeds: u64) {
    let mut failed = Vec::new();
    let mut slowest = (Duration::ZERO, 0);
    for seed in 1..=seeds {
        let faults = Faults { corrupt: rate, seed, ..Faults::NONE };
        match echo_1mb(LinkConfig::ethernet().faults(faults), SOAK_LIMIT).await {
            Ok(took) => slowest = slowest.max((took, seed)),
            Err(e) => {
                eprintln!("corruption {rate}: seed {seed} failed: {e}");
                failed.push((seed, e));
            }
        }
    }
    eprintln!("corruption {rate}: slowest seed {} took {:?} of virtual time", slowest.1, slowest.0);
    assert!(failed.is_empty(), "{} of {seeds} seeds failed at {rate} corruption: {failed:?}", failed.len());
}

#[tokio::test(start_paused = true)]
async fn corruption_soak_1_percent_40_seeds() {
    soak(0.01, 40).await;
}

#[tokio::test(start_paused = true)]
async fn corruption_soak_5_percent_40_seeds() {
    soak(0.05, 40).await;
}

/// After the stack sent `ping` and the peer acknowledged it, one ACK-only
/// segment acknowledging 1000 bytes beyond SND.NXT arrives (its checksum
/// broken when `corrupt`); then the peer sends data with the right ACK. The
/// data must arrive and the stack's reply must go out: on the old driver the
/// bogus ACK was recorded as the highest seen and every later segment was
/// rewritten to it, so smoltcp dropped them all (a silent stall).
async fn ack_beyond_snd_nxt(corrupt: bool) {
    let (mut peer, stack) = Peer::new(4100, 90, Checksums::Compute);
    let (seq, theirs, mut flow) = peer.handshake(&stack).await;
    flow.write("ping").await.unwrap();
    let d = peer.recv_data_within(5 * SECOND).await.expect("ping");
    assert_eq!(d.payload, b"ping");
    let snd_nxt = theirs.wrapping_add(4);
    peer.send(seq, snd_nxt, ACK, b"");

    let mut bogus = peer.segment(seq, snd_nxt.wrapping_add(1000), ACK, b"");
    if corrupt {
        bogus[36] ^= 0xff; // the TCP checksum
    }
    peer.end.send(bogus).unwrap();
    tokio::time::sleep(SECOND).await;

    peer.send(seq, snd_nxt, ACK | PSH, b"hello");
    let got = within("read after the bogus ACK", 5 * SECOND, flow.read()).await.unwrap();
    assert_eq!(got.as_deref(), Some(&b"hello"[..]));
    flow.write("back").await.unwrap();
    let d = peer.recv_data_within(5 * SECOND).await.expect("the reply after the bogus ACK");
    assert_eq!((d.seq, d.payload.as_slice()), (snd_nxt, &b"back"[..]));
}

#[tokio::test(start_paused = true)]
async fn an_ack_beyond_snd_nxt_with_a_bad_checksum_leaves_the_connection_working() {
    ack_beyond_snd_nxt(true).await;
}

#[tokio::test(start_paused = true)]
async fn an_ack_beyond_snd_nxt_with_a_good_checksum_leaves_the_connection_working() {
    ack_beyond_snd_nxt(false).await;
}

/// With the peer's window closed, written bytes wait unsent in the socket.
/// A forged ACK into those unsent bytes (beyond SND.NXT, within the send
/// buffer) must not make the stack drop them: once the window opens the peer
/// receives every byte, in order.
#[tokio::test(start_paused = true)]
async fn an_ack_into_unsent_data_loses_nothing() {
    let (mut peer, stack) = Peer::new(4101, 91, Checksums::Compute);
    let (seq, theirs, mut flow) = peer.handshake(&stack).await;
    peer.window = 0;
    peer.send(seq, theirs, ACK, b"");
    tokio::time::sleep(SECOND).await;
    let data: Vec<u8> = (0..100u8).collect();
    flow.write(data.clone()).await.unwrap();
    tokio::time::sleep(SECOND).await;
    peer.send(seq, theirs.wrapping_add(50), ACK, b"");
    tokio::time::sleep(SECOND).await;
    peer.window = 0xffff;
    peer.send(seq, theirs, ACK, b"");
    let mut got = Vec::new();
    let mut next = theirs;
    while got.len() < data.len() {
        let d = peer
            .recv_data_within(10 * SECOND)
            .await
            .unwrap_or_else(|| panic!("only {} of 100 bytes arrived", got.len()));
        if d.seq == next {
            got.extend_from_slice(&d.payload);
            next = next.wrapping_add(d.payload.len() as u32);
            peer.send(seq, next, ACK, b"");
        }
    }
    assert_eq!(got, data);
}

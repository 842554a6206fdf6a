//! E. Concurrency and cancellation.

use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use conflux_flow::{Flow, FlowError, FlowExt, ReadHalf, SharedWriter, Shutdown, WriteHalf};
use conflux_testkit::payload;

use crate::FlowFactory;
use crate::case::Kit;
use crate::util::{
    CaseResult, Ctx, PROMPT, bounded, check_chunk, chunks, ensure, is_prefix_pair, joined, poll_once, read_to_eof,
    same_bytes, sizes,
};

const DUPLEX: usize = 8 << 20;

async fn send_half<F: Flow>(mut w: WriteHalf<F>, seed: u64) -> Result<WriteHalf<F>, String> {
    let data = payload(seed, DUPLEX);
    let mut at = 0;
    let mut i = 0;
    while at < DUPLEX {
        let end = (at + 64 * 1024).min(DUPLEX);
        if i % 2 == 0 {
            w.write(data.slice(at..end)).await.ctx("write half: write")?;
        } else {
            let mid = (at + end) / 2;
            w.writev(vec![data.slice(at..mid), data.slice(mid..end)]).await.ctx("write half: writev")?;
        }
        at = end;
        i += 1;
    }
    Ok(w)
}

async fn receive_half<F: Flow>(mut r: ReadHalf<F>, seed: u64, who: String) -> Result<ReadHalf<F>, String> {
    let mut got = Vec::with_capacity(DUPLEX);
    while got.len() < DUPLEX {
        let chunk = r.read().await.ctx(&format!("{who}: read"))?;
        check_chunk(chunk.as_ref(), &who)?;
        match chunk {
            Some(c) => got.extend_from_slice(&c),
            None => return Err(format!("{who}: Eof after {} of {DUPLEX} bytes", got.len())),
        }
    }
    same_bytes(&got, &payload(seed, DUPLEX), &who)?;
    Ok(r)
}

pub(crate) async fn e1<F: FlowFactory>(kit: &Kit<'_, F>) -> CaseResult {
    let (a, b) = kit.pair().await?;
    let (ra, wa) = a.split();
    let (rb, wb) = b.split();
    // Each task hands its half back: no end is dropped while the other still
    // reads (a drop promises the peer Eof or an error, not the bytes in
    // flight: over the framing, a marker that lands after the last read makes
    // the transport reset on drop). Both ends close once everything was read.
    let (wa, wb, rb, ra) = tokio::join!(
        tokio::spawn(send_half(wa, 0xE1)),
        tokio::spawn(send_half(wb, 0xE1_01)),
        tokio::spawn(receive_half(rb, 0xE1, "b".into())),
        tokio::spawn(receive_half(ra, 0xE1_01, "a".into())),
    );
    let (mut wa, mut wb) = (joined(wa, "a's writer")??, joined(wb, "b's writer")??);
    let (_rb, _ra) = (joined(rb, "b's reader")??, joined(ra, "a's reader")??);
    let (ca, cb) = bounded("both closes", PROMPT, async { tokio::join!(wa.close(), wb.close()) }).await?;
    ca.ctx("a: close")?;
    cb.ctx("b: close")
}

const WRITERS: u32 = 3;
const MESSAGES: u32 = 40;

fn message(writer: u32, seq: u32) -> (Bytes, Bytes) {
    let len = sizes(u64::from(writer) << 32 | u64::from(seq), 1, 1, 48 * 1024)[0];
    let body = payload(0xE2 + (u64::from(writer) << 32 | u64::from(seq)), len);
    let mut head = BytesMut::with_capacity(12);
    head.extend_from_slice(&writer.to_le_bytes());
    head.extend_from_slice(&seq.to_le_bytes());
    head.extend_from_slice(&(len as u32).to_le_bytes());
    (head.freeze(), body)
}

async fn send_messages<F: Flow>(w: SharedWriter<F>, writer: u32) -> CaseResult {
    for seq in 0..MESSAGES {
        let (head, body) = message(writer, seq);
        if seq % 2 == 0 {
            w.writev(vec![head, body]).await.ctx(&format!("writer {writer}: writev of message {seq}"))?;
        } else {
            let mut whole = BytesMut::from(&head[..]);
            whole.extend_from_slice(&body);
            w.write(whole.freeze()).await.ctx(&format!("writer {writer}: write of message {seq}"))?;
        }
        if seq % 8 == 0 {
            tokio::task::yield_now().await;
        }
    }
    Ok(())
}

pub(crate) async fn e2<F: FlowFactory>(kit: &Kit<'_, F>) -> CaseResult {
    let (a, mut b) = kit.pair().await?;
    let (_ra, wa) = a.split();
    let shared = SharedWriter::new(wa);
    let tasks: Vec<_> = (0..WRITERS).map(|w| tokio::spawn(send_messages(shared.clone(), w))).collect();
    let mut next = [0u32; WRITERS as usize];
    let mut buf = BytesMut::new();
    let mut parsed = 0;
    while parsed < WRITERS * MESSAGES {
        // The next message is due from some writer: its header names which.
        while buf.len() < 12 {
            match crate::util::read_chunk(&mut b, "b").await? {
                Some(c) => buf.extend_from_slice(&c),
                None => return Err(format!("b: Eof after {parsed} messages")),
            }
        }
        let writer = u32::from_le_bytes(buf[0..4].try_into().expect("4 bytes"));
        ensure!(writer < WRITERS, "message {parsed} starts with a torn header: messages interleaved");
        let seq = next[writer as usize];
        let (head, body) = message(writer, seq);
        ensure!(buf[..12] == head[..], "writer {writer}: the header of message {seq} is torn or out of order");
        let total = head.len() + body.len();
        while buf.len() < total {
            match crate::util::read_chunk(&mut b, "b").await? {
                Some(c) => buf.extend_from_slice(&c),
                None => return Err(format!("b: Eof inside message {seq} of writer {writer}")),
            }
        }
        ensure!(buf[12..total] == body[..], "writer {writer}: message {seq} is interleaved with another message");
        let _ = buf.split_to(total);
        next[writer as usize] += 1;
        parsed += 1;
    }
    for (w, task) in tasks.into_iter().enumerate() {
        joined(task.await, &format!("writer {w}"))??;
    }
    ensure!(buf.is_empty(), "{} stray bytes after the last message", buf.len());
    Ok(())
}

/// One read attempt that is cancelled unless already ready.
fn take(r: Poll<Result<Option<Bytes>, FlowError>>, got: &mut Vec<u8>, want: &[u8]) -> Result<bool, String> {
    match r {
        Poll::Pending => Ok(false),
        Poll::Ready(Ok(Some(c))) => {
            check_chunk(Some(&c), "a")?;
            got.extend_from_slice(&c);
            ensure!(
                want.starts_with(got),
                "after a cancelled read the stream differs from byte {} on (a cancelled read lost or duplicated bytes)",
                got.iter().zip(want).position(|(g, w)| g != w).unwrap_or(want.len())
            );
            Ok(true)
        }
        Poll::Ready(Ok(None)) => Err(format!("Eof after {} of {} bytes", got.len(), want.len())),
        Poll::Ready(Err(e)) => Err(format!("read failed: {e}")),
    }
}

pub(crate) async fn e3<F: FlowFactory>(kit: &Kit<'_, F>) -> CaseResult {
    let (mut a, mut b) = kit.pair().await?;
    let data = chunks(0xE3, &sizes(0xE3, 48, 1, 8192));
    let want = crate::util::concat(&data);
    let writer_done = AtomicBool::new(false);
    let reader = async {
        let mut got = Vec::with_capacity(want.len());
        // While the peer writes: reads polled once (no-op waker) and dropped,
        // and reads raced against a short sleep, dropped when the sleep wins.
        let mut idle = 0;
        while got.len() < want.len() && idle < 20 {
            let before = got.len();
            take(poll_once(pin!(a.read())), &mut got, &want)?;
            if got.len() < want.len() {
                let r = tokio::select! {
                    r = a.read() => Poll::Ready(r),
                    _ = tokio::time::sleep(Duration::from_millis(2)) => Poll::Pending,
                };
                take(r, &mut got, &want)?;
            }
            if writer_done.load(Ordering::Relaxed) && got.len() == before {
                idle += 1;
            }
        }
        // Then plain reads: whatever a dropped read took must still come.
        while got.len() < want.len() {
            match tokio::time::timeout(PROMPT, a.read()).await {
                Ok(r) => {
                    take(Poll::Ready(r), &mut got, &want)?;
                }
                Err(_) => {
                    return Err(format!(
                        "the stream stopped at {} of {} bytes: a dropped read lost bytes",
                        got.len(),
                        want.len()
                    ));
                }
            }
        }
        ensure!(got.len() == want.len(), "received {} bytes, {} were sent", got.len(), want.len());
        Ok::<(), String>(())
    };
    let writer = async {
        for (i, c) in data.iter().enumerate() {
            b.write(c.clone()).await.ctx("b: write")?;
            if i % 3 == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        writer_done.store(true, Ordering::Relaxed);
        Ok::<(), String>(())
    };
    let (read, wrote) = tokio::join!(reader, writer);
    wrote?;
    read
}

pub(crate) async fn e4<F: FlowFactory>(kit: &Kit<'_, F>) -> CaseResult {
    const SIZE: usize = 4 << 20;
    let (mut a, mut b) = kit.pair().await?;
    let first = payload(0xE4, SIZE);
    let second = payload(0xE4_01, SIZE);
    {
        // A write raced against a short sleep: dropped while pending (if it is).
        let write = a.write(first.clone());
        tokio::select! {
            r = write => r.ctx("a: write")?,
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
    }
    {
        // A writev polled once and dropped.
        let bufs: Vec<Bytes> = (0..64).map(|i| second.slice(i * SIZE / 64..(i + 1) * SIZE / 64)).collect();
        if let Poll::Ready(r) = poll_once(pin!(a.writev(bufs))) {
            r.ctx("a: writev")?;
        }
    }
    let ending = async {
        if kit.caps.half_close {
            a.shutdown(Shutdown::Write).await.ctx("a: shutdown(Write) after dropped writes")
        } else {
            a.close().await.ctx("a: close after dropped writes")
        }
    };
    let reader = async {
        let got = read_to_eof(&mut b, "b").await;
        if kit.caps.close_waits_for_peer && !kit.caps.half_close {
            b.close().await.ctx("b: close")?;
        }
        got
    };
    let (ended, got) = tokio::join!(ending, reader);
    ended?;
    let got = got?;
    ensure!(
        is_prefix_pair(&got, &first, &second),
        "after dropped writes the peer read {} bytes that are not a prefix of each write in turn",
        got.len()
    );
    Ok(())
}

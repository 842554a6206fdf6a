//! A. Data path.

use std::pin::pin;

use bytes::Bytes;
use conflux_flow::{Flow, FlowExt, Shutdown};
use conflux_testkit::payload;

use crate::FlowFactory;
use crate::case::Kit;
use crate::util::{
    CaseResult, Ctx, QUIET, chunks, concat, ensure, expect_quiet, read_exact, read_to_eof, same_bytes, sizes,
    write_chunks,
};

/// Writes `data` on `w` while `r` reads exactly its length; compares.
pub(crate) async fn transfer<F: Flow + ?Sized>(w: &mut F, r: &mut F, data: &[Bytes], what: &str) -> CaseResult {
    let want = concat(data);
    let (wrote, got) = tokio::join!(write_chunks(w, data, what), read_exact(r, want.len(), what));
    wrote?;
    same_bytes(&got?, &want, what)
}

pub(crate) async fn a1<F: FlowFactory>(kit: &Kit<'_, F>) -> CaseResult {
    const SIZES: [usize; 13] = [1, 2, 3, 7, 100, 1000, 1460, 4096, 16383, 65536, 65537, 300_000, 1 << 20];
    let (mut a, mut b) = kit.pair().await?;
    transfer(&mut a, &mut b, &chunks(0xA1, &SIZES), "a -> b").await?;
    transfer(&mut b, &mut a, &chunks(0xA1_00, &SIZES), "b -> a").await?;
    // One size at a time too: each write read back before the next.
    for (i, &n) in SIZES.iter().enumerate() {
        transfer(&mut a, &mut b, &[payload(0xA1_01 + i as u64, n)], &format!("a -> b, {n} bytes alone")).await?;
    }
    Ok(())
}

pub(crate) async fn a2<F: FlowFactory>(kit: &Kit<'_, F>) -> CaseResult {
    let (mut a, mut b) = kit.pair().await?;
    // Tiny writes, empty writes and a writev with empty elements, with a reader
    // racing them: every read must be non-empty (checked by every kit read).
    let data = chunks(0xA2, &sizes(0xA2, 200, 0, 300));
    let want = concat(&data);
    let writer = async {
        for (i, c) in data.iter().enumerate() {
            if i % 7 == 0 {
                a.writev(vec![Bytes::new(), c.clone(), Bytes::new()]).await.ctx("writev")?;
            } else {
                a.write(c.clone()).await.ctx("write")?;
            }
            if i % 5 == 0 {
                tokio::task::yield_now().await;
            }
        }
        Ok::<(), String>(())
    };
    let (wrote, got) = tokio::join!(writer, read_exact(&mut b, want.len(), "b"));
    wrote?;
    same_bytes(&got?, &want, "small writes")?;
    if kit.caps.half_close {
        a.write(Bytes::new()).await.ctx("empty write")?;
        a.shutdown(Shutdown::Write).await.ctx("shutdown(Write)")?;
        ensure!(read_to_eof(&mut b, "b after shutdown").await?.is_empty(), "data after an empty write and shutdown");
    }
    Ok(())
}

pub(crate) async fn a3<F: FlowFactory>(kit: &Kit<'_, F>) -> CaseResult {
    let (mut a, mut b) = kit.pair().await?;
    empty_writes(&mut a, &mut b, "a -> b").await?;
    empty_writes(&mut b, &mut a, "b -> a").await
}

async fn empty_writes<F: Flow + ?Sized>(w: &mut F, r: &mut F, dir: &str) -> CaseResult {
    w.write(Bytes::new()).await.ctx(&format!("{dir}: empty write"))?;
    w.write(&b""[..]).await.ctx(&format!("{dir}: empty write of a slice"))?;
    w.writev(Vec::new()).await.ctx(&format!("{dir}: writev of nothing"))?;
    w.writev(vec![Bytes::new(), Bytes::new()]).await.ctx(&format!("{dir}: writev of empty buffers"))?;
    expect_quiet(r, &format!("{dir}: the peer after empty writes ({QUIET:?})")).await?;
    w.write("x").await.ctx(&format!("{dir}: write after empty writes"))?;
    let got = read_exact(r, 1, dir).await?;
    same_bytes(&got, b"x", dir)
}

pub(crate) async fn a4<F: FlowFactory>(kit: &Kit<'_, F>) -> CaseResult {
    let (mut a, mut b) = kit.pair().await?;
    a.writev(Vec::new()).await.ctx("writev of nothing")?;
    let mut lens = sizes(0xA4, 120, 1, 20_000);
    for (i, n) in lens.iter_mut().enumerate() {
        if i % 3 == 1 {
            *n = 0;
        }
    }
    let bufs = chunks(0xA4, &lens);
    let want = concat(&bufs);
    let (wrote, got) = tokio::join!(a.writev(bufs), read_exact(&mut b, want.len(), "b"));
    wrote.ctx("writev of 120 buffers")?;
    same_bytes(&got?, &want, "writev")?;
    // A second writev right after: order across calls holds too.
    let more = chunks(0xA4_01, &[5, 0, 70_000, 3]);
    let want = concat(&more);
    let (wrote, got) = tokio::join!(a.writev(more), read_exact(&mut b, want.len(), "b"));
    wrote.ctx("second writev")?;
    same_bytes(&got?, &want, "second writev")
}

pub(crate) async fn a5<F: FlowFactory>(kit: &Kit<'_, F>) -> CaseResult {
    const N: usize = 1024;
    const SIZE: usize = 16 * 1024;
    let (mut a, mut b) = kit.pair().await?;
    let whole = payload(0xA5, N * SIZE);
    let bufs: Vec<Bytes> = (0..N).map(|i| whole.slice(i * SIZE..(i + 1) * SIZE)).collect();
    let (wrote, got) = tokio::join!(a.writev(bufs), read_exact(&mut b, N * SIZE, "b"));
    wrote.ctx("writev of 1024 x 16 KiB")?;
    same_bytes(&got?, &whole, "16 MiB writev")?;
    // Exactly 16 MiB: nothing more follows.
    expect_quiet(&mut b, "b after 16 MiB").await
}

pub(crate) async fn a6<F: FlowFactory>(kit: &Kit<'_, F>) -> CaseResult {
    const SIZE: usize = 16 << 20;
    let (mut a, mut b) = kit.pair().await?;
    let big = payload(0xA6, SIZE);
    let mut write = pin!(a.write(big.clone()));
    tokio::select! {
        r = &mut write => return Err(format!(
            "a {SIZE}-byte write with no reader completed ({r:?}): the buffer is not bounded"
        )),
        _ = tokio::time::sleep(QUIET * 2) => {}
    }
    let (wrote, got) = tokio::join!(write, read_exact(&mut b, SIZE, "b"));
    wrote.ctx("the pending write once the peer reads")?;
    same_bytes(&got?, &big, "backpressured write")
}

//! B. Eof and half-close.

use bytes::Bytes;
use conflux_flow::{Flow, FlowExt, Shutdown};
use conflux_testkit::payload;

use crate::FlowFactory;
use crate::case::Kit;
use crate::cases::data::transfer;
use crate::util::{
    CaseResult, Ctx, PROMPT, QUIET, bounded, chunks, concat, ensure, read_chunk, read_to_eof, same_bytes, show, sizes,
    write_chunks,
};

/// Writes `data` then shuts down `w`'s write side while `r` reads to Eof; compares.
async fn send_then_eof<F: Flow + ?Sized>(w: &mut F, r: &mut F, data: &[Bytes], what: &str) -> CaseResult {
    let writer = async {
        write_chunks(w, data, what).await?;
        w.shutdown(Shutdown::Write).await.ctx(&format!("{what}: shutdown(Write)"))
    };
    let (wrote, got) = tokio::join!(writer, read_to_eof(r, what));
    wrote?;
    same_bytes(&got?, &concat(data), what)
}

/// The next reads are Eof (sticky): `n` times, and again after a pause.
async fn eof_stays<F: Flow + ?Sized>(f: &mut F, what: &str) -> CaseResult {
    for i in 0..3 {
        let r = bounded(&format!("{what}: read {i} after Eof"), PROMPT, f.read()).await?;
        ensure!(matches!(r, Ok(None)), "{what}: read {i} after Eof returned {} (Eof must be sticky)", show(&r));
    }
    tokio::time::sleep(QUIET).await;
    let r = bounded(&format!("{what}: read after Eof and a pause"), PROMPT, f.read()).await?;
    ensure!(matches!(r, Ok(None)), "{what}: read after Eof and a pause returned {} (Eof must be sticky)", show(&r));
    Ok(())
}

/// Writes until a write fails, at most `attempts` times; true if one did.
pub(crate) async fn writes_fail<F: Flow + ?Sized>(f: &mut F, attempts: usize) -> Result<Option<String>, String> {
    let chunk = payload(0xFA11, 16 * 1024);
    for i in 0..attempts {
        match bounded(&format!("write attempt {i}"), PROMPT, f.write(chunk.clone())).await? {
            Ok(()) => tokio::time::sleep(std::time::Duration::from_millis(5)).await,
            Err(e) => return Ok(Some(e.to_string())),
        }
    }
    Ok(None)
}

pub(crate) async fn b1<F: FlowFactory>(kit: &Kit<'_, F>) -> CaseResult {
    let (mut a, mut b) = kit.pair().await?;
    let data = chunks(0xB1, &sizes(0xB1, 24, 1, 40_000));
    send_then_eof(&mut b, &mut a, &data, "b -> a").await?;
    // A single small write followed at once by the shutdown.
    let (mut a, mut b) = kit.pair().await?;
    send_then_eof(&mut b, &mut a, &[payload(0xB1_01, 10)], "b -> a, 10 bytes").await
}

pub(crate) async fn b2<F: FlowFactory>(kit: &Kit<'_, F>) -> CaseResult {
    let (mut a, mut b) = kit.pair().await?;
    send_then_eof(&mut b, &mut a, &[payload(0xB2, 5000)], "b -> a").await?;
    eof_stays(&mut a, "after the peer's Eof").await?;
    if !kit.caps.read_shutdown {
        kit.skip_part("Eof after our shutdown(Read) stays: needs read_shutdown");
        return Ok(());
    }
    // Data in flight when we shut down reading must never show up later.
    let (mut a, mut b) = kit.pair().await?;
    b.write(payload(0xB2_01, 1000)).await.ctx("b: first write")?;
    b.write(payload(0xB2_02, 4000)).await.ctx("b: second write")?;
    ensure!(read_chunk(&mut a, "a").await?.is_some(), "a: Eof before any data");
    a.shutdown(Shutdown::Read).await.ctx("shutdown(Read)")?;
    // Errors are allowed for the peer here (it may see our shutdown).
    let _ = bounded("b: write after the peer's shutdown(Read)", PROMPT, b.write(payload(0xB2_03, 100))).await?;
    eof_stays(&mut a, "after our shutdown(Read)").await
}

pub(crate) async fn b3<F: FlowFactory>(kit: &Kit<'_, F>) -> CaseResult {
    let (mut a, mut b) = kit.pair().await?;
    b.shutdown(Shutdown::Write).await.ctx("b: shutdown(Write)")?;
    ensure!(read_to_eof(&mut a, "a").await?.is_empty(), "a read data b never wrote");
    transfer(&mut a, &mut b, &chunks(0xB3, &[1, 100_000, 150_000]), "a -> b after a read Eof").await?;
    send_then_eof(&mut a, &mut b, &[payload(0xB3_01, 10)], "a -> b, then Eof").await
}

pub(crate) async fn b4<F: FlowFactory>(kit: &Kit<'_, F>) -> CaseResult {
    let (mut a, mut b) = kit.pair().await?;
    let data = chunks(0xB4, &[70_000, 3, 10_000]);
    let writer = async {
        write_chunks(&mut a, &data, "a").await?;
        a.shutdown(Shutdown::Write).await.ctx("a: shutdown(Write)")?;
        let r = bounded("a: write after shutdown(Write)", PROMPT, a.write("late")).await?;
        ensure!(matches!(&r, Err(e) if e.is_closed()), "a: write after shutdown(Write) returned {r:?}, not Closed");
        let r = bounded("a: writev after shutdown(Write)", PROMPT, a.writev(vec![Bytes::from("late")])).await?;
        ensure!(matches!(&r, Err(e) if e.is_closed()), "a: writev after shutdown(Write) returned {r:?}, not Closed");
        Ok(())
    };
    let (wrote, got) = tokio::join!(writer, read_to_eof(&mut b, "b"));
    wrote?;
    same_bytes(&got?, &concat(&data), "b: everything written before the shutdown")?;
    tokio::time::sleep(QUIET).await;
    let r = bounded("b: read after Eof", PROMPT, b.read()).await?;
    ensure!(matches!(r, Ok(None)), "b: read after Eof returned {}: a write after shutdown leaked through", show(&r));
    Ok(())
}

pub(crate) async fn b5<F: FlowFactory>(kit: &Kit<'_, F>) -> CaseResult {
    let (mut a, mut b) = kit.pair().await?;
    a.shutdown(Shutdown::Write).await.ctx("a: shutdown(Write)")?;
    ensure!(read_to_eof(&mut b, "b").await?.is_empty(), "b read data a never wrote");
    let data = chunks(0xB5, &[1 << 20, 1, 4096]);
    send_then_eof(&mut b, &mut a, &data, "b -> a after a's shutdown(Write)").await
}

pub(crate) async fn b6<F: FlowFactory>(kit: &Kit<'_, F>) -> CaseResult {
    let (mut a, mut b) = kit.pair().await?;
    let data = chunks(0xB6, &sizes(0xB6, 64, 1, 16_384));
    send_then_eof(&mut a, &mut b, &data, "64 writes, then shutdown(Write)").await?;
    // Nobody reads until the shutdown returned: what was accepted must still arrive.
    let (mut a, mut b) = kit.pair().await?;
    let data = chunks(0xB6_01, &[300, 1, 17]);
    write_chunks(&mut a, &data, "a").await?;
    a.shutdown(Shutdown::Write).await.ctx("a: shutdown(Write)")?;
    same_bytes(&read_to_eof(&mut b, "b").await?, &concat(&data), "writes accepted before shutdown(Write)")
}

/// The effects of `Both`: reads Eof at once (data in flight from the peer is
/// dropped), writes Closed, the peer reads Eof.
async fn behaves_as_both<F: Flow + ?Sized>(a: &mut F, b: &mut F, what: &str) -> CaseResult {
    for i in 0..2 {
        let r = bounded(&format!("{what}: read {i}"), PROMPT, a.read()).await?;
        ensure!(matches!(r, Ok(None)), "{what}: read {i} returned {}, not Eof", show(&r));
    }
    let r = bounded(&format!("{what}: write"), PROMPT, a.write("late")).await?;
    ensure!(matches!(&r, Err(e) if e.is_closed()), "{what}: write returned {r:?}, not Closed");
    let got = bounded(&format!("{what}: the peer's read to Eof"), PROMPT, read_to_eof(b, what)).await??;
    ensure!(got.is_empty(), "{what}: the peer read {} bytes nobody wrote", got.len());
    Ok(())
}

pub(crate) async fn b7<F: FlowFactory>(kit: &Kit<'_, F>) -> CaseResult {
    let (mut a, mut b) = kit.pair().await?;
    b.write(payload(0xB7, 4000)).await.ctx("b: write")?;
    a.shutdown(Shutdown::Read).await.ctx("a: shutdown(Read)")?;
    for i in 0..2 {
        let r = bounded(&format!("a: read {i} after shutdown(Read)"), PROMPT, a.read()).await?;
        ensure!(matches!(r, Ok(None)), "a: read {i} after shutdown(Read) returned {}, not Eof", show(&r));
    }
    transfer(&mut a, &mut b, &chunks(0xB7_01, &[1, 50_000]), "a -> b after a's shutdown(Read)").await?;
    if kit.caps.peer_sees_read_shutdown {
        ensure!(
            writes_fail(&mut b, 200).await?.is_some(),
            "b: 200 writes succeeded after a's shutdown(Read) (peer_sees_read_shutdown)"
        );
    }
    Ok(())
}

pub(crate) async fn b8<F: FlowFactory>(kit: &Kit<'_, F>) -> CaseResult {
    let (mut a, mut b) = kit.pair().await?;
    b.write(payload(0xB8, 1000)).await.ctx("b: write")?;
    a.shutdown(Shutdown::Write).await.ctx("a: shutdown(Write)")?;
    a.shutdown(Shutdown::Read).await.ctx("a: shutdown(Read)")?;
    behaves_as_both(&mut a, &mut b, "shutdown(Write) then shutdown(Read)").await?;
    let (mut a, mut b) = kit.pair().await?;
    b.write(payload(0xB8, 1000)).await.ctx("b: write")?;
    a.shutdown(Shutdown::Both).await.ctx("a: shutdown(Both)")?;
    behaves_as_both(&mut a, &mut b, "shutdown(Both)").await
}

pub(crate) async fn b9<F: FlowFactory>(kit: &Kit<'_, F>) -> CaseResult {
    let (mut a, mut b) = kit.pair().await?;
    let data = payload(0xB9, 20_000);
    let writer = async {
        a.write(data.clone()).await.ctx("a: write")?;
        for i in 0..3 {
            a.shutdown(Shutdown::Write).await.ctx(&format!("a: shutdown(Write) number {}", i + 1))?;
        }
        Ok::<(), String>(())
    };
    let (wrote, got) = tokio::join!(writer, read_to_eof(&mut b, "b"));
    wrote?;
    same_bytes(&got?, &data, "b")?;
    eof_stays(&mut b, "b after a's repeated shutdown(Write)").await?;
    // The other direction is untouched by the repeats.
    transfer(&mut b, &mut a, &[payload(0xB9_01, 30_000)], "b -> a").await?;
    b.shutdown(Shutdown::Write).await.ctx("b: shutdown(Write)")?;
    b.shutdown(Shutdown::Both).await.ctx("b: shutdown(Both) after shutdown(Write)")?;
    ensure!(read_to_eof(&mut a, "a").await?.is_empty(), "a: data after b's shutdowns");
    eof_stays(&mut a, "a after b's repeated shutdowns").await?;
    a.shutdown(Shutdown::Both).await.ctx("a: shutdown(Both)")?;
    a.shutdown(Shutdown::Both).await.ctx("a: second shutdown(Both)")?;
    a.shutdown(Shutdown::Read).await.ctx("a: shutdown(Read) after Both")
}

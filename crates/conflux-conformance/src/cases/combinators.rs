//! J. Combinators: `copy` and `proxy` over the flows under test.

use std::time::Duration;

use conflux_flow::{
    CopyError, CopyStats, Direction, FlowError, FlowExt, ProxyError, ProxyStats, Shutdown, Side, copy, proxy,
};
use conflux_testkit::payload;

use crate::FlowFactory;
use crate::case::Kit;
use crate::util::{
    CaseResult, Ctx, PROMPT, bounded, chunks, concat, ensure, expect_quiet, joined, read_exact, read_to_eof,
    read_until_end, same_bytes, write_chunks,
};

pub(crate) async fn j1<F: FlowFactory>(kit: &Kit<'_, F>) -> CaseResult {
    let (mut x, mut src) = kit.pair().await?;
    let (mut dst, mut y) = kit.pair().await?;
    let data = chunks(0x71, &[1, 100_000, 7, 200_000, 3]);
    let want = concat(&data);
    let feeder = async {
        write_chunks(&mut x, &data, "x").await?;
        x.shutdown(Shutdown::Write).await.ctx("x: shutdown(Write)")
    };
    let (fed, copied, got) = tokio::join!(feeder, copy(&mut src, &mut dst), read_exact(&mut y, want.len(), "y"));
    fed?;
    let stats = copied.map_err(|e| format!("copy failed at Eof: {e}"))?;
    same_bytes(&got?, &want, "y: what copy moved")?;
    ensure!(stats.bytes == want.len() as u64, "copy counted {} bytes, {} moved", stats.bytes, want.len());
    ensure!(stats.reads >= 1 && stats.reads <= want.len() as u64, "copy counted {} reads", stats.reads);
    ensure!(stats.writes == stats.reads, "copy counted {} writes for {} reads", stats.writes, stats.reads);
    // The destination is neither shut down nor closed.
    expect_quiet(&mut y, "y after the copy ended").await?;
    dst.write("after").await.ctx("dst: write after the copy")?;
    same_bytes(&read_exact(&mut y, 5, "y").await?, b"after", "y: a write after the copy")?;
    dst.shutdown(Shutdown::Write).await.ctx("dst: shutdown(Write)")?;
    ensure!(read_to_eof(&mut y, "y").await?.is_empty(), "y: data after the last write");

    if !kit.caps.abort_resets {
        kit.skip_part("copy's error names the source on a reset: needs abort_resets");
        return Ok(());
    }
    let (mut x, mut src) = kit.pair().await?;
    let (mut dst, _y) = kit.pair().await?;
    x.write(payload(0x71_01, 100)).await.ctx("x: write")?;
    let copying = copy(&mut src, &mut dst);
    let (copied, aborted) = tokio::join!(bounded("copy from an aborted source", PROMPT, copying), async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        x.abort().await
    });
    aborted.ctx("x: abort")?;
    match copied? {
        Err(CopyError { side: Side::Source, source, .. }) if source.is_reset() => Ok(()),
        Err(e) => Err(format!("copy from an aborted source failed with {e}: not a reset at the source")),
        Ok(stats) => Err(format!("copy from an aborted source ended cleanly ({stats})")),
    }
}

pub(crate) async fn j2<F: FlowFactory>(kit: &Kit<'_, F>) -> CaseResult {
    // x <-> (a | proxy | b) <-> y
    let (mut x, a) = kit.pair().await?;
    let (b, mut y) = kit.pair().await?;
    let relay = tokio::spawn(async move {
        let (mut a, mut b) = (a, b);
        proxy(&mut a, &mut b).await
    });
    let there = chunks(0x72, &[1, 70_000, 300_000]);
    let back = chunks(0x72_01, &[200_000, 9, 1]);
    let client = async {
        write_chunks(&mut x, &there, "x").await?;
        x.shutdown(Shutdown::Write).await.ctx("x: shutdown(Write)")?;
        read_to_eof(&mut x, "x").await
    };
    let server = async {
        // x's direction ends first; ours keeps flowing after y read the Eof.
        let got = read_to_eof(&mut y, "y").await?;
        write_chunks(&mut y, &back, "y").await?;
        y.shutdown(Shutdown::Write).await.ctx("y: shutdown(Write)")?;
        Ok::<_, String>(got)
    };
    let (at_x, at_y) = tokio::join!(client, server);
    same_bytes(&at_y?, &concat(&there), "x -> y through proxy")?;
    same_bytes(&at_x?, &concat(&back), "y -> x through proxy")?;
    let stats = joined(bounded("proxy's end", PROMPT, relay).await?, "proxy")?.map_err(|e| format!("proxy: {e}"))?;
    let want = (concat(&there).len() as u64, concat(&back).len() as u64);
    ensure!(
        (stats.a_to_b.bytes, stats.b_to_a.bytes) == want,
        "proxy counted {} / {} bytes, {want:?} were sent",
        stats.a_to_b.bytes,
        stats.b_to_a.bytes
    );
    proxy_error_names_side(kit).await?;
    if kit.caps.abort_resets {
        proxy_passes_reset(kit).await
    } else {
        kit.skip_part("proxy passes a reset on as an abort: needs abort_resets");
        Ok(())
    }
}

/// y closes while x keeps writing: the error points at b's side.
async fn proxy_error_names_side<F: FlowFactory>(kit: &Kit<'_, F>) -> CaseResult {
    let (mut x, a) = kit.pair().await?;
    let (b, y) = kit.pair().await?;
    let mut relay = tokio::spawn(async move {
        let (mut a, mut b) = (a, b);
        proxy(&mut a, &mut b).await
    });
    let closer = tokio::spawn(async move {
        let mut y = y;
        tokio::time::sleep(Duration::from_millis(20)).await;
        let _ = y.close().await;
        y
    });
    let chunk = payload(0x72_02, 16 * 1024);
    let ended = async {
        loop {
            tokio::select! {
                r = &mut relay => return r,
                w = x.write(chunk.clone()) => if w.is_err() { return (&mut relay).await },
            }
        }
    };
    let result = joined(bounded("proxy after its destination closed", PROMPT * 2, ended).await?, "proxy")?;
    if kit.caps.close_waits_for_peer {
        let _ = x.close().await;
    }
    joined(bounded("y's close", kit.caps.case_timeout, closer).await?, "y's close")?;
    match &result {
        Ok(stats) => Err(format!("proxy ended cleanly ({stats}) although y closed while x was writing")),
        Err(e)
            if matches!(
                (e.direction, e.side),
                (Direction::AToB, Side::Destination) | (Direction::BToA, Side::Source)
            ) =>
        {
            let text = e.to_string();
            ensure!(
                text.contains(&e.direction.to_string()) && text.contains(&e.side.to_string()),
                "the proxy error {text:?} does not say which direction and side failed"
            );
            Ok(())
        }
        Err(e) => Err(format!("y closed but the proxy error blames the other side: {e}")),
    }
}

/// x aborts: the proxy fails at a's side with a reset and aborts b, so y reads a reset.
async fn proxy_passes_reset<F: FlowFactory>(kit: &Kit<'_, F>) -> CaseResult {
    let (mut x, a) = kit.pair().await?;
    let (b, mut y) = kit.pair().await?;
    let relay = tokio::spawn(async move {
        let (mut a, mut b) = (a, b);
        proxy(&mut a, &mut b).await
    });
    x.write(payload(0x72_03, 1000)).await.ctx("x: write")?;
    tokio::time::sleep(Duration::from_millis(20)).await;
    x.abort().await.ctx("x: abort")?;
    let (_, end) = bounded("y's read after x aborted", PROMPT, read_until_end(&mut y, "y")).await??;
    ensure!(matches!(&end, Err(e) if e.is_reset()), "x aborted but y's read ended with {end:?}, not a reset");
    let result = joined(bounded("proxy after x aborted", PROMPT, relay).await?, "proxy")?;
    match result {
        Err(ProxyError { direction: Direction::AToB, side: Side::Source, ref source, .. }) if source.is_reset() => {
            Ok(())
        }
        other => Err(format!("x aborted; the proxy returned {other:?}, not a reset reading a")),
    }
}

pub(crate) async fn j3<F: FlowFactory>(_kit: &Kit<'_, F>) -> CaseResult {
    let mut texts = Vec::new();
    for bytes in [0, 1, 1023, 1024, 1025, u64::MAX] {
        for duration in [Duration::ZERO, Duration::from_nanos(1), Duration::from_secs(3600)] {
            let stats = CopyStats { bytes, reads: bytes.min(3), writes: bytes.min(3), duration };
            texts.push(stats.to_string());
            texts.push(ProxyStats { a_to_b: stats, b_to_a: CopyStats::default() }.to_string());
            let e = CopyError { side: Side::Destination, source: FlowError::closed(), stats };
            texts.push(e.to_string());
        }
    }
    texts.push(CopyStats::default().to_string());
    for t in &texts {
        ensure!(!t.is_empty() && !t.contains("NaN") && !t.contains("inf"), "stats print as {t:?}");
    }
    Ok(())
}

//! C. Close.

use std::time::Duration;

use conflux_flow::{Flow, FlowExt, Shutdown};
use conflux_testkit::payload;

use crate::FlowFactory;
use crate::case::Kit;
use crate::cases::eof::writes_fail;
use crate::util::{
    CaseResult, Ctx, PROMPT, QUIET, bounded, chunks, close_both, concat, ensure, joined, read_to_eof, read_until_end,
    same_bytes, show, write_chunks,
};

/// Closes `a`; with `close_waits_for_peer`, closes `b` at the same time.
async fn close_one<F: FlowFactory>(kit: &Kit<'_, F>, a: &mut F::Flow, b: &mut F::Flow) -> CaseResult {
    if kit.caps.close_waits_for_peer {
        bounded("close of both ends", kit.caps.case_timeout, close_both(a, b)).await?
    } else {
        bounded("close", PROMPT, a.close()).await?.ctx("close")
    }
}

/// After close: reads give Eof or an error (never data), writes give Closed.
async fn closed_behaves<F: Flow + ?Sized>(a: &mut F, what: &str) -> CaseResult {
    for i in 0..2 {
        let r = bounded(&format!("{what}: read {i} after close"), PROMPT, a.read()).await?;
        ensure!(!matches!(r, Ok(Some(_))), "{what}: read {i} after close returned data");
    }
    let r = bounded(&format!("{what}: write after close"), PROMPT, a.write("late")).await?;
    ensure!(matches!(&r, Err(e) if e.is_closed()), "{what}: write after close returned {r:?}, not Closed");
    let r = bounded(&format!("{what}: writev after close"), PROMPT, a.writev(vec!["late".into()])).await?;
    ensure!(matches!(&r, Err(e) if e.is_closed()), "{what}: writev after close returned {r:?}, not Closed");
    Ok(())
}

pub(crate) async fn c1<F: FlowFactory>(kit: &Kit<'_, F>) -> CaseResult {
    let (mut a, mut b) = kit.pair().await?;
    // Data in flight towards `a` must not be read after its close.
    b.write(payload(0xC1, 1000)).await.ctx("b: write")?;
    tokio::time::sleep(QUIET).await;
    close_one(kit, &mut a, &mut b).await?;
    closed_behaves(&mut a, "a").await
}

pub(crate) async fn c2<F: FlowFactory>(kit: &Kit<'_, F>) -> CaseResult {
    let (mut a, mut b) = kit.pair().await?;
    a.write("x").await.ctx("write")?;
    close_one(kit, &mut a, &mut b).await?;
    bounded("second close", PROMPT, a.close()).await?.ctx("second close")?;
    bounded("third close", PROMPT, a.close()).await?.ctx("third close")?;
    bounded("abort after close", PROMPT, a.abort()).await?.ctx("abort after close")?;
    closed_behaves(&mut a, "a after repeated closes").await?;
    // Close after abort, too.
    let (mut a, _b) = kit.pair().await?;
    bounded("abort", PROMPT, a.abort()).await?.ctx("abort")?;
    bounded("close after abort", PROMPT, a.close()).await?.ctx("close after abort")?;
    closed_behaves(&mut a, "a after abort and close").await
}

pub(crate) async fn c3<F: FlowFactory>(kit: &Kit<'_, F>) -> CaseResult {
    let (a, mut b) = kit.pair().await?;
    let (mut ra, mut wa) = a.split();
    let reader = tokio::spawn(async move { ra.read().await.map(|c| c.map(|c| c.len())) });
    tokio::time::sleep(QUIET).await;
    ensure!(!reader.is_finished(), "the read finished before anything was sent or closed");
    let closing = async {
        if kit.caps.close_waits_for_peer {
            let (ra, rb) = tokio::join!(wa.close(), b.close());
            ra.ctx("close")?;
            rb.ctx("close of the peer")
        } else {
            wa.close().await.ctx("close through the write half")
        }
    };
    bounded("close", kit.caps.case_timeout, closing).await??;
    let r = bounded("the read pending on the read half after close", PROMPT, reader).await?;
    let r = joined(r, "the reading task")?;
    ensure!(!matches!(r, Ok(Some(_))), "the pending read returned data after close: {r:?}");
    Ok(())
}

pub(crate) async fn c4<F: FlowFactory>(kit: &Kit<'_, F>) -> CaseResult {
    let (mut a, b) = kit.pair().await?;
    let data = payload(0xC4, 64 * 1024);
    let sent = data.clone();
    // The peer writes, then closes; it runs on its own task since its close may
    // wait for ours (close_waits_for_peer).
    let peer = tokio::spawn(async move {
        let mut b = b;
        let wrote = b.write(sent).await;
        let closed = b.close().await;
        (b, wrote, closed)
    });
    let got = read_to_eof(&mut a, "a").await?;
    same_bytes(&got, &data, "a: what the peer wrote before its close")?;
    ensure!(writes_fail(&mut a, 200).await?.is_some(), "a: 200 writes succeeded after the peer closed");
    if kit.caps.close_waits_for_peer {
        a.close().await.ctx("a: close")?;
    }
    let (_b, wrote, closed) = joined(bounded("the peer's close", kit.caps.case_timeout, peer).await?, "the peer")?;
    wrote.ctx("b: write")?;
    closed.ctx("b: close")?;

    if !kit.caps.abort_resets {
        kit.skip_part("the peer's abort reads as a reset: needs abort_resets");
        return Ok(());
    }
    let (mut a, mut b) = kit.pair().await?;
    let data = payload(0xC4_01, 4000);
    b.write(data.clone()).await.ctx("b: write")?;
    bounded("b: abort", PROMPT, b.abort()).await?.ctx("b: abort")?;
    let (got, end) = bounded("a: read after the peer's abort", PROMPT, read_until_end(&mut a, "a")).await??;
    ensure!(
        data.starts_with(&got),
        "a: read {} bytes after an abort that are not a prefix of what was sent",
        got.len()
    );
    match end {
        Err(e) if e.is_reset() => Ok(()),
        Err(e) => Err(format!("a: the peer's abort read as an error that is not a reset: {e}")),
        Ok(()) => Err("a: the peer's abort read as a clean Eof (must be an error with is_reset())".into()),
    }
}

pub(crate) async fn c5<F: FlowFactory>(kit: &Kit<'_, F>) -> CaseResult {
    let (mut a, b) = kit.pair().await?;
    a.write(payload(0xC5, 1000)).await.ctx("a: write")?;
    let bound = if kit.caps.close_waits_for_peer {
        kit.caps.case_timeout.saturating_sub(Duration::from_secs(2))
    } else {
        PROMPT
    };
    bounded("close while the peer never closes", bound, a.close()).await?.ctx("close")?;
    drop(b);
    Ok(())
}

pub(crate) async fn c6<F: FlowFactory>(kit: &Kit<'_, F>) -> CaseResult {
    let (mut a, mut b) = kit.pair().await?;
    a.shutdown(Shutdown::Both).await.ctx("a: shutdown(Both)")?;
    let got = bounded("b: read to Eof", PROMPT, read_to_eof(&mut b, "b")).await??;
    ensure!(got.is_empty(), "b read {} bytes nobody wrote", got.len());
    let peer = async {
        tokio::time::sleep(QUIET).await;
        // After our close the peer still sees the one Eof: no reset, no second marker.
        let r = b.read().await;
        ensure!(matches!(r, Ok(None)), "b: read after a's close returned {}, not the same Eof", show(&r));
        if kit.caps.close_waits_for_peer {
            b.close().await.ctx("b: close")?;
        }
        Ok::<(), String>(())
    };
    let (closed, seen) = tokio::join!(bounded("close after shutdown(Both)", PROMPT, a.close()), peer);
    closed?.ctx("close after shutdown(Both)")?;
    seen?;
    let r = bounded("b: read", PROMPT, b.read()).await?;
    ensure!(!matches!(r, Ok(Some(_))), "b: data after a's close");
    Ok(())
}

pub(crate) async fn c7<F: FlowFactory>(kit: &Kit<'_, F>) -> CaseResult {
    let (mut a, mut b) = kit.pair().await?;
    let data = chunks(0xC7, &[64 * 1024; 16]);
    let writer = async {
        write_chunks(&mut a, &data, "a").await?;
        a.close().await.ctx("a: close right after the writes")
    };
    let reader = async {
        let got = read_to_eof(&mut b, "b").await?;
        if kit.caps.close_waits_for_peer {
            b.close().await.ctx("b: close")?;
        }
        Ok::<_, String>(got)
    };
    let (wrote, got) = tokio::join!(writer, reader);
    wrote?;
    same_bytes(&got?, &concat(&data), "b: what a wrote before close")?;
    // Nobody reading until after the close returned.
    let (mut a, mut b) = kit.pair().await?;
    let data = chunks(0xC7_01, &[200, 1, 33]);
    write_chunks(&mut a, &data, "a").await?;
    let reader = async {
        let got = read_to_eof(&mut b, "b").await;
        if kit.caps.close_waits_for_peer {
            b.close().await.ctx("b: close")?;
        }
        got
    };
    let (closed, got) = tokio::join!(a.close(), reader);
    closed.ctx("a: close")?;
    same_bytes(&got?, &concat(&data), "b: small writes accepted before close")
}

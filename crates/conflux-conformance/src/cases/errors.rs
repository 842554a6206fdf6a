//! D. Errors.

use conflux_flow::{FlowError, FlowExt};
use conflux_testkit::payload;

use crate::FlowFactory;
use crate::case::Kit;
use crate::util::{CaseResult, Ctx, PROMPT, QUIET, bounded, ensure, joined, read_chunk, read_until_end};

/// Makes a pair, has the peer close, and writes on `a` until a write fails
/// (at most 200 attempts). Returns `a` and the first write error.
async fn write_until_error<F: FlowFactory>(kit: &Kit<'_, F>) -> Result<(F::Flow, FlowError), String> {
    let (mut a, b) = kit.pair().await?;
    let peer = tokio::spawn(async move {
        let mut b = b;
        let _ = b.close().await;
        b
    });
    let chunk = payload(0xD1, 16 * 1024);
    let mut first = None;
    for i in 0..200 {
        match bounded(&format!("write {i} after the peer closed"), PROMPT, a.write(chunk.clone())).await? {
            Ok(()) => tokio::time::sleep(std::time::Duration::from_millis(5)).await,
            Err(e) => {
                first = Some(e);
                break;
            }
        }
    }
    let Some(first) = first else { return Err("200 writes succeeded after the peer closed".into()) };
    if kit.caps.close_waits_for_peer {
        let _ = a.close().await;
    }
    joined(bounded("the peer's close", kit.caps.case_timeout, peer).await?, "the peer")?;
    Ok((a, first))
}

pub(crate) async fn d1<F: FlowFactory>(kit: &Kit<'_, F>) -> CaseResult {
    let (mut a, first) = write_until_error(kit).await?;
    for i in 0..3 {
        let r = bounded(&format!("write {i} after a write error"), PROMPT, a.write("more")).await?;
        ensure!(r.is_err(), "write {i} after a write error ({first}) succeeded");
        tokio::time::sleep(QUIET / 10).await;
    }
    let r = bounded("writev after a write error", PROMPT, a.writev(vec!["more".into()])).await?;
    ensure!(r.is_err(), "writev after a write error ({first}) succeeded");
    Ok(())
}

/// Makes a pair whose `a` read an error (the peer aborted); returns `a` and the error.
async fn read_until_error<F: FlowFactory>(kit: &Kit<'_, F>) -> Result<(F::Flow, FlowError), String> {
    let (mut a, mut b) = kit.pair().await?;
    let data = payload(0xD2, 3000);
    b.write(data.clone()).await.ctx("b: write")?;
    bounded("b: abort", PROMPT, b.abort()).await?.ctx("b: abort")?;
    let (got, end) = bounded("a: read after the peer's abort", PROMPT, read_until_end(&mut a, "a")).await??;
    ensure!(data.starts_with(&got), "a read bytes the peer never wrote");
    match end {
        Err(e) => Ok((a, e)),
        Ok(()) => Err("the peer's abort read as a clean Eof".into()),
    }
}

pub(crate) async fn d2<F: FlowFactory>(kit: &Kit<'_, F>) -> CaseResult {
    let (mut a, first) = read_until_error(kit).await?;
    for i in 0..3 {
        let r = bounded(&format!("read {i} after a read error"), PROMPT, a.read()).await?;
        ensure!(!matches!(r, Ok(Some(_))), "read {i} after a read error ({first}) returned data");
    }
    tokio::time::sleep(QUIET).await;
    let r = bounded("read after a read error and a pause", PROMPT, a.read()).await?;
    ensure!(!matches!(r, Ok(Some(_))), "a read after a read error ({first}) and a pause returned data");
    Ok(())
}

pub(crate) async fn d3<F: FlowFactory>(kit: &Kit<'_, F>) -> CaseResult {
    const CHUNK: usize = 16 * 1024;
    const TOTAL: usize = 64 * CHUNK;
    let (mut a, b) = kit.pair().await?;
    let data = payload(0xD3, TOTAL);
    // The peer reads about an eighth, then closes while we keep writing.
    let peer = tokio::spawn(async move {
        let mut b = b;
        let mut got = Vec::new();
        while got.len() < TOTAL / 8 {
            match read_chunk(&mut b, "b").await? {
                Some(c) => got.extend_from_slice(&c),
                None => return Err(format!("b: Eof after {} bytes", got.len())),
            }
        }
        let _ = b.close().await;
        Ok::<_, String>(got)
    });
    let mut accepted = 0;
    let mut failed = None;
    for piece in data.chunks(CHUNK) {
        match bounded("a write while the peer closes", PROMPT, a.write(data.slice_ref(piece))).await? {
            Ok(()) => accepted += piece.len(),
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    if kit.caps.close_waits_for_peer {
        let _ = a.close().await;
    }
    let got = joined(bounded("the peer", kit.caps.case_timeout, peer).await?, "the peer")??;
    ensure!(
        data.starts_with(&got),
        "the peer's {} bytes are not a prefix of the stream (reordered or duplicated)",
        got.len()
    );
    ensure!(
        got.len() <= accepted + CHUNK,
        "the peer read {} bytes but only {accepted} were accepted (plus at most one partial write)",
        got.len()
    );
    if let Some(e) = failed {
        ensure!(!e.to_string().is_empty(), "the write error prints as nothing");
    }
    Ok(())
}

/// Display is non-empty, more than the bare kind, and says what the predicate says.
fn meaningful(e: &FlowError, what: &str) -> CaseResult {
    let text = e.to_string();
    ensure!(!text.trim().is_empty(), "{what}: the error prints as nothing");
    ensure!(text.trim() != "flow error", "{what}: the error prints only \"flow error\", with no detail");
    if e.is_closed() {
        ensure!(
            text.starts_with("attempted to write to a closed flow"),
            "{what}: a Closed error prints {text:?}, not \"attempted to write to a closed flow\""
        );
    }
    if e.is_reset() {
        ensure!(text.contains("reset"), "{what}: a reset prints {text:?}, without the word reset");
    }
    ensure!(!format!("{e:?}").is_empty(), "{what}: Debug prints nothing");
    Ok(())
}

pub(crate) async fn d4<F: FlowFactory>(kit: &Kit<'_, F>) -> CaseResult {
    let (mut a, mut b) = kit.pair().await?;
    if kit.caps.close_waits_for_peer {
        crate::util::close_both(&mut a, &mut b).await?;
    } else {
        a.close().await.ctx("close")?;
    }
    let r = bounded("write after close", PROMPT, a.write("late")).await?;
    let Err(closed) = r else { return Err("write after close succeeded".into()) };
    ensure!(closed.is_closed(), "write after close failed with {closed}, not Closed");
    meaningful(&closed, "write after close")?;
    let (_a, err) = write_until_error(kit).await?;
    meaningful(&err, "write after the peer closed")?;
    if kit.caps.abort_resets {
        let (_a, err) = read_until_error(kit).await?;
        ensure!(err.is_reset(), "a read after the peer's abort failed with {err}, not a reset");
        meaningful(&err, "read after the peer's abort")?;
    } else {
        kit.skip_part("the Display of a reset: needs abort_resets");
    }
    Ok(())
}

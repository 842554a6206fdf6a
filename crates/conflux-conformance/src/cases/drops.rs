//! F. Drop.

use std::collections::BTreeSet;
use std::time::Duration;

use conflux_flow::{FlowExt, Shutdown};
use conflux_testkit::payload;

use crate::FlowFactory;
use crate::case::Kit;
use crate::cases::data::transfer;
use crate::util::{
    CaseResult, Ctx, DROP_BOUND, PROMPT, bounded, close_both, ensure, read_to_eof, read_until_end, same_bytes, show,
};

pub(crate) async fn f1<F: FlowFactory>(kit: &Kit<'_, F>) -> CaseResult {
    let (mut a, mut b) = kit.pair().await?;
    let data = payload(0xF1, 2000);
    a.write(data.clone()).await.ctx("a: write")?;
    drop(a);
    let (got, _end) = bounded("the peer's read after a drop", DROP_BOUND, read_until_end(&mut b, "b")).await??;
    ensure!(data.starts_with(&got), "b read {} bytes that are not a prefix of what a wrote", got.len());
    Ok(())
}

pub(crate) async fn f2<F: FlowFactory>(kit: &Kit<'_, F>) -> CaseResult {
    let (a, mut b) = kit.pair().await?;
    let (mut ra, mut wa) = a.split();
    let data = payload(0xF2, 30_000);
    let sent = data.clone();
    let (wrote, got) = tokio::join!(
        async move {
            let r = wa.write(sent).await;
            drop(wa);
            r
        },
        bounded("the peer's Eof after the write half was dropped", DROP_BOUND, read_to_eof(&mut b, "b"))
    );
    wrote.ctx("a: write through the write half")?;
    same_bytes(&got??, &data, "b: what the dropped write half wrote")?;
    // The read half still works.
    let back = payload(0xF2_01, 50_000);
    let (wrote, got) = tokio::join!(b.write(back.clone()), async {
        let mut got = Vec::new();
        while got.len() < back.len() {
            match ra.read().await.ctx("a: read through the read half")? {
                Some(c) => got.extend_from_slice(&c),
                None => return Err(format!("a: Eof after {} bytes", got.len())),
            }
        }
        Ok(got)
    });
    wrote.ctx("b: write")?;
    same_bytes(&got?, &back, "a's read half after its write half was dropped")?;
    b.shutdown(Shutdown::Write).await.ctx("b: shutdown(Write)")?;
    let r = bounded("a: read of b's Eof", PROMPT, ra.read()).await?;
    ensure!(matches!(r, Ok(None)), "a's read half got {} where b's Eof was due", show(&r));
    Ok(())
}

/// `(fd, target)` of every open descriptor (a socket reads `socket:[inode]`).
fn descriptors() -> BTreeSet<(String, String)> {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else { return BTreeSet::new() };
    dir.filter_map(Result::ok)
        .filter_map(|e| {
            let target = std::fs::read_link(e.path()).ok()?;
            Some((e.file_name().to_string_lossy().into_owned(), target.to_string_lossy().into_owned()))
        })
        .collect()
}

/// One round: make a pair, use it, end it (close or drop); then wait for the
/// resource count to return and for the pair's descriptors to go.
async fn leak_round<F: FlowFactory>(kit: &Kit<'_, F>, close: bool) -> Result<Option<String>, String> {
    let counted = kit.factory.open_resources();
    let fds_before = descriptors();
    let (mut a, mut b) = kit.pair().await?;
    let ours: BTreeSet<_> = if kit.caps.kernel_fds { &descriptors() - &fds_before } else { BTreeSet::new() };
    transfer(&mut a, &mut b, &[payload(0xF3, 5000)], "a -> b").await?;
    if close {
        close_both(&mut a, &mut b).await?;
    }
    drop((a, b));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let now_counted = kit.factory.open_resources();
        let left: Vec<_> =
            if kit.caps.kernel_fds { ours.intersection(&descriptors()).cloned().collect() } else { vec![] };
        if now_counted == counted && left.is_empty() {
            return Ok(None);
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(Some(format!(
                "after {}: open_resources() is {now_counted:?}, was {counted:?} before the pair; \
                 descriptors of the pair still open: {left:?} (open_fds() = {})",
                if close { "close" } else { "drop" },
                conflux_testkit::open_fds()
            )));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub(crate) async fn f3<F: FlowFactory>(kit: &Kit<'_, F>) -> CaseResult {
    // Other tests of the same binary open and close resources meanwhile; a real
    // leak shows in every round, noise only in some.
    for close in [true, false] {
        let mut last = None;
        for _ in 0..5 {
            last = leak_round(kit, close).await?;
            if last.is_none() {
                break;
            }
        }
        if let Some(leak) = last {
            return Err(format!("{leak} (5 rounds)"));
        }
    }
    Ok(())
}

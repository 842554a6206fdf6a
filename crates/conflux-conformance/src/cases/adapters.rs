//! G. Adapters (G1, G2; G3 and G4 live in the `conflux-tests` package).

use conflux_flow::{FlowExt, FlowIo, Shutdown};
use conflux_testkit::payload;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::FlowFactory;
use crate::case::Kit;
use crate::util::{CaseResult, Ctx, PROMPT, bounded, ensure, joined, read_to_eof, same_bytes};

pub(crate) async fn g1<F: FlowFactory>(kit: &Kit<'_, F>) -> CaseResult {
    let (a, b) = kit.pair().await?;
    let (mut a, mut b) = (FlowIo::new(a), FlowIo::new(b));
    let n = a.write(&[]).await.ctx("an empty AsyncWrite::write")?;
    ensure!(n == 0, "an empty write returned Ok({n}), not Ok(0)");
    let there = payload(0x61, 300_000);
    let writer = async {
        a.write_all(&there).await.ctx("write_all")?;
        a.flush().await.ctx("flush")?;
        a.shutdown().await.ctx("AsyncWriteExt::shutdown")?;
        a.shutdown().await.ctx("a second AsyncWriteExt::shutdown")
    };
    let reader = async {
        let mut got = Vec::new();
        b.read_to_end(&mut got).await.ctx("read_to_end")?;
        Ok::<_, String>(got)
    };
    let (wrote, got) = tokio::join!(writer, reader);
    wrote?;
    same_bytes(&got?, &there, "read_to_end after the peer's AsyncWriteExt::shutdown")?;
    // tokio::io::copy both ways: from a slice into the adapter, and from the adapter into a Vec.
    let back = payload(0x61_01, 200_000);
    let sender = async {
        let n = tokio::io::copy(&mut &back[..], &mut b).await.ctx("tokio::io::copy into the adapter")?;
        ensure!(n == back.len() as u64, "tokio::io::copy into the adapter reported {n} bytes");
        b.shutdown().await.ctx("shutdown")
    };
    let receiver = async {
        let mut got = Vec::new();
        let n = tokio::io::copy(&mut a, &mut got).await.ctx("tokio::io::copy out of the adapter")?;
        ensure!(n == got.len() as u64, "tokio::io::copy reported {n} bytes for {}", got.len());
        Ok(got)
    };
    let (sent, got) = tokio::join!(sender, receiver);
    sent?;
    same_bytes(&got?, &back, "tokio::io::copy out of the adapter")
}

pub(crate) async fn g2<F: FlowFactory>(kit: &Kit<'_, F>) -> CaseResult {
    let (mut x, a) = kit.pair().await?;
    let (b, mut y) = kit.pair().await?;
    let relay = tokio::spawn(async move {
        let (mut a, mut b) = (FlowIo::new(a), FlowIo::new(b));
        tokio::io::copy_bidirectional(&mut a, &mut b).await
    });
    let there = payload(0x62, 512 * 1024);
    let back = payload(0x62_01, 300_000);
    // x half-closes first; y keeps writing after it read x's Eof.
    let client = async {
        x.write(there.clone()).await.ctx("x: write")?;
        x.shutdown(Shutdown::Write).await.ctx("x: shutdown(Write)")?;
        read_to_eof(&mut x, "x").await
    };
    let server = async {
        let got = read_to_eof(&mut y, "y").await?;
        y.write(back.clone()).await.ctx("y: write after x's Eof")?;
        y.shutdown(Shutdown::Write).await.ctx("y: shutdown(Write)")?;
        Ok::<_, String>(got)
    };
    let (at_x, at_y) = tokio::join!(client, server);
    same_bytes(&at_y?, &there, "x -> y through copy_bidirectional")?;
    same_bytes(&at_x?, &back, "y -> x through copy_bidirectional")?;
    let counts = joined(bounded("copy_bidirectional's end", PROMPT, relay).await?, "copy_bidirectional")?
        .ctx("copy_bidirectional")?;
    let want = (there.len() as u64, back.len() as u64);
    ensure!(counts == want, "copy_bidirectional counted {counts:?}, {want:?} were sent");
    Ok(())
}

//! An echo server and its client side, for the tests of crates that move a
//! stream end to end (a listener's callback echoes; the test writes and
//! reads the same bytes back at once).

use bytes::Bytes;
use conflux_flow::{Flow, FlowError, FlowExt};
use conflux_testkit::{TIMEOUT, within};

/// Writes back what `flow` reads until Eof (or until a write fails), then
/// closes it: a listener's callback.
pub async fn echo<F: Flow>(mut flow: F) {
    while let Ok(Some(chunk)) = flow.read().await {
        if flow.write(chunk).await.is_err() {
            break;
        }
    }
    let _ = flow.close().await;
}

/// Across `flow` to an [`echo`]: writes `data` and half-closes while reading
/// until Eof, all within [`TIMEOUT`] (a panic naming the echo otherwise).
/// Returns the flow whole again and what was read (or the read's error).
pub async fn echo_back<F: Flow>(flow: F, data: Bytes) -> (F, Result<Vec<u8>, FlowError>) {
    let (mut r, mut w) = flow.split();
    let (_, got) = within("echo", TIMEOUT, async {
        tokio::join!(
            async {
                w.write(data).await.expect("write to the echo");
                w.shutdown().await.expect("half-close towards the echo");
            },
            async {
                let mut got = Vec::new();
                while let Some(c) = r.read().await? {
                    got.extend_from_slice(&c);
                }
                Ok::<_, FlowError>(got)
            }
        )
    })
    .await;
    let flow = r.reunite(w).unwrap_or_else(|_| unreachable!("the halves of one split"));
    (flow, got)
}

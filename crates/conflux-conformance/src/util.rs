//! Helpers shared by the cases: bounded waits, checked reads, byte comparisons.

use std::any::Any;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use conflux_flow::{Flow, FlowError, FlowExt};

/// What a case returns: `Err` carries the reason of a failure.
pub(crate) type CaseResult = Result<(), String>;

/// The bound on something that should happen "at once" or "promptly".
pub(crate) const PROMPT: Duration = Duration::from_secs(2);
/// How long the kit watches for something that must not happen.
pub(crate) const QUIET: Duration = Duration::from_millis(100);
/// The bound on effects of a drop, which may go through an I/O task.
pub(crate) const DROP_BOUND: Duration = Duration::from_secs(10);

/// `ensure!(cond, "format", args..)`: fail the case unless `cond`.
macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}
pub(crate) use ensure;

/// Turns a flow error into a case failure naming the operation.
pub(crate) trait Ctx<T> {
    fn ctx(self, what: &str) -> Result<T, String>;
}

impl<T> Ctx<T> for Result<T, FlowError> {
    fn ctx(self, what: &str) -> Result<T, String> {
        self.map_err(|e| format!("{what} failed: {e}"))
    }
}

impl<T> Ctx<T> for Result<T, std::io::Error> {
    fn ctx(self, what: &str) -> Result<T, String> {
        self.map_err(|e| format!("{what} failed: {e}"))
    }
}

/// Awaits `f` for at most `dur`; a longer wait fails with `what`.
pub(crate) async fn bounded<T>(what: &str, dur: Duration, f: impl Future<Output = T>) -> Result<T, String> {
    tokio::time::timeout(dur, f).await.map_err(|_| format!("{what} did not complete within {dur:?}"))
}

/// Polls `fut` once with a no-op waker.
pub(crate) fn poll_once<Fut: Future + ?Sized>(fut: Pin<&mut Fut>) -> Poll<Fut::Output> {
    fut.poll(&mut Context::from_waker(Waker::noop()))
}

/// Reads one chunk, failing on an empty buffer (A2 holds in every case).
pub(crate) async fn read_chunk<F: Flow + ?Sized>(f: &mut F, who: &str) -> Result<Option<Bytes>, String> {
    let chunk = f.read().await.ctx(&format!("{who}: read"))?;
    check_chunk(chunk.as_ref(), who)?;
    Ok(chunk)
}

/// Fails when a read returned an empty buffer.
pub(crate) fn check_chunk(chunk: Option<&Bytes>, who: &str) -> CaseResult {
    ensure!(chunk.is_none_or(|c| !c.is_empty()), "{who}: read returned an empty buffer (A2: reads are never empty)");
    Ok(())
}

/// Reads until exactly `n` bytes arrived; Eof first or more than `n` bytes fail.
pub(crate) async fn read_exact<F: Flow + ?Sized>(f: &mut F, n: usize, who: &str) -> Result<Vec<u8>, String> {
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        match read_chunk(f, who).await? {
            Some(chunk) => got.extend_from_slice(&chunk),
            None => return Err(format!("{who}: Eof after {} of {n} bytes", got.len())),
        }
    }
    ensure!(got.len() == n, "{who}: received {} bytes, {n} were sent", got.len());
    Ok(got)
}

/// Reads everything until Eof.
pub(crate) async fn read_to_eof<F: Flow + ?Sized>(f: &mut F, who: &str) -> Result<Vec<u8>, String> {
    let mut got = Vec::new();
    while let Some(chunk) = read_chunk(f, who).await? {
        got.extend_from_slice(&chunk);
    }
    Ok(got)
}

/// Reads until Eof or an error; returns the bytes and how it ended.
pub(crate) async fn read_until_end<F: Flow + ?Sized>(
    f: &mut F,
    who: &str,
) -> Result<(Vec<u8>, Result<(), FlowError>), String> {
    let mut got = Vec::new();
    loop {
        match f.read().await {
            Ok(Some(chunk)) => {
                check_chunk(Some(&chunk), who)?;
                got.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok((got, Ok(()))),
            Err(e) => return Ok((got, Err(e))),
        }
    }
}

/// Fails unless a read stays pending for [`QUIET`] (no data, no Eof, no error).
pub(crate) async fn expect_quiet<F: Flow + ?Sized>(f: &mut F, who: &str) -> CaseResult {
    tokio::select! {
        r = f.read() => match r {
            Ok(Some(c)) => Err(format!("{who}: read {} unexpected bytes", c.len())),
            Ok(None) => Err(format!("{who}: spurious Eof")),
            Err(e) => Err(format!("{who}: unexpected read error: {e}")),
        },
        _ = tokio::time::sleep(QUIET) => Ok(()),
    }
}

/// Writes every chunk in order.
pub(crate) async fn write_chunks<F: Flow + ?Sized>(f: &mut F, chunks: &[Bytes], who: &str) -> CaseResult {
    for c in chunks {
        f.write(c.clone()).await.ctx(&format!("{who}: write of {} bytes", c.len()))?;
    }
    Ok(())
}

/// Compares two byte strings, naming the first difference.
pub(crate) fn same_bytes(got: &[u8], want: &[u8], what: &str) -> CaseResult {
    if got == want {
        return Ok(());
    }
    let first = got.iter().zip(want).position(|(g, w)| g != w).unwrap_or(got.len().min(want.len()));
    Err(format!(
        "{what}: received {} bytes, expected {}; first difference at byte {first} (lost, duplicated or reordered data)",
        got.len(),
        want.len()
    ))
}

/// True when `got` is `first[..k] ++ second[..m]` for some k, m.
pub(crate) fn is_prefix_pair(got: &[u8], first: &[u8], second: &[u8]) -> bool {
    let common = got.iter().zip(first).take_while(|(g, f)| g == f).count();
    // The true split point is at most `common`; a few bytes of `second` may match
    // `first` by chance, so try split points just below it too.
    (common.saturating_sub(64)..=common).rev().any(|k| got[..k] == first[..k] && second.starts_with(&got[k..]))
}

/// Concatenates chunks.
pub(crate) fn concat(chunks: &[Bytes]) -> Vec<u8> {
    let mut out = Vec::with_capacity(chunks.iter().map(Bytes::len).sum());
    for c in chunks {
        out.extend_from_slice(c);
    }
    out
}

/// Deterministic chunks of the given sizes, from consecutive seeds.
pub(crate) fn chunks(seed: u64, sizes: &[usize]) -> Vec<Bytes> {
    sizes.iter().enumerate().map(|(i, &n)| conflux_testkit::payload(seed.wrapping_add(i as u64), n)).collect()
}

/// Deterministic sizes in `lo..=hi`.
pub(crate) fn sizes(seed: u64, count: usize, lo: usize, hi: usize) -> Vec<usize> {
    let raw = conflux_testkit::payload(seed, count * 4);
    raw.chunks_exact(4).map(|b| lo + (u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize) % (hi - lo + 1)).collect()
}

/// Joins two flow operations that may depend on each other (close_waits_for_peer).
pub(crate) async fn close_both<F: Flow + ?Sized>(a: &mut F, b: &mut F) -> CaseResult {
    let (ra, rb) = tokio::join!(a.close(), b.close());
    ra.ctx("close")?;
    rb.ctx("close of the peer")?;
    Ok(())
}

/// The text of a caught panic.
pub(crate) fn panic_message(payload: Box<dyn Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a non-string panic".to_owned()
    }
}

/// Reports a spawned task's panic or cancellation as a failure.
pub(crate) fn joined<T>(r: Result<T, tokio::task::JoinError>, what: &str) -> Result<T, String> {
    r.map_err(|e| match e.try_into_panic() {
        Ok(p) => format!("{what} panicked: {}", panic_message(p)),
        Err(e) => format!("{what} did not finish: {e}"),
    })
}

/// A read result for a failure message: sizes, not contents.
pub(crate) fn show(r: &Result<Option<Bytes>, FlowError>) -> String {
    match r {
        Ok(Some(c)) => format!("{} bytes of data", c.len()),
        Ok(None) => "Eof".into(),
        Err(e) => format!("the error \"{e}\""),
    }
}

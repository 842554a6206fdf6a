//! Timeouts for async tests.

use std::future::Future;
use std::time::Duration;

/// The default bound on one async step of a test.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// Awaits `f`, panicking with a message naming `what` if it takes longer
/// than `dur` (tokio time: under a paused clock the deadline is virtual).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use conflux_testkit::{within, TIMEOUT};
/// assert_eq!(within("the answer", TIMEOUT, async { 42 }).await, 42);
/// # }
/// ```
pub async fn within<F: Future>(what: &str, dur: Duration, f: F) -> F::Output {
    match tokio::time::timeout(dur, f).await {
        Ok(out) => out,
        Err(_) => panic!("timed out after {dur:?} waiting for {what}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    #[should_panic(expected = "timed out after 1s waiting for never")]
    async fn names_what_timed_out() {
        within("never", Duration::from_secs(1), std::future::pending::<()>()).await;
    }

    #[tokio::test(start_paused = true)]
    async fn passes_through_output() {
        assert_eq!(within("ready", TIMEOUT, async { 5 }).await, 5);
    }
}

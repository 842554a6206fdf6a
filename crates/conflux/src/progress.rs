//! `--progress`: one live line on stderr, redrawn every second: bytes per
//! second each way, flows open, flows accepted.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::meter::Totals;

/// Redraws the line until aborted.
pub(crate) async fn run(totals: Arc<Totals>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let (mut up0, mut down0) = (0u64, 0u64);
    loop {
        tick.tick().await;
        let (up, down) = (totals.up.load(Ordering::Relaxed), totals.down.load(Ordering::Relaxed));
        let line = format!(
            "up {}/s, down {}/s, {} open, {} accepted",
            human_bytes(up - up0),
            human_bytes(down - down0),
            totals.open.load(Ordering::Relaxed),
            totals.accepted.load(Ordering::Relaxed)
        );
        (up0, down0) = (up, down);
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[2K{line}");
        let _ = err.flush();
    }
}

/// Ends the live line so later output starts on a fresh one.
pub(crate) fn finish() {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err);
}

/// `1.5 MB`, `12 B`: decimal units, as throughput is counted.
pub(crate) fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1000.0 && unit + 1 < UNITS.len() {
        v /= 1000.0;
        unit += 1;
    }
    if unit == 0 { format!("{n} B") } else { format!("{v:.1} {}", UNITS[unit]) }
}

#[cfg(test)]
mod tests {
    use super::human_bytes;

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(human_bytes(12), "12 B");
        assert_eq!(human_bytes(1_500_000), "1.5 MB");
        assert_eq!(human_bytes(2_000_000_000), "2.0 GB");
    }
}

//! smoltcp's `log` records, forwarded to `tracing`.

use std::sync::Once;

/// Forwards every `log` record to a `tracing` event with the record's
/// target in the `log.target` field (tracing targets are static, so events
/// carry the target `smoltcp` for smoltcp's records and `log` otherwise).
struct Bridge;

impl log::Log for Bridge {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let target = record.target();
        let msg = record.args();
        macro_rules! emit {
            ($lvl:expr) => {
                if target.starts_with("smoltcp") {
                    tracing::event!(target: "smoltcp", $lvl, log.target = target, "{msg}")
                } else {
                    tracing::event!(target: "log", $lvl, log.target = target, "{msg}")
                }
            };
        }
        match record.level() {
            log::Level::Error => emit!(tracing::Level::ERROR),
            log::Level::Warn => emit!(tracing::Level::WARN),
            log::Level::Info => emit!(tracing::Level::INFO),
            log::Level::Debug => emit!(tracing::Level::DEBUG),
            log::Level::Trace => emit!(tracing::Level::TRACE),
        }
    }

    fn flush(&self) {}
}

/// Installs the bridge as the process's `log` logger, once (if another
/// logger is installed already, that one keeps the records), and sets `log`'s
/// maximum level to what the current `tracing` subscribers want, so a stack
/// without a trace subscriber pays nothing for smoltcp's per-packet records.
/// Called by every stack constructor.
pub(crate) fn install() {
    static ONCE: Once = Once::new();
    static INSTALLED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    ONCE.call_once(|| {
        INSTALLED.store(log::set_logger(&Bridge).is_ok(), std::sync::atomic::Ordering::SeqCst);
    });
    if INSTALLED.load(std::sync::atomic::Ordering::SeqCst) {
        let level = match tracing::level_filters::LevelFilter::current().into_level() {
            None => log::LevelFilter::Off,
            Some(tracing::Level::ERROR) => log::LevelFilter::Error,
            Some(tracing::Level::WARN) => log::LevelFilter::Warn,
            Some(tracing::Level::INFO) => log::LevelFilter::Info,
            Some(tracing::Level::DEBUG) => log::LevelFilter::Debug,
            Some(tracing::Level::TRACE) => log::LevelFilter::Trace,
        };
        if level > log::max_level() {
            log::set_max_level(level);
        }
    }
}

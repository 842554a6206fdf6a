//! Visible skips: the [`skip!`](crate::skip!) macro, [`report_skip`] and the skip log.

use std::ffi::OsString;
use std::fmt;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Why a test or a conformance case did not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SkipKind {
    /// The test needs root (or `CAP_NET_ADMIN`).
    Root,
    /// Network namespaces could not be created.
    Netns,
    /// A TAP device could not be opened.
    Tap,
    /// The `ip` command (iproute2) is missing.
    Iproute2,
    /// The `iperf3` command is missing.
    Iperf3,
    /// The `socat` command is missing.
    Socat,
    /// The `curl` command is missing.
    Curl,
    /// The `nc` command (netcat-openbsd) is missing.
    Netcat,
    /// The 9p filesystem is unavailable.
    P9fs,
    /// The `ping` command is missing or not permitted.
    Ping,
    /// vsock loopback (CID 1) is unavailable on this kernel.
    NoVsockLoopback,
    /// A conformance case that the transport's capability flags exclude.
    Capability,
}

impl SkipKind {
    /// Every kind, in declaration order.
    pub const ALL: [SkipKind; 12] = [
        SkipKind::Root,
        SkipKind::Netns,
        SkipKind::Tap,
        SkipKind::Iproute2,
        SkipKind::Iperf3,
        SkipKind::Socat,
        SkipKind::Curl,
        SkipKind::Netcat,
        SkipKind::P9fs,
        SkipKind::Ping,
        SkipKind::NoVsockLoopback,
        SkipKind::Capability,
    ];

    /// The name written to stderr and to the skip log.
    pub const fn as_str(self) -> &'static str {
        match self {
            SkipKind::Root => "root",
            SkipKind::Netns => "netns",
            SkipKind::Tap => "tap",
            SkipKind::Iproute2 => "iproute2",
            SkipKind::Iperf3 => "iperf3",
            SkipKind::Socat => "socat",
            SkipKind::Curl => "curl",
            SkipKind::Netcat => "nc",
            SkipKind::P9fs => "p9fs",
            SkipKind::Ping => "ping",
            SkipKind::NoVsockLoopback => "no-vsock-loopback",
            SkipKind::Capability => "capability",
        }
    }

    /// Whether CI (`CI=true`) has what this kind lacks, so that such a skip
    /// fails the run. False only for `no-vsock-loopback` and `capability`.
    pub const fn required_in_ci(&self) -> bool {
        !matches!(self, SkipKind::NoVsockLoopback | SkipKind::Capability)
    }
}

impl fmt::Display for SkipKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A skip kind name that is not one of [`SkipKind::ALL`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseSkipKindError(String);

impl fmt::Display for ParseSkipKindError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown skip kind {:?}", self.0)
    }
}

impl std::error::Error for ParseSkipKindError {}

impl FromStr for SkipKind {
    type Err = ParseSkipKindError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SkipKind::ALL.into_iter().find(|k| k.as_str() == s).ok_or_else(|| ParseSkipKindError(s.to_owned()))
    }
}

/// What [`skip!`](crate::skip!) returns from the enclosing function:
/// `()` for plain tests, `Ok(())` for tests returning `Result<(), E>`.
pub trait SkipReturn {
    /// The value a skipped test returns.
    fn skipped() -> Self;
}

impl SkipReturn for () {
    fn skipped() -> Self {}
}

impl<T: SkipReturn, E> SkipReturn for Result<T, E> {
    fn skipped() -> Self {
        Ok(T::skipped())
    }
}

/// The name of the running test: libtest names each test's thread after the
/// test; on other threads (the main thread, tokio workers) `fallback` is used.
pub fn current_test_name(fallback: &str) -> String {
    match std::thread::current().name() {
        Some(name) if name != "main" && !name.starts_with("tokio-") => name.to_owned(),
        _ => fallback.to_owned(),
    }
}

/// The test name [`skip!`](crate::skip!) logs: `<crate>::<libtest name>`
/// (the crate tells integration test binaries apart), or `module` when not
/// on a libtest thread.
#[doc(hidden)]
pub fn qualified_test_name(krate: Option<&str>, module: &str) -> String {
    let name = current_test_name("");
    match (krate, name.is_empty()) {
        (_, true) => module.to_owned(),
        (Some(k), false) => format!("{k}::{name}"),
        (None, false) => name,
    }
}

/// Where skips are appended: `$CONFLUX_SKIP_LOG` if set, else
/// `<target dir>/test-skips.jsonl`, the target dir found from the running
/// executable (`…/target/debug/deps/foo-123` gives `…/target`).
pub fn skip_log_path() -> PathBuf {
    log_path_from(std::env::var_os("CONFLUX_SKIP_LOG"), std::env::current_exe().ok())
}

fn log_path_from(env: Option<OsString>, exe: Option<PathBuf>) -> PathBuf {
    if let Some(path) = env.filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    let target = exe
        .as_deref()
        .and_then(target_dir_of)
        .unwrap_or_else(|| std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| PathBuf::from("target"), PathBuf::from));
    target.join("test-skips.jsonl")
}

/// `…/target/<profile>/deps/exe` or `…/target/<profile>/examples/exe` or
/// `…/target/<profile>/exe` gives `…/target`.
fn target_dir_of(exe: &Path) -> Option<PathBuf> {
    let mut dir = exe.parent()?;
    if matches!(dir.file_name().and_then(|n| n.to_str()), Some("deps" | "examples")) {
        dir = dir.parent()?;
    }
    Some(dir.parent()?.to_path_buf())
}

fn skip_line(kind: SkipKind, test: &str, detail: &str) -> String {
    let mut line = serde_json::json!({
        "test": test,
        "kind": kind.as_str(),
        "detail": detail,
    })
    .to_string();
    line.push('\n');
    line
}

/// Appends one line with a single `write_all` on a file opened for append,
/// so lines from parallel tests never interleave.
fn append_skip(path: &Path, kind: SkipKind, test: &str, detail: &str) -> std::io::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    let mut file = OpenOptions::new().create(true).append(true).open(path)?;
    file.write_all(skip_line(kind, test, detail).as_bytes())
}

/// Reports a skip without returning: prints `SKIP <test>: <kind>: <detail>`
/// to stderr and appends `{"test","kind","detail"}` to [`skip_log_path`].
///
/// For conformance kits that skip one case and go on; a whole test that
/// cannot run uses [`skip!`](crate::skip!) instead.
pub fn report_skip(kind: SkipKind, test: &str, detail: &str) {
    eprintln!("SKIP {test}: {kind}: {detail}");
    #[cfg(test)]
    let path = tests::LOG_OVERRIDE.with(|o| o.borrow().clone()).unwrap_or_else(skip_log_path);
    #[cfg(not(test))]
    let path = skip_log_path();
    if let Err(err) = append_skip(&path, kind, test, detail) {
        eprintln!("conflux-testkit: cannot append to {}: {err}", path.display());
    }
}

/// Skips the enclosing test visibly, then returns from it.
///
/// `skip!(Kind, "format", args..)` where `Kind` is a [`SkipKind`] variant
/// name (`Root`, `Netns`, `NoVsockLoopback`, ...) or any expression of type
/// [`SkipKind`]. Works in functions returning `()` or `Result<(), E>` (see
/// [`SkipReturn`]), including `async fn` tests, where `return` ends the
/// test's future.
///
/// ```
/// use conflux_testkit::{SkipKind, have_command, skip};
///
/// // In a test file: #[tokio::test]
/// async fn echo_through_socat() -> Result<(), std::io::Error> {
///     if !have_command("socat") {
///         skip!(Socat, "socat not on PATH");
///     }
///     // ... the real test ...
///     Ok(())
/// }
///
/// fn conformance_case(supports_half_close: bool) {
///     if !supports_half_close {
///         skip!(SkipKind::Capability, "case {} needs half-close", "shutdown-write");
///     }
///     // ... the case ...
/// }
/// ```
#[macro_export]
macro_rules! skip {
    ($kind:ident, $($fmt:tt)+) => {
        $crate::skip!(@emit $crate::SkipKind::$kind, $($fmt)+)
    };
    (@emit $kind:expr, $($fmt:tt)+) => {{
        $crate::report_skip(
            $kind,
            &$crate::qualified_test_name(::core::option_env!("CARGO_CRATE_NAME"), ::core::module_path!()),
            &::std::format!($($fmt)+),
        );
        return $crate::SkipReturn::skipped();
    }};
    ($kind:expr, $($fmt:tt)+) => {
        $crate::skip!(@emit $kind, $($fmt)+)
    };
}

#[cfg(test)]
mod tests;

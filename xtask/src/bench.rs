//! `cargo xtask bench [--quick] [SCENARIO...]`.

use std::ffi::OsString;
use std::path::Path;

use crate::util;

/// The report a full run writes (with its chart beside it), relative to the
/// workspace root.
pub(crate) const REPORT: &str = "docs/benchmarks.md";

/// The arguments of `conflux-bench` for the user's `args`: the figures go to
/// `out`; a full run (no `--quick`, no scenario or group named) also writes
/// the report ([`REPORT`]). A `--quick` or partial run leaves the report
/// alone: its figures are fewer or cover only part of the table.
pub(crate) fn bench_args(root: &Path, out: &Path, args: &[String]) -> Vec<OsString> {
    let mut v: Vec<OsString> = vec!["--out".into(), out.into()];
    let quick = args.iter().any(|a| a == "--quick");
    let named = args.iter().any(|a| !a.starts_with('-'));
    if !quick && !named {
        v.extend(["--report".into(), root.join(REPORT).into()]);
    }
    v.extend(args.iter().map(OsString::from));
    v
}

/// Builds the `conflux` binary and `conflux-bench` in release and runs the
/// latter with `args`, writing the figures to `<target>/bench/latest.json`
/// and, on a full run, [`REPORT`]. The `relay` group runs the binary as a
/// process, found through `CONFLUX_BIN`.
pub(crate) fn run(root: &Path, args: &[String]) -> bool {
    let target = util::target_dir(root);
    let out = target.join("bench").join("latest.json");
    util::heading("cargo build --release -p conflux");
    let built = util::status_ok(util::cargo().args(["build", "--release", "-p", "conflux"]).current_dir(root));
    if !built {
        return false;
    }
    let conflux = target.join("release").join("conflux");
    let bench_args = bench_args(root, &out, args);
    if !bench_args.iter().any(|a| a == "--report") {
        println!("(a --quick or partial run: {REPORT} is left as it is)");
    }
    util::heading("cargo run --release -p conflux-bench");
    let mut cmd = util::cargo();
    cmd.args(["run", "--release", "-p", "conflux-bench", "--"])
        .args(&bench_args)
        .env("CONFLUX_BIN", &conflux)
        .current_dir(root);
    util::status_ok(&mut cmd)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(user: &[&str]) -> Vec<String> {
        let v: Vec<String> = user.iter().map(|s| (*s).to_owned()).collect();
        bench_args(Path::new("/w"), Path::new("/t/latest.json"), &v)
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect()
    }

    #[test]
    fn only_a_full_run_writes_the_report() {
        assert_eq!(args(&[]), ["--out", "/t/latest.json", "--report", "/w/docs/benchmarks.md"]);
        assert_eq!(args(&["--quick"]), ["--out", "/t/latest.json", "--quick"]);
        assert_eq!(args(&["relay"]), ["--out", "/t/latest.json", "relay"]);
    }

    #[test]
    fn the_report_is_in_docs() {
        assert!(util::workspace_root().join("docs").is_dir());
    }
}

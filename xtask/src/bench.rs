//! `cargo xtask bench [--quick] [SCENARIO...]`.

use std::path::Path;

use crate::util;

/// Builds `conflux-bench` in release and runs it with `args`, writing the
/// figures to `<target>/bench/latest.json`.
pub(crate) fn run(root: &Path, args: &[String]) -> bool {
    let out = util::target_dir(root).join("bench").join("latest.json");
    util::heading("cargo run --release -p conflux-bench");
    let mut cmd = util::cargo();
    cmd.args(["run", "--release", "-p", "conflux-bench", "--", "--out"]).arg(&out).args(args).current_dir(root);
    util::status_ok(&mut cmd)
}

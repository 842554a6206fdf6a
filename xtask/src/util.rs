//! Small helpers shared by the commands: paths, headings, running cargo.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace root: the parent of this package's directory.
pub(crate) fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// `cargo`, as the one that started us if known.
pub(crate) fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// Prints a step heading.
pub(crate) fn heading(title: &str) {
    println!("\n==> {title}");
}

/// Runs `cmd` with inherited stdio; true when it exits successfully.
pub(crate) fn status_ok(cmd: &mut Command) -> bool {
    match cmd.status() {
        Ok(s) => s.success(),
        Err(e) => {
            eprintln!("xtask: cannot run {cmd:?}: {e}");
            false
        }
    }
}

/// The cargo target directory (from `cargo metadata`, so `CARGO_TARGET_DIR`
/// and config are honoured), absolute; `<root>/target` if that fails.
pub(crate) fn target_dir(root: &Path) -> PathBuf {
    let out = cargo()
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(root)
        .stderr(std::process::Stdio::inherit())
        .output();
    out.ok()
        .filter(|o| o.status.success())
        .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok())
        .and_then(|v| v["target_directory"].as_str().map(PathBuf::from))
        .unwrap_or_else(|| root.join("target"))
}

/// Whether the effective user id is 0 (`Uid:` line of `/proc/self/status`).
pub(crate) fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines().find_map(|l| l.strip_prefix("Uid:")).and_then(|ids| ids.split_whitespace().nth(1)) == Some("0")
    })
}

/// Whether `CI=true` is set.
pub(crate) fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

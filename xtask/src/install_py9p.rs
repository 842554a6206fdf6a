//! The real 9P client for conflux-9p's tests: py9p from PyPI `p9fs==0.0.4`,
//! installed with `pip install --no-deps` into a virtual environment at
//! `<target>/py9p-venv` (where `crates/conflux/tests/p9fs.rs` looks for it).

use std::path::Path;
use std::process::{Command, Stdio};

use crate::util;

/// The pinned package that carries the py9p client.
const P9FS: &str = "p9fs==0.0.4";

/// Creates the venv and installs py9p unless it already imports; true on success.
pub(crate) fn install() -> bool {
    let venv = util::target_dir(&util::workspace_root()).join("py9p-venv");
    let python = venv.join("bin/python3");
    if imports_py9p(&python) {
        println!("py9p present in {}", venv.display());
        return true;
    }
    util::heading(&format!("python3 -m venv {} && pip install --no-deps {P9FS}", venv.display()));
    if !make_venv(&venv) {
        return false;
    }
    util::status_ok(Command::new(venv.join("bin/pip")).args([
        "install",
        "--no-deps",
        "--disable-pip-version-check",
        P9FS,
    ])) && imports_py9p(&python)
}

fn imports_py9p(python: &Path) -> bool {
    Command::new(python)
        .args(["-c", "import py9p.py9p"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `python3 -m venv`, installing Debian's `python3-venv` first if that is what is missing.
fn make_venv(venv: &Path) -> bool {
    let venv_cmd = || {
        let mut cmd = Command::new("python3");
        cmd.args(["-m", "venv", "--clear"]).arg(venv);
        cmd
    };
    if util::status_ok(&mut venv_cmd()) {
        return true;
    }
    let env = [("DEBIAN_FRONTEND", "noninteractive")];
    util::status_ok(Command::new("apt-get").arg("update").envs(env))
        && util::status_ok(
            Command::new("apt-get").args(["install", "-y", "--no-install-recommends", "python3-venv"]).envs(env),
        )
        && util::status_ok(&mut venv_cmd())
}

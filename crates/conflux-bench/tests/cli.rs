//! The binary's command line: `--help` prints the usage to stdout and exits 0;
//! a wrong option exits 2 with the usage on stderr.
#![forbid(unsafe_code)]

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_conflux-bench");

#[test]
fn help_goes_to_stdout_and_exits_0() {
    for flag in ["--help", "-h"] {
        let out = Command::new(BIN).arg(flag).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{flag}: {out:?}");
        let stdout = String::from_utf8(out.stdout).unwrap();
        assert!(stdout.starts_with("usage: conflux-bench"), "{flag}: {stdout:?}");
        assert!(out.stderr.is_empty(), "{flag}: {:?}", String::from_utf8_lossy(&out.stderr));
    }
}

#[test]
fn an_unknown_option_exits_2() {
    let out = Command::new(BIN).arg("--bogus").output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown option --bogus"));
}

#[test]
fn a_quick_run_never_writes_the_report() {
    let out = Command::new(BIN).args(["--quick", "--report", "/nonexistent/benchmarks.md", "flow"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--report is for full runs"));
}

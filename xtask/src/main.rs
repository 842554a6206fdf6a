//! conflux's developer tasks, run as `cargo xtask <command>`.
//!
//! - `ci`: install (as root under `CI=true`), fmt check, clippy with warnings
//!   as errors, each library crate checked alone (and conflux-mimic with each
//!   binding feature alone), `cargo package` of the library crates, tests
//!   (serial test binaries last, one thread), doctests, docs with warnings as
//!   errors, the skip report and a final `N passed, N failed, N skipped` line.
//! - `install`: the system packages tests use, and removal of stale `cfx*`
//!   namespaces and links (needs root).
//! - `bench [--quick] [SCENARIO...]`: builds the `conflux` binary and
//!   `conflux-bench` in release and runs the latter, writing
//!   `target/bench/latest.json`; a full run (no `--quick`, no names) also
//!   writes `docs/benchmarks.md` and its chart `docs/benchmarks.svg`.
//!
//! The tidy checks (lints opt-in, `//!` lines, unsafe quarantine, MSRV,
//! packaging metadata) are `#[test]`s in `tidy.rs`, so plain `cargo test`
//! enforces them too.
#![forbid(unsafe_code)]

mod bench;
mod ci;
mod install;
mod install_py9p;
mod util;

#[cfg(test)]
mod tidy;

use std::process::ExitCode;

const USAGE: &str = "usage: cargo xtask <command>

commands:
  ci                        fmt, clippy, crates alone, package, tests, doctests, docs, skip report
  install                   apt packages for tests; remove stale cfx* netns/links (root)
  bench [--quick] [NAME..]  run benchmark scenarios in release (target/bench/latest.json;
                            a full run, no --quick and no NAME, also writes docs/benchmarks.md)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = util::workspace_root();
    if let Err(e) = std::env::set_current_dir(&root) {
        eprintln!("xtask: cannot enter {}: {e}", root.display());
        return ExitCode::FAILURE;
    }
    let ok = match args.first().map(String::as_str) {
        Some("ci") if args.len() == 1 => ci::run(&root),
        Some("install") if args.len() == 1 => install::run(true),
        Some("bench") => bench::run(&root, &args[1..]),
        Some("help" | "-h" | "--help") => {
            println!("{USAGE}");
            true
        }
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

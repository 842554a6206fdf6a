//! `cargo xtask ci`: the one CI entry point.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::{install, util};

/// Skip kinds that fail the run under `CI=true`: CI has what they lack.
/// Must match `conflux_testkit::SkipKind::required_in_ci` (a test checks).
pub(crate) const REQUIRED_IN_CI: &[&str] =
    &["root", "netns", "tap", "iproute2", "iperf3", "socat", "curl", "nc", "p9fs", "ping"];

/// The library crates: each builds alone (README's promise) and is
/// publishable. With [`BINARY_CRATES`], must be the members without
/// `publish = false` (a tidy test checks).
pub(crate) const LIBRARY_CRATES: &[&str] = &[
    "conflux-flow",
    "conflux-tcp",
    "conflux-tcp-host",
    "conflux-netstack",
    "conflux-hvsock",
    "conflux-mimic",
    "conflux-uri",
    "conflux-9p",
    "conflux-hyper",
    "conflux-usernet",
];

/// The binary crates: each builds alone and is publishable (`cargo install`).
pub(crate) const BINARY_CRATES: &[&str] = &["conflux"];

/// conflux-mimic's binding features, each checked on its own. Must be every
/// feature of its manifest (a tidy test checks).
pub(crate) const MIMIC_FEATURES: &[&str] = &["dns", "hvsock", "netstack", "stdio", "tcp", "tls", "tls-webpki-roots"];

/// The `cargo check` runs that show each library (and binary) crate builds alone: every
/// crate with its default features and nothing else selected (so no
/// sibling's features unify into it), then conflux-mimic with each binding
/// feature alone.
pub(crate) fn alone_checks() -> Vec<Vec<String>> {
    let check = |krate: &str| vec!["check".to_owned(), "-p".to_owned(), krate.to_owned()];
    let mut runs: Vec<Vec<String>> = LIBRARY_CRATES.iter().chain(BINARY_CRATES).map(|c| check(c)).collect();
    for feature in MIMIC_FEATURES {
        let mut run = check("conflux-mimic");
        run.extend(["--features".to_owned(), (*feature).to_owned()]);
        runs.push(run);
    }
    runs
}

/// `cargo package` of every library crate in one run (`--no-verify`: the
/// checks above build them; `--allow-dirty`: CI may run on an uncommitted
/// tree). One run, not one per crate: cargo then resolves the crates against
/// each other, where a crate packaged on its own would look its unpublished
/// siblings up on crates.io.
pub(crate) fn package_args() -> Vec<String> {
    let mut args: Vec<String> = ["package", "--no-verify", "--allow-dirty"].map(str::to_owned).into();
    for krate in LIBRARY_CRATES.iter().chain(BINARY_CRATES) {
        args.extend(["-p".to_owned(), (*krate).to_owned()]);
    }
    args
}

/// The name of the test targets that run last, one test at a time.
const SERIAL_TARGET: &str = "serial";

/// libtest's totals.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Counts {
    pub(crate) passed: u64,
    pub(crate) failed: u64,
    pub(crate) ignored: u64,
}

impl Counts {
    fn add(&mut self, other: Counts) {
        self.passed += other.passed;
        self.failed += other.failed;
        self.ignored += other.ignored;
    }
}

/// Parses `test result: ok. 3 passed; 1 failed; 2 ignored; 0 measured; ...`.
pub(crate) fn parse_result_line(line: &str) -> Option<Counts> {
    let rest = line.trim().strip_prefix("test result: ")?;
    let (_, fields) = rest.split_once(". ")?;
    let mut counts = Counts::default();
    for field in fields.split(';') {
        let mut words = field.split_whitespace();
        let (Some(n), Some(what)) = (words.next(), words.next()) else {
            continue;
        };
        let Ok(n) = n.parse::<u64>() else { continue };
        match what {
            "passed" => counts.passed = n,
            "failed" => counts.failed = n,
            "ignored" => counts.ignored = n,
            _ => {}
        }
    }
    Some(counts)
}

/// A test executable built by `cargo test --no-run`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TestExe {
    pub(crate) target: String,
    pub(crate) executable: PathBuf,
    pub(crate) package_dir: PathBuf,
}

/// The test executables among cargo's `--message-format=json` lines.
pub(crate) fn test_executable(msg: &serde_json::Value) -> Option<TestExe> {
    if msg["reason"] != "compiler-artifact" || msg["profile"]["test"] != true {
        return None;
    }
    let executable = PathBuf::from(msg["executable"].as_str()?);
    let manifest = Path::new(msg["manifest_path"].as_str()?);
    Some(TestExe {
        target: msg["target"]["name"].as_str()?.to_owned(),
        executable,
        package_dir: manifest.parent()?.to_path_buf(),
    })
}

/// Runs `cmd` with stdout piped through line by line (stderr inherited),
/// summing libtest's result lines. Returns the counts and whether it exited
/// successfully.
fn run_counting(cmd: &mut Command) -> (Counts, bool) {
    let mut counts = Counts::default();
    let mut child = match cmd.stdout(Stdio::piped()).spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("xtask: cannot run {cmd:?}: {e}");
            return (counts, false);
        }
    };
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            println!("{line}");
            if let Some(c) = parse_result_line(&line) {
                counts.add(c);
            }
        }
    }
    let ok = child.wait().is_ok_and(|s| s.success());
    (counts, ok)
}

/// Builds every test target; returns the executables (non-serial first, then
/// serial) and whether the build succeeded. Compiler diagnostics go to stderr.
fn build_tests(root: &Path) -> (Vec<TestExe>, bool) {
    let mut child = match util::cargo()
        .args(["test", "--workspace", "--no-run", "--message-format=json"])
        .current_dir(root)
        .stdout(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("xtask: cannot run cargo: {e}");
            return (Vec::new(), false);
        }
    };
    let mut exes = Vec::new();
    let mut seen = HashSet::new();
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            let Ok(msg) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if let Some(rendered) = msg["message"]["rendered"].as_str() {
                eprint!("{rendered}");
            }
            if let Some(exe) = test_executable(&msg)
                && seen.insert(exe.executable.clone())
            {
                exes.push(exe);
            }
        }
    }
    let ok = child.wait().is_ok_and(|s| s.success());
    exes.sort_by_key(|e| e.target == SERIAL_TARGET);
    (exes, ok)
}

/// One line of the skip log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SkipEntry {
    pub(crate) test: String,
    pub(crate) kind: String,
    pub(crate) detail: String,
}

/// Parses the skip log (JSON lines); unparsable lines become entries of kind
/// `?` so they are still counted and shown.
pub(crate) fn parse_skip_log(text: &str) -> Vec<SkipEntry> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap_or_default();
            let field = |k: &str| v[k].as_str().map(str::to_owned);
            SkipEntry {
                test: field("test").unwrap_or_else(|| "?".into()),
                kind: field("kind").unwrap_or_else(|| "?".into()),
                detail: field("detail").unwrap_or_else(|| l.to_owned()),
            }
        })
        .collect()
}

/// The final line: libtest counts a skipping test as passed, so skips are
/// taken out of the passed count.
pub(crate) fn summary(counts: Counts, skipped: usize) -> String {
    let skipped = skipped as u64;
    format!("{} passed, {} failed, {} skipped", counts.passed.saturating_sub(skipped), counts.failed, skipped)
}

/// Runs every step, keeps going after failures, and returns whether all
/// passed.
pub(crate) fn run(root: &Path) -> bool {
    let mut failures: Vec<String> = Vec::new();
    let ci = util::in_ci();

    if util::is_root() {
        util::heading(if ci { "install (root, CI=true)" } else { "remove stale cfx* namespaces and links (root)" });
        if !install::run(ci) {
            failures.push("install".into());
        }
    }

    let steps: [(&str, &[&str]); 3] = [
        ("cargo fmt --all --check", &["fmt", "--all", "--check"]),
        (
            "cargo clippy --workspace --all-targets -- -D warnings",
            &["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"],
        ),
        // The fuzz crate sits outside the workspace; running it needs nightly,
        // building it on stable checks that the targets still compile.
        ("cargo build --manifest-path fuzz/Cargo.toml", &["build", "--manifest-path", "fuzz/Cargo.toml"]),
    ];
    for (title, args) in steps {
        util::heading(title);
        if !util::status_ok(util::cargo().args(args).current_dir(root)) {
            failures.push(title.into());
        }
    }

    // Each library crate on its own: `cargo check -p` resolves features for
    // the selected package only, so a missing feature or dependency that the
    // whole-workspace build hides shows here.
    for args in alone_checks() {
        let title = format!("cargo {}", args.join(" "));
        util::heading(&title);
        if !util::status_ok(util::cargo().args(&args).current_dir(root)) {
            failures.push(title);
        }
    }

    // Publishable: manifests, readme and license files make a package.
    let args = package_args();
    let title = format!("cargo {}", args.join(" "));
    util::heading(&title);
    if !util::status_ok(util::cargo().args(&args).current_dir(root)) {
        failures.push(title);
    }

    let target = util::target_dir(root);
    let skip_log = target.join("test-skips.jsonl");
    if let Err(e) = std::fs::create_dir_all(&target).and_then(|()| std::fs::write(&skip_log, "")) {
        eprintln!("xtask: cannot truncate {}: {e}", skip_log.display());
        failures.push("skip log".into());
    }

    util::heading("cargo test --workspace --no-run");
    let (exes, built) = build_tests(root);
    if !built {
        failures.push("building tests".into());
    }
    let mut counts = Counts::default();
    for exe in &exes {
        let serial = exe.target == SERIAL_TARGET;
        let rel = exe.executable.strip_prefix(&target).unwrap_or(&exe.executable);
        util::heading(&format!("{} ({}){}", exe.target, rel.display(), if serial { " --test-threads=1" } else { "" }));
        let mut cmd = Command::new(&exe.executable);
        cmd.current_dir(&exe.package_dir).env("CONFLUX_SKIP_LOG", &skip_log);
        if serial {
            cmd.arg("--test-threads=1");
        }
        let (c, ok) = run_counting(&mut cmd);
        counts.add(c);
        if !ok {
            if c.failed == 0 {
                // Crashed or aborted before its result line: count it.
                counts.failed += 1;
            }
            failures.push(format!("tests in {}", exe.executable.display()));
        }
    }

    util::heading("cargo test --workspace --doc");
    let (c, ok) = run_counting(
        util::cargo()
            .args(["test", "--workspace", "--doc", "--no-fail-fast"])
            .current_dir(root)
            .env("CONFLUX_SKIP_LOG", &skip_log),
    );
    counts.add(c);
    if !ok {
        if c.failed == 0 {
            counts.failed += 1;
        }
        failures.push("doctests".into());
    }

    util::heading("RUSTDOCFLAGS=\"-D warnings\" cargo doc --workspace --no-deps");
    if !util::status_ok(
        util::cargo().args(["doc", "--workspace", "--no-deps"]).env("RUSTDOCFLAGS", "-D warnings").current_dir(root),
    ) {
        failures.push("cargo doc".into());
    }

    util::heading("skips");
    let skips = parse_skip_log(&std::fs::read_to_string(&skip_log).unwrap_or_default());
    for s in &skips {
        println!("SKIP {}: {}: {}", s.test, s.kind, s.detail);
    }
    let forbidden: Vec<&SkipEntry> = skips.iter().filter(|s| REQUIRED_IN_CI.contains(&s.kind.as_str())).collect();
    if ci && !forbidden.is_empty() {
        println!("CI=true has everything these skipped for:");
        for s in &forbidden {
            println!("  {} ({})", s.test, s.kind);
        }
        failures.push(format!("{} skips not allowed in CI", forbidden.len()));
    }

    println!();
    if counts.ignored > 0 {
        println!("({} ignored)", counts.ignored);
    }
    if !failures.is_empty() {
        println!("failed steps:");
        for f in &failures {
            println!("  {f}");
        }
    }
    println!("{}", summary(counts, skips.len()));
    failures.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_libtest_result_lines() {
        let ok = "test result: ok. 12 passed; 0 failed; 3 ignored; 0 measured; 0 filtered out; finished in 0.01s";
        assert_eq!(parse_result_line(ok), Some(Counts { passed: 12, failed: 0, ignored: 3 }));
        let bad = "test result: FAILED. 1 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out";
        assert_eq!(parse_result_line(bad).map(|c| c.failed), Some(2));
        assert_eq!(parse_result_line("test foo ... ok"), None);
    }

    #[test]
    fn picks_test_executables_from_cargo_json() {
        let msg = serde_json::json!({
            "reason": "compiler-artifact",
            "manifest_path": "/w/tests/Cargo.toml",
            "target": {"name": "serial", "kind": ["test"]},
            "profile": {"test": true},
            "executable": "/w/target/debug/deps/serial-abc",
        });
        let exe = test_executable(&msg).unwrap();
        assert_eq!(exe.target, "serial");
        assert_eq!(exe.package_dir, Path::new("/w/tests"));
        let mut lib = msg.clone();
        lib["profile"]["test"] = false.into();
        assert_eq!(test_executable(&lib), None);
        let mut no_exe = msg;
        no_exe["executable"] = serde_json::Value::Null;
        assert_eq!(test_executable(&no_exe), None);
    }

    #[test]
    fn skips_are_taken_out_of_passed() {
        let log = "{\"test\":\"a::b\",\"kind\":\"root\",\"detail\":\"needs root\"}\n\nnot json\n";
        let skips = parse_skip_log(log);
        assert_eq!(skips.len(), 2);
        assert_eq!(skips[0].kind, "root");
        assert_eq!(skips[1].kind, "?");
        let counts = Counts { passed: 10, failed: 1, ignored: 0 };
        assert_eq!(summary(counts, skips.len()), "8 passed, 1 failed, 2 skipped");
    }

    #[test]
    fn alone_checks_cover_every_library_crate_and_mimic_feature() {
        let runs: Vec<String> = alone_checks().iter().map(|a| a.join(" ")).collect();
        assert_eq!(runs.len(), LIBRARY_CRATES.len() + BINARY_CRATES.len() + MIMIC_FEATURES.len());
        assert!(runs.contains(&"check -p conflux".to_owned()), "the binary");
        assert!(runs.contains(&"check -p conflux-uri".to_owned()));
        assert!(runs.contains(&"check -p conflux-mimic".to_owned()), "mimic with no features");
        assert!(runs.contains(&"check -p conflux-mimic --features tls".to_owned()));
        assert!(runs.iter().all(|r| !r.contains("--workspace") && !r.contains("--all-features")));
    }

    #[test]
    fn packages_every_library_crate_in_one_run() {
        let args = package_args().join(" ");
        assert!(args.starts_with("package --no-verify --allow-dirty -p conflux-flow -p conflux-tcp "));
        assert_eq!(args.matches(" -p ").count(), LIBRARY_CRATES.len() + BINARY_CRATES.len());
        assert!(args.ends_with(" -p conflux"), "the binary too: {args}");
    }

    #[test]
    fn required_kinds_match_testkit() {
        let from_testkit: Vec<&str> = conflux_testkit::SkipKind::ALL
            .into_iter()
            .filter(conflux_testkit::SkipKind::required_in_ci)
            .map(conflux_testkit::SkipKind::as_str)
            .collect();
        assert_eq!(from_testkit, REQUIRED_IN_CI);
    }
}

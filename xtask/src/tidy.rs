//! Tidy checks over the source tree, as `#[test]`s so `cargo test` enforces
//! them: lints opt-in, `//!` opening lines, the unsafe quarantine, and the
//! MSRV (every locked package fits the workspace's `rust-version`, and
//! README.md states that number).

use std::path::{Path, PathBuf};

use crate::util::workspace_root;

/// The only places `unsafe` may appear (directories end with `/`): the
/// `sys` modules ARCHITECTURE.md's unsafe invariant names. Each exists (a
/// test checks).
const UNSAFE_ALLOWED: &[&str] =
    &["crates/conflux-hvsock/src/sys/", "crates/conflux-tcp-host/src/sys.rs", "crates/conflux-netstack/src/sys.rs"];

/// Top-level directories whose `.rs` files are checked.
const SOURCE_DIRS: &[&str] = &["crates", "xtask", "tests"];

/// Directories never descended into.
const SKIPPED_DIRS: &[&str] = &["target", "fuzz"];

/// `path` relative to the root, with `/` separators.
fn rel(root: &Path, path: &Path) -> String {
    path.strip_prefix(root).unwrap_or(path).to_string_lossy().replace('\\', "/")
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') {
            continue;
        }
        let Ok(ty) = entry.file_type() else { continue };
        if ty.is_dir() {
            if !SKIPPED_DIRS.contains(&name.as_ref()) {
                walk(&path, out);
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

/// Every `.rs` file under the source directories, sorted.
fn rust_files(root: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in SOURCE_DIRS {
        walk(&root.join(dir), &mut files);
    }
    files.sort();
    files
}

/// The members' `Cargo.toml` files: `crates/*`, `xtask`, `tests`, as far as
/// they exist.
fn member_manifests(root: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> =
        std::fs::read_dir(root.join("crates")).into_iter().flatten().flatten().map(|e| e.path()).collect();
    dirs.push(root.join("xtask"));
    dirs.push(root.join("tests"));
    let mut manifests: Vec<PathBuf> = dirs.into_iter().map(|d| d.join("Cargo.toml")).filter(|m| m.is_file()).collect();
    manifests.sort();
    manifests
}

/// Whether a manifest has `[lints]` with `workspace = true` (or
/// `lints.workspace = true`).
fn has_workspace_lints(manifest: &str) -> bool {
    let mut in_lints = false;
    for line in manifest.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.starts_with('[') {
            in_lints = line == "[lints]";
            continue;
        }
        let compact: String = line.chars().filter(|c| !c.is_whitespace()).collect();
        if (in_lints && compact == "workspace=true") || compact == "lints.workspace=true" {
            return true;
        }
    }
    false
}

/// Whether the first non-empty line is a `//!` doc line.
fn starts_with_doc_line(src: &str) -> bool {
    src.lines().map(str::trim).find(|l| !l.is_empty()).is_some_and(|l| l.starts_with("//!"))
}

/// `src` with comments, string and char literals replaced by spaces (newlines
/// kept, so line numbers stay), leaving only code tokens.
fn code_only(src: &str) -> String {
    let c: Vec<char> = src.chars().collect();
    let mut out = c.clone();
    let blank = |out: &mut Vec<char>, from: usize, to: usize| {
        for ch in &mut out[from..to.min(c.len())] {
            if *ch != '\n' {
                *ch = ' ';
            }
        }
    };
    let is_ident = |ch: char| ch.is_alphanumeric() || ch == '_';
    let mut i = 0;
    while i < c.len() {
        let next = c.get(i + 1).copied();
        if c[i] == '/' && next == Some('/') {
            let end = c[i..].iter().position(|&ch| ch == '\n').map_or(c.len(), |p| i + p);
            blank(&mut out, i, end);
            i = end;
        } else if c[i] == '/' && next == Some('*') {
            let (mut depth, mut j) = (1, i + 2);
            while j < c.len() && depth > 0 {
                if c[j] == '/' && c.get(j + 1) == Some(&'*') {
                    depth += 1;
                    j += 2;
                } else if c[j] == '*' && c.get(j + 1) == Some(&'/') {
                    depth -= 1;
                    j += 2;
                } else {
                    j += 1;
                }
            }
            blank(&mut out, i, j);
            i = j;
        } else if c[i] == 'r'
            && (i == 0 || !is_ident(c[i - 1]) || (c[i - 1] == 'b' && (i < 2 || !is_ident(c[i - 2]))))
            && matches!(next, Some('"' | '#'))
        {
            // Raw string r"..", r#".."#, br#".."#.
            let mut j = i + 1;
            let mut hashes = 0;
            while c.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if c.get(j) != Some(&'"') {
                i += 1;
                continue;
            }
            j += 1;
            loop {
                if j >= c.len() {
                    break;
                }
                if c[j] == '"' && (1..=hashes).all(|k| c.get(j + k) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            blank(&mut out, i + 1, j);
            i = j;
        } else if c[i] == '"' {
            let mut j = i + 1;
            while j < c.len() && c[j] != '"' {
                j += if c[j] == '\\' { 2 } else { 1 };
            }
            blank(&mut out, i, j + 1);
            i = j + 1;
        } else if c[i] == '\'' {
            // A char literal ('a', '\n', '\u{..}') or a lifetime ('a).
            if next == Some('\\') {
                let mut j = i + 2;
                while j < c.len() && c[j] != '\'' {
                    j += 1;
                }
                blank(&mut out, i, j + 1);
                i = j + 1;
            } else if c.get(i + 2) == Some(&'\'') {
                blank(&mut out, i, i + 3);
                i += 3;
            } else {
                i += 1;
            }
        } else {
            i += 1;
        }
    }
    out.into_iter().collect()
}

/// 1-based line numbers of `unsafe` used as a keyword (`unsafe {`,
/// `unsafe fn`, `unsafe impl`, `unsafe trait`, `unsafe extern`,
/// `unsafe(...)` attributes), outside comments and strings. Returns the line
/// and whether it opens a block.
fn unsafe_uses(src: &str) -> Vec<(usize, bool)> {
    let code = code_only(src);
    let mut found = Vec::new();
    for (n, line) in code.lines().enumerate() {
        let mut from = 0;
        while let Some(pos) = line[from..].find("unsafe") {
            let start = from + pos;
            let end = start + "unsafe".len();
            from = end;
            let before_ok = line[..start].chars().next_back().is_none_or(|ch| !(ch.is_alphanumeric() || ch == '_'));
            let after = &line[end..];
            if !before_ok || after.starts_with(|ch: char| ch.is_alphanumeric() || ch == '_') {
                continue;
            }
            // The keyword may be followed by its object on the next line.
            let rest: String = code.lines().skip(n).collect::<Vec<_>>().join(" ");
            let tail = rest[end..].trim_start();
            let block = tail.starts_with('{');
            let keyword = block
                || tail.starts_with('(')
                || ["fn", "impl", "trait", "extern"].iter().any(|kw| {
                    tail.strip_prefix(kw)
                        .is_some_and(|t| t.starts_with(|ch: char| !(ch.is_alphanumeric() || ch == '_')))
                });
            if keyword {
                found.push((n + 1, block));
            }
        }
    }
    found
}

/// 1-based lines of `unsafe {` blocks without a `// SAFETY:` comment on the
/// same line or within the 3 lines above.
fn undocumented_unsafe_blocks(src: &str) -> Vec<usize> {
    let lines: Vec<&str> = src.lines().collect();
    unsafe_uses(src)
        .into_iter()
        .filter(|&(_, block)| block)
        .map(|(line, _)| line)
        .filter(|&line| {
            let from = line.saturating_sub(4);
            !lines[from..line].iter().any(|l| l.contains("// SAFETY:"))
        })
        .collect()
}

/// Whether `rel_path` is inside the unsafe quarantine.
fn unsafe_allowed(rel_path: &str) -> bool {
    UNSAFE_ALLOWED.iter().any(|a| if a.ends_with('/') { rel_path.starts_with(a) } else { rel_path == *a })
}

/// The crate directories (`crates/<name>/`) that have a sys module.
fn sys_crates() -> Vec<&'static str> {
    UNSAFE_ALLOWED.iter().filter_map(|a| a.find("/src/").map(|i| &a[..=i])).collect()
}

/// Whether `rel_path` is a lib or bin root that must forbid unsafe code.
fn needs_forbid(rel_path: &str) -> bool {
    let root = rel_path.ends_with("src/lib.rs") || rel_path.ends_with("src/main.rs") || rel_path.contains("/src/bin/");
    let is_root_file = root
        && (rel_path.ends_with("/lib.rs")
            || rel_path.ends_with("/main.rs")
            || rel_path.split("/src/bin/").nth(1).is_some_and(|f| !f.contains('/')));
    is_root_file && !sys_crates().iter().any(|c| rel_path.starts_with(c))
}

fn forbids_unsafe(src: &str) -> bool {
    code_only(src).lines().any(|l| l.split_whitespace().collect::<String>() == "#![forbid(unsafe_code)]")
}

/// A `rust-version` as `(major, minor, patch)`; a missing patch is 0.
fn parse_rust_version(v: &str) -> Option<(u64, u64, u64)> {
    let mut parts = v.trim().split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next().map_or(Some(0), |p| p.parse().ok())?;
    let patch = parts.next().map_or(Some(0), |p| p.parse().ok())?;
    parts.next().is_none().then_some((major, minor, patch))
}

/// The `rust-version` under `[workspace.package]` of the root manifest.
fn workspace_rust_version(manifest: &str) -> Option<String> {
    let mut in_section = false;
    for line in manifest.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.starts_with('[') {
            in_section = line == "[workspace.package]";
            continue;
        }
        if let Some((key, value)) = line.split_once('=')
            && in_section
            && key.trim() == "rust-version"
        {
            return Some(value.trim().trim_matches('"').to_owned());
        }
    }
    None
}

/// The packages of `cargo metadata --format-version 1` output whose
/// `rust_version` is newer than `declared`, as `name version (needs X)`.
/// A package without `rust_version` declares nothing and passes; one whose
/// `rust_version` does not parse is reported.
fn packages_newer_than(metadata: &serde_json::Value, declared: (u64, u64, u64)) -> Vec<String> {
    let packages = metadata["packages"].as_array().map(Vec::as_slice).unwrap_or_default();
    let mut newer: Vec<String> = packages
        .iter()
        .filter_map(|p| {
            let needs = p["rust_version"].as_str()?;
            let too_new = parse_rust_version(needs).is_none_or(|v| v > declared);
            too_new.then(|| {
                format!(
                    "{} {} (needs Rust {needs})",
                    p["name"].as_str().unwrap_or("?"),
                    p["version"].as_str().unwrap_or("?")
                )
            })
        })
        .collect();
    newer.sort();
    newer
}

/// The version README.md gives for the toolchain: `X` in `(X or newer)`.
fn readme_rust_version(readme: &str) -> Option<&str> {
    let (before, _) = readme.split_once(" or newer")?;
    let version = before.rsplit(|c: char| !(c.is_ascii_digit() || c == '.')).next()?;
    parse_rust_version(version).map(|_| version)
}

/// `cargo metadata --format-version 1 <extra>` of the workspace, parsed.
fn cargo_metadata(root: &Path, extra: &[&str]) -> serde_json::Value {
    let out = crate::util::cargo()
        .args(["metadata", "--format-version", "1"])
        .args(extra)
        .current_dir(root)
        .output()
        .expect("run cargo metadata");
    assert!(out.status.success(), "cargo metadata failed:\n{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("cargo metadata JSON")
}

/// The workspace member called `name` in `cargo metadata` output.
fn member<'a>(metadata: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
    metadata["packages"].as_array()?.iter().find(|p| p["name"] == name)
}

/// What a publishable member's `cargo metadata` entry lacks: readme,
/// keywords, categories, license, `[package.metadata.docs.rs] all-features`,
/// a `repository` only if real (none is), and the two license files in its
/// directory (`has_file` answers for a name there).
fn packaging_problems(package: &serde_json::Value, has_file: impl Fn(&str) -> bool) -> Vec<String> {
    let name = package["name"].as_str().unwrap_or("?");
    let mut problems = Vec::new();
    let mut lacks = |what: &str| problems.push(format!("{name}: {what}"));
    if package["readme"].as_str().is_none_or(str::is_empty) {
        lacks("no `readme`");
    }
    if package["keywords"].as_array().is_none_or(Vec::is_empty) {
        lacks("no `keywords`");
    }
    if package["categories"].as_array().is_none_or(Vec::is_empty) {
        lacks("no `categories`");
    }
    if package["license"] != "MIT OR Apache-2.0" {
        lacks("`license` is not `MIT OR Apache-2.0`");
    }
    if package["metadata"]["docs"]["rs"]["all-features"] != true {
        lacks("no `[package.metadata.docs.rs] all-features = true`");
    }
    if package["repository"].as_str().is_some_and(|r| r.contains("example.")) {
        lacks("a placeholder `repository`");
    }
    for file in ["LICENSE-MIT", "LICENSE-APACHE"] {
        if !has_file(file) {
            lacks(&format!("no {file} in its directory"));
        }
    }
    problems
}

fn report(what: &str, problems: &[String]) {
    assert!(problems.is_empty(), "{what}:\n  {}", problems.join("\n  "));
}

#[test]
fn every_member_opts_into_workspace_lints() {
    let root = workspace_root();
    let manifests = member_manifests(&root);
    assert!(manifests.iter().any(|m| m.ends_with("xtask/Cargo.toml")));
    let problems: Vec<String> = manifests
        .iter()
        .filter(|m| !has_workspace_lints(&std::fs::read_to_string(m).unwrap()))
        .map(|m| format!("{}: add `[lints] workspace = true`", rel(&root, m)))
        .collect();
    report("members without workspace lints", &problems);
}

#[test]
fn every_rust_file_starts_with_a_doc_line() {
    let root = workspace_root();
    let files = rust_files(&root);
    assert!(files.iter().any(|f| f.ends_with("xtask/src/tidy.rs")));
    let problems: Vec<String> = files
        .iter()
        .filter(|f| !starts_with_doc_line(&std::fs::read_to_string(f).unwrap_or_default()))
        .map(|f| format!("{}: first line must be a `//!` doc line", rel(&root, f)))
        .collect();
    report("files without a //! opening line", &problems);
}

#[test]
fn unsafe_only_in_sys_modules() {
    let root = workspace_root();
    let mut problems = Vec::new();
    for f in rust_files(&root) {
        let r = rel(&root, &f);
        if unsafe_allowed(&r) {
            continue;
        }
        for (line, _) in unsafe_uses(&std::fs::read_to_string(&f).unwrap_or_default()) {
            problems.push(format!("{r}:{line}: unsafe outside the sys modules"));
        }
    }
    report("unsafe outside its quarantine", &problems);
}

#[test]
fn unsafe_blocks_have_safety_comments() {
    let root = workspace_root();
    let mut problems = Vec::new();
    for f in rust_files(&root) {
        let r = rel(&root, &f);
        for line in undocumented_unsafe_blocks(&std::fs::read_to_string(&f).unwrap_or_default()) {
            problems.push(format!("{r}:{line}: `unsafe {{` without `// SAFETY:` above"));
        }
    }
    report("undocumented unsafe blocks", &problems);
}

#[test]
fn crate_roots_forbid_unsafe() {
    let root = workspace_root();
    let problems: Vec<String> = rust_files(&root)
        .iter()
        .filter(|f| needs_forbid(&rel(&root, f)))
        .filter(|f| !forbids_unsafe(&std::fs::read_to_string(f).unwrap_or_default()))
        .map(|f| format!("{}: add `#![forbid(unsafe_code)]`", rel(&root, f)))
        .collect();
    report("crate roots without #![forbid(unsafe_code)]", &problems);
}

#[test]
fn locked_packages_fit_the_workspace_rust_version() {
    let root = workspace_root();
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    let declared = workspace_rust_version(&manifest).expect("[workspace.package] rust-version");
    let declared_v = parse_rust_version(&declared).expect("rust-version is X.Y or X.Y.Z");
    // Every platform and every dependency kind: dev- and bench-only packages too.
    let metadata = cargo_metadata(&root, &["--locked"]);
    assert!(metadata["packages"].as_array().is_some_and(|p| p.len() > 10), "cargo metadata lists the lock");
    report(
        &format!("locked packages that need a newer Rust than the workspace's rust-version {declared}"),
        &packages_newer_than(&metadata, declared_v),
    );
}

#[test]
fn readme_states_the_workspace_rust_version() {
    let root = workspace_root();
    let declared = workspace_rust_version(&std::fs::read_to_string(root.join("Cargo.toml")).unwrap()).unwrap();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    assert_eq!(
        readme_rust_version(&readme),
        Some(declared.as_str()),
        "README.md must say `a Rust toolchain ({declared} or newer)`"
    );
}

#[test]
fn ci_checks_every_mimic_feature_alone() {
    let metadata = cargo_metadata(&workspace_root(), &["--no-deps"]);
    let mimic = member(&metadata, "conflux-mimic").expect("conflux-mimic is a member");
    let mut features: Vec<&str> = mimic["features"]
        .as_object()
        .expect("features")
        .keys()
        .map(String::as_str)
        .filter(|f| *f != "default")
        .collect();
    features.sort_unstable();
    assert_eq!(features, crate::ci::MIMIC_FEATURES, "xtask ci's MIMIC_FEATURES must list every conflux-mimic feature");
}

#[test]
fn library_crates_are_publishable() {
    let root = workspace_root();
    let metadata = cargo_metadata(&root, &["--no-deps"]);
    let members = metadata["packages"].as_array().expect("packages");
    // `publish = false` is `[]` in cargo metadata; publishable is `null`.
    let mut publishable: Vec<&str> =
        members.iter().filter(|p| p["publish"].is_null()).filter_map(|p| p["name"].as_str()).collect();
    publishable.sort_unstable();
    let mut listed = [crate::ci::LIBRARY_CRATES, crate::ci::BINARY_CRATES].concat();
    listed.sort_unstable();
    assert_eq!(
        publishable, listed,
        "xtask ci's LIBRARY_CRATES and BINARY_CRATES must be the members without `publish = false`"
    );
    let mut problems = Vec::new();
    for name in listed {
        let package = member(&metadata, name).expect("a member");
        let dir = Path::new(package["manifest_path"].as_str().expect("manifest_path")).parent().unwrap().to_owned();
        problems.extend(packaging_problems(package, |f| dir.join(f).is_file()));
    }
    for file in ["LICENSE-MIT", "LICENSE-APACHE"] {
        if !root.join(file).is_file() {
            problems.push(format!("no {file} at the root"));
        }
    }
    report("library crates not ready to publish", &problems);
}

// The checkers themselves must be able to fail.

#[test]
fn lints_checker_rejects_missing_opt_in() {
    assert!(has_workspace_lints("[package]\nname = \"x\"\n\n[lints]\nworkspace = true\n"));
    assert!(has_workspace_lints("lints.workspace = true\n"));
    assert!(!has_workspace_lints("[package]\nname = \"x\"\n"));
    assert!(!has_workspace_lints("[lints]\n# workspace = true\n"));
    assert!(!has_workspace_lints("[lints]\n[dependencies]\nworkspace = true\n"));
}

#[test]
fn doc_line_checker_rejects_missing_doc() {
    assert!(starts_with_doc_line("\n//! Doc.\nfn f() {}\n"));
    assert!(!starts_with_doc_line("// plain comment\n//! late\n"));
    assert!(!starts_with_doc_line("#![forbid(unsafe_code)]\n//! Doc.\n"));
    assert!(!starts_with_doc_line(""));
}

#[test]
fn unsafe_checker_finds_keywords_not_words() {
    let src = r##"//! x
#![forbid(unsafe_code)]
// unsafe { in a comment }
/* unsafe fn in /* nested */ block comment */
const S: &str = "unsafe { in a string";
const R: &str = r#"unsafe impl "quoted" "#;
const C: char = '"';
fn life<'a>(x: &'a str) -> &'a str { x }
fn unsafe_thing() {}
unsafe fn f() {}
unsafe impl Send for X {}
#[unsafe(no_mangle)]
fn g() {
    // SAFETY: documented.
    unsafe { f() }
    let _a = 1;
    let _b = 2;
    let _c = 3;
    unsafe {
        f()
    }
}
"##;
    let uses: Vec<usize> = unsafe_uses(src).into_iter().map(|(l, _)| l).collect();
    assert_eq!(uses, [10, 11, 12, 15, 19]);
    assert_eq!(undocumented_unsafe_blocks(src), [19]);
}

#[test]
fn safety_comment_must_be_close() {
    let src = "//! x\n// SAFETY: too far.\n\n\n\n\nfn h() { unsafe { f() } }\n";
    assert_eq!(undocumented_unsafe_blocks(src), [7]);
    let near = "//! x\n// SAFETY: near.\n\n\nfn h() { unsafe { f() } }\n";
    assert!(undocumented_unsafe_blocks(near).is_empty());
}

#[test]
fn quarantine_and_forbid_rules() {
    assert!(unsafe_allowed("crates/conflux-hvsock/src/sys/linux.rs"));
    assert!(unsafe_allowed("crates/conflux-tcp-host/src/sys.rs"));
    assert!(!unsafe_allowed("crates/conflux-hvsock/src/lib.rs"));
    assert!(!unsafe_allowed("crates/conflux-flow/src/sys.rs"));
    assert!(needs_forbid("crates/conflux-flow/src/lib.rs"));
    assert!(needs_forbid("xtask/src/main.rs"));
    assert!(needs_forbid("crates/conflux-bench/src/bin/extra.rs"));
    assert!(!needs_forbid("crates/conflux-hvsock/src/lib.rs"));
    assert!(!needs_forbid("crates/conflux-flow/src/pipe.rs"));
    assert!(forbids_unsafe("//! x\n#![forbid(unsafe_code)]\n"));
    assert!(!forbids_unsafe("//! x\n// #![forbid(unsafe_code)]\n#![deny(unsafe_code)]\n"));
}

#[test]
fn msrv_checker_flags_newer_packages() {
    let metadata = serde_json::json!({"packages": [
        {"name": "old", "version": "1.0.0", "rust_version": "1.70"},
        {"name": "same", "version": "0.3.0", "rust_version": "1.91.0"},
        {"name": "none", "version": "0.1.0", "rust_version": null},
        {"name": "patch", "version": "2.0.0", "rust_version": "1.91.1"},
        {"name": "newer", "version": "0.7.0", "rust_version": "1.95"},
        {"name": "junk", "version": "0.0.1", "rust_version": "1.x"},
    ]});
    assert_eq!(
        packages_newer_than(&metadata, (1, 91, 0)),
        ["junk 0.0.1 (needs Rust 1.x)", "newer 0.7.0 (needs Rust 1.95)", "patch 2.0.0 (needs Rust 1.91.1)"]
    );
    assert!(packages_newer_than(&metadata, (1, 95, 0)).iter().all(|p| p.starts_with("junk")));
    assert_eq!(parse_rust_version("1.85"), Some((1, 85, 0)));
    assert_eq!(parse_rust_version("1.85.1"), Some((1, 85, 1)));
    assert_eq!(parse_rust_version("1"), Some((1, 0, 0)));
    assert_eq!(parse_rust_version("1.85.1.2"), None);
    assert_eq!(parse_rust_version(""), None);
}

#[test]
fn msrv_readers() {
    let manifest = "[workspace]\nmembers = []\n[package]\nrust-version = \"1.60\"\n\
                    [workspace.package]\nedition = \"2024\"\nrust-version = \"1.95\" # note\n";
    assert_eq!(workspace_rust_version(manifest).as_deref(), Some("1.95"));
    assert_eq!(workspace_rust_version("[package]\nrust-version = \"1.60\"\n"), None);
    assert_eq!(readme_rust_version("with a Rust toolchain (1.95 or newer):"), Some("1.95"));
    assert_eq!(readme_rust_version("a toolchain (or newer)"), None);
    assert_eq!(readme_rust_version("no version here"), None);
}

#[test]
fn packaging_checker_names_what_is_missing() {
    let good = serde_json::json!({
        "name": "conflux-x", "readme": "../../README.md", "keywords": ["a"], "categories": ["network-programming"],
        "license": "MIT OR Apache-2.0", "repository": null, "metadata": {"docs": {"rs": {"all-features": true}}},
    });
    assert!(packaging_problems(&good, |_| true).is_empty());
    let bare = serde_json::json!({
        "name": "conflux-x", "readme": null, "keywords": [], "categories": [], "license": "MIT",
        "repository": "https://example.invalid/x", "metadata": null,
    });
    let problems = packaging_problems(&bare, |f| f == "LICENSE-MIT");
    assert_eq!(problems.len(), 7, "{problems:?}");
    assert!(problems.iter().all(|p| p.starts_with("conflux-x: ")));
    assert!(problems.iter().any(|p| p.contains("all-features")));
    assert!(problems.iter().any(|p| p.contains("LICENSE-APACHE")));
    assert!(!problems.iter().any(|p| p.contains("LICENSE-MIT")));
}

/// The prefixes that make a word a repository path.
const PATH_PREFIXES: &[&str] = &["crates/", "docs/", "xtask/", "tests/", "fuzz/"];

/// Repository paths named in `text`, with their line numbers: in every line
/// of Markdown, in the comments of Rust (from `//` on; string literals are
/// not docs). Globs and templates (`crates/*`, `tests/<name>.rs`) are not
/// paths.
fn named_paths(text: &str, markdown: bool) -> Vec<(usize, String)> {
    let is_path_char = |c: char| c.is_ascii_alphanumeric() || "_./-".contains(c);
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let scope = if markdown {
            line
        } else {
            match line.find("//") {
                Some(at) => &line[at..],
                None => continue,
            }
        };
        for (at, _) in scope.char_indices() {
            let rest = &scope[at..];
            let boundary = scope[..at].chars().next_back().is_none_or(|c| !is_path_char(c));
            if !boundary || !PATH_PREFIXES.iter().any(|p| rest.starts_with(p)) {
                continue;
            }
            let len = rest.find(|c: char| !is_path_char(c)).unwrap_or(rest.len());
            if rest[len..].starts_with(['*', '<', '{', '$']) {
                continue;
            }
            let path = rest[..len].trim_end_matches('.');
            if PATH_PREFIXES.contains(&path) || path.contains("..") {
                continue;
            }
            out.push((n + 1, path.to_owned()));
        }
    }
    out
}

/// Markdown files with docs: the root's, `docs/`, each crate's README, `fuzz/`.
fn markdown_files(root: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in [root.to_path_buf(), root.join("docs"), root.join("fuzz")] {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if e.path().extension().is_some_and(|x| x == "md") {
                files.push(e.path());
            }
        }
    }
    for e in std::fs::read_dir(root.join("crates")).into_iter().flatten().flatten() {
        let readme = e.path().join("README.md");
        if readme.is_file() {
            files.push(readme);
        }
    }
    files.sort();
    files
}

#[test]
fn repository_paths_named_in_docs_exist() {
    let root = workspace_root();
    let mut files = rust_files(&root);
    walk(&root.join("fuzz").join("fuzz_targets"), &mut files);
    let md = markdown_files(&root);
    let mut problems = Vec::new();
    for file in files.iter().chain(&md) {
        let markdown = md.contains(file);
        let Ok(text) = std::fs::read_to_string(file) else { continue };
        let r = rel(&root, file);
        if r == "xtask/src/tidy.rs" {
            continue; // the checkers' own fixtures name paths that must not exist
        }
        // A crate-relative path (`tests/serial.rs` in a crate's docs) resolves
        // in the crate's directory.
        let crate_dir = match r.split('/').collect::<Vec<_>>().as_slice() {
            ["crates", name, ..] => root.join("crates").join(name),
            [top, _, ..] => root.join(top),
            _ => root.clone(),
        };
        for (line, path) in named_paths(&text, markdown) {
            if !root.join(&path).exists() && !crate_dir.join(&path).exists() {
                problems.push(format!("{r}:{line}: {path}"));
            }
        }
        // Files of the project's steering repository, not of this one.
        for (n, l) in text.lines().enumerate() {
            for outside in ["shared/spec/", "DEVELOPERS.md"] {
                if l.contains(outside) {
                    problems.push(format!("{r}:{}: {outside} is not in this repository", n + 1));
                }
            }
        }
    }
    report("repository paths named in docs or comments that do not exist", &problems);
}

#[test]
fn path_checker_reads_comments_and_markdown() {
    let rust = "// see crates/nope/x.rs and tests/serial.rs.\nlet s = \"crates/not-a-comment\"; // crates/* is a glob\n/// docs/a.md, https://example.test/tests/x";
    let found: Vec<String> = named_paths(rust, false).into_iter().map(|(_, p)| p).collect();
    assert_eq!(found, ["crates/nope/x.rs", "tests/serial.rs", "docs/a.md"]);
    let md = "Run `cargo test` in crates/conflux-flow/.\n";
    assert_eq!(named_paths(md, true), [(1, "crates/conflux-flow/".to_owned())]);
}

#[test]
fn unsafe_allow_list_names_existing_modules() {
    let root = workspace_root();
    let missing: Vec<String> =
        UNSAFE_ALLOWED.iter().filter(|p| !root.join(p).exists()).map(|p| p.to_string()).collect();
    report("unsafe allow-list entries that do not exist", &missing);
}

/// The words (identifiers) of `text` with how often each occurs.
fn word_counts<'a>(text: &'a str, counts: &mut std::collections::HashMap<&'a str, usize>) {
    for word in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if !word.is_empty() {
            *counts.entry(word).or_default() += 1;
        }
    }
}

/// The `pub fn` names declared in `src` (free functions and methods).
fn pub_fns(src: &str) -> Vec<&str> {
    src.lines()
        .filter_map(|l| l.trim_start().strip_prefix("pub fn ").or_else(|| l.trim_start().strip_prefix("pub async fn ")))
        .filter_map(|rest| rest.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).next())
        .filter(|name| !name.is_empty())
        .collect()
}

/// Public functions of the library crates whose name appears nowhere but in
/// their own declaration: nothing calls, tests or documents them.
fn uncalled_pub_fns(libraries: &[(String, String)], everything: &[String]) -> Vec<String> {
    let mut counts = std::collections::HashMap::new();
    for text in everything {
        word_counts(text, &mut counts);
    }
    let mut out = Vec::new();
    for (path, src) in libraries {
        for name in pub_fns(src) {
            if counts.get(name).copied().unwrap_or(0) <= 1 && !matches!(name, "new" | "main") {
                out.push(format!("{path}: {name}"));
            }
        }
    }
    out
}

#[test]
fn library_pub_fns_are_used() {
    let root = workspace_root();
    let mut files = rust_files(&root);
    walk(&root.join("fuzz").join("fuzz_targets"), &mut files);
    let texts: Vec<(String, String)> =
        files.iter().filter_map(|f| Some((rel(&root, f), std::fs::read_to_string(f).ok()?))).collect();
    let libraries: Vec<(String, String)> = texts
        .iter()
        .filter(|(p, _)| crate::ci::LIBRARY_CRATES.iter().any(|c| p.starts_with(&format!("crates/{c}/src/"))))
        .cloned()
        .collect();
    let everything: Vec<String> = texts.into_iter().map(|(_, t)| t).collect();
    report(
        "public functions of library crates that nothing calls, tests or documents",
        &uncalled_pub_fns(&libraries, &everything),
    );
}

#[test]
fn uncalled_checker_finds_a_lonely_fn() {
    let lib = ("crates/x/src/lib.rs".to_owned(), "pub fn used() {}\npub fn lonely() {}\n".to_owned());
    let all = vec![lib.1.clone(), "fn main() { used(); }".to_owned()];
    assert_eq!(uncalled_pub_fns(&[lib], &all), ["crates/x/src/lib.rs: lonely"]);
}

/// The `crate::module` names a Rust file of a crate imports or names.
fn crate_modules_named(src: &str) -> Vec<&str> {
    let mut out: Vec<&str> = src
        .match_indices("crate::")
        .filter_map(|(at, _)| {
            let rest = &src[at + "crate::".len()..];
            let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len());
            (end > 0).then(|| &rest[..end])
        })
        .collect();
    // `use crate::{a::X, b::Y}`
    for (at, _) in src.match_indices("crate::{") {
        let rest = &src[at + "crate::{".len()..];
        let body = &rest[..rest.find('}').unwrap_or(rest.len())];
        out.extend(body.split(',').filter_map(|part| part.trim().split("::").next()).filter(|m| !m.is_empty()));
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// A cycle among the modules of `graph` (module -> modules it names), if any.
fn module_cycle(graph: &std::collections::BTreeMap<String, Vec<String>>) -> Option<Vec<String>> {
    fn visit(
        m: &str,
        graph: &std::collections::BTreeMap<String, Vec<String>>,
        stack: &mut Vec<String>,
        done: &mut std::collections::BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = stack.iter().position(|s| s == m) {
            let mut cycle = stack[at..].to_vec();
            cycle.push(m.to_owned());
            return Some(cycle);
        }
        if done.contains(m) {
            return None;
        }
        stack.push(m.to_owned());
        for next in graph.get(m).into_iter().flatten() {
            if let Some(c) = visit(next, graph, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(m.to_owned());
        None
    }
    let mut done = std::collections::BTreeSet::new();
    graph.keys().find_map(|m| visit(m, graph, &mut Vec::new(), &mut done))
}

#[test]
fn mimic_modules_are_layered() {
    let root = workspace_root();
    let src = root.join("crates/conflux-mimic/src");
    let mut files = Vec::new();
    walk(&src, &mut files);
    let mut graph = std::collections::BTreeMap::new();
    for f in &files {
        let r = rel(&src, f);
        let module = r.trim_end_matches(".rs").split('/').next().unwrap_or_default().to_owned();
        if module == "lib" {
            continue; // the root re-exports everything
        }
        let text = std::fs::read_to_string(f).unwrap();
        let entry: &mut Vec<String> = graph.entry(module.clone()).or_default();
        for named in crate_modules_named(&text) {
            if named != module && src.join(format!("{named}.rs")).is_file() {
                entry.push(named.to_owned());
            }
        }
    }
    assert!(graph.len() > 5, "the module graph was read: {graph:?}");
    if let Some(cycle) = module_cycle(&graph) {
        panic!("conflux-mimic's modules import each other in a cycle: {}", cycle.join(" -> "));
    }
}

#[test]
fn module_cycle_checker_finds_a_cycle() {
    let graph = [("a", vec!["b"]), ("b", vec!["c"]), ("c", vec!["a"]), ("d", vec![])]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.into_iter().map(str::to_owned).collect()))
        .collect();
    assert_eq!(module_cycle(&graph), Some(vec!["a".into(), "b".into(), "c".into(), "a".into()]));
    assert_eq!(
        crate_modules_named("use crate::{key::Key, ctx::Ctx};\nuse crate::report::X;"),
        ["ctx", "key", "report"]
    );
}

//! Tests of the skip log, the skip kinds and the `skip!` macro.

use super::*;
use crate::TempDir;
use std::cell::RefCell;

thread_local! {
    /// Where `report_skip` writes in this crate's own tests, so they never
    /// add lines to the real skip log.
    pub(super) static LOG_OVERRIDE: RefCell<Option<PathBuf>> = const { RefCell::new(None) };
}

/// A log file in a fresh directory (removed when the guard drops).
fn temp_log(name: &str) -> (TempDir, PathBuf) {
    let dir = TempDir::new("testkit");
    let path = dir.path().join(name);
    (dir, path)
}

fn redirect_log(name: &str) -> (TempDir, PathBuf) {
    let (dir, path) = temp_log(name);
    LOG_OVERRIDE.with(|o| *o.borrow_mut() = Some(path.clone()));
    (dir, path)
}

fn read_log(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn kinds_round_trip_and_ci_requirement() {
    for kind in SkipKind::ALL {
        assert_eq!(kind.to_string().parse::<SkipKind>(), Ok(kind));
    }
    let required: Vec<_> = SkipKind::ALL.into_iter().filter(SkipKind::required_in_ci).map(SkipKind::as_str).collect();
    assert_eq!(required, ["root", "netns", "tap", "iproute2", "iperf3", "socat", "curl", "nc", "p9fs", "ping"]);
    assert!("bogus".parse::<SkipKind>().is_err());
}

#[test]
fn log_path_prefers_env_then_exe() {
    let env = log_path_from(Some("/x/skips.jsonl".into()), None);
    assert_eq!(env, Path::new("/x/skips.jsonl"));
    let exe = log_path_from(None, Some("/w/target/debug/deps/foo-abc".into()));
    assert_eq!(exe, Path::new("/w/target/test-skips.jsonl"));
    let ex = log_path_from(None, Some("/w/t/release/examples/e".into()));
    assert_eq!(ex, Path::new("/w/t/test-skips.jsonl"));
}

#[test]
fn skip_line_is_one_json_object() {
    assert_eq!(
        skip_line(SkipKind::NoVsockLoopback, "a", "b \"c\""),
        "{\"detail\":\"b \\\"c\\\"\",\"kind\":\"no-vsock-loopback\",\"test\":\"a\"}\n"
    );
}

#[test]
fn parallel_appends_are_whole_lines() {
    let (_dir, path) = temp_log("parallel.jsonl");
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let path = path.clone();
            std::thread::spawn(move || {
                for i in 0..50 {
                    let detail = format!("thread {t} line {i} \"q\"\n{}", "x".repeat(300));
                    append_skip(&path, SkipKind::Tap, "t::name", &detail).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let lines = read_log(&path);
    assert_eq!(lines.len(), 400);
    for v in lines {
        assert_eq!(v["test"], "t::name");
        assert_eq!(v["kind"], "tap");
        assert!(v["detail"].as_str().unwrap().starts_with("thread "));
    }
}

#[test]
fn test_name_is_the_libtest_thread_name() {
    assert_eq!(current_test_name("fallback"), "skip::tests::test_name_is_the_libtest_thread_name");
    let other = std::thread::Builder::new()
        .name("main".into())
        .spawn(|| current_test_name("fallback"))
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(other, "fallback");
}

fn maybe_skip(skip: bool, ran: &mut bool) {
    if skip {
        skip!(Root, "needs {}", "root");
    }
    *ran = true;
}

#[test]
fn skip_macro_logs_and_returns() {
    let (_dir, path) = redirect_log("macro.jsonl");
    let mut ran = false;
    maybe_skip(true, &mut ran);
    assert!(!ran);
    maybe_skip(false, &mut ran);
    assert!(ran);
    let lines = read_log(&path);
    assert_eq!(lines.len(), 1);
    assert_eq!(
        lines[0],
        serde_json::json!({
            "test": "conflux_testkit::skip::tests::skip_macro_logs_and_returns",
            "kind": "root",
            "detail": "needs root",
        })
    );
}

fn skip_in_result(skip: bool) -> Result<(), String> {
    if skip {
        skip!(SkipKind::Capability, "case {} excluded", 7);
    }
    Err("not skipped".into())
}

#[test]
fn skip_macro_returns_ok_from_result_fns() {
    let (_dir, path) = redirect_log("result.jsonl");
    assert_eq!(skip_in_result(true), Ok(()));
    assert_eq!(skip_in_result(false), Err("not skipped".into()));
    assert_eq!(read_log(&path)[0]["detail"], "case 7 excluded");
}

#[test]
fn report_skip_does_not_return() {
    let (_dir, path) = redirect_log("report.jsonl");
    report_skip(SkipKind::Capability, "kit::case-3", "no half-close");
    report_skip(SkipKind::Capability, "kit::case-4", "no half-close");
    let lines = read_log(&path);
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[1]["test"], "kit::case-4");
}

async fn async_skip(skip: bool) -> Result<(), ()> {
    if skip {
        skip!(NoVsockLoopback, "cid 1 unreachable");
    }
    Err(())
}

#[tokio::test]
async fn skip_macro_works_in_async_fns() {
    let (_dir, path) = redirect_log("async.jsonl");
    assert_eq!(async_skip(false).await, Err(()));
    assert_eq!(async_skip(true).await, Ok(()));
    let in_block: Result<(), ()> = async {
        if async_skip(false).await.is_err() {
            skip!(NoVsockLoopback, "in an async block");
        }
        Err(())
    }
    .await;
    assert_eq!(in_block, Ok(()));
    let lines = read_log(&path);
    assert_eq!(lines[0]["test"], "conflux_testkit::skip::tests::skip_macro_works_in_async_fns");
}

//! The command line's conventions, the binary spawned as a process: help
//! with examples (stdout, exit 0), version, exit code 2 for an unknown option
//! or a bad URI (naming the part), exit code 1 for a refused connect (naming
//! the address), and `conflux demo --json`.

mod common;

use common::run;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// One line on stderr, prefixed `conflux:`.
fn one_error_line(stderr: &[u8]) -> String {
    let err = text(stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {err:?}");
    assert!(lines[0].starts_with("conflux: "), "{err:?}");
    lines[0].to_owned()
}

#[test]
fn help_has_examples_for_every_subcommand() {
    let out = run(&["--help"], b"");
    assert_eq!(out.status.code(), Some(0));
    let help = text(&out.stdout);
    assert!(out.stderr.is_empty(), "help goes to stdout");
    for sub in ["demo", "relay", "cat", "serve-9p"] {
        assert!(help.contains(&format!("conflux {sub} ")), "an example of {sub} in --help:\n{help}");
        let out = run(&[sub, "--help"], b"");
        assert_eq!(out.status.code(), Some(0), "{sub} --help");
        let sub_help = text(&out.stdout);
        assert!(sub_help.contains("Examples:") && sub_help.contains(&format!("conflux {sub}")), "{sub_help}");
    }
    let relay = text(&run(&["relay", "--help"], b"").stdout);
    for option in ["--max-flows", "--idle-timeout", "--connect-timeout", "--once", "--progress", "--grace"] {
        assert!(relay.contains(option), "relay --help names {option}");
    }
}

#[test]
fn version() {
    let out = run(&["--version"], b"");
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(text(&out.stdout).trim(), format!("conflux {}", env!("CARGO_PKG_VERSION")));
}

#[test]
fn unknown_option_is_a_usage_error() {
    let out = run(&["relay", "--bogus", "tcp://:1", "tcp://127.0.0.1:2"], b"");
    assert_eq!(out.status.code(), Some(2));
    let line = one_error_line(&out.stderr);
    assert!(line.contains("--bogus"), "{line}");
    let out = run(&["frobnicate"], b"");
    assert_eq!(out.status.code(), Some(2));
    assert!(one_error_line(&out.stderr).contains("frobnicate"));
    let out = run(&["relay", "--idle-timeout", "soon", "tcp://:1", "tcp://127.0.0.1:2"], b"");
    assert_eq!(out.status.code(), Some(2));
    assert!(one_error_line(&out.stderr).contains("soon"));
}

#[test]
fn bad_uris_are_usage_errors_naming_the_part() {
    for (args, part, value) in [
        (&["cat", "tcp://127.0.0.1:99999"][..], "port", "99999"),
        (&["cat", "nope://x"][..], "scheme", "nope"),
        (&["relay", "tcp://:1", "unix:///tmp/x?keepalive=1s,1s,1"][..], "query key", "keepalive"),
        (&["relay", "tcp://:1", "tcp://[::1:80"][..], "host", ""),
        (&["serve-9p", "tcp://:5640?framing=bogus", "."][..], "query key", "framing"),
    ] {
        let out = run(args, b"");
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out.stderr));
        let line = one_error_line(&out.stderr);
        assert!(line.contains(part) && line.contains(value), "{args:?} names the {part} `{value}`: {line}");
    }
}

#[test]
fn refused_connect_is_a_runtime_failure_naming_the_address() {
    // A port nobody listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let out = run(&["cat", &format!("tcp://127.0.0.1:{port}")], b"hello");
    assert_eq!(out.status.code(), Some(1));
    let line = one_error_line(&out.stderr);
    assert!(line.contains(&format!("127.0.0.1:{port}")) && line.contains("refused"), "{line}");

    let dir = conflux_testkit::TempDir::new("refused");
    let path = dir.path().join("nobody.sock");
    let out = run(&["cat", &format!("unix://{}", path.display())], b"hello");
    assert_eq!(out.status.code(), Some(1));
    let line = one_error_line(&out.stderr);
    assert!(line.contains(&path.display().to_string()), "{line}");
}

#[test]
fn demo_json_reports_every_step_and_the_fault_model() {
    let started = std::time::Instant::now();
    let out = run(&["demo", "--json"], b"");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(v["ok"], true);
    let steps = v["steps"].as_array().unwrap();
    let names: Vec<&str> = steps.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["stacks", "registry", "framed", "fault-model"]);
    for s in steps {
        assert_eq!(s["ok"], true, "{s}");
    }
    let fault = &steps[3];
    let raw_lost = fault["raw"]["lost"].as_u64().unwrap();
    assert!(raw_lost > 0, "the raw flow lost bytes: {fault}");
    assert_eq!(fault["framed"]["lost"], 0, "{fault}");
    assert_eq!(fault["framed"]["bytes_back"], fault["framed"]["bytes_sent"]);
    assert!(steps[0]["throughput_bytes_per_s"].as_f64().unwrap() > 0.0);
    assert!(started.elapsed() < std::time::Duration::from_secs(15), "a few seconds");

    // The plain words say the same.
    let out = run(&["demo"], b"");
    assert_eq!(out.status.code(), Some(0));
    let words = text(&out.stdout);
    assert!(words.contains("All 4 steps succeeded"), "{words}");
    assert!(words.contains("lost") && words.contains("nothing lost"), "{words}");
}

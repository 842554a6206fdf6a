//! `conflux-bench`: runs the selected benchmark scenarios, prints a table and
//! writes the figures as JSON.
//!
//! Usage: `conflux-bench [--quick] [--out PATH] [--report PATH] [--list] [GROUP|SCENARIO...]`.
//! Without names every scenario runs. `--report` writes the Markdown report
//! and its SVG chart beside it (refused with `--quick`: a quick run's figures
//! never replace a full run's). Normally started by `cargo xtask bench`, which
//! builds in release, passes `--out target/bench/latest.json`, and on a full
//! run (no `--quick`, no names) `--report docs/benchmarks.md`.
#![forbid(unsafe_code)]

use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::process::ExitCode;

use conflux_bench::{Ctx, Record, Scenario, flow, http, hvsock, mimic, netstack, ninep, relay, tcp_host, usernet};

/// A scenario group: its command-line name and its scenarios.
type Group = (&'static str, fn() -> Vec<Scenario>);

/// Every scenario group, in the order they run.
const GROUPS: &[Group] = &[
    ("flow", flow::scenarios),
    ("tcp-host", tcp_host::scenarios),
    ("netstack", netstack::scenarios),
    ("hvsock", hvsock::scenarios),
    ("mimic", mimic::scenarios),
    ("9p", ninep::scenarios),
    ("relay", relay::scenarios),
    ("http", http::scenarios),
    ("usernet", usernet::scenarios),
];

struct Args {
    quick: bool,
    list: bool,
    out: Option<PathBuf>,
    report: Option<PathBuf>,
    names: Vec<String>,
}

const USAGE: &str = "usage: conflux-bench [--quick] [--out PATH] [--report PATH] [--list] [GROUP|SCENARIO...]";

/// The arguments, or `None` for `--help`.
fn parse_args() -> Result<Option<Args>, String> {
    let mut args = Args { quick: false, list: false, out: None, report: None, names: Vec::new() };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--quick" => args.quick = true,
            "--list" => args.list = true,
            "--out" => args.out = Some(it.next().ok_or("--out needs a path")?.into()),
            "--report" => args.report = Some(it.next().ok_or("--report needs a path")?.into()),
            "-h" | "--help" => return Ok(None),
            s if s.starts_with('-') => return Err(format!("unknown option {s}")),
            _ => args.names.push(arg),
        }
    }
    if args.quick && args.report.is_some() {
        return Err("--report is for full runs: a --quick run never writes the report".to_owned());
    }
    Ok(Some(args))
}

/// The selected scenarios, in registry order, each once.
fn select(all: &[(&'static str, Vec<Scenario>)], names: &[String]) -> Result<Vec<Scenario>, String> {
    let mut unknown = Vec::new();
    for name in names {
        let known = all.iter().any(|(g, sc)| g == name || sc.iter().any(|s| s.name == name));
        if !known {
            unknown.push(name.as_str());
        }
    }
    if !unknown.is_empty() {
        let mut known = Vec::new();
        for (g, sc) in all {
            known.push(format!("{g} (group)"));
            known.extend(sc.iter().map(|s| s.name.to_owned()));
        }
        return Err(format!("unknown scenario or group: {}\nknown: {}", unknown.join(", "), known.join(", ")));
    }
    let picked = all
        .iter()
        .flat_map(|(g, sc)| sc.iter().map(move |s| (*g, s)))
        .filter(|(g, s)| names.is_empty() || names.iter().any(|n| n == g || n == s.name))
        .map(|(_, s)| *s)
        .collect();
    Ok(picked)
}

fn main() -> ExitCode {
    // A hidden child invocation (the netstack group's RSS measurement and TAP
    // peer, the usernet group's connection client).
    let raw: Vec<String> = std::env::args().skip(1).collect();
    if let Some(code) = netstack::child_main(&raw).or_else(|| usernet::child_main(&raw)) {
        return code;
    }
    let args = match parse_args() {
        Ok(Some(a)) => a,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("{e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let all: Vec<(&'static str, Vec<Scenario>)> = GROUPS.iter().map(|(g, f)| (*g, f())).collect();
    if args.list {
        for (g, sc) in &all {
            let names: Vec<_> = sc.iter().map(|s| s.name).collect();
            println!("{g}: {}", names.join(" "));
        }
        return ExitCode::SUCCESS;
    }
    let selected = match select(&all, &args.names) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };

    let mut records: Vec<Record> = Vec::new();
    let mut failed = Vec::new();
    for scenario in &selected {
        eprintln!("== {} ({})", scenario.name, scenario.metric);
        let ctx = Ctx::new(scenario, args.quick);
        let started = std::time::Instant::now();
        match std::panic::catch_unwind(AssertUnwindSafe(|| (scenario.run)(&ctx))) {
            Ok(Ok(mut r)) => records.append(&mut r),
            Ok(Err(skip)) => eprintln!("SKIP {}: {}", scenario.name, skip.reason),
            Err(_) => failed.push(scenario.name),
        }
        eprintln!("   {:.1}s", started.elapsed().as_secs_f64());
    }

    let mut stdout = std::io::stdout().lock();
    if let Err(e) = conflux_bench::print_table(&mut stdout, &records) {
        eprintln!("cannot print the table: {e}");
        return ExitCode::FAILURE;
    }
    if let Some(out) = &args.out {
        if let Err(e) = conflux_bench::write_json(out, &records) {
            eprintln!("cannot write {}: {e}", out.display());
            return ExitCode::FAILURE;
        }
        eprintln!("wrote {}", out.display());
    }
    if let Some(report) = &args.report {
        let machine = conflux_bench::Machine::probe();
        if let Err(e) = conflux_bench::write_report(report, &records, &machine) {
            eprintln!("cannot write {}: {e}", report.display());
            return ExitCode::FAILURE;
        }
        eprintln!("wrote {} and {}", report.display(), conflux_bench::CHART_FILE);
    }
    let unmet: Vec<_> = records.iter().filter(|r| r.goal_met == Some(false)).map(|r| r.scenario.as_str()).collect();
    if !unmet.is_empty() {
        eprintln!("goals not met: {}", unmet.join(", "));
    }
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        eprintln!("scenarios that panicked: {}", failed.join(", "));
        ExitCode::FAILURE
    }
}

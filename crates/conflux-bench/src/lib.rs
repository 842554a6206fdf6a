//! The conflux benchmark harness and its scenario groups.
//!
//! A scenario measures one figure (a [`Metric`]) of a conflux transport, and
//! usually the same work done by a baseline (a plain kernel socket, a
//! `tokio::io::duplex`, ...) in the same process and run, interleaved with
//! the measured side ([`measure_pair`]). The figure is the median of the runs
//! (at least 3; at least 5 for multi-thread scenarios, see [`Ctx::runs_mt`]);
//! min and max are reported. Each measured run is paired with the baseline
//! run next to it: the ratio is the median of the per-pair ratios, with their
//! interquartile range (`ratio_p25`, `ratio_p75`; see [`PairRatios`]), and a
//! ratio goal is met when that median meets it. The `conflux-bench` binary selects scenarios,
//! prints a table and writes `target/bench/latest.json` (an array of
//! [`Record`]s).
//!
//! What it does not do: it never compares against earlier runs and never
//! installs anything; a scenario that cannot run (no root, say) returns
//! [`Skip`] with the reason.
//!
//! ```
//! use conflux_bench::{Ctx, Goal, Metric, Record, Scenario, Skip, measure_pair};
//!
//! fn copy(ctx: &Ctx<'_>) -> Result<Vec<Record>, Skip> {
//!     let src = vec![7u8; 1 << 16];
//!     let pair = measure_pair(
//!         ctx.runs(5, 3),
//!         || { let v = src.clone(); conflux_bench::throughput_gbps(v.len() as u64, std::time::Duration::from_micros(10)) },
//!         || { let v = src.to_vec(); conflux_bench::throughput_gbps(v.len() as u64, std::time::Duration::from_micros(20)) },
//!     );
//!     Ok(vec![ctx.record(&pair.measured).with_baseline("to_vec", &pair.baseline)])
//! }
//!
//! let scenario = Scenario {
//!     name: "copy",
//!     metric: Metric::Throughput,
//!     goal: Goal::RatioAtLeast(0.5),
//!     run: copy,
//! };
//! let records = (scenario.run)(&Ctx::new(&scenario, true)).unwrap();
//! assert_eq!(records[0].ratio, Some(2.0));
//! assert_eq!(records[0].goal_met, Some(true));
//! ```
#![forbid(unsafe_code)]

mod chart;
pub mod data;
mod harness;
mod machine;
mod proc;
mod report;

pub mod flow;
pub mod http;
pub mod hvsock;
pub mod mimic;
pub mod netstack;
pub mod ninep;
pub mod relay;
pub mod tcp_host;
pub mod usernet;

pub use crate::harness::{
    Ctx, Goal, Metric, Pair, PairRatios, Record, RunFn, Scenario, Skip, measure, measure_pair, micros, quantile,
    rate_per_sec, rss_mib, throughput_gbps,
};
pub use crate::machine::Machine;
pub use crate::report::{CHART_FILE, markdown, print_table, write_json, write_report};

//! Scenarios, goals, sampling and the figures that go into `latest.json`.

use std::fmt;
use std::time::Duration;

use serde::{Serialize, Serializer};

/// What a figure measures; fixes its unit and which direction is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    /// Bytes moved per second, in GB/s (10^9 bytes/s). Larger is better.
    Throughput,
    /// Round-trip time in microseconds. Smaller is better.
    Rtt,
    /// One-way or per-operation latency in microseconds. Smaller is better.
    Latency,
    /// Operations per second. Larger is better.
    Rate,
    /// Resident set size in MiB. Smaller is better.
    Rss,
}

impl Metric {
    /// The unit written beside the value: `GB/s`, `us`, `/s` or `MiB`.
    pub const fn unit(self) -> &'static str {
        match self {
            Metric::Throughput => "GB/s",
            Metric::Rtt | Metric::Latency => "us",
            Metric::Rate => "/s",
            Metric::Rss => "MiB",
        }
    }

    /// Whether a larger value is better (throughput, rate).
    pub const fn larger_is_better(self) -> bool {
        matches!(self, Metric::Throughput | Metric::Rate)
    }

    /// The lowercase name used in `latest.json`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Metric::Throughput => "throughput",
            Metric::Rtt => "rtt",
            Metric::Latency => "latency",
            Metric::Rate => "rate",
            Metric::Rss => "rss",
        }
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a figure must reach. `ratio` is always `value / baseline_value`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Goal {
    /// `ratio >= x` (e.g. throughput at least 80% of the baseline's: 0.8).
    RatioAtLeast(f64),
    /// `ratio <= x` (e.g. latency at most 1.25 times the baseline's).
    RatioAtMost(f64),
    /// `value <= x` in the metric's unit (e.g. RSS at most 64 MiB).
    ValueAtMost(f64),
    /// `value >= x` in the metric's unit.
    ValueAtLeast(f64),
    /// No goal: the figure is reported only; `goal_met` is null.
    ReportOnly,
}

impl Goal {
    /// Whether `value` (and `ratio`, when there is a baseline) meets the goal;
    /// `None` for [`Goal::ReportOnly`] and for ratio goals without a baseline.
    pub fn is_met(self, value: f64, ratio: Option<f64>) -> Option<bool> {
        match self {
            Goal::RatioAtLeast(x) => ratio.map(|r| r >= x),
            Goal::RatioAtMost(x) => ratio.map(|r| r <= x),
            Goal::ValueAtMost(x) => Some(value <= x),
            Goal::ValueAtLeast(x) => Some(value >= x),
            Goal::ReportOnly => None,
        }
    }
}

impl fmt::Display for Goal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Goal::RatioAtLeast(x) => write!(f, "ratio >= {x}"),
            Goal::RatioAtMost(x) => write!(f, "ratio <= {x}"),
            Goal::ValueAtMost(x) => write!(f, "value <= {x}"),
            Goal::ValueAtLeast(x) => write!(f, "value >= {x}"),
            Goal::ReportOnly => f.write_str("-"),
        }
    }
}

fn serialize_goal<S: Serializer>(goal: &Goal, s: S) -> Result<S::Ok, S::Error> {
    match goal {
        Goal::ReportOnly => s.serialize_none(),
        g => s.serialize_some(&g.to_string()),
    }
}

/// A scenario could not run here; the reason is printed and no figure is
/// written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skip {
    /// Why, e.g. `root: needs CAP_NET_ADMIN for a TAP`.
    pub reason: String,
}

impl Skip {
    /// A skip with `reason`.
    pub fn new(reason: impl Into<String>) -> Self {
        Skip { reason: reason.into() }
    }
}

/// Runs one scenario and returns its figures (usually one).
pub type RunFn = fn(&Ctx<'_>) -> Result<Vec<Record>, Skip>;

/// One benchmark scenario, as registered by a group's `scenarios()`.
#[derive(Debug, Clone, Copy)]
pub struct Scenario {
    /// The name selected on the command line, e.g. `flow-pipe`.
    pub name: &'static str,
    /// The figure's metric.
    pub metric: Metric,
    /// The goal the figure is judged against.
    pub goal: Goal,
    /// The body.
    pub run: RunFn,
}

/// What a scenario's body gets: the scenario itself and the options.
#[derive(Debug, Clone, Copy)]
pub struct Ctx<'a> {
    /// The running scenario.
    pub scenario: &'a Scenario,
    /// `--quick`: fewer runs/iterations (sizes stay as the scenario defines).
    pub quick: bool,
}

impl<'a> Ctx<'a> {
    /// The context for running `scenario`.
    pub fn new(scenario: &'a Scenario, quick: bool) -> Self {
        Ctx { scenario, quick }
    }

    /// The number of runs: `full`, or `quick` under `--quick`; at least 3.
    pub fn runs(&self, full: usize, quick: usize) -> usize {
        (if self.quick { quick } else { full }).max(3)
    }

    /// Like [`Ctx::runs`] for multi-thread scenarios: at least 5.
    pub fn runs_mt(&self, full: usize, quick: usize) -> usize {
        self.runs(full, quick).max(5)
    }

    /// A record of this scenario's name, metric and goal from `samples`.
    pub fn record(&self, samples: &[f64]) -> Record {
        Record::new(self.scenario.name, self.scenario.metric, samples).with_goal(self.scenario.goal)
    }
}

/// The samples of an interleaved measurement, in the metric's unit.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Pair {
    /// One sample per run of the measured side.
    pub measured: Vec<f64>,
    /// One sample per run of the baseline.
    pub baseline: Vec<f64>,
}

/// Runs `measured` then `baseline`, `runs` times each, alternating
/// (measured, baseline, measured, baseline, ...), so drift in the machine's
/// state affects both alike.
pub fn measure_pair(runs: usize, mut measured: impl FnMut() -> f64, mut baseline: impl FnMut() -> f64) -> Pair {
    let mut pair = Pair { measured: Vec::with_capacity(runs), baseline: Vec::with_capacity(runs) };
    for _ in 0..runs {
        pair.measured.push(measured());
        pair.baseline.push(baseline());
    }
    pair
}

/// Runs `f` `runs` times (for figures without a baseline).
pub fn measure(runs: usize, f: impl FnMut() -> f64) -> Vec<f64> {
    std::iter::repeat_with(f).take(runs).collect()
}

/// GB/s (10^9 bytes per second) for `bytes` moved in `elapsed`.
pub fn throughput_gbps(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / elapsed.as_secs_f64() / 1e9
}

/// `elapsed` in microseconds.
pub fn micros(elapsed: Duration) -> f64 {
    elapsed.as_secs_f64() * 1e6
}

/// Operations per second for `count` operations in `elapsed`.
pub fn rate_per_sec(count: u64, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64()
}

/// This process's resident set size in MiB (`VmRSS` of `/proc/self/status`),
/// or `None` where that is unreadable.
pub fn rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: f64 =
        status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.trim().strip_suffix("kB")?.trim().parse().ok()?;
    Some(kib / 1024.0)
}

fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n % 2 == 1 { sorted[n / 2] } else { (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0 }
}

fn sorted(samples: &[f64]) -> Vec<f64> {
    assert!(!samples.is_empty(), "a figure needs at least one sample");
    let mut v = samples.to_vec();
    v.sort_by(f64::total_cmp);
    v
}

/// One figure of `latest.json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Record {
    /// The scenario's name.
    pub scenario: String,
    /// What was measured.
    pub metric: Metric,
    /// The median of the measured samples, in `unit`.
    pub value: f64,
    /// The metric's unit.
    pub unit: &'static str,
    /// The baseline's name, if there is one.
    pub baseline: Option<String>,
    /// The median of the baseline's samples.
    pub baseline_value: Option<f64>,
    /// `value / baseline_value`.
    pub ratio: Option<f64>,
    /// The number of measured samples.
    pub runs: usize,
    /// The smallest measured sample.
    pub min: f64,
    /// The largest measured sample.
    pub max: f64,
    /// The goal, as text (`null` when report-only).
    #[serde(serialize_with = "serialize_goal")]
    pub goal: Goal,
    /// Whether the goal is met (`null` when report-only or not judgeable).
    pub goal_met: Option<bool>,
}

impl Record {
    /// A report-only figure from the measured `samples` (median, min, max).
    ///
    /// # Panics
    ///
    /// If `samples` is empty.
    pub fn new(scenario: &str, metric: Metric, samples: &[f64]) -> Self {
        let s = sorted(samples);
        Record {
            scenario: scenario.to_owned(),
            metric,
            value: median(&s),
            unit: metric.unit(),
            baseline: None,
            baseline_value: None,
            ratio: None,
            runs: s.len(),
            min: s[0],
            max: s[s.len() - 1],
            goal: Goal::ReportOnly,
            goal_met: None,
        }
    }

    /// Adds the baseline `name` with its `samples` (its median becomes
    /// `baseline_value`; `ratio = value / baseline_value`).
    ///
    /// # Panics
    ///
    /// If `samples` is empty.
    pub fn with_baseline(mut self, name: &str, samples: &[f64]) -> Self {
        let b = median(&sorted(samples));
        self.baseline = Some(name.to_owned());
        self.baseline_value = Some(b);
        self.ratio = Some(self.value / b);
        self.goal_met = self.goal.is_met(self.value, self.ratio);
        self
    }

    /// Sets the goal and judges the figure against it.
    pub fn with_goal(mut self, goal: Goal) -> Self {
        self.goal = goal;
        self.goal_met = goal.is_met(self.value, self.ratio);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_min_max_ratio() {
        let r = Record::new("s", Metric::Throughput, &[3.0, 1.0, 2.0, 10.0, 4.0])
            .with_baseline("b", &[2.0, 2.0, 1.0])
            .with_goal(Goal::RatioAtLeast(1.5));
        assert_eq!((r.value, r.min, r.max, r.runs), (3.0, 1.0, 10.0, 5));
        assert_eq!((r.baseline_value, r.ratio), (Some(2.0), Some(1.5)));
        assert_eq!(r.goal_met, Some(true));
        let even = Record::new("s", Metric::Rtt, &[4.0, 1.0, 2.0, 3.0]);
        assert_eq!(even.value, 2.5);
    }

    #[test]
    fn goals() {
        let lat = Record::new("l", Metric::Latency, &[10.0; 3]).with_goal(Goal::RatioAtMost(1.2));
        assert_eq!(lat.goal_met, None, "no baseline, no judgement");
        let lat = lat.with_baseline("k", &[9.0; 3]);
        assert_eq!(lat.goal_met, Some(true));
        let rss = Record::new("r", Metric::Rss, &[70.0; 3]).with_goal(Goal::ValueAtMost(64.0));
        assert_eq!(rss.goal_met, Some(false));
    }

    #[test]
    fn interleaves() {
        let log = std::cell::RefCell::new(Vec::new());
        let pair = measure_pair(
            3,
            || {
                log.borrow_mut().push('m');
                1.0
            },
            || {
                log.borrow_mut().push('b');
                2.0
            },
        );
        assert_eq!(log.into_inner(), ['m', 'b', 'm', 'b', 'm', 'b']);
        assert_eq!(pair.baseline, [2.0; 3]);
    }

    #[test]
    fn json_shape() {
        let r = Record::new("flow-pipe", Metric::Throughput, &[1.0, 2.0, 3.0]);
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "scenario": "flow-pipe", "metric": "throughput", "value": 2.0,
                "unit": "GB/s", "baseline": null, "baseline_value": null,
                "ratio": null, "runs": 3, "min": 1.0, "max": 3.0,
                "goal": null, "goal_met": null,
            })
        );
        let g = serde_json::to_value(r.with_goal(Goal::ValueAtLeast(1.0))).unwrap();
        assert_eq!(g["goal"], "value >= 1");
        assert_eq!(g["goal_met"], true);
    }

    #[test]
    fn units() {
        assert_eq!(throughput_gbps(2_000_000_000, Duration::from_secs(2)), 1.0);
        assert_eq!(micros(Duration::from_millis(3)), 3000.0);
        assert_eq!(rate_per_sec(50, Duration::from_millis(500)), 100.0);
        assert!(rss_mib().unwrap() > 0.0);
    }
}

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

/// What a figure must reach. `ratio` is the median of the per-pair ratios
/// (measured run / its baseline run, see [`PairRatios`]).
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

/// Runs `measured` and `baseline` `runs` times each, interleaved, the order
/// flipping every pair (measured, baseline, baseline, measured, measured,
/// baseline, ...): drift in the machine's state affects both alike, and
/// whatever the first run of a pair leaves behind for the second (warm
/// caches, socket memory, a frequency step) favours neither side.
pub fn measure_pair(runs: usize, mut measured: impl FnMut() -> f64, mut baseline: impl FnMut() -> f64) -> Pair {
    let mut pair = Pair { measured: Vec::with_capacity(runs), baseline: Vec::with_capacity(runs) };
    for i in 0..runs {
        if i % 2 == 0 {
            pair.measured.push(measured());
            pair.baseline.push(baseline());
        } else {
            pair.baseline.push(baseline());
            pair.measured.push(measured());
        }
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

/// The `q`-quantile (`0.0..=1.0`) of `sorted`, interpolating linearly
/// between the two nearest ranks (numpy's default): `quantile(s, 0.5)` is the
/// median, the mean of the middle two for an even count.
///
/// # Panics
///
/// If `sorted` is empty.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    assert!(!sorted.is_empty(), "a quantile needs at least one sample");
    let pos = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

fn median(sorted: &[f64]) -> f64 {
    quantile(sorted, 0.5)
}

/// The ratios of paired runs: `measured[i] / baseline[i]` for each pair (a
/// measured run and the baseline run next to it), summarised by their median
/// and interquartile range. Pairing cancels what drifts between pairs (other
/// builds starting, frequency scaling): a slow moment slows both runs of a
/// pair, where the ratio of two separately taken medians would absorb it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PairRatios {
    /// The 25th percentile of the per-pair ratios.
    pub p25: f64,
    /// The median of the per-pair ratios: the figure's `ratio`, which goals
    /// are judged on.
    pub median: f64,
    /// The 75th percentile of the per-pair ratios.
    pub p75: f64,
}

impl PairRatios {
    /// The per-pair ratios of `measured` and `baseline`, paired by index.
    ///
    /// # Panics
    ///
    /// If the two are empty or of different lengths (every measured run needs
    /// its baseline run).
    pub fn new(measured: &[f64], baseline: &[f64]) -> Self {
        assert_eq!(measured.len(), baseline.len(), "each measured run is paired with one baseline run");
        let ratios: Vec<f64> = measured.iter().zip(baseline).map(|(m, b)| m / b).collect();
        let s = sorted(&ratios);
        PairRatios { p25: quantile(&s, 0.25), median: median(&s), p75: quantile(&s, 0.75) }
    }
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
    /// The median of the per-pair ratios (measured run / its baseline run);
    /// goals are judged on it.
    pub ratio: Option<f64>,
    /// The 25th percentile of the per-pair ratios.
    pub ratio_p25: Option<f64>,
    /// The 75th percentile of the per-pair ratios.
    pub ratio_p75: Option<f64>,
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
    /// The measured samples in run order, for pairing with a baseline's.
    #[serde(skip)]
    pub samples: Vec<f64>,
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
            ratio_p25: None,
            ratio_p75: None,
            runs: s.len(),
            min: s[0],
            max: s[s.len() - 1],
            goal: Goal::ReportOnly,
            goal_met: None,
            samples: samples.to_vec(),
        }
    }

    /// Adds the baseline `name` with its `samples`, paired by index with the
    /// measured ones (`samples[i]` is the baseline run next to measured run
    /// `i`, as [`measure_pair`] takes them): `baseline_value` is their median,
    /// `ratio` the median of the per-pair ratios with `ratio_p25` and
    /// `ratio_p75` (see [`PairRatios`]).
    ///
    /// # Panics
    ///
    /// If `samples` is not as long as the measured samples.
    pub fn with_baseline(mut self, name: &str, samples: &[f64]) -> Self {
        let ratios = PairRatios::new(&self.samples, samples);
        self.baseline = Some(name.to_owned());
        self.baseline_value = Some(median(&sorted(samples)));
        self.ratio = Some(ratios.median);
        self.ratio_p25 = Some(ratios.p25);
        self.ratio_p75 = Some(ratios.p75);
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
            .with_baseline("b", &[2.0, 2.0, 1.0, 5.0, 2.0])
            .with_goal(Goal::RatioAtLeast(1.5));
        assert_eq!((r.value, r.min, r.max, r.runs), (3.0, 1.0, 10.0, 5));
        // Pair ratios 1.5, 0.5, 2, 2, 2.
        assert_eq!((r.baseline_value, r.ratio), (Some(2.0), Some(2.0)));
        assert_eq!((r.ratio_p25, r.ratio_p75), (Some(1.5), Some(2.0)));
        assert_eq!(r.goal_met, Some(true));
        let even = Record::new("s", Metric::Rtt, &[4.0, 1.0, 2.0, 3.0]);
        assert_eq!(even.value, 2.5);
    }

    #[test]
    fn quantiles_interpolate() {
        let s = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!((quantile(&s, 0.0), quantile(&s, 0.25), quantile(&s, 0.5), quantile(&s, 1.0)), (1.0, 2.0, 3.0, 5.0));
        let s = [1.0, 2.0, 4.0];
        assert_eq!((quantile(&s, 0.25), quantile(&s, 0.5), quantile(&s, 0.75)), (1.5, 2.0, 3.0));
        assert_eq!(quantile(&[7.0], 0.25), 7.0);
        assert_eq!(median(&[1.0, 2.0, 3.0, 10.0]), 2.5);
    }

    #[test]
    fn ratio_is_the_median_of_pair_ratios_not_the_ratio_of_medians() {
        // Runs 2 and 3 of the baseline fell in a slow moment (another build);
        // the ratio of the medians would say 10 / 20 = 0.5.
        let measured = [10.0, 10.0, 20.0];
        let baseline = [5.0, 20.0, 20.0];
        let r = PairRatios::new(&measured, &baseline);
        // Pair ratios 2, 0.5, 1.
        assert_eq!((r.p25, r.median, r.p75), (0.75, 1.0, 1.5));
        let rec = Record::new("t", Metric::Throughput, &measured)
            .with_goal(Goal::RatioAtLeast(0.9))
            .with_baseline("b", &baseline);
        assert_eq!((rec.value, rec.baseline_value), (10.0, Some(20.0)));
        assert_eq!((rec.ratio_p25, rec.ratio, rec.ratio_p75), (Some(0.75), Some(1.0), Some(1.5)));
        assert_eq!(rec.goal_met, Some(true));
        // Pairs go by run order, not by sorted value.
        let swapped = PairRatios::new(&[20.0, 10.0, 10.0], &baseline);
        assert_eq!(swapped.median, 0.5);
    }

    #[test]
    #[should_panic(expected = "paired")]
    fn unpaired_baseline_is_refused() {
        let _ = Record::new("s", Metric::Rtt, &[1.0, 2.0, 3.0]).with_baseline("b", &[1.0, 2.0]);
    }

    #[test]
    fn goal_met_only_when_the_median_meets_it() {
        // Larger is better: ratios 0.7, 0.85, 0.9 (p25 0.775 below 0.8, median above).
        let t = Record::new("t", Metric::Throughput, &[0.7, 0.85, 0.9])
            .with_baseline("b", &[1.0; 3])
            .with_goal(Goal::RatioAtLeast(0.8));
        assert_eq!(t.goal_met, Some(true));
        assert!(t.ratio_p25.unwrap() < 0.8);
        // Median below, p75 above: not met.
        let t = t.with_goal(Goal::RatioAtLeast(0.87));
        assert!(t.ratio_p75.unwrap() > 0.87);
        assert_eq!(t.goal_met, Some(false));
        // Smaller is better: ratios 1.0, 1.1, 1.3 against <= 1.1 and <= 1.05.
        let l = Record::new("l", Metric::Latency, &[10.0, 11.0, 13.0])
            .with_baseline("b", &[10.0; 3])
            .with_goal(Goal::RatioAtMost(1.1));
        assert_eq!(l.goal_met, Some(true));
        assert!(l.ratio_p75.unwrap() > 1.1);
        assert_eq!(l.with_goal(Goal::RatioAtMost(1.05)).goal_met, Some(false));
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
        // Pairs in order, each pair's order flipped from the last's (ABBA).
        assert_eq!(log.into_inner(), ['m', 'b', 'b', 'm', 'm', 'b']);
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
                "ratio": null, "ratio_p25": null, "ratio_p75": null, "runs": 3, "min": 1.0, "max": 3.0,
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

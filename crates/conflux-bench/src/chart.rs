//! The report's chart: every figure with a baseline as one row, its ratio (the
//! median of the pair ratios) a bar from parity (1) on a log scale, its
//! interquartile range a whisker, its goal a mark; green when the goal is met,
//! red when not, grey without a goal. Plain SVG text, no dependencies.

use std::fmt::Write as _;

use crate::harness::{Goal, Record};

const WIDTH: f64 = 940.0;
const LABEL_RIGHT: f64 = 290.0;
const PLOT_LEFT: f64 = 300.0;
const PLOT_RIGHT: f64 = 720.0;
const TEXT_LEFT: f64 = 732.0;
const TOP: f64 = 48.0;
const ROW: f64 = 24.0;
const BOTTOM: f64 = 44.0;

const MET: &str = "#2e7d32";
const NOT_MET: &str = "#c62828";
const NO_GOAL: &str = "#90a4ae";

/// The ratio a goal names, if it is a ratio goal.
fn goal_ratio(goal: Goal) -> Option<f64> {
    match goal {
        Goal::RatioAtLeast(x) | Goal::RatioAtMost(x) => Some(x),
        _ => None,
    }
}

/// Escapes text for an SVG text node or attribute.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A log-scale axis from `lo` to `hi` mapped onto the plot's width.
struct Axis {
    lo: f64,
    hi: f64,
}

impl Axis {
    /// An axis holding every value in `values` and 1, with some room.
    fn new(values: impl Iterator<Item = f64>) -> Axis {
        let (mut lo, mut hi) = (1.0f64, 1.0f64);
        for v in values.filter(|v| v.is_finite() && *v > 0.0) {
            lo = lo.min(v);
            hi = hi.max(v);
        }
        Axis { lo: lo / 1.25, hi: hi * 1.25 }
    }

    fn x(&self, v: f64) -> f64 {
        let v = v.clamp(self.lo, self.hi);
        PLOT_LEFT + (v.ln() - self.lo.ln()) / (self.hi.ln() - self.lo.ln()) * (PLOT_RIGHT - PLOT_LEFT)
    }

    /// Ticks at 1, 2 and 5 times powers of ten inside the axis.
    fn ticks(&self) -> Vec<f64> {
        let mut ticks = Vec::new();
        let mut decade = 10f64.powf(self.lo.log10().floor());
        while decade <= self.hi {
            for m in [1.0, 2.0, 5.0] {
                let t = decade * m;
                if t >= self.lo && t <= self.hi {
                    ticks.push(t);
                }
            }
            decade *= 10.0;
        }
        ticks
    }
}

fn fmt_tick(v: f64) -> String {
    if v >= 1.0 { format!("{v:.0}") } else { format!("{v}") }
}

/// The chart of `records` as an SVG document: one row per figure with a
/// ratio (figures without a baseline have nothing to draw).
pub(crate) fn svg(records: &[Record]) -> String {
    let rows: Vec<&Record> = records.iter().filter(|r| r.ratio.is_some()).collect();
    let axis = Axis::new(rows.iter().flat_map(|r| [r.ratio, r.ratio_p25, r.ratio_p75, goal_ratio(r.goal)]).flatten());
    let height = TOP + ROW * rows.len().max(1) as f64 + BOTTOM;
    let plot_bottom = TOP + ROW * rows.len().max(1) as f64;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{WIDTH}" height="{height}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{LABEL_RIGHT}" y="20" font-size="14" font-weight="bold">Each figure against its baseline (ratio, log scale) and its goal</text>"#
    );
    let _ = writeln!(
        s,
        r##"<text x="{LABEL_RIGHT}" y="36" fill="#666666">bar: median pair ratio; whisker: p25-p75; black mark: goal; green met, red not met, grey no goal</text>"##
    );
    for t in axis.ticks() {
        let x = axis.x(t);
        let stroke = if t == 1.0 { "#444" } else { "#ddd" };
        let _ = writeln!(s, r#"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{plot_bottom}" stroke="{stroke}"/>"#);
        let _ = writeln!(
            s,
            r##"<text x="{x:.1}" y="{:.1}" text-anchor="middle" fill="#666666">{}</text>"##,
            plot_bottom + 16.0,
            fmt_tick(t)
        );
    }
    let _ = writeln!(
        s,
        r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#666666">ours / baseline</text>"##,
        (PLOT_LEFT + PLOT_RIGHT) / 2.0,
        plot_bottom + 34.0
    );
    if rows.is_empty() {
        let _ = writeln!(s, r#"<text x="{PLOT_LEFT}" y="{:.1}">(no figure with a baseline)</text>"#, TOP + 16.0);
    }
    for (i, r) in rows.iter().enumerate() {
        let Some(ratio) = r.ratio else { continue };
        let top = TOP + ROW * i as f64;
        let mid = top + ROW / 2.0;
        // Only a ratio goal is judged on the ratio drawn; a goal on the value
        // is told in the text.
        let colour = match (goal_ratio(r.goal), r.goal_met) {
            (Some(_), Some(true)) => MET,
            (Some(_), Some(false)) => NOT_MET,
            _ => NO_GOAL,
        };
        let label = format!("{} vs {}", r.scenario, r.baseline.as_deref().unwrap_or("?"));
        let _ =
            writeln!(s, r#"<text x="{LABEL_RIGHT}" y="{:.1}" text-anchor="end">{}</text>"#, mid + 4.0, escape(&label));
        let (x1, x2) = (axis.x(1.0), axis.x(ratio));
        let (left, w) = (x1.min(x2), (x2 - x1).abs().max(1.0));
        let _ = writeln!(
            s,
            r#"<rect x="{left:.1}" y="{:.1}" width="{w:.1}" height="{:.1}" fill="{colour}"><title>{}: {ratio:.3}</title></rect>"#,
            top + 5.0,
            ROW - 10.0,
            escape(&label)
        );
        if let (Some(p25), Some(p75)) = (r.ratio_p25, r.ratio_p75) {
            let _ = writeln!(
                s,
                r#"<line x1="{:.1}" y1="{mid:.1}" x2="{:.1}" y2="{mid:.1}" stroke="black" stroke-width="1.5"/>"#,
                axis.x(p25),
                axis.x(p75)
            );
        }
        let mut text = format!("{ratio:.2}");
        if let Some(g) = goal_ratio(r.goal) {
            let gx = axis.x(g);
            let _ = writeln!(
                s,
                r#"<line x1="{gx:.1}" y1="{:.1}" x2="{gx:.1}" y2="{:.1}" stroke="black" stroke-width="3"/>"#,
                top + 2.0,
                top + ROW - 2.0
            );
            let op = if matches!(r.goal, Goal::RatioAtLeast(_)) { "&gt;=" } else { "&lt;=" };
            let _ = write!(text, " (goal {op} {g})");
        } else if let (Goal::ValueAtMost(_) | Goal::ValueAtLeast(_), Some(met)) = (r.goal, r.goal_met) {
            let goal = escape(&r.goal.to_string());
            let _ = write!(text, " ({goal} {}: {})", r.unit, if met { "met" } else { "NOT met" });
        }
        let _ = writeln!(s, r#"<text x="{TEXT_LEFT}" y="{:.1}" fill="{colour}">{text}</text>"#, mid + 4.0);
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Metric;

    #[test]
    fn one_row_per_ratio_coloured_by_goal() {
        let met = Record::new("relay", Metric::Throughput, &[1.0; 3])
            .with_goal(Goal::RatioAtLeast(0.9))
            .with_baseline("socat-relay", &[1.0; 3]);
        let not_met = Record::new("relay-churn", Metric::Rate, &[1.0; 3])
            .with_goal(Goal::RatioAtLeast(2.0))
            .with_baseline("socat-relay", &[1.0; 3]);
        let none = Record::new("relay", Metric::Throughput, &[1.0; 3]).with_baseline("direct-echo", &[2.0; 3]);
        let solo = Record::new("flow-rss", Metric::Rss, &[5.0; 3]);
        let value_goal = Record::new("mimic-resolve", Metric::Latency, &[3.0; 3])
            .with_goal(Goal::ValueAtMost(5.0))
            .with_baseline("direct", &[0.1; 3]);
        let svg = svg(&[met, not_met, none, solo, value_goal]);
        assert!(svg.starts_with("<svg "), "{svg}");
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<rect x=").count(), 4, "{svg}");
        assert!(svg.contains(&format!("fill=\"{MET}\"><title>relay vs socat-relay")));
        assert!(svg.contains(&format!("fill=\"{NOT_MET}\"><title>relay-churn vs socat-relay")));
        assert!(svg.contains(&format!("fill=\"{NO_GOAL}\"><title>relay vs direct-echo: 0.500")));
        assert!(svg.contains("1.00 (goal &gt;= 2)"));
        assert!(!svg.contains("flow-rss"));
        assert!(svg.contains(&format!("fill=\"{NO_GOAL}\"><title>mimic-resolve vs direct")));
        assert!(svg.contains("30.00 (value &lt;= 5 us: met)"), "{svg}");
    }

    #[test]
    fn axis_is_logarithmic_and_holds_every_value() {
        let axis = Axis::new([0.5, 4.0].into_iter());
        assert!((axis.x(1.0) - axis.x(0.5) - (axis.x(2.0) - axis.x(1.0))).abs() < 1e-9);
        assert!(axis.x(axis.lo) == PLOT_LEFT && axis.x(axis.hi) == PLOT_RIGHT);
        assert!(axis.x(0.5) > PLOT_LEFT && axis.x(4.0) < PLOT_RIGHT);
        assert_eq!(axis.ticks(), [0.5, 1.0, 2.0, 5.0]);
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(escape("a<b & \"c\">"), "a&lt;b &amp; &quot;c&quot;&gt;");
    }
}

//! The table printed after a run and the `latest.json` file.

use std::io::Write;
use std::path::Path;

use crate::harness::Record;

fn fmt_num(v: f64) -> String {
    if v == 0.0 || (v.abs() >= 0.01 && v.abs() < 1e6) { format!("{v:.3}") } else { format!("{v:.3e}") }
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), fmt_num)
}

/// The interquartile range of the pair ratios, `p25-p75`, or `-`.
fn fmt_spread(r: &Record) -> String {
    match (r.ratio_p25, r.ratio_p75) {
        (Some(lo), Some(hi)) => format!("{}-{}", fmt_num(lo), fmt_num(hi)),
        _ => "-".to_owned(),
    }
}

/// Writes the table of `records` (scenario, metric, value unit, baseline,
/// baseline value, ratio (the median of the pair ratios), its p25-p75, runs,
/// min, max, goal, met) to `out`.
pub fn print_table(out: &mut impl Write, records: &[Record]) -> std::io::Result<()> {
    let header = [
        "scenario",
        "metric",
        "value",
        "baseline",
        "base value",
        "ratio",
        "ratio p25-p75",
        "runs",
        "min",
        "max",
        "goal",
        "met",
    ];
    let rows: Vec<[String; 12]> = records
        .iter()
        .map(|r| {
            [
                r.scenario.clone(),
                r.metric.to_string(),
                format!("{} {}", fmt_num(r.value), r.unit),
                r.baseline.clone().unwrap_or_else(|| "-".to_owned()),
                fmt_opt(r.baseline_value),
                fmt_opt(r.ratio),
                fmt_spread(r),
                r.runs.to_string(),
                fmt_num(r.min),
                fmt_num(r.max),
                r.goal.to_string(),
                match r.goal_met {
                    Some(true) => "yes".to_owned(),
                    Some(false) => "NO".to_owned(),
                    None => "-".to_owned(),
                },
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |out: &mut dyn Write, cells: &[&str]| -> std::io::Result<()> {
        let parts: Vec<String> = cells.iter().zip(widths).map(|(c, w)| format!("{c:<w$}")).collect();
        writeln!(out, "{}", parts.join("  ").trim_end())
    };
    line(out, &header)?;
    for row in &rows {
        line(out, &row.each_ref().map(String::as_str))?;
    }
    if rows.is_empty() {
        writeln!(out, "(no figures)")?;
    }
    Ok(())
}

/// Writes `records` as a pretty JSON array to `path`, creating its directory.
pub fn write_json(path: &Path, records: &[Record]) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut text = serde_json::to_string_pretty(records)?;
    text.push('\n');
    std::fs::write(path, text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Goal, Metric};

    #[test]
    fn table_has_a_row_per_record() {
        let r = Record::new("flow-pipe", Metric::Throughput, &[1.0, 2.0, 3.0])
            .with_baseline("duplex", &[1.0; 3])
            .with_goal(Goal::RatioAtLeast(0.8));
        let solo = Record::new("flow-rss", Metric::Rss, &[5.0; 3]);
        let mut out = Vec::new();
        print_table(&mut out, &[r, solo]).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].contains("ratio p25-p75"));
        assert!(lines[1].starts_with("flow-pipe"));
        assert!(lines[1].contains("2.000 GB/s"));
        assert!(lines[1].contains("1.500-2.500"), "{}", lines[1]);
        assert!(lines[1].contains("ratio >= 0.8"));
        assert!(lines[1].ends_with("yes"));
    }
}

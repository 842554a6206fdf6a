//! What the report says about the machine a run measured: the CPU model, the
//! cores, the kernel and the compiler, and the date.

use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

/// The machine a run measured, as written at the head of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    /// The CPU's `model name` from `/proc/cpuinfo`.
    pub cpu: String,
    /// The cores this process may run on (`available_parallelism`).
    pub cores: usize,
    /// The kernel release (`/proc/sys/kernel/osrelease`).
    pub kernel: String,
    /// `rustc --version` (the `RUSTC` of the environment if set).
    pub rustc: String,
    /// The day of the run, UTC, as `YYYY-MM-DD`.
    pub date: String,
}

impl Machine {
    /// Describes this machine; a part that cannot be read is `unknown`.
    pub fn probe() -> Machine {
        let cpu = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|s| cpu_model(&s));
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok().map(|s| s.trim().to_owned());
        let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
        let rustc = Command::new(rustc)
            .arg("--version")
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
        let unknown = || "unknown".to_owned();
        Machine {
            cpu: cpu.unwrap_or_else(unknown),
            cores: std::thread::available_parallelism().map_or(1, usize::from),
            kernel: kernel.unwrap_or_else(unknown),
            rustc: rustc.unwrap_or_else(unknown),
            date: utc_date(SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())),
        }
    }
}

/// The first `model name` of a `/proc/cpuinfo` text.
fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|rest| rest.split_once(':')).map(|(_, v)| v.trim()))
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

/// `YYYY-MM-DD` of the UTC day `secs` seconds after the Unix epoch (Howard
/// Hinnant's civil-from-days).
fn utc_date(secs: u64) -> String {
    let days = (secs / 86_400) as i64 + 719_468;
    let era = days.div_euclid(146_097);
    let doe = days.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(utc_date(0), "1970-01-01");
        assert_eq!(utc_date(951_782_400), "2000-02-29");
        assert_eq!(utc_date(1_795_996_799), "2026-11-29");
    }

    #[test]
    fn cpu_model_line() {
        let info = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) CPU @ 2.20GHz\nmodel name\t: other\n";
        assert_eq!(cpu_model(info).as_deref(), Some("Intel(R) Xeon(R) CPU @ 2.20GHz"));
        assert_eq!(cpu_model("processor : 0\n"), None);
    }

    #[test]
    fn probes_this_machine() {
        let m = Machine::probe();
        assert!(m.cores >= 1);
        assert_eq!(m.date.len(), 10);
        assert!(m.rustc.starts_with("rustc "), "{}", m.rustc);
    }
}

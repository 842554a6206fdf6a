//! Probes of the environment a test runs in, read from `/proc` and `PATH`.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Whether the effective user id is 0 (from the `Uid:` line of
/// `/proc/self/status`).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| effective_uid_is_root(&s))
}

fn effective_uid_is_root(status: &str) -> bool {
    status.lines().find_map(|l| l.strip_prefix("Uid:")).and_then(|ids| ids.split_whitespace().nth(1)) == Some("0")
}

/// Whether an executable file `name` is on `PATH` (or, if `name` contains a
/// `/`, whether that path is an executable file).
pub fn have_command(name: &str) -> bool {
    if name.contains('/') {
        return is_executable(Path::new(name));
    }
    std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|dir| is_executable(&dir.join(name))))
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The number of open file descriptors of this process (entries of
/// `/proc/self/fd`, not counting the one used to list them).
///
/// # Panics
///
/// If `/proc/self/fd` cannot be read.
pub fn open_fds() -> usize {
    let entries = std::fs::read_dir("/proc/self/fd").expect("read /proc/self/fd").count();
    entries.saturating_sub(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uid_line_parsing() {
        assert!(effective_uid_is_root("Name:\tx\nUid:\t1000\t0\t0\t0\n"));
        assert!(!effective_uid_is_root("Uid:\t0\t1000\t1000\t1000\n"));
        assert!(!effective_uid_is_root("Name:\tx\n"));
    }

    #[test]
    fn finds_sh_and_not_nonsense() {
        assert!(have_command("sh"));
        assert!(!have_command("conflux-surely-not-a-command"));
        assert!(!have_command("/nonexistent/sh"));
    }

    #[test]
    fn counts_a_new_descriptor() {
        // Other tests run in parallel threads; retry until a quiet moment.
        for _ in 0..100 {
            let before = open_fds();
            let file = std::fs::File::open("/proc/self/status").unwrap();
            let during = open_fds();
            drop(file);
            let after = open_fds();
            if during == before + 1 && after == before {
                return;
            }
        }
        panic!("open_fds never saw exactly one new descriptor");
    }
}

//! Test network namespaces made (and removed) through iproute2's `ip`.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// Runs `ip ARGS`; the error is the command line and its stderr.
pub fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip").args(args).stdin(Stdio::null()).output().map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// A name unique to this process and call, `cfx<pid><tag><n>`, at most 15
/// bytes (an interface name's limit) for a `tag` of up to 2 bytes.
pub fn unique_name(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let name = format!("cfx{:x}{tag}{}", std::process::id() % 0x10_0000, N.fetch_add(1, Ordering::Relaxed));
    assert!(name.len() <= 15, "name too long for an interface: {name}");
    name
}

/// A network namespace of the test's own, its loopback up; on drop every
/// process left in it is killed and it is deleted (with the interfaces in it).
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates a namespace named [`unique_name`]`(tag)`. Needs root and `ip`
    /// (skip first with [`is_root`](crate::is_root) and
    /// [`have_command`](crate::have_command)).
    pub fn create(tag: &str) -> Result<Netns, String> {
        let ns = Netns { name: unique_name(tag) };
        ip(&["netns", "add", &ns.name])?;
        ns.ip(&["link", "set", "dev", "lo", "up"])?;
        Ok(ns)
    }

    /// Its name (for `ip netns exec` and `ip -n`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its path, `/run/netns/<name>` (for `setns`).
    pub fn path(&self) -> std::path::PathBuf {
        std::path::Path::new("/run/netns").join(&self.name)
    }

    /// Runs `ip -n <name> ARGS` (inside the namespace).
    pub fn ip(&self, args: &[&str]) -> Result<(), String> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// Moves interface `dev` of ours into the namespace.
    pub fn take_link(&self, dev: &str) -> Result<(), String> {
        ip(&["link", "set", "dev", dev, "netns", &self.name])
    }

    /// A command that runs `program` inside the namespace (`ip netns exec`).
    pub fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Ok(out) = Command::new("ip").args(["netns", "pids", &self.name]).output() {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("kill").args(["-9", pid]).status();
            }
        }
        if let Err(e) = ip(&["netns", "del", &self.name]) {
            eprintln!("cleanup: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_fit_an_interface() {
        let (a, b) = (unique_name("t"), unique_name("t"));
        assert_ne!(a, b);
        assert!(a.len() <= 15 && a.starts_with("cfx"), "{a}");
    }

    #[test]
    fn a_namespace_exists_until_dropped() {
        if !crate::is_root() || !crate::have_command("ip") {
            crate::skip!(Root, "creating a namespace needs root and ip");
        }
        let ns = Netns::create("k").unwrap();
        assert!(ns.path().exists(), "{}", ns.path().display());
        let out = ns.cmd("ip").args(["-o", "link", "show", "lo"]).output().unwrap();
        assert!(String::from_utf8_lossy(&out.stdout).contains("UP"), "lo is up");
        let mut sleeper = ns.cmd("sleep").arg("60").spawn().unwrap();
        // Wait (bounded) until the child is inside the namespace.
        for _ in 0..500 {
            let out = Command::new("ip").args(["netns", "pids", ns.name()]).output().unwrap();
            if !out.stdout.is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let path = ns.path();
        drop(ns);
        assert!(!path.exists(), "deleted");
        // The process left inside was killed.
        let status = sleeper.wait().unwrap();
        assert!(!status.success(), "{status:?}");
        assert!(ip(&["netns", "del", "cfx-no-such-ns"]).unwrap_err().contains("cfx-no-such-ns"));
    }
}

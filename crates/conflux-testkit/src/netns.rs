//! Test network namespaces made (and removed) through iproute2's `ip`.

use std::path::{Path, PathBuf};
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

    /// Writes `/etc/netns/<name>/<file>`, which [`cmd`](Netns::cmd)'s
    /// `ip netns exec` bind-mounts over `/etc/<file>` inside the namespace
    /// (`resolv.conf` for the namespace's resolver), making `/etc/netns`
    /// and `/etc/netns/<name>` when missing. The returned [`NetnsEtcFile`]
    /// removes the file on drop, and the directories this call made (never
    /// one that was there before) once they are empty. The error names the
    /// path that failed, or `file` when it is not a plain file name.
    pub fn etc_file(&self, file: &str, contents: &str) -> Result<NetnsEtcFile, String> {
        NetnsEtcFile::write(Path::new("/etc/netns"), &self.name, file, contents)
    }
}

/// A file of a namespace's `/etc/netns/<name>/`, written by
/// [`Netns::etc_file`]; removed on drop with the directories made for it.
#[derive(Debug)]
pub struct NetnsEtcFile {
    path: PathBuf,
    /// Directories made for the file, outermost first.
    made: Vec<PathBuf>,
}

impl NetnsEtcFile {
    /// Writes `root/<ns>/<file>`, making `root` and `root/<ns>` when missing.
    fn write(root: &Path, ns: &str, file: &str, contents: &str) -> Result<NetnsEtcFile, String> {
        if file.is_empty() || file == "." || file == ".." || file.contains('/') {
            return Err(format!("not a file name: {file:?}"));
        }
        let dir = root.join(ns);
        let mut written = NetnsEtcFile { path: dir.join(file), made: Vec::new() };
        for d in [root, dir.as_path()] {
            match std::fs::create_dir(d) {
                Ok(()) => written.made.push(d.to_owned()),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && d.is_dir() => {}
                // Dropping `written` removes what was made so far.
                Err(e) => return Err(format!("create {}: {e}", d.display())),
            }
        }
        std::fs::write(&written.path, contents).map_err(|e| format!("write {}: {e}", written.path.display()))?;
        Ok(written)
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for NetnsEtcFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        // Innermost first; a directory something else put files in stays.
        for dir in self.made.iter().rev() {
            let _ = std::fs::remove_dir(dir);
        }
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

    /// Only what it made goes on drop: the file always, `/etc/netns` and
    /// `/etc/netns/<name>` only when the write made them and they are empty.
    #[test]
    fn an_etc_file_removes_the_directories_it_made_and_only_those() {
        let tmp = crate::TempDir::new("etc");
        let root = tmp.path().join("netns");
        // Nothing there: both directories made, both gone afterwards.
        let f = NetnsEtcFile::write(&root, "ns1", "resolv.conf", "nameserver 10.0.2.3\n").unwrap();
        assert_eq!(f.path(), root.join("ns1/resolv.conf"));
        assert_eq!(std::fs::read_to_string(f.path()).unwrap(), "nameserver 10.0.2.3\n");
        drop(f);
        assert!(!root.exists(), "the root it made is gone");
        // The root was there (with another namespace's files): it stays.
        std::fs::create_dir_all(root.join("other")).unwrap();
        let f = NetnsEtcFile::write(&root, "ns2", "resolv.conf", "x").unwrap();
        drop(f);
        assert!(!root.join("ns2").exists(), "the namespace's directory it made is gone");
        assert!(root.join("other").is_dir(), "what was there stays");
        // The namespace's directory was there: only the file goes.
        std::fs::write(root.join("other/hosts"), "127.0.0.1 x\n").unwrap();
        let f = NetnsEtcFile::write(&root, "other", "resolv.conf", "x").unwrap();
        drop(f);
        assert!(!root.join("other/resolv.conf").exists());
        assert!(root.join("other/hosts").is_file());
        // A directory something else filled while the file lived stays.
        let f = NetnsEtcFile::write(&root, "ns3", "resolv.conf", "x").unwrap();
        std::fs::write(root.join("ns3/hosts"), "x").unwrap();
        drop(f);
        assert!(root.join("ns3/hosts").is_file());
        // Bad names are refused, naming them; a failed write leaves nothing.
        for bad in ["", "..", "a/b"] {
            let err = NetnsEtcFile::write(&root, "ns4", bad, "x").unwrap_err();
            assert!(err.contains(&format!("{bad:?}")), "{err}");
        }
        let blocked = tmp.path().join("file");
        std::fs::write(&blocked, "").unwrap();
        let err = NetnsEtcFile::write(&blocked.join("netns"), "ns5", "resolv.conf", "x").unwrap_err();
        assert!(err.contains("create "), "{err}");
        assert!(!root.join("ns4").exists());
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

    /// `ip netns exec` sees the file as `/etc/<file>`; afterwards
    /// `/etc/netns/<name>` is gone, and `/etc/netns` too unless it was there.
    #[test]
    fn an_etc_file_is_the_namespaces_and_leaves_nothing_behind() {
        if !crate::is_root() || !crate::have_command("ip") {
            crate::skip!(Root, "creating a namespace and writing /etc/netns need root and ip");
        }
        let ns = Netns::create("e").unwrap();
        let etc_netns = Path::new("/etc/netns");
        let had_root = etc_netns.exists();
        let f = ns.etc_file("resolv.conf", "nameserver 192.0.2.53\n").unwrap();
        let out = ns.cmd("cat").arg("/etc/resolv.conf").output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "nameserver 192.0.2.53\n");
        drop(f);
        assert!(!etc_netns.join(ns.name()).exists(), "/etc/netns/{} is left", ns.name());
        // Another test may have made /etc/netns meanwhile; only ours is checked then.
        if !had_root && etc_netns.exists() && std::fs::read_dir(etc_netns).unwrap().next().is_none() {
            panic!("an empty /etc/netns is left behind");
        }
    }
}

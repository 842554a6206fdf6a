//! A fresh directory for a test's files (Unix sockets, captures), removed on drop.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// A fresh, empty directory under the system temp dir, removed with its
/// contents on drop: a thin wrapper over [`tempfile::TempDir`], whose name is
/// `cfx-<tag>-` plus a random suffix, created anew (never an existing
/// directory reused or deleted first) with mode 0700.
#[derive(Debug)]
pub struct TempDir(tempfile::TempDir);

impl TempDir {
    /// Creates the directory; `tag` names the test or suite in the path.
    ///
    /// # Panics
    ///
    /// If the directory can't be created (a broken test machine).
    pub fn new(tag: &str) -> TempDir {
        let dir = tempfile::Builder::new()
            .prefix(&format!("cfx-{tag}-"))
            .permissions(std::fs::Permissions::from_mode(0o700))
            .tempdir()
            .unwrap_or_else(|e| panic!("create a temp dir for {tag}: {e}"));
        TempDir(dir)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        self.0.path()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_private_and_removed() {
        let a = TempDir::new("tempdir");
        let b = TempDir::new("tempdir");
        assert_ne!(a.path(), b.path());
        assert!(a.path().file_name().unwrap().to_str().unwrap().starts_with("cfx-tempdir-"));
        let mode = std::fs::metadata(a.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700, "only the owner may enter it");
        std::fs::write(a.path().join("f"), b"x").unwrap();
        let path = a.path().to_owned();
        drop(a);
        assert!(!path.exists(), "removed with its contents");
    }
}

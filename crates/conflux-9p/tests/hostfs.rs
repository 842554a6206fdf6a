//! HostFs through the server and our client: the usual operations, read-only
//! mode, and every path-escape attempt refused (`..` above the root, names with
//! `/`, absolute and relative symlinks pointing out, a directory swapped for a
//! symlink between Twalk and Topen).
#![cfg(target_os = "linux")]

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use conflux_9p::fs::{ORDWR, OREAD};
use conflux_9p::{Client, ClientError, HostFs, Msg, Qid, Server};
use conflux_flow::Pipe;

/// `<tmp>/outside/secret` and `<tmp>/root/{d/f.txt, top.txt}`; removed on drop.
struct Tree(PathBuf);

impl Tree {
    fn new() -> Tree {
        static N: AtomicU32 = AtomicU32::new(0);
        let base = std::env::temp_dir().join(format!(
            "conflux-9p-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(base.join("outside")).unwrap();
        std::fs::write(base.join("outside/secret"), "SECRET").unwrap();
        std::fs::write(base.join("outside/f.txt"), "OUTSIDE").unwrap();
        std::fs::create_dir_all(base.join("root/d")).unwrap();
        std::fs::write(base.join("root/d/f.txt"), "inside").unwrap();
        std::fs::write(base.join("root/top.txt"), "top").unwrap();
        Tree(base)
    }
    fn root(&self) -> PathBuf {
        self.0.join("root")
    }
    fn outside(&self) -> PathBuf {
        self.0.join("outside")
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn connect(dir: &Path, read_only: bool) -> (Client<Pipe>, u32) {
    let fs = HostFs::new(dir).unwrap().read_only(read_only);
    let (a, b) = conflux_flow::pipe(256 * 1024);
    tokio::spawn(async move { Server::new(fs).serve(b).await });
    let client = Client::connect(a, 65536, "9P2000.u").await.unwrap();
    let (root, _) = client.attach("u", "").await.unwrap();
    (client, root)
}

async fn read_file(c: &Client<Pipe>, root: u32, path: &[&str]) -> Result<Vec<u8>, ClientError> {
    let (f, _) = c.walk(root, path).await?;
    c.open(f, OREAD).await?;
    let data = c.read_all(f).await;
    c.clunk(f).await?;
    data
}

#[tokio::test]
async fn operations() {
    let t = Tree::new();
    let (c, root) = connect(&t.root(), false).await;
    assert_eq!(read_file(&c, root, &["d", "f.txt"]).await.unwrap(), b"inside");
    let (d, _) = c.walk(root, &[]).await.unwrap();
    c.open(d, OREAD).await.unwrap();
    let names: Vec<String> = c.read_dir(d).await.unwrap().into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["d", "top.txt"]);
    let (f, _) = c.walk(root, &["d"]).await.unwrap();
    c.create(f, "new", 0o600, ORDWR).await.unwrap();
    c.write(f, 0, "written").await.unwrap();
    c.clunk(f).await.unwrap();
    assert_eq!(std::fs::read(t.root().join("d/new")).unwrap(), b"written");
    let (f, _) = c.walk(root, &[]).await.unwrap();
    c.create(f, "sub", 0o755 | conflux_9p::Stat::DMDIR, OREAD).await.unwrap();
    assert!(t.root().join("sub").is_dir());
    c.remove(f).await.unwrap();
    let (f, _) = c.walk(root, &["d", "new"]).await.unwrap();
    c.remove(f).await.unwrap();
    assert!(!t.root().join("d/new").exists() && !t.root().join("sub").exists());
    // wstat: rename, then the same fid still opens and truncates the file.
    let (f, _) = c.walk(root, &["top.txt"]).await.unwrap();
    c.wstat(f, conflux_9p::Stat { name: "renamed.txt".into(), ..conflux_9p::Stat::dont_touch() }).await.unwrap();
    c.wstat(f, conflux_9p::Stat { length: 1, ..conflux_9p::Stat::dont_touch() }).await.unwrap();
    assert_eq!(c.stat(f).await.unwrap().name, "renamed.txt");
    c.open(f, OREAD).await.unwrap();
    assert_eq!(c.read_all(f).await.unwrap(), b"t");
    c.clunk(f).await.unwrap();
    std::fs::rename(t.root().join("renamed.txt"), t.root().join("top.txt")).unwrap();
    std::fs::write(t.root().join("top.txt"), "top").unwrap();
    // ".." inside the root is fine.
    assert_eq!(read_file(&c, root, &["d", "..", "top.txt"]).await.unwrap(), b"top");
}

#[tokio::test]
async fn read_only_refuses_changes() {
    let t = Tree::new();
    let (c, root) = connect(&t.root(), true).await;
    assert_eq!(read_file(&c, root, &["top.txt"]).await.unwrap(), b"top");
    let (f, _) = c.walk(root, &["top.txt"]).await.unwrap();
    assert!(matches!(c.open(f, ORDWR).await, Err(ClientError::Server { errno: Some(30), .. })));
    let (d, _) = c.walk(root, &[]).await.unwrap();
    assert!(matches!(c.create(d, "x", 0o644, ORDWR).await, Err(ClientError::Server { errno: Some(30), .. })));
    assert!(!t.root().join("x").exists());
}

#[tokio::test]
async fn dotdot_and_slashes_are_refused() {
    let t = Tree::new();
    let (c, root) = connect(&t.root(), false).await;
    assert!(matches!(c.walk(root, &[".."]).await, Err(ClientError::Server { .. })));
    assert!(matches!(c.walk(root, &["d", "..", ".."]).await, Err(ClientError::PartialWalk(2))));
    let r = c.rpc(Msg::Twalk { fid: root, newfid: 900, wnames: vec!["../outside".into()] }).await;
    assert!(matches!(r, Err(ClientError::Server { .. })), "{r:?}");
    let r = c.rpc(Msg::Twalk { fid: root, newfid: 900, wnames: vec!["/etc".into()] }).await;
    assert!(matches!(r, Err(ClientError::Server { .. })), "{r:?}");
}

#[tokio::test]
async fn symlinks_pointing_out_are_not_followed() {
    let t = Tree::new();
    symlink(t.outside(), t.root().join("abs")).unwrap();
    symlink("../outside", t.root().join("rel")).unwrap();
    symlink(t.outside().join("secret"), t.root().join("abs-file")).unwrap();
    symlink("/etc/passwd", t.root().join("passwd")).unwrap();
    let (c, root) = connect(&t.root(), false).await;
    for link in ["abs", "rel"] {
        // Through the link: the walk stops at it.
        assert!(matches!(c.walk(root, &[link, "secret"]).await, Err(ClientError::PartialWalk(1))), "{link}");
        // The link itself is a symlink node that does not open.
        let (f, qids) = c.walk(root, &[link]).await.unwrap();
        assert_eq!(qids[0].ty, Qid::SYMLINK);
        assert!(c.open(f, OREAD).await.is_err(), "{link} opened");
        let st = c.stat(f).await.unwrap();
        assert!(st.mode & conflux_9p::Stat::DMSYMLINK != 0);
    }
    for link in ["abs-file", "passwd"] {
        let r = read_file(&c, root, &[link]).await;
        assert!(r.is_err(), "{link} read through: {r:?}");
    }
}

#[tokio::test]
async fn directory_swapped_for_symlink_between_walk_and_open() {
    let t = Tree::new();
    let (c, root) = connect(&t.root(), false).await;
    let (dir_fid, _) = c.walk(root, &["d"]).await.unwrap();
    let (file_fid, _) = c.walk(root, &["d", "f.txt"]).await.unwrap();
    // Swap: d becomes a symlink to the outside directory (which has its own f.txt).
    std::fs::rename(t.root().join("d"), t.root().join("d.orig")).unwrap();
    symlink(t.outside(), t.root().join("d")).unwrap();
    // Opening the walked directory is refused: the name is now a symlink.
    assert!(c.open(dir_fid, OREAD).await.is_err());
    // The walked file still resolves beneath the directory walked through (now d.orig).
    c.open(file_fid, OREAD).await.unwrap();
    assert_eq!(c.read_all(file_fid).await.unwrap(), b"inside");
    // A fresh walk through the new d stops at the symlink.
    assert!(matches!(c.walk(root, &["d", "f.txt"]).await, Err(ClientError::PartialWalk(1))));
    // Swapping a file for another between walk and open is refused too.
    let (f, _) = c.walk(root, &["top.txt"]).await.unwrap();
    std::fs::rename(t.root().join("top.txt"), t.root().join("top.old")).unwrap();
    std::fs::write(t.root().join("top.txt"), "other").unwrap();
    assert!(c.open(f, OREAD).await.is_err());
}

//! An in-memory [`Filesystem`]: a tree of directories and files held in one map.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

use bytes::{Bytes, BytesMut};

use crate::fs::{FsError, OTRUNC, Walked, mode_writes};
use crate::wire::{Qid, Stat};

const ROOT: u64 = 1;

/// An in-memory file tree. Cloning a `MemFs` is not provided: share it in an `Arc`.
///
/// Files hold their contents as [`Bytes`], so reads hand out slices without
/// copying; a write after a read copies the file once if a slice is still alive.
#[derive(Debug)]
pub struct MemFs {
    tree: Mutex<Tree>,
}

#[derive(Debug)]
struct Tree {
    inodes: HashMap<u64, Inode>,
    next: u64,
}

#[derive(Debug)]
struct Inode {
    name: String,
    parent: u64,
    mode: u32,
    version: u32,
    mtime: u32,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Dir(BTreeMap<String, u64>),
    File(Bytes),
}

/// A fid's reference into a [`MemFs`]: the inode number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemNode(u64);

impl Inode {
    fn qid(&self, path: u64) -> Qid {
        let ty = if matches!(self.kind, Kind::Dir(_)) { Qid::DIR } else { Qid::FILE };
        Qid { ty, version: self.version, path }
    }

    fn stat(&self, path: u64) -> Stat {
        let length = match &self.kind {
            Kind::File(d) => d.len() as u64,
            Kind::Dir(_) => 0,
        };
        Stat {
            qid: self.qid(path),
            mode: self.mode,
            atime: self.mtime,
            mtime: self.mtime,
            length,
            name: self.name.clone(),
            uid: "conflux".into(),
            gid: "conflux".into(),
            muid: "conflux".into(),
            n_uid: 0,
            n_gid: 0,
            n_muid: 0,
            ..Stat::default()
        }
    }
}

impl Default for MemFs {
    fn default() -> Self {
        MemFs::new()
    }
}

impl MemFs {
    /// An empty tree (the root directory only).
    pub fn new() -> MemFs {
        let root = Inode {
            name: "/".into(),
            parent: ROOT,
            mode: Stat::DMDIR | 0o755,
            version: 0,
            mtime: 0,
            kind: Kind::Dir(BTreeMap::new()),
        };
        MemFs { tree: Mutex::new(Tree { inodes: HashMap::from([(ROOT, root)]), next: ROOT + 1 }) }
    }

    fn lock(&self) -> MutexGuard<'_, Tree> {
        self.tree.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a file at a `/`-separated path, creating missing directories, replacing
    /// an existing file. For setting up trees in tests and benches.
    pub fn add_file(&self, path: &str, data: impl Into<Bytes>) -> Result<(), FsError> {
        let mut tree = self.lock();
        let mut names: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let Some(leaf) = names.pop() else { return Err(FsError::invalid("empty path")) };
        let mut dir = ROOT;
        for name in names {
            dir = match tree.child(dir, name)? {
                Some(c) => c,
                None => tree.insert(dir, name, Stat::DMDIR | 0o755, Kind::Dir(BTreeMap::new()))?,
            };
        }
        let data = data.into();
        match tree.child(dir, leaf)? {
            Some(c) => match &mut tree.inode(c)?.kind {
                Kind::File(d) => *d = data,
                Kind::Dir(_) => return Err(FsError::is_dir()),
            },
            None => {
                tree.insert(dir, leaf, 0o644, Kind::File(data))?;
            }
        }
        Ok(())
    }
}

impl Tree {
    fn inode(&mut self, ino: u64) -> Result<&mut Inode, FsError> {
        self.inodes.get_mut(&ino).ok_or_else(FsError::not_found)
    }

    fn child(&mut self, dir: u64, name: &str) -> Result<Option<u64>, FsError> {
        match &self.inode(dir)?.kind {
            Kind::Dir(entries) => Ok(entries.get(name).copied()),
            Kind::File(_) => Err(FsError::not_dir()),
        }
    }

    fn insert(&mut self, dir: u64, name: &str, mode: u32, kind: Kind) -> Result<u64, FsError> {
        if name.is_empty() || name == "." || name == ".." || name.contains('/') {
            return Err(FsError::invalid("invalid file name"));
        }
        let ino = self.next;
        let Kind::Dir(entries) = &mut self.inode(dir)?.kind else { return Err(FsError::not_dir()) };
        if entries.contains_key(name) {
            return Err(FsError::exists());
        }
        entries.insert(name.to_owned(), ino);
        self.next += 1;
        self.inodes.insert(ino, Inode { name: name.into(), parent: dir, mode, version: 0, mtime: 0, kind });
        Ok(ino)
    }
}

impl crate::Filesystem for MemFs {
    type Node = MemNode;

    async fn attach(&self, _uname: &str, _aname: &str) -> Result<(MemNode, Qid), FsError> {
        let mut tree = self.lock();
        Ok((MemNode(ROOT), tree.inode(ROOT)?.qid(ROOT)))
    }

    async fn walk(&self, node: &MemNode, names: &[String]) -> Result<Walked<MemNode>, FsError> {
        let mut tree = self.lock();
        let mut at = node.0;
        tree.inode(at)?;
        let mut qids = Vec::with_capacity(names.len());
        for name in names {
            let next = match name.as_str() {
                ".." => Ok(Some(tree.inode(at)?.parent)),
                _ => tree.child(at, name),
            };
            match next {
                Ok(Some(n)) => {
                    at = n;
                    qids.push(tree.inode(n)?.qid(n));
                }
                Ok(None) | Err(_) if !qids.is_empty() => return Ok(Walked { qids, node: None }),
                Ok(None) => return Err(FsError::not_found()),
                Err(e) => return Err(e),
            }
        }
        Ok(Walked { qids, node: Some(MemNode(at)) })
    }

    async fn open(&self, node: &MemNode, mode: u8) -> Result<(MemNode, Qid, u32), FsError> {
        let mut tree = self.lock();
        let inode = tree.inode(node.0)?;
        match &mut inode.kind {
            Kind::Dir(_) if mode_writes(mode) => return Err(FsError::is_dir()),
            Kind::File(d) if mode & OTRUNC != 0 => *d = Bytes::new(),
            _ => {}
        }
        Ok((*node, inode.qid(node.0), 0))
    }

    async fn create(
        &self,
        dir: &MemNode,
        name: &str,
        perm: u32,
        _mode: u8,
        _ext: &str,
    ) -> Result<(MemNode, Qid, u32), FsError> {
        let mut tree = self.lock();
        if perm & Stat::DMSYMLINK != 0 {
            return Err(FsError::new("symlinks are not supported", 95));
        }
        let kind = if perm & Stat::DMDIR != 0 { Kind::Dir(BTreeMap::new()) } else { Kind::File(Bytes::new()) };
        let mode = perm & (Stat::DMDIR | 0o777);
        let ino = tree.insert(dir.0, name, mode, kind)?;
        Ok((MemNode(ino), tree.inode(ino)?.qid(ino), 0))
    }

    async fn read(&self, node: &MemNode, offset: u64, count: u32) -> Result<Bytes, FsError> {
        let mut tree = self.lock();
        match &tree.inode(node.0)?.kind {
            Kind::File(d) => {
                let start = offset.min(d.len() as u64) as usize;
                let end = start.saturating_add(count as usize).min(d.len());
                Ok(d.slice(start..end))
            }
            Kind::Dir(_) => Err(FsError::is_dir()),
        }
    }

    async fn readdir(&self, node: &MemNode) -> Result<Vec<Stat>, FsError> {
        let mut tree = self.lock();
        let Kind::Dir(entries) = &tree.inode(node.0)?.kind else { return Err(FsError::not_dir()) };
        let inos: Vec<u64> = entries.values().copied().collect();
        Ok(inos.into_iter().filter_map(|i| tree.inodes.get(&i).map(|n| n.stat(i))).collect())
    }

    async fn write(&self, node: &MemNode, offset: u64, data: Bytes) -> Result<u32, FsError> {
        let mut tree = self.lock();
        let inode = tree.inode(node.0)?;
        let Kind::File(d) = &mut inode.kind else { return Err(FsError::is_dir()) };
        let offset = usize::try_from(offset).map_err(|_| FsError::invalid("offset too large"))?;
        let end = offset.checked_add(data.len()).ok_or_else(|| FsError::invalid("offset too large"))?;
        let mut buf = std::mem::take(d).try_into_mut().unwrap_or_else(|b| BytesMut::from(&b[..]));
        if buf.len() < end {
            buf.resize(end, 0);
        }
        buf[offset..end].copy_from_slice(&data);
        *d = buf.freeze();
        inode.version = inode.version.wrapping_add(1);
        Ok(data.len() as u32)
    }

    async fn remove(&self, node: &MemNode) -> Result<(), FsError> {
        let mut tree = self.lock();
        if node.0 == ROOT {
            return Err(FsError::denied());
        }
        let inode = tree.inode(node.0)?;
        if matches!(&inode.kind, Kind::Dir(e) if !e.is_empty()) {
            return Err(FsError::not_empty());
        }
        let (parent, name) = (inode.parent, inode.name.clone());
        tree.inodes.remove(&node.0);
        if let Ok(Inode { kind: Kind::Dir(entries), .. }) = tree.inode(parent) {
            entries.remove(&name);
        }
        Ok(())
    }

    async fn stat(&self, node: &MemNode) -> Result<Stat, FsError> {
        let mut tree = self.lock();
        Ok(tree.inode(node.0)?.stat(node.0))
    }

    async fn wstat(&self, node: &MemNode, stat: &Stat) -> Result<(), FsError> {
        let mut tree = self.lock();
        let inode = tree.inode(node.0)?;
        let (parent, old) = (inode.parent, inode.name.clone());
        if stat.mode != !0 {
            inode.mode = (inode.mode & Stat::DMDIR) | (stat.mode & 0o777);
        }
        if stat.mtime != !0 {
            inode.mtime = stat.mtime;
        }
        if stat.length != !0 {
            let Kind::File(d) = &mut inode.kind else { return Err(FsError::is_dir()) };
            let len = usize::try_from(stat.length).map_err(|_| FsError::invalid("length too large"))?;
            let mut buf = BytesMut::from(&d[..]);
            buf.resize(len, 0);
            *d = buf.freeze();
        }
        if !stat.name.is_empty() && stat.name != old {
            if stat.name.contains('/') || stat.name == "." || stat.name == ".." {
                return Err(FsError::invalid("invalid file name"));
            }
            let Kind::Dir(entries) = &mut tree.inode(parent)?.kind else { return Err(FsError::not_dir()) };
            if entries.contains_key(&stat.name) {
                return Err(FsError::exists());
            }
            entries.remove(&old);
            entries.insert(stat.name.clone(), node.0);
            tree.inode(node.0)?.name = stat.name.clone();
        }
        Ok(())
    }
}

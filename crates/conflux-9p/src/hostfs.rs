//! A host directory as a [`Filesystem`], confined to its root (Linux).
//!
//! Race-free confinement: every fid holds an `O_PATH` descriptor of what it
//! walked to, plus its parent's. Each step of a walk and every open resolves
//! exactly one name beneath a held directory descriptor with `openat2`
//! (`RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS`, and
//! `O_NOFOLLOW`), so no symlink is ever followed and `..` is handled by the
//! server's own parent chain (refused at the root). An open re-resolves the
//! name beneath the parent descriptor and checks it is still the inode walked
//! to: a directory swapped for a symlink between Twalk and Topen is refused.
//! A symlink is a node of its own (stat shows DMSYMLINK and, under 9P2000.u,
//! its target), never a way through.
//!
//! File I/O is done inline in the request task (plain `pread`/`pwrite`).

// The field types of `struct stat` differ between architectures.
#![allow(clippy::unnecessary_cast)]

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use crate::fs::{FsError, OTRUNC, Walked, mode_reads, mode_writes};
use crate::wire::{Qid, Stat};

/// A host directory served over 9P, optionally read-only.
#[derive(Debug)]
pub struct HostFs {
    root: Arc<Entry>,
    read_only: bool,
}

/// One walked-to file: its `O_PATH` descriptor, its parent and its name there
/// (updated by a Twstat rename through this server).
#[derive(Debug)]
struct Entry {
    fd: OwnedFd,
    parent: Option<Arc<Entry>>,
    name: Mutex<String>,
}

impl Entry {
    fn new(fd: OwnedFd, parent: Option<Arc<Entry>>, name: &str) -> Arc<Entry> {
        Arc::new(Entry { fd, parent, name: Mutex::new(name.to_owned()) })
    }

    fn name(&self) -> String {
        self.name.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// A fid's reference into a [`HostFs`]: the walked-to file and, once opened, the open file.
#[derive(Debug)]
pub struct HostNode {
    at: Arc<Entry>,
    file: Option<File>,
}

fn err(e: Errno) -> FsError {
    FsError::from(std::io::Error::from(e))
}

/// Opens one name beneath `dir`, never following a symlink.
fn resolve(dir: &OwnedFd, name: &str, flags: OFlags, mode: Mode) -> Result<OwnedFd, Errno> {
    let flags = flags | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let how = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
    match rustix::fs::openat2(dir, name, flags, mode, how) {
        Err(Errno::NOSYS) => rustix::fs::openat(dir, name, flags, mode),
        r => r,
    }
}

fn qid_of(st: &rustix::fs::Stat) -> Qid {
    let ty = match FileType::from_raw_mode(st.st_mode as _) {
        FileType::Directory => Qid::DIR,
        FileType::Symlink => Qid::SYMLINK,
        _ => Qid::FILE,
    };
    Qid { ty, version: (st.st_mtime as u32) ^ (st.st_size as u32), path: st.st_ino as u64 }
}

fn stat_of(st: &rustix::fs::Stat, name: &str, link: Option<String>) -> Stat {
    let qid = qid_of(st);
    let mut mode = st.st_mode as u32 & 0o777;
    if qid.is_dir() {
        mode |= Stat::DMDIR;
    }
    if qid.ty == Qid::SYMLINK {
        mode |= Stat::DMSYMLINK;
    }
    let (uid, gid) = (st.st_uid as u32, st.st_gid as u32);
    Stat {
        qid,
        mode,
        atime: st.st_atime as u32,
        mtime: st.st_mtime as u32,
        length: if qid.is_dir() { 0 } else { st.st_size as u64 },
        name: name.into(),
        uid: uid.to_string(),
        gid: gid.to_string(),
        muid: uid.to_string(),
        extension: link.unwrap_or_default(),
        n_uid: uid,
        n_gid: gid,
        n_muid: uid,
        ..Stat::default()
    }
}

fn read_link(dir: impl AsFd, name: &str) -> Option<String> {
    rustix::fs::readlinkat(dir, name, Vec::new()).ok().map(|c| c.to_string_lossy().into_owned())
}

fn same_inode(a: &impl AsFd, b: &impl AsFd) -> Result<bool, FsError> {
    let (x, y) = (rustix::fs::fstat(a).map_err(err)?, rustix::fs::fstat(b).map_err(err)?);
    Ok(x.st_ino == y.st_ino && x.st_dev == y.st_dev)
}

impl HostFs {
    /// Serves the directory `dir` (resolved once, now; it may itself be a symlink).
    pub fn new(dir: impl AsRef<Path>) -> std::io::Result<HostFs> {
        let fd = rustix::fs::open(dir.as_ref(), OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?;
        Ok(HostFs { root: Entry::new(fd, None, "/"), read_only: false })
    }

    /// Refuses every change (writes, creates, removes, wstat) with EROFS.
    pub fn read_only(mut self, read_only: bool) -> HostFs {
        self.read_only = read_only;
        self
    }

    fn writable(&self) -> Result<(), FsError> {
        if self.read_only { Err(FsError::read_only()) } else { Ok(()) }
    }

    /// Re-opens `at` with `flags`, checking it is still the inode walked to.
    fn reopen(&self, at: &Entry, flags: OFlags) -> Result<OwnedFd, FsError> {
        let fd = match &at.parent {
            None => resolve(&at.fd, ".", flags, Mode::empty()),
            Some(p) => resolve(&p.fd, &at.name(), flags, Mode::empty()),
        }
        .map_err(err)?;
        if !same_inode(&fd, &at.fd)? {
            return Err(FsError::new("file replaced since it was walked to", 116));
        }
        Ok(fd)
    }
}

impl crate::Filesystem for HostFs {
    type Node = HostNode;

    async fn attach(&self, _uname: &str, _aname: &str) -> Result<(HostNode, Qid), FsError> {
        let qid = qid_of(&rustix::fs::fstat(&self.root.fd).map_err(err)?);
        Ok((HostNode { at: self.root.clone(), file: None }, qid))
    }

    async fn walk(&self, node: &HostNode, names: &[String]) -> Result<Walked<HostNode>, FsError> {
        let mut at = node.at.clone();
        let mut qids = Vec::with_capacity(names.len());
        for name in names {
            let next = if name == ".." {
                at.parent.clone().ok_or_else(|| FsError::new("cannot walk above the root", 13))
            } else {
                resolve(&at.fd, name, OFlags::PATH, Mode::empty())
                    .map_err(err)
                    .map(|fd| Entry::new(fd, Some(at.clone()), name))
            };
            let next = next.and_then(|e| Ok((qid_of(&rustix::fs::fstat(&e.fd).map_err(err)?), e)));
            match next {
                Ok((qid, e)) => {
                    // A symlink is a leaf: nothing walks through it.
                    if qid.ty == Qid::SYMLINK && qids.len() + 1 < names.len() {
                        qids.push(qid);
                        return Ok(Walked { qids, node: None });
                    }
                    qids.push(qid);
                    at = e;
                }
                Err(_) if !qids.is_empty() => return Ok(Walked { qids, node: None }),
                Err(e) => return Err(e),
            }
        }
        Ok(Walked { qids, node: Some(HostNode { at, file: None }) })
    }

    async fn open(&self, node: &HostNode, mode: u8) -> Result<(HostNode, Qid, u32), FsError> {
        let st = rustix::fs::fstat(&node.at.fd).map_err(err)?;
        let qid = qid_of(&st);
        if mode_writes(mode) {
            self.writable()?;
        }
        let flags = if qid.is_dir() {
            OFlags::RDONLY | OFlags::DIRECTORY
        } else {
            let access = match (mode_reads(mode), mode_writes(mode)) {
                (true, true) => OFlags::RDWR,
                (false, true) => OFlags::WRONLY,
                _ => OFlags::RDONLY,
            };
            if mode & OTRUNC != 0 { access | OFlags::TRUNC } else { access }
        };
        let fd = self.reopen(&node.at, flags)?;
        Ok((HostNode { at: node.at.clone(), file: Some(File::from(fd)) }, qid, 0))
    }

    async fn create(
        &self,
        dir: &HostNode,
        name: &str,
        perm: u32,
        mode: u8,
        ext: &str,
    ) -> Result<(HostNode, Qid, u32), FsError> {
        self.writable()?;
        let dfd = &dir.at.fd;
        let unix_mode = Mode::from_raw_mode(perm & 0o777);
        let file = if perm & Stat::DMDIR != 0 {
            rustix::fs::mkdirat(dfd, name, unix_mode).map_err(err)?;
            Some(resolve(dfd, name, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).map_err(err)?)
        } else if perm & Stat::DMSYMLINK != 0 {
            // The target is stored, never followed by this server.
            rustix::fs::symlinkat(ext, dfd, name).map_err(err)?;
            None
        } else {
            let access = if mode_reads(mode) && mode_writes(mode) { OFlags::RDWR } else { OFlags::WRONLY };
            let flags = access | OFlags::CREATE | OFlags::EXCL;
            Some(resolve(dfd, name, flags, unix_mode).map_err(err)?)
        };
        let fd = resolve(dfd, name, OFlags::PATH, Mode::empty()).map_err(err)?;
        if let Some(f) = &file
            && !same_inode(f, &fd)?
        {
            return Err(FsError::new("file replaced while being created", 116));
        }
        let qid = qid_of(&rustix::fs::fstat(&fd).map_err(err)?);
        let at = Entry::new(fd, Some(dir.at.clone()), name);
        Ok((HostNode { at, file: file.map(File::from) }, qid, 0))
    }

    async fn read(&self, node: &HostNode, offset: u64, count: u32) -> Result<Bytes, FsError> {
        let file = node.file.as_ref().ok_or_else(|| FsError::new("not open", 9))?;
        let mut buf = vec![0; count as usize];
        let mut got = 0;
        while got < buf.len() {
            match file.read_at(&mut buf[got..], offset + got as u64)? {
                0 => break,
                n => got += n,
            }
        }
        buf.truncate(got);
        Ok(Bytes::from(buf))
    }

    async fn readdir(&self, node: &HostNode) -> Result<Vec<Stat>, FsError> {
        let file = node.file.as_ref().ok_or_else(|| FsError::new("not open", 9))?;
        let mut out = Vec::new();
        for entry in rustix::fs::Dir::read_from(file).map_err(err)? {
            let entry = entry.map_err(err)?;
            let Ok(name) = entry.file_name().to_str() else { continue };
            if name == "." || name == ".." {
                continue;
            }
            let Ok(st) = rustix::fs::statat(file, name, AtFlags::SYMLINK_NOFOLLOW) else { continue };
            let link = (FileType::from_raw_mode(st.st_mode as _) == FileType::Symlink).then(|| read_link(file, name));
            out.push(stat_of(&st, name, link.flatten()));
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn write(&self, node: &HostNode, offset: u64, data: Bytes) -> Result<u32, FsError> {
        self.writable()?;
        let file = node.file.as_ref().ok_or_else(|| FsError::new("not open", 9))?;
        file.write_all_at(&data, offset)?;
        Ok(data.len() as u32)
    }

    async fn remove(&self, node: &HostNode) -> Result<(), FsError> {
        self.writable()?;
        let Some(parent) = &node.at.parent else { return Err(FsError::new("cannot remove the root", 13)) };
        let name = node.at.name();
        let now = rustix::fs::statat(&parent.fd, name.as_str(), AtFlags::SYMLINK_NOFOLLOW).map_err(err)?;
        let was = rustix::fs::fstat(&node.at.fd).map_err(err)?;
        if (now.st_ino, now.st_dev) != (was.st_ino, was.st_dev) {
            return Err(FsError::new("file replaced since it was walked to", 116));
        }
        let flags = if qid_of(&was).is_dir() { AtFlags::REMOVEDIR } else { AtFlags::empty() };
        rustix::fs::unlinkat(&parent.fd, name.as_str(), flags).map_err(err)
    }

    async fn stat(&self, node: &HostNode) -> Result<Stat, FsError> {
        let st = rustix::fs::fstat(&node.at.fd).map_err(err)?;
        let link = (qid_of(&st).ty == Qid::SYMLINK).then(|| read_link(&node.at.fd, "")).flatten();
        Ok(stat_of(&st, &node.at.name(), link))
    }

    async fn wstat(&self, node: &HostNode, stat: &Stat) -> Result<(), FsError> {
        self.writable()?;
        let qid = qid_of(&rustix::fs::fstat(&node.at.fd).map_err(err)?);
        if stat.length != !0 {
            if qid.is_dir() {
                return Err(FsError::is_dir());
            }
            let fd = self.reopen(&node.at, OFlags::WRONLY)?;
            rustix::fs::ftruncate(&fd, stat.length).map_err(err)?;
        }
        if stat.mode != !0 && qid.ty != Qid::SYMLINK {
            let fd = self.reopen(&node.at, OFlags::RDONLY)?;
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(stat.mode & 0o777)).map_err(err)?;
        }
        let old = node.at.name();
        if !stat.name.is_empty() && stat.name != old {
            if stat.name.contains('/') || stat.name == "." || stat.name == ".." {
                return Err(FsError::invalid("invalid file name"));
            }
            let Some(parent) = &node.at.parent else { return Err(FsError::denied()) };
            rustix::fs::renameat(&parent.fd, old.as_str(), &parent.fd, stat.name.as_str()).map_err(err)?;
            *node.at.name.lock().unwrap_or_else(|p| p.into_inner()) = stat.name.clone();
        }
        Ok(())
    }
}

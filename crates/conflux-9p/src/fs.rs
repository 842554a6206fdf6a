//! The [`Filesystem`] trait a [`Server`](crate::Server) serves, and its error.

use std::future::Future;

use bytes::Bytes;

use crate::wire::{Qid, Stat};

/// Open mode: read.
pub const OREAD: u8 = 0;
/// Open mode: write.
pub const OWRITE: u8 = 1;
/// Open mode: read and write.
pub const ORDWR: u8 = 2;
/// Open mode: execute (read access).
pub const OEXEC: u8 = 3;
/// Open flag: truncate.
pub const OTRUNC: u8 = 0x10;
/// Open flag: remove on clunk.
pub const ORCLOSE: u8 = 0x40;

/// Whether an open mode allows writing.
pub fn mode_writes(mode: u8) -> bool {
    matches!(mode & 3, OWRITE | ORDWR) || mode & OTRUNC != 0
}

/// Whether an open mode allows reading.
pub fn mode_reads(mode: u8) -> bool {
    matches!(mode & 3, OREAD | ORDWR | OEXEC)
}

/// A file system error, sent to the client as Rerror (text, and errno under 9P2000.u).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{ename} (errno {errno})")]
pub struct FsError {
    ename: String,
    errno: u32,
}

impl FsError {
    /// An error with this text and Unix errno.
    pub fn new(ename: impl Into<String>, errno: u32) -> FsError {
        FsError { ename: ename.into(), errno }
    }
    /// The text sent in Rerror.
    pub fn ename(&self) -> &str {
        &self.ename
    }
    /// The errno sent in a 9P2000.u Rerror.
    pub fn errno(&self) -> u32 {
        self.errno
    }
    /// ENOENT.
    pub fn not_found() -> FsError {
        FsError::new("file not found", 2)
    }
    /// EEXIST.
    pub fn exists() -> FsError {
        FsError::new("file already exists", 17)
    }
    /// ENOTDIR.
    pub fn not_dir() -> FsError {
        FsError::new("not a directory", 20)
    }
    /// EISDIR.
    pub fn is_dir() -> FsError {
        FsError::new("is a directory", 21)
    }
    /// EINVAL.
    pub fn invalid(what: &str) -> FsError {
        FsError::new(what, 22)
    }
    /// EACCES.
    pub fn denied() -> FsError {
        FsError::new("permission denied", 13)
    }
    /// EROFS.
    pub fn read_only() -> FsError {
        FsError::new("read-only file system", 30)
    }
    /// ENOTEMPTY.
    pub fn not_empty() -> FsError {
        FsError::new("directory not empty", 39)
    }
}

impl From<std::io::Error> for FsError {
    fn from(e: std::io::Error) -> FsError {
        let errno = e.raw_os_error().unwrap_or(5) as u32;
        let mut text = e.to_string();
        if let Some(i) = text.find(" (os error") {
            text.truncate(i);
        }
        FsError { ename: text, errno }
    }
}

/// What a [`Filesystem::walk`] reached: the qids of the names walked, and the
/// node of the last one when every name was walked.
#[derive(Debug)]
pub struct Walked<N> {
    /// One qid per name walked successfully (at least one unless no names were given).
    pub qids: Vec<Qid>,
    /// The node of the last name, `Some` only when all names were walked.
    pub node: Option<N>,
}

/// A tree of files served over 9P.
///
/// A `Node` is what one fid refers to. The server never shares a node between
/// fids: a walk of zero names returns a fresh node for the new fid, and
/// [`open`](Filesystem::open) and [`create`](Filesystem::create) return the
/// node that replaces the fid's. Directory reads are assembled by the server
/// from [`readdir`](Filesystem::readdir), so they always hold whole entries.
/// Every method may run concurrently with the others.
pub trait Filesystem: Send + Sync + 'static {
    /// What a fid refers to.
    type Node: Send + Sync + 'static;

    /// The root node for `uname` and `aname`, and its qid.
    fn attach(&self, uname: &str, aname: &str) -> impl Future<Output = Result<(Self::Node, Qid), FsError>> + Send;

    /// Walks `names` (at most 16, none of them `/`-containing) from `node`.
    /// An error is returned only when the first name fails; zero names clone `node`.
    fn walk(
        &self,
        node: &Self::Node,
        names: &[String],
    ) -> impl Future<Output = Result<Walked<Self::Node>, FsError>> + Send;

    /// Opens `node` with a 9P mode; returns the opened node, its qid and iounit (0: msize-based).
    fn open(&self, node: &Self::Node, mode: u8)
    -> impl Future<Output = Result<(Self::Node, Qid, u32), FsError>> + Send;

    /// Creates `name` in the directory `dir` (perm with DMDIR for a directory,
    /// DMSYMLINK and a target in `extension` for a symlink) and opens it.
    fn create(
        &self,
        dir: &Self::Node,
        name: &str,
        perm: u32,
        mode: u8,
        extension: &str,
    ) -> impl Future<Output = Result<(Self::Node, Qid, u32), FsError>> + Send;

    /// Reads up to `count` bytes of an opened file at `offset` (empty at the end).
    fn read(&self, node: &Self::Node, offset: u64, count: u32) -> impl Future<Output = Result<Bytes, FsError>> + Send;

    /// Every entry of an opened directory.
    fn readdir(&self, node: &Self::Node) -> impl Future<Output = Result<Vec<Stat>, FsError>> + Send;

    /// Writes `data` to an opened file at `offset`; returns the count written.
    fn write(&self, node: &Self::Node, offset: u64, data: Bytes) -> impl Future<Output = Result<u32, FsError>> + Send;

    /// Called when a fid is clunked, before its node is dropped (the default does nothing).
    fn clunk(&self, node: &Self::Node) -> impl Future<Output = ()> + Send {
        let _ = node;
        std::future::ready(())
    }

    /// Removes the file of `node` (the server clunks the fid whatever the outcome).
    fn remove(&self, node: &Self::Node) -> impl Future<Output = Result<(), FsError>> + Send;

    /// The metadata of `node`.
    fn stat(&self, node: &Self::Node) -> impl Future<Output = Result<Stat, FsError>> + Send;

    /// Changes metadata (all-ones numbers and empty strings mean "don't change").
    fn wstat(&self, node: &Self::Node, stat: &Stat) -> impl Future<Output = Result<(), FsError>> + Send;
}

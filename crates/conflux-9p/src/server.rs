//! The 9P server: one session per flow, requests handled concurrently, one writer.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::{Bytes, BytesMut};
use conflux_flow::{Flow, FlowError, FlowExt, WriteHalf};
use futures_util::FutureExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tracing::Instrument;

use crate::fs::{Filesystem, FsError, ORCLOSE, mode_reads, mode_writes};
use crate::wire::{Decoder, Dialect, Frame, IOHDRSZ, Msg, ParseError, Qid, RecvBuf, Stat};

/// The largest msize the server offers unless told otherwise.
pub const DEFAULT_MSIZE: u32 = 1024 * 1024 + IOHDRSZ;
/// How many requests one session holds (running, or answered and waiting for
/// the writer) before it stops reading from the flow.
pub const MAX_IN_FLIGHT: usize = 256;
/// The smallest msize a client may negotiate.
pub const MIN_MSIZE: u32 = 256;

/// Why a session ended other than by the client's Eof.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A malformed or oversized frame: the session is over and the flow closed.
    #[error("9P protocol error: {0}")]
    Protocol(#[from] ParseError),
    /// The client sent a reply (R) message: a protocol error too.
    #[error("9P protocol error: the client sent a reply message (type {0})")]
    UnexpectedReply(u8),
    /// The flow failed.
    #[error("flow error: {0}")]
    Flow(#[from] FlowError),
}

impl ServeError {
    /// Whether the client broke the protocol (as opposed to a transport failure).
    pub fn is_protocol(&self) -> bool {
        !matches!(self, ServeError::Flow(_))
    }
}

/// Serves one [`Filesystem`] to any number of flows.
///
/// Each [`serve`](Server::serve) call is one session: Tversion first (until
/// then requests get Rerror), then attach and the rest, each request in its own
/// task so a slow read never holds up a stat. Replies go out through a single
/// writer, so they never interleave. Tflush answers Rflush after the flushed
/// reply if that was already queued, otherwise instead of it (the reply is then
/// dropped). Tauth is answered with Rerror "authentication not required". The
/// server closes the flow only on a protocol error; at the client's Eof it
/// sends the replies still due, then shuts down its write side.
///
/// Each request runs inline until it first waits (most in-memory requests
/// finish there), then in its own task. At most [`MAX_IN_FLIGHT`] requests are
/// held at once, from arrival until their reply is written: past that the
/// server stops reading, so a client that never reads replies meets TCP-style
/// backpressure rather than a growing queue (and 256 requests that never
/// finish also keep a later Tflush unread until one does).
#[derive(Debug)]
pub struct Server<F> {
    fs: Arc<F>,
    msize: u32,
}

impl<F> Clone for Server<F> {
    fn clone(&self) -> Self {
        Server { fs: self.fs.clone(), msize: self.msize }
    }
}

/// A reply for the writer, with the permit its request held (released once written).
enum Out {
    Frame([Bytes; 2], Option<OwnedSemaphorePermit>),
    Close,
}

impl<F: Filesystem> Server<F> {
    /// A server for `fs` offering [`DEFAULT_MSIZE`].
    pub fn new(fs: F) -> Server<F> {
        Server::from_arc(Arc::new(fs))
    }

    /// A server for a shared `fs`.
    pub fn from_arc(fs: Arc<F>) -> Server<F> {
        Server { fs, msize: DEFAULT_MSIZE }
    }

    /// Offers at most `msize` (clamped to at least [`MIN_MSIZE`]).
    pub fn with_msize(mut self, msize: u32) -> Server<F> {
        self.msize = msize.max(MIN_MSIZE);
        self
    }

    /// The file system served.
    pub fn fs(&self) -> &Arc<F> {
        &self.fs
    }

    /// Runs one session over `flow` until the client's Eof (`Ok`) or an error.
    pub async fn serve<T: Flow>(&self, flow: T) -> Result<(), ServeError> {
        let span = tracing::debug_span!("9p-session");
        self.serve_inner(flow).instrument(span).await
    }

    async fn serve_inner<T: Flow>(&self, flow: T) -> Result<(), ServeError> {
        let (mut rd, wr) = flow.split();
        let (tx, rx) = mpsc::unbounded_channel();
        let writer = tokio::spawn(write_loop(wr, rx));
        let mut dec = Decoder::new(self.msize, Dialect::P2000);
        let mut buf = RecvBuf::new();
        let mut sess: Option<Arc<Session<F>>> = None;
        let permits = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
        let result = loop {
            let frame = match dec.decode_buf(&mut buf) {
                Ok(Some(f)) => f,
                Ok(None) => match rd.read().await {
                    Ok(Some(b)) => {
                        buf.push(b);
                        continue;
                    }
                    Ok(None) => break Ok(()),
                    Err(e) => break Err(ServeError::Flow(e)),
                },
                Err(e) => break Err(ServeError::Protocol(e)),
            };
            let Frame { tag, msg } = frame;
            if !msg.is_request() {
                break Err(ServeError::UnexpectedReply(msg.type_byte()));
            }
            tracing::trace!(tag, ty = msg.type_byte(), "request");
            let Ok(permit) = permits.clone().acquire_owned().await else { unreachable!("never closed") };
            let permit = Some(permit);
            match msg {
                Msg::Tversion { msize, version } => {
                    if let Some(old) = sess.take() {
                        old.kill();
                    }
                    let msize = msize.min(self.msize);
                    let (reply, dialect) = if msize < MIN_MSIZE {
                        (Msg::error("msize too small", 22), None)
                    } else if version == "9P2000.u" {
                        (Msg::Rversion { msize, version }, Some(Dialect::P2000U))
                    } else if version.starts_with("9P2000") {
                        (Msg::Rversion { msize, version: "9P2000".into() }, Some(Dialect::P2000))
                    } else {
                        (Msg::Rversion { msize, version: "unknown".into() }, None)
                    };
                    let emit_as = dialect.unwrap_or(Dialect::P2000);
                    let _ = tx.send(Out::Frame(Frame { tag, msg: reply }.emit_parts(emit_as), permit));
                    if let Some(d) = dialect {
                        dec.set_msize(msize);
                        dec.set_dialect(d);
                        sess = Some(Arc::new(Session::new(self.fs.clone(), d, msize, tx.clone())));
                    }
                }
                msg => {
                    let Some(s) = &sess else {
                        let reply = Msg::error("Tversion must come first", 22);
                        let _ = tx.send(Out::Frame(Frame { tag, msg: reply }.emit_parts(Dialect::P2000), permit));
                        continue;
                    };
                    if let Msg::Tflush { oldtag } = msg {
                        s.flush(tag, oldtag, permit);
                        continue;
                    }
                    if !s.begin(tag) {
                        s.send(tag, Msg::error("duplicate tag", 22), permit);
                        continue;
                    }
                    // Run the request until it first waits: most finish there
                    // (no task needed); the rest continue in their own task.
                    let s = s.clone();
                    let mut request = Box::pin(async move {
                        let reply = s.handle(msg).await;
                        s.finish(tag, reply, permit);
                    });
                    if request.as_mut().now_or_never().is_none() {
                        tokio::spawn(request.in_current_span());
                    }
                }
            }
        };
        if let Some(s) = sess.take()
            && result.is_err()
        {
            s.kill();
        }
        if let Err(e) = &result {
            tracing::debug!(error = %e, "session ends");
            let _ = tx.send(Out::Close);
        }
        drop(tx);
        let _ = writer.await;
        result
    }
}

async fn write_loop<T: Flow>(mut wr: WriteHalf<T>, mut rx: mpsc::UnboundedReceiver<Out>) -> Result<(), FlowError> {
    let mut bufs = Vec::new();
    let mut permits = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        let mut close = false;
        while let Some(out) = next.take() {
            match out {
                Out::Frame(parts, permit) => {
                    bufs.extend(parts.into_iter().filter(|b| !b.is_empty()));
                    permits.extend(permit);
                }
                Out::Close => {
                    close = true;
                    break;
                }
            }
            if bufs.len() < 128 {
                next = rx.try_recv().ok();
            }
        }
        if !bufs.is_empty() {
            wr.writev(std::mem::take(&mut bufs)).await?;
        }
        permits.clear();
        if close {
            return wr.close().await;
        }
    }
    Ok(())
}

/// What one fid refers to.
struct Fid<N> {
    node: N,
    qid: Qid,
    /// The open mode once opened.
    open: Option<u8>,
    dir: Mutex<Option<DirCache>>,
}

impl<N> Fid<N> {
    fn new(node: N, qid: Qid, open: Option<u8>) -> Arc<Fid<N>> {
        Arc::new(Fid { node, qid, open, dir: Mutex::new(None) })
    }
}

/// The packed entries of an opened directory, with the offset of each.
struct DirCache {
    data: Bytes,
    bounds: Vec<usize>,
}

struct Tags {
    live: bool,
    in_flight: HashSet<u16>,
}

/// The state between one Tversion and the next (or the end).
struct Session<F: Filesystem> {
    fs: Arc<F>,
    dialect: Dialect,
    msize: u32,
    fids: Mutex<HashMap<u32, Arc<Fid<F::Node>>>>,
    tags: Mutex<Tags>,
    tx: mpsc::UnboundedSender<Out>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn unknown_fid() -> FsError {
    FsError::new("unknown fid", 9)
}

impl<F: Filesystem> Session<F> {
    fn new(fs: Arc<F>, dialect: Dialect, msize: u32, tx: mpsc::UnboundedSender<Out>) -> Session<F> {
        let tags = Mutex::new(Tags { live: true, in_flight: HashSet::new() });
        Session { fs, dialect, msize, fids: Mutex::new(HashMap::new()), tags, tx }
    }

    fn send(&self, tag: u16, msg: Msg, permit: Option<OwnedSemaphorePermit>) {
        let _ = self.tx.send(Out::Frame(Frame { tag, msg }.emit_parts(self.dialect), permit));
    }

    /// Ends the session: no more replies, every fid forgotten.
    fn kill(&self) {
        let mut tags = lock(&self.tags);
        tags.live = false;
        tags.in_flight.clear();
        drop(tags);
        lock(&self.fids).clear();
    }

    fn begin(&self, tag: u16) -> bool {
        let mut tags = lock(&self.tags);
        tags.live && tags.in_flight.insert(tag)
    }

    fn finish(&self, tag: u16, reply: Msg, permit: Option<OwnedSemaphorePermit>) {
        let mut tags = lock(&self.tags);
        if tags.live && tags.in_flight.remove(&tag) {
            self.send(tag, reply, permit);
        }
    }

    fn flush(&self, tag: u16, oldtag: u16, permit: Option<OwnedSemaphorePermit>) {
        let mut tags = lock(&self.tags);
        tags.in_flight.remove(&oldtag);
        if tags.live {
            self.send(tag, Msg::Rflush, permit);
        }
    }

    fn fid(&self, fid: u32) -> Result<Arc<Fid<F::Node>>, FsError> {
        lock(&self.fids).get(&fid).cloned().ok_or_else(unknown_fid)
    }

    fn iounit(&self, iounit: u32) -> u32 {
        if iounit == 0 { self.msize - IOHDRSZ } else { iounit.min(self.msize - IOHDRSZ) }
    }

    async fn handle(&self, msg: Msg) -> Msg {
        self.try_handle(msg).await.unwrap_or_else(|e| Msg::error(e.ename(), e.errno()))
    }

    async fn try_handle(&self, msg: Msg) -> Result<Msg, FsError> {
        Ok(match msg {
            Msg::Tauth { .. } => return Err(FsError::new("authentication not required", 22)),
            Msg::Tattach { fid, uname, aname, .. } => {
                if lock(&self.fids).contains_key(&fid) {
                    return Err(FsError::new("fid already in use", 9));
                }
                let (node, qid) = self.fs.attach(&uname, &aname).await?;
                lock(&self.fids).insert(fid, Fid::new(node, qid, None));
                Msg::Rattach { qid }
            }
            Msg::Twalk { fid, newfid, wnames } => {
                let f = self.fid(fid)?;
                if f.open.is_some() {
                    return Err(FsError::new("cannot walk an open fid", 22));
                }
                if newfid != fid && lock(&self.fids).contains_key(&newfid) {
                    return Err(FsError::new("fid already in use", 9));
                }
                if wnames.iter().any(|n| n.is_empty() || n.contains('/') || n == ".") {
                    return Err(FsError::invalid("invalid file name"));
                }
                let walked = self.fs.walk(&f.node, &wnames).await?;
                if let Some(node) = walked.node {
                    let qid = walked.qids.last().copied().unwrap_or(f.qid);
                    lock(&self.fids).insert(newfid, Fid::new(node, qid, None));
                }
                Msg::Rwalk { wqids: walked.qids }
            }
            Msg::Topen { fid, mode } => {
                let f = self.fid(fid)?;
                if f.open.is_some() {
                    return Err(FsError::new("fid already open", 22));
                }
                if f.qid.is_dir() && mode_writes(mode) {
                    return Err(FsError::is_dir());
                }
                let (node, qid, iounit) = self.fs.open(&f.node, mode).await?;
                lock(&self.fids).insert(fid, Fid::new(node, qid, Some(mode)));
                Msg::Ropen { qid, iounit: self.iounit(iounit) }
            }
            Msg::Tcreate { fid, name, perm, mode, extension } => {
                let f = self.fid(fid)?;
                if f.open.is_some() {
                    return Err(FsError::new("fid already open", 22));
                }
                if !f.qid.is_dir() {
                    return Err(FsError::not_dir());
                }
                if name.is_empty() || name == "." || name == ".." || name.contains('/') {
                    return Err(FsError::invalid("invalid file name"));
                }
                let ext = extension.unwrap_or_default();
                let (node, qid, iounit) = self.fs.create(&f.node, &name, perm, mode, &ext).await?;
                lock(&self.fids).insert(fid, Fid::new(node, qid, Some(mode)));
                Msg::Rcreate { qid, iounit: self.iounit(iounit) }
            }
            Msg::Tread { fid, offset, count } => {
                let f = self.fid(fid)?;
                if !f.open.is_some_and(mode_reads) {
                    return Err(FsError::new("fid not open for reading", 9));
                }
                let count = count.min(self.msize - IOHDRSZ);
                let data = if f.qid.is_dir() {
                    self.read_dir(&f, offset, count).await?
                } else {
                    self.fs.read(&f.node, offset, count).await?
                };
                Msg::Rread { data }
            }
            Msg::Twrite { fid, offset, data } => {
                let f = self.fid(fid)?;
                if !f.open.is_some_and(mode_writes) {
                    return Err(FsError::new("fid not open for writing", 9));
                }
                Msg::Rwrite { count: self.fs.write(&f.node, offset, data).await? }
            }
            Msg::Tclunk { fid } => {
                let f = lock(&self.fids).remove(&fid).ok_or_else(unknown_fid)?;
                if f.open.is_some_and(|m| m & ORCLOSE != 0) {
                    self.fs.remove(&f.node).await?;
                } else {
                    self.fs.clunk(&f.node).await;
                }
                Msg::Rclunk
            }
            Msg::Tremove { fid } => {
                let f = lock(&self.fids).remove(&fid).ok_or_else(unknown_fid)?;
                self.fs.remove(&f.node).await?;
                Msg::Rremove
            }
            Msg::Tstat { fid } => Msg::Rstat { stat: self.fs.stat(&self.fid(fid)?.node).await? },
            Msg::Twstat { fid, stat } => {
                self.fs.wstat(&self.fid(fid)?.node, &stat).await?;
                Msg::Rwstat
            }
            other => return Err(FsError::new(format!("unexpected message type {}", other.type_byte()), 22)),
        })
    }

    /// Whole entries starting at `offset` (0 re-reads the directory).
    async fn read_dir(&self, f: &Fid<F::Node>, offset: u64, count: u32) -> Result<Bytes, FsError> {
        let cached = lock(&f.dir).is_some();
        if offset == 0 || !cached {
            let stats = self.fs.readdir(&f.node).await?;
            *lock(&f.dir) = Some(pack_dir(&stats, self.dialect.is_dotu()));
        }
        let dir = lock(&f.dir);
        let Some(dir) = dir.as_ref() else { return Err(FsError::invalid("directory not read")) };
        let offset = usize::try_from(offset).map_err(|_| FsError::invalid("bad directory offset"))?;
        let Ok(start) = dir.bounds.binary_search(&offset) else {
            return Err(FsError::invalid("directory read at an offset that is not an entry boundary"));
        };
        let mut end = start;
        while end + 1 < dir.bounds.len() && dir.bounds[end + 1] - offset <= count as usize {
            end += 1;
        }
        if end == start && start + 1 < dir.bounds.len() {
            return Err(FsError::invalid("directory entry larger than the read count"));
        }
        Ok(dir.data.slice(offset..dir.bounds[end]))
    }
}

fn pack_dir(stats: &[Stat], dotu: bool) -> DirCache {
    let mut data = BytesMut::new();
    let mut bounds = vec![0];
    for s in stats {
        s.emit(&mut data, dotu);
        bounds.push(data.len());
    }
    DirCache { data: data.freeze(), bounds }
}

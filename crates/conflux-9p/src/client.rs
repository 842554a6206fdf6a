//! A 9P client that keeps many requests in flight over one flow.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::{Bytes, BytesMut};
use conflux_flow::{Flow, FlowError, FlowExt, ReadHalf, WriteHalf};
use tokio::sync::{mpsc, oneshot};

use crate::wire::{Decoder, Dialect, Frame, IOHDRSZ, Msg, NOFID, NOTAG, ParseError, Qid, RecvBuf, Stat};

/// Why a client call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The server answered Rerror.
    #[error("server error: {ename} (errno {errno:?})")]
    Server {
        /// The error text.
        ename: String,
        /// The errno (9P2000.u only).
        errno: Option<u32>,
    },
    /// The server answered with a message of the wrong type.
    #[error("unexpected reply type {0}")]
    Unexpected(u8),
    /// Tversion came back "unknown" or with another version than asked.
    #[error("the server does not speak {0}")]
    Version(String),
    /// A walk stopped after `.0` of its names.
    #[error("walk stopped after {0} names")]
    PartialWalk(usize),
    /// The request was flushed before its reply.
    #[error("request flushed")]
    Flushed,
    /// The session is over (Eof, a flow error or a malformed reply).
    #[error("session closed: {0}")]
    Closed(String),
}

impl From<FlowError> for ClientError {
    fn from(e: FlowError) -> Self {
        ClientError::Closed(e.to_string())
    }
}

impl From<ParseError> for ClientError {
    fn from(e: ParseError) -> Self {
        ClientError::Closed(e.to_string())
    }
}

type Pending = HashMap<u16, oneshot::Sender<Result<Msg, ClientError>>>;

enum Out {
    Frame([Bytes; 2]),
    Close(oneshot::Sender<Result<(), FlowError>>),
}

struct Inner<F: Flow> {
    writer: mpsc::UnboundedSender<Out>,
    _flow: std::marker::PhantomData<fn() -> F>,
    pending: Mutex<Option<Pending>>,
    next_tag: Mutex<u16>,
    next_fid: AtomicU32,
    msize: u32,
    dialect: Dialect,
}

/// A 9P client over one flow. Cheap to clone; every clone shares the session,
/// and calls from many tasks run concurrently (each gets its own tag).
pub struct Client<F: Flow> {
    inner: Arc<Inner<F>>,
}

impl<F: Flow> Clone for Client<F> {
    fn clone(&self) -> Self {
        Client { inner: self.inner.clone() }
    }
}

impl<F: Flow> std::fmt::Debug for Client<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("msize", &self.inner.msize).field("dialect", &self.inner.dialect).finish()
    }
}

/// A request sent and not yet answered.
#[derive(Debug)]
pub struct Call {
    tag: u16,
    rx: oneshot::Receiver<Result<Msg, ClientError>>,
}

impl Call {
    /// The tag of the request (for [`Client::flush`]).
    pub fn tag(&self) -> u16 {
        self.tag
    }

    /// The reply (Rerror included, as a message); [`ClientError::Flushed`] if
    /// the request was flushed first, [`ClientError::Closed`] if the session ended.
    pub async fn reply(self) -> Result<Msg, ClientError> {
        self.rx.await.unwrap_or(Err(ClientError::Flushed))
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn expect(reply: Msg, ty: u8) -> Result<Msg, ClientError> {
    match reply {
        Msg::Rerror { ename, errno } => Err(ClientError::Server { ename, errno }),
        m if m.type_byte() == ty => Ok(m),
        m => Err(ClientError::Unexpected(m.type_byte())),
    }
}

impl<F: Flow> Client<F> {
    /// Negotiates `version` ("9P2000.u" or "9P2000") and `msize` over `flow`.
    pub async fn connect(mut flow: F, msize: u32, version: &str) -> Result<Client<F>, ClientError> {
        let tv = Frame { tag: NOTAG, msg: Msg::Tversion { msize, version: version.into() } };
        flow.write(tv.emit(Dialect::P2000)).await?;
        let mut buf = BytesMut::new();
        let mut dec = Decoder::new(msize.max(256), Dialect::P2000);
        let reply = loop {
            if let Some(f) = dec.decode(&mut buf)? {
                break f.msg;
            }
            match flow.read().await? {
                Some(b) => buf.extend_from_slice(&b),
                None => return Err(ClientError::Closed("Eof during Tversion".into())),
            }
        };
        let (msize, got) = match expect(reply, 101)? {
            Msg::Rversion { msize: m, version } => (m.min(msize), version),
            m => return Err(ClientError::Unexpected(m.type_byte())),
        };
        let Some(dialect) = Dialect::from_version(&got).filter(|_| got == version) else {
            return Err(ClientError::Version(version.into()));
        };
        let (rd, wr) = flow.split();
        let inner = Arc::new(Inner {
            writer: spawn_writer(wr),
            _flow: std::marker::PhantomData,
            pending: Mutex::new(Some(HashMap::new())),
            next_tag: Mutex::new(0),
            next_fid: AtomicU32::new(1),
            msize,
            dialect,
        });
        let mut rest = RecvBuf::new();
        rest.push(buf.freeze());
        tokio::spawn(read_loop(rd, rest, Decoder::new(msize, dialect), Arc::downgrade(&inner)));
        Ok(Client { inner })
    }

    /// The negotiated msize.
    pub fn msize(&self) -> u32 {
        self.inner.msize
    }

    /// The negotiated dialect.
    pub fn dialect(&self) -> Dialect {
        self.inner.dialect
    }

    /// The most data one Tread/Twrite carries.
    pub fn iounit(&self) -> u32 {
        self.inner.msize - IOHDRSZ
    }

    /// A fid number not used by this client yet.
    pub fn new_fid(&self) -> u32 {
        self.inner.next_fid.fetch_add(1, Ordering::Relaxed)
    }

    /// Sends a request under a fresh tag without waiting for its reply.
    pub async fn send(&self, msg: Msg) -> Result<Call, ClientError> {
        let (tx, rx) = oneshot::channel();
        let tag = {
            let mut pending = lock(&self.inner.pending);
            let Some(pending) = pending.as_mut() else { return Err(ClientError::Closed("session over".into())) };
            let mut next = lock(&self.inner.next_tag);
            loop {
                let t = *next;
                *next = if t >= NOTAG - 1 { 0 } else { t + 1 };
                if let std::collections::hash_map::Entry::Vacant(e) = pending.entry(t) {
                    e.insert(tx);
                    break t;
                }
            }
        };
        let frame = Frame { tag, msg };
        if self.inner.writer.send(Out::Frame(frame.emit_parts(self.inner.dialect))).is_err() {
            return Err(ClientError::Closed("the flow failed".into()));
        }
        Ok(Call { tag, rx })
    }

    /// Sends a request and waits for its reply (Rerror becomes [`ClientError::Server`]).
    pub async fn rpc(&self, msg: Msg) -> Result<Msg, ClientError> {
        let ty = msg.type_byte() + 1;
        expect(self.send(msg).await?.reply().await?, ty)
    }

    /// Flushes the request with `oldtag`; once Rflush is in, that request's
    /// [`Call::reply`] gives its reply if it came first, else [`ClientError::Flushed`].
    pub async fn flush(&self, oldtag: u16) -> Result<(), ClientError> {
        self.rpc(Msg::Tflush { oldtag }).await?;
        if let Some(p) = lock(&self.inner.pending).as_mut() {
            p.remove(&oldtag);
        }
        Ok(())
    }

    /// Attaches a fresh fid to the root of `aname` as `uname`.
    pub async fn attach(&self, uname: &str, aname: &str) -> Result<(u32, Qid), ClientError> {
        let fid = self.new_fid();
        let msg = Msg::Tattach { fid, afid: NOFID, uname: uname.into(), aname: aname.into(), n_uname: None };
        match self.rpc(msg).await? {
            Msg::Rattach { qid } => Ok((fid, qid)),
            m => Err(ClientError::Unexpected(m.type_byte())),
        }
    }

    /// Walks `names` from `fid` to a fresh fid; a partial walk is an error.
    pub async fn walk(&self, fid: u32, names: &[&str]) -> Result<(u32, Vec<Qid>), ClientError> {
        let newfid = self.new_fid();
        let wnames = names.iter().map(|s| s.to_string()).collect();
        match self.rpc(Msg::Twalk { fid, newfid, wnames }).await? {
            Msg::Rwalk { wqids } if wqids.len() == names.len() => Ok((newfid, wqids)),
            Msg::Rwalk { wqids } => Err(ClientError::PartialWalk(wqids.len())),
            m => Err(ClientError::Unexpected(m.type_byte())),
        }
    }

    /// Opens `fid` with a 9P mode; returns its qid and iounit.
    pub async fn open(&self, fid: u32, mode: u8) -> Result<(Qid, u32), ClientError> {
        match self.rpc(Msg::Topen { fid, mode }).await? {
            Msg::Ropen { qid, iounit } => Ok((qid, iounit)),
            m => Err(ClientError::Unexpected(m.type_byte())),
        }
    }

    /// Creates `name` in the directory `fid`, which then refers to the new file, opened.
    pub async fn create(&self, fid: u32, name: &str, perm: u32, mode: u8) -> Result<(Qid, u32), ClientError> {
        let extension = self.inner.dialect.is_dotu().then(String::new);
        match self.rpc(Msg::Tcreate { fid, name: name.into(), perm, mode, extension }).await? {
            Msg::Rcreate { qid, iounit } => Ok((qid, iounit)),
            m => Err(ClientError::Unexpected(m.type_byte())),
        }
    }

    /// Reads up to `count` bytes at `offset`.
    pub async fn read(&self, fid: u32, offset: u64, count: u32) -> Result<Bytes, ClientError> {
        match self.rpc(Msg::Tread { fid, offset, count }).await? {
            Msg::Rread { data } => Ok(data),
            m => Err(ClientError::Unexpected(m.type_byte())),
        }
    }

    /// Reads a whole opened file (or directory stream) from offset 0.
    pub async fn read_all(&self, fid: u32) -> Result<Vec<u8>, ClientError> {
        let mut out = Vec::new();
        loop {
            let chunk = self.read(fid, out.len() as u64, self.iounit()).await?;
            if chunk.is_empty() {
                return Ok(out);
            }
            out.extend_from_slice(&chunk);
        }
    }

    /// Reads the entries of an opened directory.
    pub async fn read_dir(&self, fid: u32) -> Result<Vec<Stat>, ClientError> {
        let data = self.read_all(fid).await?;
        Ok(Stat::parse_dir(&data, self.inner.dialect.is_dotu())?)
    }

    /// Writes `data` at `offset`; returns the count the server took.
    pub async fn write(&self, fid: u32, offset: u64, data: impl Into<Bytes>) -> Result<u32, ClientError> {
        match self.rpc(Msg::Twrite { fid, offset, data: data.into() }).await? {
            Msg::Rwrite { count } => Ok(count),
            m => Err(ClientError::Unexpected(m.type_byte())),
        }
    }

    /// The metadata of `fid`.
    pub async fn stat(&self, fid: u32) -> Result<Stat, ClientError> {
        match self.rpc(Msg::Tstat { fid }).await? {
            Msg::Rstat { stat } => Ok(stat),
            m => Err(ClientError::Unexpected(m.type_byte())),
        }
    }

    /// Changes metadata (start from [`Stat::dont_touch`]).
    pub async fn wstat(&self, fid: u32, stat: Stat) -> Result<(), ClientError> {
        self.rpc(Msg::Twstat { fid, stat }).await.map(drop)
    }

    /// Forgets `fid`.
    pub async fn clunk(&self, fid: u32) -> Result<(), ClientError> {
        self.rpc(Msg::Tclunk { fid }).await.map(drop)
    }

    /// Removes the file of `fid` (the fid is clunked either way).
    pub async fn remove(&self, fid: u32) -> Result<(), ClientError> {
        self.rpc(Msg::Tremove { fid }).await.map(drop)
    }

    /// Closes the flow; calls still waiting fail with [`ClientError::Closed`].
    pub async fn close(&self) -> Result<(), ClientError> {
        let (tx, rx) = oneshot::channel();
        if self.inner.writer.send(Out::Close(tx)).is_err() {
            return Ok(());
        }
        Ok(rx.await.unwrap_or(Ok(()))?)
    }
}

/// The one writer: requests queued by every caller go out in batches (one
/// vectored write per wake-up), in the order they were queued.
fn spawn_writer<F: Flow>(mut wr: WriteHalf<F>) -> mpsc::UnboundedSender<Out> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut bufs = Vec::new();
        while let Some(first) = rx.recv().await {
            let mut next = Some(first);
            let mut close = None;
            while let Some(out) = next.take() {
                match out {
                    Out::Frame(parts) => bufs.extend(parts.into_iter().filter(|b| !b.is_empty())),
                    Out::Close(done) => {
                        close = Some(done);
                        break;
                    }
                }
                if bufs.len() < 128 {
                    next = rx.try_recv().ok();
                }
            }
            if !bufs.is_empty()
                && let Err(e) = wr.writev(std::mem::take(&mut bufs)).await
            {
                tracing::debug!(error = %e, "9P client write failed");
                return;
            }
            if let Some(done) = close {
                let _ = done.send(wr.close().await);
                return;
            }
        }
    });
    tx
}

async fn read_loop<F: Flow>(mut rd: ReadHalf<F>, mut buf: RecvBuf, mut dec: Decoder, inner: std::sync::Weak<Inner<F>>) {
    let why = loop {
        let frame = match dec.decode_buf(&mut buf) {
            Ok(Some(f)) => f,
            Ok(None) => match rd.read().await {
                Ok(Some(b)) => {
                    buf.push(b);
                    continue;
                }
                Ok(None) => break "the server closed the flow".to_owned(),
                Err(e) => break e.to_string(),
            },
            Err(e) => {
                tracing::debug!(error = %e, "malformed reply");
                break format!("malformed reply: {e}");
            }
        };
        let Some(inner) = inner.upgrade() else { return };
        let tx = lock(&inner.pending).as_mut().and_then(|p| p.remove(&frame.tag));
        if let Some(tx) = tx {
            let _ = tx.send(Ok(frame.msg));
        }
    };
    if let Some(inner) = inner.upgrade() {
        let pending = lock(&inner.pending).take().unwrap_or_default();
        for (_, tx) in pending {
            let _ = tx.send(Err(ClientError::Closed(why.clone())));
        }
    }
}

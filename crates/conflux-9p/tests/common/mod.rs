//! Flow pairs over every transport, a raw frame connection, and a file system
//! whose reads of `slow` wait for a gate.
#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use conflux_9p::fs::Walked;
use conflux_9p::{Decoder, Dialect, Filesystem, Frame, FsError, MemFs, MemNode, Msg, NOTAG, Qid, Stat};
use conflux_flow::{BoxFlow, Flow, FlowExt};
use conflux_tcp::{ConnectOptions, TcpStack};
use tokio::sync::Semaphore;

/// The transports every server test runs over.
#[derive(Debug, Clone, Copy)]
pub enum Transport {
    Pipe,
    Tcp,
    Unix,
    FramedUnix,
}

/// A connected (client, server) pair.
pub async fn pair(t: Transport) -> (BoxFlow, BoxFlow) {
    match t {
        Transport::Pipe => {
            let (a, b) = conflux_flow::pipe(256 * 1024);
            (BoxFlow::new(a), BoxFlow::new(b))
        }
        Transport::Tcp => {
            let stack = conflux_tcp_host::HostStack::new();
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let listening = stack
                .listen(0, None, move |flow| {
                    let tx = tx.clone();
                    async move {
                        let _ = tx.send(flow);
                    }
                })
                .unwrap();
            let addr = ([127, 0, 0, 1], listening.port()).into();
            let c = stack.create_connection(addr, ConnectOptions::new()).await.unwrap();
            let s = rx.recv().await.unwrap();
            (BoxFlow::new(c), BoxFlow::new(s))
        }
        Transport::Unix => {
            let (a, b) = tokio::net::UnixStream::pair().unwrap();
            (BoxFlow::new(conflux_flow::FromTokio::new(a)), BoxFlow::new(conflux_flow::FromTokio::new(b)))
        }
        Transport::FramedUnix => {
            let (a, b) = tokio::net::UnixStream::pair().unwrap();
            let f = |s| {
                conflux_hvsock::RawFlow::new(conflux_hvsock::UnixSocket::from_tokio(s).unwrap())
                    .into_framed(conflux_hvsock::FramingConfig::new())
            };
            (BoxFlow::new(f(a)), BoxFlow::new(f(b)))
        }
    }
}

/// A connection that sends and receives whole frames, for checks at the wire level.
pub struct RawConn<F: Flow> {
    pub flow: F,
    buf: BytesMut,
    pub dec: Decoder,
}

impl<F: Flow> RawConn<F> {
    pub fn new(flow: F) -> RawConn<F> {
        RawConn { flow, buf: BytesMut::new(), dec: Decoder::new(u32::MAX, Dialect::P2000U) }
    }

    pub async fn send(&mut self, tag: u16, msg: Msg) {
        let bytes = Frame { tag, msg }.emit(self.dec.dialect());
        self.flow.write(bytes).await.unwrap();
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.flow.write(Bytes::copy_from_slice(bytes)).await.unwrap();
    }

    /// The next frame, or `None` at Eof.
    pub async fn recv(&mut self) -> Option<Frame> {
        loop {
            if let Some(f) = self.dec.decode(&mut self.buf).unwrap() {
                return Some(f);
            }
            match self.flow.read().await {
                Ok(Some(b)) => self.buf.extend_from_slice(&b),
                _ => return None,
            }
        }
    }

    pub async fn rpc(&mut self, tag: u16, msg: Msg) -> Msg {
        self.send(tag, msg).await;
        let f = self.recv().await.expect("a reply");
        assert_eq!(f.tag, tag);
        f.msg
    }

    /// Tversion 9P2000.u then Tattach of fid 1.
    pub async fn handshake(&mut self) {
        let v = self.rpc(NOTAG, Msg::Tversion { msize: 65536, version: "9P2000.u".into() }).await;
        assert_eq!(v, Msg::Rversion { msize: 65536, version: "9P2000.u".into() });
        let a =
            self.rpc(1, Msg::Tattach { fid: 1, afid: !0, uname: "u".into(), aname: "".into(), n_uname: Some(0) }).await;
        assert!(matches!(a, Msg::Rattach { .. }), "{a:?}");
    }
}

/// [`MemFs`] whose reads of a file named `slow` each wait for one permit of `gate`.
pub struct GateFs {
    pub mem: MemFs,
    pub gate: Arc<Semaphore>,
}

impl GateFs {
    pub fn new() -> GateFs {
        let mem = MemFs::new();
        mem.add_file("slow", "slow data").unwrap();
        mem.add_file("fast", "fast data").unwrap();
        mem.add_file("docs/a.txt", "aaaa").unwrap();
        GateFs { mem, gate: Arc::new(Semaphore::new(0)) }
    }
}

impl Filesystem for GateFs {
    type Node = MemNode;
    async fn attach(&self, u: &str, a: &str) -> Result<(MemNode, Qid), FsError> {
        self.mem.attach(u, a).await
    }
    async fn walk(&self, n: &MemNode, names: &[String]) -> Result<Walked<MemNode>, FsError> {
        self.mem.walk(n, names).await
    }
    async fn open(&self, n: &MemNode, mode: u8) -> Result<(MemNode, Qid, u32), FsError> {
        self.mem.open(n, mode).await
    }
    async fn create(
        &self,
        d: &MemNode,
        name: &str,
        perm: u32,
        mode: u8,
        ext: &str,
    ) -> Result<(MemNode, Qid, u32), FsError> {
        self.mem.create(d, name, perm, mode, ext).await
    }
    async fn read(&self, n: &MemNode, offset: u64, count: u32) -> Result<Bytes, FsError> {
        if self.mem.stat(n).await?.name == "slow" {
            self.gate.acquire().await.unwrap().forget();
        }
        self.mem.read(n, offset, count).await
    }
    async fn readdir(&self, n: &MemNode) -> Result<Vec<Stat>, FsError> {
        self.mem.readdir(n).await
    }
    async fn write(&self, n: &MemNode, offset: u64, data: Bytes) -> Result<u32, FsError> {
        self.mem.write(n, offset, data).await
    }
    async fn remove(&self, n: &MemNode) -> Result<(), FsError> {
        self.mem.remove(n).await
    }
    async fn stat(&self, n: &MemNode) -> Result<Stat, FsError> {
        self.mem.stat(n).await
    }
    async fn wstat(&self, n: &MemNode, s: &Stat) -> Result<(), FsError> {
        self.mem.wstat(n, s).await
    }
}

//! Server behaviour over pipe, TCP, Unix and framed Unix flows: version
//! negotiation, handshake errors, unknown fids, partial walks, Tflush before
//! and after the reply, 100 concurrent reads, malformed frames, and a client
//! round trip of create/write/read/stat/remove.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::{GateFs, RawConn, Transport, pair};
use conflux_9p::fs::{ORDWR, OREAD};
use conflux_9p::{Client, ClientError, MemFs, Msg, NOTAG, ParseError, ServeError, Server, Stat};
use conflux_flow::{BoxFlow, FlowExt};
use tokio::task::JoinHandle;

fn serve<F: conflux_9p::Filesystem>(server: Server<F>, flow: BoxFlow) -> JoinHandle<Result<(), ServeError>> {
    tokio::spawn(async move { server.serve(flow).await })
}

async fn raw(t: Transport) -> (RawConn<BoxFlow>, JoinHandle<Result<(), ServeError>>, Arc<GateFs>) {
    let (c, s) = pair(t).await;
    let fs = Arc::new(GateFs::new());
    let srv = serve(Server::from_arc(fs.clone()).with_msize(65536), s);
    (RawConn::new(c), srv, fs)
}

async fn version_negotiation(t: Transport) {
    let (mut c, srv, _) = raw(t).await;
    let cases = [
        ("9P2000.u", 1 << 30, "9P2000.u", 65536),
        ("9P2000", 8192, "9P2000", 8192),
        ("9P2000.L", 8192, "9P2000", 8192),
        ("NFSv4", 8192, "unknown", 8192),
    ];
    for (ask, msize, want, got_msize) in cases {
        let reply = c.rpc(NOTAG, Msg::Tversion { msize, version: ask.into() }).await;
        assert_eq!(reply, Msg::Rversion { msize: got_msize, version: want.into() }, "asking {ask}");
    }
    // After "unknown" there is no session: requests are refused, the flow stays open.
    c.dec.set_dialect(conflux_9p::Dialect::P2000);
    let r = c.rpc(5, Msg::Tstat { fid: 1 }).await;
    assert!(matches!(&r, Msg::Rerror { ename, .. } if ename.contains("Tversion")), "{r:?}");
    // A second Tversion resets the session: fids of the first one are gone.
    c.dec.set_dialect(conflux_9p::Dialect::P2000U);
    c.handshake().await;
    c.rpc(NOTAG, Msg::Tversion { msize: 8192, version: "9P2000.u".into() }).await;
    assert!(matches!(c.rpc(2, Msg::Tstat { fid: 1 }).await, Msg::Rerror { .. }));
    // A clean end (a framed flow dropped without Close reads as a reset).
    c.flow.close().await.unwrap();
    srv.await.unwrap().unwrap();
}

async fn handshake_errors(t: Transport) {
    let (mut c, srv, _) = raw(t).await;
    c.dec.set_dialect(conflux_9p::Dialect::P2000);
    let r = c.rpc(1, Msg::Tattach { fid: 1, afid: !0, uname: "u".into(), aname: "".into(), n_uname: None }).await;
    assert!(matches!(r, Msg::Rerror { .. }), "attach before version: {r:?}");
    c.dec.set_dialect(conflux_9p::Dialect::P2000U);
    c.rpc(NOTAG, Msg::Tversion { msize: 8192, version: "9P2000.u".into() }).await;
    let r = c.rpc(2, Msg::Tauth { afid: 9, uname: "u".into(), aname: "".into(), n_uname: Some(0) }).await;
    assert_eq!(r, Msg::error("authentication not required", 22));
    c.handshake().await;
    let r = c.rpc(3, Msg::Tattach { fid: 1, afid: !0, uname: "u".into(), aname: "".into(), n_uname: Some(0) }).await;
    assert!(matches!(&r, Msg::Rerror { ename, .. } if ename.contains("in use")), "{r:?}");
    // A clean end (a framed flow dropped without Close reads as a reset).
    c.flow.close().await.unwrap();
    srv.await.unwrap().unwrap();
}

async fn unknown_fid_and_partial_walk(t: Transport) {
    let (mut c, srv, _) = raw(t).await;
    c.handshake().await;
    assert_eq!(c.rpc(2, Msg::Tstat { fid: 77 }).await, Msg::error("unknown fid", 9));
    // Fails at the first name: Rerror.
    let r = c.rpc(3, Msg::Twalk { fid: 1, newfid: 2, wnames: vec!["nope".into()] }).await;
    assert!(matches!(r, Msg::Rerror { errno: Some(2), .. }), "{r:?}");
    // Fails at the second: the first qid, and newfid is not created.
    let r = c.rpc(4, Msg::Twalk { fid: 1, newfid: 2, wnames: vec!["docs".into(), "nope".into()] }).await;
    assert!(matches!(&r, Msg::Rwalk { wqids } if wqids.len() == 1 && wqids[0].is_dir()), "{r:?}");
    assert_eq!(c.rpc(5, Msg::Tstat { fid: 2 }).await, Msg::error("unknown fid", 9));
    // Zero names clone the fid.
    let r = c.rpc(6, Msg::Twalk { fid: 1, newfid: 3, wnames: vec![] }).await;
    assert_eq!(r, Msg::Rwalk { wqids: vec![] });
    assert!(matches!(c.rpc(7, Msg::Tstat { fid: 3 }).await, Msg::Rstat { .. }));
    // A clean end (a framed flow dropped without Close reads as a reset).
    c.flow.close().await.unwrap();
    srv.await.unwrap().unwrap();
}

async fn open_fid(c: &mut RawConn<BoxFlow>, newfid: u32, name: &str) {
    let r = c.rpc(10, Msg::Twalk { fid: 1, newfid, wnames: vec![name.into()] }).await;
    assert!(matches!(r, Msg::Rwalk { .. }), "{r:?}");
    assert!(matches!(c.rpc(11, Msg::Topen { fid: newfid, mode: OREAD }).await, Msg::Ropen { .. }));
}

async fn flush(t: Transport) {
    let (mut c, srv, fs) = raw(t).await;
    c.handshake().await;
    open_fid(&mut c, 2, "slow").await;
    open_fid(&mut c, 3, "fast").await;
    // Before the reply: Rflush comes, the read's reply never does, even once the read finishes.
    c.send(20, Msg::Tread { fid: 2, offset: 0, count: 100 }).await;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    assert_eq!(c.rpc(21, Msg::Tflush { oldtag: 20 }).await, Msg::Rflush);
    // A slow read in flight does not hold up other requests.
    c.send(22, Msg::Tread { fid: 2, offset: 0, count: 100 }).await;
    assert!(matches!(c.rpc(23, Msg::Tstat { fid: 3 }).await, Msg::Rstat { .. }));
    fs.gate.add_permits(2);
    let f = c.recv().await.unwrap();
    assert_eq!((f.tag, f.msg), (22, Msg::Rread { data: Bytes::from_static(b"slow data") }));
    // After the reply: the reply, then Rflush.
    c.send(24, Msg::Tread { fid: 3, offset: 0, count: 4 }).await;
    let f = c.recv().await.unwrap();
    assert_eq!((f.tag, f.msg), (24, Msg::Rread { data: Bytes::from_static(b"fast") }));
    assert_eq!(c.rpc(25, Msg::Tflush { oldtag: 24 }).await, Msg::Rflush);
    // Flushing an unknown tag is answered too; nothing stray arrived in between.
    assert_eq!(c.rpc(26, Msg::Tflush { oldtag: 999 }).await, Msg::Rflush);
    // A clean end (a framed flow dropped without Close reads as a reset).
    c.flow.close().await.unwrap();
    srv.await.unwrap().unwrap();
}

async fn malformed_frame(t: Transport) {
    let cases: [(&[u8], ParseError); 3] = [
        (&[9, 0, 0, 0, 120, 0, 0, 1, 0], ParseError::Truncated(120)),
        (&[7, 0, 0, 0, 99, 0, 0], ParseError::UnknownType(99)),
        (&[0xff, 0xff, 1, 0], ParseError::Oversize { size: 0x1ffff, msize: 65536 }),
    ];
    for (bad, want) in cases {
        let (mut c, srv, _) = raw(t).await;
        c.handshake().await;
        c.send_raw(bad).await;
        assert!(c.recv().await.is_none(), "the server closes the flow");
        match srv.await.unwrap() {
            Err(ServeError::Protocol(p)) => assert_eq!(p, want),
            other => panic!("{other:?}"),
        }
    }
}

async fn client_round_trip_and_100_reads(t: Transport) {
    let (c, s) = pair(t).await;
    let fs = MemFs::new();
    let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7) as u8).collect();
    fs.add_file("big", big.clone()).unwrap();
    let srv = serve(Server::new(fs).with_msize(65536), s);
    let client = Client::connect(c, 1 << 20, "9P2000.u").await.unwrap();
    assert_eq!(client.msize(), 65536);
    let (root, _) = client.attach("u", "").await.unwrap();

    // create, write, read back, stat, list, remove.
    let (f, _) = client.walk(root, &[]).await.unwrap();
    client.create(f, "new.txt", 0o644, ORDWR).await.unwrap();
    assert_eq!(client.write(f, 0, "hello world").await.unwrap(), 11);
    assert_eq!(client.read(f, 6, 100).await.unwrap(), "world");
    assert_eq!(client.stat(f).await.unwrap().length, 11);
    client.clunk(f).await.unwrap();
    let (d, _) = client.walk(root, &[]).await.unwrap();
    client.open(d, OREAD).await.unwrap();
    let names: Vec<String> = client.read_dir(d).await.unwrap().into_iter().map(|s: Stat| s.name).collect();
    assert_eq!(names, ["big", "new.txt"]);
    let (f, _) = client.walk(root, &["new.txt"]).await.unwrap();
    client.remove(f).await.unwrap();
    assert!(matches!(client.walk(root, &["new.txt"]).await, Err(ClientError::Server { errno: Some(2), .. })));

    // 100 concurrent reads on one fid, each of its own 3000-byte range.
    let (f, _) = client.walk(root, &["big"]).await.unwrap();
    client.open(f, OREAD).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..100u64 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move { (i, client.read(f, i * 3000, 3000).await.unwrap()) }));
    }
    for t in tasks {
        let (i, data) = t.await.unwrap();
        assert_eq!(&data[..], &big[i as usize * 3000..][..3000]);
    }
    drop(client);
    srv.await.unwrap().unwrap();
}

#[tokio::test]
async fn dir_reads_hold_whole_entries() {
    let (mut c, srv, fs) = raw(Transport::Pipe).await;
    for name in ["e1", "e2", "e3"] {
        fs.mem.add_file(&format!("docs/{name}"), "x").unwrap();
    }
    c.handshake().await;
    let r = c.rpc(2, Msg::Twalk { fid: 1, newfid: 2, wnames: vec!["docs".into()] }).await;
    assert!(matches!(r, Msg::Rwalk { .. }));
    assert!(matches!(c.rpc(3, Msg::Topen { fid: 2, mode: OREAD }).await, Msg::Ropen { .. }));
    // The size of one entry: every name here is 2 or 5 bytes; "a.txt" is the longest.
    let one = Stat {
        name: "a.txt".into(),
        uid: "conflux".into(),
        gid: "conflux".into(),
        muid: "conflux".into(),
        ..Stat::default()
    }
    .wire_len(true) as u32;
    // A count of one entry and a bit: exactly one entry per read, never a split one.
    let (mut offset, mut names) = (0u64, Vec::new());
    loop {
        let Msg::Rread { data } = c.rpc(4, Msg::Tread { fid: 2, offset, count: one + 10 }).await else { panic!() };
        if data.is_empty() {
            break;
        }
        let entries = Stat::parse_dir(&data, true).unwrap();
        assert_eq!(entries.len(), 1);
        names.push(entries[0].name.clone());
        offset += data.len() as u64;
    }
    assert_eq!(names, ["a.txt", "e1", "e2", "e3"]);
    // Mid-entry offsets and counts below one entry are refused.
    assert!(matches!(c.rpc(5, Msg::Tread { fid: 2, offset: 3, count: 1000 }).await, Msg::Rerror { .. }));
    assert!(matches!(c.rpc(6, Msg::Tread { fid: 2, offset: 0, count: 10 }).await, Msg::Rerror { .. }));
    // A clean end (a framed flow dropped without Close reads as a reset).
    c.flow.close().await.unwrap();
    srv.await.unwrap().unwrap();
}

#[tokio::test]
async fn wstat_orclose_and_session_end() {
    let (c, s) = pair(Transport::Pipe).await;
    let fs = Arc::new(GateFs::new());
    let srv = serve(Server::from_arc(fs.clone()), s);
    let client = Client::connect(c, 8192, "9P2000.u").await.unwrap();
    let (root, _) = client.attach("u", "").await.unwrap();
    // wstat: rename and truncate; "don't touch" fields stay.
    let (f, _) = client.walk(root, &["docs", "a.txt"]).await.unwrap();
    client.wstat(f, Stat { name: "b.txt".into(), length: 2, ..Stat::dont_touch() }).await.unwrap();
    let st = client.stat(f).await.unwrap();
    assert_eq!((st.name.as_str(), st.length, st.mode), ("b.txt", 2, 0o644));
    assert!(client.walk(root, &["docs", "a.txt"]).await.is_err());
    // ORCLOSE: the file goes with the clunk.
    let (d, _) = client.walk(root, &["docs"]).await.unwrap();
    client.create(d, "tmp", 0o600, conflux_9p::fs::OWRITE | conflux_9p::fs::ORCLOSE).await.unwrap();
    assert!(client.walk(root, &["docs", "tmp"]).await.is_ok());
    client.clunk(d).await.unwrap();
    assert!(client.walk(root, &["docs", "tmp"]).await.is_err());
    // A call waiting when the session ends fails with Closed, not Flushed.
    let (slow, _) = client.walk(root, &["slow"]).await.unwrap();
    client.open(slow, OREAD).await.unwrap();
    let call = client.send(Msg::Tread { fid: slow, offset: 0, count: 10 }).await.unwrap();
    srv.abort();
    assert!(matches!(call.reply().await, Err(ClientError::Closed(_))));
}

/// A client that sends without reading: once MAX_IN_FLIGHT replies wait for
/// the writer, the server stops reading, so the client's writes stall instead
/// of replies piling up in the server's memory; reading drains everything.
#[tokio::test(start_paused = true)]
async fn replies_not_read_stop_the_server_reading() {
    let (a, b) = conflux_flow::pipe(4096);
    let srv = serve(Server::new(MemFs::new()), BoxFlow::new(b));
    let mut c = RawConn::new(BoxFlow::new(a));
    c.handshake().await;
    let n = 2000u16;
    let sent = Arc::new(std::sync::atomic::AtomicU16::new(0));
    let (mut rd, mut wr) = conflux_flow::FlowExt::split(c.flow);
    let writer = {
        let sent = sent.clone();
        tokio::spawn(async move {
            for tag in 0..n {
                let frame = conflux_9p::Frame { tag, msg: Msg::Tclunk { fid: 77 } };
                wr.write(frame.emit(conflux_9p::Dialect::P2000U)).await.unwrap();
                sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            wr
        })
    };
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    let stalled_at = sent.load(std::sync::atomic::Ordering::Relaxed);
    assert!(stalled_at < n, "all {n} requests went in with no reply read");
    assert!(stalled_at as usize >= conflux_9p::MAX_IN_FLIGHT, "stalled after only {stalled_at}");
    let mut dec = conflux_9p::Decoder::new(8192, conflux_9p::Dialect::P2000U);
    let mut buf = bytes::BytesMut::new();
    let mut replies = 0;
    while replies < n {
        match dec.decode(&mut buf).unwrap() {
            Some(f) => {
                assert_eq!(f.msg, Msg::error("unknown fid", 9));
                replies += 1;
            }
            None => buf.extend_from_slice(&rd.read().await.unwrap().unwrap()),
        }
    }
    drop(writer.await.unwrap());
    drop(rd);
    let _ = srv.await;
}

macro_rules! over_every_transport {
    ($($name:ident),* $(,)?) => {
        mod pipe { $(#[tokio::test] async fn $name() { super::$name(super::Transport::Pipe).await })* }
        mod tcp { $(#[tokio::test] async fn $name() { super::$name(super::Transport::Tcp).await })* }
        mod unix { $(#[tokio::test] async fn $name() { super::$name(super::Transport::Unix).await })* }
        mod framed_unix { $(#[tokio::test] async fn $name() { super::$name(super::Transport::FramedUnix).await })* }
    };
}

over_every_transport!(
    version_negotiation,
    handshake_errors,
    unknown_fid_and_partial_walk,
    flush,
    malformed_frame,
    client_round_trip_and_100_reads,
);

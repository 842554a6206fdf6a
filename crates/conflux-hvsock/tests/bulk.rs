//! The framed flow's bulk paths. Reads are scattered: full data frames land
//! end to end in the read buffer with their headers in slots apart (no move
//! over the headers); any other header (a marker, another length, `Data(0)`,
//! a bad length, a header cut by the end of a read) goes back into the
//! stream in wire order for the decoder. On a scripted socket (every read
//! size) and on real Unix sockets. Owned writes are framed straight into one
//! `writev` (no queue); a frame the socket cut goes out first, whatever the
//! cut.

#[macro_use]
mod common;

use std::io::IoSlice;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use conflux_flow::{Flow, FlowExt, Shutdown};
use conflux_hvsock::framing::{Encoder, Header};
use conflux_hvsock::{FramingConfig, RawFlow, Socket, UnixAddr};
use conflux_testkit::{TIMEOUT, TempDir, payload, within};
use tokio::io::AsyncWriteExt;

use common::unix_pair;

fn cfg() -> FramingConfig {
    FramingConfig::new().close_timeout(Duration::from_secs(5))
}

/// What a scripted socket was asked, read by read.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Call {
    /// A plain read into the spare capacity.
    Plain,
    /// A scattered read with these payload pieces (one more than the slots).
    Scatter(Vec<usize>),
}

type Calls = Arc<Mutex<Vec<Call>>>;

/// A socket that serves a fixed byte stream, at most `max_read` bytes a
/// read, then Eof; scattered reads spread the bytes as `readv` does.
struct Script {
    wire: Bytes,
    max_read: usize,
    scatter: bool,
    calls: Calls,
}

impl Script {
    fn new(wire: &[u8], max_read: usize, scatter: bool) -> (Script, Calls) {
        let calls = Calls::default();
        (Script { wire: Bytes::copy_from_slice(wire), max_read, scatter, calls: calls.clone() }, calls)
    }

    fn take(&mut self, room: usize) -> Bytes {
        self.wire.split_to(self.wire.len().min(room).min(self.max_read))
    }
}

impl Socket for Script {
    type Addr = UnixAddr;

    fn poll_read_buf(&mut self, _cx: &mut Context<'_>, buf: &mut BytesMut) -> Poll<std::io::Result<usize>> {
        self.calls.lock().unwrap().push(Call::Plain);
        let got = self.take(buf.capacity() - buf.len());
        buf.extend_from_slice(&got);
        Poll::Ready(Ok(got.len()))
    }

    fn reads_scatter(&self) -> bool {
        self.scatter
    }

    fn poll_read_scatter(
        &mut self,
        _cx: &mut Context<'_>,
        buf: &mut BytesMut,
        segs: &[usize],
        heads: &mut [[u8; 4]],
    ) -> Poll<std::io::Result<usize>> {
        assert_eq!(segs.len(), heads.len() + 1, "one more piece than slots");
        assert!(segs.iter().sum::<usize>() <= buf.capacity() - buf.len(), "the pieces fit the spare capacity");
        self.calls.lock().unwrap().push(Call::Scatter(segs.to_vec()));
        let mut got = self.take(segs.iter().sum::<usize>() + 4 * heads.len());
        let n = got.len();
        for (i, &len) in segs.iter().enumerate() {
            if i > 0 {
                let h = got.len().min(4);
                heads[i - 1][..h].copy_from_slice(&got.split_to(h));
            }
            buf.extend_from_slice(&got.split_to(got.len().min(len)));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_writev(&mut self, _cx: &mut Context<'_>, bufs: &[IoSlice<'_>]) -> Poll<std::io::Result<usize>> {
        Poll::Ready(Ok(bufs.iter().map(|b| b.len()).sum()))
    }

    inert_socket_ends!();
}

/// Reads a framed flow over `sock` to its end (the script never blocks):
/// the chunks, then the error if the stream broke the framing.
fn read_all<S: Socket>(sock: S) -> (Vec<Bytes>, Option<conflux_flow::FlowError>) {
    let mut flow = RawFlow::new(sock).into_framed(cfg());
    let mut cx = Context::from_waker(std::task::Waker::noop());
    let mut chunks = Vec::new();
    loop {
        match flow.poll_read(&mut cx) {
            Poll::Ready(Ok(Some(d))) => {
                assert!(!d.is_empty(), "no empty chunk");
                chunks.push(d);
            }
            Poll::Ready(Ok(None)) => return (chunks, None),
            Poll::Ready(Err(e)) => return (chunks, Some(e)),
            Poll::Pending => panic!("the script never blocks"),
        }
    }
}

/// Frames of `data` as the encoder sends them (4096-byte payloads at most).
fn frames(data: &[u8]) -> Vec<u8> {
    let mut enc = Encoder::new();
    enc.push_data(&mut Bytes::copy_from_slice(data), usize::MAX);
    enc.to_vec()
}

/// 12 full frames already in the socket: one scattered read with a slot
/// after each frame's payload, one chunk of all 12 payloads, no plain read.
#[test]
fn full_frames_are_read_scattered_around_their_headers() {
    let data = payload(3, 12 * 4096);
    let mut wire = frames(&data);
    wire.extend_from_slice(&Header::ShutdownWrite.to_bytes());
    let (sock, calls) = Script::new(&wire, usize::MAX, true);
    let (chunks, err) = read_all(sock);
    assert!(err.is_none(), "{err:?}");
    assert_eq!(chunks.len(), 1, "one chunk: {:?}", chunks.iter().map(Bytes::len).collect::<Vec<_>>());
    assert_eq!(chunks[0], data);
    let calls = calls.lock().unwrap();
    let Call::Scatter(segs) = &calls[0] else { panic!("a scattered read first: {calls:?}") };
    assert_eq!(segs[0], 0, "at a frame boundary: a slot first");
    assert!(segs[1..segs.len() - 1].iter().all(|&s| s == 4096), "a full frame between slots: {segs:?}");
    assert_eq!(segs.iter().sum::<usize>() + 4 * (segs.len() - 1), 64 * 1024, "one 64 KiB read");
    assert!(!calls.contains(&Call::Plain), "no plain read: {calls:?}");
}

/// A stream of every kind of header, read at every read size from 1 byte to
/// past the whole stream, scattered and plain: the same payload bytes, in
/// order, and the same ending.
#[test]
fn every_header_at_every_read_size_reads_as_the_plain_decoder_does() {
    let data = payload(5, 50_000);
    let mut wire = Vec::new();
    let mut expect = Vec::new();
    let mut at = 0;
    let mut piece = |wire: &mut Vec<u8>, len: usize| {
        wire.extend_from_slice(&frames(&data[at..at + len]));
        expect.extend_from_slice(&data[at..at + len]);
        at += len;
    };
    piece(&mut wire, 3 * 4096 + 100); // full frames, then a short one
    wire.extend_from_slice(&Header::Data(0).to_bytes()); // skipped
    piece(&mut wire, 2 * 4096);
    piece(&mut wire, 7); // a short frame between full ones
    piece(&mut wire, 4096);
    piece(&mut wire, 1000);
    piece(&mut wire, 2 * 4096 + 1);
    wire.extend_from_slice(&Header::ShutdownRead.to_bytes()); // a marker mid-stream
    piece(&mut wire, 4096);
    wire.extend_from_slice(&Header::ShutdownWrite.to_bytes());
    wire.extend_from_slice(&frames(&data[at..at + 4096])); // after Eof: discarded
    let sizes = (1..=70).chain((4090..4110).step_by(3)).chain([8191, 8200, 16_000, 33_333, 65_536, usize::MAX]);
    for max_read in sizes {
        for scatter in [true, false] {
            let (sock, calls) = Script::new(&wire, max_read, scatter);
            let (chunks, err) = read_all(sock);
            assert!(err.is_none(), "max_read {max_read}, scatter {scatter}: {err:?}");
            assert!(chunks.concat() == expect, "max_read {max_read}, scatter {scatter}: payload differs");
            let scattered = calls.lock().unwrap().iter().any(|c| matches!(c, Call::Scatter(_)));
            assert_eq!(scattered, scatter, "max_read {max_read}");
        }
    }
}

/// A bad length and a cut stream break the framing on a scattered read as on
/// a plain one: the payload before, then a protocol error (never a panic,
/// never a silent Eof).
#[test]
fn bad_lengths_and_truncations_are_protocol_errors_when_scattered() {
    let data = payload(9, 3 * 4096);
    let good = frames(&data);
    let bad = |h: u32| {
        let mut w = good.clone();
        w.extend_from_slice(&h.to_le_bytes());
        w.extend_from_slice(&[0; 5000]);
        w
    };
    let cases = [
        ("2^31", bad(0x8000_0000)),
        ("0xffffffff", bad(0xffff_ffff)),
        ("above the cap", bad(4097)),
        ("Eof mid-header", [&good[..], &[1, 0]].concat()),
        ("Eof mid-payload", good[..good.len() - 10].to_vec()),
        ("Eof mid-way into a slot", good[..4102].to_vec()),
        ("Eof without a marker", good.clone()),
    ];
    for (what, wire) in cases {
        for max_read in [1, 3, 4, 4099, 4100, 4101, 9000, usize::MAX] {
            let (sock, _) = Script::new(&wire, max_read, true);
            let (chunks, err) = read_all(sock);
            let err = err.unwrap_or_else(|| panic!("{what}, max_read {max_read}: no error"));
            let got = chunks.concat();
            assert!(data.starts_with(&got), "{what}, max_read {max_read}: a prefix of the payload");
            if what == "Eof without a marker" {
                assert_eq!(err.kind(), conflux_flow::ErrorKind::Reset, "{what}: {err}");
            } else {
                assert_eq!(err.kind(), conflux_flow::ErrorKind::Protocol, "{what}, max_read {max_read}: {err}");
            }
            if !matches!(what, "Eof mid-payload" | "Eof mid-way into a slot") {
                assert!(got == data[..], "{what}, max_read {max_read}: every payload byte before the break");
            }
        }
    }
}

/// Over real Unix sockets (the scattered `readv`): a peer writing frames of
/// every size and markers, in writes cut at odd places, is read back whole.
#[tokio::test]
async fn a_unix_peer_mixing_frame_sizes_is_read_back_whole() {
    let dir = TempDir::new("scatter-mix");
    let path = dir.path().join("s");
    let listener = tokio::net::UnixListener::bind(&path).expect("bind");
    let data = payload(13, 4 << 20);
    let mut wire = Vec::new();
    let (mut at, mut len) = (0, 1);
    while at < data.len() {
        let n = len.min(data.len() - at);
        wire.extend_from_slice(&frames(&data[at..at + n]));
        if n % 7 == 0 {
            wire.extend_from_slice(&Header::Data(0).to_bytes());
        }
        at += n;
        len = if len > 100_000 { 1 } else { len * 3 + 1 };
    }
    wire.extend_from_slice(&Header::ShutdownWrite.to_bytes());
    let writer = async {
        let (mut peer, _) = listener.accept().await.expect("accept");
        for piece in wire.chunks(12_345) {
            peer.write_all(piece).await.expect("write");
        }
        peer.flush().await.expect("flush");
        peer
    };
    let reader = async {
        let sock = conflux_hvsock::UnixFamily.connect(&UnixAddr::new(&path), None).await.expect("connect");
        let mut flow = RawFlow::new(sock).into_framed(cfg());
        flow.read_to_end().await.expect("read")
    };
    use conflux_hvsock::Family;
    let (_peer, got) = within("mixed frames", TIMEOUT, async { tokio::join!(writer, reader) }).await;
    assert!(got == data[..], "every byte in order");
}

/// Framed to framed over a Unix socket, 64 KiB writes: every byte in order
/// through the scattered reads, and the close handshake still completes.
#[tokio::test]
async fn framed_unix_pair_moves_bulk_through_scattered_reads() {
    let dir = TempDir::new("scatter-bulk");
    let (a, b) = unix_pair(&dir).await;
    let (mut a, mut b) = (a.into_framed(cfg()), b.into_framed(cfg()));
    let data = payload(17, 8 << 20);
    let src = data.clone();
    let write = async move {
        for chunk in src.chunks(64 * 1024) {
            a.write(Bytes::copy_from_slice(chunk)).await.expect("write");
        }
        a.shutdown(Shutdown::Write).await.expect("shutdown");
        a
    };
    let (mut a, got) = within("bulk", TIMEOUT, async { tokio::join!(write, b.read_to_end()) }).await;
    assert!(got.expect("read") == data[..], "every byte in order");
    let (ra, rb) = within("close", TIMEOUT, async { tokio::join!(a.close(), b.close()) }).await;
    ra.expect("close a");
    rb.expect("close b");
}

/// A socket that takes at most `room` bytes a `writev` (the first ones at
/// most `first[i]` bytes) and keeps them, counting the calls.
struct Taking {
    room: usize,
    first: Vec<usize>,
    calls: usize,
    wire: Arc<Mutex<Vec<u8>>>,
}

impl Socket for Taking {
    type Addr = UnixAddr;

    fn poll_read_buf(&mut self, _cx: &mut Context<'_>, _buf: &mut BytesMut) -> Poll<std::io::Result<usize>> {
        Poll::Ready(Ok(0))
    }

    fn poll_writev(&mut self, _cx: &mut Context<'_>, bufs: &[IoSlice<'_>]) -> Poll<std::io::Result<usize>> {
        let mut wire = self.wire.lock().unwrap();
        let limit = self.first.get(self.calls).copied().unwrap_or(self.room);
        self.calls += 1;
        let mut room = limit;
        for b in bufs {
            let n = b.len().min(room);
            wire.extend_from_slice(&b[..n]);
            room -= n;
        }
        Poll::Ready(Ok(limit - room))
    }

    inert_socket_ends!();
}

/// Owned writes (one buffer, several, one after another) on a socket that
/// cuts every `writev` at `room` bytes, for cuts inside headers and
/// payloads: the wire is byte for byte the framing of each buffer apart,
/// then the ShutdownWrite marker.
#[test]
fn owned_writes_cut_anywhere_put_the_same_bytes_on_the_wire() {
    let data = payload(21, 150_000);
    let bufs = [data.slice(..70_000), data.slice(70_000..70_001), data.slice(70_001..80_000), data.slice(80_000..)];
    let mut want = Vec::new();
    for b in &bufs {
        want.extend_from_slice(&frames(b));
    }
    want.extend_from_slice(&Header::ShutdownWrite.to_bytes());
    for room in (1..=9).chain(4095..=4105).chain([8199, 8200, 8201, 65_536, 200_000, usize::MAX]) {
        let wire = Arc::new(Mutex::new(Vec::new()));
        let mut flow =
            RawFlow::new(Taking { room, first: Vec::new(), calls: 0, wire: wire.clone() }).into_framed(cfg());
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut two = [bufs[0].clone(), bufs[1].clone()];
        assert!(matches!(flow.poll_writev(&mut cx, &mut two), Poll::Ready(Ok(()))), "room {room}");
        assert!(two.iter().all(Bytes::is_empty), "room {room}: all taken");
        for b in &bufs[2..] {
            let mut b = b.clone();
            assert!(matches!(flow.poll_write(&mut cx, &mut b), Poll::Ready(Ok(()))), "room {room}");
        }
        assert!(matches!(flow.poll_shutdown(&mut cx, Shutdown::Write), Poll::Ready(Ok(()))), "room {room}");
        assert!(*wire.lock().unwrap() == want, "room {room}: the wire differs");
    }
}

/// The rest of a frame a `writev` cut and the frames after it go out
/// together: one more `writev`, not one for the rest and one for the others.
#[test]
fn the_rest_of_a_cut_frame_goes_out_with_the_next_frames() {
    let data = payload(23, 64 * 1024);
    let wire = Arc::new(Mutex::new(Vec::new()));
    let sock = Taking { room: usize::MAX, first: vec![4 + 100], calls: 0, wire: wire.clone() };
    let mut flow = RawFlow::new(sock).into_framed(cfg());
    let mut cx = Context::from_waker(std::task::Waker::noop());
    let mut buf = data.clone();
    assert!(matches!(flow.poll_write(&mut cx, &mut buf), Poll::Ready(Ok(()))));
    assert!(*wire.lock().unwrap() == frames(&data), "the wire differs");
    assert_eq!(flow.get_ref().expect("open").calls, 2, "the cut writev, then one for all the rest");
}

/// A connected pair of Unix family sockets.
async fn unix_sockets(dir: &TempDir) -> (conflux_hvsock::UnixSocket, conflux_hvsock::UnixSocket) {
    use conflux_hvsock::{Family, FamilyListener};
    let addr = UnixAddr::new(dir.path().join("s"));
    let listener = conflux_hvsock::UnixFamily.listen(&addr, 4).expect("listen");
    let (c, s) = tokio::join!(conflux_hvsock::UnixFamily.connect(&addr, None), listener.accept());
    (c.expect("connect"), s.expect("accept").0)
}

/// Reads what `sock` has queued with plain system calls (not through its
/// reactor registration); returns the byte count.
fn drain_raw(sock: &conflux_hvsock::UnixSocket) -> usize {
    use std::io::Read;
    let fd = socket2::SockRef::from(sock);
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0;
    loop {
        match (&*fd).read(&mut buf) {
            Ok(0) => return total,
            Ok(n) => total += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return total,
            Err(e) => panic!("read: {e}"),
        }
    }
}

/// A short write filled the socket: the next write waits for the reactor's
/// word that there is room again (as tokio's own `poll_write` does), instead
/// of a system call per attempt. With room made by the peer but not yet
/// seen by the reactor, that write is pending; before, it asked the kernel
/// at once and went through.
#[tokio::test]
async fn a_short_write_waits_for_room_instead_of_asking_the_kernel_again() {
    let dir = TempDir::new("short-write");
    let (mut a, b) = unix_sockets(&dir).await;
    let mut cx = Context::from_waker(std::task::Waker::noop());
    let big = vec![7u8; 1 << 20];
    let slices = [IoSlice::new(&big[..4]), IoSlice::new(&big[4..])];
    let mut wrote = 0;
    loop {
        match a.poll_writev(&mut cx, &slices) {
            Poll::Ready(Ok(n)) if n < big.len() => {
                wrote += n;
                break;
            }
            Poll::Ready(Ok(n)) => wrote += n,
            other => panic!("filling the socket: {other:?}"),
        }
    }
    assert_eq!(drain_raw(&b), wrote, "the peer read everything: there is room");
    assert!(a.poll_writev(&mut cx, &slices).is_pending(), "the short write cleared the readiness");
    // The reactor reports the room: the write goes through.
    let n = within("write", TIMEOUT, std::future::poll_fn(|cx| a.poll_writev(cx, &slices))).await.expect("write");
    assert!(n > 0);
}

/// The same for scattered reads: one that got less than it asked for
/// drained the socket, so the next waits for the reactor's word.
#[tokio::test]
async fn a_short_scattered_read_waits_for_data_instead_of_asking_the_kernel_again() {
    use std::io::Write;
    let dir = TempDir::new("short-read");
    let (a, mut b) = unix_sockets(&dir).await;
    let fd = socket2::SockRef::from(&a);
    let read = |b: &mut conflux_hvsock::UnixSocket, cx: &mut Context<'_>| {
        let mut buf = BytesMut::with_capacity(1 << 16);
        let mut heads = [[0u8; 4]; 2];
        b.poll_read_scatter(cx, &mut buf, &[10, 4096, 4096], &mut heads)
    };
    assert!(b.reads_scatter());
    assert_eq!((&*fd).write(&[1; 100]).expect("write"), 100);
    let got = within("read", TIMEOUT, std::future::poll_fn(|cx| read(&mut b, cx))).await.expect("read");
    assert_eq!(got, 100, "a short read");
    assert_eq!((&*fd).write(&[2; 100]).expect("write"), 100);
    let mut cx = Context::from_waker(std::task::Waker::noop());
    assert!(read(&mut b, &mut cx).is_pending(), "the short read cleared the readiness");
    let got = within("read", TIMEOUT, std::future::poll_fn(|cx| read(&mut b, cx))).await.expect("read");
    assert_eq!(got, 100);
}

//! Focused tests of the flow crate's own pieces: boxing, halves, proxy error paths, stats.

use std::time::Duration;

use bytes::Bytes;
use conflux_flow::{BoxFlow, CopyStats, Direction, Flow, FlowExt, FromTokio, Pipe, Shutdown, Side, copy, pipe, proxy};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap()
}

#[test]
fn boxing_a_boxflow_adds_no_layer_and_downcasts() {
    let (a, _b) = pipe(16);
    let once = a.boxed();
    let twice = BoxFlow::new(once);
    assert!(twice.is::<Pipe>(), "BoxFlow::new(BoxFlow) must not wrap again");
    assert!(twice.type_name().ends_with("Pipe"));
    let twice = twice.downcast::<FromTokio<tokio::io::DuplexStream>>().unwrap_err();
    assert!(twice.downcast::<Pipe>().is_ok());
}

#[test]
fn halves_reunite_only_with_their_own_flow() {
    let (a, b) = pipe(16);
    let (ar, aw) = a.split();
    let (br, bw) = b.split();
    let err = ar.reunite(bw).unwrap_err();
    let (ar, bw) = (err.0, err.1);
    let a = ar.reunite(aw).expect("own halves reunite");
    let b = br.reunite(bw).expect("own halves reunite");
    drop((a, b));
}

#[test]
fn reunited_halves_do_not_shut_the_write_side() {
    rt().block_on(async {
        let (a, mut b) = pipe(16);
        let (ar, aw) = a.split();
        let mut a = ar.reunite(aw).unwrap();
        a.write("still open").await.unwrap();
        assert_eq!(b.read().await.unwrap().unwrap(), "still open");
    });
}

#[test]
fn copy_leaves_the_destination_open_and_counts() {
    rt().block_on(async {
        let (mut src_w, mut src) = pipe(1024);
        let (mut dst, mut dst_r) = pipe(1024);
        src_w.writev(vec![Bytes::from_static(b"ab"), Bytes::new(), Bytes::from_static(b"cde")]).await.unwrap();
        src_w.shutdown(Shutdown::Write).await.unwrap();
        let stats = copy(&mut src, &mut dst).await.unwrap();
        assert_eq!((stats.bytes, stats.reads, stats.writes), (5, 2, 2));
        dst.write("!").await.unwrap();
        dst.shutdown(Shutdown::Write).await.unwrap();
        assert_eq!(dst_r.read_to_end().await.unwrap(), b"abcde!");
    });
}

#[test]
fn proxy_passes_a_reset_on_as_an_abort() {
    rt().block_on(async {
        let (mut client, mut a) = pipe(1024);
        let (mut b, mut server) = pipe(1024);
        let relay = tokio::spawn(async move { proxy(&mut a, &mut b).await });
        client.write("partial").await.unwrap();
        assert_eq!(server.read().await.unwrap().unwrap(), "partial");
        client.abort().await.unwrap();
        let err = relay.await.unwrap().unwrap_err();
        assert_eq!((err.direction, err.side), (Direction::AToB, Side::Source), "{err}");
        assert!(err.source.is_reset());
        assert!(err.to_string().contains("a -> b"), "the error names the direction: {err}");
        let seen = server.read().await.unwrap_err();
        assert!(seen.is_reset(), "the server must see a reset, not a clean Eof: {seen}");
    });
}

#[test]
fn proxy_keeps_one_direction_flowing_after_the_other_ends() {
    rt().block_on(async {
        let (mut client, mut a) = pipe(1024);
        let (mut b, mut server) = pipe(1024);
        let relay = tokio::spawn(async move { proxy(&mut a, &mut b).await });
        client.shutdown(Shutdown::Write).await.unwrap();
        assert!(server.read().await.unwrap().is_none(), "the server sees Eof");
        tokio::time::sleep(Duration::from_millis(10)).await;
        server.write("late reply").await.unwrap();
        server.shutdown(Shutdown::Write).await.unwrap();
        assert_eq!(client.read_to_end().await.unwrap(), b"late reply");
        let stats = relay.await.unwrap().unwrap();
        assert_eq!((stats.a_to_b.bytes, stats.b_to_a.bytes), (0, 10));
        assert!(stats.a_to_b.duration < stats.b_to_a.duration, "each direction keeps its own clock");
    });
}

#[test]
fn stats_print_for_zero_durations_and_tiny_sizes() {
    let zero = CopyStats::default();
    assert_eq!(zero.to_string(), "0 B in 0 reads, 0 writes over 0.0ns");
    let big = CopyStats { bytes: 3 << 30, reads: 1, writes: 1, duration: Duration::from_secs(3) };
    assert_eq!(big.to_string(), "3.00 GiB in 1 reads, 1 writes over 3.0s (1073.74 MB/s)");
}

#[test]
fn a_flow_is_usable_as_a_trait_object() {
    rt().block_on(async {
        let (a, mut b) = pipe(16);
        let mut dynflow: Box<dyn Flow> = Box::new(a);
        dynflow.write("dyn").await.unwrap();
        dynflow.close().await.unwrap();
        assert_eq!(b.read_to_end().await.unwrap(), b"dyn");
    });
}

#[test]
fn flushing_the_tokio_view_finishes_a_flush_the_flow_owes() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
    rt().block_on(async {
        // 8 bytes of room: the buffered stream's flush stays pending until the reader drains.
        let (near, mut far) = tokio::io::duplex(8);
        let reader = tokio::spawn(async move {
            let mut got = [0u8; 18];
            far.read_exact(&mut got).await.map(|_| got)
        });
        // A flow whose writes sit in a buffer until flushed, seen through tokio again.
        let mut io = FromTokio::new(BufWriter::new(near)).into_tokio();
        io.write_all(b"held until flushed").await.unwrap();
        io.flush().await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), reader).await.expect("flush delivered everything");
        assert_eq!(&got.unwrap().unwrap(), b"held until flushed");
        io.shutdown().await.unwrap();
        io.flush().await.expect("an empty write after shutdown is still Ok");
    });
}

/// The pipe's counters: what the peer wrote and we did not read yet, and
/// what we wrote that the peer did not read yet.
#[tokio::test]
async fn pipe_counts_unread_bytes_on_both_ends() {
    let (mut a, mut b) = pipe(1024);
    a.write("hello").await.unwrap();
    assert_eq!((a.unread_by_peer(), b.readable_bytes()), (5, 5));
    assert_eq!(b.read().await.unwrap().as_deref(), Some(&b"hello"[..]));
    assert_eq!((a.unread_by_peer(), b.readable_bytes()), (0, 0));
}

/// A write half turned into a shared writer: clones write whole messages,
/// never interleaved.
#[tokio::test]
async fn a_write_half_into_shared_keeps_messages_whole() {
    let (a, mut b) = pipe(4);
    let (_r, w) = a.split();
    let one = w.into_shared();
    let two = one.clone();
    let reader = async {
        let mut got = Vec::new();
        while got.len() < 24 {
            got.extend_from_slice(&b.read().await.unwrap().expect("data"));
        }
        got
    };
    let (x, y, got) = tokio::join!(one.write("first message"), two.write("second msg!"), reader);
    x.unwrap();
    y.unwrap();
    assert!(
        got == b"first messagesecond msg!" || got == b"second msg!first message",
        "{:?}",
        String::from_utf8_lossy(&got)
    );
}

/// The default `poll_read_into` (a flow that reads owned chunks): copies
/// what fits, leaves the rest of the chunk in `rest`; Eof fills nothing.
#[tokio::test]
async fn the_default_read_into_copies_a_chunk_and_spills_the_rest() {
    let (mut a, mut b) = conflux_flow::pipe(1024);
    a.write("hello, world").await.unwrap();
    a.shutdown(Shutdown::Write).await.unwrap();
    let mut mem = [0u8; 5];
    let mut buf = tokio::io::ReadBuf::new(&mut mem);
    let mut rest = Bytes::new();
    std::future::poll_fn(|cx| b.poll_read_into(cx, &mut buf, &mut rest)).await.unwrap();
    assert_eq!((buf.filled(), &rest[..]), (&b"hello"[..], &b", world"[..]));
    let mut mem = [0u8; 5];
    let mut buf = tokio::io::ReadBuf::new(&mut mem);
    let mut rest = Bytes::new();
    std::future::poll_fn(|cx| b.poll_read_into(cx, &mut buf, &mut rest)).await.unwrap();
    assert!(buf.filled().is_empty() && rest.is_empty(), "Eof");
}

/// `FlowIo`'s `AsyncRead` with a buffer smaller than a chunk: what the
/// chunk spilled comes first, in order, and nothing is lost.
#[tokio::test]
async fn flowio_hands_out_what_a_chunk_spilled_before_reading_again() {
    use tokio::io::AsyncReadExt;
    let (mut a, b) = pipe(1024);
    a.write("hello, world").await.unwrap();
    a.write("!").await.unwrap();
    a.shutdown(Shutdown::Write).await.unwrap();
    let mut io = b.into_tokio();
    let (mut got, mut small) = (Vec::new(), [0u8; 3]);
    loop {
        let n = io.read(&mut small).await.unwrap();
        if n == 0 {
            break;
        }
        assert!(n <= 3);
        got.extend_from_slice(&small[..n]);
    }
    assert_eq!(got, b"hello, world!");
}

//! G3: a length-delimited codec (4-byte little-endian length) round-trips
//! frames over a flow through `FlowIo`; Eof in the middle of a frame is an error.

use bytes::{Bytes, BytesMut};
use conflux_flow::{FlowExt, FlowIo, FromTokio, Shutdown, pipe};
use conflux_testkit::{TIMEOUT, payload, within};
use futures_util::{SinkExt, StreamExt};
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};

fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder().length_field_length(4).little_endian().max_frame_length(1 << 20).new_codec()
}

/// Frame sizes around the header, the pipe buffer and the chunk size.
const SIZES: [usize; 10] = [0, 1, 3, 4, 5, 1000, 16 * 1024 - 4, 16 * 1024 + 3, 64 * 1024, 300_000];

fn frames() -> Vec<Bytes> {
    SIZES.iter().enumerate().map(|(i, &n)| payload(0x63 + i as u64, n)).collect()
}

/// Sends every frame through `tx`, closes it, and checks `rx` yields them all, then ends.
async fn round_trip<W, R>(tx: W, rx: R)
where
    W: tokio::io::AsyncWrite + Unpin,
    R: tokio::io::AsyncRead + Unpin,
{
    let mut tx = FramedWrite::new(tx, codec());
    let mut rx = FramedRead::new(rx, codec());
    let sent = frames();
    let send = async {
        for f in &sent {
            tx.send(f.clone()).await.expect("send a frame");
        }
        // Closing the sink shuts down the flow's write side.
        SinkExt::<Bytes>::close(&mut tx).await.expect("close the sink");
    };
    let receive = async {
        let mut got = Vec::new();
        while let Some(frame) = rx.next().await {
            got.push(frame.expect("a whole frame").freeze());
        }
        got
    };
    let ((), got) = within("frames over the flow", TIMEOUT, async { tokio::join!(send, receive) }).await;
    assert_eq!(got.len(), sent.len(), "frame count");
    for (i, (g, s)) in got.iter().zip(&sent).enumerate() {
        assert!(g == s, "frame {i}: {} bytes received, {} sent, or different bytes", g.len(), s.len());
    }
}

#[tokio::test(start_paused = true)]
async fn frames_round_trip_over_a_pipe() {
    // A 16 KiB pipe: the bigger frames go through backpressure.
    let (a, b) = pipe(16 * 1024);
    round_trip(FlowIo::new(a), FlowIo::new(b)).await;
}

#[tokio::test(start_paused = true)]
async fn frames_round_trip_over_a_boxed_duplex() {
    let (a, b) = tokio::io::duplex(8 * 1024);
    round_trip(FlowIo::new(FromTokio::new(a).boxed()), FlowIo::new(FromTokio::new(b).boxed())).await;
}

#[tokio::test(start_paused = true)]
async fn frames_both_ways_on_one_flow() {
    let (a, b) = pipe(16 * 1024);
    let (mut a, mut b) = (
        tokio_util::codec::Framed::new(FlowIo::new(a), codec()),
        tokio_util::codec::Framed::new(FlowIo::new(b), codec()),
    );
    for f in frames() {
        // Each side sends and reads in one future: the echo of a frame larger
        // than the pipe's buffer needs a reader while it is written.
        let client = async {
            a.send(f.clone()).await.expect("send");
            a.next().await.expect("the echo").expect("a whole echo")
        };
        let server = async {
            let got = b.next().await.expect("a frame").expect("a whole frame");
            b.send(got.freeze()).await.expect("echo");
        };
        let (echo, ()) = within("a frame and its echo", TIMEOUT, async { tokio::join!(client, server) }).await;
        assert!(echo == f, "echo of a {}-byte frame differs", f.len());
    }
}

/// Writes raw bytes, shuts the write side, and returns what the decoder makes of them.
async fn decode_raw(raw: &[u8]) -> Vec<Result<BytesMut, std::io::Error>> {
    let (mut a, b) = pipe(1024);
    a.write(Bytes::copy_from_slice(raw)).await.expect("write");
    a.shutdown(Shutdown::Write).await.expect("shutdown(Write)");
    let rx = FramedRead::new(FlowIo::new(b), codec());
    within("decoding to the end", TIMEOUT, rx.collect::<Vec<_>>()).await
}

#[tokio::test(start_paused = true)]
async fn eof_mid_frame_is_an_error() {
    // A whole 3-byte frame, then a header announcing 100 bytes and only 10 of them.
    let mut raw = vec![3, 0, 0, 0, b'a', b'b', b'c', 100, 0, 0, 0];
    raw.extend_from_slice(&[7; 10]);
    let got = decode_raw(&raw).await;
    assert_eq!(got.len(), 2, "one frame, then one error: {got:?}");
    assert_eq!(&got[0].as_ref().expect("the whole frame")[..], b"abc");
    assert!(got[1].is_err(), "Eof inside a frame's body must be an error, got {:?}", got[1]);
}

#[tokio::test(start_paused = true)]
async fn eof_mid_header_is_an_error() {
    let got = decode_raw(&[5, 0]).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].is_err(), "Eof inside a header must be an error");
}

#[tokio::test(start_paused = true)]
async fn eof_between_frames_ends_cleanly() {
    let got = decode_raw(&[1, 0, 0, 0, b'x', 0, 0, 0, 0]).await;
    let frames: Vec<_> = got.into_iter().map(|f| f.expect("a whole frame")).collect();
    assert_eq!(frames, vec![BytesMut::from(&b"x"[..]), BytesMut::new()]);
}

#[tokio::test(start_paused = true)]
async fn little_endian_length_on_the_wire() {
    let (a, mut b) = pipe(1024);
    let mut tx = FramedWrite::new(FlowIo::new(a), codec());
    tx.send(Bytes::from_static(&[9; 258])).await.expect("send");
    SinkExt::<Bytes>::close(&mut tx).await.expect("close");
    let wire = b.read_to_end().await.expect("read the wire");
    assert_eq!(wire[..4], [2, 1, 0, 0], "258 as 4 little-endian bytes");
    assert_eq!(wire.len(), 4 + 258);
}

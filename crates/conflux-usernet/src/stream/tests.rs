//! The stream device against raw peers (batched receive, truncation, bad
//! lengths, batched sends, backpressure) and two netstacks talking TCP
//! through two devices.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::task::Poll;
use std::time::Duration;

use conflux_flow::{FlowExt, Shutdown, pipe};
use conflux_netstack::{FrameBuf, FrameDevice, FramePool, NetStack, StackConfig};
use conflux_tcp::TcpStack;
use conflux_testkit::{TIMEOUT, within};

use super::*;
use crate::qemu::StreamHeaderError;

fn wire(frames: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in frames {
        out.extend_from_slice(&(f.len() as u32).to_be_bytes());
        out.extend_from_slice(f);
    }
    out
}

fn frame(seed: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| seed.wrapping_add(i as u8)).collect()
}

/// Receives until `n` frames came (each poll_recv asked for at most `max`);
/// returns the frames and how many polls returned Ready.
async fn recv(dev: &mut StreamDevice, n: usize, max: usize) -> io::Result<(Vec<FrameBuf>, usize)> {
    let mut frames = Vec::new();
    let mut polls = 0;
    while frames.len() < n {
        within("poll_recv", TIMEOUT, poll_fn(|cx| dev.poll_recv(cx, &mut frames, max))).await?;
        polls += 1;
    }
    Ok((frames, polls))
}

async fn recv_err(dev: &mut StreamDevice) -> io::Error {
    let mut frames = Vec::new();
    let err = within("poll_recv", TIMEOUT, poll_fn(|cx| dev.poll_recv(cx, &mut frames, 64))).await.unwrap_err();
    assert!(frames.is_empty());
    err
}

fn device_error(err: &io::Error) -> &StreamDeviceError {
    err.get_ref().and_then(|e| e.downcast_ref::<StreamDeviceError>()).expect("a StreamDeviceError inside")
}

#[tokio::test(start_paused = true)]
async fn one_read_gives_every_frame_in_it_from_the_pool() {
    let (mut peer, ours) = pipe(1 << 20);
    let mut dev = StreamDevice::new(ours, 1500);
    let pool = FramePool::new();
    dev.set_pool(pool.clone());
    let frames: Vec<Vec<u8>> = (0..10).map(|i| frame(i, 60 + 100 * i as usize)).collect();
    let refs: Vec<&[u8]> = frames.iter().map(|f| &f[..]).collect();
    peer.write(wire(&refs)).await.unwrap();
    let (got, polls) = recv(&mut dev, 10, 64).await.unwrap();
    assert_eq!(polls, 1, "ten frames in one read come out of one poll");
    assert_eq!(got.iter().map(|f| f.to_vec()).collect::<Vec<_>>(), frames);
    drop(got);
    assert_eq!(pool.idle(), 10, "received frames were the driver's pool's");
    // `max` is honoured; the rest waits in the device.
    peer.write(wire(&refs)).await.unwrap();
    let (got, _) = recv(&mut dev, 3, 3).await.unwrap();
    assert_eq!(got.len(), 3);
    let (got, _) = recv(&mut dev, 7, 64).await.unwrap();
    assert_eq!(got.iter().map(|f| f.to_vec()).collect::<Vec<_>>(), frames[3..]);
}

#[tokio::test(start_paused = true)]
async fn frames_split_across_writes_are_reassembled() {
    let (mut peer, ours) = pipe(1 << 20);
    let mut dev = StreamDevice::new(ours, 1500);
    let frames = [frame(1, 1514), frame(2, 42), frame(3, 700)];
    let bytes = wire(&[&frames[0], &frames[1], &frames[2]]);
    let writer = async {
        for piece in bytes.chunks(333) {
            peer.write(Bytes::copy_from_slice(piece)).await.unwrap();
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    };
    let (_, got) = tokio::join!(writer, recv(&mut dev, 3, 64));
    let got: Vec<Vec<u8>> = got.unwrap().0.iter().map(|f| f.to_vec()).collect();
    assert_eq!(got, frames);
}

/// Large frames (4 KiB or more still to come) are read straight into their
/// buffers: whole, in order, with the frames around them, however the
/// writes cut them; the flow's bytes past the frame are decoded next.
#[tokio::test(start_paused = true)]
async fn large_frames_read_straight_into_their_buffers_come_out_whole() {
    let frames = [frame(1, 65534), frame(2, 66), frame(3, 20000), frame(4, 1514), frame(5, 65534), frame(6, 60)];
    let refs: Vec<&[u8]> = frames.iter().map(|f| &f[..]).collect();
    let bytes = wire(&refs);
    for cut in [bytes.len(), 70_000, 5000, 4097, 1000] {
        let (mut peer, ours) = pipe(1 << 20);
        let mut dev = StreamDevice::new(ours, 65520);
        let writer = async {
            for piece in bytes.chunks(cut) {
                peer.write(Bytes::copy_from_slice(piece)).await.unwrap();
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        };
        let (_, got) = tokio::join!(writer, recv(&mut dev, frames.len(), 64));
        let got: Vec<Vec<u8>> = got.unwrap().0.iter().map(|f| f.to_vec()).collect();
        assert!(got == frames, "cut at {cut}: lengths {:?}", got.iter().map(Vec::len).collect::<Vec<_>>());
    }
}

/// A peer vanishing inside a large frame being read straight into its
/// buffer ends the device with the truncation, counted exactly.
#[tokio::test(start_paused = true)]
async fn a_peer_vanishing_inside_a_large_frame_ends_the_device_with_the_bytes_missing() {
    let (mut peer, ours) = pipe(1 << 20);
    let mut dev = StreamDevice::new(ours, 65520);
    let bytes = wire(&[&frame(1, 65534)]);
    peer.write(Bytes::copy_from_slice(&bytes[..4 + 10_000])).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1)).await;
    peer.write(Bytes::copy_from_slice(&bytes[4 + 10_000..4 + 30_000])).await.unwrap();
    peer.shutdown(Shutdown::Write).await.unwrap();
    let err = recv_err(&mut dev).await;
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    assert!(
        matches!(
            device_error(&err),
            StreamDeviceError::Decode(StreamDecodeError::Truncated { header_bytes: 0, payload_missing: 35_534 })
        ),
        "{:?}",
        device_error(&err)
    );
}

#[tokio::test(start_paused = true)]
async fn a_peer_vanishing_mid_frame_ends_the_device_with_a_typed_error() {
    for (cut, header_bytes, missing) in [(2, 2, 0), (4, 0, 60), (30, 0, 34)] {
        let (mut peer, ours) = pipe(1 << 20);
        let mut dev = StreamDevice::new(ours, 1500);
        let bytes = wire(&[&frame(9, 42), &frame(1, 60)]);
        peer.write(Bytes::copy_from_slice(&bytes[..46 + cut])).await.unwrap();
        peer.shutdown(Shutdown::Write).await.unwrap();
        // The whole frame before the cut still comes up first.
        let (got, _) = recv(&mut dev, 1, 64).await.unwrap();
        assert_eq!(got[0].to_vec(), frame(9, 42));
        let err = recv_err(&mut dev).await;
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        let want = StreamDecodeError::Truncated { header_bytes, payload_missing: missing };
        assert!(matches!(device_error(&err), StreamDeviceError::Decode(e) if *e == want), "{err}");
        assert!(err.to_string().contains("qemu stream: stream truncated"), "{err}");
        // Latched: sends fail too.
        assert_eq!(recv_err(&mut dev).await.kind(), io::ErrorKind::UnexpectedEof);
        assert!(dev.send(FrameBuf::from(frame(0, 60))).is_err());
        assert!(dev.ended().is_some());
    }
}

#[tokio::test(start_paused = true)]
async fn a_clean_close_and_a_reset_end_the_device() {
    let (mut peer, ours) = pipe(1 << 20);
    let mut dev = StreamDevice::new(ours, 1500);
    peer.write(wire(&[&frame(1, 60)])).await.unwrap();
    peer.close().await.unwrap();
    assert_eq!(recv(&mut dev, 1, 64).await.unwrap().0.len(), 1);
    let err = recv_err(&mut dev).await;
    assert_eq!(err.kind(), io::ErrorKind::ConnectionAborted);
    assert!(matches!(device_error(&err), StreamDeviceError::Closed), "{err}");

    let (mut peer, ours) = pipe(1 << 20);
    let mut dev = StreamDevice::new(ours, 1500);
    peer.abort().await.unwrap();
    let err = recv_err(&mut dev).await;
    assert!(matches!(device_error(&err), StreamDeviceError::Flow(e) if e.is_reset()), "{err}");
}

#[tokio::test(start_paused = true)]
async fn zero_and_oversize_lengths_end_the_device_naming_the_length() {
    for (header, len, mtu) in
        [([0u8, 0, 0, 0], 0u32, 1500), ([0, 0, 0x05, 0xeb], 1515, 1500), ([0, 0, 0x23, 0x2f], 9007, 8992)]
    {
        let (mut peer, ours) = pipe(1 << 20);
        let mut dev = StreamDevice::new(ours, mtu);
        let mut bytes = wire(&[&frame(1, 1514)]);
        bytes.extend_from_slice(&header);
        peer.write(bytes).await.unwrap();
        assert_eq!(recv(&mut dev, 1, 64).await.unwrap().0[0].len(), 1514, "the good frame first");
        let err = recv_err(&mut dev).await;
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        let want =
            if len == 0 { StreamHeaderError::Zero } else { StreamHeaderError::Oversize { len, max: mtu as u32 + 14 } };
        assert!(
            matches!(device_error(&err), StreamDeviceError::Decode(StreamDecodeError::Header(e)) if *e == want),
            "{err}"
        );
        assert!(err.to_string().contains(&format!("frame length {len}")), "{err}");
    }
    // 9006 = 8992 + 14 is fine at MTU 8992.
    let (mut peer, ours) = pipe(1 << 20);
    let mut dev = StreamDevice::new(ours, 8992);
    peer.write(wire(&[&frame(5, 9006)])).await.unwrap();
    assert_eq!(recv(&mut dev, 1, 64).await.unwrap().0[0].to_vec(), frame(5, 9006));
}

#[tokio::test(start_paused = true)]
async fn sends_are_framed_in_order_with_backpressure() {
    // A pipe of 8 KiB: 200 frames cannot all be accepted at once.
    let (mut peer, ours) = pipe(8192);
    let mut dev = StreamDevice::new(ours, 1500);
    let pool = FramePool::new();
    dev.set_pool(pool.clone());
    let frames: Vec<Vec<u8>> = (0..200).map(|i| frame(i as u8, [42, 1514, 1025, 60][i % 4])).collect();
    let mut tx: VecDeque<FrameBuf> = frames
        .iter()
        .map(|f| {
            let mut b = pool.take(f.len());
            b.copy_from_slice(f);
            b
        })
        .collect();
    let want = wire(&frames.iter().map(|f| &f[..]).collect::<Vec<_>>());
    let mut pendings = 0;
    // As the stack's driver does: send only while frames wait, receive every round.
    let sender = async {
        let mut dummy = Vec::new();
        while !(tx.is_empty() && dev.out.is_empty()) {
            let round = poll_fn(|cx| {
                if !tx.is_empty() {
                    match dev.poll_send_batch(cx, &mut tx) {
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                        Poll::Pending => pendings += 1,
                        Poll::Ready(Ok(())) => {}
                    }
                }
                // The receive poll finishes a batch the flow did not take yet.
                match dev.poll_recv(cx, &mut dummy, 1) {
                    Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                    _ => Poll::Ready(Ok(())),
                }
            });
            within("round", TIMEOUT, round).await.unwrap();
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        dev
    };
    let reader = async {
        let mut got = Vec::new();
        while got.len() < want.len() {
            got.extend_from_slice(&within("read", TIMEOUT, peer.read()).await.unwrap().unwrap());
        }
        got
    };
    let (dev, got) = tokio::join!(sender, reader);
    assert!(got == want, "the peer reads every frame, in order, each after its big-endian length");
    assert!(pendings > 0, "backpressure: the send was pending at least once");
    assert!(tx.is_empty());
    assert_eq!(pool.idle(), 200, "every sent frame went back to the pool");
    // Single sends take the same path.
    let mut dev = dev;
    dev.send(FrameBuf::from(frame(7, 100))).unwrap();
    dev.send(FrameBuf::from(vec![0u8; 1515])).unwrap(); // too big: dropped, as a wire would
    dev.send(FrameBuf::from(frame(8, 2000).split_off(1986))).unwrap();
    within("flush", TIMEOUT, poll_fn(|cx| dev.poll_send_ready(cx))).await.unwrap();
    let want = wire(&[&frame(7, 100), &frame(8, 2000)[1986..]]);
    let mut got = Vec::new();
    while got.len() < want.len() {
        got.extend_from_slice(&within("read", TIMEOUT, peer.read()).await.unwrap().unwrap());
    }
    assert_eq!(got, want);
}

const A: &str = "10.0.2.2";

#[tokio::test(start_paused = true)]
async fn two_netstacks_exchange_tcp_through_two_stream_devices() {
    // B echoes; A sends 1 MB and reads it back, with a half-close.
    let (fa, fb) = pipe(256 * 1024);
    crate::test_echo::echo_across(StreamDevice::new(fa, 1500), StreamDevice::new(fb, 1500), 1_000_000).await;
}

#[tokio::test(start_paused = true)]
async fn a_stack_whose_peer_vanishes_mid_frame_stops_and_says_why() {
    let (fa, mut peer) = pipe(256 * 1024);
    let (tx, rx) = tokio::sync::oneshot::channel();
    let config = StackConfig::new().ipv4(A.parse().unwrap(), 24).mac([2, 0, 0, 0, 0, 1]);
    let dev = StreamDevice::new(fa, 1500).on_end(move |e| {
        let _ = tx.send(e.clone());
    });
    let a = NetStack::new(config, dev);
    let port = a.listen(7, None, |_| async {}).unwrap().port();
    assert_eq!(port, 7);
    peer.write(Bytes::from_static(&[0, 0, 0, 60, 1, 2, 3])).await.unwrap();
    peer.shutdown(Shutdown::Write).await.unwrap();
    let why = within("the device's end", TIMEOUT, rx).await.expect("on_end called");
    assert!(
        matches!(why, StreamDeviceError::Decode(StreamDecodeError::Truncated { header_bytes: 0, payload_missing: 57 })),
        "{why}"
    );
    // The driver ended: the device's end of the pipe is dropped, so the peer reads Eof.
    let end = within("device dropped", TIMEOUT, peer.read()).await;
    assert!(matches!(end, Ok(None)), "{end:?}");
}

//! The datagram device over real AF_UNIX socket pairs (real time: the
//! kernel moves the datagrams): batched receive, runts and giants dropped,
//! sends one datagram per frame, and two netstacks talking TCP through it.

use std::collections::VecDeque;
use std::future::poll_fn;

use conflux_testkit::{TIMEOUT, within};

use super::*;

fn frame(seed: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| seed.wrapping_add(i as u8)).collect()
}

#[tokio::test]
async fn queued_datagrams_come_out_of_one_poll_and_bad_ones_are_dropped() {
    let (ours, vm) = UnixDatagram::pair().unwrap();
    let mut dev = DgramDevice::new(ours, 1500);
    let pool = FramePool::new();
    dev.set_pool(pool.clone());
    let good: Vec<Vec<u8>> = (0..6).map(|i| frame(i, [14, 60, 1514, 590, 42, 1000][i as usize])).collect();
    vm.send(b"VFKT").await.unwrap(); // vfkit's greeting: not a frame
    vm.send(&good[0]).await.unwrap();
    vm.send(&[]).await.unwrap(); // empty
    vm.send(&good[1]).await.unwrap();
    vm.send(&frame(9, 1515)).await.unwrap(); // above MTU 1500 + 14
    for g in &good[2..] {
        vm.send(g).await.unwrap();
    }
    let mut got = Vec::new();
    within("poll_recv", TIMEOUT, poll_fn(|cx| dev.poll_recv(cx, &mut got, 64))).await.unwrap();
    assert_eq!(got.iter().map(|f| f.to_vec()).collect::<Vec<_>>(), good, "every good frame from one poll, in order");
    assert_eq!(dev.dropped(), 3);
    drop(got);
    assert!(pool.idle() >= 6, "frames came from the driver's pool");
    // `max` is honoured.
    for g in &good {
        vm.send(g).await.unwrap();
    }
    let mut got = Vec::new();
    within("poll_recv", TIMEOUT, poll_fn(|cx| dev.poll_recv(cx, &mut got, 4))).await.unwrap();
    assert_eq!(got.len(), 4);
    within("poll_recv", TIMEOUT, poll_fn(|cx| dev.poll_recv(cx, &mut got, 4))).await.unwrap();
    assert_eq!(got.iter().map(|f| f.to_vec()).collect::<Vec<_>>(), good);
}

#[tokio::test]
async fn sends_are_one_datagram_per_frame_and_a_vanished_peer_ends_the_device() {
    let (ours, vm) = UnixDatagram::pair().unwrap();
    let mut dev = DgramDevice::new(ours, 1500);
    let frames: Vec<Vec<u8>> = (0..50).map(|i| frame(i as u8, 60 + i * 29)).collect();
    let mut tx: VecDeque<FrameBuf> = frames.iter().cloned().map(FrameBuf::from).collect();
    tx.push_back(FrameBuf::from(frame(0, 1515))); // too big: dropped
    let reader = async {
        let mut got = Vec::new();
        let mut buf = vec![0; 2000];
        while got.len() < 50 {
            let n = within("recv", TIMEOUT, vm.recv(&mut buf)).await.unwrap();
            got.push(buf[..n].to_vec());
        }
        got
    };
    let (sent, got) = tokio::join!(within("send", TIMEOUT, poll_fn(|cx| dev.poll_send_batch(cx, &mut tx))), reader);
    sent.unwrap();
    assert_eq!(got, frames);
    assert_eq!(dev.dropped(), 1);
    within("ready", TIMEOUT, poll_fn(|cx| dev.poll_send_ready(cx))).await.unwrap();
    dev.send(FrameBuf::from(frame(3, 100))).unwrap();
    let mut buf = vec![0; 2000];
    let n = within("recv", TIMEOUT, vm.recv(&mut buf)).await.unwrap();
    assert_eq!(buf[..n], frame(3, 100));
    drop(vm);
    let mut tx: VecDeque<FrameBuf> = [FrameBuf::from(frame(1, 60))].into();
    let err = within("send", TIMEOUT, poll_fn(|cx| dev.poll_send_batch(cx, &mut tx))).await.unwrap_err();
    assert!(peer_gone(&err), "{err}");
}

#[tokio::test]
async fn accept_connects_to_the_vm_that_greeted() {
    let dir = conflux_testkit::TempDir::new("unixgram");
    let server = UnixDatagram::bind(dir.path().join("net.sock")).unwrap();
    let vm = UnixDatagram::bind(dir.path().join("vm.sock")).unwrap();
    vm.connect(dir.path().join("net.sock")).unwrap();
    vm.send(b"VFKT").await.unwrap();
    let mut dev = within("accept", TIMEOUT, DgramDevice::accept(server, 1500)).await.unwrap();
    vm.send(&frame(1, 60)).await.unwrap();
    let mut got = Vec::new();
    within("poll_recv", TIMEOUT, poll_fn(|cx| dev.poll_recv(cx, &mut got, 8))).await.unwrap();
    assert_eq!(got[0].to_vec(), frame(1, 60));
    let mut tx: VecDeque<FrameBuf> = [FrameBuf::from(frame(2, 70))].into();
    within("send", TIMEOUT, poll_fn(|cx| dev.poll_send_batch(cx, &mut tx))).await.unwrap();
    let mut buf = [0; 2000];
    let n = within("recv", TIMEOUT, vm.recv(&mut buf)).await.unwrap();
    assert_eq!(buf[..n], frame(2, 70), "answered at the VM's path");
    // A VM socket without a path cannot be answered.
    let server = UnixDatagram::bind(dir.path().join("net2.sock")).unwrap();
    let anon = UnixDatagram::unbound().unwrap();
    anon.send_to(b"VFKT", dir.path().join("net2.sock")).await.unwrap();
    let err = within("accept", TIMEOUT, DgramDevice::accept(server, 1500)).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("no path"), "{err}");
}

#[tokio::test]
async fn two_netstacks_exchange_tcp_through_two_dgram_devices() {
    let (sa, sb) = UnixDatagram::pair().unwrap();
    crate::test_echo::echo_across(DgramDevice::new(sa, 1500), DgramDevice::new(sb, 1500), 300_000).await;
}

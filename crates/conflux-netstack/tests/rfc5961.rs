//! RFC 5961 cases against a scripted peer that writes raw TCP/IPv4 segments
//! on the other end of an in-memory IP link (checksums offloaded), in
//! virtual time, plus the handshake timeout of accepted connections.

mod support;

use std::time::Duration;

use conflux_flow::FlowExt;
use conflux_netstack::Checksums;
use conflux_tcp::{ConnectError, ConnectOptions, TcpStack};
use conflux_testkit::within;

use support::peer::{ACK, PSH, Peer, RST, SYN};

#[tokio::test(start_paused = true)]
async fn syn_sent_ignores_a_bad_ack_rst_and_a_correct_rst_refuses() {
    let (mut peer, stack) = Peer::new(80, 0, Checksums::Offloaded);
    let connect = tokio::spawn({
        let stack = stack.clone();
        async move { stack.create_connection(support::addr(support::B4, 80), ConnectOptions::new()).await }
    });
    let syn = peer.recv().await;
    assert_eq!(syn.flags & SYN, SYN);
    peer.stack_addr = support::addr(support::A4, syn.sport);
    let iss = syn.seq;
    // RST with an unacceptable ACK: ignored (RFC 793, RFC 5961 section 3).
    peer.send(0, iss.wrapping_add(1000), RST | ACK, b"");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!connect.is_finished(), "a bad-ACK RST ended the connect");
    // The correct RST: Refused.
    peer.send(0, iss.wrapping_add(1), RST | ACK, b"");
    let res = within("connect", Duration::from_secs(5), connect).await.unwrap();
    assert!(matches!(res, Err(ConnectError::Refused { .. })), "{res:?}");
}

#[tokio::test(start_paused = true)]
async fn out_of_window_segments_leave_the_flow_open_and_an_exact_rst_resets() {
    let (mut peer, stack) = Peer::new(4000, 80, Checksums::Offloaded);
    let (seq, theirs, mut flow) = peer.handshake(&stack).await;

    // An out-of-window RST is dropped silently (RFC 5961 3.2); the flow
    // stays open.
    peer.send(seq.wrapping_add(10_000_000), 0, RST, b"");
    assert_eq!(peer.recv_within(Duration::from_millis(500)).await, None, "no reply to an out-of-window RST");

    // An out-of-window SYN on an established connection: a challenge ACK,
    // still open (RFC 5961 4.2).
    tokio::time::sleep(Duration::from_secs(2)).await;
    peer.send(seq.wrapping_add(10_000_000), theirs, SYN | ACK, b"");
    let challenge = peer.recv().await;
    assert_eq!(challenge.flags & (ACK | RST | SYN), ACK, "{challenge:?}");
    assert_eq!(challenge.ack, seq);

    // Out-of-window data: an ACK for what we expect, the data dropped.
    tokio::time::sleep(Duration::from_secs(2)).await;
    peer.send(seq.wrapping_add(10_000_000), theirs, ACK | PSH, b"far away");
    let ack = peer.recv().await;
    assert_eq!(ack.flags & (ACK | RST), ACK, "{ack:?}");
    assert_eq!(ack.ack, seq);

    // The flow is still open: data flows both ways.
    peer.send(seq, theirs, ACK | PSH, b"hello");
    assert_eq!(within("read", Duration::from_secs(5), flow.read()).await.unwrap().as_deref(), Some(&b"hello"[..]));
    let seq = seq + 5;
    flow.write("back").await.unwrap();
    let data = loop {
        let s = peer.recv().await;
        if !s.payload.is_empty() {
            break s;
        }
    };
    assert_eq!(data.payload, b"back");
    let theirs_after = theirs.wrapping_add(4);
    peer.send(seq, theirs_after, ACK, b"");

    // Old but acceptable ACK (SND.UNA - MAX.SND.WND <= SEG.ACK < SND.UNA)
    // with data: the data is delivered.
    peer.send(seq, theirs, ACK | PSH, b"old ack");
    assert_eq!(within("read", Duration::from_secs(5), flow.read()).await.unwrap().as_deref(), Some(&b"old ack"[..]));
    let seq = seq + 7;

    // An RST exactly at RCV.NXT resets the flow (a reset, not Eof: the
    // flow contract never turns a reset into a clean end).
    peer.send(seq, 0, RST, b"");
    let err = within("read after RST", Duration::from_secs(5), flow.read()).await.expect_err("a reset");
    assert!(err.is_reset(), "{err}");
}

#[tokio::test(start_paused = true)]
async fn an_unfinished_handshake_is_dropped_after_the_timeout() {
    let (mut peer, stack) = Peer::new(4001, 81, Checksums::Offloaded);
    stack.listen(81, None, |f| async move { drop(f) }).unwrap();
    peer.send(5000, 0, SYN, b"");
    let synack = peer.recv().await;
    assert_eq!(synack.flags & (SYN | ACK), SYN | ACK);
    assert_eq!(stack.sockets(), 1, "one half-open socket");
    // Never ACK: the default handshake timeout is 10 s.
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert_eq!(stack.sockets(), 0, "the half-open socket was dropped and reaped");
    assert_eq!(stack.open_flows(), 0);
}

/// RFC 5961 3.2: an RST inside the window but not exactly at RCV.NXT draws
/// a challenge ACK (acknowledging RCV.NXT) and leaves the flow open; 4.2: so
/// does a SYN on an established connection, with or without ACK, in the
/// window or not. (smoltcp alone resets on the first and drops the second
/// silently.)
#[tokio::test(start_paused = true)]
async fn an_inexact_rst_and_a_syn_on_an_established_flow_draw_challenge_acks() {
    let (mut peer, stack) = Peer::new(4002, 82, Checksums::Offloaded);
    let (seq, theirs, mut flow) = peer.handshake(&stack).await;
    for (what, seq_sent, ack, flags) in [
        ("an in-window RST past RCV.NXT", seq.wrapping_add(100), 0, RST),
        ("an in-window RST|ACK past RCV.NXT", seq.wrapping_add(1), theirs, RST | ACK),
        ("a bare SYN at RCV.NXT", seq, 0, SYN),
        ("an in-window SYN|ACK", seq.wrapping_add(10), theirs, SYN | ACK),
    ] {
        // smoltcp sends at most one challenge ACK per second.
        tokio::time::sleep(Duration::from_secs(2)).await;
        peer.send(seq_sent, ack, flags, b"");
        let challenge = peer.recv_within(Duration::from_secs(1)).await.unwrap_or_else(|| panic!("{what}: no reply"));
        assert_eq!(challenge.flags & (ACK | RST | SYN), ACK, "{what}: {challenge:?}");
        assert_eq!(challenge.ack, seq, "{what}: the challenge acknowledges RCV.NXT");
    }
    // Still open both ways.
    peer.send(seq, theirs, ACK | PSH, b"alive");
    assert_eq!(within("read", Duration::from_secs(5), flow.read()).await.unwrap().as_deref(), Some(&b"alive"[..]));
    flow.write("too").await.unwrap();
    let data = peer.recv_data_within(Duration::from_secs(5)).await.expect("data");
    assert_eq!(data.payload, b"too");
    // The exact RST still resets.
    peer.send(seq + 5, 0, RST, b"");
    let err = within("read after RST", Duration::from_secs(5), flow.read()).await.expect_err("a reset");
    assert!(err.is_reset(), "{err}");
}

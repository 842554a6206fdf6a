//! The state machine, driven by hand: vector 5, timeouts, latching, kinds.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::*;
use crate::codec::Encoder;

/// One endpoint plus its wire buffers, moved by hand.
struct Side {
    ep: Endpoint,
    rx: BytesMut,
    enc: Encoder,
}

impl Side {
    fn new() -> Side {
        Side { ep: Endpoint::new(FramingConfig::new()), rx: BytesMut::new(), enc: Encoder::new() }
    }

    fn write(&mut self, data: &'static [u8]) {
        self.ep.write_allowed().unwrap();
        self.enc.push_data(&mut Bytes::from_static(data), usize::MAX);
    }

    /// Everything this side would put on the wire now.
    fn wire(&mut self) -> Vec<u8> {
        while let Some(h) = self.ep.poll_transmit() {
            self.enc.push_marker(h);
        }
        self.enc.to_vec()
    }

    fn read(&mut self) -> ReadEvent {
        self.ep.poll_read(&mut self.rx)
    }
}

#[test]
fn vector_5_exchange() {
    let t0 = Instant::now();
    let mut c = Side::new();
    let mut s = Side::new();

    c.write(b"hello");
    c.ep.shutdown_write();
    let c_to_s = c.wire();
    assert_eq!(c_to_s, [0x05, 0, 0, 0, 0x68, 0x65, 0x6c, 0x6c, 0x6f, 0xad, 0xde, 0xef, 0xbe]);

    s.rx.extend_from_slice(&c_to_s);
    assert_eq!(s.read(), ReadEvent::Data(Bytes::from_static(b"hello")));
    assert_eq!(s.read(), ReadEvent::Eof);
    assert_eq!(s.read(), ReadEvent::Eof, "sticky");

    s.write(b"world");
    s.ep.close(t0);
    let s_to_c = s.wire();
    assert_eq!(s_to_c, [0x05, 0, 0, 0, 0x77, 0x6f, 0x72, 0x6c, 0x64, 0xad, 0xde, 0xad, 0xde]);
    assert!(!s.ep.is_done(), "S waits for the ack");

    c.rx.extend_from_slice(&s_to_c);
    assert_eq!(c.read(), ReadEvent::Data(Bytes::from_static(b"world")));
    assert_eq!(c.read(), ReadEvent::Eof);
    assert_eq!(c.wire(), [0xad, 0xde, 0xad, 0xde], "C acknowledges");
    assert_eq!(c.ep.write_allowed(), Err(EndpointError::Closed));

    s.rx.extend_from_slice(&[0xad, 0xde, 0xad, 0xde]);
    assert!(s.ep.poll_close_input(&mut s.rx));
    assert!(!s.ep.close_timed_out());

    // C releases its socket once S did (its Eof), well before the timeout.
    c.ep.close(t0);
    assert!(c.wire().is_empty(), "no second Close");
    assert!(!c.ep.is_done());
    c.ep.handle_eof(&c.rx);
    assert!(c.ep.is_done());
    assert_eq!(c.read(), ReadEvent::Eof);
}

#[test]
fn close_is_bounded_by_its_timeout() {
    let t0 = Instant::now();
    let mut a = Side::new();
    a.ep.close(t0);
    assert_eq!(a.wire(), Header::Close.to_bytes());
    let deadline = a.ep.poll_timeout().unwrap();
    assert_eq!(deadline, t0 + DEFAULT_CLOSE_TIMEOUT);
    a.ep.handle_timeout(t0 + Duration::from_secs(1));
    assert!(!a.ep.is_done());
    a.ep.handle_timeout(deadline);
    assert!(a.ep.is_done() && a.ep.close_timed_out());
    assert_eq!(a.ep.poll_timeout(), None);
}

#[test]
fn close_drains_data_and_ends_on_shutdown_read_or_eof() {
    let t0 = Instant::now();
    let mut a = Side::new();
    a.ep.close(t0);
    a.rx.extend_from_slice(&[3, 0, 0, 0, 1, 2, 3]);
    assert!(!a.ep.poll_close_input(&mut a.rx));
    assert!(a.rx.is_empty(), "data discarded");
    a.rx.extend_from_slice(&Header::ShutdownRead.to_bytes());
    assert!(a.ep.poll_close_input(&mut a.rx));

    let mut b = Side::new();
    b.ep.close(t0);
    b.ep.handle_eof(&[]);
    assert!(b.ep.is_done());
}

#[test]
fn simultaneous_close_takes_the_peer_close_as_the_ack() {
    let t0 = Instant::now();
    let (mut a, mut b) = (Side::new(), Side::new());
    a.ep.close(t0);
    b.ep.close(t0);
    let (wa, wb) = (a.wire(), b.wire());
    a.rx.extend_from_slice(&wb);
    b.rx.extend_from_slice(&wa);
    assert!(a.ep.poll_close_input(&mut a.rx));
    assert!(b.ep.poll_close_input(&mut b.rx));
    assert!(a.wire().is_empty() && b.wire().is_empty());
}

#[test]
fn shutdowns_are_idempotent_and_gate_reads_and_writes() {
    let mut a = Side::new();
    a.ep.shutdown_write();
    a.ep.shutdown_write();
    assert_eq!(a.wire(), Header::ShutdownWrite.to_bytes());
    assert_eq!(a.ep.write_allowed(), Err(EndpointError::Closed));
    a.rx.extend_from_slice(&[1, 0, 0, 0, b'z']);
    assert_eq!(a.read(), ReadEvent::Data(Bytes::from_static(b"z")), "reading continues");

    a.ep.shutdown_read();
    a.ep.shutdown_read();
    assert_eq!(a.wire(), Header::ShutdownRead.to_bytes());
    a.rx.extend_from_slice(&[1, 0, 0, 0, b'y']);
    assert_eq!(a.read(), ReadEvent::Eof, "reads give Eof at once");
}

#[test]
fn peer_shutdown_read_makes_writes_closed() {
    let mut a = Side::new();
    a.rx.extend_from_slice(&Header::ShutdownRead.to_bytes());
    assert_eq!(a.read(), ReadEvent::NeedInput);
    assert_eq!(a.ep.write_allowed(), Err(EndpointError::Closed));
    a.rx.extend_from_slice(&[1, 0, 0, 0, b'q']);
    assert_eq!(a.read(), ReadEvent::Data(Bytes::from_static(b"q")), "reading continues");
}

#[test]
fn errors_latch_and_keep_their_kinds() {
    let mut a = Side::new();
    a.rx.extend_from_slice(&[0xff, 0xff, 0xff, 0xff]);
    let ReadEvent::Error(e) = a.read() else { panic!("protocol error") };
    assert!(matches!(e, EndpointError::Protocol(_)));
    assert_eq!(a.read(), ReadEvent::Error(e.clone()), "latched");
    assert!(FlowError::from(e).is_protocol());

    let mut b = Side::new();
    b.ep.handle_read_error(&io::Error::from(io::ErrorKind::ConnectionReset));
    assert_eq!(b.read(), ReadEvent::Error(EndpointError::Reset));
    assert_eq!(b.ep.write_allowed(), Err(EndpointError::Reset));
    assert!(FlowError::from(EndpointError::Reset).is_reset());

    let mut c = Side::new();
    c.rx.extend_from_slice(&[5, 0]);
    assert_eq!(c.read(), ReadEvent::NeedInput);
    c.ep.handle_eof(&c.rx);
    let ReadEvent::Error(EndpointError::Protocol(DecodeError::Truncated { header_bytes: 2, .. })) = c.read() else {
        panic!("truncation reported")
    };

    // The transport ends without ShutdownWrite or Close: the peer lost it.
    let mut d = Side::new();
    d.ep.handle_eof(&[]);
    assert_eq!(d.read(), ReadEvent::Error(EndpointError::Reset), "no marker came: a reset");
    assert_eq!(d.read(), ReadEvent::Error(EndpointError::Reset), "latched");

    // After the peer's ShutdownWrite it is the plain end.
    let mut e = Side::new();
    e.rx.extend_from_slice(&Header::ShutdownWrite.to_bytes());
    assert_eq!(e.read(), ReadEvent::Eof);
    e.ep.handle_eof(&e.rx);
    assert_eq!(e.read(), ReadEvent::Eof, "clean Eof");
    assert_eq!(e.ep.write_allowed(), Err(EndpointError::Closed));
}

#[test]
fn errors_as_eof_is_upstreams_view() {
    let mut a = Side::new();
    a.ep = Endpoint::new(FramingConfig::new().errors_as_eof(true));
    a.rx.extend_from_slice(&[0, 0, 0, 0x80]);
    assert_eq!(a.read(), ReadEvent::Eof);
}

#[test]
fn abort_sends_nothing() {
    let mut a = Side::new();
    a.ep.shutdown_write();
    a.ep.abort();
    assert!(a.wire().is_empty());
    assert!(a.ep.is_done());
}

#[test]
fn close_after_a_protocol_error_is_done_at_once() {
    let t0 = Instant::now();
    let mut a = Side::new();
    a.rx.extend_from_slice(&[0xff, 0xff, 0xff, 0xff]);
    assert!(matches!(a.read(), ReadEvent::Error(EndpointError::Protocol(_))));
    a.ep.close(t0);
    assert!(a.ep.is_done(), "the peer broke the framing: nothing to wait for");
    assert_eq!(a.ep.poll_timeout(), None);
    assert!(a.wire().is_empty(), "no Close to a broken peer");
    assert!(!a.ep.close_timed_out());

    // The same with upstream's view, where the error reads as Eof.
    let mut b = Side::new();
    b.ep = Endpoint::new(FramingConfig::new().errors_as_eof(true));
    b.rx.extend_from_slice(&[0, 0, 0, 0x80]);
    assert_eq!(b.read(), ReadEvent::Eof);
    b.ep.close(t0);
    assert!(b.ep.is_done());
}

//! Fuzzes the hvsock framing decoder: arbitrary bytes, fed in arbitrary read
//! sizes, must never panic; data frames are never empty; a stream re-encoded
//! from what was decoded decodes to the same frames.
#![no_main]

use bytes::{Bytes, BytesMut};
use conflux_hvsock::framing::{Decoder, Encoder, Frame, Header};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    // The first byte picks the read size (1..=256) and whether to cap frames lower.
    let Some((&knob, stream)) = input.split_first() else { return };
    let read = usize::from(knob & 0x7f) * 2 + 1;
    let max = if knob & 0x80 != 0 { 64 } else { 4096 };
    let mut dec = Decoder::with_max_frame(max);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut failed = false;
    'outer: for piece in stream.chunks(read) {
        buf.extend_from_slice(piece);
        loop {
            match dec.decode(&mut buf) {
                Ok(Some(f)) => {
                    if let Frame::Data(d) = &f {
                        assert!(!d.is_empty(), "an empty data frame surfaced");
                        assert!(d.len() <= max as usize);
                    }
                    frames.push(f);
                }
                Ok(None) => break,
                Err(_) => {
                    failed = true;
                    break 'outer;
                }
            }
        }
    }
    if failed {
        return;
    }
    let _ = dec.decode_eof(&buf);
    // Re-encode (payloads merged per run of data) and decode again: same bytes, same markers.
    let mut enc = Encoder::with_max_frame(max);
    let mut want = Vec::new();
    for f in &frames {
        match f {
            Frame::Data(d) => {
                enc.push_data(&mut d.clone(), usize::MAX);
                want.extend_from_slice(d);
            }
            Frame::ShutdownRead => enc.push_marker(Header::ShutdownRead),
            Frame::ShutdownWrite => enc.push_marker(Header::ShutdownWrite),
            Frame::Close => enc.push_marker(Header::Close),
        }
    }
    let wire = enc.to_vec();
    let mut again = Decoder::with_max_frame(max);
    let mut b = BytesMut::from(&wire[..]);
    let mut got = Vec::new();
    while let Some(f) = again.decode(&mut b).expect("our own encoding decodes") {
        if let Frame::Data(d) = f {
            got.extend_from_slice(&d);
        }
    }
    assert_eq!(got, want);
    assert_eq!(again.decode_eof(&b), Ok(()));
    let _ = Bytes::new();
});

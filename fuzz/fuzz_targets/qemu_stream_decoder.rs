//! Fuzzes the QEMU stream framing decoder of conflux-usernet: arbitrary
//! bytes, fed in arbitrary read sizes, must never panic; pieces follow the
//! Start/More order; no frame is empty or above the cap; and the frames
//! decoded, re-encoded, give back the bytes consumed.
#![no_main]

use conflux_usernet::{FramePiece, StreamDecoder, StreamHeader};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    // The first byte picks the read size (1..=255) and the cap (small or Ethernet).
    let Some((&knob, stream)) = input.split_first() else { return };
    let read = usize::from(knob & 0x7f) * 2 + 1;
    let max = if knob & 0x80 != 0 { 64 } else { 1514 };
    let mut dec = StreamDecoder::new(max);
    let mut frames: Vec<Vec<u8>> = Vec::new();
    let mut open: Option<(usize, Vec<u8>)> = None;
    let mut consumed = 0;
    let mut failed = false;
    'outer: for piece in stream.chunks(read) {
        let mut rest = piece;
        loop {
            match dec.decode(&mut rest) {
                Ok(Some(FramePiece::Whole(f))) => {
                    assert!(open.is_none(), "a whole frame inside an open one");
                    assert!(!f.is_empty() && f.len() <= max as usize);
                    frames.push(f.to_vec());
                }
                Ok(Some(FramePiece::Start { len, bytes })) => {
                    assert!(open.is_none(), "Start inside an open frame");
                    assert!(len > 0 && len <= max as usize && bytes.len() < len);
                    open = Some((len, bytes.to_vec()));
                }
                Ok(Some(FramePiece::More { bytes, end })) => {
                    let (len, buf) = open.as_mut().expect("More without Start");
                    assert!(!bytes.is_empty());
                    buf.extend_from_slice(bytes);
                    assert!(buf.len() <= *len);
                    assert_eq!(end, buf.len() == *len);
                    if end {
                        frames.push(open.take().expect("open").1);
                    }
                }
                Ok(None) => {
                    assert!(rest.is_empty(), "need-more with input left");
                    consumed += piece.len();
                    break;
                }
                Err(_) => {
                    failed = true;
                    break 'outer;
                }
            }
        }
    }
    if !failed && dec.decode_eof().is_ok() {
        assert!(open.is_none());
        let mut wire = Vec::new();
        for f in &frames {
            wire.extend_from_slice(&StreamHeader::new(f.len(), max).expect("decoded lengths are valid").to_bytes());
            wire.extend_from_slice(f);
        }
        assert_eq!(wire, stream[..consumed], "re-encoding gives the bytes back");
    }
});

//! Fuzzes the 9P decoder: arbitrary bytes, fed in arbitrary read sizes under
//! either dialect and a small or large msize, must never panic; no decoded
//! frame is above the cap; re-emitting a decoded frame parses back to it.
#![no_main]

use bytes::BytesMut;
use conflux_9p::{Decoder, Dialect};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    // The first byte picks the read size (1..=128), the dialect and the msize.
    let Some((&knob, stream)) = input.split_first() else { return };
    let read = usize::from(knob & 0x3f) * 2 + 1;
    let dialect = if knob & 0x40 != 0 { Dialect::P2000U } else { Dialect::P2000 };
    let msize = if knob & 0x80 != 0 { 64 } else { 8192 };
    let mut dec = Decoder::new(msize, dialect);
    let mut buf = BytesMut::new();
    for piece in stream.chunks(read) {
        buf.extend_from_slice(piece);
        loop {
            match dec.decode(&mut buf) {
                Ok(Some(frame)) => {
                    let wire = frame.emit(dialect);
                    assert!(wire.len() <= msize as usize, "a frame above msize was accepted");
                    let mut again = BytesMut::from(&wire[..]);
                    let back = Decoder::new(u32::MAX, dialect).decode(&mut again).expect("re-emitted frame parses");
                    assert_eq!(back.as_ref(), Some(&frame));
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
});

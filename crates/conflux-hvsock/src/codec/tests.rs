//! Golden vectors 1-4 and 6 of spec/hvsock.md, split headers, round trips.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use super::*;

fn encode(writes: &[&[u8]]) -> Vec<u8> {
    let mut enc = Encoder::new();
    for w in writes {
        enc.push_data(&mut Bytes::copy_from_slice(w), usize::MAX);
    }
    enc.to_vec()
}

fn decode_all(dec: &mut Decoder, bytes: &[u8]) -> Result<Vec<Frame>, DecodeError> {
    let mut buf = BytesMut::from(bytes);
    let mut out = Vec::new();
    while let Some(f) = dec.decode(&mut buf)? {
        out.push(f);
    }
    dec.decode_eof(&buf)?;
    Ok(out)
}

#[test]
fn vector_1_hello() {
    assert_eq!(encode(&[b"hello"]), [0x05, 0, 0, 0, 0x68, 0x65, 0x6c, 0x6c, 0x6f]);
}

#[test]
fn vector_2_markers() {
    assert_eq!(Header::ShutdownWrite.to_bytes(), [0xad, 0xde, 0xef, 0xbe]);
    assert_eq!(Header::ShutdownRead.to_bytes(), [0xef, 0xbe, 0xad, 0xde]);
    assert_eq!(Header::Close.to_bytes(), [0xad, 0xde, 0xad, 0xde]);
    for h in [Header::ShutdownWrite, Header::ShutdownRead, Header::Close] {
        assert_eq!(Header::parse(&h.to_bytes(), DEFAULT_MAX_FRAME), Ok(h));
        let mut enc = Encoder::new();
        enc.push_marker(h);
        assert_eq!(enc.to_vec(), h.to_bytes());
    }
}

#[test]
fn vector_3_frame_size() {
    let big = vec![0x5a; 5000];
    let wire = encode(&[&big]);
    assert_eq!(wire.len(), 4 + 4096 + 4 + 904);
    assert_eq!(wire[..4], [0x00, 0x10, 0, 0]);
    assert_eq!(wire[4100..4104], [0x88, 0x03, 0, 0]);
    assert!(wire[4..4100].iter().chain(&wire[4104..]).all(|&b| b == 0x5a));

    let wire = encode(&[&[1; 4096]]);
    assert_eq!((wire.len(), &wire[..4]), (4100, &[0x00, 0x10, 0, 0][..]));

    let wire = encode(&[&[1; 4097]]);
    assert_eq!(wire.len(), 4 + 4096 + 4 + 1);
    assert_eq!(wire[4100..], [0x01, 0, 0, 0, 1]);
}

#[test]
fn vector_4_empty_and_writev() {
    assert!(encode(&[b""]).is_empty());
    assert_eq!(encode(&[b"ab", b"c"]), [0x02, 0, 0, 0, 0x61, 0x62, 0x01, 0, 0, 0, 0x63]);
}

#[test]
fn vector_6_decoder_robustness() {
    // A header split 05 00 | 00 00 ...
    let mut dec = Decoder::new();
    let mut buf = BytesMut::from(&[0x05, 0x00][..]);
    assert_eq!(dec.decode(&mut buf), Ok(None));
    buf.extend_from_slice(&[0, 0, b'h', b'e', b'l', b'l', b'o']);
    assert_eq!(dec.decode(&mut buf), Ok(Some(Frame::Data(Bytes::from_static(b"hello")))));

    // Data(0) skipped.
    let frames = decode_all(&mut Decoder::new(), &[0, 0, 0, 0, 1, 0, 0, 0, b'x', 0, 0, 0, 0]).unwrap();
    assert_eq!(frames, [Frame::Data(Bytes::from_static(b"x"))]);

    // Impossible lengths are typed protocol errors.
    assert_eq!(
        decode_all(&mut Decoder::new(), &[0xff, 0xff, 0xff, 0xff]),
        Err(DecodeError::Header(HeaderError::Invalid(0xffff_ffff)))
    );
    assert_eq!(
        decode_all(&mut Decoder::new(), &[0x00, 0x00, 0x00, 0x80]),
        Err(DecodeError::Header(HeaderError::Invalid(0x8000_0000)))
    );
    assert_eq!(
        decode_all(&mut Decoder::new(), &[0x01, 0x10, 0, 0]),
        Err(DecodeError::Header(HeaderError::Oversize { len: 4097, max: 4096 }))
    );
    assert!(
        decode_all(&mut Decoder::with_max_frame(8192), &[0x01, 0x10, 0, 0])
            .is_err_and(|e| matches!(e, DecodeError::Truncated { header_bytes: 0, payload_missing: 4097 }))
    );

    // Eof after 2 header bytes: a clean, reported truncation.
    let err = decode_all(&mut Decoder::new(), &[0x05, 0x00]).unwrap_err();
    assert_eq!(err, DecodeError::Truncated { header_bytes: 2, payload_missing: 0 });
    assert!(err.to_string().contains("2 of 4 header bytes"), "{err}");
    // Eof mid-payload too.
    let err = decode_all(&mut Decoder::new(), &[0x05, 0, 0, 0, b'h', b'e']).unwrap_err();
    assert_eq!(err, DecodeError::Truncated { header_bytes: 0, payload_missing: 3 });
}

#[test]
fn every_header_split_offset() {
    let mut wire = encode(&[b"hello", &[7; 4096], b"x"]);
    wire.extend_from_slice(&Header::ShutdownWrite.to_bytes());
    wire.extend_from_slice(&Header::Close.to_bytes());
    for cut in 0..=wire.len() {
        let mut dec = Decoder::new();
        let mut buf = BytesMut::from(&wire[..cut]);
        let mut data = Vec::new();
        let mut markers = Vec::new();
        let mut take = |f: Frame| match f {
            Frame::Data(d) => {
                assert!(!d.is_empty());
                data.extend_from_slice(&d)
            }
            m => markers.push(m),
        };
        while let Some(f) = dec.decode(&mut buf).unwrap() {
            take(f);
        }
        buf.extend_from_slice(&wire[cut..]);
        while let Some(f) = dec.decode(&mut buf).unwrap() {
            take(f);
        }
        assert_eq!(dec.decode_eof(&buf), Ok(()));
        assert_eq!(data.len(), 5 + 4096 + 1, "cut at {cut}");
        assert_eq!(markers, [Frame::ShutdownWrite, Frame::Close], "cut at {cut}");
    }
}

#[test]
fn payloads_share_the_read_buffer() {
    let wire = encode(&[&[1; 4096], &[2; 4096]]);
    let mut buf = BytesMut::from(&wire[..]);
    let start = buf.as_ptr() as usize;
    let mut dec = Decoder::new();
    let Some(Frame::Data(a)) = dec.decode(&mut buf).unwrap() else { panic!("data") };
    let Some(Frame::Data(b)) = dec.decode(&mut buf).unwrap() else { panic!("data") };
    assert_eq!(a.as_ptr() as usize, start + 4, "no copy of the payload");
    assert_eq!(b.as_ptr() as usize, start + 4100 + 4);
}

#[test]
fn vectored_chunks_and_partial_advance() {
    let mut enc = Encoder::with_max_frame(3);
    enc.push_data(&mut Bytes::from_static(b"abcdefg"), usize::MAX);
    enc.push_marker(Header::Close);
    let want = {
        let mut e = enc.clone();
        e.to_vec()
    };
    let mut got = Vec::new();
    // Drain one byte at a time: every partial state must resume correctly.
    while !enc.is_empty() {
        let mut slices = [std::io::IoSlice::new(&[]); 16];
        let n = enc.chunks_vectored(&mut slices);
        assert!(n > 0);
        got.push(slices[0][0]);
        enc.advance(1);
    }
    assert_eq!(got, want);
    assert_eq!(enc.queued(), 0);
}

#[test]
fn push_data_respects_the_budget() {
    let mut enc = Encoder::new();
    let mut buf = Bytes::from(vec![0; 20_000]);
    let taken = enc.push_data(&mut buf, 8192);
    assert_eq!(taken, 8192);
    assert_eq!(buf.len(), 20_000 - 8192);
    // An empty queue always takes at least one frame.
    let mut enc = Encoder::new();
    assert_eq!(enc.push_data(&mut buf, 0), 4096);
}

#[test]
fn coalesced_reads_join_frames_up_to_a_marker() {
    let data: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
    let mut enc = Encoder::new();
    enc.push_data(&mut Bytes::copy_from_slice(&data), usize::MAX);
    enc.push_marker(Header::ShutdownWrite);
    let wire = enc.to_vec();
    let mut dec = Decoder::new();
    // The first read ends inside the third frame's payload.
    let cut = 3 * 4100 + 1000;
    let mut buf = BytesMut::from(&wire[..cut]);
    let Ok(Some(Frame::Data(first))) = dec.decode_coalesced(&mut buf) else { panic!("no data") };
    assert!(first[..] == data[..3 * 4096 + 996], "{} bytes", first.len());
    assert!(buf.is_empty());
    assert_eq!(dec.decode_coalesced(&mut buf), Ok(None));
    buf.extend_from_slice(&wire[cut..]);
    let Ok(Some(Frame::Data(rest))) = dec.decode_coalesced(&mut buf) else { panic!("no data") };
    assert!(rest[..] == data[3 * 4096 + 996..], "{} bytes", rest.len());
    assert_eq!(dec.decode_coalesced(&mut buf), Ok(Some(Frame::ShutdownWrite)));
    assert_eq!(dec.decode_coalesced(&mut buf), Ok(None));
    assert_eq!(dec.decode_eof(&buf), Ok(()));
}

#[test]
fn coalesced_reads_stop_before_a_bad_header() {
    let mut buf = BytesMut::from(&b"\x01\0\0\0a\x01\0\0\0b\xff\xff\xff\xff"[..]);
    let mut dec = Decoder::new();
    assert_eq!(dec.decode_coalesced(&mut buf), Ok(Some(Frame::Data("ab".into()))));
    assert_eq!(dec.decode_coalesced(&mut buf), Err(DecodeError::Header(HeaderError::Invalid(u32::MAX))));
}

/// One step of a writer: data, or a marker.
#[derive(Debug, Clone)]
enum Op {
    Write(Vec<u8>),
    Marker(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => proptest::collection::vec(any::<u8>(), 0..10_000).prop_map(Op::Write),
        1 => (0u8..3).prop_map(Op::Marker),
    ]
}

proptest! {
    #[test]
    fn any_sequence_round_trips(ops in proptest::collection::vec(op(), 0..12), max in 1u32..5000, cuts in proptest::collection::vec(1usize..3000, 1..20), coalesce in any::<bool>()) {
        let mut enc = Encoder::with_max_frame(max);
        let mut want = Vec::new();
        for op in &ops {
            match op {
                Op::Write(d) => {
                    enc.push_data(&mut Bytes::copy_from_slice(d), usize::MAX);
                    if !d.is_empty() { want.push(Frame::Data(Bytes::copy_from_slice(d))); }
                }
                Op::Marker(m) => {
                    let h = [Header::ShutdownRead, Header::ShutdownWrite, Header::Close][*m as usize];
                    enc.push_marker(h);
                    want.push(match h { Header::ShutdownRead => Frame::ShutdownRead, Header::ShutdownWrite => Frame::ShutdownWrite, _ => Frame::Close });
                }
            }
        }
        let wire = enc.to_vec();
        // Feed in arbitrary read sizes.
        let mut dec = Decoder::with_max_frame(max);
        let mut buf = BytesMut::new();
        let mut got: Vec<Frame> = Vec::new();
        let mut at = 0;
        let mut i = 0;
        while at < wire.len() {
            let n = cuts[i % cuts.len()].min(wire.len() - at);
            i += 1;
            buf.extend_from_slice(&wire[at..at + n]);
            at += n;
            let next = |dec: &mut Decoder, buf: &mut BytesMut| if coalesce { dec.decode_coalesced(buf) } else { dec.decode(buf) };
            while let Some(f) = next(&mut dec, &mut buf).unwrap() {
                if let Frame::Data(d) = &f { prop_assert!(!d.is_empty()); }
                got.push(f);
            }
        }
        prop_assert_eq!(dec.decode_eof(&buf), Ok(()));
        // Writes larger than a frame come out as several frames: compare the data concatenations between markers.
        let flatten = |frames: &[Frame]| {
            let mut out: Vec<(Vec<u8>, Option<Frame>)> = vec![(Vec::new(), None)];
            for f in frames {
                match f {
                    Frame::Data(d) => out.last_mut().unwrap().0.extend_from_slice(d),
                    m => out.push((Vec::new(), Some(m.clone()))),
                }
            }
            out
        };
        prop_assert_eq!(flatten(&got), flatten(&want));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200), cut in 0usize..200, coalesce in any::<bool>()) {
        let mut dec = Decoder::new();
        let cut = cut.min(bytes.len());
        let mut buf = BytesMut::from(&bytes[..cut]);
        let mut failed = false;
        loop {
            let next = if coalesce { dec.decode_coalesced(&mut buf) } else { dec.decode(&mut buf) };
            match next {
                Ok(Some(Frame::Data(d))) => prop_assert!(!d.is_empty()),
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => { failed = true; break }
            }
        }
        if !failed {
            buf.extend_from_slice(&bytes[cut..]);
            while let Ok(Some(_)) = dec.decode(&mut buf) {}
        }
    }
}

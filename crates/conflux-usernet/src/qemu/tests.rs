//! Golden vectors, headers split at every offset, typed errors, round trips.

use proptest::prelude::*;

use super::*;

/// An ARP request from 52:54:00:12:34:56 (QEMU's default guest MAC) for
/// 10.0.2.2, as a guest sends it first: 42 bytes.
const ARP_REQUEST: [u8; 42] = [
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0x08, 0x06, // Ethernet
    0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, // ARP, request
    0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 10, 0, 2, 15, // sender
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 10, 0, 2, 2, // target
];

fn encode(frames: &[&[u8]], max: u32) -> Vec<u8> {
    let mut out = Vec::new();
    for f in frames {
        out.extend_from_slice(&StreamHeader::new(f.len(), max).unwrap().to_bytes());
        out.extend_from_slice(f);
    }
    out
}

/// Reassembles the frames of `pieces` the way a device does.
fn collect(
    dec: &mut StreamDecoder,
    input: &[u8],
    frames: &mut Vec<Vec<u8>>,
    open: &mut Option<(usize, Vec<u8>)>,
) -> Result<(), StreamDecodeError> {
    let mut input = input;
    while let Some(piece) = dec.decode(&mut input)? {
        match piece {
            FramePiece::Whole(f) => {
                assert!(open.is_none(), "a whole frame inside an open one");
                frames.push(f.to_vec())
            }
            FramePiece::Start { len, bytes } => {
                assert!(open.is_none() && bytes.len() < len);
                *open = Some((len, bytes.to_vec()));
            }
            FramePiece::More { bytes, end } => {
                let (len, buf) = open.as_mut().expect("More without Start");
                assert!(!bytes.is_empty());
                buf.extend_from_slice(bytes);
                assert_eq!(end, buf.len() == *len);
                if end {
                    frames.push(open.take().unwrap().1);
                }
            }
        }
    }
    assert!(input.is_empty(), "Ok(None) leaves nothing unread");
    Ok(())
}

fn decode_all(max: u32, reads: &[&[u8]]) -> Result<Vec<Vec<u8>>, StreamDecodeError> {
    let mut dec = StreamDecoder::new(max);
    let (mut frames, mut open) = (Vec::new(), None);
    for r in reads {
        collect(&mut dec, r, &mut frames, &mut open)?;
    }
    dec.decode_eof()?;
    Ok(frames)
}

#[test]
fn vector_arp_request() {
    let wire = encode(&[&ARP_REQUEST], 1514);
    assert_eq!(wire[..4], [0x00, 0x00, 0x00, 0x2a]);
    assert_eq!(wire[4..], ARP_REQUEST);
    assert_eq!(decode_all(1514, &[&wire]), Ok(vec![ARP_REQUEST.to_vec()]));
}

#[test]
fn vector_lengths_are_big_endian() {
    assert_eq!(StreamHeader::new(1514, 1514).unwrap().to_bytes(), [0x00, 0x00, 0x05, 0xea]);
    // passt and rootless setups: MTU 65520, frames up to 65534 bytes.
    assert_eq!(max_frame_len(65520), 65534);
    assert_eq!(StreamHeader::new(65534, max_frame_len(65520)).unwrap().to_bytes(), [0x00, 0x00, 0xff, 0xfe]);
    assert_eq!(StreamHeader::new(65536 + 2, u32::MAX).unwrap().to_bytes(), [0x00, 0x01, 0x00, 0x02]);
    let mut buf = [0u8; 6];
    StreamHeader::new(60, 1514).unwrap().emit(&mut buf[1..]);
    assert_eq!(buf, [0, 0, 0, 0, 60, 0]);
    assert_eq!(StreamHeader::parse(&[0, 0, 0x05, 0xea, 0xff], 1514).map(StreamHeader::frame_len), Ok(1514));
    assert_eq!(max_frame_len(1500), 1514);
    assert_eq!(max_frame_len(usize::MAX), u32::MAX);
}

#[test]
fn zero_and_oversize_lengths_are_typed_errors_naming_the_length() {
    assert_eq!(StreamHeader::parse(&[0, 0, 0, 0], 1514), Err(StreamHeaderError::Zero));
    assert_eq!(StreamHeader::parse(&[0, 0, 5], 1514), Err(StreamHeaderError::Short(3)));
    let err = decode_all(1514, &[&[0, 0, 0x05, 0xeb]]).unwrap_err();
    assert_eq!(err, StreamDecodeError::Header(StreamHeaderError::Oversize { len: 1515, max: 1514 }));
    assert!(err.to_string().contains("1515") && err.to_string().contains("1514"), "{err}");
    // The same bytes split mid-header give the same error.
    assert_eq!(decode_all(1514, &[&[0, 0], &[0x05, 0xeb]]), Err(err));
    let err = decode_all(1514, &[&encode(&[&ARP_REQUEST], 1514), &[0, 0, 0, 0]]).unwrap_err();
    assert_eq!(err, StreamDecodeError::Header(StreamHeaderError::Zero));
    assert!(err.to_string().contains("length 0"), "{err}");
    assert_eq!(decode_all(1514, &[&[0xff; 4]]), Err(StreamHeaderError::Oversize { len: u32::MAX, max: 1514 }.into()));
    assert_eq!(StreamHeader::new(0, 1514), Err(StreamHeaderError::Zero));
    assert_eq!(StreamHeader::new(1515, 1514), Err(StreamHeaderError::Oversize { len: 1515, max: 1514 }));
}

#[test]
fn truncation_is_reported_with_what_is_missing() {
    let err = decode_all(1514, &[&[0, 0]]).unwrap_err();
    assert_eq!(err, StreamDecodeError::Truncated { header_bytes: 2, payload_missing: 0 });
    assert!(err.to_string().contains("2 of 4 header bytes"), "{err}");
    let wire = encode(&[&ARP_REQUEST], 1514);
    let err = decode_all(1514, &[&wire[..10]]).unwrap_err();
    assert_eq!(err, StreamDecodeError::Truncated { header_bytes: 0, payload_missing: 36 });
    assert!(err.to_string().contains("36 frame bytes missing"), "{err}");
    assert_eq!(decode_all(1514, &[&wire]), Ok(vec![ARP_REQUEST.to_vec()]));
    assert_eq!(decode_all(1514, &[]), Ok(vec![]));
}

#[test]
fn every_split_offset() {
    let big: Vec<u8> = (0..1514u32).map(|i| (i % 251) as u8).collect();
    let frames: Vec<&[u8]> = vec![&ARP_REQUEST, &big, &[7], &ARP_REQUEST[..14]];
    let wire = encode(&frames, 1514);
    let want: Vec<Vec<u8>> = frames.iter().map(|f| f.to_vec()).collect();
    for cut in 0..=wire.len() {
        assert_eq!(decode_all(1514, &[&wire[..cut], &wire[cut..]]).as_ref(), Ok(&want), "cut at {cut}");
    }
    // And one byte per read.
    let bytes: Vec<&[u8]> = wire.chunks(1).collect();
    assert_eq!(decode_all(1514, &bytes), Ok(want));
}

#[test]
fn whole_frames_are_borrowed_from_the_input() {
    let wire = encode(&[&ARP_REQUEST, &ARP_REQUEST], 1514);
    let mut dec = StreamDecoder::new(1514);
    let mut input = &wire[..];
    let Ok(Some(FramePiece::Whole(a))) = dec.decode(&mut input) else { panic!("whole") };
    let Ok(Some(FramePiece::Whole(b))) = dec.decode(&mut input) else { panic!("whole") };
    assert_eq!((a.as_ptr(), b.as_ptr()), (wire[4..].as_ptr(), wire[50..].as_ptr()), "no copy");
    assert!(dec.is_idle() && input.is_empty());
    assert_eq!(dec.max_frame(), 1514);
}

proptest! {
    #[test]
    fn any_frames_round_trip_in_any_reads(
        frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..3000), 0..10),
        cuts in proptest::collection::vec(1usize..5000, 1..20),
    ) {
        let refs: Vec<&[u8]> = frames.iter().map(|f| &f[..]).collect();
        let wire = encode(&refs, 3000);
        let mut reads = Vec::new();
        let (mut at, mut i) = (0, 0);
        while at < wire.len() {
            let n = cuts[i % cuts.len()].min(wire.len() - at);
            reads.push(&wire[at..at + n]);
            at += n;
            i += 1;
        }
        prop_assert_eq!(decode_all(3000, &reads), Ok(frames));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300), cut in 0usize..300, max in 0u32..200) {
        let cut = cut.min(bytes.len());
        if let Ok(frames) = decode_all(max, &[&bytes[..cut], &bytes[cut..]]) {
            // What decoded re-encodes to the same bytes.
            let refs: Vec<&[u8]> = frames.iter().map(|f| &f[..]).collect();
            prop_assert_eq!(encode(&refs, max), bytes);
        }
    }
}

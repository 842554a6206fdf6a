//! Golden byte vectors, split input, caps and round trips.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use super::*;

const U: Dialect = Dialect::P2000U;
const P: Dialect = Dialect::P2000;

fn frame(tag: u16, msg: Msg) -> Frame {
    Frame { tag, msg }
}

fn roundtrip(f: &Frame, d: Dialect) {
    let wire = f.emit(d);
    let mut buf = BytesMut::from(&wire[..]);
    let got = Decoder::new(u32::MAX, d).decode(&mut buf).unwrap().unwrap();
    assert_eq!(&got, f);
    assert!(buf.is_empty());
}

#[test]
fn vector_tversion() {
    let f = frame(NOTAG, Msg::Tversion { msize: 8192, version: "9P2000".into() });
    let wire = f.emit(P);
    assert_eq!(&wire[..], [0x13, 0, 0, 0, 100, 0xff, 0xff, 0x00, 0x20, 0, 0, 6, 0, b'9', b'P', b'2', b'0', b'0', b'0']);
    roundtrip(&f, P);
}

#[test]
fn vector_tattach_dotu_and_plain() {
    let f = frame(1, Msg::Tattach { fid: 11, afid: NOFID, uname: "u".into(), aname: "".into(), n_uname: Some(0) });
    let head = [1, 0, 11, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 1, 0, b'u', 0, 0];
    let mut want = vec![24, 0, 0, 0, 104];
    want.extend_from_slice(&head);
    want.extend_from_slice(&[0, 0, 0, 0]);
    assert_eq!(&f.emit(U)[..], &want[..]);
    roundtrip(&f, U);
    // 9P2000 leaves n_uname out.
    let plain = frame(1, Msg::Tattach { fid: 11, afid: NOFID, uname: "u".into(), aname: "".into(), n_uname: None });
    let mut want = vec![20, 0, 0, 0, 104];
    want.extend_from_slice(&head);
    assert_eq!(&plain.emit(P)[..], &want[..]);
    roundtrip(&plain, P);
}

#[test]
fn vector_rerror() {
    let f = frame(3, Msg::error("no", 2));
    assert_eq!(&f.emit(U)[..], [15, 0, 0, 0, 107, 3, 0, 2, 0, b'n', b'o', 2, 0, 0, 0]);
    assert_eq!(&f.emit(P)[..], [11, 0, 0, 0, 107, 3, 0, 2, 0, b'n', b'o']);
    roundtrip(&frame(3, Msg::Rerror { ename: "no".into(), errno: None }), P);
}

#[test]
fn vector_twalk_rwalk() {
    let f = frame(7, Msg::Twalk { fid: 1, newfid: 2, wnames: vec!["a".into(), "bc".into()] });
    assert_eq!(&f.emit(P)[..], [24, 0, 0, 0, 110, 7, 0, 1, 0, 0, 0, 2, 0, 0, 0, 2, 0, 1, 0, b'a', 2, 0, b'b', b'c']);
    roundtrip(&f, P);
    let q = Qid { ty: Qid::DIR, version: 1, path: 0x0102 };
    let r = frame(7, Msg::Rwalk { wqids: vec![q] });
    assert_eq!(&r.emit(P)[..], [22, 0, 0, 0, 111, 7, 0, 1, 0, 0x80, 1, 0, 0, 0, 2, 1, 0, 0, 0, 0, 0, 0]);
    roundtrip(&r, U);
}

#[test]
fn vector_read_write_parts() {
    let r = frame(9, Msg::Rread { data: Bytes::from_static(b"xyz") });
    let [head, data] = r.emit_parts(P);
    assert_eq!(&head[..], [14, 0, 0, 0, 117, 9, 0, 3, 0, 0, 0]);
    assert_eq!(&data[..], b"xyz");
    roundtrip(&r, P);
    let w = frame(9, Msg::Twrite { fid: 5, offset: 1, data: Bytes::from_static(b"q") });
    assert_eq!(&w.emit(P)[..], [24, 0, 0, 0, 118, 9, 0, 5, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, b'q']);
    roundtrip(&w, U);
}

fn sample_stat() -> Stat {
    Stat {
        ty: 0,
        dev: 0,
        qid: Qid { ty: 0, version: 0, path: 5 },
        mode: 0o644,
        atime: 1,
        mtime: 2,
        length: 3,
        name: "f".into(),
        uid: "u".into(),
        gid: "g".into(),
        muid: "".into(),
        extension: "".into(),
        n_uid: 1000,
        n_gid: 1000,
        n_muid: NONUNAME,
    }
}

#[test]
fn vector_rstat() {
    let s = sample_stat();
    assert_eq!(s.wire_len(false), 47 + 2 + 3);
    assert_eq!(s.wire_len(true), 61 + 2 + 3);
    let f = frame(4, Msg::Rstat { stat: s.clone() });
    let wire = f.emit(P);
    // size type tag n[2] size[2]
    assert_eq!(&wire[..11], [7 + 2 + 52, 0, 0, 0, 125, 4, 0, 52, 0, 50, 0]);
    roundtrip(&f, U);
    // Under 9P2000 the .u fields are not on the wire: they come back as "none".
    let plain = Stat { n_uid: NONUNAME, n_gid: NONUNAME, ..s.clone() };
    roundtrip(&frame(4, Msg::Rstat { stat: plain }), P);
    let mut dir = BytesMut::new();
    s.emit(&mut dir, true);
    s.emit(&mut dir, true);
    assert_eq!(Stat::parse_dir(&dir, true).unwrap(), vec![s.clone(), s]);
}

#[test]
fn split_input_needs_more() {
    let wire = frame(1, Msg::Tclunk { fid: 3 }).emit(P);
    let mut dec = Decoder::new(8192, P);
    let mut buf = BytesMut::new();
    for (i, b) in wire.iter().enumerate() {
        buf.extend_from_slice(&[*b]);
        let got = dec.decode(&mut buf).unwrap();
        assert_eq!(got.is_some(), i == wire.len() - 1);
    }
}

#[test]
fn caps_and_malformed_are_typed_errors() {
    let mut dec = Decoder::new(64, P);
    let mut big = BytesMut::from(&[65u8, 0, 0, 0][..]);
    assert_eq!(dec.decode(&mut big), Err(ParseError::Oversize { size: 65, msize: 64 }));
    assert_eq!(dec.decode(&mut BytesMut::from(&[6u8, 0, 0, 0][..])), Err(ParseError::Undersize(6)));
    assert_eq!(dec.decode(&mut BytesMut::from(&[7u8, 0, 0, 0, 99, 0, 0][..])), Err(ParseError::UnknownType(99)));
    assert_eq!(dec.decode(&mut BytesMut::from(&[8u8, 0, 0, 0, 120, 0, 0, 1][..])), Err(ParseError::Truncated(120)));
    assert_eq!(
        dec.decode(&mut BytesMut::from(&[12u8, 0, 0, 0, 120, 0, 0, 1, 0, 0, 0, 9][..])),
        Err(ParseError::Trailing { ty: 120, extra: 1 })
    );
    let mut walk = BytesMut::from(&[17u8, 0, 0, 0, 110, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 17, 0][..]);
    assert_eq!(dec.decode(&mut walk), Err(ParseError::TooManyWalkElements(17)));
    let mut utf = BytesMut::from(&[13u8, 0, 0, 0, 100, 0, 0, 0, 0, 0, 0, 0, 0][..]);
    utf[0] = 14;
    utf.extend_from_slice(&[0]);
    utf[11] = 1;
    utf[13] = 0xff;
    assert_eq!(dec.decode(&mut utf), Err(ParseError::Utf8(100)));
}

fn arb_string() -> impl Strategy<Value = String> {
    "[a-z.]{0,12}"
}

fn arb_msg() -> impl Strategy<Value = Msg> {
    prop_oneof![
        (any::<u32>(), arb_string()).prop_map(|(msize, version)| Msg::Tversion { msize, version }),
        (any::<u32>(), any::<u32>(), proptest::collection::vec(arb_string(), 0..=16))
            .prop_map(|(fid, newfid, wnames)| Msg::Twalk { fid, newfid, wnames }),
        (any::<u32>(), any::<u64>(), any::<u32>()).prop_map(|(fid, offset, count)| Msg::Tread { fid, offset, count }),
        proptest::collection::vec(any::<u8>(), 0..100).prop_map(|d| Msg::Rread { data: Bytes::from(d) }),
        (any::<u32>(), arb_string(), any::<u32>(), any::<u8>()).prop_map(|(fid, name, perm, mode)| Msg::Tcreate {
            fid,
            name,
            perm,
            mode,
            extension: Some(String::new())
        }),
        (arb_string(), any::<u32>()).prop_map(|(ename, errno)| Msg::error(ename, errno)),
        (arb_string(), any::<u64>())
            .prop_map(|(name, length)| Msg::Rstat { stat: Stat { name, length, ..sample_stat() } }),
        any::<u16>().prop_map(|oldtag| Msg::Tflush { oldtag }),
    ]
}

proptest! {
    #[test]
    fn roundtrip_dotu(tag in any::<u16>(), msg in arb_msg()) {
        roundtrip(&frame(tag, msg), U);
    }

    #[test]
    fn decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200), dotu in any::<bool>()) {
        let mut dec = Decoder::new(128, if dotu { U } else { P });
        let mut buf = BytesMut::from(&bytes[..]);
        while let Ok(Some(_)) = dec.decode(&mut buf) {}
    }
}

proptest! {
    #[test]
    fn recv_buf_matches_bytes_mut(cuts in proptest::collection::vec(1usize..40, 1..20), data in proptest::collection::vec(any::<u8>(), 0..60)) {
        let frames = [
            frame(1, Msg::Rread { data: Bytes::from(data) }),
            frame(2, Msg::Tclunk { fid: 9 }),
            frame(3, Msg::error("e", 1)),
        ];
        let wire: Vec<u8> = frames.iter().flat_map(|f| f.emit(U).to_vec()).collect();
        let mut buf = RecvBuf::new();
        let mut dec = Decoder::new(8192, U);
        let mut got = Vec::new();
        let mut at = 0;
        for cut in cuts.iter().cycle() {
            if at >= wire.len() {
                break;
            }
            let end = (at + cut).min(wire.len());
            buf.push(Bytes::copy_from_slice(&wire[at..end]));
            at = end;
            while let Some(f) = dec.decode_buf(&mut buf).unwrap() {
                got.push(f);
            }
        }
        prop_assert_eq!(&got[..], &frames[..]);
        prop_assert!(buf.is_empty());
    }
}

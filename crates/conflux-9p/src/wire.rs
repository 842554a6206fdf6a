//! 9P2000 and 9P2000.u messages on the wire, sans-IO: typed [`Msg`]s, a
//! [`Frame`] (tag plus message) with `parse`/`emit`, and an incremental
//! [`Decoder`] whose frame cap is the negotiated msize.
//!
//! Invariant: nothing in this module does I/O or reads a clock.

use bytes::{Buf, BufMut, Bytes, BytesMut};

mod stat;

pub use stat::{Qid, Stat};

/// The tag of Tversion/Rversion.
pub const NOTAG: u16 = 0xFFFF;
/// "No fid" (Tattach's afid when there is no authentication).
pub const NOFID: u32 = 0xFFFF_FFFF;
/// The most names one Twalk may carry.
pub const MAXWELEM: usize = 16;
/// `size[4] type[1] tag[2]`.
pub const HEADER_LEN: usize = 7;
/// Bytes of an Rread/Twrite besides the data (`size type tag fid offset count`
/// of Twrite, the larger of the two): a client asks for at most `msize - IOHDRSZ`.
pub const IOHDRSZ: u32 = 24;
/// The "n_uname" / "n_uid" value meaning "no numeric id" (9P2000.u).
pub const NONUNAME: u32 = 0xFFFF_FFFF;

/// The protocol dialect negotiated by Tversion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dialect {
    /// Plain 9P2000.
    P2000,
    /// 9P2000.u (Unix extensions: numeric ids, errno, symlink extension strings).
    P2000U,
}

impl Dialect {
    /// The version string of this dialect.
    pub fn as_str(self) -> &'static str {
        match self {
            Dialect::P2000 => "9P2000",
            Dialect::P2000U => "9P2000.u",
        }
    }

    /// The dialect of a Tversion string, if we speak it. Like Plan 9, anything
    /// starting "9P2000" that is not ".u" is plain 9P2000 (so "9P2000.L" is not
    /// accepted: it is not a suffix-free "9P2000").
    pub fn from_version(v: &str) -> Option<Dialect> {
        match v {
            "9P2000.u" => Some(Dialect::P2000U),
            "9P2000" => Some(Dialect::P2000),
            _ => None,
        }
    }

    /// Whether this is 9P2000.u.
    pub fn is_dotu(self) -> bool {
        self == Dialect::P2000U
    }
}

/// One 9P message (T requests and R replies) without its tag.
///
/// Fields marked `.u` are `Some` when parsed under 9P2000.u and `None` under
/// 9P2000; when emitted under 9P2000.u a `None` becomes the neutral value
/// (`NONUNAME`, errno 0, empty extension), under 9P2000 it is left out.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)] // fields are named as in the 9P manual pages
pub enum Msg {
    Tversion { msize: u32, version: String },
    Rversion { msize: u32, version: String },
    Tauth { afid: u32, uname: String, aname: String, n_uname: Option<u32> },
    Rauth { aqid: Qid },
    Tattach { fid: u32, afid: u32, uname: String, aname: String, n_uname: Option<u32> },
    Rattach { qid: Qid },
    Rerror { ename: String, errno: Option<u32> },
    Tflush { oldtag: u16 },
    Rflush,
    Twalk { fid: u32, newfid: u32, wnames: Vec<String> },
    Rwalk { wqids: Vec<Qid> },
    Topen { fid: u32, mode: u8 },
    Ropen { qid: Qid, iounit: u32 },
    Tcreate { fid: u32, name: String, perm: u32, mode: u8, extension: Option<String> },
    Rcreate { qid: Qid, iounit: u32 },
    Tread { fid: u32, offset: u64, count: u32 },
    Rread { data: Bytes },
    Twrite { fid: u32, offset: u64, data: Bytes },
    Rwrite { count: u32 },
    Tclunk { fid: u32 },
    Rclunk,
    Tremove { fid: u32 },
    Rremove,
    Tstat { fid: u32 },
    Rstat { stat: Stat },
    Twstat { fid: u32, stat: Stat },
    Rwstat,
}

/// Why a frame could not be parsed. Every one is a protocol error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The size field is below the 7-byte header.
    #[error("frame size {0} is below the 7-byte header")]
    Undersize(u32),
    /// The size field is above the negotiated msize.
    #[error("frame size {size} exceeds msize {msize}")]
    Oversize {
        /// The announced size.
        size: u32,
        /// The cap.
        msize: u32,
    },
    /// A type byte that is not a 9P2000(.u) message.
    #[error("unknown message type {0}")]
    UnknownType(u8),
    /// The body ended before a field did.
    #[error("message type {0} truncated")]
    Truncated(u8),
    /// Bytes left over after the last field.
    #[error("message type {ty} has {extra} trailing bytes")]
    Trailing {
        /// The message type.
        ty: u8,
        /// How many bytes were left.
        extra: usize,
    },
    /// A string that is not UTF-8.
    #[error("message type {0} carries a string that is not UTF-8")]
    Utf8(u8),
    /// A Twalk/Rwalk with more than 16 elements.
    #[error("walk with {0} elements (at most 16)")]
    TooManyWalkElements(u16),
    /// A stat whose own size field disagrees with its contents.
    #[error("stat size field disagrees with its contents")]
    BadStat,
}

/// A message and its tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The tag pairing a reply with its request.
    pub tag: u16,
    /// The message.
    pub msg: Msg,
}

impl Msg {
    /// The type byte of this message.
    pub fn type_byte(&self) -> u8 {
        match self {
            Msg::Tversion { .. } => 100,
            Msg::Rversion { .. } => 101,
            Msg::Tauth { .. } => 102,
            Msg::Rauth { .. } => 103,
            Msg::Tattach { .. } => 104,
            Msg::Rattach { .. } => 105,
            Msg::Rerror { .. } => 107,
            Msg::Tflush { .. } => 108,
            Msg::Rflush => 109,
            Msg::Twalk { .. } => 110,
            Msg::Rwalk { .. } => 111,
            Msg::Topen { .. } => 112,
            Msg::Ropen { .. } => 113,
            Msg::Tcreate { .. } => 114,
            Msg::Rcreate { .. } => 115,
            Msg::Tread { .. } => 116,
            Msg::Rread { .. } => 117,
            Msg::Twrite { .. } => 118,
            Msg::Rwrite { .. } => 119,
            Msg::Tclunk { .. } => 120,
            Msg::Rclunk => 121,
            Msg::Tremove { .. } => 122,
            Msg::Rremove => 123,
            Msg::Tstat { .. } => 124,
            Msg::Rstat { .. } => 125,
            Msg::Twstat { .. } => 126,
            Msg::Rwstat => 127,
        }
    }

    /// Whether this is a request (T message).
    pub fn is_request(&self) -> bool {
        self.type_byte().is_multiple_of(2)
    }

    /// An Rerror with this text and, under 9P2000.u, this errno.
    pub fn error(ename: impl Into<String>, errno: u32) -> Msg {
        Msg::Rerror { ename: ename.into(), errno: Some(errno) }
    }
}

/// A cursor over a message body.
pub(crate) struct Reader<'a> {
    buf: &'a mut Bytes,
    ty: u8,
}

impl Reader<'_> {
    fn need(&self, n: usize) -> Result<(), ParseError> {
        if self.buf.remaining() < n { Err(ParseError::Truncated(self.ty)) } else { Ok(()) }
    }
    pub(crate) fn u8(&mut self) -> Result<u8, ParseError> {
        self.need(1)?;
        Ok(self.buf.get_u8())
    }
    pub(crate) fn u16(&mut self) -> Result<u16, ParseError> {
        self.need(2)?;
        Ok(self.buf.get_u16_le())
    }
    pub(crate) fn u32(&mut self) -> Result<u32, ParseError> {
        self.need(4)?;
        Ok(self.buf.get_u32_le())
    }
    pub(crate) fn u64(&mut self) -> Result<u64, ParseError> {
        self.need(8)?;
        Ok(self.buf.get_u64_le())
    }
    pub(crate) fn bytes(&mut self, n: usize) -> Result<Bytes, ParseError> {
        self.need(n)?;
        Ok(self.buf.split_to(n))
    }
    pub(crate) fn string(&mut self) -> Result<String, ParseError> {
        let n = self.u16()? as usize;
        let b = self.bytes(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| ParseError::Utf8(self.ty))
    }
    pub(crate) fn remaining(&self) -> usize {
        self.buf.remaining()
    }
}

pub(crate) fn put_str(out: &mut BytesMut, s: &str) {
    // Strings longer than 65535 bytes cannot be represented; they are cut (a
    // caller bug: names and error texts are short).
    let b = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
    out.put_u16_le(b.len() as u16);
    out.put_slice(b);
}

impl Frame {
    /// Parses one whole frame (`size[4] type[1] tag[2] body`) from `bytes`,
    /// which must hold exactly that frame.
    pub fn parse(mut bytes: Bytes, dialect: Dialect) -> Result<Frame, ParseError> {
        if bytes.len() < HEADER_LEN {
            return Err(ParseError::Undersize(bytes.len() as u32));
        }
        bytes.advance(4);
        let ty = bytes.get_u8();
        let tag = bytes.get_u16_le();
        let mut r = Reader { buf: &mut bytes, ty };
        let dotu = dialect.is_dotu();
        let msg = parse_body(&mut r, ty, dotu)?;
        if r.remaining() != 0 {
            return Err(ParseError::Trailing { ty, extra: r.remaining() });
        }
        Ok(Frame { tag, msg })
    }

    /// The frame on the wire as two buffers: everything but bulk data, then the
    /// data of an Rread/Twrite (empty otherwise), so data is never copied.
    pub fn emit_parts(&self, dialect: Dialect) -> [Bytes; 2] {
        let mut out = BytesMut::with_capacity(64);
        out.put_u32_le(0);
        out.put_u8(self.msg.type_byte());
        out.put_u16_le(self.tag);
        let data = emit_body(&mut out, &self.msg, dialect.is_dotu());
        let size = (out.len() + data.len()) as u32;
        out[..4].copy_from_slice(&size.to_le_bytes());
        [out.freeze(), data]
    }

    /// The frame on the wire as one buffer.
    pub fn emit(&self, dialect: Dialect) -> Bytes {
        let [head, data] = self.emit_parts(dialect);
        if data.is_empty() {
            return head;
        }
        let mut out = BytesMut::with_capacity(head.len() + data.len());
        out.put_slice(&head);
        out.put_slice(&data);
        out.freeze()
    }
}

fn wqids(r: &mut Reader<'_>) -> Result<Vec<Qid>, ParseError> {
    let n = r.u16()?;
    if n as usize > MAXWELEM {
        return Err(ParseError::TooManyWalkElements(n));
    }
    (0..n).map(|_| Qid::parse(r)).collect()
}

fn parse_body(r: &mut Reader<'_>, ty: u8, dotu: bool) -> Result<Msg, ParseError> {
    let opt_u32 = |r: &mut Reader<'_>| if dotu { r.u32().map(Some) } else { Ok(None) };
    Ok(match ty {
        100 => Msg::Tversion { msize: r.u32()?, version: r.string()? },
        101 => Msg::Rversion { msize: r.u32()?, version: r.string()? },
        102 => Msg::Tauth { afid: r.u32()?, uname: r.string()?, aname: r.string()?, n_uname: opt_u32(r)? },
        103 => Msg::Rauth { aqid: Qid::parse(r)? },
        104 => {
            Msg::Tattach { fid: r.u32()?, afid: r.u32()?, uname: r.string()?, aname: r.string()?, n_uname: opt_u32(r)? }
        }
        105 => Msg::Rattach { qid: Qid::parse(r)? },
        107 => Msg::Rerror { ename: r.string()?, errno: opt_u32(r)? },
        108 => Msg::Tflush { oldtag: r.u16()? },
        109 => Msg::Rflush,
        110 => {
            let (fid, newfid, n) = (r.u32()?, r.u32()?, r.u16()?);
            if n as usize > MAXWELEM {
                return Err(ParseError::TooManyWalkElements(n));
            }
            let wnames = (0..n).map(|_| r.string()).collect::<Result<_, _>>()?;
            Msg::Twalk { fid, newfid, wnames }
        }
        111 => Msg::Rwalk { wqids: wqids(r)? },
        112 => Msg::Topen { fid: r.u32()?, mode: r.u8()? },
        113 => Msg::Ropen { qid: Qid::parse(r)?, iounit: r.u32()? },
        114 => Msg::Tcreate {
            fid: r.u32()?,
            name: r.string()?,
            perm: r.u32()?,
            mode: r.u8()?,
            extension: if dotu { Some(r.string()?) } else { None },
        },
        115 => Msg::Rcreate { qid: Qid::parse(r)?, iounit: r.u32()? },
        116 => Msg::Tread { fid: r.u32()?, offset: r.u64()?, count: r.u32()? },
        117 => {
            let n = r.u32()? as usize;
            Msg::Rread { data: r.bytes(n)? }
        }
        118 => {
            let (fid, offset, n) = (r.u32()?, r.u64()?, r.u32()? as usize);
            Msg::Twrite { fid, offset, data: r.bytes(n)? }
        }
        119 => Msg::Rwrite { count: r.u32()? },
        120 => Msg::Tclunk { fid: r.u32()? },
        121 => Msg::Rclunk,
        122 => Msg::Tremove { fid: r.u32()? },
        123 => Msg::Rremove,
        124 => Msg::Tstat { fid: r.u32()? },
        125 => Msg::Rstat { stat: Stat::parse_sized(r, dotu)? },
        126 => Msg::Twstat { fid: r.u32()?, stat: Stat::parse_sized(r, dotu)? },
        127 => Msg::Rwstat,
        other => return Err(ParseError::UnknownType(other)),
    })
}

/// Writes the body of `msg` into `out`; returns bulk data to send after it.
fn emit_body(out: &mut BytesMut, msg: &Msg, dotu: bool) -> Bytes {
    let opt_u32 = |out: &mut BytesMut, v: Option<u32>, default: u32| {
        if dotu {
            out.put_u32_le(v.unwrap_or(default));
        }
    };
    match msg {
        Msg::Tversion { msize, version } | Msg::Rversion { msize, version } => {
            out.put_u32_le(*msize);
            put_str(out, version);
        }
        Msg::Tauth { afid, uname, aname, n_uname } => {
            out.put_u32_le(*afid);
            put_str(out, uname);
            put_str(out, aname);
            opt_u32(out, *n_uname, NONUNAME);
        }
        Msg::Rauth { aqid: qid } | Msg::Rattach { qid } => qid.emit(out),
        Msg::Tattach { fid, afid, uname, aname, n_uname } => {
            out.put_u32_le(*fid);
            out.put_u32_le(*afid);
            put_str(out, uname);
            put_str(out, aname);
            opt_u32(out, *n_uname, NONUNAME);
        }
        Msg::Rerror { ename, errno } => {
            put_str(out, ename);
            opt_u32(out, *errno, 0);
        }
        Msg::Tflush { oldtag } => out.put_u16_le(*oldtag),
        Msg::Twalk { fid, newfid, wnames } => {
            out.put_u32_le(*fid);
            out.put_u32_le(*newfid);
            out.put_u16_le(wnames.len() as u16);
            for n in wnames {
                put_str(out, n);
            }
        }
        Msg::Rwalk { wqids } => {
            out.put_u16_le(wqids.len() as u16);
            for q in wqids {
                q.emit(out);
            }
        }
        Msg::Topen { fid, mode } => {
            out.put_u32_le(*fid);
            out.put_u8(*mode);
        }
        Msg::Ropen { qid, iounit } | Msg::Rcreate { qid, iounit } => {
            qid.emit(out);
            out.put_u32_le(*iounit);
        }
        Msg::Tcreate { fid, name, perm, mode, extension } => {
            out.put_u32_le(*fid);
            put_str(out, name);
            out.put_u32_le(*perm);
            out.put_u8(*mode);
            if dotu {
                put_str(out, extension.as_deref().unwrap_or(""));
            }
        }
        Msg::Tread { fid, offset, count } => {
            out.put_u32_le(*fid);
            out.put_u64_le(*offset);
            out.put_u32_le(*count);
        }
        Msg::Rread { data } => {
            out.put_u32_le(data.len() as u32);
            return data.clone();
        }
        Msg::Twrite { fid, offset, data } => {
            out.put_u32_le(*fid);
            out.put_u64_le(*offset);
            out.put_u32_le(data.len() as u32);
            return data.clone();
        }
        Msg::Rwrite { count } => out.put_u32_le(*count),
        Msg::Tclunk { fid } | Msg::Tremove { fid } | Msg::Tstat { fid } => out.put_u32_le(*fid),
        Msg::Rstat { stat } => stat.emit_sized(out, dotu),
        Msg::Twstat { fid, stat } => {
            out.put_u32_le(*fid);
            stat.emit_sized(out, dotu);
        }
        Msg::Rflush | Msg::Rclunk | Msg::Rremove | Msg::Rwstat => {}
    }
    Bytes::new()
}

/// Splits a byte stream into frames, refusing any frame larger than `msize`.
///
/// Call [`decode`](Decoder::decode) with the bytes received so far: it returns
/// `Ok(None)` until a whole frame is buffered. After a Tversion changes the
/// msize or dialect, call [`set_msize`](Decoder::set_msize) /
/// [`set_dialect`](Decoder::set_dialect).
#[derive(Debug, Clone)]
pub struct Decoder {
    msize: u32,
    dialect: Dialect,
}

impl Decoder {
    /// A decoder with this frame cap and dialect.
    pub fn new(msize: u32, dialect: Dialect) -> Decoder {
        Decoder { msize, dialect }
    }

    /// Changes the frame cap.
    pub fn set_msize(&mut self, msize: u32) {
        self.msize = msize;
    }

    /// Changes the dialect.
    pub fn set_dialect(&mut self, dialect: Dialect) {
        self.dialect = dialect;
    }

    /// The current frame cap.
    pub fn msize(&self) -> u32 {
        self.msize
    }

    /// The current dialect.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// The next whole frame in `buf` (consumed), `Ok(None)` if more bytes are
    /// needed, or a protocol error (the size is checked before the body arrives).
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, ParseError> {
        let Some(raw) = buf.first_chunk::<4>() else { return Ok(None) };
        let size = self.check_size(*raw)?;
        if buf.len() < size {
            buf.reserve(size - buf.len());
            return Ok(None);
        }
        let frame = buf.split_to(size).freeze();
        Frame::parse(frame, self.dialect).map(Some)
    }

    /// As [`decode`](Decoder::decode) over a [`RecvBuf`]: a frame that lies
    /// within one received chunk is sliced out of it without copying.
    pub fn decode_buf(&mut self, buf: &mut RecvBuf) -> Result<Option<Frame>, ParseError> {
        let Some(raw) = buf.peek4() else { return Ok(None) };
        let size = self.check_size(raw)?;
        if buf.len() < size {
            return Ok(None);
        }
        Frame::parse(buf.take(size), self.dialect).map(Some)
    }

    fn check_size(&self, raw: [u8; 4]) -> Result<usize, ParseError> {
        let size = u32::from_le_bytes(raw);
        if size < HEADER_LEN as u32 {
            return Err(ParseError::Undersize(size));
        }
        if size > self.msize {
            return Err(ParseError::Oversize { size, msize: self.msize });
        }
        Ok(size as usize)
    }
}

/// Received bytes kept as the chunks a flow handed out, so that a frame
/// inside one chunk is a zero-copy slice and one spanning chunks is copied
/// once into an allocation of exactly its size.
#[derive(Debug, Default)]
pub struct RecvBuf {
    chunks: std::collections::VecDeque<Bytes>,
    len: usize,
}

impl RecvBuf {
    /// An empty buffer.
    pub fn new() -> RecvBuf {
        RecvBuf::default()
    }

    /// Appends a received chunk.
    pub fn push(&mut self, chunk: Bytes) {
        if !chunk.is_empty() {
            self.len += chunk.len();
            self.chunks.push_back(chunk);
        }
    }

    /// How many bytes are buffered.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is buffered.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn peek4(&self) -> Option<[u8; 4]> {
        if self.len < 4 {
            return None;
        }
        let mut out = [0u8; 4];
        let mut got = 0;
        for c in &self.chunks {
            let n = (4 - got).min(c.len());
            out[got..got + n].copy_from_slice(&c[..n]);
            got += n;
            if got == 4 {
                break;
            }
        }
        Some(out)
    }

    /// The first `n` buffered bytes (`n <= len`).
    fn take(&mut self, n: usize) -> Bytes {
        self.len -= n;
        let first = self.chunks.front_mut().expect("n <= len");
        if first.len() >= n {
            let out = first.split_to(n);
            if first.is_empty() {
                self.chunks.pop_front();
            }
            return out;
        }
        let mut out = BytesMut::with_capacity(n);
        while out.len() < n {
            let c = self.chunks.front_mut().expect("n <= len");
            let k = (n - out.len()).min(c.len());
            out.put_slice(&c.split_to(k));
            if c.is_empty() {
                self.chunks.pop_front();
            }
        }
        out.freeze()
    }
}

#[cfg(test)]
mod tests;

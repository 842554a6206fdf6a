//! The shutdown framing on the wire, sans-IO: a typed [`Header`], an
//! incremental [`Decoder`] and a batching [`Encoder`].
//!
//! Invariant: nothing in this module does I/O or reads a clock.

use std::collections::VecDeque;
use std::fmt;
use std::io::IoSlice;

use bytes::{Buf, Bytes, BytesMut};

/// The default (and compatibility-safe) largest payload of one data frame.
///
/// Newer Windows builds broke on larger frames, and the OCaml and Go peers
/// never send more, so this is both what we send and, by default, the largest
/// length we accept.
pub const DEFAULT_MAX_FRAME: u32 = 4096;

const SHUTDOWN_READ: u32 = 0xDEAD_BEEF;
const SHUTDOWN_WRITE: u32 = 0xBEEF_DEAD;
const CLOSE: u32 = 0xDEAD_DEAD;

/// A 4-byte little-endian frame header.
///
/// Three values are markers; every other value is the length of the data
/// payload that follows. Lengths of 2^31 or more that are not markers are
/// never valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Header {
    /// `n` payload bytes follow.
    Data(u32),
    /// `0xDEADBEEF`: the sender will not read any more.
    ShutdownRead,
    /// `0xBEEFDEAD`: the sender will not write any more (Eof).
    ShutdownWrite,
    /// `0xDEADDEAD`: close request, and also its acknowledgement.
    Close,
}

/// A header that can never be valid, or one whose length is above the cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// Fewer than 4 bytes were given.
    #[error("header needs 4 bytes, got {0}")]
    Short(usize),
    /// A length of 2^31 or more that is not a marker.
    #[error("invalid frame header {0:#010x} (length >= 2^31 and not a marker)")]
    Invalid(u32),
    /// A data length above the configured cap.
    #[error("frame length {len} exceeds the maximum of {max}")]
    Oversize {
        /// The announced payload length.
        len: u32,
        /// The configured cap.
        max: u32,
    },
}

impl Header {
    /// The size of a header on the wire.
    pub const LEN: usize = 4;

    /// The header for a raw little-endian value, without any length cap.
    pub fn from_u32(value: u32) -> Result<Header, HeaderError> {
        match value {
            SHUTDOWN_READ => Ok(Header::ShutdownRead),
            SHUTDOWN_WRITE => Ok(Header::ShutdownWrite),
            CLOSE => Ok(Header::Close),
            n if n >= 1 << 31 => Err(HeaderError::Invalid(n)),
            n => Ok(Header::Data(n)),
        }
    }

    /// The raw value of this header.
    pub fn to_u32(self) -> u32 {
        match self {
            Header::Data(n) => n,
            Header::ShutdownRead => SHUTDOWN_READ,
            Header::ShutdownWrite => SHUTDOWN_WRITE,
            Header::Close => CLOSE,
        }
    }

    /// Parses the first 4 bytes of `bytes`, accepting data lengths up to `max`.
    pub fn parse(bytes: &[u8], max: u32) -> Result<Header, HeaderError> {
        let Some(raw) = bytes.first_chunk::<4>() else { return Err(HeaderError::Short(bytes.len())) };
        match Header::from_u32(u32::from_le_bytes(*raw))? {
            Header::Data(len) if len > max => Err(HeaderError::Oversize { len, max }),
            h => Ok(h),
        }
    }

    /// The 4 bytes of this header on the wire.
    pub fn to_bytes(self) -> [u8; 4] {
        self.to_u32().to_le_bytes()
    }

    /// Writes this header into the first 4 bytes of `buf`.
    ///
    /// # Panics
    ///
    /// If `buf` is shorter than 4 bytes (a caller bug, not input).
    pub fn emit(self, buf: &mut [u8]) {
        buf[..4].copy_from_slice(&self.to_bytes());
    }
}

impl fmt::Display for Header {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Header::Data(n) => write!(f, "Data({n})"),
            Header::ShutdownRead => f.write_str("ShutdownRead"),
            Header::ShutdownWrite => f.write_str("ShutdownWrite"),
            Header::Close => f.write_str("Close"),
        }
    }
}

/// What the decoder produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Payload bytes (never empty). A frame's payload may come out in several
    /// pieces when it arrives in several reads.
    Data(Bytes),
    /// The peer will not read any more.
    ShutdownRead,
    /// The peer will not write any more.
    ShutdownWrite,
    /// The peer closes (or acknowledges our close).
    Close,
}

/// The stream broke the framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// A header that can never be valid, or above the length cap.
    #[error(transparent)]
    Header(#[from] HeaderError),
    /// The transport ended inside a frame.
    #[error(
        "stream truncated: Eof after {header_bytes} of 4 header bytes and with {payload_missing} payload bytes missing"
    )]
    Truncated {
        /// Header bytes received of the unfinished header (0 inside a payload).
        header_bytes: usize,
        /// Payload bytes still expected.
        payload_missing: u32,
    },
}

/// The incremental decoder.
///
/// Feed it the bytes read from the socket in a [`BytesMut`]; each
/// [`decode`](Decoder::decode) returns the next frame, or `Ok(None)` when it
/// needs more bytes. Payloads are split off the front of the buffer and frozen,
/// so they share its allocation: no allocation or copy per frame. Payloads are
/// streamed: part of a frame is handed out as soon as it arrived. `Data(0)` is
/// skipped. At Eof, call [`decode_eof`](Decoder::decode_eof) to learn whether
/// the stream ended cleanly.
///
/// ```
/// use bytes::BytesMut;
/// use conflux_hvsock::framing::{Decoder, Frame};
///
/// let mut dec = Decoder::new();
/// let mut buf = BytesMut::from(&[5u8, 0][..]);
/// assert_eq!(dec.decode(&mut buf), Ok(None)); // header split across reads
/// buf.extend_from_slice(&[0, 0, b'h', b'e', b'l', b'l', b'o', 0xad, 0xde, 0xef, 0xbe]);
/// assert_eq!(dec.decode(&mut buf), Ok(Some(Frame::Data("hello".into()))));
/// assert_eq!(dec.decode(&mut buf), Ok(Some(Frame::ShutdownWrite)));
/// assert_eq!(dec.decode(&mut buf), Ok(None));
/// assert_eq!(dec.decode_eof(&buf), Ok(()));
/// ```
#[derive(Debug, Clone)]
pub struct Decoder {
    max_frame: u32,
    /// Payload bytes still to come of the current data frame.
    remaining: u32,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new()
    }
}

impl Decoder {
    /// A decoder accepting frames up to [`DEFAULT_MAX_FRAME`].
    pub fn new() -> Decoder {
        Decoder::with_max_frame(DEFAULT_MAX_FRAME)
    }

    /// A decoder accepting data lengths up to `max_frame` (clamped below 2^31).
    pub fn with_max_frame(max_frame: u32) -> Decoder {
        Decoder { max_frame: max_frame.min((1 << 31) - 1), remaining: 0 }
    }

    /// The largest accepted data length.
    pub fn max_frame(&self) -> u32 {
        self.max_frame
    }

    /// The next frame from the front of `buf`, or `Ok(None)` for "need more bytes".
    ///
    /// After an error the stream is unusable; the decoder does not resynchronise.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, DecodeError> {
        if let Some(done) = self.skip_to_payload(buf)? {
            return Ok(done);
        }
        let n = buf.len().min(self.remaining as usize);
        self.remaining -= n as u32;
        Ok(Some(Frame::Data(buf.split_to(n).freeze())))
    }

    /// Reads headers off the front of `buf` until a payload byte is next
    /// (`Ok(None)`: `self.remaining > 0` and `buf` is not empty), or says
    /// what to return instead: a marker, or `None` for "need more bytes".
    pub(crate) fn skip_to_payload(&mut self, buf: &mut BytesMut) -> Result<Option<Option<Frame>>, DecodeError> {
        loop {
            if self.remaining > 0 {
                return Ok(if buf.is_empty() { Some(None) } else { None });
            }
            if buf.len() < Header::LEN {
                return Ok(Some(None));
            }
            let header = Header::parse(buf, self.max_frame)?;
            buf.advance(Header::LEN);
            match header {
                Header::Data(0) => continue,
                Header::Data(n) => self.remaining = n,
                Header::ShutdownRead => return Ok(Some(Some(Frame::ShutdownRead))),
                Header::ShutdownWrite => return Ok(Some(Some(Frame::ShutdownWrite))),
                Header::Close => return Ok(Some(Some(Frame::Close))),
            }
        }
    }

    /// Like [`decode`](Decoder::decode), but a data result also takes the
    /// payloads of the data frames that follow it in `buf` (up to the next
    /// marker, invalid header or incomplete header), moved in place over
    /// their headers so they come out as one contiguous chunk.
    ///
    /// One `read` of a socket carrying 4 KiB frames then gives one chunk of
    /// up to the whole read, not one per frame: the reader's next write (or
    /// a relay's) is one syscall, not one per frame. The move is one copy
    /// within the read buffer, cheaper by far than a syscall per frame.
    /// Frame boundaries are not kept (they carry no meaning in the framing).
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use conflux_hvsock::framing::{Decoder, Frame};
    ///
    /// let mut dec = Decoder::new();
    /// let mut buf = BytesMut::from(&b"\x02\0\0\0ab\x03\0\0\0cde\xad\xde\xef\xbe"[..]);
    /// assert_eq!(dec.decode_coalesced(&mut buf), Ok(Some(Frame::Data("abcde".into()))));
    /// assert_eq!(dec.decode_coalesced(&mut buf), Ok(Some(Frame::ShutdownWrite)));
    /// ```
    pub fn decode_coalesced(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, DecodeError> {
        if let Some(done) = self.skip_to_payload(buf)? {
            return Ok(done);
        }
        // `w`: end of the contiguous payload so far; `r`: next unread byte.
        let len = buf.len();
        let first = len.min(self.remaining as usize);
        self.remaining -= first as u32;
        let (mut w, mut r) = (first, first);
        while r < len {
            if self.remaining > 0 {
                let n = (len - r).min(self.remaining as usize);
                if w != r {
                    buf.copy_within(r..r + n, w);
                }
                w += n;
                r += n;
                self.remaining -= n as u32;
                continue;
            }
            if len - r < Header::LEN {
                break;
            }
            // A marker or a bad header is left for the next call.
            match Header::parse(&buf[r..], self.max_frame) {
                Ok(Header::Data(n)) => {
                    r += Header::LEN;
                    self.remaining = n;
                }
                _ => break,
            }
        }
        let data = buf.split_to(w).freeze();
        buf.advance(r - w);
        Ok(Some(Frame::Data(data)))
    }

    /// Starts the next frame from a header read apart from the stream (a
    /// scattered read's slot) when it is exactly `Data(expect)`, `expect > 0`,
    /// and the current frame is complete; otherwise changes nothing and
    /// returns false: the caller puts the header back in the stream, where
    /// [`decode`](Self::decode) judges it (markers, `Data(0)`, bad lengths).
    pub(crate) fn take_header(&mut self, header: [u8; 4], expect: u32) -> bool {
        if self.remaining != 0 || expect == 0 {
            return false;
        }
        match Header::parse(&header, self.max_frame) {
            Ok(Header::Data(n)) if n == expect => {
                self.remaining = n;
                true
            }
            _ => false,
        }
    }

    /// Payload bytes still to come of the current data frame.
    pub(crate) fn remaining(&self) -> u32 {
        self.remaining
    }

    /// Counts `n` payload bytes of the current frame as taken (by a caller
    /// that read them itself, after [`skip_to_payload`](Self::skip_to_payload)).
    ///
    /// # Panics
    ///
    /// In debug builds, when `n` is more than [`remaining`](Self::remaining) (a caller bug).
    pub(crate) fn consume(&mut self, n: usize) {
        debug_assert!(n <= self.remaining as usize);
        self.remaining -= n as u32;
    }

    /// Whether the stream may end here: `Err(Truncated)` when the transport's
    /// Eof came inside a header or a payload. `buf` is what is left undecoded.
    pub fn decode_eof(&self, buf: &[u8]) -> Result<(), DecodeError> {
        if self.remaining > 0 || !buf.is_empty() {
            let header_bytes = if self.remaining > 0 { 0 } else { buf.len() };
            return Err(DecodeError::Truncated { header_bytes, payload_missing: self.remaining });
        }
        Ok(())
    }
}

/// One queued frame: its header (partly sent, perhaps) and its payload.
#[derive(Debug, Clone)]
struct OutFrame {
    header: [u8; 4],
    /// Header bytes already written.
    header_sent: u8,
    payload: Bytes,
}

impl OutFrame {
    fn header_left(&self) -> &[u8] {
        &self.header[self.header_sent as usize..]
    }
}

/// The batching encoder: a queue of frames ready for one vectored write.
///
/// [`push_data`](Encoder::push_data) splits a buffer into frames of at most
/// the frame size (sharing the buffer, never copying it); markers are queued
/// with [`push_marker`](Encoder::push_marker).
/// [`chunks_vectored`](Encoder::chunks_vectored) fills an `IoSlice` array with
/// header, payload, header, payload, ... for `writev`, and
/// [`advance`](Encoder::advance) drops what the socket took, partial frames
/// included.
///
/// ```
/// use bytes::Bytes;
/// use conflux_hvsock::framing::{Encoder, Header};
///
/// let mut enc = Encoder::new();
/// enc.push_data(&mut Bytes::from_static(b"ab"), usize::MAX);
/// enc.push_data(&mut Bytes::from_static(b"c"), usize::MAX);
/// enc.push_marker(Header::ShutdownWrite);
/// assert_eq!(enc.to_vec(), b"\x02\0\0\0ab\x01\0\0\0c\xad\xde\xef\xbe");
/// ```
#[derive(Debug, Clone)]
pub struct Encoder {
    max_frame: usize,
    queue: VecDeque<OutFrame>,
    queued: usize,
}

impl Default for Encoder {
    fn default() -> Self {
        Encoder::new()
    }
}

impl Encoder {
    /// An encoder sending frames of at most [`DEFAULT_MAX_FRAME`] payload bytes.
    pub fn new() -> Encoder {
        Encoder::with_max_frame(DEFAULT_MAX_FRAME)
    }

    /// An encoder sending frames of at most `max_frame` payload bytes (at least 1,
    /// below 2^31). Peers other than this crate expect 4096 at most.
    pub fn with_max_frame(max_frame: u32) -> Encoder {
        Encoder { max_frame: max_frame.clamp(1, (1 << 31) - 1) as usize, queue: VecDeque::new(), queued: 0 }
    }

    /// Moves frames off the front of `buf` into the queue while fewer than
    /// `budget` bytes are queued (at least one frame goes when the queue is
    /// empty). Returns the payload bytes taken. An empty `buf` queues nothing.
    pub fn push_data(&mut self, buf: &mut Bytes, budget: usize) -> usize {
        let mut taken = 0;
        while !buf.is_empty() && (self.queued < budget || self.queue.is_empty()) {
            let n = buf.len().min(self.max_frame);
            let payload = if n == buf.len() { std::mem::take(buf) } else { buf.split_to(n) };
            self.queue.push_back(OutFrame { header: Header::Data(n as u32).to_bytes(), header_sent: 0, payload });
            self.queued += Header::LEN + n;
            taken += n;
        }
        taken
    }

    /// The most payload bytes a frame carries.
    pub(crate) fn max_frame_len(&self) -> usize {
        self.max_frame
    }

    /// Queues (a copy of) the rest of a data frame of `payload` whose first
    /// `sent` bytes, header included, a vectored write already took.
    pub(crate) fn push_partial_data(&mut self, payload: &[u8], sent: usize) {
        let header_sent = sent.min(Header::LEN);
        let payload_sent = (sent - header_sent).min(payload.len());
        self.push_cut_data(payload.len(), header_sent, Bytes::copy_from_slice(&payload[payload_sent..]));
    }

    /// Queues the rest of a data frame of `len` payload bytes that a
    /// vectored write cut: the `header_sent` header bytes it took are not
    /// sent again, `rest` is the payload it did not take.
    pub(crate) fn push_cut_data(&mut self, len: usize, header_sent: usize, rest: Bytes) {
        debug_assert!(header_sent <= Header::LEN && rest.len() <= len);
        self.queued += Header::LEN - header_sent + rest.len();
        let header = Header::Data(len as u32).to_bytes();
        self.queue.push_back(OutFrame { header, header_sent: header_sent as u8, payload: rest });
    }

    /// Queues a marker (or any header without payload).
    pub fn push_marker(&mut self, header: Header) {
        self.queue.push_back(OutFrame { header: header.to_bytes(), header_sent: 0, payload: Bytes::new() });
        self.queued += Header::LEN;
    }

    /// Bytes queued and not yet taken by [`advance`](Encoder::advance).
    pub fn queued(&self) -> usize {
        self.queued
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Fills `dst` with the queued bytes, in order; returns the number of slices used.
    pub fn chunks_vectored<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        for frame in &self.queue {
            let header = frame.header_left();
            if !header.is_empty() {
                if n == dst.len() {
                    break;
                }
                dst[n] = IoSlice::new(header);
                n += 1;
            }
            if !frame.payload.is_empty() {
                if n == dst.len() {
                    break;
                }
                dst[n] = IoSlice::new(&frame.payload);
                n += 1;
            }
        }
        n
    }

    /// How many slices [`chunks_vectored`](Encoder::chunks_vectored) needs
    /// for the whole queue.
    pub(crate) fn slices_needed(&self) -> usize {
        self.queue.iter().map(|f| usize::from(!f.header_left().is_empty()) + usize::from(!f.payload.is_empty())).sum()
    }

    /// Drops the first `n` queued bytes (what the socket accepted).
    pub fn advance(&mut self, mut n: usize) {
        self.queued -= n.min(self.queued);
        while n > 0 {
            let Some(frame) = self.queue.front_mut() else { return };
            let h = frame.header_left().len().min(n);
            frame.header_sent += h as u8;
            n -= h;
            let p = frame.payload.len().min(n);
            frame.payload.advance(p);
            n -= p;
            if frame.header_left().is_empty() && frame.payload.is_empty() {
                self.queue.pop_front();
            }
        }
    }

    /// Drains the queue into one contiguous buffer (tests, the fuzzer, vectors).
    pub fn to_vec(&mut self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.queued);
        for frame in self.queue.drain(..) {
            out.extend_from_slice(frame.header_left());
            out.extend_from_slice(&frame.payload);
        }
        self.queued = 0;
        out
    }
}

#[cfg(test)]
mod tests;

//! QEMU's stream framing on the wire, sans-IO: a typed [`StreamHeader`]
//! and an incremental [`StreamDecoder`].
//!
//! The format QEMU's `-netdev stream` (and the older `-netdev socket`),
//! passt and gvisor-tap-vsock's "qemu" protocol speak: every Ethernet frame
//! is preceded by its length as a 4-byte big-endian unsigned integer. There
//! is no handshake and no marker; a length of zero is never sent.
//!
//! Invariant: nothing in this module does I/O or reads a clock.

/// The Ethernet header a frame carries on top of its MTU-sized IP packet.
pub const ETHERNET_HEADER: usize = 14;

/// The largest frame length accepted for a device of `mtu`: the MTU plus
/// the Ethernet header (saturating at `u32::MAX`).
pub fn max_frame_len(mtu: usize) -> u32 {
    u32::try_from(mtu.saturating_add(ETHERNET_HEADER)).unwrap_or(u32::MAX)
}

/// A 4-byte big-endian frame length, valid (1 to the cap) by construction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StreamHeader {
    len: u32,
}

/// A frame length that the framing does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StreamHeaderError {
    /// Fewer than 4 bytes were given.
    #[error("stream header needs 4 bytes, got {0}")]
    Short(usize),
    /// A frame length of zero (no Ethernet frame is empty).
    #[error("frame length 0 (an empty frame)")]
    Zero,
    /// A frame length above the cap (the MTU plus the Ethernet header).
    #[error("frame length {len} exceeds the maximum of {max} (MTU plus Ethernet header)")]
    Oversize {
        /// The announced frame length.
        len: u32,
        /// The cap.
        max: u32,
    },
}

impl StreamHeader {
    /// The size of a header on the wire.
    pub const LEN: usize = 4;

    /// The header of a frame of `len` bytes, if `1 <= len <= max`.
    pub fn new(len: usize, max: u32) -> Result<StreamHeader, StreamHeaderError> {
        match u32::try_from(len) {
            Ok(0) => Err(StreamHeaderError::Zero),
            Ok(len) if len <= max => Ok(StreamHeader { len }),
            Ok(len) => Err(StreamHeaderError::Oversize { len, max }),
            Err(_) => Err(StreamHeaderError::Oversize { len: u32::MAX, max }),
        }
    }

    /// Parses the first 4 bytes of `bytes`, accepting lengths from 1 to `max`.
    pub fn parse(bytes: &[u8], max: u32) -> Result<StreamHeader, StreamHeaderError> {
        let Some(raw) = bytes.first_chunk::<4>() else { return Err(StreamHeaderError::Short(bytes.len())) };
        StreamHeader::new(u32::from_be_bytes(*raw) as usize, max)
    }

    /// The frame length this header announces.
    pub fn frame_len(self) -> usize {
        self.len as usize
    }

    /// The 4 bytes of this header on the wire.
    pub fn to_bytes(self) -> [u8; 4] {
        self.len.to_be_bytes()
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

/// The stream broke the framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StreamDecodeError {
    /// A zero or oversize frame length.
    #[error(transparent)]
    Header(#[from] StreamHeaderError),
    /// The transport ended inside a frame.
    #[error(
        "stream truncated: the peer ended the stream after {header_bytes} of 4 header bytes and with {payload_missing} frame bytes missing"
    )]
    Truncated {
        /// Header bytes received of the unfinished header (0 inside a frame).
        header_bytes: usize,
        /// Frame bytes still expected.
        payload_missing: u32,
    },
}

/// One step of [`StreamDecoder::decode`]: a frame, or a piece of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FramePiece<'a> {
    /// A whole frame, borrowed from the input (the usual case: no copy).
    Whole(&'a [u8]),
    /// The start of a frame of `len` bytes that continues in later input;
    /// `bytes` (perhaps empty) are its first bytes.
    Start {
        /// The frame's whole length.
        len: usize,
        /// Its first bytes.
        bytes: &'a [u8],
    },
    /// More bytes of the frame begun by the last `Start`; `end` when they
    /// complete it.
    More {
        /// The next bytes of the frame.
        bytes: &'a [u8],
        /// Whether the frame is complete with these.
        end: bool,
    },
}

/// The incremental decoder.
///
/// Feed it each chunk read from the transport as a slice cursor: every
/// [`decode`](StreamDecoder::decode) takes bytes off the front and returns
/// the next [`FramePiece`], or `Ok(None)` once the input is used up ("need
/// more bytes"). A frame that lies whole in the input comes out borrowed
/// ([`FramePiece::Whole`]); one that spans reads comes out as a `Start`
/// (with its length, so the caller can size its buffer once) and `More`
/// pieces. A header split across reads is kept inside (at most 3 bytes).
/// At the transport's Eof, [`decode_eof`](StreamDecoder::decode_eof) says
/// whether the stream ended between frames.
///
/// ```
/// use conflux_usernet::{FramePiece, StreamDecoder};
///
/// let mut dec = StreamDecoder::new(1514);
/// let mut input: &[u8] = &[0, 0, 0, 3, 0xaa, 0xbb, 0xcc, 0, 0];
/// assert_eq!(dec.decode(&mut input), Ok(Some(FramePiece::Whole(&[0xaa, 0xbb, 0xcc]))));
/// assert_eq!(dec.decode(&mut input), Ok(None)); // half a header kept
/// let mut input: &[u8] = &[0, 2, 0x11];
/// assert_eq!(dec.decode(&mut input), Ok(Some(FramePiece::Start { len: 2, bytes: &[0x11] })));
/// let mut input: &[u8] = &[0x22];
/// assert_eq!(dec.decode(&mut input), Ok(Some(FramePiece::More { bytes: &[0x22], end: true })));
/// assert_eq!(dec.decode_eof(), Ok(()));
/// ```
#[derive(Debug, Clone)]
pub struct StreamDecoder {
    max_frame: u32,
    header: [u8; 4],
    /// Header bytes held of a header split across reads.
    header_len: u8,
    /// Frame bytes still to come of the frame begun by the last `Start`.
    remaining: u32,
}

impl StreamDecoder {
    /// A decoder accepting frames of 1 to `max_frame` bytes (see [`max_frame_len`]).
    pub fn new(max_frame: u32) -> StreamDecoder {
        StreamDecoder { max_frame, header: [0; 4], header_len: 0, remaining: 0 }
    }

    /// The largest accepted frame length.
    pub fn max_frame(&self) -> u32 {
        self.max_frame
    }

    /// Whether the decoder is between frames with no header bytes held.
    pub fn is_idle(&self) -> bool {
        self.remaining == 0 && self.header_len == 0
    }

    /// The next frame or piece of one from the front of `input`, or
    /// `Ok(None)` once `input` is empty (or holds only part of a header,
    /// which the decoder keeps). After an error the stream is unusable; the
    /// decoder does not resynchronise.
    pub fn decode<'a>(&mut self, input: &mut &'a [u8]) -> Result<Option<FramePiece<'a>>, StreamDecodeError> {
        if self.remaining > 0 {
            if input.is_empty() {
                return Ok(None);
            }
            let n = input.len().min(self.remaining as usize);
            let (bytes, rest) = input.split_at(n);
            *input = rest;
            self.remaining -= n as u32;
            return Ok(Some(FramePiece::More { bytes, end: self.remaining == 0 }));
        }
        let header = if self.header_len == 0 && input.len() >= StreamHeader::LEN {
            let header = StreamHeader::parse(input, self.max_frame)?;
            *input = &input[StreamHeader::LEN..];
            header
        } else {
            let held = self.header_len as usize;
            let n = input.len().min(StreamHeader::LEN - held);
            self.header[held..held + n].copy_from_slice(&input[..n]);
            *input = &input[n..];
            self.header_len += n as u8;
            if (self.header_len as usize) < StreamHeader::LEN {
                return Ok(None);
            }
            self.header_len = 0;
            StreamHeader::parse(&self.header, self.max_frame)?
        };
        let len = header.frame_len();
        if input.len() >= len {
            let (frame, rest) = input.split_at(len);
            *input = rest;
            return Ok(Some(FramePiece::Whole(frame)));
        }
        let bytes = std::mem::take(input);
        self.remaining = (len - bytes.len()) as u32;
        Ok(Some(FramePiece::Start { len, bytes }))
    }

    /// Whether the stream may end here: `Err(Truncated)` when the
    /// transport's Eof came inside a header or a frame.
    pub fn decode_eof(&self) -> Result<(), StreamDecodeError> {
        if self.is_idle() {
            return Ok(());
        }
        Err(StreamDecodeError::Truncated { header_bytes: self.header_len as usize, payload_missing: self.remaining })
    }
}

#[cfg(test)]
mod tests;

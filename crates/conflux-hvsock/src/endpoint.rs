//! One endpoint of the shutdown framing as a sans-IO state machine.
//!
//! Invariant: no I/O and no clock here; time comes in as an argument.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use conflux_flow::FlowError;
use tokio::io::ReadBuf;

use crate::codec::{DEFAULT_MAX_FRAME, DecodeError, Decoder, Frame, Header};

/// The default bound on how long a close waits for the peer's acknowledgement
/// (upstream waits forever).
pub const DEFAULT_CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Settings of the shutdown framing.
///
/// ```
/// use std::time::Duration;
/// use conflux_hvsock::FramingConfig;
///
/// let cfg = FramingConfig::new().max_frame(4096).close_timeout(Duration::from_secs(2));
/// assert_eq!(cfg.max_frame_len(), 4096);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FramingConfig {
    max_frame: u32,
    close_timeout: Duration,
    errors_as_eof: bool,
}

impl Default for FramingConfig {
    fn default() -> Self {
        FramingConfig::new()
    }
}

impl FramingConfig {
    /// 4096-byte frames, a 5 s close timeout, errors reported as errors.
    pub fn new() -> FramingConfig {
        FramingConfig { max_frame: DEFAULT_MAX_FRAME, close_timeout: DEFAULT_CLOSE_TIMEOUT, errors_as_eof: false }
    }

    /// The compatibility knob: the largest payload sent in one frame and the
    /// largest length accepted. Keep 4096 (the default) for OCaml, Go and
    /// Windows peers; raise it only when both ends are this crate.
    pub fn max_frame(mut self, max_frame: u32) -> FramingConfig {
        self.max_frame = max_frame.clamp(1, (1 << 31) - 1);
        self
    }

    /// How long a close waits for the peer's acknowledgement (or, after we
    /// acknowledged the peer's close, for the peer to release the socket)
    /// before closing the socket anyway.
    pub fn close_timeout(mut self, timeout: Duration) -> FramingConfig {
        self.close_timeout = timeout;
        self
    }

    /// Upstream's view: every read error (reset, protocol error, truncation)
    /// reads as Eof. Off by default, which keeps the kinds apart.
    pub fn errors_as_eof(mut self, yes: bool) -> FramingConfig {
        self.errors_as_eof = yes;
        self
    }

    /// The configured frame size.
    pub fn max_frame_len(&self) -> u32 {
        self.max_frame
    }
}

/// Why an operation of an [`Endpoint`] failed. Cloned when latched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    /// The endpoint can no longer send (shut down, closed, or the peer stopped reading).
    #[error("attempted to write to a closed flow")]
    Closed,
    /// The transport was reset by the peer.
    #[error("connection reset by peer")]
    Reset,
    /// The peer broke the framing, or the transport ended inside a frame.
    #[error("framing protocol error: {0}")]
    Protocol(#[from] DecodeError),
    /// The transport failed otherwise.
    #[error("transport error: {0}")]
    Transport(Arc<str>),
}

impl EndpointError {
    /// Classifies a transport error.
    pub fn from_io(err: &io::Error) -> EndpointError {
        match err.kind() {
            io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted => EndpointError::Reset,
            io::ErrorKind::BrokenPipe | io::ErrorKind::NotConnected => EndpointError::Closed,
            _ => EndpointError::Transport(err.to_string().into()),
        }
    }
}

impl From<EndpointError> for FlowError {
    fn from(err: EndpointError) -> FlowError {
        match err {
            EndpointError::Closed => FlowError::closed(),
            EndpointError::Reset => FlowError::reset(),
            EndpointError::Protocol(e) => FlowError::protocol(e.to_string()),
            EndpointError::Transport(msg) => FlowError::other(msg.to_string()),
        }
    }
}

/// What a read of the endpoint gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadEvent {
    /// Payload bytes, never empty.
    Data(Bytes),
    /// The peer will send no more (sticky).
    Eof,
    /// A latched read error.
    Error(EndpointError),
    /// Read the transport into the buffer, then ask again.
    NeedInput,
}

/// Where the close handshake stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CloseState {
    /// Nobody closed.
    Open,
    /// The peer sent Close; we queued the acknowledgement. Reads give Eof.
    Acked,
    /// We sent Close and wait for the peer's Close (or ShutdownRead, or Eof).
    Closing,
    /// The socket may be released.
    Done,
}

/// One endpoint of the shutdown framing (OCaml `Flow_shutdown`), sans-IO.
///
/// The I/O layer owns the socket, a read buffer and an [`Encoder`](crate::framing::Encoder);
/// the endpoint owns the [`Decoder`] and every decision. Call order:
///
/// 1. reads: [`poll_read`](Self::poll_read) with the read buffer; on
///    [`ReadEvent::NeedInput`] read the transport into the buffer (on Eof call
///    [`handle_eof`](Self::handle_eof), on an error
///    [`handle_read_error`](Self::handle_read_error)) and ask again;
/// 2. writes: check [`write_allowed`](Self::write_allowed) before queueing data;
///    report write failures to [`handle_write_error`](Self::handle_write_error);
/// 3. after every call, send what [`poll_transmit`](Self::poll_transmit) returns
///    (markers, queued behind any data already queued);
/// 4. [`shutdown_read`](Self::shutdown_read), [`shutdown_write`](Self::shutdown_write),
///    [`close`](Self::close) and [`abort`](Self::abort) change state; during a close
///    keep feeding input through [`poll_close_input`](Self::poll_close_input) and
///    call [`handle_timeout`](Self::handle_timeout) at [`poll_timeout`](Self::poll_timeout);
///    release the socket once [`is_done`](Self::is_done).
///
/// One reader: the endpoint is the only consumer of the decoder, so a close
/// never races an application read for frames; the I/O layer serialises the two.
///
/// After we acknowledge the peer's Close we do not release the socket at once:
/// we linger (bounded by the close timeout) until the peer releases its end, so
/// a transport that drops unread bytes on close cannot eat the acknowledgement.
/// The OCaml and Go peers close right after they read it.
#[derive(Debug)]
pub struct Endpoint {
    config: FramingConfig,
    decoder: Decoder,
    transmit: VecDeque<Header>,
    close: CloseState,
    deadline: Option<Instant>,
    timed_out: bool,
    /// We sent ShutdownRead (or closed): reads give Eof.
    read_shut: bool,
    /// We sent ShutdownWrite (or closed): writes give Closed.
    write_shut: bool,
    /// The peer sent ShutdownWrite (or Close), or the transport ended: Eof after the data.
    peer_eof: bool,
    /// The peer sent ShutdownRead: writes give Closed.
    peer_read_shut: bool,
    transport_eof: bool,
    read_error: Option<EndpointError>,
    write_error: Option<EndpointError>,
}

impl Endpoint {
    /// A fresh endpoint, as after connect or accept.
    pub fn new(config: FramingConfig) -> Endpoint {
        Endpoint {
            decoder: Decoder::with_max_frame(config.max_frame),
            config,
            transmit: VecDeque::new(),
            close: CloseState::Open,
            deadline: None,
            timed_out: false,
            read_shut: false,
            write_shut: false,
            peer_eof: false,
            peer_read_shut: false,
            transport_eof: false,
            read_error: None,
            write_error: None,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &FramingConfig {
        &self.config
    }

    /// Decodes from `buf` until a frame to hand out; markers change state, data
    /// that nobody will read is discarded. Stops after the peer's Close.
    fn pump(&mut self, buf: &mut BytesMut) -> Option<Bytes> {
        loop {
            if self.read_error.is_some() {
                return None;
            }
            if matches!(self.close, CloseState::Done | CloseState::Acked) {
                // Nothing after the peer's Close means anything.
                buf.clear();
                return None;
            }
            match self.decoder.decode_coalesced(buf) {
                Ok(Some(Frame::Data(d))) => {
                    if self.delivers() {
                        return Some(d);
                    }
                }
                Ok(Some(marker)) => self.on_marker(marker),
                Ok(None) => return None,
                Err(e) => self.on_decode_error(e),
            }
        }
    }

    /// Whether payload bytes reach the application (otherwise they are discarded).
    fn delivers(&self) -> bool {
        !self.read_shut && !self.peer_eof && self.close == CloseState::Open
    }

    /// The peer broke the framing: the error latches, a close stops waiting.
    fn on_decode_error(&mut self, e: DecodeError) {
        tracing::debug!(error = %e, "malformed frame from the peer");
        self.read_error = Some(EndpointError::Protocol(e));
        if self.close == CloseState::Closing {
            self.close = CloseState::Done;
        }
    }

    /// A marker from the peer changes state.
    fn on_marker(&mut self, marker: Frame) {
        match marker {
            Frame::Data(_) => {}
            Frame::ShutdownWrite => {
                tracing::trace!("peer shut down its write side");
                self.peer_eof = true;
            }
            Frame::ShutdownRead => {
                tracing::trace!("peer shut down its read side");
                self.peer_read_shut = true;
                if self.close == CloseState::Closing {
                    self.close = CloseState::Done;
                }
            }
            Frame::Close => match self.close {
                CloseState::Closing => {
                    tracing::trace!("peer acknowledged our close");
                    self.close = CloseState::Done;
                }
                _ => {
                    tracing::trace!("peer closes; acknowledging");
                    self.transmit.push_back(Header::Close);
                    self.close = CloseState::Acked;
                    self.peer_eof = true;
                    self.peer_read_shut = true;
                }
            },
        }
    }

    /// What a read gives when no data is there: Eof, a latched error, or "read the transport".
    fn read_end(&self) -> ReadEvent {
        if let Some(e) = &self.read_error {
            return if self.config.errors_as_eof { ReadEvent::Eof } else { ReadEvent::Error(e.clone()) };
        }
        if self.peer_eof || self.transport_eof || self.close == CloseState::Acked {
            return ReadEvent::Eof;
        }
        ReadEvent::NeedInput
    }

    /// The application's read: data, Eof, a latched error, or "read the transport".
    pub fn poll_read(&mut self, buf: &mut BytesMut) -> ReadEvent {
        if self.read_shut || matches!(self.close, CloseState::Closing | CloseState::Done) {
            return ReadEvent::Eof;
        }
        if let Some(data) = self.pump(buf) {
            return ReadEvent::Data(data);
        }
        self.read_end()
    }

    /// As [`poll_read`](Self::poll_read), but the payloads are copied out of
    /// `buf` into `out` (the only copy), frame after frame, until `out` is full
    /// or `buf` has no more payload; markers on the way change state as there.
    /// `ReadEvent::Data` comes back empty and means "bytes were appended to `out`".
    pub(crate) fn read_into(&mut self, buf: &mut BytesMut, out: &mut ReadBuf<'_>) -> ReadEvent {
        if self.read_shut || matches!(self.close, CloseState::Closing | CloseState::Done) {
            return ReadEvent::Eof;
        }
        let before = out.filled().len();
        while self.read_error.is_none() {
            if matches!(self.close, CloseState::Done | CloseState::Acked) {
                // Nothing after the peer's Close means anything.
                buf.clear();
                break;
            }
            match self.decoder.skip_to_payload(buf) {
                // A payload byte is next in `buf`.
                Ok(None) => {
                    let mut n = buf.len().min(self.decoder.remaining() as usize);
                    if self.delivers() {
                        n = n.min(out.remaining());
                        if n == 0 {
                            break;
                        }
                        out.put_slice(&buf[..n]);
                    }
                    buf.advance(n);
                    self.decoder.consume(n);
                }
                Ok(Some(Some(marker))) => self.on_marker(marker),
                Ok(Some(None)) => break,
                Err(e) => self.on_decode_error(e),
            }
        }
        if out.filled().len() > before {
            return ReadEvent::Data(Bytes::new());
        }
        self.read_end()
    }

    /// How many payload bytes of the current frame the I/O layer may read from
    /// the transport straight into the application's buffer: the frame's rest
    /// when `buf` (the undecoded input) is empty and the data is delivered, else 0.
    /// Report what it read with [`payload_read`](Self::payload_read).
    pub(crate) fn direct_payload(&self, buf: &BytesMut) -> usize {
        if !buf.is_empty()
            || !self.delivers()
            || self.read_error.is_some()
            || self.transport_eof
            || self.close != CloseState::Open
        {
            return 0;
        }
        self.decoder.remaining() as usize
    }

    /// Whether the I/O layer may read the transport scattered (payloads end
    /// to end in `buf`, headers in slots apart): `Some` with the payload bytes
    /// still to come of the current frame when `buf` (the undecoded input) is
    /// empty and the data is delivered. Report what the read gave, in wire
    /// order, with [`payload_read`](Self::payload_read) and
    /// [`take_header`](Self::take_header).
    pub(crate) fn scatter_payload(&self, buf: &BytesMut) -> Option<usize> {
        if !buf.is_empty()
            || !self.delivers()
            || self.read_error.is_some()
            || self.transport_eof
            || self.close != CloseState::Open
        {
            return None;
        }
        Some(self.decoder.remaining() as usize)
    }

    /// A header read into a slot of a scattered read: true when it starts a
    /// data frame of exactly `expect` bytes right after the current one ends;
    /// anything else (a marker, another length, a bad header) changes nothing
    /// and goes back into the undecoded input for [`poll_read`](Self::poll_read).
    pub(crate) fn take_header(&mut self, header: [u8; 4], expect: u32) -> bool {
        self.decoder.take_header(header, expect)
    }

    /// `n` payload bytes (at most [`direct_payload`](Self::direct_payload))
    /// went straight from the transport to the application.
    pub(crate) fn payload_read(&mut self, n: usize) {
        self.decoder.consume(n);
    }

    /// During a close: consumes input (discarding data); true once done.
    pub fn poll_close_input(&mut self, buf: &mut BytesMut) -> bool {
        while self.pump(buf).is_some() {}
        self.is_done()
    }

    /// Whether the I/O layer should read the transport (a read or a close is waiting on it).
    pub fn wants_input(&self) -> bool {
        !self.transport_eof && self.read_error.is_none() && self.close != CloseState::Done
    }

    /// The transport reached Eof; `rest` is what is left undecoded in the buffer.
    ///
    /// Before the peer's ShutdownWrite or Close that is a reset (the framing
    /// has no reset marker: a peer that aborts or dies just drops its
    /// transport), inside a frame a truncation; after them, the plain end.
    pub fn handle_eof(&mut self, rest: &[u8]) {
        if self.transport_eof {
            return;
        }
        self.transport_eof = true;
        let reading = self.close == CloseState::Open && !self.read_shut;
        if let Err(e) = self.decoder.decode_eof(rest)
            && reading
        {
            tracing::debug!(error = %e, "transport ended inside a frame");
            self.read_error = Some(EndpointError::Protocol(e));
        } else if reading && !self.peer_eof {
            // Neither ShutdownWrite nor Close came: the peer did not end its
            // side, it lost its transport (crashed, aborted, dropped). The
            // framing has no reset marker; this is one.
            tracing::debug!("transport ended without ShutdownWrite or Close: a reset");
            self.read_error = Some(EndpointError::Reset);
        }
        if self.close != CloseState::Open {
            self.close = CloseState::Done;
        }
    }

    /// Reading the transport failed.
    pub fn handle_read_error(&mut self, err: &io::Error) {
        let e = EndpointError::from_io(err);
        let e = if e == EndpointError::Closed { EndpointError::Transport(err.to_string().into()) } else { e };
        self.read_error.get_or_insert(e.clone());
        self.write_error.get_or_insert(e);
        if self.close != CloseState::Open {
            self.close = CloseState::Done;
        }
    }

    /// Writing the transport failed; later writes fail the same way.
    pub fn handle_write_error(&mut self, err: &io::Error) {
        self.write_error.get_or_insert(EndpointError::from_io(err));
        if self.close != CloseState::Open {
            self.close = CloseState::Done;
        }
    }

    /// `Ok` when data may be queued; the latched error or `Closed` otherwise.
    pub fn write_allowed(&self) -> Result<(), EndpointError> {
        if let Some(e) = &self.write_error {
            return Err(e.clone());
        }
        if self.write_shut || self.peer_read_shut || self.close != CloseState::Open || self.transport_eof {
            return Err(EndpointError::Closed);
        }
        Ok(())
    }

    /// Local shutdown(Write): queues ShutdownWrite once. Idempotent.
    pub fn shutdown_write(&mut self) {
        if !self.write_shut {
            self.write_shut = true;
            if self.close == CloseState::Open && self.write_error.is_none() {
                self.transmit.push_back(Header::ShutdownWrite);
            }
        }
    }

    /// Local shutdown(Read): queues ShutdownRead once; later reads give Eof. Idempotent.
    pub fn shutdown_read(&mut self) {
        if !self.read_shut {
            self.read_shut = true;
            if self.close == CloseState::Open && self.write_error.is_none() {
                self.transmit.push_back(Header::ShutdownRead);
            }
        }
    }

    /// Local close at `now`: queues Close (unless acknowledging the peer's) and
    /// starts the bounded wait. Idempotent.
    ///
    /// A peer already known broken (the transport ended or failed, or the
    /// peer broke the framing) will never acknowledge: the close is done at
    /// once, with nothing sent and no wait.
    pub fn close(&mut self, now: Instant) {
        self.read_shut = true;
        self.write_shut = true;
        match self.close {
            CloseState::Open => {
                if self.transport_eof || self.write_error.is_some() || self.read_error.is_some() {
                    self.close = CloseState::Done;
                    return;
                }
                self.transmit.push_back(Header::Close);
                self.close = CloseState::Closing;
                self.deadline = Some(now + self.config.close_timeout);
            }
            CloseState::Acked => {
                if self.transport_eof || self.write_error.is_some() {
                    self.close = CloseState::Done;
                } else if self.deadline.is_none() {
                    self.deadline = Some(now + self.config.close_timeout);
                }
            }
            CloseState::Closing | CloseState::Done => {}
        }
    }

    /// Terminates at once: nothing more is sent, the socket may be released.
    pub fn abort(&mut self) {
        self.read_shut = true;
        self.write_shut = true;
        self.transmit.clear();
        self.close = CloseState::Done;
    }

    /// The next marker to send, in order.
    pub fn poll_transmit(&mut self) -> Option<Header> {
        self.transmit.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.close {
            CloseState::Closing | CloseState::Acked => self.deadline,
            _ => None,
        }
    }

    /// Time passed: a close whose deadline is over ends without the peer.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(deadline) = self.poll_timeout()
            && now >= deadline
        {
            tracing::debug!("close timed out waiting for the peer");
            self.timed_out = true;
            self.close = CloseState::Done;
        }
    }

    /// Whether the socket may be released (close handshake over, timed out, aborted or failed).
    pub fn is_done(&self) -> bool {
        self.close == CloseState::Done
    }

    /// Whether the close ended by its timeout rather than by the peer.
    pub fn close_timed_out(&self) -> bool {
        self.timed_out
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "endpoint(close={:?}, read_shut={}, write_shut={}, peer_eof={}, peer_read_shut={})",
            self.close, self.read_shut, self.write_shut, self.peer_eof, self.peer_read_shut
        )
    }
}

#[cfg(test)]
mod tests;

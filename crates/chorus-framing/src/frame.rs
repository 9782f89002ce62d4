//! Stream frames for TCP control channels.
//!
//! Every Chorus control connection (client to super node, client to login server,
//! peer to peer over TCP) is a sequence of frames, each a fixed 12-byte header and a
//! payload (`docs/wire-format.md`, "Stream frame"):
//!
//! ```text
//!  0       1       2       3       4               8              12
//! +-------+-------+-------+-------+---------------+---------------+---------
//! |version| type  | flags |  rsv  |  channel id   | payload length| payload
//! +-------+-------+-------+-------+---------------+---------------+---------
//! ```
//!
//! [`FrameCodec`] is the sans-IO decoder/encoder; with the `tokio` feature it is also a
//! `tokio_util::codec::{Decoder, Encoder}`. The length field is checked against
//! [`FrameConfig::max_payload_len`] as soon as the header is complete, before a single
//! byte of payload is buffered or reserved. Payloads come out as [`Bytes`] slices of
//! the receive buffer: decoding copies nothing.
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic
    )
)]

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::error::{DecodeError, Error, UsageError};
use crate::reader::Reader;

/// The stream framing version this implementation speaks.
pub const FRAME_VERSION: u8 = 1;
/// Length of the fixed frame header in bytes.
pub const FRAME_HEADER_LEN: usize = 12;
/// Default [`FrameConfig::max_payload_len`]: 64 KiB.
pub const DEFAULT_MAX_PAYLOAD_LEN: usize = 64 * 1024;
/// The largest value [`FrameConfig::max_payload_len`] may take: 16 MiB.
pub const MAX_PAYLOAD_LEN_LIMIT: usize = 16 * 1024 * 1024;
/// Payload length of [`FrameType::Ping`] and [`FrameType::Pong`] frames.
pub const PING_PAYLOAD_LEN: usize = 8;

/// What a frame carries. The byte values are the wire registry of
/// `docs/wire-format.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameType {
    /// Key-exchange messages (chorus-crypto), before the channel is sealed.
    Handshake = 0x00,
    /// Application bytes on an open channel.
    Data = 0x01,
    /// Opens a channel; the payload is a TLV attribute list describing it.
    Open = 0x02,
    /// Closes a channel; the payload is a TLV attribute list (reason).
    Close = 0x03,
    /// Liveness probe with 8 opaque bytes the peer echoes in a `Pong`.
    Ping = 0x04,
    /// Answer to a `Ping`, echoing its 8 bytes.
    Pong = 0x05,
    /// The sender is shutting the connection down; the payload is a TLV list.
    GoAway = 0x06,
    /// An AEAD-sealed frame (chorus-crypto); its plaintext is another frame.
    Sealed = 0x07,
}

impl FrameType {
    /// Every frame type, in wire order.
    pub const ALL: [Self; 8] = [
        Self::Handshake,
        Self::Data,
        Self::Open,
        Self::Close,
        Self::Ping,
        Self::Pong,
        Self::GoAway,
        Self::Sealed,
    ];

    /// The type with wire value `b`, if there is one.
    #[must_use]
    pub const fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            0x00 => Self::Handshake,
            0x01 => Self::Data,
            0x02 => Self::Open,
            0x03 => Self::Close,
            0x04 => Self::Ping,
            0x05 => Self::Pong,
            0x06 => Self::GoAway,
            0x07 => Self::Sealed,
            _ => return None,
        })
    }

    /// Whether frames of this type concern the whole connection and so travel on
    /// channel 0. All other types travel on a channel other than 0.
    #[must_use]
    pub const fn is_connection_level(self) -> bool {
        matches!(
            self,
            Self::Handshake | Self::Ping | Self::Pong | Self::GoAway | Self::Sealed
        )
    }

    /// The flag bits this type may carry.
    #[must_use]
    pub const fn allowed_flags(self) -> Flags {
        match self {
            Self::Data | Self::Open => Flags::FIN,
            _ => Flags::EMPTY,
        }
    }
}

/// The flags byte of a frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Flags(u8);

impl Flags {
    /// No flags.
    pub const EMPTY: Self = Self(0);
    /// The sender will send nothing more on this channel (allowed on `Data`, `Open`).
    pub const FIN: Self = Self(0x01);

    /// Flags from their wire byte.
    #[must_use]
    pub const fn from_bits(bits: u8) -> Self {
        Self(bits)
    }

    /// The wire byte.
    #[must_use]
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// Whether every bit of `other` is set.
    #[must_use]
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// The union of both sets.
    #[must_use]
    pub const fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }
}

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FrameHeader {
    /// The frame type.
    pub frame_type: FrameType,
    /// The flags.
    pub flags: Flags,
    /// The channel the frame belongs to (0 for connection-level frames).
    pub channel: u32,
    /// The payload length that follows the header.
    pub payload_len: u32,
}

impl FrameHeader {
    /// Decodes and validates a header from the first [`FRAME_HEADER_LEN`] bytes of
    /// `bytes`, checking the payload length against `max_payload_len`.
    ///
    /// # Errors
    /// [`DecodeError::Truncated`] if `bytes` is shorter than a header; otherwise the
    /// first rule the header breaks, checked in this order: version, type, reserved
    /// byte, flags, channel, then length.
    pub fn decode(bytes: &[u8], max_payload_len: usize) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let [version, ty, flags, reserved] = r.array::<4>()?;
        let channel = r.u32()?;
        let payload_len = r.u32()?;
        if version != FRAME_VERSION {
            return Err(DecodeError::UnknownVersion(version));
        }
        let frame_type = FrameType::from_u8(ty).ok_or(DecodeError::UnknownFrameType(ty))?;
        let header = Self {
            frame_type,
            flags: Flags(flags),
            channel,
            payload_len,
        };
        if reserved != 0 {
            return Err(DecodeError::ReservedNotZero);
        }
        header.check_rules()?;
        let len = payload_len as usize;
        if len > max_payload_len {
            return Err(DecodeError::TooLong {
                len,
                max: max_payload_len,
            });
        }
        Ok(header)
    }

    /// Writes the 12 header bytes.
    pub fn encode(&self, dst: &mut impl BufMut) {
        dst.put_u8(FRAME_VERSION);
        dst.put_u8(self.frame_type as u8);
        dst.put_u8(self.flags.0);
        dst.put_u8(0);
        dst.put_u32(self.channel);
        dst.put_u32(self.payload_len);
    }

    /// The per-type rules: allowed flags, channel 0 exactly for connection-level types,
    /// the fixed payload length of `Ping`/`Pong`.
    fn check_rules(&self) -> Result<(), DecodeError> {
        let ty = self.frame_type;
        let undefined = self.flags.0 & !ty.allowed_flags().0;
        if undefined != 0 {
            return Err(DecodeError::UnknownFlags(undefined));
        }
        if ty.is_connection_level() != (self.channel == 0) {
            return Err(DecodeError::WrongChannel {
                frame_type: ty as u8,
                channel: self.channel,
            });
        }
        if matches!(ty, FrameType::Ping | FrameType::Pong)
            && self.payload_len as usize != PING_PAYLOAD_LEN
        {
            return Err(DecodeError::BadPayloadLength {
                frame_type: ty as u8,
                len: self.payload_len as usize,
            });
        }
        Ok(())
    }
}

/// One stream frame: header fields and a payload that shares the receive buffer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Frame {
    /// The frame type.
    pub frame_type: FrameType,
    /// The flags.
    pub flags: Flags,
    /// The channel (0 for connection-level frames).
    pub channel: u32,
    /// The payload.
    pub payload: Bytes,
}

impl Frame {
    /// A frame of any type. [`Frame::encode`] and [`FrameCodec`] check its rules.
    pub fn new(frame_type: FrameType, channel: u32, payload: impl Into<Bytes>) -> Self {
        Self {
            frame_type,
            flags: Flags::EMPTY,
            channel,
            payload: payload.into(),
        }
    }

    /// Application bytes on `channel`.
    pub fn data(channel: u32, payload: impl Into<Bytes>) -> Self {
        Self::new(FrameType::Data, channel, payload)
    }

    /// A `Ping` carrying `opaque`, which the peer echoes.
    #[must_use]
    pub fn ping(opaque: [u8; PING_PAYLOAD_LEN]) -> Self {
        Self::new(FrameType::Ping, 0, Bytes::copy_from_slice(&opaque))
    }

    /// The `Pong` answering this frame if it is a `Ping`.
    #[must_use]
    pub fn pong_for(&self) -> Option<Self> {
        (self.frame_type == FrameType::Ping)
            .then(|| Self::new(FrameType::Pong, 0, self.payload.clone()))
    }

    /// The same frame with `flags` set.
    #[must_use]
    pub fn with_flags(self, flags: Flags) -> Self {
        Self { flags, ..self }
    }

    /// The header this frame encodes with.
    ///
    /// # Errors
    /// [`UsageError::PayloadTooLarge`] if the payload exceeds [`MAX_PAYLOAD_LEN_LIMIT`];
    /// [`UsageError::InvalidFrame`] if the frame breaks its type's rules.
    pub fn header(&self) -> Result<FrameHeader, Error> {
        let len = self.payload.len();
        if len > MAX_PAYLOAD_LEN_LIMIT {
            return Err(UsageError::PayloadTooLarge {
                len,
                max: MAX_PAYLOAD_LEN_LIMIT,
            }
            .into());
        }
        let header = FrameHeader {
            frame_type: self.frame_type,
            flags: self.flags,
            channel: self.channel,
            // Bounded by MAX_PAYLOAD_LEN_LIMIT just above.
            payload_len: len as u32,
        };
        header.check_rules().map_err(UsageError::InvalidFrame)?;
        Ok(header)
    }

    /// Bytes [`Frame::encode`] writes.
    #[must_use]
    pub fn encoded_len(&self) -> usize {
        FRAME_HEADER_LEN + self.payload.len()
    }

    /// Appends the frame to `dst`, writing exactly [`Frame::encoded_len`] bytes.
    ///
    /// # Errors
    /// As [`Frame::header`]; nothing is written then.
    pub fn encode(&self, dst: &mut BytesMut) -> Result<(), Error> {
        let header = self.header()?;
        dst.reserve(self.encoded_len());
        header.encode(dst);
        dst.put_slice(&self.payload);
        Ok(())
    }
}

/// Limits for [`FrameCodec`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FrameConfig {
    /// Largest payload accepted or sent, in bytes. Default [`DEFAULT_MAX_PAYLOAD_LEN`]
    /// (64 KiB); must lie in `8..=`[`MAX_PAYLOAD_LEN_LIMIT`] (16 MiB). A longer length
    /// field is rejected before anything is allocated for it.
    pub max_payload_len: usize,
}

impl Default for FrameConfig {
    fn default() -> Self {
        Self {
            max_payload_len: DEFAULT_MAX_PAYLOAD_LEN,
        }
    }
}

/// Incremental stream-frame decoder and encoder. Performs no I/O.
///
/// Contract (the `tokio_util::codec::Decoder` contract, usable without tokio):
/// 1. Append received bytes to a `BytesMut` and call [`FrameCodec::decode_frame`]
///    until it returns `Ok(None)`, which means "need more bytes"; the codec remembers
///    a header it has already parsed.
/// 2. `Err` means the stream is corrupt: close the connection. Calling again returns
///    the same error and consumes nothing.
/// 3. At end of stream, [`FrameCodec::decode_frame_eof`] reports a partial frame as
///    [`DecodeError::Truncated`].
///
/// ```
/// use bytes::BytesMut;
/// use chorus_framing::{Frame, FrameCodec, FrameConfig};
///
/// let mut codec = FrameCodec::new(FrameConfig::default())?;
/// let mut wire = BytesMut::new();
/// codec.encode_frame(&Frame::data(7, &b"hello"[..]), &mut wire)?;
///
/// // Bytes arrive in two pieces: the first is not yet a whole frame.
/// let mut rx = wire.split_to(5);
/// assert_eq!(codec.decode_frame(&mut rx)?, None);
/// rx.unsplit(wire);
/// let frame = codec.decode_frame(&mut rx)?.expect("a whole frame");
/// assert_eq!((frame.channel, &frame.payload[..]), (7, &b"hello"[..]));
/// # Ok::<(), chorus_framing::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct FrameCodec {
    max_payload_len: usize,
    /// The header of the frame whose payload is still arriving; its 12 bytes have
    /// already been consumed from the buffer.
    pending: Option<FrameHeader>,
}

impl FrameCodec {
    /// A codec enforcing `config`.
    ///
    /// # Errors
    /// [`UsageError::InvalidConfig`] if `max_payload_len` is outside its bounds.
    pub fn new(config: FrameConfig) -> Result<Self, Error> {
        if !(PING_PAYLOAD_LEN..=MAX_PAYLOAD_LEN_LIMIT).contains(&config.max_payload_len) {
            return Err(UsageError::InvalidConfig("max_payload_len must be in 8..=16 MiB").into());
        }
        Ok(Self {
            max_payload_len: config.max_payload_len,
            pending: None,
        })
    }

    /// The configured maximum payload length.
    #[must_use]
    pub const fn max_payload_len(&self) -> usize {
        self.max_payload_len
    }

    /// Decodes the next frame from the front of `src`, if it is complete.
    ///
    /// # Errors
    /// A [`DecodeError`] if the stream is corrupt (see the type's contract).
    pub fn decode_frame(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, Error> {
        let header = match self.pending {
            Some(header) => header,
            None => {
                if src.len() < FRAME_HEADER_LEN {
                    return Ok(None);
                }
                let header = FrameHeader::decode(src, self.max_payload_len)?;
                src.advance(FRAME_HEADER_LEN);
                self.pending = Some(header);
                header
            }
        };
        let len = header.payload_len as usize;
        if src.len() < len {
            // Bounded by max_payload_len, which FrameHeader::decode enforced.
            src.reserve(len - src.len());
            return Ok(None);
        }
        self.pending = None;
        Ok(Some(Frame {
            frame_type: header.frame_type,
            flags: header.flags,
            channel: header.channel,
            payload: src.split_to(len).freeze(),
        }))
    }

    /// As [`FrameCodec::decode_frame`], at end of stream: leftover bytes are an error.
    ///
    /// # Errors
    /// [`DecodeError::Truncated`] if a partial frame remains, or any error of
    /// [`FrameCodec::decode_frame`].
    pub fn decode_frame_eof(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, Error> {
        if let Some(frame) = self.decode_frame(src)? {
            return Ok(Some(frame));
        }
        // Offsets count from the start of the incomplete frame.
        match self.pending {
            Some(h) => Err(DecodeError::Truncated {
                offset: FRAME_HEADER_LEN + src.len(),
                needed: h.payload_len as usize - src.len(),
            }
            .into()),
            None if !src.is_empty() => Err(DecodeError::Truncated {
                offset: src.len(),
                needed: FRAME_HEADER_LEN - src.len(),
            }
            .into()),
            None => Ok(None),
        }
    }

    /// Appends `frame` to `dst`.
    ///
    /// # Errors
    /// [`UsageError::PayloadTooLarge`] if the payload exceeds the configured maximum
    /// (the peer would reject it); [`UsageError::InvalidFrame`] if the frame breaks its
    /// type's rules. Nothing is written then.
    pub fn encode_frame(&self, frame: &Frame, dst: &mut BytesMut) -> Result<(), Error> {
        let len = frame.payload.len();
        if len > self.max_payload_len {
            return Err(UsageError::PayloadTooLarge {
                len,
                max: self.max_payload_len,
            }
            .into());
        }
        frame.encode(dst)
    }
}

#[cfg(feature = "tokio")]
mod codec {
    use core::fmt;
    use std::io;

    use bytes::BytesMut;
    use tokio_util::codec::{Decoder, Encoder};

    use super::{Frame, FrameCodec};
    use crate::error::Error;

    /// The error of the `tokio_util` codec: the transport failed, or the frames did.
    #[derive(Debug)]
    #[non_exhaustive]
    pub enum CodecError {
        /// Reading or writing the underlying stream failed.
        Io(io::Error),
        /// The bytes were not valid frames, or a frame could not be encoded.
        Frame(Error),
    }

    impl fmt::Display for CodecError {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            match self {
                Self::Io(e) => write!(f, "transport: {e}"),
                Self::Frame(e) => write!(f, "framing: {e}"),
            }
        }
    }

    impl std::error::Error for CodecError {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            match self {
                Self::Io(e) => Some(e),
                Self::Frame(e) => Some(e),
            }
        }
    }

    impl From<io::Error> for CodecError {
        fn from(e: io::Error) -> Self {
            Self::Io(e)
        }
    }

    impl From<Error> for CodecError {
        fn from(e: Error) -> Self {
            Self::Frame(e)
        }
    }

    impl Decoder for FrameCodec {
        type Item = Frame;
        type Error = CodecError;

        fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
            Ok(self.decode_frame(src)?)
        }

        fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
            Ok(self.decode_frame_eof(src)?)
        }
    }

    impl Encoder<Frame> for FrameCodec {
        type Error = CodecError;

        fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), CodecError> {
            Ok(self.encode_frame(&frame, dst)?)
        }
    }

    impl Encoder<&Frame> for FrameCodec {
        type Error = CodecError;

        fn encode(&mut self, frame: &Frame, dst: &mut BytesMut) -> Result<(), CodecError> {
            Ok(self.encode_frame(frame, dst)?)
        }
    }
}

#[cfg(feature = "tokio")]
pub use codec::CodecError;

#[cfg(test)]
mod tests {
    use super::*;

    fn codec() -> FrameCodec {
        FrameCodec::new(FrameConfig::default()).unwrap()
    }

    fn wire(frame: &Frame) -> BytesMut {
        let mut out = BytesMut::new();
        frame.encode(&mut out).unwrap();
        out
    }

    fn decode_err(bytes: &[u8]) -> Error {
        codec()
            .decode_frame(&mut BytesMut::from(bytes))
            .expect_err("must be rejected")
    }

    #[test]
    fn header_layout_matches_the_wire_format_document() {
        let frame = Frame::data(0x0102_0304, &b"ab"[..]).with_flags(Flags::FIN);
        assert_eq!(
            &wire(&frame)[..],
            &[1, 0x01, 0x01, 0, 1, 2, 3, 4, 0, 0, 0, 2, b'a', b'b']
        );
    }

    #[test]
    fn every_frame_type_round_trips() {
        for ty in FrameType::ALL {
            let channel = if ty.is_connection_level() { 0 } else { 9 };
            let payload = if matches!(ty, FrameType::Ping | FrameType::Pong) {
                Bytes::from_static(&[7; 8])
            } else {
                Bytes::from_static(b"payload")
            };
            let frame = Frame::new(ty, channel, payload);
            let mut buf = wire(&frame);
            assert_eq!(codec().decode_frame(&mut buf).unwrap(), Some(frame));
            assert!(buf.is_empty());
            assert_eq!(FrameType::from_u8(ty as u8), Some(ty));
        }
    }

    #[test]
    fn rejects_unknown_version() {
        let mut b = wire(&Frame::data(1, &b"x"[..]));
        b[0] = 2;
        assert_eq!(
            decode_err(&b),
            Error::Decode(DecodeError::UnknownVersion(2))
        );
    }

    #[test]
    fn rejects_unknown_frame_type_distinctly_from_version() {
        let mut b = wire(&Frame::data(1, &b"x"[..]));
        b[1] = 0x42;
        assert_eq!(
            decode_err(&b),
            Error::Decode(DecodeError::UnknownFrameType(0x42))
        );
    }

    #[test]
    fn rejects_undefined_flags() {
        let mut b = wire(&Frame::data(1, &b"x"[..]));
        b[2] = 0x81;
        assert_eq!(
            decode_err(&b),
            Error::Decode(DecodeError::UnknownFlags(0x80))
        );
        let mut ping = wire(&Frame::ping([0; 8]));
        ping[2] = Flags::FIN.bits();
        assert_eq!(
            decode_err(&ping),
            Error::Decode(DecodeError::UnknownFlags(1))
        );
    }

    #[test]
    fn rejects_nonzero_reserved_byte() {
        let mut b = wire(&Frame::data(1, &b"x"[..]));
        b[3] = 1;
        assert_eq!(decode_err(&b), Error::Decode(DecodeError::ReservedNotZero));
        // The reserved byte is checked before the flags.
        b[2] = 0x80;
        assert_eq!(decode_err(&b), Error::Decode(DecodeError::ReservedNotZero));
    }

    #[test]
    fn rejects_frames_on_the_wrong_channel() {
        let bad_data = FrameHeader {
            frame_type: FrameType::Data,
            flags: Flags::EMPTY,
            channel: 0,
            payload_len: 0,
        };
        let mut b = BytesMut::new();
        bad_data.encode(&mut b);
        assert_eq!(
            decode_err(&b),
            Error::Decode(DecodeError::WrongChannel {
                frame_type: 1,
                channel: 0
            })
        );
        let ping_on_channel = Frame::new(FrameType::Ping, 3, Bytes::from_static(&[0; 8]));
        assert_eq!(
            ping_on_channel.encode(&mut BytesMut::new()),
            Err(Error::Usage(UsageError::InvalidFrame(
                DecodeError::WrongChannel {
                    frame_type: 4,
                    channel: 3
                }
            )))
        );
    }

    #[test]
    fn rejects_ping_with_wrong_payload_length_both_ways() {
        let short = Frame::new(FrameType::Pong, 0, &b"1234567"[..]);
        let expected = DecodeError::BadPayloadLength {
            frame_type: 5,
            len: 7,
        };
        assert_eq!(
            short.encode(&mut BytesMut::new()),
            Err(Error::Usage(UsageError::InvalidFrame(expected)))
        );
        let mut b = BytesMut::new();
        short.header().unwrap_err();
        FrameHeader {
            frame_type: FrameType::Pong,
            flags: Flags::EMPTY,
            channel: 0,
            payload_len: 7,
        }
        .encode(&mut b);
        b.extend_from_slice(b"1234567");
        assert_eq!(decode_err(&b), Error::Decode(expected));
    }

    #[test]
    fn oversized_length_is_rejected_from_the_header_alone_without_allocating() {
        let mut codec = FrameCodec::new(FrameConfig {
            max_payload_len: 1024,
        })
        .unwrap();
        let mut header = BytesMut::new();
        FrameHeader {
            frame_type: FrameType::Data,
            flags: Flags::EMPTY,
            channel: 1,
            payload_len: u32::MAX,
        }
        .encode(&mut header);
        let capacity_before = header.capacity();
        assert_eq!(
            codec.decode_frame(&mut header),
            Err(Error::Decode(DecodeError::TooLong {
                len: u32::MAX as usize,
                max: 1024
            }))
        );
        assert_eq!(header.capacity(), capacity_before);
        assert_eq!(header.len(), FRAME_HEADER_LEN, "nothing consumed");
    }

    #[test]
    fn encoder_refuses_payloads_over_the_configured_maximum() {
        let codec = FrameCodec::new(FrameConfig {
            max_payload_len: 16,
        })
        .unwrap();
        let mut out = BytesMut::new();
        assert_eq!(
            codec.encode_frame(&Frame::data(1, vec![0u8; 17]), &mut out),
            Err(Error::Usage(UsageError::PayloadTooLarge {
                len: 17,
                max: 16
            }))
        );
        assert!(out.is_empty());
        codec
            .encode_frame(&Frame::data(1, vec![0u8; 16]), &mut out)
            .unwrap();
        assert_eq!(out.len(), FRAME_HEADER_LEN + 16);
    }

    #[test]
    fn frame_encode_refuses_payloads_beyond_the_format_limit() {
        let big = Frame::data(1, vec![0u8; MAX_PAYLOAD_LEN_LIMIT + 1]);
        assert_eq!(
            big.encode(&mut BytesMut::new()),
            Err(Error::Usage(UsageError::PayloadTooLarge {
                len: MAX_PAYLOAD_LEN_LIMIT + 1,
                max: MAX_PAYLOAD_LEN_LIMIT
            }))
        );
    }

    #[test]
    fn config_bounds_are_enforced() {
        for bad in [0, 7, MAX_PAYLOAD_LEN_LIMIT + 1] {
            assert!(matches!(
                FrameCodec::new(FrameConfig {
                    max_payload_len: bad
                }),
                Err(Error::Usage(UsageError::InvalidConfig(_)))
            ));
        }
        assert_eq!(codec().max_payload_len(), DEFAULT_MAX_PAYLOAD_LEN);
    }

    #[test]
    fn byte_at_a_time_delivery_yields_the_same_frames() {
        let frames = [
            Frame::data(1, &b"first"[..]),
            Frame::ping(*b"12345678"),
            Frame::new(FrameType::Open, 2, Bytes::new()).with_flags(Flags::FIN),
        ];
        let mut all = BytesMut::new();
        for f in &frames {
            f.encode(&mut all).unwrap();
        }
        let mut codec = codec();
        let mut rx = BytesMut::new();
        let mut out = Vec::new();
        for b in all.iter() {
            rx.extend_from_slice(&[*b]);
            while let Some(f) = codec.decode_frame(&mut rx).unwrap() {
                out.push(f);
            }
        }
        assert_eq!(out, frames);
        assert_eq!(codec.decode_frame_eof(&mut rx), Ok(None));
    }

    #[test]
    fn eof_inside_a_header_or_payload_is_truncation() {
        let full = wire(&Frame::data(1, &b"abcdef"[..]));
        let mut in_header = BytesMut::from(&full[..5]);
        assert_eq!(
            codec().decode_frame_eof(&mut in_header),
            Err(Error::Decode(DecodeError::Truncated {
                offset: 5,
                needed: 7
            }))
        );
        let mut in_payload = BytesMut::from(&full[..14]);
        assert_eq!(
            codec().decode_frame_eof(&mut in_payload),
            Err(Error::Decode(DecodeError::Truncated {
                offset: 14,
                needed: 4
            }))
        );
    }

    #[test]
    fn decoding_does_not_copy_payloads() {
        let mut rx = wire(&Frame::data(1, vec![5u8; 300]));
        let base = rx.as_ptr() as usize;
        let frame = codec().decode_frame(&mut rx).unwrap().unwrap();
        assert_eq!(frame.payload.as_ptr() as usize, base + FRAME_HEADER_LEN);
    }

    #[test]
    fn pong_echoes_the_ping() {
        let ping = Frame::ping(*b"abcdefgh");
        let pong = ping.pong_for().unwrap();
        assert_eq!(pong.frame_type, FrameType::Pong);
        assert_eq!(pong.payload, ping.payload);
        assert_eq!(Frame::data(1, Bytes::new()).pong_for(), None);
    }

    #[test]
    fn flags_combine() {
        let f = Flags::EMPTY.union(Flags::FIN);
        assert!(f.contains(Flags::FIN));
        assert!(!Flags::EMPTY.contains(Flags::FIN));
        assert_eq!(Flags::from_bits(1), Flags::FIN);
    }
}

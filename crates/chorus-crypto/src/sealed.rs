//! The sealed signalling channel: stream frames under AES-256-GCM after the handshake.
//!
//! Once a [`crate::handshake`] completes, every frame on the connection travels inside
//! a `Sealed` frame (`chorus_framing::FrameType::Sealed`): the inner frame, header and
//! payload, is the plaintext; the outer 12-byte header is associated data, so it is
//! authenticated too. Each direction has its own key and a 96-bit IV; the nonce of the
//! n-th frame is the IV XOR n (as TLS 1.3, RFC 8446 §5.3). TCP delivers in order, so
//! the receiver expects exactly the next sequence number: a replayed, reordered,
//! dropped or injected frame fails authentication and the channel state is unchanged.
//!
//! ```text
//! outer: version(1) type=Sealed(1) flags=0 rsv=0 channel=0 len=n+16 | AES-256-GCM(inner frame) | tag(16)
//! ```
//!
//! [`SealedCodec`] (feature `tokio`) wraps it all as a `tokio_util` codec of plaintext
//! frames.
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic
    )
)]

use core::fmt;

use bytes::{Bytes, BytesMut};
use chorus_framing::frame::{FRAME_HEADER_LEN, MAX_PAYLOAD_LEN_LIMIT};
use chorus_framing::{Flags, Frame, FrameHeader, FrameType};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};

use crate::error::{AuthError, DecodeError, Error, Limit, UsageError};
use crate::secret::Secret;

/// Bytes sealing adds to a frame: the outer header and the AEAD tag.
pub const SEAL_OVERHEAD: usize = FRAME_HEADER_LEN + TAG_LEN;
const TAG_LEN: usize = 16;

struct Direction {
    key: LessSafeKey,
    iv: [u8; 12],
    seq: u64,
}

impl Direction {
    fn new(key: &Secret<32>, iv: &Secret<12>) -> Self {
        let key = UnboundKey::new(&AES_256_GCM, key.expose())
            .map(LessSafeKey::new)
            .unwrap_or_else(|_| unreachable_key());
        Self {
            key,
            iv: *iv.expose(),
            seq: 0,
        }
    }

    fn nonce(&self) -> Result<Nonce, Error> {
        // The last sequence number is never used, so the counter cannot wrap.
        if self.seq == u64::MAX {
            return Err(Limit::CounterExhausted.into());
        }
        let mut n = self.iv;
        for (b, s) in n.iter_mut().skip(4).zip(self.seq.to_be_bytes()) {
            *b ^= s;
        }
        Ok(Nonce::assume_unique_for_key(n))
    }
}

/// A 32-byte key is always a valid AES-256 key; ring's constructor only fails on
/// length.
#[allow(clippy::panic)]
fn unreachable_key() -> LessSafeKey {
    panic!("a 32-byte key is a valid AES-256-GCM key")
}

/// Both directions of a sealed connection. Performs no I/O.
pub struct SealedChannel {
    send: Direction,
    recv: Direction,
}

impl fmt::Debug for SealedChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealedChannel")
            .field("sent", &self.send.seq)
            .field("received", &self.recv.seq)
            .finish_non_exhaustive()
    }
}

impl SealedChannel {
    /// A channel sending under `send_key`/`send_iv` and receiving under the others.
    /// Normally made by [`crate::handshake::Established::into_channel`].
    #[must_use]
    pub fn new(
        send_key: &Secret<32>,
        send_iv: &Secret<12>,
        recv_key: &Secret<32>,
        recv_iv: &Secret<12>,
    ) -> Self {
        Self {
            send: Direction::new(send_key, send_iv),
            recv: Direction::new(recv_key, recv_iv),
        }
    }

    /// Frames sealed so far.
    #[must_use]
    pub const fn sent(&self) -> u64 {
        self.send.seq
    }

    /// Frames opened so far.
    #[must_use]
    pub const fn received(&self) -> u64 {
        self.recv.seq
    }

    /// Seals `frame` into a `Sealed` frame.
    ///
    /// # Errors
    /// [`UsageError`] if `frame` is invalid or too large to seal;
    /// [`Limit::CounterExhausted`] after 2^64 - 1 frames.
    pub fn seal(&mut self, frame: &Frame) -> Result<Frame, Error> {
        let inner_len = frame.encoded_len();
        if inner_len + TAG_LEN > MAX_PAYLOAD_LEN_LIMIT {
            return Err(UsageError::InvalidLength {
                len: inner_len,
                expected: "a frame that fits once sealed",
            }
            .into());
        }
        let nonce = self.send.nonce()?;
        let mut buf = BytesMut::with_capacity(inner_len + TAG_LEN);
        frame
            .encode(&mut buf)
            .map_err(|_| UsageError::WrongState("frame breaks its type's rules"))?;
        let header = outer_header(inner_len + TAG_LEN);
        let tag = self
            .send
            .key
            .seal_in_place_separate_tag(nonce, Aad::from(&header), &mut buf)
            .map_err(|_| UsageError::InvalidLength {
                len: inner_len,
                expected: "a sealable frame",
            })?;
        buf.extend_from_slice(tag.as_ref());
        self.send.seq += 1;
        Ok(Frame::new(FrameType::Sealed, 0, buf.freeze()))
    }

    /// Opens a `Sealed` frame, returning the frame inside.
    ///
    /// # Errors
    /// [`AuthError::NotSealed`] for any other frame type; [`AuthError::BadTag`] if it
    /// was not sealed by the peer as the next frame in sequence (tampered, replayed,
    /// reordered or injected); [`Error::Decode`] if the inner frame is malformed. The
    /// channel is unchanged on error.
    pub fn open(&mut self, sealed: &Frame) -> Result<Frame, Error> {
        if sealed.frame_type != FrameType::Sealed
            || sealed.flags != Flags::EMPTY
            || sealed.channel != 0
        {
            return Err(AuthError::NotSealed.into());
        }
        if sealed.payload.len() < TAG_LEN + FRAME_HEADER_LEN {
            return Err(AuthError::BadTag.into());
        }
        let nonce = self.recv.nonce()?;
        let header = outer_header(sealed.payload.len());
        let mut buf = BytesMut::from(&sealed.payload[..]);
        let plain_len = self
            .recv
            .key
            .open_in_place(nonce, Aad::from(&header), &mut buf)
            .map_err(|_| AuthError::BadTag)?
            .len();
        buf.truncate(plain_len);
        let inner = decode_inner(buf.freeze())?;
        self.recv.seq += 1;
        Ok(inner)
    }
}

fn outer_header(payload_len: usize) -> [u8; FRAME_HEADER_LEN] {
    let mut header = [0u8; FRAME_HEADER_LEN];
    let h = FrameHeader {
        frame_type: FrameType::Sealed,
        flags: Flags::EMPTY,
        channel: 0,
        // Callers bound payload_len by MAX_PAYLOAD_LEN_LIMIT (16 MiB).
        payload_len: payload_len as u32,
    };
    h.encode(&mut &mut header[..]);
    header
}

/// The authenticated plaintext is exactly one frame.
fn decode_inner(plain: Bytes) -> Result<Frame, Error> {
    let header = FrameHeader::decode(&plain, MAX_PAYLOAD_LEN_LIMIT)?;
    let len = header.payload_len as usize;
    let total = FRAME_HEADER_LEN + len;
    if plain.len() != total {
        return Err(if plain.len() < total {
            DecodeError::Truncated {
                offset: plain.len(),
                needed: total - plain.len(),
            }
        } else {
            DecodeError::TrailingBytes(plain.len() - total)
        }
        .into());
    }
    Ok(Frame {
        frame_type: header.frame_type,
        flags: header.flags,
        channel: header.channel,
        payload: plain.slice(FRAME_HEADER_LEN..),
    })
}

#[cfg(feature = "tokio")]
mod codec {
    use bytes::BytesMut;
    use chorus_framing::{CodecError, Frame, FrameCodec, FrameConfig};
    use tokio_util::codec::{Decoder, Encoder};

    use super::{SEAL_OVERHEAD, SealedChannel};
    use crate::error::{Error, UsageError};

    /// A `tokio_util` codec of plaintext frames over a sealed connection.
    #[derive(Debug)]
    pub struct SealedCodec {
        frames: FrameCodec,
        channel: SealedChannel,
    }

    impl SealedCodec {
        /// Seals and opens frames whose payloads are at most `max_payload_len` bytes.
        ///
        /// # Errors
        /// [`UsageError::InvalidConfig`] if the sealed size exceeds 16 MiB.
        pub fn new(channel: SealedChannel, max_payload_len: usize) -> Result<Self, Error> {
            let mut config = FrameConfig::default();
            config.max_payload_len = max_payload_len.saturating_add(SEAL_OVERHEAD);
            let frames = FrameCodec::new(config).map_err(|_| {
                UsageError::InvalidConfig("max_payload_len must be at most 16 MiB minus 28")
            })?;
            Ok(Self { frames, channel })
        }

        /// The channel's state.
        #[must_use]
        pub const fn channel(&self) -> &SealedChannel {
            &self.channel
        }
    }

    /// Errors of the sealed codec: transport, framing, or authentication.
    #[derive(Debug)]
    #[non_exhaustive]
    pub enum SealedCodecError {
        /// The stream or its framing failed.
        Framing(CodecError),
        /// Sealing or opening failed.
        Crypto(Error),
    }

    impl core::fmt::Display for SealedCodecError {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            match self {
                Self::Framing(e) => write!(f, "{e}"),
                Self::Crypto(e) => write!(f, "sealed channel: {e}"),
            }
        }
    }

    impl std::error::Error for SealedCodecError {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            match self {
                Self::Framing(e) => Some(e),
                Self::Crypto(e) => Some(e),
            }
        }
    }

    impl From<std::io::Error> for SealedCodecError {
        fn from(e: std::io::Error) -> Self {
            Self::Framing(CodecError::Io(e))
        }
    }

    impl Decoder for SealedCodec {
        type Item = Frame;
        type Error = SealedCodecError;

        fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, SealedCodecError> {
            match self.frames.decode(src).map_err(SealedCodecError::Framing)? {
                Some(sealed) => self
                    .channel
                    .open(&sealed)
                    .map(Some)
                    .map_err(SealedCodecError::Crypto),
                None => Ok(None),
            }
        }

        fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, SealedCodecError> {
            match self
                .frames
                .decode_eof(src)
                .map_err(SealedCodecError::Framing)?
            {
                Some(sealed) => self
                    .channel
                    .open(&sealed)
                    .map(Some)
                    .map_err(SealedCodecError::Crypto),
                None => Ok(None),
            }
        }
    }

    impl Encoder<Frame> for SealedCodec {
        type Error = SealedCodecError;

        fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), SealedCodecError> {
            let max = self.frames.max_payload_len() - SEAL_OVERHEAD;
            if frame.payload.len() > max {
                return Err(SealedCodecError::Crypto(
                    UsageError::InvalidLength {
                        len: frame.payload.len(),
                        expected: "a payload within max_payload_len",
                    }
                    .into(),
                ));
            }
            let sealed = self
                .channel
                .seal(&frame)
                .map_err(SealedCodecError::Crypto)?;
            self.frames
                .encode_frame(&sealed, dst)
                .map_err(|e| SealedCodecError::Framing(CodecError::Frame(e)))
        }
    }
}

#[cfg(feature = "tokio")]
pub use codec::{SealedCodec, SealedCodecError};

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn pair() -> (SealedChannel, SealedChannel) {
        let (k1, iv1, k2, iv2) = (
            Secret::new([1; 32]),
            Secret::new([2; 12]),
            Secret::new([3; 32]),
            Secret::new([4; 12]),
        );
        (
            SealedChannel::new(&k1, &iv1, &k2, &iv2),
            SealedChannel::new(&k2, &iv2, &k1, &iv1),
        )
    }

    #[test]
    fn frames_round_trip_in_both_directions() {
        let (mut a, mut b) = pair();
        for i in 0..10u32 {
            let f = Frame::data(i + 1, vec![i as u8; i as usize * 10]);
            let sealed = a.seal(&f).unwrap();
            assert_eq!(sealed.frame_type, FrameType::Sealed);
            assert_eq!(sealed.payload.len(), f.encoded_len() + TAG_LEN);
            assert_eq!(b.open(&sealed).unwrap(), f);
            let back = b.seal(&Frame::ping([i as u8; 8])).unwrap();
            assert_eq!(a.open(&back).unwrap(), Frame::ping([i as u8; 8]));
        }
        assert_eq!(
            (a.sent(), a.received(), b.sent(), b.received()),
            (10, 10, 10, 10)
        );
    }

    #[test]
    fn replayed_reordered_and_injected_frames_are_rejected_without_state_change() {
        let (mut a, mut b) = pair();
        let first = a.seal(&Frame::data(1, &b"one"[..])).unwrap();
        let second = a.seal(&Frame::data(1, &b"two"[..])).unwrap();
        assert_eq!(
            b.open(&second).unwrap_err(),
            Error::Auth(AuthError::BadTag),
            "reordered"
        );
        assert_eq!(b.received(), 0);
        b.open(&first).unwrap();
        assert_eq!(
            b.open(&first).unwrap_err(),
            Error::Auth(AuthError::BadTag),
            "replayed"
        );
        b.open(&second).unwrap();
        // A frame sealed in the other direction is not valid in this one.
        let reflected = b.seal(&Frame::data(1, &b"x"[..])).unwrap();
        let mut c = pair().1;
        assert_eq!(
            c.open(&reflected).unwrap_err(),
            Error::Auth(AuthError::BadTag)
        );
        assert_eq!(
            b.open(&Frame::data(1, &b"plain"[..])).unwrap_err(),
            Error::Auth(AuthError::NotSealed)
        );
    }

    #[test]
    fn every_bit_flip_is_rejected() {
        let (mut a, _) = pair();
        let sealed = a.seal(&Frame::data(5, &b"payload"[..])).unwrap();
        for bit in 0..sealed.payload.len() * 8 {
            let mut p = sealed.payload.to_vec();
            p[bit / 8] ^= 1 << (bit % 8);
            let mut b = pair().1;
            let tampered = Frame::new(FrameType::Sealed, 0, p);
            assert_eq!(
                b.open(&tampered).unwrap_err(),
                Error::Auth(AuthError::BadTag),
                "bit {bit}"
            );
        }
        // The outer header is authenticated: a different length cannot be spliced in.
        let mut b = pair().1;
        let mut longer = sealed.payload.to_vec();
        longer.push(0);
        assert_eq!(
            b.open(&Frame::new(FrameType::Sealed, 0, longer))
                .unwrap_err(),
            Error::Auth(AuthError::BadTag)
        );
        assert_eq!(
            b.open(&Frame::new(FrameType::Sealed, 0, vec![0u8; 20]))
                .unwrap_err(),
            Error::Auth(AuthError::BadTag)
        );
    }

    #[test]
    fn the_counter_never_wraps() {
        let (mut a, mut b) = pair();
        a.send.seq = u64::MAX - 1;
        b.recv.seq = u64::MAX - 1;
        let last = a.seal(&Frame::data(1, Bytes::new())).unwrap();
        b.open(&last).unwrap();
        assert_eq!(
            a.seal(&Frame::data(1, Bytes::new())).unwrap_err(),
            Error::Limit(Limit::CounterExhausted)
        );
        assert_eq!(
            b.open(&last).unwrap_err(),
            Error::Limit(Limit::CounterExhausted)
        );
    }

    #[test]
    fn inner_frames_must_fill_the_plaintext_exactly() {
        let plain = {
            let mut b = BytesMut::new();
            Frame::data(1, &b"abc"[..]).encode(&mut b).unwrap();
            b.freeze()
        };
        assert!(decode_inner(plain.clone()).is_ok());
        let mut longer = plain.to_vec();
        longer.push(9);
        assert_eq!(
            decode_inner(longer.into()).unwrap_err(),
            Error::Decode(DecodeError::TrailingBytes(1))
        );
        assert!(matches!(
            decode_inner(plain.slice(..14)),
            Err(Error::Decode(DecodeError::Truncated { .. }))
        ));
    }
}

//! Conference control messages: membership (join, leave), mute state, speaker
//! changes, and the stream announcements and subscriptions that video forwarding
//! and cascading relays need (`docs/conference.md`, "Control messages").
//!
//! A message is a version byte, a type byte and a chorus-framing TLV attribute list
//! ([`chorus_framing::tlv`]); it travels as the payload of a chorus-framing stream
//! frame on a control channel, or of a `Control` datagram.
//!
//! ```text
//!  0       1       2 ...
//! +-------+-------+---------------------------------------------+
//! |version| type  | attributes: (type u16, length u16, value)*  |
//! +-------+-------+---------------------------------------------+
//! ```
//!
//! The decoder is strict: an unknown version or message type, an unknown
//! comprehension-required attribute, a duplicate, a missing required attribute or a
//! value out of its range rejects the message. Attributes with the top bit of their
//! type set (0x8000-0xffff) are skipped, so a later version can add optional
//! information that version-1 readers ignore.
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

use bytes::{BufMut, Bytes, BytesMut};
use chorus_framing::Frame;
use chorus_framing::tlv::{ATTR_HEADER_LEN, Attributes, TlvLimits};

/// The version this module reads and writes.
pub const VERSION: u8 = 1;
/// The longest message accepted or written, in bytes.
pub const MAX_MESSAGE_LEN: usize = 1024;
/// The longest display name, in bytes of UTF-8.
pub const MAX_NAME_LEN: usize = 64;
/// The most layers one stream may announce (a layer mask is 8 bits).
pub const MAX_LAYERS: usize = 8;

/// Attribute: participant id (u32).
pub const ATTR_PARTICIPANT: u16 = 0x0001;
/// Attribute: display name (UTF-8, 1-64 bytes).
pub const ATTR_NAME: u16 = 0x0002;
/// Attribute: leave reason (u8, [`LeaveReason`]).
pub const ATTR_REASON: u16 = 0x0003;
/// Attribute: media kind (u8, [`MediaKind`]).
pub const ATTR_MEDIA: u16 = 0x0004;
/// Attribute: muted flag (u8, 0 or 1).
pub const ATTR_MUTED: u16 = 0x0005;
/// Attribute: stream id (u32).
pub const ATTR_STREAM: u16 = 0x0006;
/// Attribute: codec (u8, [`Codec`]).
pub const ATTR_CODEC: u16 = 0x0007;
/// Attribute: layers, 8 bytes each (SSRC u32, bitrate in bit/s u32).
pub const ATTR_LAYERS: u16 = 0x0008;
/// Attribute: layer mask (u8; bit i = layer i).
pub const ATTR_LAYER_MASK: u16 = 0x0009;
/// Attribute: RFC 8285 id of the frame-marking header extension (u8, 1-14).
pub const ATTR_FRAME_MARKING: u16 = 0x000a;
/// Attribute: RTP clock rate in Hz (u32, non-zero).
pub const ATTR_CLOCK_RATE: u16 = 0x000b;
/// Attribute: temporal layers (SVC) inside each layer, as the cumulative share of the
/// layer's bitrate, in percent, of every temporal layer below the top one (one byte
/// each, 1-99, strictly increasing; at most [`MAX_TEMPORAL_LAYERS`] - 1 bytes). In the
/// optional range: a reader that does not know it forwards every temporal layer.
pub const ATTR_TEMPORAL: u16 = 0x800c;

/// The most temporal layers a stream may announce (VP8's TID is two bits).
pub const MAX_TEMPORAL_LAYERS: usize = 4;

const KNOWN: [u16; 12] = [
    ATTR_PARTICIPANT,
    ATTR_NAME,
    ATTR_REASON,
    ATTR_MEDIA,
    ATTR_MUTED,
    ATTR_STREAM,
    ATTR_CODEC,
    ATTR_LAYERS,
    ATTR_LAYER_MASK,
    ATTR_FRAME_MARKING,
    ATTR_CLOCK_RATE,
    ATTR_TEMPORAL,
];

/// Why a control message was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// Fewer than the two header bytes.
    Truncated,
    /// Longer than [`MAX_MESSAGE_LEN`].
    TooLong {
        /// The message length.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// A version other than [`VERSION`].
    UnknownVersion(u8),
    /// A message type this version does not define.
    UnknownType(u8),
    /// The attribute list is malformed, has an unknown required or duplicate
    /// attribute, or lacks a required one.
    Attributes(chorus_framing::DecodeError),
    /// An attribute this message type does not carry.
    UnexpectedAttribute(u16),
    /// An attribute whose value is outside its range.
    BadValue(u16),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated => f.write_str("control message shorter than its header"),
            Self::TooLong { len, max } => {
                write!(f, "control message of {len} bytes exceeds {max}")
            }
            Self::UnknownVersion(v) => write!(f, "control message version {v} is not {VERSION}"),
            Self::UnknownType(t) => write!(f, "unknown control message type {t}"),
            Self::Attributes(e) => write!(f, "control message attributes: {e}"),
            Self::UnexpectedAttribute(a) => {
                write!(f, "attribute {a:#06x} does not belong to this message type")
            }
            Self::BadValue(a) => write!(f, "attribute {a:#06x} has a value out of range"),
        }
    }
}

impl std::error::Error for DecodeError {}

impl From<chorus_framing::DecodeError> for DecodeError {
    fn from(e: chorus_framing::DecodeError) -> Self {
        Self::Attributes(e)
    }
}

/// Why a message was left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaveReason {
    /// The participant hung up.
    Left = 0,
    /// The conference owner removed the participant.
    Removed = 1,
    /// Nothing was heard from the participant for too long.
    TimedOut = 2,
    /// The relay the participant was attached to is gone.
    RelayLost = 3,
}

/// Audio or video.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaKind {
    /// Audio.
    Audio = 0,
    /// Video.
    Video = 1,
}

/// The codec of an announced stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// Opus (RFC 7587).
    Opus = 0,
    /// VP8 (RFC 7741).
    Vp8 = 1,
    /// H.264 (RFC 6184).
    H264 = 2,
    /// VP9 (RFC 9628).
    Vp9 = 3,
    /// AV1.
    Av1 = 4,
}

/// One simulcast layer: its own SSRC and the bitrate it needs. Layers are listed
/// lowest quality first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layer {
    /// The layer's SSRC (non-zero, unique in the conference).
    pub ssrc: u32,
    /// The bitrate the layer needs, in bit/s (strictly increasing along the list).
    pub bitrate_bps: u32,
}

/// A published stream, as announced to relays and participants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamInfo {
    /// Conference-wide stream id.
    pub stream: u32,
    /// The participant who publishes it.
    pub participant: u32,
    /// Audio or video.
    pub media: MediaKind,
    /// The codec, which decides how keyframes are recognized.
    pub codec: Codec,
    /// The RTP clock rate in Hz (90,000 for video).
    pub clock_rate: u32,
    /// The RFC 8285 id of the frame-marking extension, when the sender marks
    /// keyframes itself (any codec).
    pub frame_marking: Option<u8>,
    /// 1 to [`MAX_LAYERS`] layers, lowest first.
    pub layers: Vec<Layer>,
    /// Temporal scalability inside every layer: for temporal layers 0, 1, ... below
    /// the top one, the share of the layer's bitrate (percent, 1-99, strictly
    /// increasing) that they and the ones below them take. Empty when the stream has
    /// one temporal layer. `[40, 60]` announces three: TID 0 alone needs 40 % of the
    /// layer's bitrate, TIDs 0-1 60 %, all three 100 % (the usual libvpx L1T3 split).
    /// The relay reads each packet's temporal id from the VP8 payload descriptor or
    /// the frame-marking extension.
    pub temporal: Vec<u8>,
}

impl StreamInfo {
    /// A video stream at the 90 kHz RTP clock (RFC 7741 §4.1, RFC 6184 §8.2.1) whose
    /// keyframes are found in the codec's payload (no frame marking).
    #[must_use]
    pub fn video(stream: u32, participant: u32, codec: Codec, layers: Vec<Layer>) -> Self {
        Self {
            stream,
            participant,
            media: MediaKind::Video,
            codec,
            clock_rate: 90_000,
            frame_marking: None,
            layers,
            temporal: Vec::new(),
        }
    }

    /// The number of temporal layers in each layer (1 without temporal scalability).
    #[must_use]
    pub fn temporal_layers(&self) -> u8 {
        // check_stream bounds the list to MAX_TEMPORAL_LAYERS - 1 entries.
        u8::try_from(self.temporal.len() + 1).unwrap_or(u8::MAX)
    }

    /// The bitrate of `layer` with its temporal layers 0 to `tid` (bit/s; the whole
    /// layer's for the top temporal layer or above).
    #[must_use]
    pub fn bitrate(&self, layer: usize, tid: u8) -> u64 {
        let full = self
            .layers
            .get(layer)
            .map_or(0, |l| u64::from(l.bitrate_bps));
        self.temporal
            .get(usize::from(tid))
            .map_or(full, |&pct| full * u64::from(pct) / 100)
    }
}

/// One conference control message.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Message<'a> {
    /// Type 1: a participant joined.
    Join {
        /// The participant.
        participant: u32,
        /// Their display name.
        name: &'a str,
    },
    /// Type 2: a participant left.
    Leave {
        /// The participant.
        participant: u32,
        /// Why.
        reason: LeaveReason,
    },
    /// Type 3: a participant muted or unmuted audio or video.
    Mute {
        /// The participant.
        participant: u32,
        /// Which media.
        media: MediaKind,
        /// Muted (true) or unmuted.
        muted: bool,
    },
    /// Type 4: the active speaker changed; `None` when nobody speaks.
    Speaker {
        /// The new active speaker.
        participant: Option<u32>,
    },
    /// Type 5: a stream is available.
    Publish(StreamInfo),
    /// Type 6: a stream is gone.
    Unpublish {
        /// The stream.
        stream: u32,
    },
    /// Type 7: the sender wants these layers of a stream (relay to relay: the layers
    /// to forward over the link; participant to relay: the layers it accepts; mask 0
    /// stops the stream).
    Subscribe {
        /// The stream.
        stream: u32,
        /// Bit i set: layer i.
        layers: u8,
    },
}

enum Value<'v> {
    U8(u8),
    U32(u32),
    Bytes(&'v [u8]),
    Layers(&'v [Layer]),
}

impl Value<'_> {
    fn len(&self) -> usize {
        match self {
            Self::U8(_) => 1,
            Self::U32(_) => 4,
            Self::Bytes(b) => b.len(),
            Self::Layers(l) => 8 * l.len(),
        }
    }
}

impl<'a> Message<'a> {
    const fn type_byte(&self) -> u8 {
        match self {
            Self::Join { .. } => 1,
            Self::Leave { .. } => 2,
            Self::Mute { .. } => 3,
            Self::Speaker { .. } => 4,
            Self::Publish(_) => 5,
            Self::Unpublish { .. } => 6,
            Self::Subscribe { .. } => 7,
        }
    }

    fn attributes(&self, f: &mut dyn FnMut(u16, Value<'_>)) {
        match self {
            Self::Join { participant, name } => {
                f(ATTR_PARTICIPANT, Value::U32(*participant));
                f(ATTR_NAME, Value::Bytes(name.as_bytes()));
            }
            Self::Leave {
                participant,
                reason,
            } => {
                f(ATTR_PARTICIPANT, Value::U32(*participant));
                f(ATTR_REASON, Value::U8(*reason as u8));
            }
            Self::Mute {
                participant,
                media,
                muted,
            } => {
                f(ATTR_PARTICIPANT, Value::U32(*participant));
                f(ATTR_MEDIA, Value::U8(*media as u8));
                f(ATTR_MUTED, Value::U8(u8::from(*muted)));
            }
            Self::Speaker { participant } => {
                if let Some(p) = participant {
                    f(ATTR_PARTICIPANT, Value::U32(*p));
                }
            }
            Self::Publish(s) => {
                f(ATTR_STREAM, Value::U32(s.stream));
                f(ATTR_PARTICIPANT, Value::U32(s.participant));
                f(ATTR_MEDIA, Value::U8(s.media as u8));
                f(ATTR_CODEC, Value::U8(s.codec as u8));
                f(ATTR_CLOCK_RATE, Value::U32(s.clock_rate));
                if let Some(id) = s.frame_marking {
                    f(ATTR_FRAME_MARKING, Value::U8(id));
                }
                f(ATTR_LAYERS, Value::Layers(&s.layers));
                if !s.temporal.is_empty() {
                    f(ATTR_TEMPORAL, Value::Bytes(&s.temporal));
                }
            }
            Self::Unpublish { stream } => f(ATTR_STREAM, Value::U32(*stream)),
            Self::Subscribe { stream, layers } => {
                f(ATTR_STREAM, Value::U32(*stream));
                f(ATTR_LAYER_MASK, Value::U8(*layers));
            }
        }
    }

    /// The exact number of bytes [`Message::encode`] writes.
    #[must_use]
    pub fn encoded_len(&self) -> usize {
        let mut len = 2;
        self.attributes(&mut |_, v| len += ATTR_HEADER_LEN + v.len());
        len
    }

    /// Checks what the decoder would check, so that nothing is sent that a peer
    /// rejects.
    ///
    /// # Errors
    /// The [`DecodeError`] a receiver would report.
    pub fn validate(&self) -> Result<(), DecodeError> {
        let len = self.encoded_len();
        if len > MAX_MESSAGE_LEN {
            return Err(DecodeError::TooLong {
                len,
                max: MAX_MESSAGE_LEN,
            });
        }
        match self {
            Self::Join { name, .. } => check_name(name),
            Self::Publish(s) => check_stream(s),
            _ => Ok(()),
        }
    }

    /// Appends the message to `out`: exactly [`Message::encoded_len`] bytes.
    ///
    /// # Errors
    /// As [`Message::validate`]; `out` is unchanged then.
    pub fn encode(&self, out: &mut BytesMut) -> Result<(), DecodeError> {
        self.validate()?;
        out.reserve(self.encoded_len());
        out.put_u8(VERSION);
        out.put_u8(self.type_byte());
        self.attributes(&mut |ty, v| {
            out.put_u16(ty);
            // validate() bounds the whole message to MAX_MESSAGE_LEN < 2^16.
            out.put_u16(v.len() as u16);
            match v {
                Value::U8(b) => out.put_u8(b),
                Value::U32(x) => out.put_u32(x),
                Value::Bytes(b) => out.put_slice(b),
                Value::Layers(layers) => {
                    for l in layers {
                        out.put_u32(l.ssrc);
                        out.put_u32(l.bitrate_bps);
                    }
                }
            }
        });
        Ok(())
    }

    /// The message as the payload of a chorus-framing data frame on `channel`.
    ///
    /// # Errors
    /// As [`Message::validate`].
    pub fn to_frame(&self, channel: u32) -> Result<Frame, DecodeError> {
        let mut out = BytesMut::with_capacity(self.encoded_len());
        self.encode(&mut out)?;
        Ok(Frame::data(channel, Bytes::from(out)))
    }

    /// Decodes one message that fills `bytes`.
    ///
    /// # Errors
    /// See [`DecodeError`].
    pub fn decode(bytes: &'a [u8]) -> Result<Self, DecodeError> {
        if bytes.len() > MAX_MESSAGE_LEN {
            return Err(DecodeError::TooLong {
                len: bytes.len(),
                max: MAX_MESSAGE_LEN,
            });
        }
        let [version, ty, body @ ..] = bytes else {
            return Err(DecodeError::Truncated);
        };
        if *version != VERSION {
            return Err(DecodeError::UnknownVersion(*version));
        }
        let limits = TlvLimits::default();
        let attrs = Attributes::decode(body, &KNOWN, &limits)?;
        let allowed: &[u16] = match ty {
            1 => &[ATTR_PARTICIPANT, ATTR_NAME],
            2 => &[ATTR_PARTICIPANT, ATTR_REASON],
            3 => &[ATTR_PARTICIPANT, ATTR_MEDIA, ATTR_MUTED],
            4 => &[ATTR_PARTICIPANT],
            5 => &[
                ATTR_STREAM,
                ATTR_PARTICIPANT,
                ATTR_MEDIA,
                ATTR_CODEC,
                ATTR_CLOCK_RATE,
                ATTR_FRAME_MARKING,
                ATTR_LAYERS,
                ATTR_TEMPORAL,
            ],
            6 => &[ATTR_STREAM],
            7 => &[ATTR_STREAM, ATTR_LAYER_MASK],
            t => return Err(DecodeError::UnknownType(*t)),
        };
        if let Some((a, _)) = attrs.iter().find(|(a, _)| !allowed.contains(a)) {
            return Err(DecodeError::UnexpectedAttribute(a));
        }
        let participant = || attrs.require::<u32>(ATTR_PARTICIPANT);
        let media = || match attrs.require::<u8>(ATTR_MEDIA)? {
            0 => Ok(MediaKind::Audio),
            1 => Ok(MediaKind::Video),
            _ => Err(DecodeError::BadValue(ATTR_MEDIA)),
        };
        let msg = match ty {
            1 => {
                let name = attrs.require::<&str>(ATTR_NAME)?;
                check_name(name)?;
                Self::Join {
                    participant: participant()?,
                    name,
                }
            }
            2 => Self::Leave {
                participant: participant()?,
                reason: match attrs.require::<u8>(ATTR_REASON)? {
                    0 => LeaveReason::Left,
                    1 => LeaveReason::Removed,
                    2 => LeaveReason::TimedOut,
                    3 => LeaveReason::RelayLost,
                    _ => return Err(DecodeError::BadValue(ATTR_REASON)),
                },
            },
            3 => Self::Mute {
                participant: participant()?,
                media: media()?,
                muted: match attrs.require::<u8>(ATTR_MUTED)? {
                    0 => false,
                    1 => true,
                    _ => return Err(DecodeError::BadValue(ATTR_MUTED)),
                },
            },
            4 => Self::Speaker {
                participant: attrs.get::<u32>(ATTR_PARTICIPANT)?,
            },
            5 => {
                let raw = attrs.require::<&[u8]>(ATTR_LAYERS)?;
                if !raw.len().is_multiple_of(8) {
                    return Err(DecodeError::BadValue(ATTR_LAYERS));
                }
                let layers = raw
                    .chunks_exact(8)
                    .map(|c| {
                        let word = |i: usize| {
                            c.get(i..i + 4)
                                .and_then(|w| <[u8; 4]>::try_from(w).ok())
                                .map(u32::from_be_bytes)
                                .ok_or(DecodeError::BadValue(ATTR_LAYERS))
                        };
                        Ok(Layer {
                            ssrc: word(0)?,
                            bitrate_bps: word(4)?,
                        })
                    })
                    .collect::<Result<Vec<_>, DecodeError>>()?;
                let info = StreamInfo {
                    stream: attrs.require(ATTR_STREAM)?,
                    participant: participant()?,
                    media: media()?,
                    codec: match attrs.require::<u8>(ATTR_CODEC)? {
                        0 => Codec::Opus,
                        1 => Codec::Vp8,
                        2 => Codec::H264,
                        3 => Codec::Vp9,
                        4 => Codec::Av1,
                        _ => return Err(DecodeError::BadValue(ATTR_CODEC)),
                    },
                    clock_rate: attrs.require(ATTR_CLOCK_RATE)?,
                    frame_marking: attrs.get(ATTR_FRAME_MARKING)?,
                    layers,
                    temporal: attrs
                        .get::<&[u8]>(ATTR_TEMPORAL)?
                        .unwrap_or_default()
                        .to_vec(),
                };
                check_stream(&info)?;
                Self::Publish(info)
            }
            6 => Self::Unpublish {
                stream: attrs.require(ATTR_STREAM)?,
            },
            _ => Self::Subscribe {
                stream: attrs.require(ATTR_STREAM)?,
                layers: attrs.require(ATTR_LAYER_MASK)?,
            },
        };
        Ok(msg)
    }
}

fn check_name(name: &str) -> Result<(), DecodeError> {
    if name.is_empty() || name.len() > MAX_NAME_LEN || name.chars().any(char::is_control) {
        return Err(DecodeError::BadValue(ATTR_NAME));
    }
    Ok(())
}

fn check_stream(s: &StreamInfo) -> Result<(), DecodeError> {
    if s.layers.is_empty() || s.layers.len() > MAX_LAYERS {
        return Err(DecodeError::BadValue(ATTR_LAYERS));
    }
    for (i, l) in s.layers.iter().enumerate() {
        let later = s.layers.iter().skip(i + 1);
        if l.ssrc == 0 || later.clone().any(|m| m.ssrc == l.ssrc) {
            return Err(DecodeError::BadValue(ATTR_LAYERS));
        }
        if later.take(1).any(|m| m.bitrate_bps <= l.bitrate_bps) {
            return Err(DecodeError::BadValue(ATTR_LAYERS));
        }
    }
    if s.clock_rate == 0 {
        return Err(DecodeError::BadValue(ATTR_CLOCK_RATE));
    }
    if s.frame_marking.is_some_and(|id| !(1..=14).contains(&id)) {
        return Err(DecodeError::BadValue(ATTR_FRAME_MARKING));
    }
    let increasing = s.temporal.windows(2).all(|w| w.first() < w.last());
    if s.temporal.len() >= MAX_TEMPORAL_LAYERS
        || !increasing
        || s.temporal.iter().any(|p| !(1..=99).contains(p))
    {
        return Err(DecodeError::BadValue(ATTR_TEMPORAL));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;

    fn arb_stream() -> impl Strategy<Value = StreamInfo> {
        (
            any::<(u32, u32, bool, u32)>(),
            0u8..5,
            proptest::option::of(1u8..=14),
            1usize..=MAX_LAYERS,
            proptest::sample::subsequence((1u8..=99).collect::<Vec<_>>(), 0..MAX_TEMPORAL_LAYERS),
        )
            .prop_map(
                |((stream, participant, video, clock), codec, fm, n, temporal)| {
                    let codec = [Codec::Opus, Codec::Vp8, Codec::H264, Codec::Vp9, Codec::Av1]
                        [usize::from(codec)];
                    StreamInfo {
                        stream,
                        participant,
                        media: if video {
                            MediaKind::Video
                        } else {
                            MediaKind::Audio
                        },
                        codec,
                        clock_rate: clock.max(1),
                        frame_marking: fm,
                        layers: (0..n as u32)
                            .map(|i| Layer {
                                ssrc: (stream & 0x0fff_ffff) << 3 | i | 1 << 31,
                                bitrate_bps: 100_000 * (i + 1),
                            })
                            .collect(),
                        temporal,
                    }
                },
            )
    }

    fn arb_message() -> impl Strategy<Value = (u8, StreamInfo, u32, String, u8)> {
        (
            1u8..=7,
            arb_stream(),
            any::<u32>(),
            "[a-zA-Zé ]{1,20}",
            any::<u8>(),
        )
    }

    fn build(m: &(u8, StreamInfo, u32, String, u8)) -> Message<'_> {
        let (ty, s, p, name, b) = m;
        match ty {
            1 => Message::Join {
                participant: *p,
                name,
            },
            2 => Message::Leave {
                participant: *p,
                reason: [
                    LeaveReason::Left,
                    LeaveReason::Removed,
                    LeaveReason::TimedOut,
                    LeaveReason::RelayLost,
                ][usize::from(b % 4)],
            },
            3 => Message::Mute {
                participant: *p,
                media: s.media,
                muted: b % 2 == 0,
            },
            4 => Message::Speaker {
                participant: (b % 2 == 0).then_some(*p),
            },
            5 => Message::Publish(s.clone()),
            6 => Message::Unpublish { stream: *p },
            _ => Message::Subscribe {
                stream: *p,
                layers: *b,
            },
        }
    }

    proptest! {
        #[test]
        fn round_trip(m in arb_message()) {
            let msg = build(&m);
            let mut out = BytesMut::new();
            msg.encode(&mut out).unwrap();
            prop_assert_eq!(out.len(), msg.encoded_len());
            prop_assert_eq!(Message::decode(&out), Ok(msg.clone()));
            // Every strict prefix is rejected (the attribute list ends mid-value)
            // or is a different, shorter message that still round-trips.
            for n in 0..out.len() {
                if let Ok(short) = Message::decode(&out[..n]) {
                    prop_assert_ne!(&short, &msg);
                }
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(b in vec(any::<u8>(), 0..300)) {
            crate::fuzz::control_message(&b);
        }

        #[test]
        fn mutated_messages_never_panic(m in arb_message(), i in any::<usize>(), x in any::<u8>()) {
            let mut out = BytesMut::new();
            build(&m).encode(&mut out).unwrap();
            let i = i % out.len();
            out[i] ^= x;
            crate::fuzz::control_message(&out);
        }
    }

    #[test]
    fn layout_is_version_type_then_tlv() {
        let mut out = BytesMut::new();
        Message::Subscribe {
            stream: 0x0102_0304,
            layers: 0b101,
        }
        .encode(&mut out)
        .unwrap();
        assert_eq!(&out[..], &[1, 7, 0, 6, 0, 4, 1, 2, 3, 4, 0, 9, 0, 1, 0b101]);
    }

    /// The Publish example of docs/conference.md, byte for byte.
    #[test]
    fn documented_publish_example() {
        let msg = Message::Publish(StreamInfo {
            stream: 1,
            participant: 1,
            media: MediaKind::Video,
            codec: Codec::Vp8,
            clock_rate: 90_000,
            frame_marking: None,
            layers: vec![
                Layer {
                    ssrc: 0x100,
                    bitrate_bps: 150_000,
                },
                Layer {
                    ssrc: 0x101,
                    bitrate_bps: 500_000,
                },
            ],
            temporal: Vec::new(),
        });
        let mut out = BytesMut::new();
        msg.encode(&mut out).unwrap();
        let doc: &[u8] = &[
            0x01, 0x05, 0x00, 0x06, 0x00, 0x04, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01, 0x00, 0x04,
            0x00, 0x00, 0x00, 0x01, 0x00, 0x04, 0x00, 0x01, 0x01, 0x00, 0x07, 0x00, 0x01, 0x01,
            0x00, 0x0b, 0x00, 0x04, 0x00, 0x01, 0x5f, 0x90, 0x00, 0x08, 0x00, 0x10, 0x00, 0x00,
            0x01, 0x00, 0x00, 0x02, 0x49, 0xf0, 0x00, 0x00, 0x01, 0x01, 0x00, 0x07, 0xa1, 0x20,
        ];
        assert_eq!(&out[..], doc);
        let seed = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../fuzz/corpus/control_message/seed-publish"
        );
        if let Ok(b) = std::fs::read(seed) {
            assert_eq!(b, doc);
        }
    }

    #[test]
    fn strictness() {
        let join = [1, 1, 0, 1, 0, 4, 0, 0, 0, 9, 0, 2, 0, 2, b'h', b'i'];
        assert_eq!(
            Message::decode(&join),
            Ok(Message::Join {
                participant: 9,
                name: "hi"
            })
        );
        let mut v2 = join;
        v2[0] = 2;
        assert_eq!(Message::decode(&v2), Err(DecodeError::UnknownVersion(2)));
        let mut t = join;
        t[1] = 99;
        assert_eq!(Message::decode(&t), Err(DecodeError::UnknownType(99)));
        // A Leave without its reason.
        let mut leave = join;
        leave[1] = 2;
        assert_eq!(
            Message::decode(&leave[..10]),
            Err(DecodeError::Attributes(
                chorus_framing::DecodeError::MissingAttribute(ATTR_REASON)
            ))
        );
        // A name on a Leave is not allowed.
        assert_eq!(
            Message::decode(&leave),
            Err(DecodeError::UnexpectedAttribute(ATTR_NAME))
        );
        // An optional attribute from a later version is skipped.
        let mut newer = join.to_vec();
        newer.extend_from_slice(&[0x80, 0x01, 0, 1, 42]);
        assert!(Message::decode(&newer).is_ok());
        // A required one is not.
        newer[join.len()] = 0x70;
        assert!(matches!(
            Message::decode(&newer),
            Err(DecodeError::Attributes(
                chorus_framing::DecodeError::UnknownRequiredAttribute(_)
            ))
        ));
        // Control characters and over-long names.
        let mut bad = join;
        bad[14] = b'\n';
        assert_eq!(Message::decode(&bad), Err(DecodeError::BadValue(ATTR_NAME)));
        let long = "x".repeat(MAX_NAME_LEN + 1);
        assert!(
            Message::Join {
                participant: 1,
                name: &long
            }
            .encode(&mut BytesMut::new())
            .is_err()
        );
        assert!(matches!(
            Message::decode(&vec![1; MAX_MESSAGE_LEN + 1]),
            Err(DecodeError::TooLong { .. })
        ));
    }

    #[test]
    fn stream_layers_are_checked() {
        let layer = |ssrc, bitrate_bps| Layer { ssrc, bitrate_bps };
        let mut s = StreamInfo {
            stream: 1,
            participant: 2,
            media: MediaKind::Video,
            codec: Codec::Vp8,
            clock_rate: 90_000,
            frame_marking: None,
            layers: vec![layer(10, 150_000), layer(11, 500_000)],
            temporal: vec![40, 60],
        };
        assert!(check_stream(&s).is_ok());
        s.layers[1].bitrate_bps = 150_000;
        assert!(check_stream(&s).is_err(), "bitrates must increase");
        s.layers[1] = layer(10, 600_000);
        assert!(check_stream(&s).is_err(), "SSRCs must differ");
        s.layers.clear();
        assert!(check_stream(&s).is_err(), "at least one layer");
        s.layers = vec![layer(1, 1); 1];
        s.frame_marking = Some(15);
        assert!(check_stream(&s).is_err(), "one-byte extension ids are 1-14");
        s.frame_marking = None;
        for bad in [
            &[60, 40][..],
            &[40, 40],
            &[0, 50],
            &[50, 100],
            &[10, 20, 30, 40],
        ] {
            s.temporal = bad.to_vec();
            assert!(check_stream(&s).is_err(), "temporal shares {bad:?}");
        }
        s.temporal = vec![25, 50, 75];
        assert!(check_stream(&s).is_ok());
        assert_eq!(s.temporal_layers(), 4);
    }

    #[test]
    fn temporal_shares_price_each_temporal_layer() {
        let mut s = StreamInfo::video(
            1,
            1,
            Codec::Vp8,
            vec![Layer {
                ssrc: 5,
                bitrate_bps: 1_000_000,
            }],
        );
        assert_eq!((s.temporal_layers(), s.bitrate(0, 0)), (1, 1_000_000));
        s.temporal = vec![40, 60];
        let rates: Vec<u64> = (0..4).map(|t| s.bitrate(0, t)).collect();
        assert_eq!(rates, [400_000, 600_000, 1_000_000, 1_000_000]);
        assert_eq!(s.bitrate(1, 0), 0, "no such layer");
        // On the wire as an optional attribute after the layers.
        let mut out = BytesMut::new();
        Message::Publish(s.clone()).encode(&mut out).unwrap();
        assert_eq!(&out[out.len() - 6..], &[0x80, 0x0c, 0, 2, 40, 60]);
        assert_eq!(Message::decode(&out), Ok(Message::Publish(s)));
    }
}

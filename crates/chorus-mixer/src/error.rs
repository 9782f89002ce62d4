//! The crate's error type (STYLE.md §6): the peer's fault, a local limit and the
//! caller's mistake kept apart.

use core::fmt;

/// Everything that can go wrong in `chorus-mixer`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// A peer's bytes (a control message or a media packet) do not parse.
    Media(chorus_media::Error),
    /// The audio mixer's jitter buffer turned a packet away (a duplicate, or too late).
    JitterRejected(chorus_media::jitter::Rejected),
    /// An RTP packet with a payload type other than the negotiated one.
    PayloadType(u8),
    /// The audio mixer hit a configured bound.
    #[cfg(feature = "opus")]
    AudioLimit(crate::audio::Limit),
    /// The audio mixer's caller made a mistake.
    #[cfg(feature = "opus")]
    AudioUsage(crate::audio::Usage),
    /// A peer's control message does not parse ([`crate::control`]).
    Control(crate::control::DecodeError),
    /// The SFU refused a packet or a command ([`crate::sfu`]).
    Sfu(crate::sfu::SfuError),
    /// A packet from a leg failed SRTP or SRTCP unprotection (RFC 3711): a bad
    /// tag, a replay, or not SRTP at all. It was dropped unread.
    Srtp(chorus_crypto::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Media(e) => write!(f, "media: {e}"),
            Self::JitterRejected(r) => write!(f, "jitter buffer rejected the packet: {r:?}"),
            Self::PayloadType(pt) => write!(f, "unexpected RTP payload type {pt}"),
            #[cfg(feature = "opus")]
            Self::AudioLimit(l) => write!(f, "audio mixer limit: {l:?}"),
            #[cfg(feature = "opus")]
            Self::AudioUsage(u) => write!(f, "audio mixer usage: {u:?}"),
            Self::Control(e) => write!(f, "control message: {e}"),
            Self::Sfu(e) => write!(f, "sfu: {e}"),
            Self::Srtp(e) => write!(f, "srtp: {e}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<chorus_media::Error> for Error {
    fn from(e: chorus_media::Error) -> Self {
        Self::Media(e)
    }
}

impl From<crate::control::DecodeError> for Error {
    fn from(e: crate::control::DecodeError) -> Self {
        Self::Control(e)
    }
}

impl From<crate::sfu::SfuError> for Error {
    fn from(e: crate::sfu::SfuError) -> Self {
        Self::Sfu(e)
    }
}

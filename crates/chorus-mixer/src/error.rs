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
        }
    }
}

impl std::error::Error for Error {}

impl From<chorus_media::Error> for Error {
    fn from(e: chorus_media::Error) -> Self {
        Self::Media(e)
    }
}

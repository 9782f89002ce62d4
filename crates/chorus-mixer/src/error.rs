//! The crate's error type (STYLE.md §6): the peer's fault, a local limit and the
//! caller's mistake kept apart.

use core::fmt;

/// Everything that can go wrong in `chorus-mixer`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// A peer's bytes (a control message or a media packet) do not parse.
    Media(chorus_media::Error),
    /// A peer's control message does not parse ([`crate::control`]).
    Control(crate::control::DecodeError),
    /// The SFU refused a packet or a command ([`crate::sfu`]).
    Sfu(crate::sfu::SfuError),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Media(e) => write!(f, "media: {e}"),
            Self::Control(e) => write!(f, "control message: {e}"),
            Self::Sfu(e) => write!(f, "sfu: {e}"),
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

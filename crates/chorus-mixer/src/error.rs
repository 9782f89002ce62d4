//! The crate's error type (STYLE.md §6): the peer's fault, a local limit and the
//! caller's mistake kept apart.

use core::fmt;

/// Everything that can go wrong in `chorus-mixer`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// A peer's bytes (a control message or a media packet) do not parse.
    Media(chorus_media::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Media(e) => write!(f, "media: {e}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<chorus_media::Error> for Error {
    fn from(e: chorus_media::Error) -> Self {
        Self::Media(e)
    }
}

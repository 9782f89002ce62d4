//! The crate's error types: the peer's fault ([`DecodeError`]) kept apart from the
//! caller's mistake ([`UsageError`]).

use core::fmt;

/// Everything that can go wrong in `chorus-framing`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The peer sent bytes that are not a valid frame, datagram or attribute list.
    Decode(DecodeError),
    /// The caller asked for something this crate cannot encode.
    Usage(UsageError),
}

/// Peer-supplied bytes that do not parse. Each variant is a distinct cause, so that a
/// caller can tell "newer protocol version" from "garbage".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input ended early: `needed` bytes were required at `offset`.
    Truncated {
        /// Offset of the read that failed.
        offset: usize,
        /// Bytes that read required.
        needed: usize,
    },
    /// A length field exceeds the configured maximum (checked before any allocation).
    TooLong {
        /// The announced length.
        len: usize,
        /// The configured maximum.
        max: usize,
    },
    /// A protocol version this implementation does not speak.
    UnknownVersion(u8),
    /// A stream frame type this implementation does not know.
    UnknownFrameType(u8),
    /// A datagram type this implementation does not know.
    UnknownDatagramType(u8),
    /// Flag bits that are not defined for this frame or datagram type.
    UnknownFlags(u8),
    /// A reserved field that must be zero was not.
    ReservedNotZero,
    /// A connection-level frame type on a channel other than 0, or a channel-level
    /// frame type on channel 0.
    WrongChannel {
        /// The frame type byte.
        frame_type: u8,
        /// The channel id it arrived on.
        channel: u32,
    },
    /// A frame whose payload has the wrong length for its type.
    BadPayloadLength {
        /// The frame type byte.
        frame_type: u8,
        /// The length received.
        len: usize,
    },
    /// The bytes are not a Chorus datagram (RFC 7983 demultiplexing put them elsewhere).
    NotChorus,
    /// A comprehension-required attribute this reader does not know.
    UnknownRequiredAttribute(u16),
    /// The same attribute type appeared twice.
    DuplicateAttribute(u16),
    /// An attribute the message requires is absent.
    MissingAttribute(u16),
    /// More attributes than the configured maximum.
    TooManyAttributes {
        /// The configured maximum.
        max: usize,
    },
    /// An attribute's value has a length its type does not allow.
    BadAttributeLength {
        /// The attribute type.
        attr: u16,
        /// The length received.
        len: usize,
    },
    /// An attribute's value is malformed for its type (for example invalid UTF-8 or an
    /// unknown address family).
    BadAttributeValue(u16),
    /// Bytes left over after a structure that must fill its buffer.
    TrailingBytes(usize),
}

/// A request the caller made that cannot be honoured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum UsageError {
    /// A payload longer than the configured or format maximum.
    PayloadTooLarge {
        /// The payload length.
        len: usize,
        /// The maximum allowed.
        max: usize,
    },
    /// The frame violates its type's rules (channel or payload length); the variant
    /// says which rule, as the decoder would report it.
    InvalidFrame(DecodeError),
    /// An attribute type was added twice to one attribute list.
    DuplicateAttribute(u16),
    /// More attributes than the configured maximum.
    TooManyAttributes {
        /// The configured maximum.
        max: usize,
    },
    /// A configuration value outside its documented bounds.
    InvalidConfig(&'static str),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Decode(e) => write!(f, "invalid input: {e}"),
            Self::Usage(e) => write!(f, "invalid request: {e}"),
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Truncated { offset, needed } => {
                write!(
                    f,
                    "truncated: {needed} more bytes needed at offset {offset}"
                )
            }
            Self::TooLong { len, max } => write!(f, "length {len} exceeds the maximum {max}"),
            Self::UnknownVersion(v) => write!(f, "unknown protocol version {v}"),
            Self::UnknownFrameType(t) => write!(f, "unknown frame type {t:#04x}"),
            Self::UnknownDatagramType(t) => write!(f, "unknown datagram type {t:#04x}"),
            Self::UnknownFlags(b) => write!(f, "undefined flag bits {b:#04x}"),
            Self::ReservedNotZero => f.write_str("reserved field is not zero"),
            Self::WrongChannel {
                frame_type,
                channel,
            } => write!(
                f,
                "frame type {frame_type:#04x} not allowed on channel {channel}"
            ),
            Self::BadPayloadLength { frame_type, len } => {
                write!(
                    f,
                    "payload length {len} invalid for frame type {frame_type:#04x}"
                )
            }
            Self::NotChorus => f.write_str("not a Chorus datagram"),
            Self::UnknownRequiredAttribute(t) => {
                write!(f, "unknown comprehension-required attribute {t:#06x}")
            }
            Self::DuplicateAttribute(t) => write!(f, "duplicate attribute {t:#06x}"),
            Self::MissingAttribute(t) => write!(f, "required attribute {t:#06x} is missing"),
            Self::TooManyAttributes { max } => write!(f, "more than {max} attributes"),
            Self::BadAttributeLength { attr, len } => {
                write!(f, "attribute {attr:#06x} has invalid length {len}")
            }
            Self::BadAttributeValue(t) => write!(f, "attribute {t:#06x} has a malformed value"),
            Self::TrailingBytes(n) => write!(f, "{n} unexpected trailing bytes"),
        }
    }
}

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::PayloadTooLarge { len, max } => {
                write!(f, "payload of {len} bytes exceeds the maximum {max}")
            }
            Self::InvalidFrame(e) => write!(f, "frame breaks its type's rules: {e}"),
            Self::DuplicateAttribute(t) => write!(f, "attribute {t:#06x} added twice"),
            Self::TooManyAttributes { max } => {
                write!(f, "the list already holds the maximum of {max} attributes")
            }
            Self::InvalidConfig(what) => write!(f, "invalid configuration: {what}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Decode(e) => Some(e),
            Self::Usage(e) => Some(e),
        }
    }
}
impl std::error::Error for DecodeError {}
impl std::error::Error for UsageError {}

impl From<DecodeError> for Error {
    fn from(e: DecodeError) -> Self {
        Self::Decode(e)
    }
}

impl From<UsageError> for Error {
    fn from(e: UsageError) -> Self {
        Self::Usage(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_displays_distinctly_and_chains_its_source() {
        let decode = [
            DecodeError::Truncated {
                offset: 1,
                needed: 2,
            },
            DecodeError::TooLong { len: 9, max: 8 },
            DecodeError::UnknownVersion(2),
            DecodeError::UnknownFrameType(9),
            DecodeError::UnknownDatagramType(9),
            DecodeError::UnknownFlags(0x80),
            DecodeError::ReservedNotZero,
            DecodeError::WrongChannel {
                frame_type: 1,
                channel: 0,
            },
            DecodeError::BadPayloadLength {
                frame_type: 4,
                len: 3,
            },
            DecodeError::NotChorus,
            DecodeError::UnknownRequiredAttribute(7),
            DecodeError::DuplicateAttribute(7),
            DecodeError::MissingAttribute(7),
            DecodeError::TooManyAttributes { max: 3 },
            DecodeError::BadAttributeLength { attr: 7, len: 1 },
            DecodeError::BadAttributeValue(7),
            DecodeError::TrailingBytes(4),
        ];
        let usage = [
            UsageError::PayloadTooLarge { len: 9, max: 8 },
            UsageError::InvalidFrame(DecodeError::ReservedNotZero),
            UsageError::DuplicateAttribute(7),
            UsageError::TooManyAttributes { max: 3 },
            UsageError::InvalidConfig("x"),
        ];
        let mut texts: Vec<String> = decode.iter().map(ToString::to_string).collect();
        texts.extend(usage.iter().map(ToString::to_string));
        let mut unique = texts.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), texts.len(), "{texts:#?}");

        use std::error::Error as _;
        let e = Error::from(DecodeError::NotChorus);
        assert_eq!(e.to_string(), "invalid input: not a Chorus datagram");
        assert!(e.source().is_some());
        let u = Error::from(UsageError::InvalidConfig("x"));
        assert!(u.to_string().starts_with("invalid request"));
        assert!(u.source().is_some());
    }
}

//! The crate's error type: the peer's fault, a local limit and the caller's mistake,
//! kept apart (STYLE.md §6).

use core::fmt;

/// Everything that can go wrong in `chorus-media`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The peer sent bytes that are not a valid RTP, RTCP or FEC packet.
    Decode(DecodeError),
    /// A configured bound was hit.
    Limit(Limit),
    /// The caller asked for something that cannot be encoded or done.
    Usage(UsageError),
    /// The Opus codec (libopus) reported an error; the text is libopus's description
    /// of its error code (for example "corrupted stream" for an invalid packet).
    Codec(&'static str),
    /// SRTP or SRTCP protection failed: a packet that does not authenticate (or a
    /// replay) on the way in, or an exhausted key on the way out.
    Srtp(chorus_crypto::Error),
}

/// Peer-supplied bytes that do not parse.
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
    /// A length exceeds the configured maximum.
    TooLong {
        /// The length seen.
        len: usize,
        /// The configured maximum.
        max: usize,
    },
    /// The version field is not the one this format defines (2 for RTP/RTCP).
    BadVersion(u8),
    /// The padding count is zero or larger than the packet allows (RFC 3550 §5.1).
    BadPadding(u8),
    /// An RFC 8285 header extension element is malformed.
    BadExtension,
    /// An RTCP packet whose length does not fit its type or its count field.
    BadRtcpLength {
        /// The RTCP packet type.
        packet_type: u8,
    },
    /// More items (compound packets, SDES items, NACK entries) than configured.
    TooMany {
        /// The configured maximum.
        max: usize,
    },
    /// An RTCP packet type that needs a known format was malformed or unknown where it
    /// is required (for example a compound packet not starting with SR or RR).
    BadRtcpType(u8),
    /// A FEC packet whose parameters (k, m, index, stride) are invalid or inconsistent.
    BadFecHeader,
    /// A reserved field that must be zero was not.
    ReservedNotZero,
    /// A WAV file this crate does not read (the text says which rule it breaks).
    BadWav(&'static str),
}

/// A configured bound that was hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Limit {
    /// A packet longer than the configured maximum.
    PacketTooLong {
        /// The packet's length.
        len: usize,
        /// The configured maximum.
        max: usize,
    },
}

/// API misuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum UsageError {
    /// More than 15 CSRCs (RFC 3550 §5.1: CC is 4 bits).
    TooManyCsrcs,
    /// A header extension element that neither RFC 8285 form can carry (id 0, id 15 in
    /// the one-byte form, id above 255 or data longer than 255 bytes).
    BadExtensionElement,
    /// A header extension whose data is not a whole number of 32-bit words or longer
    /// than 65,535 words.
    BadExtensionLength,
    /// More report blocks, sources or chunks than the 5-bit count allows (31).
    TooManyItems,
    /// An SDES item or BYE reason longer than 255 bytes.
    TextTooLong,
    /// A padding length of zero bytes asked for with the padding bit.
    BadPadding,
    /// An invalid configuration (the message says which rule).
    InvalidConfig(&'static str),
    /// A datagram handed to a session through `DatagramCore::handle_datagram`
    /// from an address other than its peer's (or before it has one): its
    /// `accepts` says no to such datagrams, so the caller routed it wrongly.
    NotFromPeer,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Decode(e) => write!(f, "invalid packet: {e}"),
            Self::Limit(l) => write!(f, "limit reached: {l}"),
            Self::Usage(u) => write!(f, "usage error: {u}"),
            Self::Codec(e) => write!(f, "codec error: {e}"),
            Self::Srtp(e) => write!(f, "SRTP: {e}"),
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated { offset, needed } => {
                write!(f, "truncated: {needed} bytes needed at offset {offset}")
            }
            Self::TooLong { len, max } => write!(f, "length {len} exceeds the maximum {max}"),
            Self::BadVersion(v) => write!(f, "version {v} is not 2"),
            Self::BadPadding(p) => write!(f, "padding count {p} does not fit the packet"),
            Self::BadExtension => f.write_str("malformed RFC 8285 header extension"),
            Self::BadRtcpLength { packet_type } => {
                write!(
                    f,
                    "RTCP packet type {packet_type} has a length that does not fit it"
                )
            }
            Self::TooMany { max } => write!(f, "more than {max} items"),
            Self::BadRtcpType(t) => write!(f, "RTCP packet type {t} not allowed here"),
            Self::BadFecHeader => f.write_str("invalid FEC header"),
            Self::ReservedNotZero => f.write_str("reserved field is not zero"),
            Self::BadWav(why) => write!(f, "unsupported WAV file: {why}"),
        }
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::PacketTooLong { len, max } => {
                write!(f, "packet of {len} bytes exceeds the maximum {max}")
            }
        }
    }
}

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooManyCsrcs => f.write_str("more than 15 CSRCs"),
            Self::BadExtensionElement => f.write_str("header extension element not encodable"),
            Self::BadExtensionLength => {
                f.write_str("header extension data is not a whole number of words")
            }
            Self::TooManyItems => f.write_str("more than 31 items in one RTCP packet"),
            Self::TextTooLong => f.write_str("text longer than 255 bytes"),
            Self::BadPadding => f.write_str("padding length must be at least 1"),
            Self::InvalidConfig(why) => write!(f, "invalid configuration: {why}"),
            Self::NotFromPeer => f.write_str("datagram not from the session's peer"),
        }
    }
}

impl std::error::Error for Error {}
impl std::error::Error for DecodeError {}
impl std::error::Error for UsageError {}
impl std::error::Error for Limit {}

impl From<chorus_crypto::Error> for Error {
    fn from(e: chorus_crypto::Error) -> Self {
        Self::Srtp(e)
    }
}

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

impl From<Limit> for Error {
    fn from(e: Limit) -> Self {
        Self::Limit(e)
    }
}

impl From<chorus_framing::DecodeError> for DecodeError {
    fn from(e: chorus_framing::DecodeError) -> Self {
        match e {
            chorus_framing::DecodeError::Truncated { offset, needed } => {
                Self::Truncated { offset, needed }
            }
            chorus_framing::DecodeError::TooLong { len, max } => Self::TooLong { len, max },
            // The Reader only reports truncation; keep a safe mapping for the rest.
            _ => Self::Truncated {
                offset: 0,
                needed: 0,
            },
        }
    }
}

impl From<chorus_framing::DecodeError> for Error {
    fn from(e: chorus_framing::DecodeError) -> Self {
        Self::Decode(e.into())
    }
}

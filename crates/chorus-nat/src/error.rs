//! The crate's error type: the peer's fault, a protocol violation, a local limit and
//! the caller's mistake, kept apart (STYLE.md §6).

use core::fmt;

use chorus_framing::EntropyError;

/// Everything that can go wrong in `chorus-nat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The peer sent bytes that are not a valid STUN message.
    Decode(DecodeError),
    /// A valid message that is not acceptable here (an unsolicited response, a request
    /// to a client).
    Protocol(Violation),
    /// A configured bound was hit (pending transactions, per-source rate).
    Limit(Limit),
    /// The caller asked for something that cannot be done.
    Usage(UsageError),
    /// The entropy source failed (transaction ids could not be drawn).
    Entropy(EntropyError),
}

/// Up to eight attribute types that a message carried and this implementation does not
/// understand: what a 420 (Unknown Attribute) response lists (RFC 8489 §14.9).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UnknownAttributes {
    types: [u16; Self::MAX],
    len: u8,
}

impl UnknownAttributes {
    /// How many types are kept; further ones are dropped (the 420 response stays small).
    pub const MAX: usize = 8;

    pub(crate) const fn new() -> Self {
        Self {
            types: [0; Self::MAX],
            len: 0,
        }
    }

    pub(crate) fn push(&mut self, t: u16) {
        if let Some(slot) = self.types.get_mut(usize::from(self.len)) {
            *slot = t;
            self.len += 1;
        }
    }

    /// The attribute types, in the order they appeared.
    #[must_use]
    pub fn as_slice(&self) -> &[u16] {
        self.types.get(..usize::from(self.len)).unwrap_or(&[])
    }

    /// Whether no type is listed.
    #[must_use]
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Peer-supplied bytes that are not a valid STUN message.
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
    /// The message is longer than the configured maximum.
    TooLong {
        /// The message length.
        len: usize,
        /// The configured maximum.
        max: usize,
    },
    /// The first two bits are not zero: not STUN (RFC 8489 §5).
    NotStun,
    /// The magic cookie is not 0x2112A442 (an RFC 3489 message, or not STUN).
    BadMagicCookie(u32),
    /// The header's length is not a multiple of 4 or does not match the datagram.
    BadLength(usize),
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
    /// An attribute's value is malformed (invalid UTF-8, unknown address family,
    /// nonzero reserved bits, an error code out of range).
    BadAttributeValue(u16),
    /// Comprehension-required attributes this implementation does not know; a server
    /// answers a request with 420 listing them.
    UnknownRequiredAttributes(UnknownAttributes),
    /// An attribute follows FINGERPRINT, which must be last (RFC 8489 §14.7).
    AttributeAfterFingerprint(u16),
    /// FINGERPRINT does not match the message's CRC-32.
    FingerprintMismatch,
    /// MESSAGE-INTEGRITY or MESSAGE-INTEGRITY-SHA256 does not verify with the key.
    IntegrityMismatch,
    /// The message carries no integrity attribute although one is required.
    MissingIntegrity,
    /// An ICE candidate line or description (RFC 8839) is malformed: what is wrong.
    BadCandidate(&'static str),
}

/// A valid message that is not acceptable in the current state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Violation {
    /// A response whose transaction id matches no outstanding request.
    UnknownTransaction,
    /// A message of a class this endpoint does not accept (a request sent to a client,
    /// a response sent to a server).
    UnexpectedClass,
    /// A method this endpoint does not serve.
    UnsupportedMethod(u16),
    /// TURN client: ChannelData on a channel number that is not bound (RFC 8656 §12.6).
    UnknownChannel(u16),
    /// TURN client: data from a peer without a permission, or a TURN message from an
    /// address other than the server's (RFC 8656 §10.4).
    UnexpectedPeer,
    /// TURN client: a message lacks an attribute its method requires (e.g. a Data
    /// indication without XOR-PEER-ADDRESS or DATA, RFC 8656 §10.4).
    MissingAttribute(u16),
    /// An ICE connectivity check whose USERNAME names other credentials (RFC 8445
    /// §7.3), or a description that changes the peer's credentials.
    BadCredentials,
    /// A non-STUN datagram from a source other than the selected ICE pair's.
    UnexpectedSource,
    /// TURN server: data or a request from a 5-tuple (or to a relayed address) that
    /// has no allocation (RFC 8656 §7).
    NoAllocation,
    /// TURN server: data to or from a peer without a permission (RFC 8656 §9).
    NoPermission,
    /// TURN server: ChannelData on a channel that is not bound (RFC 8656 §12.6).
    UnboundChannel,
}

/// A configured bound that was reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Limit {
    /// The maximum number of outstanding client transactions.
    Transactions(usize),
    /// The source exceeded its configured request rate; the request was dropped.
    Rate,
    /// The rate limiter's table of sources is full of active sources; a new source was
    /// refused.
    Sources(usize),
    /// TURN client: the permission table is full (configured maximum).
    Permissions(usize),
    /// TURN client: the channel table is full (configured maximum).
    Channels(usize),
    /// The maximum number of ICE candidates (local or remote) was reached.
    Candidates(usize),
    /// An outgoing datagram or event queue (TURN client, ICE agent) is full; drain it
    /// first.
    Queue(usize),
}

/// The caller asked for something that cannot be done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum UsageError {
    /// A configuration value outside its documented bounds.
    InvalidConfig(&'static str),
    /// The message asks for MESSAGE-INTEGRITY but no key was given.
    MissingKey,
    /// An attribute value too long for its type (or for a 16-bit length).
    ValueTooLong(u16),
    /// A string attribute that must be valid for its type is not.
    InvalidValue(u16),
    /// TURN client: the operation needs an allocation, and there is none (not yet
    /// allocated, failed, or closed).
    NotAllocated,
    /// TURN client: data to a peer for which no permission was requested (RFC 8656 §9).
    NoPermission,
    /// Data can only be sent once ICE has selected a pair.
    NotConnected,
    /// TURN: a relay bind was reported for an address no allocation waits for.
    UnknownRelay,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Decode(e) => write!(f, "invalid STUN message: {e}"),
            Self::Protocol(e) => write!(f, "protocol violation: {e}"),
            Self::Limit(e) => write!(f, "limit reached: {e}"),
            Self::Usage(e) => write!(f, "invalid request: {e}"),
            Self::Entropy(e) => write!(f, "{e}"),
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
            Self::NotStun => f.write_str("the first two bits are not zero"),
            Self::BadMagicCookie(c) => write!(f, "magic cookie {c:#010x} is not 0x2112a442"),
            Self::BadLength(l) => write!(f, "header length {l} is invalid for this datagram"),
            Self::TooManyAttributes { max } => write!(f, "more than {max} attributes"),
            Self::BadAttributeLength { attr, len } => {
                write!(f, "attribute {attr:#06x} has invalid length {len}")
            }
            Self::BadAttributeValue(t) => write!(f, "attribute {t:#06x} has a malformed value"),
            Self::UnknownRequiredAttributes(list) => {
                f.write_str("unknown comprehension-required attributes")?;
                for t in list.as_slice() {
                    write!(f, " {t:#06x}")?;
                }
                Ok(())
            }
            Self::AttributeAfterFingerprint(t) => {
                write!(f, "attribute {t:#06x} follows FINGERPRINT")
            }
            Self::FingerprintMismatch => f.write_str("FINGERPRINT does not match"),
            Self::IntegrityMismatch => f.write_str("message integrity check failed"),
            Self::MissingIntegrity => f.write_str("message integrity attribute missing"),
            Self::BadCandidate(what) => write!(f, "malformed ICE candidate: {what}"),
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownTransaction => f.write_str("response to no outstanding transaction"),
            Self::UnexpectedClass => f.write_str("message class not accepted here"),
            Self::UnsupportedMethod(m) => write!(f, "method {m:#05x} is not served here"),
            Self::UnknownChannel(c) => write!(f, "channel {c:#06x} is not bound"),
            Self::UnexpectedPeer => f.write_str("data from a peer or address not permitted"),
            Self::MissingAttribute(t) => write!(f, "required attribute {t:#06x} is missing"),
            Self::BadCredentials => f.write_str("ICE credentials do not match"),
            Self::UnexpectedSource => f.write_str("datagram not on the selected ICE pair"),
            Self::NoAllocation => f.write_str("no allocation for this 5-tuple or address"),
            Self::NoPermission => f.write_str("no permission for this peer"),
            Self::UnboundChannel => f.write_str("channel not bound"),
        }
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Transactions(n) => write!(f, "already {n} outstanding transactions"),
            Self::Rate => f.write_str("source exceeded its request rate"),
            Self::Sources(n) => write!(f, "rate limiter already tracks {n} active sources"),
            Self::Permissions(n) => write!(f, "already {n} permissions"),
            Self::Channels(n) => write!(f, "already {n} channels"),
            Self::Queue(n) => write!(f, "queue already holds {n} items"),
            Self::Candidates(n) => write!(f, "already {n} ICE candidates"),
        }
    }
}

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidConfig(what) => write!(f, "invalid configuration: {what}"),
            Self::MissingKey => f.write_str("message integrity requested without a key"),
            Self::ValueTooLong(t) => write!(f, "value of attribute {t:#06x} is too long"),
            Self::InvalidValue(t) => write!(f, "value of attribute {t:#06x} is invalid"),
            Self::NotAllocated => f.write_str("no TURN allocation"),
            Self::NoPermission => f.write_str("no permission requested for this peer"),
            Self::NotConnected => f.write_str("no ICE pair selected yet"),
            Self::UnknownRelay => f.write_str("no allocation waits for this relayed address"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Decode(e) => Some(e),
            Self::Protocol(e) => Some(e),
            Self::Limit(e) => Some(e),
            Self::Usage(e) => Some(e),
            Self::Entropy(e) => Some(e),
        }
    }
}
impl std::error::Error for DecodeError {}
impl std::error::Error for Violation {}
impl std::error::Error for Limit {}
impl std::error::Error for UsageError {}

impl From<DecodeError> for Error {
    fn from(e: DecodeError) -> Self {
        Self::Decode(e)
    }
}
impl From<Violation> for Error {
    fn from(e: Violation) -> Self {
        Self::Protocol(e)
    }
}
impl From<Limit> for Error {
    fn from(e: Limit) -> Self {
        Self::Limit(e)
    }
}
impl From<UsageError> for Error {
    fn from(e: UsageError) -> Self {
        Self::Usage(e)
    }
}
impl From<EntropyError> for Error {
    fn from(e: EntropyError) -> Self {
        Self::Entropy(e)
    }
}
impl From<chorus_framing::DecodeError> for DecodeError {
    fn from(e: chorus_framing::DecodeError) -> Self {
        match e {
            chorus_framing::DecodeError::Truncated { offset, needed } => {
                Self::Truncated { offset, needed }
            }
            // `Reader` only ever reports truncation.
            _ => Self::Truncated {
                offset: 0,
                needed: 0,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_displays_distinctly_and_chains_its_source() {
        let mut unknown = UnknownAttributes::new();
        unknown.push(0x7777);
        let all: Vec<Error> = vec![
            DecodeError::Truncated {
                offset: 1,
                needed: 2,
            }
            .into(),
            DecodeError::TooLong { len: 9, max: 8 }.into(),
            DecodeError::NotStun.into(),
            DecodeError::BadMagicCookie(1).into(),
            DecodeError::BadLength(3).into(),
            DecodeError::TooManyAttributes { max: 3 }.into(),
            DecodeError::BadAttributeLength { attr: 1, len: 3 }.into(),
            DecodeError::BadAttributeValue(1).into(),
            DecodeError::UnknownRequiredAttributes(unknown).into(),
            DecodeError::AttributeAfterFingerprint(1).into(),
            DecodeError::FingerprintMismatch.into(),
            DecodeError::IntegrityMismatch.into(),
            DecodeError::MissingIntegrity.into(),
            DecodeError::BadCandidate("x").into(),
            Violation::UnknownTransaction.into(),
            Violation::UnexpectedClass.into(),
            Violation::UnsupportedMethod(3).into(),
            Violation::UnknownChannel(0x4001).into(),
            Violation::UnexpectedPeer.into(),
            Violation::MissingAttribute(0x13).into(),
            Violation::BadCredentials.into(),
            Violation::UnexpectedSource.into(),
            Limit::Transactions(4).into(),
            Limit::Rate.into(),
            Limit::Sources(5).into(),
            Limit::Permissions(7).into(),
            Limit::Channels(7).into(),
            Limit::Candidates(5).into(),
            Limit::Queue(7).into(),
            Violation::NoAllocation.into(),
            Violation::NoPermission.into(),
            Violation::UnboundChannel.into(),
            UsageError::InvalidConfig("x").into(),
            UsageError::MissingKey.into(),
            UsageError::ValueTooLong(6).into(),
            UsageError::InvalidValue(6).into(),
            UsageError::NotAllocated.into(),
            UsageError::NoPermission.into(),
            UsageError::NotConnected.into(),
            UsageError::UnknownRelay.into(),
            EntropyError.into(),
        ];
        let texts: Vec<String> = all.iter().map(ToString::to_string).collect();
        let mut unique = texts.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), texts.len(), "{texts:#?}");
        use std::error::Error as _;
        assert!(all.iter().all(|e| e.source().is_some()));
        assert!(texts[8].contains("0x7777"));
    }

    #[test]
    fn unknown_attribute_list_keeps_at_most_eight_types() {
        let mut list = UnknownAttributes::new();
        for t in 0..20 {
            list.push(t);
        }
        assert_eq!(list.as_slice(), &[0, 1, 2, 3, 4, 5, 6, 7]);
    }
}

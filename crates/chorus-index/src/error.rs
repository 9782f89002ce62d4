//! The crate's error type: a peer's bad bytes, a record that does not verify, a local
//! limit and the caller's mistake, kept apart.

use core::fmt;

pub use chorus_framing::DecodeError;
use chorus_framing::EntropyError;

/// Everything that can go wrong in `chorus-index`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The peer sent bytes that are not a valid Global Index message or record.
    Decode(DecodeError),
    /// A valid message that is not acceptable: a certificate or a record that does not
    /// verify, a stale record, an unsolicited response.
    Protocol(Violation),
    /// A configured bound was hit (rate limit, table or store full). State unchanged.
    Limit(Limit),
    /// The caller asked for something that cannot be done.
    Usage(UsageError),
    /// The injected entropy source failed.
    Entropy(EntropyError),
}

/// A decodable message or record that is not acceptable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Violation {
    /// A super node's certificate did not verify, or it is not a super node's.
    BadNodeCertificate,
    /// A presence record's user certificate did not verify or names another user.
    BadUserCertificate,
    /// A presence record's signature did not verify.
    BadSignature,
    /// A presence record that has expired, or that claims a lifetime longer than
    /// the configured maximum.
    Expired,
    /// A presence record older than (or as old as, but different from) the one held.
    Stale,
    /// A response with no request in flight to that address under that transaction id.
    Unsolicited,
    /// A message from another Global Index network (the datagram's network id).
    WrongNetwork(u32),
    /// A request from our own node id (a reflected or looped datagram).
    FromSelf,
    /// An answer to a possession challenge without a valid signature by the key the
    /// sender's certificate names: the sender replays someone else's certificate.
    BadProof,
}

/// A configured bound was reached. The input was refused; state is unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Limit {
    /// The peer sent requests faster than its rate limit.
    RateLimited,
    /// The peer has as many records stored here as it may.
    PeerStoreFull {
        /// The configured maximum.
        max: usize,
    },
    /// The record store is full and the record is not closer than any held.
    StoreFull {
        /// The configured maximum.
        max: usize,
    },
    /// Too many lookups are running.
    TooManyLookups {
        /// The configured maximum.
        max: usize,
    },
    /// Answering would need a proof of possession beyond the node's global signing
    /// budget (`proof_rate`): the request is dropped unanswered.
    ProofBudget,
    /// Checking the request's certificate or record would exceed the node's global
    /// verification budget (`verify_rate`): the request is dropped unanswered.
    VerifyBudget,
}

/// A request the caller made that cannot be honoured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum UsageError {
    /// A configuration value outside its documented bounds.
    InvalidConfig(&'static str),
    /// A record field outside its bounds (too many addresses, too long a name).
    InvalidRecord(&'static str),
    /// The node has left the index.
    Left,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Decode(e) => write!(f, "malformed index message: {e}"),
            Self::Protocol(v) => write!(f, "index protocol violation: {v}"),
            Self::Limit(l) => write!(f, "index limit: {l}"),
            Self::Usage(u) => write!(f, "index usage: {u}"),
            Self::Entropy(e) => write!(f, "{e}"),
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadNodeCertificate => f.write_str("super node certificate does not verify"),
            Self::BadUserCertificate => f.write_str("user certificate does not verify"),
            Self::BadSignature => f.write_str("record signature does not verify"),
            Self::Expired => f.write_str("record expired or lives too long"),
            Self::Stale => f.write_str("record older than the one held"),
            Self::Unsolicited => f.write_str("response without a request"),
            Self::WrongNetwork(n) => write!(f, "message for network {n:#010x}"),
            Self::FromSelf => f.write_str("message from our own node id"),
            Self::BadProof => f.write_str("no proof of possession of the certified key"),
        }
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::RateLimited => f.write_str("peer over its rate limit"),
            Self::PeerStoreFull { max } => write!(f, "peer already stores {max} records"),
            Self::StoreFull { max } => write!(f, "record store full ({max})"),
            Self::TooManyLookups { max } => write!(f, "{max} lookups already running"),
            Self::ProofBudget => f.write_str("proof-of-possession signing budget spent"),
            Self::VerifyBudget => f.write_str("signature verification budget spent"),
        }
    }
}

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidConfig(why) => write!(f, "invalid configuration: {why}"),
            Self::InvalidRecord(why) => write!(f, "invalid record: {why}"),
            Self::Left => f.write_str("the node has left the index"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Decode(e) => Some(e),
            Self::Entropy(e) => Some(e),
            _ => None,
        }
    }
}

impl From<DecodeError> for Error {
    fn from(e: DecodeError) -> Self {
        Self::Decode(e)
    }
}

impl From<Violation> for Error {
    fn from(v: Violation) -> Self {
        Self::Protocol(v)
    }
}

impl From<Limit> for Error {
    fn from(l: Limit) -> Self {
        Self::Limit(l)
    }
}

impl From<UsageError> for Error {
    fn from(u: UsageError) -> Self {
        Self::Usage(u)
    }
}

impl From<EntropyError> for Error {
    fn from(e: EntropyError) -> Self {
        Self::Entropy(e)
    }
}

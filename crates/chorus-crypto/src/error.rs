//! The crate's error type: the peer's fault, an authentication failure, bad key
//! material, a local limit and the caller's mistake, kept apart.

use core::fmt;

pub use chorus_framing::DecodeError;
use chorus_framing::EntropyError;

/// Everything that can go wrong in `chorus-crypto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The peer sent bytes that do not parse (certificate, handshake message, packet).
    Decode(DecodeError),
    /// Well-formed input that failed authentication or was not acceptable.
    Auth(AuthError),
    /// Key material (from a file or the caller) that cannot be used.
    Key(KeyError),
    /// A configured or cryptographic bound was reached.
    Limit(Limit),
    /// The caller asked for something that cannot be done.
    Usage(UsageError),
    /// The system's random number generator failed.
    Entropy(EntropyError),
}

/// Authentication and authorization failures. Callers should treat every variant as
/// "reject, state unchanged"; the variants exist for diagnostics and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthError {
    /// A signature did not verify.
    BadSignature,
    /// An AEAD or HMAC authentication tag did not verify.
    BadTag,
    /// A certificate was issued by a key that is not a trusted authority.
    UntrustedIssuer,
    /// A certificate is not valid yet at the given time.
    NotYetValid,
    /// A certificate has expired at the given time.
    Expired,
    /// A certificate's serial number is on the revocation list.
    Revoked {
        /// The revoked serial.
        serial: u64,
    },
    /// A certificate's role does not allow what it was presented for.
    WrongRole,
    /// The peer authenticated as someone other than the expected identity.
    WrongPeer,
    /// A message or packet was already received (replay).
    Replay,
    /// The peer's offer was altered or no common protocol version/suite exists.
    Downgrade,
    /// A password does not match its stored hash.
    WrongPassword,
    /// A plaintext frame arrived where only sealed frames are allowed.
    NotSealed,
}

/// Key material that cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyError {
    /// Not valid PEM, or a PEM label other than the one expected.
    Pem,
    /// Not a valid DER structure of the expected kind (PKCS#8 or SubjectPublicKeyInfo).
    Der,
    /// An RSA key whose size is not 2048, 3072 or 4096 bits.
    UnsupportedSize {
        /// The key's modulus size in bits.
        bits: usize,
    },
    /// The key is well-formed but the crypto backend rejects it (for example a
    /// public exponent or modulus it considers unsafe).
    Rejected,
    /// Key generation failed.
    Generation,
    /// A stored password hash string that does not parse.
    PasswordHash(crate::password::HashFormatError),
}

/// A bound was reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Limit {
    /// A packet or message counter would wrap, which would reuse a nonce: re-key.
    CounterExhausted,
    /// More streams or contexts than configured.
    TooManyContexts {
        /// The configured maximum.
        max: usize,
    },
}

/// A request the caller made that cannot be honoured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum UsageError {
    /// A configuration value outside its documented bounds.
    InvalidConfig(&'static str),
    /// A buffer or input of the wrong length for the operation.
    InvalidLength {
        /// The length given.
        len: usize,
        /// What the operation needed.
        expected: &'static str,
    },
    /// The operation does not apply in the object's current state.
    WrongState(&'static str),
    /// SRTP/SRTCP: protecting this packet would use an index this session already used
    /// for the SSRC, or one below the highest it used (RFC 3711 §3.3.1 and §9.1,
    /// RFC 7714 §8.1: a repeated index reuses the AES-CM keystream or the AES-GCM nonce,
    /// which with GCM leaks the authentication key). Nothing was protected and the
    /// packet is unchanged. A retransmission of identical bytes is allowed only with
    /// [`Policy::allow_repeat_tx`](crate::srtp::Policy::allow_repeat_tx).
    IndexReuse {
        /// The stream's SSRC.
        ssrc: u32,
        /// The refused index: the 48-bit SRTP index (ROC × 65536 + SEQ) or the 31-bit
        /// SRTCP index.
        index: u64,
    },
    /// SRTP with [`Policy::allow_repeat_tx`](crate::srtp::Policy::allow_repeat_tx): a
    /// packet at an index already sent whose bytes differ from what was sent there.
    /// Its payload and tag space in the caller's buffer were overwritten with zeros,
    /// so no ciphertext under the reused index leaves; drop the packet.
    RetransmissionMismatch {
        /// The stream's SSRC.
        ssrc: u32,
        /// The 48-bit SRTP index.
        index: u64,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Decode(e) => write!(f, "invalid input: {e}"),
            Self::Auth(e) => write!(f, "authentication failed: {e}"),
            Self::Key(e) => write!(f, "unusable key: {e}"),
            Self::Limit(e) => write!(f, "limit reached: {e}"),
            Self::Usage(e) => write!(f, "invalid request: {e}"),
            Self::Entropy(e) => write!(f, "{e}"),
        }
    }
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadSignature => f.write_str("signature does not verify"),
            Self::BadTag => f.write_str("authentication tag does not verify"),
            Self::UntrustedIssuer => f.write_str("certificate issuer is not trusted"),
            Self::NotYetValid => f.write_str("certificate is not valid yet"),
            Self::Expired => f.write_str("certificate has expired"),
            Self::Revoked { serial } => write!(f, "certificate serial {serial} is revoked"),
            Self::WrongRole => f.write_str("certificate role does not allow this use"),
            Self::WrongPeer => f.write_str("peer is not the expected identity"),
            Self::Replay => f.write_str("replayed message"),
            Self::Downgrade => f.write_str("no common version or suite, or the offer was altered"),
            Self::WrongPassword => f.write_str("wrong password"),
            Self::NotSealed => f.write_str("unsealed frame on a sealed channel"),
        }
    }
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Pem => f.write_str("not valid PEM of the expected kind"),
            Self::Der => f.write_str("not valid DER of the expected kind"),
            Self::UnsupportedSize { bits } => {
                write!(f, "RSA key of {bits} bits; 2048, 3072 or 4096 required")
            }
            Self::Rejected => f.write_str("key rejected by the crypto backend"),
            Self::Generation => f.write_str("key generation failed"),
            Self::PasswordHash(e) => write!(f, "stored password hash: {e}"),
        }
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::CounterExhausted => f.write_str("counter exhausted; re-key required"),
            Self::TooManyContexts { max } => write!(f, "more than {max} contexts"),
        }
    }
}

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidConfig(what) => write!(f, "invalid configuration: {what}"),
            Self::InvalidLength { len, expected } => {
                write!(f, "length {len} is invalid: expected {expected}")
            }
            Self::WrongState(what) => write!(f, "not allowed now: {what}"),
            Self::IndexReuse { ssrc, index } => {
                write!(
                    f,
                    "SSRC {ssrc:#010x} already used index {index}: refusing to reuse it"
                )
            }
            Self::RetransmissionMismatch { ssrc, index } => write!(
                f,
                "SSRC {ssrc:#010x} index {index} was sent with other bytes: not a retransmission"
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Decode(e) => Some(e),
            Self::Auth(e) => Some(e),
            Self::Key(e) => Some(e),
            Self::Limit(e) => Some(e),
            Self::Usage(e) => Some(e),
            Self::Entropy(e) => Some(e),
        }
    }
}
impl std::error::Error for AuthError {}
impl std::error::Error for KeyError {}
impl std::error::Error for Limit {}
impl std::error::Error for UsageError {}

macro_rules! from {
    ($($t:ty => $v:ident),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self {
                Self::$v(e)
            }
        }
    )*};
}
from!(DecodeError => Decode, AuthError => Auth, KeyError => Key, Limit => Limit, UsageError => Usage, EntropyError => Entropy);

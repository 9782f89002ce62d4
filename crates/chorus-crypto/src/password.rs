//! Password hashing for the login server: PBKDF2-HMAC-SHA256 with a random salt per
//! user and a tunable iteration count, verified in constant time, stored as a string
//! that records its parameters so they can be raised later.
//!
//! - [`PasswordHasher`] holds the current policy ([`PasswordConfig`]): 600,000
//!   iterations (OWASP's 2023 figure for PBKDF2-HMAC-SHA256), a 16-byte salt and a
//!   32-byte hash by default. Salts come from an injected [`Entropy`].
//! - [`PasswordHash`] is one stored hash. Its text form follows the PHC string format:
//!
//!   ```text
//!   $pbkdf2-sha256$i=<iterations>$<salt>$<hash>
//!   ```
//!
//!   where `<iterations>` is decimal without leading zeros and `<salt>` and `<hash>`
//!   are base64 with the standard alphabet (RFC 4648 §4) and no padding, as PHC
//!   specifies. Base64 rather than hex keeps the string short; the codec is the few
//!   lines at the end of this file, written without secret-dependent branches or
//!   table lookups. The parser accepts exactly what [`PasswordHash::encode`] writes
//!   (so `encode(parse(s)) == s`), bounds every field (salt and hash at most 64
//!   bytes, iterations at most [`MAX_ITERATIONS`]) and never panics.
//! - [`PasswordHasher::verify`] recomputes the hash with the *stored* parameters and
//!   compares in constant time (`ring::pbkdf2::verify`). Success returns a
//!   [`Verified`] that says whether the stored parameters are below the current
//!   policy, so the login server can re-hash the password it now holds and store the
//!   stronger hash: that is how an iteration count is raised without a reset.
//!
//! Passwords are bytes: this module does no Unicode normalization, so a client must
//! send the same bytes every time (normalize to NFC before sending if passwords may
//! be typed on different systems). As in every PBKDF2-HMAC, HMAC's key handling
//! makes some distinct passwords equivalent: one with trailing NUL bytes appended
//! (keys are zero-padded to 64 bytes), and, for a password longer than 64 bytes, its
//! SHA-256 digest. Neither helps anyone who does not already know the password; a
//! login server that wants exact matching can reject passwords containing NUL.
//!
//! ```
//! use chorus_crypto::SystemEntropy;
//! use chorus_crypto::password::{PasswordConfig, PasswordHash, PasswordHasher};
//!
//! // Production uses `PasswordConfig::default()` (600,000 iterations); the low count
//! // only keeps this example fast.
//! let mut config = PasswordConfig::default();
//! config.iterations = 1_000;
//! let hasher = PasswordHasher::new(config)?;
//!
//! // Registration: store the string.
//! let stored: String = hasher.hash(b"correct horse", &mut SystemEntropy::new())?.encode();
//! assert!(stored.starts_with("$pbkdf2-sha256$i=1000$"));
//!
//! // Login: parse, verify, and upgrade the stored hash if the policy has moved on.
//! let stored = PasswordHash::parse(&stored)?;
//! assert!(hasher.verify(&stored, b"wrong horse").is_err());
//! let mut stronger = PasswordConfig::default();
//! stronger.iterations = 2_000;
//! let hasher = PasswordHasher::new(stronger)?;
//! let verified = hasher.verify(&stored, b"correct horse")?;
//! assert!(verified.needs_rehash());
//! let upgraded = hasher.hash(b"correct horse", &mut SystemEntropy::new())?;
//! assert_eq!(upgraded.iterations(), 2_000);
//! # Ok::<(), chorus_crypto::Error>(())
//! ```
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
use core::num::NonZeroU32;
use core::str::FromStr;

use chorus_framing::Entropy;
use ring::pbkdf2;
use zeroize::Zeroizing;

use crate::error::{AuthError, Error, KeyError, UsageError};
use crate::secret::{SecretVec, ct_eq};

/// The PHC algorithm identifier of the hashes this module writes and reads.
pub const ALGORITHM: &str = "pbkdf2-sha256";
/// Default [`PasswordConfig::iterations`] (OWASP Password Storage Cheat Sheet, 2023).
pub const DEFAULT_ITERATIONS: u32 = 600_000;
/// The largest iteration count configured or parsed: bounds the work one stored hash
/// can demand (about five seconds of one core).
pub const MAX_ITERATIONS: u32 = 10_000_000;
/// Default [`PasswordConfig::salt_len`] in bytes (128 bits, NIST SP 800-132's minimum).
pub const DEFAULT_SALT_LEN: usize = 16;
/// Shortest salt a [`PasswordConfig`] may ask for, in bytes.
pub const MIN_SALT_LEN: usize = 16;
/// Longest salt configured or parsed, in bytes.
pub const MAX_SALT_LEN: usize = 64;
/// Default [`PasswordConfig::hash_len`] in bytes: one SHA-256 output.
pub const DEFAULT_HASH_LEN: usize = 32;
/// Shortest hash configured or parsed, in bytes.
pub const MIN_HASH_LEN: usize = 16;
/// Longest hash a [`PasswordConfig`] may ask for, in bytes. Beyond one SHA-256 output
/// PBKDF2 runs the whole iteration count again per 32 bytes while an attacker still
/// tests a guess against the first 32 alone, so longer hashes only cost the server.
pub const MAX_CONFIG_HASH_LEN: usize = 32;
/// Longest hash parsed, in bytes (hashes written elsewhere, such as the RFC 7914
/// vectors, may be longer than this module writes).
pub const MAX_HASH_LEN: usize = 64;
/// Length of the longest string [`PasswordHash::parse`] accepts.
pub const MAX_ENCODED_LEN: usize = PREFIX.len()
    + ITERATIONS_PREFIX.len()
    + MAX_ITERATION_DIGITS
    + 1
    + b64_len(MAX_SALT_LEN)
    + 1
    + b64_len(MAX_HASH_LEN);

/// What every encoded hash starts with.
const PREFIX: &str = "$pbkdf2-sha256$";
/// The one parameter, before its value.
const ITERATIONS_PREFIX: &str = "i=";
/// Digits of [`MAX_ITERATIONS`].
const MAX_ITERATION_DIGITS: usize = 8;

/// The password policy for new hashes. Validated by [`PasswordHasher::new`].
///
/// ```
/// use chorus_crypto::password::{PasswordConfig, PasswordHasher};
///
/// let mut config = PasswordConfig::default();
/// config.iterations = 1_000_000;
/// let hasher = PasswordHasher::new(config)?;
/// assert_eq!(hasher.config().salt_len, 16);
/// # Ok::<(), chorus_crypto::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PasswordConfig {
    /// PBKDF2 iterations for new hashes. Default [`DEFAULT_ITERATIONS`] (600,000);
    /// allowed 1 to [`MAX_ITERATIONS`]. **Below 100,000 is unsafe for real
    /// passwords**: low counts exist for tests only. Raise it as hardware gets
    /// faster; stored hashes are upgraded as users log in ([`Verified::needs_rehash`]).
    pub iterations: u32,
    /// Salt length in bytes for new hashes. Default [`DEFAULT_SALT_LEN`] (16);
    /// allowed [`MIN_SALT_LEN`] to [`MAX_SALT_LEN`].
    pub salt_len: usize,
    /// Hash length in bytes for new hashes. Default [`DEFAULT_HASH_LEN`] (32);
    /// allowed [`MIN_HASH_LEN`] to [`MAX_CONFIG_HASH_LEN`].
    pub hash_len: usize,
}

impl Default for PasswordConfig {
    fn default() -> Self {
        Self {
            iterations: DEFAULT_ITERATIONS,
            salt_len: DEFAULT_SALT_LEN,
            hash_len: DEFAULT_HASH_LEN,
        }
    }
}

/// Hashes and verifies passwords under one [`PasswordConfig`].
///
/// Performs no I/O; salts come from the [`Entropy`] passed to [`hash`](Self::hash).
/// Each call costs `iterations` HMAC-SHA256 pairs (about a quarter of a second of
/// one core at the default), so a login server runs it off its event loop and
/// rate-limits attempts.
///
/// To avoid telling an attacker which user names exist, verify the password of a
/// login for an unknown user against a dummy hash made at startup
/// (`hasher.hash(b"", &mut rng)`), so that it takes as long as a real one, and
/// reject it.
#[derive(Debug, Clone)]
pub struct PasswordHasher {
    config: PasswordConfig,
    iterations: NonZeroU32,
}

impl PasswordHasher {
    /// A hasher for `config`.
    ///
    /// # Errors
    /// [`UsageError::InvalidConfig`] if a field is outside its documented bounds.
    pub fn new(config: PasswordConfig) -> Result<Self, Error> {
        let iterations = NonZeroU32::new(config.iterations)
            .filter(|i| i.get() <= MAX_ITERATIONS)
            .ok_or(UsageError::InvalidConfig(
                "password iterations must be 1 to 10,000,000",
            ))?;
        if !(MIN_SALT_LEN..=MAX_SALT_LEN).contains(&config.salt_len) {
            return Err(UsageError::InvalidConfig("password salt_len must be 16 to 64").into());
        }
        if !(MIN_HASH_LEN..=MAX_CONFIG_HASH_LEN).contains(&config.hash_len) {
            return Err(UsageError::InvalidConfig("password hash_len must be 16 to 32").into());
        }
        Ok(Self { config, iterations })
    }

    /// The policy this hasher applies.
    #[must_use]
    pub const fn config(&self) -> &PasswordConfig {
        &self.config
    }

    /// Hashes `password` under a fresh salt from `entropy`, with the configured
    /// parameters. Pass a secure source ([`crate::SystemEntropy`]) in production.
    ///
    /// # Errors
    /// [`Error::Entropy`] if `entropy` fails.
    pub fn hash(&self, password: &[u8], entropy: &mut dyn Entropy) -> Result<PasswordHash, Error> {
        let mut salt = Zeroizing::new(vec![0u8; self.config.salt_len]);
        entropy.fill(&mut salt)?;
        let mut hash = Zeroizing::new(vec![0u8; self.config.hash_len]);
        pbkdf2::derive(
            pbkdf2::PBKDF2_HMAC_SHA256,
            self.iterations,
            &salt,
            password,
            &mut hash,
        );
        Ok(PasswordHash {
            iterations: self.iterations,
            salt: into_secret(salt),
            hash: into_secret(hash),
        })
    }

    /// Checks `password` against `stored`, in time that depends only on the stored
    /// parameters, never on how much of the password was right.
    ///
    /// On success the returned [`Verified`] says whether `stored` is weaker than this
    /// hasher's policy; if so, hash `password` again and replace the stored string.
    ///
    /// # Errors
    /// [`AuthError::WrongPassword`] if `password` does not match.
    pub fn verify(&self, stored: &PasswordHash, password: &[u8]) -> Result<Verified, Error> {
        pbkdf2::verify(
            pbkdf2::PBKDF2_HMAC_SHA256,
            stored.iterations,
            stored.salt.expose(),
            password,
            stored.hash.expose(),
        )
        .map_err(|_| AuthError::WrongPassword)?;
        Ok(Verified {
            needs_rehash: self.needs_rehash(stored),
        })
    }

    /// Whether `stored` was made with fewer iterations, a shorter salt or a shorter
    /// hash than this hasher's policy. Parameters above the policy never need a
    /// re-hash (lowering the policy does not downgrade stored hashes).
    #[must_use]
    pub fn needs_rehash(&self, stored: &PasswordHash) -> bool {
        stored.iterations < self.iterations
            || stored.salt.expose().len() < self.config.salt_len
            || stored.hash.expose().len() < self.config.hash_len
    }
}

/// Proof that a password matched its stored hash; only [`PasswordHasher::verify`]
/// makes one.
#[must_use = "check needs_rehash() to keep stored hashes up to the current policy"]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    needs_rehash: bool,
}

impl Verified {
    /// Whether the stored hash is below the current policy and should be replaced by
    /// a new hash of the password just verified.
    #[must_use]
    pub const fn needs_rehash(&self) -> bool {
        self.needs_rehash
    }
}

/// One stored password hash: its parameters, salt and PBKDF2 output.
///
/// The salt and hash are zeroized on drop and never shown by `Debug`; equality is
/// constant-time. [`encode`](Self::encode) gives the string to store and
/// [`parse`](Self::parse) (or `str::parse`) reads it back.
#[derive(Clone)]
pub struct PasswordHash {
    iterations: NonZeroU32,
    salt: SecretVec,
    hash: SecretVec,
}

impl PasswordHash {
    /// Parses the text form described in the [module documentation](self).
    ///
    /// # Errors
    /// [`KeyError::PasswordHash`] naming what is wrong: the string is too long, names
    /// another algorithm, has the wrong fields or parameters, invalid or non-canonical
    /// base64, or a salt, hash or iteration count outside the bounds.
    pub fn parse(s: &str) -> Result<Self, Error> {
        parse(s).map_err(|e| KeyError::PasswordHash(e).into())
    }

    /// The text form to store: `$pbkdf2-sha256$i=<iterations>$<salt>$<hash>`, exactly
    /// [`encoded_len`](Self::encoded_len) bytes. The string is not zeroized: it is
    /// meant for the user database.
    #[must_use]
    pub fn encode(&self) -> String {
        let mut s = String::with_capacity(self.encoded_len());
        s.push_str(PREFIX);
        s.push_str(ITERATIONS_PREFIX);
        s.push_str(&self.iterations.to_string());
        s.push('$');
        b64_encode(self.salt.expose(), &mut s);
        s.push('$');
        b64_encode(self.hash.expose(), &mut s);
        s
    }

    /// The length of [`encode`](Self::encode)'s output.
    #[must_use]
    pub fn encoded_len(&self) -> usize {
        let digits = self.iterations.ilog10() as usize + 1;
        PREFIX.len()
            + ITERATIONS_PREFIX.len()
            + digits
            + 1
            + b64_len(self.salt.expose().len())
            + 1
            + b64_len(self.hash.expose().len())
    }

    /// The PBKDF2 iteration count the hash was made with.
    #[must_use]
    pub const fn iterations(&self) -> u32 {
        self.iterations.get()
    }

    /// The salt's length in bytes.
    #[must_use]
    pub fn salt_len(&self) -> usize {
        self.salt.expose().len()
    }

    /// The hash's length in bytes.
    #[must_use]
    pub fn hash_len(&self) -> usize {
        self.hash.expose().len()
    }
}

impl FromStr for PasswordHash {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Self::parse(s)
    }
}

impl PartialEq for PasswordHash {
    fn eq(&self, other: &Self) -> bool {
        // Lengths and iterations are not secret; the bytes are compared in constant time.
        let salt = ct_eq(self.salt.expose(), other.salt.expose());
        let hash = ct_eq(self.hash.expose(), other.hash.expose());
        (self.iterations == other.iterations) & salt & hash
    }
}

impl Eq for PasswordHash {}

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PasswordHash")
            .field("algorithm", &ALGORITHM)
            .field("iterations", &self.iterations)
            .field("salt_len", &self.salt_len())
            .field("hash_len", &self.hash_len())
            .finish_non_exhaustive()
    }
}

/// Why a stored password hash string does not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HashFormatError {
    /// The string is longer than any valid hash ([`MAX_ENCODED_LEN`]).
    TooLong {
        /// The string's length.
        len: usize,
    },
    /// The string does not start with `$pbkdf2-sha256$`: another algorithm or not a
    /// PHC string at all.
    UnknownAlgorithm,
    /// Not exactly three `$`-separated fields (parameters, salt, hash) after the
    /// algorithm.
    WrongFieldCount,
    /// The parameters are not exactly `i=<decimal>`, without sign or leading zeros.
    BadParameters,
    /// An iteration count of 0 or above [`MAX_ITERATIONS`].
    IterationsOutOfRange,
    /// The salt or hash is not canonical unpadded standard base64.
    BadBase64,
    /// A salt of 0 or more than [`MAX_SALT_LEN`] bytes.
    SaltLength {
        /// The encoded salt's length in characters.
        chars: usize,
    },
    /// A hash of fewer than [`MIN_HASH_LEN`] or more than [`MAX_HASH_LEN`] bytes.
    HashLength {
        /// The encoded hash's length in characters.
        chars: usize,
    },
}

impl fmt::Display for HashFormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::TooLong { len } => {
                write!(
                    f,
                    "{len} characters, more than the maximum {MAX_ENCODED_LEN}"
                )
            }
            Self::UnknownAlgorithm => f.write_str("not a $pbkdf2-sha256$ hash"),
            Self::WrongFieldCount => f.write_str("expected $i=<n>$<salt>$<hash>"),
            Self::BadParameters => f.write_str("parameters are not i=<decimal>"),
            Self::IterationsOutOfRange => {
                write!(f, "iterations outside 1 to {MAX_ITERATIONS}")
            }
            Self::BadBase64 => f.write_str("salt or hash is not canonical unpadded base64"),
            Self::SaltLength { chars } => write!(
                f,
                "salt of {chars} base64 characters; 1 to {MAX_SALT_LEN} bytes allowed"
            ),
            Self::HashLength { chars } => write!(
                f,
                "hash of {chars} base64 characters; {MIN_HASH_LEN} to {MAX_HASH_LEN} bytes allowed"
            ),
        }
    }
}

impl std::error::Error for HashFormatError {}

fn parse(s: &str) -> Result<PasswordHash, HashFormatError> {
    if s.len() > MAX_ENCODED_LEN {
        return Err(HashFormatError::TooLong { len: s.len() });
    }
    let rest = s
        .strip_prefix(PREFIX)
        .ok_or(HashFormatError::UnknownAlgorithm)?;
    let mut fields = rest.split('$');
    let (Some(params), Some(salt), Some(hash), None) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return Err(HashFormatError::WrongFieldCount);
    };
    let iterations = parse_iterations(params)?;
    // Lengths are checked on the text, before anything is allocated.
    if salt.is_empty() || salt.len() > b64_len(MAX_SALT_LEN) {
        return Err(HashFormatError::SaltLength { chars: salt.len() });
    }
    if hash.len() < b64_len(MIN_HASH_LEN) || hash.len() > b64_len(MAX_HASH_LEN) {
        return Err(HashFormatError::HashLength { chars: hash.len() });
    }
    Ok(PasswordHash {
        iterations,
        salt: b64_decode(salt)?,
        hash: b64_decode(hash)?,
    })
}

/// `i=<n>`: decimal digits only, no leading zero, 1 to [`MAX_ITERATIONS`].
fn parse_iterations(params: &str) -> Result<NonZeroU32, HashFormatError> {
    let digits = params
        .strip_prefix(ITERATIONS_PREFIX)
        .ok_or(HashFormatError::BadParameters)?;
    if digits.is_empty()
        || digits.len() > MAX_ITERATION_DIGITS
        || digits.starts_with('0')
        || !digits.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(HashFormatError::BadParameters);
    }
    // At most 8 digits, so this cannot overflow a u32.
    let value = digits
        .bytes()
        .fold(0u32, |n, d| n * 10 + u32::from(d - b'0'));
    NonZeroU32::new(value)
        .filter(|i| i.get() <= MAX_ITERATIONS)
        .ok_or(HashFormatError::IterationsOutOfRange)
}

/// Moves a zeroizing buffer into a [`SecretVec`] without copying its bytes.
fn into_secret(mut bytes: Zeroizing<Vec<u8>>) -> SecretVec {
    SecretVec::new(core::mem::take(&mut *bytes))
}

/// Length of the unpadded base64 encoding of `n` bytes.
const fn b64_len(n: usize) -> usize {
    (n * 4).div_ceil(3)
}

/// Appends the unpadded standard base64 encoding of `bytes` to `out`.
fn b64_encode(bytes: &[u8], out: &mut String) {
    for chunk in bytes.chunks(3) {
        let mut group = [0u8; 3];
        for (g, b) in group.iter_mut().zip(chunk) {
            *g = *b;
        }
        let [b0, b1, b2] = group;
        let n = u32::from_be_bytes([0, b0, b1, b2]);
        // One input byte gives 2 characters, two give 3, three give 4.
        for i in 0..=chunk.len() {
            let sextet = (n >> (18 - 6 * i)) & 0x3f;
            out.push(char::from(encode_sextet(sextet as u8)));
        }
    }
}

/// Decodes canonical unpadded standard base64: no padding, no whitespace, and the
/// unused low bits of a final partial group zero (so each byte string has exactly one
/// accepted encoding). The caller has bounded `text`'s length.
fn b64_decode(text: &str) -> Result<SecretVec, HashFormatError> {
    let mut out = Zeroizing::new(Vec::with_capacity(text.len() * 3 / 4));
    // Negative once any character is invalid or a final group is non-canonical.
    let mut invalid: i16 = 0;
    for chunk in text.as_bytes().chunks(4) {
        let mut n: u32 = 0;
        for &c in chunk {
            let v = decode_sextet(c);
            invalid |= v;
            n = (n << 6) | (v as u32 & 0x3f);
        }
        let [_, b0, b1, b2] = n.to_be_bytes();
        match chunk.len() {
            4 => out.extend_from_slice(&[b0, b1, b2]),
            // 18 bits: two bytes and 2 unused bits.
            3 => {
                let [_, _, hi, lo] = (n >> 2).to_be_bytes();
                invalid |= -i16::from(n & 0x3 != 0);
                out.extend_from_slice(&[hi, lo]);
            }
            // 12 bits: one byte and 4 unused bits.
            2 => {
                let [_, _, _, b] = (n >> 4).to_be_bytes();
                invalid |= -i16::from(n & 0xf != 0);
                out.push(b);
            }
            // A single character carries 6 bits, less than a byte.
            _ => invalid = -1,
        }
    }
    if invalid < 0 {
        return Err(HashFormatError::BadBase64);
    }
    Ok(into_secret(out))
}

/// The base64 character for a 6-bit value, computed without branches or table
/// lookups that depend on it (the technique of libsodium and the `base64ct` crate).
const fn encode_sextet(v: u8) -> u8 {
    let v = v as i16;
    let mut diff = b'A' as i16;
    diff += ((25 - v) >> 8) & 6; // 26..: 'a' - 26
    diff -= ((51 - v) >> 8) & 75; // 52..: '0' - 52
    diff -= ((61 - v) >> 8) & 15; // 62: '+' - 62
    diff += ((62 - v) >> 8) & 3; // 63: '/' - 63
    (v + diff) as u8
}

/// The 6-bit value of a base64 character, or -1 if it is not one; without branches
/// on the character. Each line adds `value + 1` when `c` is in its range.
const fn decode_sextet(c: u8) -> i16 {
    let c = c as i16;
    let mut v: i16 = -1;
    v += (((b'A' as i16 - 1 - c) & (c - (b'Z' as i16 + 1))) >> 8) & (c - 64); // A-Z: 0..
    v += (((b'a' as i16 - 1 - c) & (c - (b'z' as i16 + 1))) >> 8) & (c - 70); // a-z: 26..
    v += (((b'0' as i16 - 1 - c) & (c - (b'9' as i16 + 1))) >> 8) & (c + 5); // 0-9: 52..
    v += (((b'+' as i16 - 1 - c) & (c - (b'+' as i16 + 1))) >> 8) & 63; // +: 62
    v += (((b'/' as i16 - 1 - c) & (c - (b'/' as i16 + 1))) >> 8) & 64; // /: 63
    v
}

/// Fuzz entry point with a round-trip oracle (STYLE.md §10): parses `data` as a
/// stored hash and checks that whatever parses re-encodes to exactly the same string
/// and parses back to an equal value.
///
/// # Panics
/// When an oracle finds a bug.
#[cfg(any(test, feature = "_fuzz"))]
#[doc(hidden)]
#[allow(clippy::expect_used)]
pub fn fuzz_parse_hash(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    match PasswordHash::parse(&text) {
        Ok(hash) => {
            let encoded = hash.encode();
            assert_eq!(encoded, text, "parse accepted a non-canonical string");
            assert_eq!(encoded.len(), hash.encoded_len());
            let again = PasswordHash::parse(&encoded).expect("an encoding parses");
            assert!(again == hash, "round trip changed {hash:?}");
        }
        Err(e) => assert!(
            matches!(e, Error::Key(KeyError::PasswordHash(_))),
            "unexpected error {e:?}"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chorus_framing::SeededEntropy;
    use proptest::collection::vec;
    use proptest::prelude::*;

    /// A plain table-driven base64 encoder to check the constant-time one against.
    fn reference_b64(bytes: &[u8]) -> String {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut s = String::new();
        for chunk in bytes.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..=chunk.len() {
                s.push(ALPHABET[((n >> (18 - 6 * i)) & 0x3f) as usize] as char);
            }
        }
        s
    }

    fn hasher(iterations: u32) -> PasswordHasher {
        PasswordHasher::new(PasswordConfig {
            iterations,
            ..PasswordConfig::default()
        })
        .unwrap()
    }

    fn parse_err(s: &str) -> HashFormatError {
        match PasswordHash::parse(s) {
            Err(Error::Key(KeyError::PasswordHash(e))) => e,
            other => panic!("{s:?} gave {other:?}"),
        }
    }

    /// A valid salt (16 bytes) and hash (32 bytes) in base64.
    const SALT: &str = "AAECAwQFBgcICQoLDA0ODw";
    const HASH: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8";

    #[test]
    fn sextet_codec_matches_the_alphabet_for_every_byte() {
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        for (v, &c) in alphabet.iter().enumerate() {
            assert_eq!(encode_sextet(v as u8), c, "{v}");
        }
        for c in 0..=255u8 {
            let expected = alphabet
                .iter()
                .position(|&a| a == c)
                .map_or(-1, |p| p as i16);
            assert_eq!(decode_sextet(c), expected, "{c:#04x}");
        }
    }

    #[test]
    fn base64_matches_rfc_4648_test_vectors_without_padding() {
        // RFC 4648 §10, padding removed as PHC requires.
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg"),
            ("fo", "Zm8"),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg"),
            ("fooba", "Zm9vYmE"),
            ("foobar", "Zm9vYmFy"),
        ] {
            let mut s = String::new();
            b64_encode(plain.as_bytes(), &mut s);
            assert_eq!(s, encoded);
            assert_eq!(b64_decode(encoded).unwrap().expose(), plain.as_bytes());
        }
    }

    #[test]
    fn base64_rejects_padding_stray_characters_and_non_canonical_tails() {
        for bad in ["Zg==", "Zm9v Yg", "Zm9-", "Z", "Zm9vY", "Zh", "Zm9", "Zm-v"] {
            assert_eq!(
                b64_decode(bad).map(|_| ()),
                Err(HashFormatError::BadBase64),
                "{bad}"
            );
        }
        // "Zh" and "Zm9" set unused low bits; their canonical forms are "Zg" and "Zm8".
        assert!(b64_decode("Zg").is_ok() && b64_decode("Zm8").is_ok());
    }

    #[test]
    fn parses_and_reencodes_a_well_formed_hash() {
        let s = format!("$pbkdf2-sha256$i=600000${SALT}${HASH}");
        let h = PasswordHash::parse(&s).unwrap();
        assert_eq!(
            (h.iterations(), h.salt_len(), h.hash_len()),
            (600_000, 16, 32)
        );
        assert_eq!(h.salt.expose(), &(0..16).collect::<Vec<u8>>()[..]);
        assert_eq!(h.encode(), s);
        assert_eq!(h.encoded_len(), s.len());
        assert_eq!(s.parse::<PasswordHash>().unwrap(), h);
    }

    #[test]
    fn malformed_strings_are_rejected_with_the_reason() {
        use HashFormatError as E;
        let cases: &[(String, E)] = &[
            (String::new(), E::UnknownAlgorithm),
            (
                format!("$pbkdf2-sha512$i=1${SALT}${HASH}"),
                E::UnknownAlgorithm,
            ),
            (format!("$argon2id$i=1${SALT}${HASH}"), E::UnknownAlgorithm),
            (
                format!("pbkdf2-sha256$i=1${SALT}${HASH}"),
                E::UnknownAlgorithm,
            ),
            (format!("$pbkdf2-sha256$i=1${SALT}"), E::WrongFieldCount),
            (
                format!("$pbkdf2-sha256$i=1${SALT}${HASH}$"),
                E::WrongFieldCount,
            ),
            (
                format!("$pbkdf2-sha256$i=1${SALT}${HASH}$x"),
                E::WrongFieldCount,
            ),
            (format!("$pbkdf2-sha256$${SALT}${HASH}"), E::BadParameters),
            (format!("$pbkdf2-sha256$i=${SALT}${HASH}"), E::BadParameters),
            (
                format!("$pbkdf2-sha256$i=01${SALT}${HASH}"),
                E::BadParameters,
            ),
            (
                format!("$pbkdf2-sha256$i=+1${SALT}${HASH}"),
                E::BadParameters,
            ),
            (
                format!("$pbkdf2-sha256$i=1,l=32${SALT}${HASH}"),
                E::BadParameters,
            ),
            (
                format!("$pbkdf2-sha256$rounds=1${SALT}${HASH}"),
                E::BadParameters,
            ),
            (
                format!("$pbkdf2-sha256$i=123456789${SALT}${HASH}"),
                E::BadParameters,
            ),
            (
                format!("$pbkdf2-sha256$i=0${SALT}${HASH}"),
                E::BadParameters,
            ),
            (
                format!("$pbkdf2-sha256$i=10000001${SALT}${HASH}"),
                E::IterationsOutOfRange,
            ),
            (
                format!("$pbkdf2-sha256$i=1$${HASH}"),
                E::SaltLength { chars: 0 },
            ),
            (
                format!("$pbkdf2-sha256$i=1${}${HASH}", "A".repeat(87)),
                E::SaltLength { chars: 87 },
            ),
            (
                format!("$pbkdf2-sha256$i=1${SALT}${}", "A".repeat(21)),
                E::HashLength { chars: 21 },
            ),
            (
                format!("$pbkdf2-sha256$i=1${SALT}${}", "A".repeat(87)),
                E::HashLength { chars: 87 },
            ),
            (format!("$pbkdf2-sha256$i=1${SALT}=${HASH}"), E::BadBase64),
            (format!("$pbkdf2-sha256$i=1${SALT}${HASH}é"), E::BadBase64),
            (
                format!("$pbkdf2-sha256$i=1${}", "A".repeat(MAX_ENCODED_LEN)),
                E::TooLong {
                    len: MAX_ENCODED_LEN + 19,
                },
            ),
        ];
        for (s, expected) in cases {
            assert_eq!(parse_err(s), *expected, "{s:?}");
        }
    }

    #[test]
    fn the_longest_valid_hash_is_exactly_max_encoded_len() {
        let s = format!(
            "$pbkdf2-sha256$i={MAX_ITERATIONS}${}${}",
            "A".repeat(b64_len(MAX_SALT_LEN)),
            "A".repeat(b64_len(MAX_HASH_LEN))
        );
        assert_eq!(s.len(), MAX_ENCODED_LEN);
        assert_eq!(PasswordHash::parse(&s).unwrap().encode(), s);
    }

    #[test]
    fn configs_outside_the_bounds_are_rejected() {
        let variants: [fn(&mut PasswordConfig); 6] = [
            |c| c.iterations = 0,
            |c| c.iterations = MAX_ITERATIONS + 1,
            |c| c.salt_len = MIN_SALT_LEN - 1,
            |c| c.salt_len = MAX_SALT_LEN + 1,
            |c| c.hash_len = MIN_HASH_LEN - 1,
            |c| c.hash_len = MAX_CONFIG_HASH_LEN + 1,
        ];
        for tweak in variants {
            let mut c = PasswordConfig::default();
            tweak(&mut c);
            assert!(
                matches!(
                    PasswordHasher::new(c.clone()),
                    Err(Error::Usage(UsageError::InvalidConfig(_)))
                ),
                "{c:?}"
            );
        }
        assert!(PasswordHasher::new(PasswordConfig::default()).is_ok());
    }

    #[test]
    fn debug_shows_parameters_but_never_salt_or_hash() {
        let h = hasher(1).hash(b"pw", &mut SeededEntropy::new(1)).unwrap();
        let shown = format!("{h:?}");
        assert_eq!(
            shown,
            "PasswordHash { algorithm: \"pbkdf2-sha256\", iterations: 1, salt_len: 16, hash_len: 32, .. }"
        );
    }

    proptest! {
        #[test]
        fn fuzz_parse_hash_holds_for_arbitrary_bytes(data in vec(any::<u8>(), 0..256)) {
            fuzz_parse_hash(&data);
        }

        #[test]
        fn fuzz_parse_hash_holds_for_near_valid_strings(
            iterations in 0u32..20_000_000,
            salt in vec(any::<u8>(), 0..70),
            hash in vec(any::<u8>(), 0..70),
            cut in 0usize..256,
        ) {
            let s = format!(
                "$pbkdf2-sha256$i={iterations}${}${}",
                reference_b64(&salt),
                reference_b64(&hash)
            );
            fuzz_parse_hash(s.as_bytes());
            fuzz_parse_hash(&s.as_bytes()[..cut.min(s.len())]);
        }

        #[test]
        fn base64_round_trips_and_matches_the_reference(bytes in vec(any::<u8>(), 0..100)) {
            let mut s = String::new();
            b64_encode(&bytes, &mut s);
            prop_assert_eq!(&s, &reference_b64(&bytes));
            let decoded = b64_decode(&s).unwrap();
            prop_assert_eq!(decoded.expose(), &bytes[..]);
        }

        #[test]
        fn hashes_verify_their_password_only(
            password in vec(any::<u8>(), 0..64),
            other in vec(any::<u8>(), 0..64),
            seed in any::<u64>(),
        ) {
            let hasher = hasher(2);
            let h = hasher.hash(&password, &mut SeededEntropy::new(seed)).unwrap();
            prop_assert!(!hasher.verify(&h, &password).unwrap().needs_rehash());
            let result = hasher.verify(&h, &other);
            if other == password {
                prop_assert!(result.is_ok());
            } else {
                prop_assert_eq!(result.err(), Some(Error::Auth(AuthError::WrongPassword)));
            }
        }
    }
}

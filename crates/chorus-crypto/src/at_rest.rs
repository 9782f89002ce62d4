//! Encryption at rest under a password: AES-256-GCM with a key derived by
//! PBKDF2-HMAC-SHA256, for files such as a client's `config.xml` (which Skype stored
//! in clear).
//!
//! [`seal_with_password`] returns one self-describing blob; [`open_with_password`]
//! reverses it. Everything the reader needs except the password is in the header,
//! which is authenticated as associated data:
//!
//! ```text
//! offset size  field
//!      0    8  magic "CHORUSAR"
//!      8    1  version = 1
//!      9    1  salt length S (16..=64)
//!     10    2  reserved, zero
//!     12    4  PBKDF2 iterations, big-endian (1..=10,000,000)
//!     16    S  salt
//!   16+S   12  AES-GCM nonce
//!   28+S   16  key check value
//!   44+S    n  ciphertext, then the 16-byte GCM tag
//! ```
//!
//! The password and salt give a 32-byte master key `M = PBKDF2-HMAC-SHA256(password,
//! salt, iterations)`; the AES key is `HMAC-SHA256(M, "chorus at-rest key v1")` and the
//! key check value the first 16 bytes of `HMAC-SHA256(M, "chorus at-rest check v1")`.
//! The check value lets [`open_with_password`] tell a wrong password
//! ([`AuthError::WrongPassword`]) from an altered file ([`AuthError::BadTag`]); it gives
//! an attacker nothing the GCM tag does not already give (both let a guess be tested
//! offline at the cost of the PBKDF2 iterations). Every file gets a fresh salt and
//! nonce from the injected [`Entropy`], so a key is never used twice.
//!
//! ```
//! use chorus_crypto::at_rest::{open_with_password, seal_with_password, AtRestConfig};
//! use chorus_crypto::{AuthError, Error, SystemEntropy};
//!
//! // Production keeps the default 600,000 iterations; 1,000 keeps the example fast.
//! let mut config = AtRestConfig::default();
//! config.iterations = 1_000;
//! let sealed = seal_with_password(b"<config/>", b"hunter2", &config, &mut SystemEntropy::new())?;
//! assert_eq!(&open_with_password(&sealed, b"hunter2")?[..], b"<config/>");
//! assert_eq!(
//!     open_with_password(&sealed, b"hunter3").unwrap_err(),
//!     Error::Auth(AuthError::WrongPassword)
//! );
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

use core::num::NonZeroU32;

use chorus_framing::{Entropy, Reader};
use ring::{aead, hmac, pbkdf2};
use zeroize::Zeroizing;

use crate::error::{AuthError, DecodeError, Error, UsageError};
use crate::password::{DEFAULT_ITERATIONS, MAX_ITERATIONS, MAX_SALT_LEN, MIN_SALT_LEN};
use crate::secret::ct_eq;

/// The first eight bytes of every sealed blob.
pub const MAGIC: [u8; 8] = *b"CHORUSAR";
/// The format version this module writes and reads.
pub const VERSION: u8 = 1;
/// Length of the AES-GCM nonce.
pub const NONCE_LEN: usize = 12;
/// Length of the key check value.
pub const CHECK_LEN: usize = 16;
/// Length of the GCM tag.
pub const TAG_LEN: usize = 16;
/// Fixed part of the header (magic, version, salt length, reserved, iterations).
const FIXED_LEN: usize = 16;

/// Parameters for [`seal_with_password`]. Validated on every call.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AtRestConfig {
    /// PBKDF2 iterations. Default 600,000 (as [`crate::PasswordConfig`]); allowed 1 to
    /// 10,000,000. **Below 100,000 is unsafe for real passwords.**
    pub iterations: u32,
    /// Salt length in bytes. Default 16; allowed 16 to 64.
    pub salt_len: usize,
}

impl Default for AtRestConfig {
    fn default() -> Self {
        Self {
            iterations: DEFAULT_ITERATIONS,
            salt_len: 16,
        }
    }
}

/// The parsed header of a sealed blob: what opening it will cost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// PBKDF2 iterations the password must go through.
    pub iterations: u32,
    /// The salt.
    pub salt: Vec<u8>,
    /// The AES-GCM nonce.
    pub nonce: [u8; NONCE_LEN],
    /// The key check value.
    pub check: [u8; CHECK_LEN],
    /// Length of the header in bytes (where the ciphertext starts).
    pub len: usize,
}

impl Header {
    /// Parses the header at the front of `sealed`.
    ///
    /// # Errors
    /// [`DecodeError::NotChorus`] if the magic is wrong (not a sealed blob);
    /// [`DecodeError::UnknownVersion`], [`DecodeError::ReservedNotZero`],
    /// [`DecodeError::TooLong`] for a salt length or iteration count out of bounds, and
    /// [`DecodeError::Truncated`] if the blob ends before its tag.
    pub fn decode(sealed: &[u8]) -> Result<Self, Error> {
        let mut r = Reader::new(sealed);
        let magic = r.array::<8>()?;
        if magic != MAGIC {
            return Err(DecodeError::NotChorus.into());
        }
        let version = r.u8()?;
        if version != VERSION {
            return Err(DecodeError::UnknownVersion(version).into());
        }
        let salt_len = usize::from(r.u8()?);
        if r.u16()? != 0 {
            return Err(DecodeError::ReservedNotZero.into());
        }
        let iterations = r.u32()?;
        if !(MIN_SALT_LEN..=MAX_SALT_LEN).contains(&salt_len) {
            return Err(DecodeError::TooLong {
                len: salt_len,
                max: MAX_SALT_LEN,
            }
            .into());
        }
        if iterations == 0 || iterations > MAX_ITERATIONS {
            return Err(DecodeError::TooLong {
                len: iterations as usize,
                max: MAX_ITERATIONS as usize,
            }
            .into());
        }
        let salt = r.take(salt_len)?.to_vec();
        let nonce = r.array::<NONCE_LEN>()?;
        let check = r.array::<CHECK_LEN>()?;
        let len = FIXED_LEN + salt_len + NONCE_LEN + CHECK_LEN;
        // The tag must be present too.
        r.take(TAG_LEN)?;
        Ok(Self {
            iterations,
            salt,
            nonce,
            check,
            len,
        })
    }
}

/// Whether `bytes` start with [`MAGIC`] (they may still be damaged).
#[must_use]
pub fn is_sealed(bytes: &[u8]) -> bool {
    bytes.starts_with(&MAGIC)
}

/// Encrypts `plaintext` under `password` and returns the sealed blob (header,
/// ciphertext, tag): `plaintext.len() + 60 + salt_len` bytes.
///
/// # Errors
/// [`UsageError::InvalidConfig`] if `config` is out of bounds; [`Error::Entropy`] if
/// `entropy` fails.
pub fn seal_with_password(
    plaintext: &[u8],
    password: &[u8],
    config: &AtRestConfig,
    entropy: &mut dyn Entropy,
) -> Result<Vec<u8>, Error> {
    let iterations = NonZeroU32::new(config.iterations)
        .filter(|i| i.get() <= MAX_ITERATIONS)
        .ok_or(UsageError::InvalidConfig(
            "at-rest iterations must be 1 to 10,000,000",
        ))?;
    let salt_len = u8::try_from(config.salt_len)
        .ok()
        .filter(|l| (MIN_SALT_LEN..=MAX_SALT_LEN).contains(&usize::from(*l)))
        .ok_or(UsageError::InvalidConfig(
            "at-rest salt_len must be 16 to 64",
        ))?;
    let mut salt = vec![0u8; usize::from(salt_len)];
    entropy.fill(&mut salt)?;
    let mut nonce = [0u8; NONCE_LEN];
    entropy.fill(&mut nonce)?;
    let (key, check) = derive(password, &salt, iterations);

    let mut out = Vec::with_capacity(FIXED_LEN + salt.len() + 28 + plaintext.len() + TAG_LEN);
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(salt_len);
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&iterations.get().to_be_bytes());
    out.extend_from_slice(&salt);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&check);
    let header_len = out.len();
    out.extend_from_slice(plaintext);
    let (header, body) = out.split_at_mut(header_len);
    let tag = key
        .seal_in_place_separate_tag(
            aead::Nonce::assume_unique_for_key(nonce),
            aead::Aad::from(&*header),
            body,
        )
        .map_err(|_| UsageError::InvalidLength {
            len: plaintext.len(),
            expected: "at most 64 GiB for AES-GCM",
        })?;
    out.extend_from_slice(tag.as_ref());
    Ok(out)
}

/// Decrypts a blob made by [`seal_with_password`]. The plaintext is zeroized when the
/// returned buffer is dropped.
///
/// Costs the header's PBKDF2 iterations (at most 10,000,000, about five seconds of
/// one core): parse [`Header::decode`] first to refuse a higher cost than expected.
///
/// # Errors
/// As [`Header::decode`] for a damaged header; [`AuthError::WrongPassword`] if the key
/// check value does not match `password` (or the salt or iteration count was altered);
/// [`AuthError::BadTag`] if the password is right but the ciphertext, nonce or header
/// was altered.
pub fn open_with_password(sealed: &[u8], password: &[u8]) -> Result<Zeroizing<Vec<u8>>, Error> {
    let header = Header::decode(sealed)?;
    let iterations = NonZeroU32::new(header.iterations).ok_or(DecodeError::TooLong {
        len: 0,
        max: MAX_ITERATIONS as usize,
    })?;
    let (key, check) = derive(password, &header.salt, iterations);
    if !ct_eq(&check, &header.check) {
        return Err(AuthError::WrongPassword.into());
    }
    let (aad, body) = sealed
        .split_at_checked(header.len)
        .ok_or(DecodeError::Truncated {
            offset: sealed.len(),
            needed: header.len,
        })?;
    let mut buf = Zeroizing::new(body.to_vec());
    let len = key
        .open_in_place(
            aead::Nonce::assume_unique_for_key(header.nonce),
            aead::Aad::from(aad),
            &mut buf,
        )
        .map_err(|_| AuthError::BadTag)?
        .len();
    buf.truncate(len);
    Ok(buf)
}

/// The AES key and the key check value for `password`.
fn derive(
    password: &[u8],
    salt: &[u8],
    iterations: NonZeroU32,
) -> (aead::LessSafeKey, [u8; CHECK_LEN]) {
    let mut master = Zeroizing::new([0u8; 32]);
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA256,
        iterations,
        salt,
        password,
        &mut *master,
    );
    let mac = hmac::Key::new(hmac::HMAC_SHA256, &*master);
    let mut key_bytes = Zeroizing::new([0u8; 32]);
    for (k, t) in key_bytes
        .iter_mut()
        .zip(hmac::sign(&mac, b"chorus at-rest key v1").as_ref())
    {
        *k = *t;
    }
    let check_tag = hmac::sign(&mac, b"chorus at-rest check v1");
    let mut check = [0u8; CHECK_LEN];
    for (c, t) in check.iter_mut().zip(check_tag.as_ref()) {
        *c = *t;
    }
    let key = aead::UnboundKey::new(&aead::AES_256_GCM, &*key_bytes).map(aead::LessSafeKey::new);
    // AES-256-GCM accepts every 32-byte key; HMAC-SHA256 output is always 32 bytes.
    #[allow(clippy::expect_used)]
    let key = key.expect("a 32-byte key is valid for AES-256-GCM");
    (key, check)
}

/// Fuzz entry point: opening arbitrary bytes never panics, and a blob that opens
/// re-seals and opens to the same plaintext.
#[cfg(any(test, feature = "_fuzz"))]
#[doc(hidden)]
pub fn fuzz_open(data: &[u8]) {
    // Bound the PBKDF2 cost so that a fuzzer explores parsing, not SHA-256.
    if let Ok(header) = Header::decode(data)
        && header.iterations <= 16
        && let Ok(plain) = open_with_password(data, b"fuzz")
    {
        let config = AtRestConfig {
            iterations: header.iterations,
            salt_len: header.salt.len(),
        };
        let mut rng = chorus_framing::SeededEntropy::new(1);
        #[allow(clippy::unwrap_used)]
        let again = seal_with_password(&plain, b"fuzz", &config, &mut rng).unwrap();
        #[allow(clippy::unwrap_used)]
        let back = open_with_password(&again, b"fuzz").unwrap();
        assert_eq!(&back[..], &plain[..]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn fuzz_open_never_panics(data in proptest::collection::vec(any::<u8>(), 0..256)) {
            fuzz_open(&data);
        }

        #[test]
        fn fuzz_open_round_trips_low_cost_blobs(plain in proptest::collection::vec(any::<u8>(), 0..64)) {
            let config = AtRestConfig { iterations: 3, salt_len: 16 };
            let mut rng = chorus_framing::SeededEntropy::new(3);
            let blob = seal_with_password(&plain, b"fuzz", &config, &mut rng).unwrap();
            fuzz_open(&blob);
            prop_assert_eq!(&open_with_password(&blob, b"fuzz").unwrap()[..], &plain[..]);
        }
    }
}

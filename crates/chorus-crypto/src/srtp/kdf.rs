//! SRTP key derivation (RFC 3711 §4.3 with key derivation rate 0; RFC 6188 §3 for
//! AES-256; RFC 7714 §11 for GCM's 96-bit salt).
//!
//! Each session key is a prefix of the AES counter-mode keystream (keyed by the master
//! key) whose first counter block is `((label << 48) XOR master_salt) * 2^16`: the label
//! byte lands on byte 7 of the 14-byte salt. A GCM master salt is 12 bytes; like libsrtp
//! we pad it on the right with two zero bytes to form the 14-byte PRF input.
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

use zeroize::Zeroize;

use super::cipher::Aes;
use super::suite::Suite;
use crate::error::{Error, UsageError};
use crate::secret::Secret;

/// Which half of a session a set of keys protects: RTP (labels 0–2) or RTCP (3–5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StreamKind {
    /// SRTP: labels 0x00 (cipher key), 0x01 (auth key), 0x02 (salt).
    Rtp,
    /// SRTCP: labels 0x03 (cipher key), 0x04 (auth key), 0x05 (salt).
    Rtcp,
}

impl StreamKind {
    /// RFC 3711 §4.3.2: the cipher-key label; the auth key is +1, the salt +2.
    const fn base_label(self) -> u8 {
        match self {
            Self::Rtp => 0x00,
            Self::Rtcp => 0x03,
        }
    }
}

/// The keys one direction of one half (RTP or RTCP) of a session uses: the session
/// cipher key, session salt and (for HMAC suites) the session authentication key.
///
/// Derive them from a master key with [`SessionKeys::derive`]; [`SessionKeys::new`]
/// takes keys a key-management protocol (or a test vector) already derived. The bytes
/// are zeroized on drop and never shown by `Debug`.
///
/// ```
/// use chorus_crypto::srtp::{SessionKeys, StreamKind, Suite};
///
/// // RFC 3711 Appendix B.3.
/// let master_key = [
///     0xe1, 0xf9, 0x7a, 0x0d, 0x3e, 0x01, 0x8b, 0xe0, 0xd6, 0x4f, 0xa3, 0x2c, 0x06, 0xde,
///     0x41, 0x39,
/// ];
/// let master_salt = [
///     0x0e, 0xc6, 0x75, 0xad, 0x49, 0x8a, 0xfe, 0xeb, 0xb6, 0x96, 0x0b, 0x3a, 0xab, 0xe6,
/// ];
/// let keys = SessionKeys::derive(
///     Suite::AesCm128HmacSha1_80,
///     &master_key,
///     &master_salt,
///     StreamKind::Rtp,
/// )?;
/// assert_eq!(&keys.cipher_key()[..4], &[0xc6, 0x1e, 0x7a, 0x93]);
/// assert_eq!(format!("{keys:?}"), "SessionKeys(AES_CM_128_HMAC_SHA1_80, ..)");
/// # Ok::<(), chorus_crypto::Error>(())
/// ```
#[derive(Clone)]
pub struct SessionKeys {
    suite: Suite,
    cipher_key: Secret<32>,
    salt: Secret<14>,
    auth_key: Secret<20>,
}

impl SessionKeys {
    /// Derives the session keys for `kind` from a master key and salt (RFC 3711 §4.3,
    /// key derivation rate 0).
    ///
    /// # Errors
    /// [`UsageError::InvalidLength`] if `master_key` is not [`Suite::key_len`] bytes
    /// or `master_salt` is not [`Suite::salt_len`] bytes.
    pub fn derive(
        suite: Suite,
        master_key: &[u8],
        master_salt: &[u8],
        kind: StreamKind,
    ) -> Result<Self, Error> {
        check_len(master_key, suite.key_len(), key_expectation(suite))?;
        check_len(master_salt, suite.salt_len(), salt_expectation(suite))?;
        let prf = Aes::new(master_key)?;
        let label = kind.base_label();
        let mut cipher_key = [0u8; 32];
        let mut salt = [0u8; 14];
        let mut auth_key = [0u8; 20];
        prf_into(
            &prf,
            master_salt,
            label,
            cut(&mut cipher_key, suite.key_len()),
        );
        prf_into(
            &prf,
            master_salt,
            label + 1,
            cut(&mut auth_key, suite.auth_key_len()),
        );
        prf_into(
            &prf,
            master_salt,
            label + 2,
            cut(&mut salt, suite.salt_len()),
        );
        let keys = Self {
            suite,
            cipher_key: Secret::new(cipher_key),
            salt: Secret::new(salt),
            auth_key: Secret::new(auth_key),
        };
        cipher_key.zeroize();
        salt.zeroize();
        auth_key.zeroize();
        Ok(keys)
    }

    /// Session keys given directly (already derived elsewhere, or a published vector).
    /// `auth_key` is empty for GCM suites.
    ///
    /// # Errors
    /// [`UsageError::InvalidLength`] if a length does not match [`Suite::key_len`],
    /// [`Suite::salt_len`] or [`Suite::auth_key_len`].
    pub fn new(
        suite: Suite,
        cipher_key: &[u8],
        salt: &[u8],
        auth_key: &[u8],
    ) -> Result<Self, Error> {
        check_len(cipher_key, suite.key_len(), key_expectation(suite))?;
        check_len(salt, suite.salt_len(), salt_expectation(suite))?;
        let auth_expected = if suite.is_aead() {
            "no authentication key for a GCM suite"
        } else {
            "a 20-byte HMAC-SHA1 key"
        };
        check_len(auth_key, suite.auth_key_len(), auth_expected)?;
        let (mut k, mut s, mut a) = ([0u8; 32], [0u8; 14], [0u8; 20]);
        cut(&mut k, cipher_key.len()).copy_from_slice(cipher_key);
        cut(&mut s, salt.len()).copy_from_slice(salt);
        cut(&mut a, auth_key.len()).copy_from_slice(auth_key);
        let keys = Self {
            suite,
            cipher_key: Secret::new(k),
            salt: Secret::new(s),
            auth_key: Secret::new(a),
        };
        k.zeroize();
        s.zeroize();
        a.zeroize();
        Ok(keys)
    }

    /// The suite these keys are for.
    #[must_use]
    pub const fn suite(&self) -> Suite {
        self.suite
    }

    /// The session encryption key ([`Suite::key_len`] bytes). Never log it.
    #[must_use]
    pub fn cipher_key(&self) -> &[u8] {
        self.cipher_key
            .expose()
            .get(..self.suite.key_len())
            .unwrap_or_default()
    }

    /// The session salt ([`Suite::salt_len`] bytes). Never log it.
    #[must_use]
    pub fn salt(&self) -> &[u8] {
        self.salt
            .expose()
            .get(..self.suite.salt_len())
            .unwrap_or_default()
    }

    /// The session authentication key ([`Suite::auth_key_len`] bytes: empty for GCM).
    /// Never log it.
    #[must_use]
    pub fn auth_key(&self) -> &[u8] {
        self.auth_key
            .expose()
            .get(..self.suite.auth_key_len())
            .unwrap_or_default()
    }
}

impl fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionKeys({}, ..)", self.suite)
    }
}

/// The first `n` bytes of `buf` (all of it if shorter).
fn cut<const N: usize>(buf: &mut [u8; N], n: usize) -> &mut [u8] {
    let n = n.min(N);
    buf.get_mut(..n).unwrap_or_default()
}

const fn key_expectation(suite: Suite) -> &'static str {
    if suite.key_len() == 16 {
        "a 16-byte key for this suite"
    } else {
        "a 32-byte key for this suite"
    }
}

const fn salt_expectation(suite: Suite) -> &'static str {
    if suite.salt_len() == 14 {
        "a 14-byte salt for this suite"
    } else {
        "a 12-byte salt for this suite"
    }
}

pub(crate) fn check_len(bytes: &[u8], want: usize, expected: &'static str) -> Result<(), Error> {
    if bytes.len() == want {
        Ok(())
    } else {
        Err(UsageError::InvalidLength {
            len: bytes.len(),
            expected,
        }
        .into())
    }
}

/// RFC 3711 §4.3.1/§4.3.3: fills `out` with the AES-CM PRF output for `label`.
/// `master_salt` is 14 bytes (counter mode) or 12 (GCM, zero-padded on the right).
fn prf_into(prf: &Aes, master_salt: &[u8], label: u8, out: &mut [u8]) {
    if out.is_empty() {
        return;
    }
    let mut iv = [0u8; 16];
    for (dst, src) in iv.iter_mut().zip(master_salt) {
        *dst = *src;
    }
    // key_id = label || (index DIV kdr) with kdr = 0: the label is byte 7 of the
    // 14-byte x; the 6 index bytes after it are zero.
    if let Some(b) = iv.get_mut(7) {
        *b ^= label;
    }
    out.fill(0);
    prf.apply_keystream(&iv, out);
    iv.zeroize();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_keys_of_the_wrong_length() {
        let err = SessionKeys::derive(Suite::AeadAes256Gcm, &[0; 16], &[0; 12], StreamKind::Rtp);
        assert!(matches!(
            err,
            Err(Error::Usage(UsageError::InvalidLength { len: 16, .. }))
        ));
        let err = SessionKeys::derive(
            Suite::AesCm128HmacSha1_80,
            &[0; 16],
            &[0; 12],
            StreamKind::Rtp,
        );
        assert!(matches!(
            err,
            Err(Error::Usage(UsageError::InvalidLength { len: 12, .. }))
        ));
        assert!(SessionKeys::new(Suite::AeadAes128Gcm, &[0; 16], &[0; 12], &[0; 20]).is_err());
    }

    #[test]
    fn rtp_and_rtcp_keys_differ_and_gcm_has_no_auth_key() {
        for suite in Suite::ALL {
            let key = vec![0x42; suite.key_len()];
            let salt = vec![0x24; suite.salt_len()];
            let rtp = SessionKeys::derive(suite, &key, &salt, StreamKind::Rtp).unwrap();
            let rtcp = SessionKeys::derive(suite, &key, &salt, StreamKind::Rtcp).unwrap();
            assert_ne!(rtp.cipher_key(), rtcp.cipher_key());
            assert_ne!(rtp.salt(), rtcp.salt());
            assert_eq!(rtp.cipher_key().len(), suite.key_len());
            assert_eq!(rtp.salt().len(), suite.salt_len());
            assert_eq!(rtp.auth_key().len(), suite.auth_key_len());
        }
    }
}

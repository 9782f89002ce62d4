//! MESSAGE-INTEGRITY, MESSAGE-INTEGRITY-SHA256 and FINGERPRINT (RFC 8489 §14.5-§14.7)
//! and the keys behind them (RFC 8489 §9).
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

use chorus_crypto::SecretVec;
use hmac::{Hmac, KeyInit, Mac};
use md5::{Digest, Md5};
use sha1::Sha1;

/// The password algorithms of RFC 8489 §18.5 (PASSWORD-ALGORITHM values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PasswordAlgorithm {
    /// 0x0001: key = MD5(username ":" realm ":" password) (RFC 8489 §9.2.2).
    Md5,
    /// 0x0002: key = SHA-256(username ":" realm ":" password).
    Sha256,
}

impl PasswordAlgorithm {
    /// The registered number.
    #[must_use]
    pub const fn number(self) -> u16 {
        match self {
            Self::Md5 => 0x0001,
            Self::Sha256 => 0x0002,
        }
    }

    /// The algorithm with registered number `n`, if known.
    #[must_use]
    pub const fn from_number(n: u16) -> Option<Self> {
        match n {
            0x0001 => Some(Self::Md5),
            0x0002 => Some(Self::Sha256),
            _ => None,
        }
    }
}

/// The key of a STUN credential (RFC 8489 §9): zeroized on drop, redacted in `Debug`.
///
/// ```
/// use chorus_nat::stun::{Key, PasswordAlgorithm};
///
/// // RFC 8489 §9.1: the short-term key is the password itself.
/// let short = Key::short_term("VOkJxbRl1RmTxUk/WvJxBt");
/// assert_eq!(short.len(), 22);
/// // §9.2.2: the long-term key hashes username:realm:password.
/// let long = Key::long_term("user", "example.org", "pass", PasswordAlgorithm::Md5);
/// assert_eq!(long.len(), 16);
/// assert_eq!(format!("{long:?}"), "Key(..)");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Key(SecretVec);

impl Key {
    /// A short-term credential key: the password's bytes (RFC 8489 §9.1.1). The caller
    /// applies OpaqueString (RFC 8265) if its passwords need it.
    #[must_use]
    pub fn short_term(password: &str) -> Self {
        Self(SecretVec::new(password.as_bytes().to_vec()))
    }

    /// A long-term credential key (RFC 8489 §9.2.2): MD5 or SHA-256 of
    /// `username ":" realm ":" password`.
    #[must_use]
    pub fn long_term(username: &str, realm: &str, password: &str, alg: PasswordAlgorithm) -> Self {
        let input = [
            username.as_bytes(),
            b":",
            realm.as_bytes(),
            b":",
            password.as_bytes(),
        ];
        let key = match alg {
            PasswordAlgorithm::Md5 => {
                let mut h = Md5::new();
                for part in input {
                    h.update(part);
                }
                h.finalize().to_vec()
            }
            PasswordAlgorithm::Sha256 => {
                let mut h = ring::digest::Context::new(&ring::digest::SHA256);
                for part in input {
                    h.update(part);
                }
                h.finish().as_ref().to_vec()
            }
        };
        Self(SecretVec::new(key))
    }

    /// A key from raw bytes (for example one derived elsewhere).
    #[must_use]
    pub fn from_bytes(bytes: &[u8]) -> Self {
        Self(SecretVec::new(bytes.to_vec()))
    }

    /// The key's length in bytes.
    #[must_use]
    pub fn len(&self) -> usize {
        self.0.expose().len()
    }

    /// Whether the key is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.expose().is_empty()
    }

    pub(crate) fn expose(&self) -> &[u8] {
        self.0.expose()
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(..)")
    }
}

/// USERHASH (RFC 8489 §14.4): SHA-256 of `username ":" realm`.
#[must_use]
pub fn userhash(username: &str, realm: &str) -> [u8; 32] {
    let mut h = ring::digest::Context::new(&ring::digest::SHA256);
    h.update(username.as_bytes());
    h.update(b":");
    h.update(realm.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(h.finish().as_ref());
    out
}

/// The nonce cookie that starts a NONCE carrying STUN security features (RFC 8489 §9.2).
pub const NONCE_COOKIE: &str = "obMatJos2";

/// The STUN security features a server announces in its NONCE (RFC 8489 §9.2, §18.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SecurityFeatures {
    /// "Password algorithms": the server offers PASSWORD-ALGORITHMS.
    pub password_algorithms: bool,
    /// "Username anonymity": the server accepts USERHASH.
    pub username_anonymity: bool,
}

impl SecurityFeatures {
    /// The features in `nonce`, or `None` when it does not start with the nonce cookie
    /// and four base64 characters. Bits are numbered from the least significant, as
    /// RFC 8489 erratum 6290 corrects: bit 0 (0x000001) is "Password algorithms", bit 1
    /// "Username anonymity" (so Appendix B.1's `obMatJos2AAAC` announces anonymity).
    #[must_use]
    pub fn from_nonce(nonce: &str) -> Option<Self> {
        let encoded = nonce.strip_prefix(NONCE_COOKIE)?.as_bytes().get(..4)?;
        let mut bits = 0u32;
        for &c in encoded {
            let v = match c {
                b'A'..=b'Z' => c - b'A',
                b'a'..=b'z' => c - b'a' + 26,
                b'0'..=b'9' => c - b'0' + 52,
                b'+' => 62,
                b'/' => 63,
                _ => return None,
            };
            bits = bits << 6 | u32::from(v);
        }
        Some(Self {
            password_algorithms: bits & 1 != 0,
            username_anonymity: bits & 2 != 0,
        })
    }

    /// The nonce prefix announcing these features: the cookie and four base64
    /// characters, for a server to start its nonces with.
    #[must_use]
    pub fn nonce_prefix(self) -> String {
        const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let bits = u32::from(self.password_algorithms) | u32::from(self.username_anonymity) << 1;
        let mut out = String::from(NONCE_COOKIE);
        for shift in [18, 12, 6, 0] {
            if let Some(&c) = B64.get(((bits >> shift) & 63) as usize) {
                out.push(char::from(c));
            }
        }
        out
    }
}

/// HMAC-SHA1 over `parts` (RFC 8489 §14.5). RustCrypto's SHA-1 uses the CPU's SHA
/// extensions (docs/performance.md).
pub(crate) fn hmac_sha1(key: &Key, parts: &[&[u8]]) -> [u8; 20] {
    // HMAC accepts keys of any length, so `new_from_slice` cannot fail.
    let Ok(mut mac) = <Hmac<Sha1> as KeyInit>::new_from_slice(key.expose()) else {
        return [0; 20];
    };
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// HMAC-SHA256 over `parts` (RFC 8489 §14.6), from ring.
pub(crate) fn hmac_sha256(key: &Key, parts: &[&[u8]]) -> [u8; 32] {
    let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key.expose());
    let mut ctx = ring::hmac::Context::with_key(&k);
    for p in parts {
        ctx.update(p);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.sign().as_ref());
    out
}

/// RFC 8489 §14.7: FINGERPRINT is the CRC-32 of the message XORed with this.
pub(crate) const FINGERPRINT_XOR: u32 = 0x5354_554e;

/// CRC-32 (ISO 3309 / ITU-T V.42, reflected polynomial 0xEDB88320), the one FINGERPRINT
/// uses, by a 256-entry table built at compile time. A dozen lines do not justify a
/// dependency.
#[allow(clippy::indexing_slicing)] // `i < 256` is the loop condition.
const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xedb8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

/// CRC-32 over `parts` concatenated.
pub(crate) fn crc32(parts: &[&[u8]]) -> u32 {
    let mut c = !0u32;
    for p in parts {
        for &b in *p {
            // A `u8` index into a 256-entry table cannot be out of bounds.
            #[allow(clippy::indexing_slicing)]
            let entry = CRC_TABLE[usize::from((c as u8) ^ b)];
            c = entry ^ (c >> 8);
        }
    }
    !c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_the_standard_check_value() {
        // The CRC-32 "check" value: CRC of the ASCII digits 1..9.
        assert_eq!(crc32(&[b"123456789"]), 0xcbf4_3926);
        assert_eq!(crc32(&[b"1234", b"56789"]), 0xcbf4_3926);
        assert_eq!(crc32(&[]), 0);
    }

    #[test]
    fn long_term_md5_key_matches_rfc_5769_section_2_4() {
        // MD5("マトリックス:example.org:TheMatrIX"), the key of RFC 5769 §2.4.
        let key = Key::long_term(
            "\u{30DE}\u{30C8}\u{30EA}\u{30C3}\u{30AF}\u{30B9}",
            "example.org",
            "TheMatrIX",
            PasswordAlgorithm::Md5,
        );
        assert_eq!(key.len(), 16);
        assert_eq!(
            PasswordAlgorithm::from_number(2),
            Some(PasswordAlgorithm::Sha256)
        );
        assert_eq!(PasswordAlgorithm::from_number(3), None);
        assert_eq!(PasswordAlgorithm::Md5.number(), 1);
    }

    #[test]
    fn hmacs_have_their_standard_lengths_and_depend_on_the_key() {
        let (a, b) = (Key::short_term("a"), Key::short_term("b"));
        assert_ne!(hmac_sha1(&a, &[b"x"]), hmac_sha1(&b, &[b"x"]));
        assert_ne!(hmac_sha256(&a, &[b"x"]), hmac_sha256(&b, &[b"x"]));
        assert_eq!(hmac_sha1(&a, &[b"xy"]), hmac_sha1(&a, &[b"x", b"y"]));
        assert!(!a.is_empty());
        assert_eq!(Key::from_bytes(b"a"), a);
    }
}

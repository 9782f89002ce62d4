//! The SRTP crypto suites Chorus speaks, with their parameters and registered names.

use core::fmt;

/// An SRTP protection profile: cipher, key and salt sizes, and tag lengths.
///
/// | Suite | Spec | Master key | Master salt | SRTP tag | SRTCP tag |
/// |---|---|---|---|---|---|
/// | [`AesCm128HmacSha1_80`](Self::AesCm128HmacSha1_80) | RFC 3711, RFC 4568 | 16 | 14 | 10 | 10 |
/// | [`AesCm128HmacSha1_32`](Self::AesCm128HmacSha1_32) | RFC 3711, RFC 4568 | 16 | 14 | 4 | 10 |
/// | [`AesCm256HmacSha1_80`](Self::AesCm256HmacSha1_80) | RFC 6188 | 32 | 14 | 10 | 10 |
/// | [`AeadAes128Gcm`](Self::AeadAes128Gcm) | RFC 7714 | 16 | 12 | 16 | 16 |
/// | [`AeadAes256Gcm`](Self::AeadAes256Gcm) | RFC 7714 | 32 | 12 | 16 | 16 |
///
/// The `_32` suite shortens only the SRTP tag: RFC 4568 §6.2.2 keeps SRTCP at 80
/// bits. Chorus peers use [`AeadAes128Gcm`](Self::AeadAes128Gcm) (the
/// [`Default`]): it authenticates and encrypts in one pass and is the fastest at
/// voice packet sizes (`docs/performance.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Suite {
    /// AES-128 in counter mode, HMAC-SHA1 truncated to 80 bits (RFC 3711 §8.2).
    AesCm128HmacSha1_80,
    /// AES-128 in counter mode, HMAC-SHA1 truncated to 32 bits on SRTP, 80 on SRTCP.
    AesCm128HmacSha1_32,
    /// AES-256 in counter mode, HMAC-SHA1 truncated to 80 bits (RFC 6188).
    AesCm256HmacSha1_80,
    /// AES-128-GCM with a 16-byte tag (RFC 7714).
    #[default]
    AeadAes128Gcm,
    /// AES-256-GCM with a 16-byte tag (RFC 7714).
    AeadAes256Gcm,
}

impl Suite {
    /// Every suite, in the order of the table above.
    pub const ALL: [Self; 5] = [
        Self::AesCm128HmacSha1_80,
        Self::AesCm128HmacSha1_32,
        Self::AesCm256HmacSha1_80,
        Self::AeadAes128Gcm,
        Self::AeadAes256Gcm,
    ];

    /// Master (and session) encryption key length in bytes.
    #[must_use]
    pub const fn key_len(self) -> usize {
        match self {
            Self::AesCm128HmacSha1_80 | Self::AesCm128HmacSha1_32 | Self::AeadAes128Gcm => 16,
            Self::AesCm256HmacSha1_80 | Self::AeadAes256Gcm => 32,
        }
    }

    /// Master (and session) salt length in bytes: 14 for counter mode (RFC 3711
    /// §8.2), 12 for GCM (RFC 7714 §11).
    #[must_use]
    pub const fn salt_len(self) -> usize {
        if self.is_aead() { 12 } else { 14 }
    }

    /// Session authentication key length in bytes (HMAC-SHA1: 20; GCM: none).
    #[must_use]
    pub const fn auth_key_len(self) -> usize {
        if self.is_aead() { 0 } else { 20 }
    }

    /// Bytes [`protect_rtp`](super::SrtpSession::protect_rtp) appends: the SRTP
    /// authentication tag.
    #[must_use]
    pub const fn rtp_tag_len(self) -> usize {
        match self {
            Self::AesCm128HmacSha1_80 | Self::AesCm256HmacSha1_80 => 10,
            Self::AesCm128HmacSha1_32 => 4,
            Self::AeadAes128Gcm | Self::AeadAes256Gcm => 16,
        }
    }

    /// The SRTCP authentication tag length in bytes.
    #[must_use]
    pub const fn rtcp_tag_len(self) -> usize {
        if self.is_aead() { 16 } else { 10 }
    }

    /// Bytes [`protect_rtcp`](super::SrtpSession::protect_rtcp) appends: the tag and
    /// the 4-byte E-flag/SRTCP-index word.
    #[must_use]
    pub const fn rtcp_overhead(self) -> usize {
        self.rtcp_tag_len() + 4
    }

    /// Whether this is an AEAD (GCM) suite rather than counter mode plus HMAC.
    #[must_use]
    pub const fn is_aead(self) -> bool {
        matches!(self, Self::AeadAes128Gcm | Self::AeadAes256Gcm)
    }

    /// The registered name: the SDES crypto-suite name (RFC 4568 §6.2, RFC 6188 §6,
    /// RFC 7714 §14.1), which is also the name in the IANA SRTP registries.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::AesCm128HmacSha1_80 => "AES_CM_128_HMAC_SHA1_80",
            Self::AesCm128HmacSha1_32 => "AES_CM_128_HMAC_SHA1_32",
            Self::AesCm256HmacSha1_80 => "AES_256_CM_HMAC_SHA1_80",
            Self::AeadAes128Gcm => "AEAD_AES_128_GCM",
            Self::AeadAes256Gcm => "AEAD_AES_256_GCM",
        }
    }

    /// The suite with the SDES name `name` (ASCII case-insensitive). `AES_CM_256_...`
    /// is accepted as an alias of RFC 6188's `AES_256_CM_HMAC_SHA1_80`.
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        if name.eq_ignore_ascii_case("AES_CM_256_HMAC_SHA1_80") {
            return Some(Self::AesCm256HmacSha1_80);
        }
        Self::ALL
            .into_iter()
            .find(|s| s.name().eq_ignore_ascii_case(name))
    }

    /// The DTLS-SRTP protection profile number (IANA "DTLS-SRTP Protection
    /// Profiles", RFC 5764 §4.1.2, RFC 7714 §14.2), if one is assigned. None is
    /// assigned for AES-256 counter mode.
    #[must_use]
    pub const fn dtls_srtp_profile(self) -> Option<u16> {
        match self {
            Self::AesCm128HmacSha1_80 => Some(0x0001),
            Self::AesCm128HmacSha1_32 => Some(0x0002),
            Self::AesCm256HmacSha1_80 => None,
            Self::AeadAes128Gcm => Some(0x0007),
            Self::AeadAes256Gcm => Some(0x0008),
        }
    }
}

impl fmt::Display for Suite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_lengths_follow_the_rfcs() {
        for s in Suite::ALL {
            assert_eq!(Suite::from_name(s.name()), Some(s));
            assert_eq!(Suite::from_name(&s.name().to_lowercase()), Some(s));
            assert_eq!(s.to_string(), s.name());
            assert_eq!(s.auth_key_len() == 0, s.is_aead());
            assert_eq!(s.rtcp_overhead(), s.rtcp_tag_len() + 4);
        }
        assert_eq!(
            Suite::from_name("AES_CM_256_HMAC_SHA1_80"),
            Some(Suite::AesCm256HmacSha1_80)
        );
        assert_eq!(Suite::from_name("F8_128_HMAC_SHA1_80"), None);
        assert_eq!(Suite::default(), Suite::AeadAes128Gcm);
        assert_eq!(Suite::AesCm128HmacSha1_32.rtp_tag_len(), 4);
        assert_eq!(Suite::AesCm128HmacSha1_32.rtcp_tag_len(), 10);
    }
}

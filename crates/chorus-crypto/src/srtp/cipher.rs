//! The per-packet transforms: AES counter mode plus HMAC-SHA1 (RFC 3711 §4.1.1,
//! §4.2.1; RFC 6188), and AES-GCM (RFC 7714 §8, §9) through ring.
//!
//! Everything that can be computed once per session is: AES key schedules, the
//! HMAC inner and outer hash states (cloned per packet, never re-keyed), ring's GCM
//! keys. Per packet the work is the IV, the keystream or AEAD pass in place, and the
//! tag; nothing allocates.
//!
//! Key hygiene: session salts are [`Secret`]s, and the AES key schedules and HMAC states
//! zeroize on drop (the `zeroize` features of `aes`, `hmac` and `sha1`). ring's GCM keys
//! do not: ring offers no way to wipe a `LessSafeKey`.
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic
    )
)]

use aes::cipher::{InnerIvInit, KeyInit, StreamCipher};
use aes::{Aes128, Aes256};
use ctr::{Ctr128BE, CtrCore};
use hmac::{Hmac, Mac};
use ring::aead;
use sha1::Sha1;
use zeroize::Zeroize;

use super::kdf::SessionKeys;
use super::suite::Suite;
use crate::error::{AuthError, Error, KeyError};
use crate::secret::{Secret, ct_eq};

/// An AES key schedule of either size, expanded once.
pub(crate) enum Aes {
    A128(Box<Aes128>),
    A256(Box<Aes256>),
}

impl Aes {
    /// A 16- or 32-byte key.
    pub(crate) fn new(key: &[u8]) -> Result<Self, Error> {
        match key.len() {
            16 => Aes128::new_from_slice(key)
                .map(|c| Self::A128(Box::new(c)))
                .map_err(|_| KeyError::Rejected.into()),
            32 => Aes256::new_from_slice(key)
                .map(|c| Self::A256(Box::new(c)))
                .map_err(|_| KeyError::Rejected.into()),
            _ => Err(KeyError::Rejected.into()),
        }
    }

    /// XORs `data` with the AES-CM keystream that starts at counter block `iv`
    /// (RFC 3711 §4.1.1). The counter is the whole block, big-endian; SRTP's 16-bit
    /// block counter never carries because packets are bounded by
    /// [`MAX_PACKET_LEN`](super::MAX_PACKET_LEN).
    #[inline]
    pub(crate) fn apply_keystream(&self, iv: &[u8; 16], data: &mut [u8]) {
        match self {
            Self::A128(c) => {
                Ctr128BE::<&Aes128>::from_core(CtrCore::inner_iv_init(&**c, iv.into()))
                    .apply_keystream(data);
            }
            Self::A256(c) => {
                Ctr128BE::<&Aes256>::from_core(CtrCore::inner_iv_init(&**c, iv.into()))
                    .apply_keystream(data);
            }
        }
    }
}

/// AES-CM encryption plus truncated HMAC-SHA1 authentication.
pub(crate) struct CmHmac {
    aes: Aes,
    salt: Secret<14>,
    /// Keyed once: cloning it copies the precomputed inner and outer hash states.
    mac: Hmac<Sha1>,
    tag_len: usize,
}

impl CmHmac {
    /// RFC 3711 §4.1.1: IV = (k_s * 2^16) XOR (SSRC * 2^64) XOR (i * 2^16), where `i`
    /// is the 48-bit SRTP index or the 31-bit SRTCP index.
    #[inline]
    pub(crate) fn iv(&self, ssrc: u32, index: u64) -> [u8; 16] {
        let mut iv = [0u8; 16];
        let (salt_part, _) = iv.split_at_mut(14);
        salt_part.copy_from_slice(self.salt.expose());
        let ssrc = ssrc.to_be_bytes();
        let index = index.to_be_bytes();
        for (dst, src) in iv.iter_mut().skip(4).zip(ssrc) {
            *dst ^= src;
        }
        // The low 48 bits of the index go to bytes 8..14.
        for (dst, src) in iv.iter_mut().skip(8).zip(index.iter().skip(2)) {
            *dst ^= *src;
        }
        iv
    }

    /// XORs `data` with the keystream for (`ssrc`, `index`).
    #[inline]
    pub(crate) fn crypt(&self, ssrc: u32, index: u64, data: &mut [u8]) {
        let mut iv = self.iv(ssrc, index);
        self.aes.apply_keystream(&iv, data);
        iv.zeroize();
    }

    /// The full 20-byte HMAC-SHA1 over `data` followed by `trailer` (the ROC for SRTP,
    /// RFC 3711 §4.2; nothing for SRTCP, whose index word is part of `data`).
    #[inline]
    pub(crate) fn mac(&self, data: &[u8], trailer: &[u8]) -> [u8; 20] {
        let mut mac = self.mac.clone();
        mac.update(data);
        mac.update(trailer);
        mac.finalize().into_bytes().into()
    }

    /// Writes the truncated tag into `out` (its first [`Self::tag_len`] bytes) and
    /// returns the full MAC (what a sender compares to recognise a retransmission).
    #[inline]
    pub(crate) fn write_tag(&self, data: &[u8], trailer: &[u8], out: &mut [u8]) -> [u8; 20] {
        let full = self.mac(data, trailer);
        for (dst, src) in out.iter_mut().zip(full.iter().take(self.tag_len)) {
            *dst = *src;
        }
        full
    }

    /// Checks `received` (the truncated tag from the packet) in constant time.
    #[inline]
    pub(crate) fn verify(&self, data: &[u8], trailer: &[u8], received: &[u8]) -> Result<(), Error> {
        let full = self.mac(data, trailer);
        let ours = full.get(..self.tag_len).unwrap_or_default();
        if ct_eq(ours, received) {
            Ok(())
        } else {
            Err(AuthError::BadTag.into())
        }
    }

    pub(crate) const fn tag_len(&self) -> usize {
        self.tag_len
    }
}

/// AES-GCM with the RFC 7714 IV construction.
pub(crate) struct Gcm {
    key: aead::LessSafeKey,
    salt: Secret<12>,
}

/// GCM's tag length: RFC 7714 §13.2 allows only the full 16 bytes for SRTP.
pub(crate) const GCM_TAG_LEN: usize = 16;

impl Gcm {
    /// RFC 7714 §8.1: IV = (00 00 || SSRC || ROC || SEQ) XOR salt.
    #[inline]
    pub(crate) fn rtp_nonce(&self, ssrc: u32, roc: u32, seq: u16) -> aead::Nonce {
        let mut iv = [0u8; 12];
        let (_, rest) = iv.split_at_mut(2);
        let (s, rest) = rest.split_at_mut(4);
        let (r, q) = rest.split_at_mut(4);
        s.copy_from_slice(&ssrc.to_be_bytes());
        r.copy_from_slice(&roc.to_be_bytes());
        q.copy_from_slice(&seq.to_be_bytes());
        self.nonce(iv)
    }

    /// RFC 7714 §9.1: IV = (00 00 || SSRC || 00 00 || 0 || SRTCP index) XOR salt.
    #[inline]
    pub(crate) fn rtcp_nonce(&self, ssrc: u32, index: u32) -> aead::Nonce {
        let mut iv = [0u8; 12];
        let (_, rest) = iv.split_at_mut(2);
        let (s, rest) = rest.split_at_mut(4);
        let (_, i) = rest.split_at_mut(2);
        s.copy_from_slice(&ssrc.to_be_bytes());
        i.copy_from_slice(&(index & 0x7fff_ffff).to_be_bytes());
        self.nonce(iv)
    }

    fn nonce(&self, mut iv: [u8; 12]) -> aead::Nonce {
        for (dst, src) in iv.iter_mut().zip(self.salt.expose()) {
            *dst ^= *src;
        }
        aead::Nonce::assume_unique_for_key(iv)
    }

    /// Encrypts `in_out` in place and returns the tag.
    #[inline]
    pub(crate) fn seal(
        &self,
        nonce: aead::Nonce,
        aad: &[u8],
        in_out: &mut [u8],
    ) -> Result<[u8; GCM_TAG_LEN], Error> {
        let tag = self
            .key
            .seal_in_place_separate_tag(nonce, aead::Aad::from(aad), in_out)
            // ring refuses only inputs longer than GCM's 64 GiB limit; packets are
            // bounded far below that, so this is unreachable in practice.
            .map_err(|_| Error::Auth(AuthError::BadTag))?;
        let mut out = [0u8; GCM_TAG_LEN];
        out.copy_from_slice(tag.as_ref());
        Ok(out)
    }

    /// Verifies `tag` and decrypts `in_out` in place. On failure ring zeroes `in_out`.
    #[inline]
    pub(crate) fn open(
        &self,
        nonce: aead::Nonce,
        aad: &[u8],
        tag: [u8; GCM_TAG_LEN],
        in_out: &mut [u8],
    ) -> Result<(), Error> {
        self.key
            .open_in_place_separate_tag(
                nonce,
                aead::Aad::from(aad),
                aead::Tag::from(tag),
                in_out,
                0..,
            )
            .map(drop)
            .map_err(|_| AuthError::BadTag.into())
    }
}

/// One half (RTP or RTCP) of a session's cryptographic state.
// Two per session, never moved per packet: boxing the larger variant would only add a
// pointer chase to every packet.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Transform {
    CmHmac(CmHmac),
    Gcm(Gcm),
}

impl Transform {
    /// Keys the transform. `tag_len` is the HMAC truncation (ignored for GCM).
    pub(crate) fn new(keys: &SessionKeys, tag_len: usize) -> Result<Self, Error> {
        let suite = keys.suite();
        match suite {
            Suite::AeadAes128Gcm | Suite::AeadAes256Gcm => {
                let alg = if suite == Suite::AeadAes128Gcm {
                    &aead::AES_128_GCM
                } else {
                    &aead::AES_256_GCM
                };
                let key = aead::UnboundKey::new(alg, keys.cipher_key())
                    .map_err(|_| Error::Key(KeyError::Rejected))?;
                let mut salt = [0u8; 12];
                salt.copy_from_slice(keys.salt().get(..12).unwrap_or(&[0u8; 12]));
                let t = Self::Gcm(Gcm {
                    key: aead::LessSafeKey::new(key),
                    salt: Secret::new(salt),
                });
                salt.zeroize();
                Ok(t)
            }
            Suite::AesCm128HmacSha1_80
            | Suite::AesCm128HmacSha1_32
            | Suite::AesCm256HmacSha1_80 => {
                let aes = Aes::new(keys.cipher_key())?;
                let mac = <Hmac<Sha1> as KeyInit>::new_from_slice(keys.auth_key())
                    .map_err(|_| Error::Key(KeyError::Rejected))?;
                let mut salt = [0u8; 14];
                salt.copy_from_slice(keys.salt().get(..14).unwrap_or(&[0u8; 14]));
                let t = Self::CmHmac(CmHmac {
                    aes,
                    salt: Secret::new(salt),
                    mac,
                    tag_len,
                });
                salt.zeroize();
                Ok(t)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gcm_ivs_match_rfc_7714_examples() {
        // RFC 7714 §16 (RTP) and §17 (RTCP): salt "Quid pro quo".
        let keys =
            SessionKeys::new(Suite::AeadAes128Gcm, &[0u8; 16], b"Quid pro quo", &[]).unwrap();
        let Transform::Gcm(gcm) = Transform::new(&keys, 16).unwrap() else {
            unreachable!()
        };
        let rtp = gcm.rtp_nonce(0x5501_a0b2, 0, 0xf17b);
        assert_eq!(
            rtp.as_ref(),
            &[
                0x51, 0x75, 0x3c, 0x65, 0x80, 0xc2, 0x72, 0x6f, 0x20, 0x71, 0x84, 0x14
            ]
        );
        let rtcp = gcm.rtcp_nonce(0x4d61_7273, 0x5d4);
        assert_eq!(
            rtcp.as_ref(),
            &[
                0x51, 0x75, 0x24, 0x05, 0x52, 0x03, 0x72, 0x6f, 0x20, 0x71, 0x70, 0xbb
            ]
        );
    }

    #[test]
    fn counter_mode_iv_places_ssrc_and_index() {
        let keys = SessionKeys::new(
            Suite::AesCm128HmacSha1_80,
            &[0u8; 16],
            &[0u8; 14],
            &[0u8; 20],
        )
        .unwrap();
        let Transform::CmHmac(cm) = Transform::new(&keys, 10).unwrap() else {
            unreachable!()
        };
        let iv = cm.iv(0x0102_0304, 0x0000_0a0b_0c0d_0e0f);
        assert_eq!(
            iv,
            [
                0, 0, 0, 0, 1, 2, 3, 4, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 0, 0
            ]
        );
    }
}

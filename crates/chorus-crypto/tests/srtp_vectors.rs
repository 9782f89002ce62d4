//! SRTP/SRTCP against the published vectors, byte for byte: RFC 3711 Appendix B.2
//! (AES-CM keystream) and B.3 (key derivation), RFC 6188 §7.1 and §7.2 (AES-256),
//! RFC 7714 §16 (SRTP AES-GCM) and §17 (SRTCP AES-GCM), plus the failure cases: any
//! altered, truncated or replayed vector packet is rejected.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

#[path = "vectors/srtp.rs"]
mod vectors;

use chorus_crypto::srtp::{Policy, SessionKeys, SrtpSession, StreamKind, Suite};
use chorus_crypto::{AuthError, DecodeError, Error};
use vectors::*;

/// A session keyed directly with session keys (the RFC 7714 vectors and the
/// keystream vectors give session keys, not master keys).
fn keyed(suite: Suite, key: &str, salt: &str, encrypt: bool) -> SrtpSession {
    let auth = vec![0u8; suite.auth_key_len()];
    let k = |_| SessionKeys::new(suite, &hex(key), &hex(salt), &auth).unwrap();
    let mut policy = Policy::from_session_keys(k(0), k(1)).unwrap();
    policy.encrypt_rtp = encrypt;
    policy.encrypt_rtcp = encrypt;
    SrtpSession::new(policy).unwrap()
}

/// The keystream for SSRC 0, index 0: protect an all-zero payload behind a header
/// with SEQ 0 and SSRC 0, and read the ciphertext.
fn keystream(suite: Suite, key: &str, len: usize) -> Vec<u8> {
    let mut session = keyed(suite, key, B2_SESSION_SALT, true);
    let mut packet = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    packet.resize(12 + len, 0);
    session.protect_rtp(&mut packet).unwrap();
    packet[12..12 + len].to_vec()
}

#[test]
fn aes_128_cm_keystream_matches_rfc_3711_appendix_b2() {
    let ks = keystream(Suite::AesCm128HmacSha1_80, B2_SESSION_KEY, B2_SEGMENT_LEN);
    assert_eq!(ks[..48], hex(B2_KEYSTREAM_FIRST)[..]);
    assert_eq!(ks[B2_SEGMENT_LEN - 48..], hex(B2_KEYSTREAM_LAST)[..]);
}

#[test]
fn aes_256_cm_keystream_matches_rfc_6188_section_7_1() {
    let ks = keystream(
        Suite::AesCm256HmacSha1_80,
        R6188_71_SESSION_KEY,
        B2_SEGMENT_LEN,
    );
    assert_eq!(ks[..48], hex(R6188_71_KEYSTREAM_FIRST)[..]);
    assert_eq!(ks[B2_SEGMENT_LEN - 48..], hex(R6188_71_KEYSTREAM_LAST)[..]);
}

#[test]
fn aes_128_key_derivation_matches_rfc_3711_appendix_b3() {
    let keys = SessionKeys::derive(
        Suite::AesCm128HmacSha1_80,
        &hex(B3_MASTER_KEY),
        &hex(B3_MASTER_SALT),
        StreamKind::Rtp,
    )
    .unwrap();
    assert_eq!(keys.cipher_key(), hex(B3_CIPHER_KEY));
    assert_eq!(keys.salt(), hex(B3_CIPHER_SALT));
    assert_eq!(keys.auth_key(), hex(B3_AUTH_KEY));
    // The _32 suite derives the same keys; only the tag is shorter.
    let short = SessionKeys::derive(
        Suite::AesCm128HmacSha1_32,
        &hex(B3_MASTER_KEY),
        &hex(B3_MASTER_SALT),
        StreamKind::Rtp,
    )
    .unwrap();
    assert_eq!(short.auth_key(), keys.auth_key());
}

#[test]
fn aes_256_key_derivation_matches_rfc_6188_section_7_2() {
    let keys = SessionKeys::derive(
        Suite::AesCm256HmacSha1_80,
        &hex(R6188_72_MASTER_KEY),
        &hex(R6188_72_MASTER_SALT),
        StreamKind::Rtp,
    )
    .unwrap();
    assert_eq!(keys.cipher_key(), hex(R6188_72_CIPHER_KEY));
    assert_eq!(keys.salt(), hex(R6188_72_CIPHER_SALT));
    assert_eq!(keys.auth_key(), hex(R6188_72_AUTH_KEY));
}

/// (suite, key, protected packet, encrypted?) for each RFC 7714 §16 SRTP example.
fn rfc_7714_srtp_cases() -> [(Suite, &'static str, &'static str, bool); 4] {
    [
        (
            Suite::AeadAes128Gcm,
            R7714_KEY_128,
            R7714_16_1_1_SRTP_128,
            true,
        ),
        (
            Suite::AeadAes128Gcm,
            R7714_KEY_128,
            R7714_16_1_3_SRTP_128_TAG_ONLY,
            false,
        ),
        (
            Suite::AeadAes256Gcm,
            R7714_KEY_256,
            R7714_16_2_1_SRTP_256,
            true,
        ),
        (
            Suite::AeadAes256Gcm,
            R7714_KEY_256,
            R7714_16_2_3_SRTP_256_TAG_ONLY,
            false,
        ),
    ]
}

#[test]
fn gcm_srtp_protection_matches_rfc_7714_section_16() {
    for (suite, key, expected, encrypt) in rfc_7714_srtp_cases() {
        let mut session = keyed(suite, key, R7714_SALT, encrypt);
        let mut packet = hex(R7714_RTP);
        session.protect_rtp(&mut packet).unwrap();
        assert_eq!(packet, hex(expected), "{suite} encrypt={encrypt}");
    }
}

#[test]
fn gcm_srtp_unprotection_matches_rfc_7714_section_16() {
    for (suite, key, protected, encrypt) in rfc_7714_srtp_cases() {
        let mut session = keyed(suite, key, R7714_SALT, encrypt);
        let mut packet = hex(protected);
        session.unprotect_rtp(&mut packet).unwrap();
        assert_eq!(packet, hex(R7714_RTP), "{suite} encrypt={encrypt}");
        assert_eq!(session.received_index(0x5501_a0b2), Some(0xf17b));
    }
}

#[test]
fn gcm_srtp_vectors_fail_when_altered_truncated_replayed_or_mis_keyed() {
    for (suite, key, protected, encrypt) in rfc_7714_srtp_cases() {
        let wire = hex(protected);
        // Every single-bit flip is rejected (the header and payload through the tag).
        for bit in 0..wire.len() * 8 {
            let mut session = keyed(suite, key, R7714_SALT, encrypt);
            let mut altered = wire.clone();
            altered[bit / 8] ^= 1 << (bit % 8);
            let err = session.unprotect_rtp(&mut altered).unwrap_err();
            assert!(
                matches!(err, Error::Auth(AuthError::BadTag) | Error::Decode(_)),
                "{suite} bit {bit}: {err:?}"
            );
            assert_eq!(
                session.ssrc_count(),
                0,
                "a rejected packet created a context"
            );
        }
        // Every strict prefix is rejected.
        for len in 0..wire.len() {
            let mut session = keyed(suite, key, R7714_SALT, encrypt);
            let mut short = wire[..len].to_vec();
            assert!(
                session.unprotect_rtp(&mut short).is_err(),
                "{suite} prefix {len}"
            );
        }
        // The wrong key (the other size's key bytes, padded) is rejected.
        let other_key = if key == R7714_KEY_128 {
            "0f0e0d0c0b0a09080706050403020100"
        } else {
            "1f1e1d1c1b1a191817161514131211100f0e0d0c0b0a09080706050403020100"
        };
        let mut session = keyed(suite, other_key, R7714_SALT, encrypt);
        let mut packet = wire.clone();
        assert_eq!(
            session.unprotect_rtp(&mut packet),
            Err(Error::Auth(AuthError::BadTag))
        );
        // Accepted once, then a replay.
        let mut session = keyed(suite, key, R7714_SALT, encrypt);
        let mut packet = wire.clone();
        session.unprotect_rtp(&mut packet).unwrap();
        let mut again = wire.clone();
        assert_eq!(
            session.unprotect_rtp(&mut again),
            Err(Error::Auth(AuthError::Replay))
        );
    }
}

/// (suite, key, protected packet, E flag) for each RFC 7714 §17 SRTCP example.
fn rfc_7714_srtcp_cases() -> [(Suite, &'static str, &'static str, bool); 4] {
    [
        (
            Suite::AeadAes128Gcm,
            R7714_KEY_128,
            R7714_17_1_SRTCP_128,
            true,
        ),
        (
            Suite::AeadAes256Gcm,
            R7714_KEY_256,
            R7714_17_2_SRTCP_256,
            true,
        ),
        (
            Suite::AeadAes128Gcm,
            R7714_KEY_128,
            R7714_17_3_SRTCP_128_TAG_ONLY,
            false,
        ),
        (
            Suite::AeadAes256Gcm,
            R7714_KEY_256,
            R7714_17_4_SRTCP_256_TAG_ONLY,
            false,
        ),
    ]
}

#[test]
fn gcm_srtcp_protection_matches_rfc_7714_section_17() {
    for (suite, key, expected, encrypt) in rfc_7714_srtcp_cases() {
        let mut session = keyed(suite, key, R7714_SALT, encrypt);
        session
            .set_srtcp_index(0x4d61_7273, R7714_SRTCP_INDEX)
            .unwrap();
        let mut packet = hex(R7714_RTCP);
        session.protect_rtcp(&mut packet).unwrap();
        assert_eq!(packet, hex(expected), "{suite} E={encrypt}");
    }
}

#[test]
fn gcm_srtcp_unprotection_matches_rfc_7714_section_17() {
    for (suite, key, protected, encrypt) in rfc_7714_srtcp_cases() {
        // The receiver follows the packet's E flag whatever it would send itself.
        for policy_encrypts in [true, false] {
            let mut session = keyed(suite, key, R7714_SALT, policy_encrypts);
            let mut packet = hex(protected);
            session.unprotect_rtcp(&mut packet).unwrap();
            assert_eq!(packet, hex(R7714_RTCP), "{suite} E={encrypt}");
        }
    }
}

#[test]
fn gcm_srtcp_vectors_fail_when_altered_truncated_or_replayed() {
    for (suite, key, protected, _) in rfc_7714_srtcp_cases() {
        let wire = hex(protected);
        for bit in 0..wire.len() * 8 {
            let mut session = keyed(suite, key, R7714_SALT, true);
            let mut altered = wire.clone();
            altered[bit / 8] ^= 1 << (bit % 8);
            let err = session.unprotect_rtcp(&mut altered).unwrap_err();
            assert!(
                matches!(err, Error::Auth(AuthError::BadTag) | Error::Decode(_)),
                "{suite} bit {bit}: {err:?}"
            );
        }
        for len in 0..wire.len() {
            let mut session = keyed(suite, key, R7714_SALT, true);
            let mut short = wire[..len].to_vec();
            assert!(
                session.unprotect_rtcp(&mut short).is_err(),
                "{suite} prefix {len}"
            );
        }
        let mut session = keyed(suite, key, R7714_SALT, true);
        let mut packet = wire.clone();
        session.unprotect_rtcp(&mut packet).unwrap();
        let mut again = wire.clone();
        assert_eq!(
            session.unprotect_rtcp(&mut again),
            Err(Error::Auth(AuthError::Replay))
        );
    }
}

#[test]
fn a_short_packet_is_reported_as_truncated() {
    let mut session = keyed(Suite::AeadAes128Gcm, R7714_KEY_128, R7714_SALT, true);
    let mut packet = hex(R7714_RTP)[..12].to_vec();
    packet.extend_from_slice(&[0; 15]);
    assert_eq!(
        session.unprotect_rtp(&mut packet),
        Err(Error::Decode(DecodeError::Truncated {
            offset: 12,
            needed: 16
        }))
    );
    let mut packet = vec![0x80, 200, 0, 1];
    assert!(matches!(
        session.unprotect_rtcp(&mut packet),
        Err(Error::Decode(DecodeError::Truncated { .. }))
    ));
}

//! SRTP and SRTCP (RFC 3711): encryption, authentication and replay protection for
//! RTP media and RTCP control packets.
//!
//! - Suites ([`Suite`]): `AES_CM_128_HMAC_SHA1_80` and `_32` (RFC 3711, RFC 4568),
//!   `AES_256_CM_HMAC_SHA1_80` (RFC 6188), and `AEAD_AES_128_GCM` /
//!   `AEAD_AES_256_GCM` (RFC 7714), the default between Chorus peers.
//! - Key derivation from a master key and salt ([`SessionKeys::derive`], RFC 3711 §4.3
//!   with key derivation rate 0).
//! - [`SrtpSession`]: one [`Policy`]'s keys and a context per SSRC with its rollover
//!   counter (estimated as in RFC 3711 Appendix A), an SRTP and an SRTCP replay
//!   window (RFC 3711 §3.3.2, 128 packets by default) and its SRTCP index.
//!
//! The session is sans-IO and works in place: `protect_*` appends the tag to the
//! caller's buffer, `unprotect_*` verifies, decrypts and truncates it. With spare
//! capacity for the tag, nothing allocates per packet. Every packet from the network is
//! parsed through bounds checks; a malformed, forged or replayed one is an `Err`, never
//! a panic, and leaves the session unchanged.
//!
//! ```
//! use chorus_crypto::srtp::{Policy, SrtpSession, Suite};
//!
//! // Both ends hold the same master key and salt (from DTLS-SRTP or Chorus's own
//! // handshake); each direction of a call uses its own pair.
//! let (key, salt) = ([0x11; 16], [0x22; 12]);
//! let mut alice = SrtpSession::new(Policy::new(Suite::AeadAes128Gcm, &key, &salt)?)?;
//! let mut bob = SrtpSession::new(Policy::new(Suite::AeadAes128Gcm, &key, &salt)?)?;
//!
//! // A 12-byte RTP header (version 2, PT 111, seq 1, SSRC 0xcafe) and a payload.
//! let rtp = [
//!     0x80, 111, 0x00, 0x01, 0, 0, 0x03, 0xc0, 0, 0, 0xca, 0xfe, b'h', b'i', b'!',
//! ];
//! let mut packet = Vec::with_capacity(rtp.len() + Suite::AeadAes128Gcm.rtp_tag_len());
//! packet.extend_from_slice(&rtp);
//! alice.protect_rtp(&mut packet)?;
//! assert_eq!(packet.len(), rtp.len() + 16);
//! assert_ne!(&packet[12..15], b"hi!");
//!
//! let mut received = packet.clone();
//! bob.unprotect_rtp(&mut received)?;
//! assert_eq!(received, rtp);
//!
//! // The same packet again is a replay.
//! let mut again = packet.clone();
//! assert!(bob.unprotect_rtp(&mut again).is_err());
//! # Ok::<(), chorus_crypto::Error>(())
//! ```
//!
//! Published vectors (RFC 3711 Appendix B, RFC 6188 §7, RFC 7714 §16–17) are checked
//! byte for byte in `tests/srtp_vectors.rs`, and interoperability with libsrtp in
//! `tests/srtp_libsrtp.rs`.

mod cipher;
mod header;
mod kdf;
mod replay;
mod session;
mod suite;

pub use kdf::{SessionKeys, StreamKind};
pub use session::{
    DEFAULT_MAX_SSRCS, DEFAULT_REPLAY_WINDOW, MAX_PACKET_LEN, MAX_REPLAY_WINDOW, MAX_SSRCS_LIMIT,
    MIN_REPLAY_WINDOW, Policy, SrtpSession,
};
pub use suite::Suite;

/// Fuzz entry point: unprotects `data` as SRTP and as SRTCP under every suite with
/// fixed keys, and round-trips `data` as a plaintext packet.
///
/// Oracles: nothing panics; a packet that unprotects re-protects, by a fresh sender at
/// the same index, to exactly the input bytes; a packet built from `data` by
/// `protect_*` unprotects to `data`, and with one bit flipped (position chosen by
/// `data`) it is rejected.
#[cfg(any(test, feature = "_fuzz"))]
#[doc(hidden)]
#[allow(clippy::missing_panics_doc, clippy::unwrap_used, clippy::expect_used)]
pub fn fuzz_unprotect(data: &[u8]) {
    for suite in Suite::ALL {
        let key: Vec<u8> = (0..suite.key_len()).map(|i| i as u8).collect();
        let salt: Vec<u8> = (0..suite.salt_len()).map(|i| 0xa0 ^ i as u8).collect();
        let session = |encrypt_rtcp: bool| {
            let mut p = Policy::new(suite, &key, &salt).expect("fixed key lengths are valid");
            p.encrypt_rtcp = encrypt_rtcp;
            SrtpSession::new(p).expect("default policy is valid")
        };

        // 1. Arbitrary bytes as SRTP.
        let mut rx = session(true);
        let mut buf = data.to_vec();
        if rx.unprotect_rtp(&mut buf).is_ok() {
            let h = header::rtp(&buf).expect("an unprotected packet has an RTP header");
            let mut tx = session(true);
            let roc = rx.received_index(h.ssrc).expect("accepted") >> 16;
            tx.set_roc(h.ssrc, roc as u32).expect("fresh context");
            tx.protect_rtp(&mut buf).expect("re-protect");
            assert_eq!(
                buf, data,
                "{suite}: re-protected SRTP differs from the input"
            );
        }

        // 2. Arbitrary bytes as SRTCP.
        let mut rx = session(true);
        let mut buf = data.to_vec();
        if rx.unprotect_rtcp(&mut buf).is_ok() {
            let ssrc = header::rtcp_ssrc(&buf).expect("an unprotected packet has an RTCP header");
            let overhead = suite.rtcp_overhead();
            let word_at = if suite.is_aead() {
                data.len() - 4
            } else {
                data.len() - overhead
            };
            let word = u32::from_be_bytes(data[word_at..word_at + 4].try_into().unwrap());
            let mut tx = session(word & 0x8000_0000 != 0);
            tx.set_srtcp_index(ssrc, word & 0x7fff_ffff)
                .expect("31-bit index");
            tx.protect_rtcp(&mut buf).expect("re-protect");
            assert_eq!(
                buf, data,
                "{suite}: re-protected SRTCP differs from the input"
            );
        }

        // 3. `data` as a plaintext: protect, unprotect, tamper.
        for rtcp in [false, true] {
            let mut tx = session(true);
            let mut rx = session(true);
            let mut buf = data.to_vec();
            let protected = if rtcp {
                tx.protect_rtcp(&mut buf)
            } else {
                tx.protect_rtp(&mut buf)
            };
            if protected.is_err() {
                assert_eq!(buf, data, "a failed protect must leave the packet alone");
                continue;
            }
            let wire = buf.clone();
            let bit = data
                .iter()
                .fold(0usize, |a, b| a.wrapping_mul(31) ^ usize::from(*b))
                % (wire.len() * 8);
            let mut tampered = wire.clone();
            tampered[bit / 8] ^= 1 << (bit % 8);
            let unprotect = |rx: &mut SrtpSession, b: &mut Vec<u8>| {
                if rtcp {
                    rx.unprotect_rtcp(b)
                } else {
                    rx.unprotect_rtp(b)
                }
            };
            assert!(
                unprotect(&mut rx, &mut tampered).is_err(),
                "{suite}: a flipped bit {bit} was accepted"
            );
            unprotect(&mut rx, &mut buf).expect("round trip");
            assert_eq!(buf, data, "{suite}: round trip changed the packet");
            let mut replayed = wire;
            assert!(
                unprotect(&mut rx, &mut replayed).is_err(),
                "{suite}: replay accepted"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn fuzz_entry_holds_on_arbitrary_bytes(data in vec(any::<u8>(), 0..200)) {
            fuzz_unprotect(&data);
        }

        #[test]
        fn fuzz_entry_holds_on_rtp_and_rtcp_shaped_bytes(
            first in prop_oneof![Just(0x80u8), Just(0x81), Just(0x9f), Just(0x90)],
            second in prop_oneof![Just(111u8), Just(200), Just(201)],
            rest in vec(any::<u8>(), 0..120),
        ) {
            let mut data = vec![first, second];
            data.extend(rest);
            fuzz_unprotect(&data);
        }
    }
}

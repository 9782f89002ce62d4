//! A sender never protects two different packets under one SRTP index (RFC 3711 §9.1,
//! RFC 7714 §8.1: with AES-GCM a reused nonce reveals the authentication key; with
//! AES-CM a reused keystream reveals the XOR of the plaintexts). Every suite, with
//! payload encryption on and off, with and without `allow_repeat_tx`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use chorus_crypto::srtp::{Policy, SrtpSession, Suite};
use chorus_crypto::{Error, UsageError};

const SSRC: u32 = 0x1234_5678;

fn session(suite: Suite, encrypt_rtp: bool, allow_repeat_tx: bool) -> SrtpSession {
    let mut p = Policy::new(
        suite,
        &vec![0x42; suite.key_len()],
        &vec![0x24; suite.salt_len()],
    )
    .unwrap();
    p.encrypt_rtp = encrypt_rtp;
    p.allow_repeat_tx = allow_repeat_tx;
    SrtpSession::new(p).unwrap()
}

/// A 12-byte header (SEQ `seq`, SSRC [`SSRC`]) and 40 bytes of `fill`.
fn rtp(seq: u16, fill: u8) -> Vec<u8> {
    let mut p = vec![0x80, 111];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&[0, 0, 3, 0xc0]);
    p.extend_from_slice(&SSRC.to_be_bytes());
    p.extend_from_slice(&[fill; 40]);
    p
}

#[test]
fn a_different_payload_at_a_used_index_is_refused_and_left_unprotected() {
    for suite in Suite::ALL {
        for encrypt in [true, false] {
            let mut tx = session(suite, encrypt, false);
            let mut first = rtp(7, 0xaa);
            tx.protect_rtp(&mut first).unwrap();
            let mut second = rtp(7, 0xbb);
            assert_eq!(
                tx.protect_rtp(&mut second),
                Err(Error::Usage(UsageError::IndexReuse {
                    ssrc: SSRC,
                    index: 7
                })),
                "{suite} encrypt={encrypt}"
            );
            assert_eq!(second, rtp(7, 0xbb), "{suite}: nothing was protected");
            assert_eq!(tx.sent_index(SSRC), Some(7));
            // The stream goes on at the next index.
            let mut next = rtp(8, 0xbb);
            tx.protect_rtp(&mut next).unwrap();
        }
    }
}

#[test]
fn with_repeats_allowed_a_different_payload_is_a_mismatch_and_is_wiped() {
    for suite in Suite::ALL {
        for encrypt in [true, false] {
            let mut tx = session(suite, encrypt, true);
            let mut first = rtp(7, 0xaa);
            tx.protect_rtp(&mut first).unwrap();
            let len = rtp(7, 0xbb).len();
            let mut buf = rtp(7, 0xbb);
            buf.resize(len + suite.rtp_tag_len(), 0x55);
            assert_eq!(
                tx.protect_rtp_in_place(&mut buf, len),
                Err(Error::Usage(UsageError::RetransmissionMismatch {
                    ssrc: SSRC,
                    index: 7
                })),
                "{suite} encrypt={encrypt}"
            );
            // No second ciphertext or tag under index 7 is left in the buffer.
            assert_eq!(&buf[..12], &rtp(7, 0xbb)[..12], "{suite}: header kept");
            assert!(
                buf[12..].iter().all(|b| *b == 0),
                "{suite}: payload and tag wiped"
            );

            // The Vec form: the tag is removed and the payload wiped, and a different
            // header (the marker bit) at the index is refused just the same.
            let mut marked = rtp(7, 0xaa);
            marked[1] |= 0x80;
            assert_eq!(
                tx.protect_rtp(&mut marked),
                Err(Error::Usage(UsageError::RetransmissionMismatch {
                    ssrc: SSRC,
                    index: 7
                })),
                "{suite} encrypt={encrypt}"
            );
            assert_eq!(marked.len(), len);
            assert!(marked[12..].iter().all(|b| *b == 0));
            assert_eq!(tx.sent_index(SSRC), Some(7), "{suite}: state unchanged");
        }
    }
}

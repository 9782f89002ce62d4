//! The SRTP session's bounds and configuration: index exhaustion (2^48 SRTP, 2^31
//! SRTCP), the SSRC context limit, policy validation, ROC and SRTCP-index setters,
//! and keys never appearing in `Debug`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use chorus_crypto::srtp::{Policy, SessionKeys, SrtpSession, StreamKind, Suite};
use chorus_crypto::{AuthError, Error, Limit, UsageError};

fn policy(suite: Suite) -> Policy {
    Policy::new(
        suite,
        &vec![0x42; suite.key_len()],
        &vec![0x24; suite.salt_len()],
    )
    .unwrap()
}

fn rtp(seq: u16, ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x80, 96];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 0]);
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(b"payload");
    p
}

fn rtcp(ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x80, 201, 0, 1];
    p.extend_from_slice(&ssrc.to_be_bytes());
    p
}

#[test]
fn srtp_index_exhaustion_stops_the_sender_and_the_receiver() {
    for suite in Suite::ALL {
        let mut tx = SrtpSession::new(policy(suite)).unwrap();
        let mut rx = SrtpSession::new(policy(suite)).unwrap();
        tx.set_roc(5, u32::MAX).unwrap();
        rx.set_roc(5, u32::MAX).unwrap();
        for seq in [0xfffe, 0xffff] {
            let mut p = rtp(seq, 5);
            tx.protect_rtp(&mut p).unwrap();
            rx.unprotect_rtp(&mut p).unwrap();
        }
        assert_eq!(tx.sent_index(5), Some((1 << 48) - 1));
        let mut p = rtp(0, 5);
        let before = p.clone();
        assert_eq!(
            tx.protect_rtp(&mut p),
            Err(Error::Limit(Limit::CounterExhausted)),
            "{suite}"
        );
        assert_eq!(p, before, "a refused packet is left as it was");
        // A forged continuation is refused by the receiver before any crypto.
        let mut forged = rtp(0, 5);
        forged.extend_from_slice(&vec![0; suite.rtp_tag_len()]);
        assert_eq!(
            rx.unprotect_rtp(&mut forged),
            Err(Error::Limit(Limit::CounterExhausted))
        );
    }
}

#[test]
fn srtcp_index_exhaustion_stops_the_sender() {
    for suite in Suite::ALL {
        let mut tx = SrtpSession::new(policy(suite)).unwrap();
        let mut rx = SrtpSession::new(policy(suite)).unwrap();
        tx.set_srtcp_index(9, 0x7fff_fffe).unwrap();
        for _ in 0..2 {
            let mut p = rtcp(9);
            tx.protect_rtcp(&mut p).unwrap();
            rx.unprotect_rtcp(&mut p).unwrap();
        }
        let mut p = rtcp(9);
        assert_eq!(
            tx.protect_rtcp(&mut p),
            Err(Error::Limit(Limit::CounterExhausted)),
            "{suite}"
        );
        assert_eq!(p, rtcp(9));
        assert_eq!(
            tx.set_srtcp_index(9, 1 << 31),
            Err(Error::Usage(UsageError::InvalidConfig(
                "the SRTCP index is 31 bits"
            )))
        );
        assert_eq!(
            tx.set_srtcp_index(9, 3),
            Err(Error::Usage(UsageError::IndexReuse { ssrc: 9, index: 3 }))
        );
    }
}

#[test]
fn a_session_refuses_more_ssrcs_than_configured_until_one_is_removed() {
    let mut p = policy(Suite::AesCm128HmacSha1_80);
    p.max_ssrcs = 2;
    let mut tx = SrtpSession::new(p.clone()).unwrap();
    let mut big_tx = SrtpSession::new(policy(Suite::AesCm128HmacSha1_80)).unwrap();
    let mut rx = SrtpSession::new(p).unwrap();
    for ssrc in [1, 2] {
        let mut a = rtp(1, ssrc);
        tx.protect_rtp(&mut a).unwrap();
        rx.unprotect_rtp(&mut a).unwrap();
    }
    let too_many = Err(Error::Limit(Limit::TooManyContexts { max: 2 }));
    let mut third = rtp(1, 3);
    assert_eq!(tx.protect_rtp(&mut third), too_many);
    assert_eq!(third, rtp(1, 3));
    let mut third_rtcp = rtcp(3);
    assert_eq!(tx.protect_rtcp(&mut third_rtcp), too_many);
    assert_eq!(tx.set_roc(3, 1), too_many);
    // The receiver refuses an authentic packet for a third SSRC, without state change.
    let mut authentic = rtp(1, 3);
    big_tx.protect_rtp(&mut authentic).unwrap();
    let mut copy = authentic.clone();
    assert_eq!(rx.unprotect_rtp(&mut copy), too_many);
    assert_eq!(rx.ssrc_count(), 2);
    // Known SSRCs keep working.
    let mut a = rtp(2, 1);
    tx.protect_rtp(&mut a).unwrap();
    rx.unprotect_rtp(&mut a).unwrap();
    // Forgetting one makes room.
    assert_eq!(rx.remove_ssrc(2), Ok(true));
    assert_eq!(rx.remove_ssrc(2), Ok(false));
    rx.unprotect_rtp(&mut authentic).unwrap();
    assert_eq!(rx.ssrc_count(), 2);
}

#[test]
fn invalid_policies_are_refused_by_new() {
    for (window, ssrcs) in [(63, 1), (32769, 1), (128, 0), (128, 65537)] {
        let mut p = policy(Suite::AeadAes256Gcm);
        p.replay_window = window;
        p.max_ssrcs = ssrcs;
        assert!(
            matches!(
                SrtpSession::new(p),
                Err(Error::Usage(UsageError::InvalidConfig(_)))
            ),
            "window {window}, ssrcs {ssrcs}"
        );
    }
    for window in [64, 100, 32768] {
        let mut p = policy(Suite::AeadAes256Gcm);
        p.replay_window = window;
        assert!(SrtpSession::new(p).is_ok());
    }
    assert!(matches!(
        Policy::new(Suite::AeadAes128Gcm, &[0; 16], &[0; 14]),
        Err(Error::Usage(UsageError::InvalidLength { len: 14, .. }))
    ));
    let rtp_keys =
        SessionKeys::derive(Suite::AeadAes128Gcm, &[0; 16], &[0; 12], StreamKind::Rtp).unwrap();
    let rtcp_keys =
        SessionKeys::derive(Suite::AeadAes256Gcm, &[0; 32], &[0; 12], StreamKind::Rtcp).unwrap();
    assert!(matches!(
        Policy::from_session_keys(rtp_keys, rtcp_keys),
        Err(Error::Usage(UsageError::InvalidConfig(_)))
    ));
}

#[test]
fn a_late_joiner_given_the_roc_decrypts_mid_stream() {
    let suite = Suite::AesCm256HmacSha1_80;
    let mut tx = SrtpSession::new(policy(suite)).unwrap();
    let mut rx = SrtpSession::new(policy(suite)).unwrap();
    tx.set_roc(77, 7).unwrap();
    let mut p = rtp(0x1234, 77);
    tx.protect_rtp(&mut p).unwrap();
    assert_eq!(tx.sent_index(77), Some((7 << 16) | 0x1234));
    // Without the ROC the receiver computes the wrong index: the tag fails.
    let mut copy = p.clone();
    assert_eq!(
        rx.unprotect_rtp(&mut copy),
        Err(Error::Auth(AuthError::BadTag))
    );
    rx.set_roc(77, 7).unwrap();
    rx.unprotect_rtp(&mut p).unwrap();
    assert_eq!(p, rtp(0x1234, 77));
    assert!(matches!(
        rx.set_roc(77, 8),
        Err(Error::Usage(UsageError::WrongState(_)))
    ));
}

#[test]
fn a_sender_refuses_a_sequence_number_before_its_first_packet() {
    let mut tx = SrtpSession::new(policy(Suite::AeadAes128Gcm)).unwrap();
    let mut p = rtp(10, 1);
    tx.protect_rtp(&mut p).unwrap();
    // ROC -1 by the RFC 3711 Appendix A estimate: below every index, so a reuse.
    let mut early = rtp(0xfff0, 1);
    assert_eq!(
        tx.protect_rtp(&mut early),
        Err(Error::Usage(UsageError::IndexReuse {
            ssrc: 1,
            index: 0xfff0
        }))
    );
    assert_eq!(early, rtp(0xfff0, 1));
}

#[test]
fn in_place_calls_report_a_buffer_without_room_for_the_tag() {
    let mut tx = SrtpSession::new(policy(Suite::AesCm128HmacSha1_32)).unwrap();
    let packet = rtp(1, 1);
    let mut buf = packet.clone();
    buf.extend_from_slice(&[0; 3]);
    assert!(matches!(
        tx.protect_rtp_in_place(&mut buf, packet.len()),
        Err(Error::Usage(UsageError::InvalidLength { .. }))
    ));
    buf.push(0);
    assert_eq!(
        tx.protect_rtp_in_place(&mut buf, packet.len()),
        Ok(packet.len() + 4)
    );
    let mut rx = SrtpSession::new(policy(Suite::AesCm128HmacSha1_32)).unwrap();
    assert_eq!(rx.unprotect_rtp_in_place(&mut buf), Ok(packet.len()));
    assert_eq!(buf[..packet.len()], packet[..]);
    let mut small = [0u8; 10];
    assert!(tx.protect_rtcp_in_place(&mut small, 8).is_err());
}

#[test]
fn debug_output_never_shows_key_material() {
    let key = [0xab; 32];
    let salt = [0xcd; 14];
    let p = Policy::new(Suite::AesCm256HmacSha1_80, &key, &salt).unwrap();
    let keys =
        SessionKeys::derive(Suite::AesCm256HmacSha1_80, &key, &salt, StreamKind::Rtp).unwrap();
    let session = SrtpSession::new(p.clone()).unwrap();
    let shown = format!("{p:?} {keys:?} {session:?}");
    for secret in [
        &key[..4],
        &salt[..4],
        &keys.cipher_key()[..4],
        &keys.auth_key()[..4],
    ] {
        let as_hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
        let as_dec = format!("{}, {}", secret[0], secret[1]);
        assert!(
            !shown.contains(&as_hex) && !shown.contains(&as_dec),
            "{shown}"
        );
    }
    assert!(shown.contains("AES_256_CM_HMAC_SHA1_80"), "{shown}");
}

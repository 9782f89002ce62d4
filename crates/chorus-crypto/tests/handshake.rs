//! The authenticated key exchange: it succeeds between any two validly certified
//! identities, and fails on tampering, wrong authorities, bad certificates, replays and
//! downgrades.

mod pki;

use std::sync::Arc;

use chorus_crypto::cert::Role;
use chorus_crypto::handshake::{Config, ExpectedPeer, Initiator, Responder, Side, Suite};
use chorus_crypto::{AuthError, Error};
use chorus_framing::SeededEntropy;
use chorus_framing::{Frame, FrameType};
use pki::{NOW, at, config, identity, no_tamper, pki, run};
use proptest::prelude::*;

#[test]
fn both_sides_agree_on_peer_keys_and_session() {
    let p = pki(0);
    let alice = config(&p, 1, "alice", Role::User);
    let sn = config(&p, 2, "sn-1", Role::SuperNode);
    let (a, s) = run(&alice, &sn, 1, no_tamper).unwrap();
    assert_eq!(a.peer().username(), "sn-1");
    assert_eq!(a.peer().role(), Role::SuperNode);
    assert_eq!(s.peer().username(), "alice");
    assert_eq!((a.side(), s.side()), (Side::Initiator, Side::Responder));
    assert_eq!(a.session_id(), s.session_id());
    assert_eq!(
        (a.version(), a.suite()),
        (1, Suite::X25519RsaPssAes256GcmSha256)
    );

    let (mut x, mut y) = ([0u8; 40], [0u8; 40]);
    a.export(b"test", b"ctx", &mut x).unwrap();
    s.export(b"test", b"ctx", &mut y).unwrap();
    assert_eq!(x, y);
    s.export(b"test", b"other", &mut y).unwrap();
    assert_ne!(x, y);

    // SRTP keys: what one side sends with, the other receives with (the rest in
    // tests/handshake_srtp_keys_are_bound.rs).
    let gcm = chorus_crypto::srtp::Suite::AeadAes128Gcm;
    let (a_tx, a_rx) = a.srtp_keys(gcm, &7u64.to_be_bytes()).unwrap();
    let (s_tx, s_rx) = s.srtp_keys(gcm, &7u64.to_be_bytes()).unwrap();
    assert_eq!(a_tx, s_rx);
    assert_eq!(a_rx, s_tx);
    assert_eq!(a_tx.key.expose().len(), 16);
    assert_eq!(a_tx.salt.expose().len(), 12);

    // The signalling channel works in both directions.
    let (mut ac, mut sc) = (a.into_channel(), s.into_channel());
    let f = Frame::data(3, &b"INVITE bob"[..]);
    assert_eq!(sc.open(&ac.seal(&f).unwrap()).unwrap(), f);
    assert_eq!(ac.open(&sc.seal(&f).unwrap()).unwrap(), f);
}

#[test]
fn a_handshake_keys_srtp_media_in_both_directions_for_every_suite() {
    use chorus_crypto::srtp::{SrtpSession, Suite as SrtpSuite};
    let p = pki(0);
    let (a, s) = run(
        &config(&p, 1, "alice", Role::User),
        &config(&p, 2, "sn", Role::SuperNode),
        6,
        no_tamper,
    )
    .unwrap();
    for suite in SrtpSuite::ALL {
        let (a_send, a_recv) = a.srtp_policies(suite, &[1]).unwrap();
        let (s_send, s_recv) = s.srtp_policies(suite, &[1]).unwrap();
        let (mut a_tx, mut a_rx) = (
            SrtpSession::new(a_send).unwrap(),
            SrtpSession::new(a_recv).unwrap(),
        );
        let (mut s_tx, mut s_rx) = (
            SrtpSession::new(s_send).unwrap(),
            SrtpSession::new(s_recv).unwrap(),
        );
        for seq in 0..20u16 {
            let mut rtp = vec![0x80, 111];
            rtp.extend_from_slice(&seq.to_be_bytes());
            rtp.extend_from_slice(&[0, 0, 0, 160, 0x12, 0x34, 0x56, 0x78]);
            rtp.extend_from_slice(&[seq as u8; 160]);
            let mut packet = rtp.clone();
            a_tx.protect_rtp(&mut packet).unwrap();
            assert_ne!(packet[12..172], rtp[12..172], "{suite:?} encrypts");
            // A packet protected for one direction does not open in the other.
            let mut wrong_way = packet.clone();
            assert!(a_rx.unprotect_rtp(&mut wrong_way).is_err(), "{suite:?}");
            s_rx.unprotect_rtp(&mut packet).unwrap();
            assert_eq!(packet, rtp);
            let mut back = rtp.clone();
            s_tx.protect_rtp(&mut back).unwrap();
            a_rx.unprotect_rtp(&mut back).unwrap();
            assert_eq!(back, rtp);
        }
    }
}

#[test]
fn every_session_has_fresh_keys() {
    let p = pki(0);
    let (alice, sn) = (
        config(&p, 1, "alice", Role::User),
        config(&p, 2, "sn", Role::SuperNode),
    );
    let (a1, _) = run(&alice, &sn, 1, no_tamper).unwrap();
    let (a2, _) = run(&alice, &sn, 1, no_tamper).unwrap();
    // Same seed for the nonces, yet ring's fresh ephemerals make new sessions.
    assert_ne!(a1.session_id(), a2.session_id());
}

#[test]
fn a_flipped_bit_anywhere_in_any_message_fails_the_handshake() {
    let p = pki(0);
    let (alice, sn) = (
        config(&p, 1, "alice", Role::User),
        config(&p, 2, "sn", Role::SuperNode),
    );
    let lens: Vec<usize> = {
        let mut lens = vec![0; 3];
        run(&alice, &sn, 1, |i, m| lens[i] = m.len()).unwrap();
        lens
    };
    for (msg, len) in lens.iter().enumerate() {
        // One bit in every byte (rotating through the bit positions).
        for byte in 0..*len {
            let r = run(&alice, &sn, 2, |i, m| {
                if i == msg {
                    m[byte] ^= 1 << ((byte + msg) % 8);
                }
            });
            assert!(
                r.is_err(),
                "message {msg} byte {byte} tampered, handshake succeeded"
            );
        }
    }
}

#[test]
fn certificates_from_another_authority_are_rejected() {
    let ours = pki(0);
    let theirs = pki(3);
    let alice = config(&ours, 1, "alice", Role::User);
    let rogue = config(&theirs, 2, "sn", Role::SuperNode);
    assert_eq!(
        run(&alice, &rogue, 1, no_tamper).unwrap_err(),
        Error::Auth(AuthError::UntrustedIssuer)
    );
    // And the other way round: the responder rejects the initiator at Finish.
    let rogue_client = config(&theirs, 1, "alice", Role::User);
    let sn = config(&ours, 2, "sn", Role::SuperNode);
    assert_eq!(
        run(&rogue_client, &sn, 1, no_tamper).unwrap_err(),
        Error::Auth(AuthError::UntrustedIssuer)
    );
}

#[test]
fn expired_not_yet_valid_and_revoked_certificates_are_rejected() {
    let p = pki(0);
    let sn = config(&p, 2, "sn", Role::SuperNode);
    let expired = Config::new(
        identity(&p, 1, "alice", Role::User, 9, (NOW - 100, NOW - 1)),
        p.trust.clone(),
        ExpectedPeer::user("sn", &[Role::SuperNode]),
    );
    assert_eq!(
        run(&expired, &sn, 1, no_tamper).unwrap_err(),
        Error::Auth(AuthError::Expired)
    );
    let early = Config::new(
        identity(&p, 1, "alice", Role::User, 10, (NOW + 1, NOW + 100)),
        p.trust.clone(),
        ExpectedPeer::user("sn", &[Role::SuperNode]),
    );
    assert_eq!(
        run(&early, &sn, 1, no_tamper).unwrap_err(),
        Error::Auth(AuthError::NotYetValid)
    );

    let mut trust = (*p.trust).clone();
    trust.revoke(p.authority.public_key().key_id(), 2);
    let mut alice = config(&p, 1, "alice", Role::User);
    alice.trust = Arc::new(trust);
    assert_eq!(
        run(&alice, &sn, 1, no_tamper).unwrap_err(),
        Error::Auth(AuthError::Revoked { serial: 2 })
    );
}

#[test]
fn a_configuration_that_accepts_no_role_or_an_empty_name_is_refused() {
    use chorus_crypto::UsageError;
    let p = pki(0);
    let mut rng = SeededEntropy::new(1);
    let sn = config(&p, 2, "sn", Role::SuperNode);
    let (_, hello) = Initiator::start(&sn, &mut rng).unwrap();
    for peer in [
        ExpectedPeer::any_certified(&[]),
        ExpectedPeer::user("", &[Role::User]),
    ] {
        let mut c = config(&p, 1, "alice", Role::User);
        c.peer = peer;
        assert!(matches!(
            Initiator::start(&c, &mut rng),
            Err(Error::Usage(UsageError::InvalidConfig(_)))
        ));
        assert!(matches!(
            Responder::handle_hello(&c, &hello, &mut rng),
            Err(Error::Usage(UsageError::InvalidConfig(_)))
        ));
    }
}

#[test]
fn messages_replayed_from_another_handshake_are_rejected() {
    let p = pki(0);
    let (alice, sn) = (
        config(&p, 1, "alice", Role::User),
        config(&p, 2, "sn", Role::SuperNode),
    );
    let mut recorded = vec![Vec::new(); 3];
    run(&alice, &sn, 1, |i, m| recorded[i] = m.clone()).unwrap();

    // A replayed Response does not fit a new Hello's ephemeral key.
    let mut rng = SeededEntropy::new(5);
    let (fresh, _) = Initiator::start(&alice, &mut rng).unwrap();
    assert_eq!(
        fresh.handle_response(&recorded[1], at(NOW)).unwrap_err(),
        Error::Auth(AuthError::BadTag)
    );

    // A replayed Hello gets a new Response, but the old Finish cannot complete it.
    let (r_state, _) = Responder::handle_hello(&sn, &recorded[0], &mut rng).unwrap();
    assert_eq!(
        r_state.handle_finish(&recorded[2], at(NOW)).unwrap_err(),
        Error::Auth(AuthError::BadTag)
    );
}

#[test]
fn a_stripped_suite_list_or_foreign_choice_is_a_downgrade() {
    let p = pki(0);
    let (alice, sn) = (
        config(&p, 1, "alice", Role::User),
        config(&p, 2, "sn", Role::SuperNode),
    );
    // An attacker rewrites the offered suite to an unknown value: no common suite.
    let err = run(&alice, &sn, 1, |i, m| {
        if i == 0 {
            m[4] = 0xff;
        }
    })
    .unwrap_err();
    assert_eq!(err, Error::Auth(AuthError::Downgrade));
    // A responder answering with a suite that was not offered.
    let err = run(&alice, &sn, 1, |i, m| {
        if i == 1 {
            m[3] = 0x02;
        }
    })
    .unwrap_err();
    assert_eq!(err, Error::Auth(AuthError::Downgrade));
    // Another version.
    let err = run(&alice, &sn, 1, |i, m| {
        if i == 1 {
            m[1] = 2;
        }
    })
    .unwrap_err();
    assert_eq!(err, Error::Auth(AuthError::Downgrade));
    // A Hello offering only an unknown version.
    let err = run(&alice, &sn, 1, |i, m| {
        if i == 0 {
            m[2] = 9;
        }
    })
    .unwrap_err();
    assert_eq!(err, Error::Auth(AuthError::Downgrade));
}

#[test]
fn malformed_messages_are_decode_errors_not_panics() {
    let p = pki(0);
    let (alice, sn) = (
        config(&p, 1, "alice", Role::User),
        config(&p, 2, "sn", Role::SuperNode),
    );
    let mut recorded = vec![Vec::new(); 3];
    run(&alice, &sn, 1, |i, m| recorded[i] = m.clone()).unwrap();
    let mut rng = SeededEntropy::new(1);
    for n in 0..recorded[0].len() {
        assert!(
            matches!(
                Responder::handle_hello(&sn, &recorded[0][..n], &mut rng),
                Err(Error::Decode(_))
            ),
            "hello prefix {n}"
        );
    }
    for n in (0..recorded[1].len()).step_by(7) {
        let (state, _) = Initiator::start(&alice, &mut rng).unwrap();
        assert!(
            state.handle_response(&recorded[1][..n], at(NOW)).is_err(),
            "response prefix {n}"
        );
    }
    let mut trailing = recorded[0].clone();
    trailing.push(0);
    assert!(matches!(
        Responder::handle_hello(&sn, &trailing, &mut rng),
        Err(Error::Decode(_))
    ));
    // A Finish where a Hello belongs.
    assert!(matches!(
        Responder::handle_hello(&sn, &recorded[2], &mut rng),
        Err(Error::Decode(_))
    ));
}

#[test]
fn sealed_frames_cross_a_real_handshake_and_reject_plaintext() {
    let p = pki(0);
    let (a, s) = run(
        &config(&p, 1, "alice", Role::User),
        &config(&p, 2, "sn", Role::SuperNode),
        3,
        no_tamper,
    )
    .unwrap();
    let (mut ac, mut sc) = (a.into_channel(), s.into_channel());
    for i in 0..100u32 {
        let f = Frame::data(1 + i % 3, vec![i as u8; (i as usize * 31) % 2000]);
        assert_eq!(sc.open(&ac.seal(&f).unwrap()).unwrap(), f);
    }
    assert_eq!(
        sc.open(&Frame::new(FrameType::Data, 1, &b"plain"[..]))
            .unwrap_err(),
        Error::Auth(AuthError::NotSealed)
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn any_two_valid_identities_complete_a_handshake(
        i_key in 1u64..8, r_key in 1u64..8,
        i_role in 1u8..=3, r_role in 1u8..=3,
        i_name in "[a-z][a-z0-9._-]{0,20}", r_name in "[a-z][a-z0-9._-]{0,20}",
        offset in 0u64..200, seed in any::<u64>(),
    ) {
        let p = pki(0);
        let role = |b| chorus_crypto::cert::Role::from_u8(b).unwrap();
        let valid = (NOW - 100, NOW + 100);
        let now_in_period = NOW - 100 + offset;
        // Each side pins the other's name and role.
        let i = Config::new(
            identity(&p, i_key, &i_name, role(i_role), 1, valid),
            p.trust.clone(),
            ExpectedPeer::user(r_name.clone(), &[role(r_role)]),
        );
        let r = Config::new(
            identity(&p, r_key, &r_name, role(r_role), 2, valid),
            p.trust.clone(),
            ExpectedPeer::user(i_name.clone(), &[role(i_role)]),
        );
        let mut rng = SeededEntropy::new(seed);
        let (i_state, hello) = Initiator::start(&i, &mut rng).unwrap();
        let (r_state, response) = Responder::handle_hello(&r, &hello, &mut rng).unwrap();
        let (a, finish) = i_state.handle_response(&response, at(now_in_period)).unwrap();
        let b = r_state.handle_finish(&finish, at(now_in_period)).unwrap();
        prop_assert_eq!(a.peer().username(), r_name.as_str());
        prop_assert_eq!(b.peer().username(), i_name.as_str());
        prop_assert_eq!(a.session_id(), b.session_id());
    }

    #[test]
    fn a_random_bit_flip_fails_the_handshake(msg in 0usize..3, pos in any::<prop::sample::Index>(), bit in 0u8..8) {
        let p = pki(0);
        let (alice, sn) = (config(&p, 1, "alice", Role::User), config(&p, 2, "sn", Role::SuperNode));
        let r = run(&alice, &sn, 4, |i, m| {
            if i == msg {
                let at = pos.index(m.len());
                m[at] ^= 1 << bit;
            }
        });
        prop_assert!(r.is_err());
    }

    #[test]
    fn arbitrary_bytes_never_panic_any_side(bytes in proptest::collection::vec(any::<u8>(), 0..1200)) {
        let p = pki(0);
        let (alice, sn) = (config(&p, 1, "alice", Role::User), config(&p, 2, "sn", Role::SuperNode));
        let mut rng = SeededEntropy::new(9);
        let _ = Responder::handle_hello(&sn, &bytes, &mut rng);
        let (state, hello) = Initiator::start(&alice, &mut rng).unwrap();
        let _ = state.handle_response(&bytes, at(NOW));
        let (r_state, _) = Responder::handle_hello(&sn, &hello, &mut rng).unwrap();
        let _ = r_state.handle_finish(&bytes, at(NOW));
    }
}

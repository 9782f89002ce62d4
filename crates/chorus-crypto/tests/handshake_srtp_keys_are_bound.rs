//! The SRTP keys a handshake exports are bound to what they protect: the exporter
//! label names the SRTP suite and the direction, the context is the caller's, so two
//! suites (even of equal key lengths), two directions or two contexts never get the
//! same key or salt; and the two sides agree on each.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod pki;

use std::collections::HashSet;

use chorus_crypto::cert::Role;
use chorus_crypto::handshake::{Config, ExpectedPeer, SrtpDirection, srtp_exporter_label};
use chorus_crypto::srtp::Suite;
use pki::{config_expecting, no_tamper, pki, run};

/// alice pins bob; bob takes any user.
fn alice_calls_bob(p: &pki::Pki) -> (Config, Config) {
    let alice = config_expecting(
        p,
        1,
        "alice",
        Role::User,
        ExpectedPeer::user("bob", &[Role::User]),
    );
    let bob = config_expecting(p, 2, "bob", Role::User, ExpectedPeer::accept_any_user());
    (alice, bob)
}

#[test]
fn keys_differ_by_suite_direction_and_context_and_both_sides_agree() {
    let p = pki(0);
    let (alice, bob) = alice_calls_bob(&p);
    let (a, b) = run(&alice, &bob, 1, no_tamper).unwrap();
    let mut keys = HashSet::new();
    let mut salts = HashSet::new();
    for suite in Suite::ALL {
        for context in [&b""[..], &[0], &1u64.to_be_bytes(), &2u64.to_be_bytes()] {
            let (a_send, a_recv) = a.srtp_keys(suite, context).unwrap();
            let (b_send, b_recv) = b.srtp_keys(suite, context).unwrap();
            assert_eq!(a_send, b_recv, "{suite}");
            assert_eq!(a_recv, b_send, "{suite}");
            assert_eq!(a_send.key.expose().len(), suite.key_len());
            assert_eq!(a_send.salt.expose().len(), suite.salt_len());
            for k in [&a_send, &a_recv] {
                // Compare the 16-byte prefixes, so that a 32-byte key that merely
                // extends a 16-byte one would be caught too.
                assert!(
                    keys.insert(k.key.expose()[..16].to_vec()),
                    "{suite} key repeats"
                );
                assert!(
                    salts.insert(k.salt.expose()[..12].to_vec()),
                    "{suite} salt repeats"
                );
            }
        }
    }
    // 5 suites x 4 contexts x 2 directions.
    assert_eq!(keys.len(), 40);
}

#[test]
fn another_handshake_between_the_same_users_gets_other_keys() {
    let p = pki(0);
    let (alice, bob) = alice_calls_bob(&p);
    let (first, _) = run(&alice, &bob, 1, no_tamper).unwrap();
    let (second, _) = run(&alice, &bob, 2, no_tamper).unwrap();
    let suite = Suite::AeadAes128Gcm;
    assert_ne!(
        first.srtp_keys(suite, &[1]).unwrap().0,
        second.srtp_keys(suite, &[1]).unwrap().0
    );
}

#[test]
fn the_label_is_the_documented_byte_string() {
    assert_eq!(
        srtp_exporter_label(Suite::AeadAes128Gcm, SrtpDirection::InitiatorToResponder),
        b"chorus srtp AEAD_AES_128_GCM initiator->responder"
    );
    assert_eq!(
        srtp_exporter_label(
            Suite::AesCm128HmacSha1_32,
            SrtpDirection::ResponderToInitiator
        ),
        b"chorus srtp AES_CM_128_HMAC_SHA1_32 responder->initiator"
    );
    // srtp_keys is the exporter under that label: key || salt, one output.
    let p = pki(0);
    let (alice, bob) = alice_calls_bob(&p);
    let (a, _) = run(&alice, &bob, 3, no_tamper).unwrap();
    let suite = Suite::AesCm256HmacSha1_80;
    let mut okm = vec![0u8; suite.key_len() + suite.salt_len()];
    a.export(
        &srtp_exporter_label(suite, SrtpDirection::InitiatorToResponder),
        b"call 9",
        &mut okm,
    )
    .unwrap();
    let (send, _) = a.srtp_keys(suite, b"call 9").unwrap();
    assert_eq!(send.key.expose(), &okm[..suite.key_len()]);
    assert_eq!(send.salt.expose(), &okm[suite.key_len()..]);
}

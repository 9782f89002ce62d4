//! A side that names the peer it expects (`ExpectedPeer::User` or `::Node`) refuses a
//! validly certified peer that is someone else, with `AuthError::WrongPeer`: the
//! initiator checking the responder, and the responder checking the initiator.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod pki;

use chorus_crypto::cert::{NodeId, Role};
use chorus_crypto::handshake::ExpectedPeer;
use chorus_crypto::{AuthError, Error};
use pki::{config_expecting, key, no_tamper, pki, run};

const WRONG_PEER: Error = Error::Auth(AuthError::WrongPeer);

#[test]
fn the_initiator_refuses_a_responder_certified_for_another_user() {
    let p = pki(0);
    let alice = config_expecting(
        &p,
        1,
        "alice",
        Role::User,
        ExpectedPeer::user("bob", &[Role::User]),
    );
    let carol = config_expecting(&p, 3, "carol", Role::User, ExpectedPeer::accept_any_user());
    assert_eq!(run(&alice, &carol, 1, no_tamper).unwrap_err(), WRONG_PEER);
    // The user alice asked for gets through.
    let bob = config_expecting(&p, 2, "bob", Role::User, ExpectedPeer::accept_any_user());
    let (a, _) = run(&alice, &bob, 1, no_tamper).unwrap();
    assert_eq!(a.peer().username(), "bob");
}

#[test]
fn the_responder_refuses_an_initiator_certified_for_another_user() {
    let p = pki(0);
    let bob = config_expecting(
        &p,
        2,
        "bob",
        Role::User,
        ExpectedPeer::user("alice", &[Role::User]),
    );
    let mallory = config_expecting(
        &p,
        4,
        "mallory",
        Role::User,
        ExpectedPeer::user("bob", &[Role::User]),
    );
    assert_eq!(run(&mallory, &bob, 2, no_tamper).unwrap_err(), WRONG_PEER);
    let alice = config_expecting(
        &p,
        1,
        "alice",
        Role::User,
        ExpectedPeer::user("bob", &[Role::User]),
    );
    let (_, b) = run(&alice, &bob, 2, no_tamper).unwrap();
    assert_eq!(b.peer().username(), "alice");
}

#[test]
fn a_node_id_pins_the_key_not_the_name() {
    let p = pki(0);
    let sn_key = NodeId::from_public_key(key(5).public_key());
    let client = config_expecting(
        &p,
        1,
        "alice",
        Role::User,
        ExpectedPeer::node(sn_key, &[Role::SuperNode]),
    );
    // Another key under the same name is someone else.
    let impostor = config_expecting(
        &p,
        6,
        "sn-1",
        Role::SuperNode,
        ExpectedPeer::accept_any_user(),
    );
    assert_eq!(
        run(&client, &impostor, 3, no_tamper).unwrap_err(),
        WRONG_PEER
    );
    let sn = config_expecting(
        &p,
        5,
        "sn-1",
        Role::SuperNode,
        ExpectedPeer::accept_any_user(),
    );
    let (a, _) = run(&client, &sn, 3, no_tamper).unwrap();
    assert_eq!(a.peer().node_id(), sn_key);
    // And the responder side: a super node that accepts only the node it knows.
    let sn_pinning = config_expecting(
        &p,
        5,
        "sn-1",
        Role::SuperNode,
        ExpectedPeer::node(NodeId::from_public_key(key(7).public_key()), &[Role::User]),
    );
    assert_eq!(
        run(&client, &sn_pinning, 4, no_tamper).unwrap_err(),
        WRONG_PEER
    );
}

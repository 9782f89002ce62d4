//! A side refuses a validly certified peer whose certificate holds a role its
//! `ExpectedPeer` does not allow, with `AuthError::WrongRole` (distinct from
//! `WrongPeer`): the initiator checking the responder, and the responder checking the
//! initiator, also under `accept_any_user`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod pki;

use chorus_crypto::cert::Role;
use chorus_crypto::handshake::ExpectedPeer;
use chorus_crypto::{AuthError, Error};
use pki::{config_expecting, no_tamper, pki, run};

const WRONG_ROLE: Error = Error::Auth(AuthError::WrongRole);

#[test]
fn the_initiator_refuses_the_right_name_in_the_wrong_role() {
    let p = pki(0);
    let alice = config_expecting(
        &p,
        1,
        "alice",
        Role::User,
        ExpectedPeer::user("sn-1", &[Role::SuperNode]),
    );
    // A user who registered the name "sn-1" is not the super node.
    let user_sn = config_expecting(&p, 2, "sn-1", Role::User, ExpectedPeer::accept_any_user());
    assert_eq!(run(&alice, &user_sn, 1, no_tamper).unwrap_err(), WRONG_ROLE);
    let sn = config_expecting(
        &p,
        3,
        "sn-1",
        Role::SuperNode,
        ExpectedPeer::accept_any_user(),
    );
    run(&alice, &sn, 1, no_tamper).unwrap();
}

#[test]
fn the_responder_refuses_an_initiator_in_the_wrong_role() {
    let p = pki(0);
    // accept_any_user: users only.
    let bob = config_expecting(&p, 2, "bob", Role::User, ExpectedPeer::accept_any_user());
    for (key, role) in [(3, Role::SuperNode), (4, Role::LoginAuthority)] {
        let caller = config_expecting(
            &p,
            key,
            "alice",
            role,
            ExpectedPeer::user("bob", &[Role::User]),
        );
        assert_eq!(
            run(&caller, &bob, 2, no_tamper).unwrap_err(),
            WRONG_ROLE,
            "{role:?}"
        );
    }
    // A pinned name in the wrong role is a role error too, not a name error.
    let strict = config_expecting(
        &p,
        2,
        "bob",
        Role::User,
        ExpectedPeer::user("alice", &[Role::User]),
    );
    let node_alice = config_expecting(
        &p,
        3,
        "alice",
        Role::SuperNode,
        ExpectedPeer::user("bob", &[Role::User]),
    );
    assert_eq!(
        run(&node_alice, &strict, 3, no_tamper).unwrap_err(),
        WRONG_ROLE
    );
    let user_alice = config_expecting(
        &p,
        1,
        "alice",
        Role::User,
        ExpectedPeer::user("bob", &[Role::User]),
    );
    run(&user_alice, &strict, 3, no_tamper).unwrap();
}

//! Handshake fixtures shared by the handshake tests: seeded identity keys (generated
//! once per test binary, as they are slow), an authority with its trust store,
//! certified identities and a handshake runner.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chorus_crypto::Error;
use chorus_crypto::cert::{Authority, CertificateRequest, Role, TrustStore};
use chorus_crypto::handshake::{
    Config, Established, ExpectedPeer, Initiator, LocalIdentity, Responder,
};
use chorus_crypto::identity::{IdentityKeyPair, KeySize};
use chorus_framing::SeededEntropy;

/// The time every fixture certificate is checked at.
pub(crate) const NOW: u64 = 1_800_000_000;

pub(crate) fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// Identity key `i` (0..8), from a fixed seed, generated on first use.
pub(crate) fn key(i: u64) -> IdentityKeyPair {
    static KEYS: [OnceLock<Vec<u8>>; 8] = [const { OnceLock::new() }; 8];
    let der = KEYS[i as usize].get_or_init(|| {
        IdentityKeyPair::generate(KeySize::Rsa2048, &mut SeededEntropy::new(100 + i))
            .unwrap()
            .pkcs8_der()
            .expose()
            .to_vec()
    });
    IdentityKeyPair::from_pkcs8_der(der).unwrap()
}

pub(crate) struct Pki {
    pub(crate) authority: Authority,
    pub(crate) trust: Arc<TrustStore>,
}

/// An authority with key `authority_key` and a trust store holding only it.
pub(crate) fn pki(authority_key: u64) -> Pki {
    let authority = Authority::new(key(authority_key));
    let mut trust = TrustStore::new();
    trust.add_authority(authority.public_key().clone());
    Pki {
        authority,
        trust: Arc::new(trust),
    }
}

/// Key `key_index` certified by `pki` as `name` in `role`, valid over `valid`.
pub(crate) fn identity(
    pki: &Pki,
    key_index: u64,
    name: &str,
    role: Role,
    serial: u64,
    valid: (u64, u64),
) -> Arc<LocalIdentity> {
    let k = key(key_index);
    let cert = pki
        .authority
        .issue(&CertificateRequest {
            username: name.into(),
            public_key: k.public_key().clone(),
            role,
            serial,
            not_before: at(valid.0),
            not_after: at(valid.1),
        })
        .unwrap();
    Arc::new(LocalIdentity::new(k, cert).unwrap())
}

/// A configuration for key `key_index` certified as `name` in `role` (serial
/// `key_index`, valid around [`NOW`]), accepting `peer`.
pub(crate) fn config_expecting(
    pki: &Pki,
    key_index: u64,
    name: &str,
    role: Role,
    peer: ExpectedPeer,
) -> Config {
    Config::new(
        identity(
            pki,
            key_index,
            name,
            role,
            key_index,
            (NOW - 100, NOW + 100),
        ),
        pki.trust.clone(),
        peer,
    )
}

/// As [`config_expecting`], accepting any certified peer in any role: for tests about
/// something else than whom a side accepts.
pub(crate) fn config(pki: &Pki, key_index: u64, name: &str, role: Role) -> Config {
    config_expecting(
        pki,
        key_index,
        name,
        role,
        ExpectedPeer::any_certified(&Role::ALL),
    )
}

/// Runs a handshake, applying `tamper` to each message in flight (0 = Hello,
/// 1 = Response, 2 = Finish).
pub(crate) fn run(
    initiator: &Config,
    responder: &Config,
    seed: u64,
    mut tamper: impl FnMut(usize, &mut Vec<u8>),
) -> Result<(Established, Established), Error> {
    let mut rng = SeededEntropy::new(seed);
    let (i_state, mut hello) = Initiator::start(initiator, &mut rng)?;
    tamper(0, &mut hello);
    let (r_state, mut response) = Responder::handle_hello(responder, &hello, &mut rng)?;
    tamper(1, &mut response);
    let (i_done, mut finish) = i_state.handle_response(&response, at(NOW))?;
    tamper(2, &mut finish);
    let r_done = r_state.handle_finish(&finish, at(NOW))?;
    Ok((i_done, r_done))
}

pub(crate) fn no_tamper(_: usize, _: &mut Vec<u8>) {}

//! Fuzz entry points (STYLE.md §10): every parser of peer-supplied bytes in this
//! crate, with oracles where a round trip exists.
//!
//! `fuzz/fuzz_targets/*.rs` call these; the unit tests below run them under proptest
//! so they never rot.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chorus_framing::{Frame, FrameType, SeededEntropy};

use crate::cert::{Authority, Certificate, CertificateRequest, Role, TrustStore};
use crate::handshake::{Config, ExpectedPeer, Initiator, LocalIdentity, Responder};
use crate::identity::{IdentityKeyPair, KeySize};
use crate::sealed::SealedChannel;
use crate::secret::Secret;

pub use crate::obfuscation::fuzz_deobfuscate as obfuscation;
pub use crate::password::fuzz_parse_hash as password_hash;
pub use crate::srtp::fuzz_unprotect as srtp_unprotect;

const NOW: u64 = 1_800_000_000;

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(NOW)
}

/// Two certified parties, built once per process (key generation is slow).
fn parties() -> &'static (Config, Config) {
    static PARTIES: OnceLock<(Config, Config)> = OnceLock::new();
    PARTIES.get_or_init(|| {
        let key = |seed| {
            IdentityKeyPair::generate(KeySize::Rsa2048, &mut SeededEntropy::new(seed))
                .expect("key generation")
        };
        let authority = Authority::new(key(1));
        let mut trust = TrustStore::new();
        trust.add_authority(authority.public_key().clone());
        let trust = Arc::new(trust);
        let identity = |seed, name: &str, role| {
            let k = key(seed);
            let cert = authority
                .issue(&CertificateRequest {
                    username: name.into(),
                    public_key: k.public_key().clone(),
                    role,
                    serial: seed,
                    not_before: now() - Duration::from_secs(60),
                    not_after: now() + Duration::from_secs(60),
                })
                .expect("issue");
            Arc::new(LocalIdentity::new(k, cert).expect("identity"))
        };
        (
            Config::new(
                identity(2, "alice", Role::User),
                trust.clone(),
                ExpectedPeer::user("sn", &[Role::SuperNode]),
            ),
            Config::new(
                identity(3, "sn", Role::SuperNode),
                trust,
                ExpectedPeer::accept_any_user(),
            ),
        )
    })
}

/// A responder fed an arbitrary Hello.
pub fn handshake_hello(data: &[u8]) {
    let (_, responder) = parties();
    let _ = Responder::handle_hello(responder, data, &mut SeededEntropy::new(1));
}

/// An initiator fed an arbitrary Response.
pub fn handshake_response(data: &[u8]) {
    let (initiator, _) = parties();
    if let Ok((state, _)) = Initiator::start(initiator, &mut SeededEntropy::new(2)) {
        // Without the responder's ephemeral secret nothing can authenticate.
        assert!(state.handle_response(data, now()).is_err());
    }
}

/// A responder that answered a real Hello, fed an arbitrary Finish.
pub fn handshake_finish(data: &[u8]) {
    let (initiator, responder) = parties();
    let mut rng = SeededEntropy::new(3);
    let Ok((_, hello)) = Initiator::start(initiator, &mut rng) else {
        return;
    };
    if let Ok((state, _)) = Responder::handle_hello(responder, &hello, &mut rng) {
        assert!(state.handle_finish(data, now()).is_err());
    }
}

/// Certificate decoding; a decoded certificate re-encodes to the same bytes.
pub fn certificate(data: &[u8]) {
    if let Ok(cert) = Certificate::decode(data) {
        assert_eq!(cert.to_bytes(), data, "certificates have one encoding");
        assert_eq!(Certificate::decode(&cert.to_bytes()).ok(), Some(cert));
    }
}

/// Opening arbitrary sealed frames, and the sealed channel's inner frame parsing.
pub fn sealed_frame(data: &[u8]) {
    let (k1, iv1, k2, iv2) = (
        Secret::new([1; 32]),
        Secret::new([2; 12]),
        Secret::new([3; 32]),
        Secret::new([4; 12]),
    );
    let mut rx = SealedChannel::new(&k2, &iv2, &k1, &iv1);
    assert!(
        rx.open(&Frame::new(FrameType::Sealed, 0, data.to_vec()))
            .is_err()
    );
    // Authentic ciphertexts of arbitrary plaintexts: the inner parser sees hostile
    // bytes that passed authentication.
    let mut tx = SealedChannel::new(&k1, &iv1, &k2, &iv2);
    let frame = Frame::data(1, data.to_vec());
    let sealed = tx.seal(&frame).expect("a small frame seals");
    assert_eq!(rx.open(&sealed).expect("authentic frame opens"), frame);
}

#[cfg(test)]
mod tests {
    use proptest::collection::vec;
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        #[test]
        fn handshake_oracles_hold(data in vec(any::<u8>(), 0..1500)) {
            handshake_hello(&data);
            handshake_response(&data);
            handshake_finish(&data);
        }

        #[test]
        fn certificate_oracle_holds(data in vec(any::<u8>(), 0..1300)) {
            certificate(&data);
        }

        #[test]
        fn sealed_oracle_holds(data in vec(any::<u8>(), 0..600)) {
            sealed_frame(&data);
        }
    }

    #[test]
    fn certificate_oracle_holds_on_a_real_certificate() {
        let (alice, _) = parties();
        certificate(&alice.identity.certificate().to_bytes());
        assert!(Certificate::decode(&alice.identity.certificate().to_bytes()).is_ok());
    }
}

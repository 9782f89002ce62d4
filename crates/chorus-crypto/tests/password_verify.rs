//! Hashing, storing and verifying passwords through the public API, and raising the
//! policy: stored hashes below it are reported for re-hashing on the next login.

use chorus_crypto::password::{DEFAULT_ITERATIONS, PasswordConfig, PasswordHash, PasswordHasher};
use chorus_crypto::{AuthError, Error, KeyError};
use chorus_framing::{Entropy, EntropyError, SeededEntropy};
use proptest::prelude::*;

fn hasher(iterations: u32) -> PasswordHasher {
    let mut config = PasswordConfig::default();
    config.iterations = iterations;
    PasswordHasher::new(config).unwrap()
}

struct Broken;

impl Entropy for Broken {
    fn fill(&mut self, _: &mut [u8]) -> Result<(), EntropyError> {
        Err(EntropyError)
    }
}

#[test]
fn the_default_policy_hashes_with_600000_iterations_and_verifies() {
    // The one test at the production cost (a fraction of a second).
    let hasher = PasswordHasher::new(PasswordConfig::default()).unwrap();
    assert_eq!(DEFAULT_ITERATIONS, 600_000);
    let hash = hasher
        .hash(b"correct horse battery staple", &mut SeededEntropy::new(1))
        .unwrap();
    let text = hash.encode();
    assert!(text.starts_with("$pbkdf2-sha256$i=600000$"), "{text}");
    // 16-byte salt and 32-byte hash: 22 and 43 base64 characters.
    assert_eq!(text.len(), "$pbkdf2-sha256$i=600000$".len() + 22 + 1 + 43);
    let stored = PasswordHash::parse(&text).unwrap();
    assert!(
        !hasher
            .verify(&stored, b"correct horse battery staple")
            .unwrap()
            .needs_rehash()
    );
}

#[test]
fn a_wrong_password_is_rejected_as_an_authentication_failure() {
    let hasher = hasher(10);
    let hash = hasher.hash(b"secret", &mut SeededEntropy::new(2)).unwrap();
    for wrong in [&b""[..], b"Secret", b"secret ", b"secre", b"\0secret"] {
        assert_eq!(
            hasher.verify(&hash, wrong).unwrap_err(),
            Error::Auth(AuthError::WrongPassword),
            "{wrong:?}"
        );
    }
    assert!(hasher.verify(&hash, b"secret").is_ok());
}

#[test]
fn trailing_nul_bytes_and_long_passwords_collide_as_in_every_pbkdf2_hmac() {
    // HMAC zero-pads keys shorter than its 64-byte block and hashes longer ones, so
    // PBKDF2-HMAC-SHA256 treats `p` and `p\0`, and a 65+-byte `p` and SHA-256(p), as
    // the same password. Documented in the module; it helps no one who does not
    // already know the password.
    let hasher = hasher(10);
    let hash = hasher.hash(b"secret", &mut SeededEntropy::new(10)).unwrap();
    assert!(hasher.verify(&hash, b"secret\0\0").is_ok());

    let long = [b'x'; 65];
    let digest = ring::digest::digest(&ring::digest::SHA256, &long);
    let hash = hasher.hash(&long, &mut SeededEntropy::new(11)).unwrap();
    assert!(hasher.verify(&hash, digest.as_ref()).is_ok());
}

#[test]
fn each_hash_draws_a_fresh_salt() {
    let hasher = hasher(10);
    let mut entropy = SeededEntropy::new(3);
    let a = hasher.hash(b"same", &mut entropy).unwrap();
    let b = hasher.hash(b"same", &mut entropy).unwrap();
    assert_ne!(a.encode(), b.encode());
    assert_ne!(a, b);
    assert!(hasher.verify(&a, b"same").is_ok() && hasher.verify(&b, b"same").is_ok());
}

#[test]
fn a_failing_entropy_source_is_reported() {
    assert_eq!(
        hasher(10).hash(b"pw", &mut Broken).unwrap_err(),
        Error::Entropy(EntropyError)
    );
}

#[test]
fn hashes_below_the_policy_need_rehash_and_the_new_hash_does_not() {
    let old = hasher(1_000)
        .hash(b"pw", &mut SeededEntropy::new(4))
        .unwrap();
    let current = hasher(2_000);
    assert!(current.needs_rehash(&old));
    let verified = current.verify(&old, b"pw").unwrap();
    assert!(verified.needs_rehash());

    // The login server re-hashes the password it just verified and stores that.
    let upgraded = current.hash(b"pw", &mut SeededEntropy::new(5)).unwrap();
    assert_eq!(upgraded.iterations(), 2_000);
    assert!(!current.verify(&upgraded, b"pw").unwrap().needs_rehash());
    // A wrong password never reaches the rehash decision.
    assert!(current.verify(&old, b"px").is_err());
}

#[test]
fn shorter_salts_or_hashes_than_the_policy_also_need_rehash() {
    let mut config = PasswordConfig::default();
    config.iterations = 10;
    config.salt_len = 32;
    let long_salt = PasswordHasher::new(config.clone()).unwrap();
    config.salt_len = 16;
    config.hash_len = 16;
    let short_hash = PasswordHasher::new(config).unwrap();

    let standard = hasher(10).hash(b"pw", &mut SeededEntropy::new(6)).unwrap();
    assert!(long_salt.needs_rehash(&standard));
    let short = short_hash.hash(b"pw", &mut SeededEntropy::new(7)).unwrap();
    assert_eq!((short.salt_len(), short.hash_len()), (16, 16));
    assert!(hasher(10).needs_rehash(&short));
}

#[test]
fn hashes_above_the_policy_do_not_need_rehash() {
    // Lowering the policy never downgrades what is stored.
    let strong = hasher(500).hash(b"pw", &mut SeededEntropy::new(8)).unwrap();
    assert!(!hasher(100).needs_rehash(&strong));
    assert!(!hasher(100).verify(&strong, b"pw").unwrap().needs_rehash());
}

#[test]
fn debug_output_never_contains_the_salt_or_hash() {
    let hash = hasher(1).hash(b"pw", &mut SeededEntropy::new(9)).unwrap();
    let text = hash.encode();
    let shown = format!("{hash:?} {:?}", PasswordHash::parse(&text).unwrap());
    let mut fields = text.rsplit('$');
    let (hash_b64, salt_b64) = (fields.next().unwrap(), fields.next().unwrap());
    assert!(
        !shown.contains(hash_b64) && !shown.contains(salt_b64),
        "{shown}"
    );
    assert!(shown.contains("iterations: 1"), "{shown}");
}

#[test]
fn parse_errors_name_the_problem() {
    let err = "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaA"
        .parse::<PasswordHash>()
        .unwrap_err();
    assert!(matches!(err, Error::Key(KeyError::PasswordHash(_))));
    assert_eq!(
        err.to_string(),
        "unusable key: stored password hash: not a $pbkdf2-sha256$ hash"
    );
}

proptest! {
    #[test]
    fn encode_then_parse_round_trips(
        password in proptest::collection::vec(any::<u8>(), 0..64),
        iterations in 1u32..20,
        salt_len in 16usize..=64,
        hash_len in 16usize..=32,
        seed in any::<u64>(),
    ) {
        let mut config = PasswordConfig::default();
        config.iterations = iterations;
        config.salt_len = salt_len;
        config.hash_len = hash_len;
        let hasher = PasswordHasher::new(config).unwrap();
        let hash = hasher.hash(&password, &mut SeededEntropy::new(seed)).unwrap();
        let text = hash.encode();
        prop_assert_eq!(text.len(), hash.encoded_len());
        let parsed = PasswordHash::parse(&text).unwrap();
        prop_assert_eq!(&parsed, &hash);
        prop_assert_eq!(parsed.encode(), text);
        prop_assert!(hasher.verify(&parsed, &password).is_ok());
    }

    #[test]
    fn arbitrary_strings_never_panic_the_parser(s in any::<String>()) {
        if let Ok(hash) = PasswordHash::parse(&s) {
            prop_assert_eq!(hash.encode(), s);
        }
    }

    #[test]
    fn strings_shaped_like_hashes_never_panic_the_parser(
        s in r"\$pbkdf2-sha256\$i=[0-9]{0,9}\$[A-Za-z0-9+/=]{0,90}\$[A-Za-z0-9+/=]{0,90}"
    ) {
        if let Ok(hash) = PasswordHash::parse(&s) {
            prop_assert_eq!(hash.encode(), s);
        }
    }
}

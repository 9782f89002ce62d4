//! Password-based encryption at rest: round trips, wrong passwords, tampering and
//! truncation are all told apart and none is accepted.

use chorus_crypto::at_rest::{
    AtRestConfig, Header, MAGIC, is_sealed, open_with_password, seal_with_password,
};
use chorus_crypto::{AuthError, DecodeError, Error, UsageError};
use chorus_framing::SeededEntropy;
use proptest::prelude::*;

fn fast() -> AtRestConfig {
    let mut c = AtRestConfig::default();
    c.iterations = 2;
    c
}

fn sealed(plain: &[u8]) -> Vec<u8> {
    seal_with_password(plain, b"pw", &fast(), &mut SeededEntropy::new(9)).unwrap()
}

#[test]
fn round_trip_restores_the_plaintext_and_records_parameters() {
    let blob = sealed(b"<config version=\"1.0\"/>");
    assert!(is_sealed(&blob));
    assert_eq!(&blob[..8], &MAGIC);
    let header = Header::decode(&blob).unwrap();
    assert_eq!(header.iterations, 2);
    assert_eq!(header.salt.len(), 16);
    assert_eq!(blob.len(), header.len + 23 + 16);
    assert_eq!(
        &open_with_password(&blob, b"pw").unwrap()[..],
        b"<config version=\"1.0\"/>"
    );
}

#[test]
fn empty_plaintext_round_trips() {
    assert!(open_with_password(&sealed(b""), b"pw").unwrap().is_empty());
}

#[test]
fn wrong_password_is_a_clear_error() {
    let err = open_with_password(&sealed(b"secret"), b"pW").unwrap_err();
    assert_eq!(err, Error::Auth(AuthError::WrongPassword));
    assert_eq!(err.to_string(), "authentication failed: wrong password");
}

#[test]
fn same_input_seals_differently_each_time() {
    let mut rng = SeededEntropy::new(1);
    let a = seal_with_password(b"x", b"pw", &fast(), &mut rng).unwrap();
    let b = seal_with_password(b"x", b"pw", &fast(), &mut rng).unwrap();
    assert_ne!(a, b);
}

#[test]
fn every_bit_flip_is_rejected() {
    let blob = sealed(b"buddy list");
    for i in 0..blob.len() * 8 {
        let mut bad = blob.clone();
        bad[i / 8] ^= 1 << (i % 8);
        assert!(open_with_password(&bad, b"pw").is_err(), "bit {i} accepted");
    }
    // Past the header, damage with the right password is tampering, not a wrong password.
    let header = Header::decode(&blob).unwrap();
    let mut bad = blob.clone();
    *bad.last_mut().unwrap() ^= 1;
    assert_eq!(
        open_with_password(&bad, b"pw").unwrap_err(),
        Error::Auth(AuthError::BadTag)
    );
    let mut bad = blob.clone();
    bad[header.len] ^= 1;
    assert_eq!(
        open_with_password(&bad, b"pw").unwrap_err(),
        Error::Auth(AuthError::BadTag)
    );
}

#[test]
fn every_truncation_is_rejected() {
    let blob = sealed(b"buddy list");
    for n in 0..blob.len() {
        assert!(
            open_with_password(&blob[..n], b"pw").is_err(),
            "prefix {n} accepted"
        );
    }
    assert!(matches!(
        open_with_password(&blob[..20], b"pw").unwrap_err(),
        Error::Decode(DecodeError::Truncated { .. })
    ));
}

#[test]
fn damaged_headers_name_the_field() {
    let blob = sealed(b"x");
    assert_eq!(
        open_with_password(b"<config/>", b"pw").unwrap_err(),
        Error::Decode(DecodeError::NotChorus)
    );
    let mut v = blob.clone();
    v[8] = 2;
    assert_eq!(
        Header::decode(&v).unwrap_err(),
        Error::Decode(DecodeError::UnknownVersion(2))
    );
    let mut v = blob.clone();
    v[10] = 1;
    assert_eq!(
        Header::decode(&v).unwrap_err(),
        Error::Decode(DecodeError::ReservedNotZero)
    );
    let mut v = blob.clone();
    v[9] = 8;
    assert!(matches!(
        Header::decode(&v),
        Err(Error::Decode(DecodeError::TooLong { .. }))
    ));
    let mut v = blob.clone();
    v[12..16].copy_from_slice(&0u32.to_be_bytes());
    assert!(matches!(
        Header::decode(&v),
        Err(Error::Decode(DecodeError::TooLong { .. }))
    ));
    v[12..16].copy_from_slice(&u32::MAX.to_be_bytes());
    assert!(matches!(
        Header::decode(&v),
        Err(Error::Decode(DecodeError::TooLong { .. }))
    ));
}

#[test]
fn invalid_configurations_are_refused() {
    let mut rng = SeededEntropy::new(1);
    let mut c = fast();
    c.iterations = 0;
    assert!(matches!(
        seal_with_password(b"", b"", &c, &mut rng),
        Err(Error::Usage(UsageError::InvalidConfig(_)))
    ));
    let mut c = fast();
    c.salt_len = 15;
    assert!(matches!(
        seal_with_password(b"", b"", &c, &mut rng),
        Err(Error::Usage(UsageError::InvalidConfig(_)))
    ));
    c.salt_len = 65;
    assert!(matches!(
        seal_with_password(b"", b"", &c, &mut rng),
        Err(Error::Usage(UsageError::InvalidConfig(_)))
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn any_plaintext_and_password_round_trip(
        plain in proptest::collection::vec(any::<u8>(), 0..512),
        password in proptest::collection::vec(any::<u8>(), 0..40),
        seed in any::<u64>(),
    ) {
        let blob = seal_with_password(&plain, &password, &fast(), &mut SeededEntropy::new(seed)).unwrap();
        prop_assert_eq!(&open_with_password(&blob, &password).unwrap()[..], &plain[..]);
    }

}

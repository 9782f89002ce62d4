//! RFC 7914 §11 PBKDF2-HMAC-SHA-256 vectors, checked byte for byte through the
//! login server's path: the stored string is parsed and the password verified
//! against all 64 derived bytes.

#[path = "vectors/pbkdf2_rfc7914.rs"]
mod vectors;

use chorus_crypto::password::{PasswordConfig, PasswordHash, PasswordHasher};
use chorus_crypto::{AuthError, Error};
use vectors::{RFC7914_SECTION_11, hex};

/// A plain base64 encoder (standard alphabet, no padding), independent of the crate's.
fn b64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for chunk in bytes.chunks(3) {
        let mut b = [0u8; 3];
        b[..chunk.len()].copy_from_slice(chunk);
        let n = u32::from_be_bytes([0, b[0], b[1], b[2]]);
        for i in 0..=chunk.len() {
            s.push(ALPHABET[((n >> (18 - 6 * i)) & 0x3f) as usize] as char);
        }
    }
    s
}

/// The stored form of a vector: its parameters, salt and derived key.
fn stored(iterations: u32, salt: &[u8], derived: &[u8]) -> String {
    format!(
        "$pbkdf2-sha256$i={iterations}${}${}",
        b64(salt),
        b64(derived)
    )
}

fn hasher() -> PasswordHasher {
    PasswordHasher::new(PasswordConfig::default()).unwrap()
}

#[test]
fn the_rfc_7914_vectors_verify_and_round_trip_through_the_stored_form() {
    for v in &RFC7914_SECTION_11 {
        let derived = hex(v.derived);
        assert_eq!(derived.len(), v.dk_len);
        let text = stored(v.iterations, v.salt.as_bytes(), &derived);
        let hash = PasswordHash::parse(&text).unwrap();
        assert_eq!(hash.iterations(), v.iterations);
        assert_eq!(hash.salt_len(), v.salt.len());
        assert_eq!(hash.hash_len(), 64);
        assert_eq!(hash.encode(), text);

        let verified = hasher().verify(&hash, v.password.as_bytes()).unwrap();
        // A 4-byte salt and fewer than 600,000 iterations are below the default policy.
        assert!(verified.needs_rehash());
        assert_eq!(
            hasher().verify(&hash, b"wrong").unwrap_err(),
            Error::Auth(AuthError::WrongPassword)
        );
    }
}

#[test]
fn every_bit_of_the_derived_key_is_checked() {
    // On the c=1 vector (cheap to verify): flipping any one of the 512 bits of the
    // stored key makes the right password fail, so all 64 bytes are compared.
    let v = &RFC7914_SECTION_11[0];
    let derived = hex(v.derived);
    for bit in 0..derived.len() * 8 {
        let mut flipped = derived.clone();
        flipped[bit / 8] ^= 1 << (bit % 8);
        let hash = PasswordHash::parse(&stored(1, v.salt.as_bytes(), &flipped)).unwrap();
        assert!(
            hasher().verify(&hash, v.password.as_bytes()).is_err(),
            "bit {bit}"
        );
    }
}

#[test]
fn the_salt_and_iteration_count_are_part_of_the_check() {
    let v = &RFC7914_SECTION_11[0];
    let derived = hex(v.derived);
    for (text, expected) in [
        (stored(2, v.salt.as_bytes(), &derived), false),
        (stored(1, b"salT", &derived), false),
        (stored(1, b"salt ", &derived), false),
        // Only the first 32 bytes: PBKDF2 output blocks are independent, so this is
        // the correct 32-byte output and verifies.
        (stored(1, v.salt.as_bytes(), &derived[..32]), true),
    ] {
        let hash = PasswordHash::parse(&text).unwrap();
        let ok = hasher().verify(&hash, v.password.as_bytes()).is_ok();
        assert_eq!(ok, expected, "{text}");
    }
}

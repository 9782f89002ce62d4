//! Fuzz entry points (STYLE.md §10): every parser of peer-supplied bytes in this crate,
//! with round-trip oracles. `fuzz/fuzz_targets/*.rs` call these; the tests below run
//! them under proptest so they never rot.

use bytes::BytesMut;

use crate::stun::{Key, Limits, Message};

/// Decode, re-encode, decode again: the two decoded messages are equal, and the
/// re-encoding has exactly `encoded_len()` bytes.
///
/// # Panics
/// When the oracle fails, which is the bug a fuzzer reports.
pub fn stun_message(data: &[u8]) {
    let limits = Limits::default();
    if let Ok(msg) = Message::decode(data, &limits) {
        let key = Key::short_term("fuzz");
        let mut out = BytesMut::new();
        msg.encode(Some(&key), &mut out)
            .expect("a decoded message re-encodes");
        assert_eq!(out.len(), msg.encoded_len());
        assert_eq!(Message::decode(&out, &limits), Ok(msg));
    }
}

/// Integrity checking on arbitrary bytes: never panics, and whatever verifies under the
/// fixed key still verifies after a decode and re-encode with that key.
///
/// # Panics
/// When the oracle fails.
pub fn stun_message_integrity(data: &[u8]) {
    let key = Key::short_term("fuzz");
    let verified = Message::verify(data, &key).is_ok();
    if let Ok(msg) = Message::decode(data, &Limits::default())
        && verified
        && (msg.message_integrity || msg.message_integrity_sha256)
    {
        let mut out = BytesMut::new();
        msg.encode(Some(&key), &mut out).expect("re-encodes");
        assert_eq!(Message::verify(&out, &key), Ok(()));
    }
}

#[cfg(test)]
mod tests {
    use proptest::collection::vec;
    use proptest::prelude::*;

    use super::*;
    use crate::stun::{Attribute, Class, Method, TransactionId};

    fn seed() -> Vec<u8> {
        let mut m = Message::new(Class::Request, Method::BINDING, TransactionId::new([1; 12]));
        m.attributes.push(Attribute::Username("a:b"));
        m.message_integrity = true;
        m.fingerprint = true;
        let mut out = BytesMut::new();
        m.encode(Some(&Key::short_term("fuzz")), &mut out).unwrap();
        out.to_vec()
    }

    #[test]
    fn seeds_pass_both_oracles() {
        stun_message(&seed());
        stun_message_integrity(&seed());
    }

    proptest! {
        #[test]
        fn stun_message_oracle_holds(b in vec(any::<u8>(), 0..300)) {
            stun_message(&b);
            stun_message_integrity(&b);
        }

        #[test]
        fn oracles_hold_for_mutated_seeds(pos in 0usize..64, byte in any::<u8>()) {
            let mut b = seed();
            let i = pos % b.len();
            b[i] = byte;
            stun_message(&b);
            stun_message_integrity(&b);
        }
    }
}

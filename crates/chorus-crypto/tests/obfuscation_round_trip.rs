//! The obfuscation layer through its public API: every payload survives a round trip,
//! each packet is keyed by its own IV, the output looks like noise, and no input makes
//! `deobfuscate` panic.

use bytes::BytesMut;
use chorus_crypto::obfuscation::{IV_LEN, OVERHEAD, Obfuscator};
use chorus_crypto::{DecodeError, Error};
use chorus_framing::{Entropy, EntropyError, SeededEntropy};
use proptest::collection::vec;
use proptest::prelude::*;

const KEY: &[u8; 32] = b"chorus obfuscation test key 0001";

/// An entropy source that hands out one chosen IV.
struct FixedIv([u8; IV_LEN]);

impl Entropy for FixedIv {
    fn fill(&mut self, dest: &mut [u8]) -> Result<(), EntropyError> {
        assert_eq!(dest.len(), IV_LEN, "the IV is the only randomness drawn");
        dest.copy_from_slice(&self.0);
        Ok(())
    }
}

struct Broken;

impl Entropy for Broken {
    fn fill(&mut self, _: &mut [u8]) -> Result<(), EntropyError> {
        Err(EntropyError)
    }
}

fn obfuscate(o: &Obfuscator, iv: [u8; IV_LEN], payload: &[u8]) -> BytesMut {
    let mut wire = BytesMut::new();
    o.obfuscate(&mut FixedIv(iv), payload, &mut wire).unwrap();
    wire
}

#[test]
fn the_wire_packet_is_the_iv_then_as_many_bytes_as_the_payload() {
    let o = Obfuscator::new(KEY).unwrap();
    let wire = obfuscate(&o, [1, 2, 3, 4, 5, 6, 7, 8], b"an SRTP packet");
    assert_eq!(wire.len(), 14 + OVERHEAD);
    assert_eq!(wire[..IV_LEN], [1, 2, 3, 4, 5, 6, 7, 8]);
    assert_ne!(&wire[IV_LEN..], b"an SRTP packet");
}

#[test]
fn an_empty_payload_is_just_an_iv() {
    let o = Obfuscator::new(KEY).unwrap();
    let wire = obfuscate(&o, [9; IV_LEN], b"");
    assert_eq!(wire[..], [9; IV_LEN]);
    let mut plain = BytesMut::from(&b"x"[..]);
    o.deobfuscate(&wire, &mut plain).unwrap();
    assert_eq!(&plain[..], b"x");
}

#[test]
fn a_failing_entropy_source_is_reported_and_writes_nothing() {
    let o = Obfuscator::new(KEY).unwrap();
    let mut wire = BytesMut::from(&b"kept"[..]);
    assert_eq!(
        o.obfuscate(&mut Broken, b"payload", &mut wire),
        Err(Error::Entropy(EntropyError))
    );
    assert_eq!(&wire[..], b"kept");
}

#[test]
fn inputs_shorter_than_the_iv_are_truncated() {
    let o = Obfuscator::new(KEY).unwrap();
    let mut out = BytesMut::new();
    assert_eq!(
        o.deobfuscate(&[0; IV_LEN - 1], &mut out),
        Err(Error::Decode(DecodeError::Truncated {
            offset: 0,
            needed: IV_LEN
        }))
    );
    assert!(out.is_empty());
}

#[test]
fn a_fixed_rtp_header_comes_out_as_uniformly_distributed_bytes() {
    // 2000 packets with the same 160-byte payload (think: an RTP header and silence)
    // under fresh IVs. A chi-square test over the byte values of the obfuscated
    // bodies: 255 degrees of freedom, mean 255, standard deviation about 22.6.
    let o = Obfuscator::new(KEY).unwrap();
    let mut payload = [0u8; 160];
    payload[..4].copy_from_slice(&[0x80, 0x6f, 0x00, 0x01]);
    let mut entropy = SeededEntropy::new(6229);
    let mut counts = [0u64; 256];
    let mut first_bytes = std::collections::HashSet::new();
    for _ in 0..2000 {
        let mut wire = BytesMut::new();
        o.obfuscate(&mut entropy, &payload, &mut wire).unwrap();
        first_bytes.insert(wire[IV_LEN]);
        for &b in &wire[IV_LEN..] {
            counts[usize::from(b)] += 1;
        }
    }
    let expected = (2000.0 * 160.0) / 256.0;
    let chi2: f64 = counts
        .iter()
        .map(|&c| (c as f64 - expected).powi(2) / expected)
        .sum();
    assert!(chi2 < 400.0, "chi-square {chi2}");
    // The RTP version byte no longer sits at a fixed value.
    assert!(first_bytes.len() > 240, "{} distinct", first_bytes.len());
}

proptest! {
    #[test]
    fn round_trips_any_payload(payload in vec(any::<u8>(), 0..2048), seed in any::<u64>()) {
        let o = Obfuscator::new(KEY).unwrap();
        let mut wire = BytesMut::new();
        o.obfuscate(&mut SeededEntropy::new(seed), &payload, &mut wire).unwrap();
        prop_assert_eq!(wire.len(), payload.len() + OVERHEAD);
        let mut plain = BytesMut::new();
        Obfuscator::new(KEY).unwrap().deobfuscate(&wire, &mut plain).unwrap();
        prop_assert_eq!(&plain[..], &payload[..]);
    }

    #[test]
    fn distinct_ivs_give_distinct_ciphertexts(
        payload in vec(any::<u8>(), 16..1500),
        a in any::<[u8; IV_LEN]>(),
        b in any::<[u8; IV_LEN]>(),
    ) {
        prop_assume!(a != b);
        let o = Obfuscator::new(KEY).unwrap();
        let (x, y) = (obfuscate(&o, a, &payload), obfuscate(&o, b, &payload));
        // With 16 or more payload bytes, equal bodies would take a 2^-128 accident.
        prop_assert_ne!(&x[IV_LEN..], &y[IV_LEN..]);
        prop_assert_ne!(&x[IV_LEN..], &payload[..]);
    }

    #[test]
    fn the_same_iv_and_key_give_the_same_packet(
        payload in vec(any::<u8>(), 0..300),
        iv in any::<[u8; IV_LEN]>(),
    ) {
        let o = Obfuscator::new(KEY).unwrap();
        prop_assert_eq!(obfuscate(&o, iv, &payload), obfuscate(&o.clone(), iv, &payload));
    }

    #[test]
    fn another_key_does_not_recover_the_payload(
        payload in vec(any::<u8>(), 16..300),
        iv in any::<[u8; IV_LEN]>(),
    ) {
        let wire = obfuscate(&Obfuscator::new(KEY).unwrap(), iv, &payload);
        let mut plain = BytesMut::new();
        Obfuscator::new(&KEY[..16]).unwrap().deobfuscate(&wire, &mut plain).unwrap();
        prop_assert_ne!(&plain[..], &payload[..]);
    }

    #[test]
    fn arbitrary_bytes_never_panic_deobfuscate(data in vec(any::<u8>(), 0..2048)) {
        let o = Obfuscator::new(KEY).unwrap();
        let mut out = BytesMut::new();
        match o.deobfuscate(&data, &mut out) {
            Ok(()) => prop_assert_eq!(out.len() + OVERHEAD, data.len()),
            Err(e) => {
                prop_assert!(data.len() < IV_LEN);
                prop_assert!(matches!(e, Error::Decode(DecodeError::Truncated { .. })), "{:?}", e);
            }
        }
    }
}

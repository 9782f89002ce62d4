//! RFC 6229 §2 test vectors for the RC4 that the obfuscation layer uses (the `rc4`
//! crate), compared byte for byte at every published offset, for both sets of keys.
//!
//! The vectors live in `vectors/rc4_rfc6229.txt`, in the RFC's own layout, so that
//! the file can be checked against the RFC by eye.

use chorus_crypto::obfuscation::KEYSTREAM_DROP;
use rc4::{KeyInit, Rc4, StreamCipher};

const VECTORS: &str = include_str!("vectors/rc4_rfc6229.txt");

/// The offsets RFC 6229 lists for every key.
const OFFSETS: [usize; 18] = [
    0, 16, 240, 256, 496, 512, 752, 768, 1008, 1024, 1520, 1536, 2032, 2048, 3056, 3072, 4080, 4096,
];

/// One key and the 16-byte keystream blocks the RFC gives for it.
struct Vector {
    bits: usize,
    key: Vec<u8>,
    blocks: Vec<(usize, Vec<u8>)>,
}

fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    assert_eq!(digits.len() % 2, 0, "odd hex: {s}");
    digits
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
        .collect()
}

/// Parses the RFC layout: `Key length: N bits.`, `key: 0x..`, then
/// `DEC <offset> HEX <offset>:  <16 bytes>` lines.
fn vectors() -> Vec<Vector> {
    let mut out: Vec<Vector> = Vec::new();
    for line in VECTORS.lines().map(str::trim) {
        if let Some(bits) = line
            .strip_prefix("Key length: ")
            .and_then(|l| l.strip_suffix(" bits."))
        {
            out.push(Vector {
                bits: bits.parse().unwrap(),
                key: Vec::new(),
                blocks: Vec::new(),
            });
        } else if let Some(key) = line.strip_prefix("key: 0x") {
            out.last_mut().unwrap().key = hex(key);
        } else if let Some(rest) = line.strip_prefix("DEC ") {
            let (dec, rest) = rest.split_once(" HEX ").unwrap();
            let (hex_offset, bytes) = rest.split_once(':').unwrap();
            let offset: usize = dec.trim().parse().unwrap();
            assert_eq!(usize::from_str_radix(hex_offset.trim(), 16), Ok(offset));
            out.last_mut().unwrap().blocks.push((offset, hex(bytes)));
        } else {
            assert!(
                line.is_empty() || line.starts_with('#'),
                "stray line {line:?}"
            );
        }
    }
    out
}

#[test]
fn the_file_holds_both_rfc_sets_of_seven_key_lengths_at_all_offsets() {
    let vectors = vectors();
    let lengths: Vec<usize> = vectors.iter().map(|v| v.bits).collect();
    let set = [40, 56, 64, 80, 128, 192, 256];
    assert_eq!(lengths, [set, set].concat());
    for v in &vectors {
        assert_eq!(v.key.len() * 8, v.bits);
        let offsets: Vec<usize> = v.blocks.iter().map(|(o, _)| *o).collect();
        assert_eq!(offsets, OFFSETS, "key {:02x?}", v.key);
        assert!(v.blocks.iter().all(|(_, b)| b.len() == 16));
    }
    // The first set's keys count up from 1.
    for v in &vectors[..7] {
        assert!(v.key.iter().zip(1u8..).all(|(k, i)| *k == i));
    }
}

#[test]
fn rc4_keystream_matches_every_rfc_6229_vector_byte_for_byte() {
    for v in vectors() {
        let mut rc4 = Rc4::new_from_slice(&v.key).unwrap();
        let mut keystream = vec![0u8; 4096 + 16];
        rc4.write_keystream(&mut keystream);
        for (offset, expected) in &v.blocks {
            assert_eq!(
                &keystream[*offset..offset + 16],
                &expected[..],
                "{}-bit key {:02x?} at offset {offset}",
                v.bits,
                v.key
            );
        }
    }
}

#[test]
fn encrypting_zeros_gives_the_keystream_and_decrypting_restores_them() {
    // RFC 6229 lists keystream, which is what RC4 encryption of zero bytes yields.
    let v = vectors().into_iter().next().unwrap();
    let mut data = vec![0u8; 32];
    Rc4::new_from_slice(&v.key)
        .unwrap()
        .apply_keystream(&mut data);
    assert_eq!(data[..16], v.blocks[0].1[..]);
    assert_eq!(data[16..], v.blocks[1].1[..]);
    Rc4::new_from_slice(&v.key)
        .unwrap()
        .apply_keystream(&mut data);
    assert_eq!(data, [0; 32]);
}

#[test]
fn after_the_obfuscation_drop_the_keystream_continues_at_rfc_offset_3072() {
    // The obfuscation layer discards KEYSTREAM_DROP bytes and then uses the stream;
    // the RFC's DEC 3072 line is exactly the first block an obfuscated packet uses.
    assert_eq!(KEYSTREAM_DROP, 3072);
    for v in vectors() {
        let mut rc4 = Rc4::new_from_slice(&v.key).unwrap();
        let mut discard = vec![0u8; KEYSTREAM_DROP];
        rc4.write_keystream(&mut discard);
        let mut first = [0u8; 16];
        rc4.write_keystream(&mut first);
        let (_, expected) = v.blocks.iter().find(|(o, _)| *o == 3072).unwrap();
        assert_eq!(first[..], expected[..], "{}-bit key", v.bits);
    }
}

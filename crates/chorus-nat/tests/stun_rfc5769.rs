//! The published STUN test vectors, byte for byte: RFC 5769 §2.1-§2.4 and RFC 8489
//! Appendix B.1 (SHA-256 long-term request with USERHASH).

use std::net::SocketAddr;

use bytes::BytesMut;
use chorus_nat::stun::{
    AlgorithmEntry, AlgorithmList, Attribute, Class, Key, Limits, Message, Method,
    PasswordAlgorithm, TransactionId, userhash,
};

fn hex(text: &str) -> Vec<u8> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .flat_map(str::split_whitespace)
        .map(|b| u8::from_str_radix(b, 16).expect("hex byte"))
        .collect()
}

const SHORT_TERM_PASSWORD: &str = "VOkJxbRl1RmTxUk/WvJxBt";
const RFC5769_TID: [u8; 12] = [
    0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae,
];
const LONG_TERM_USER: &str = "\u{30DE}\u{30C8}\u{30EA}\u{30C3}\u{30AF}\u{30B9}";

/// Decodes, verifies, checks the fields, re-encodes with the RFC's padding byte and
/// compares byte for byte.
fn check(wire: &[u8], expected: &Message<'_>, key: &Key, pad_byte: u8) {
    let decoded = Message::decode(wire, &Limits::default()).expect("vector decodes");
    assert_eq!(&decoded, expected);
    Message::verify(wire, key).expect("vector's integrity verifies");
    assert!(Message::verify(wire, &Key::short_term("wrong")).is_err());
    let mut out = BytesMut::new();
    expected
        .encode_padded(Some(key), pad_byte, &mut out)
        .expect("encodes");
    assert_eq!(out.len(), expected.encoded_len());
    assert_eq!(&out[..], wire, "re-encoding reproduces the vector");
}

#[test]
fn rfc5769_sample_request_decodes_verifies_and_reencodes_byte_for_byte() {
    let wire = hex(include_str!("vectors/rfc5769-2.1-request.hex"));
    assert_eq!(wire.len(), 108);
    let mut m = Message::new(
        Class::Request,
        Method::BINDING,
        TransactionId::new(RFC5769_TID),
    );
    m.attributes = vec![
        Attribute::Software("STUN test client"),
        Attribute::Priority(0x6e00_01ff),
        Attribute::IceControlled(0x932f_f9b1_5126_3b36),
        Attribute::Username("evtj:h6vY"),
    ];
    m.message_integrity = true;
    m.fingerprint = true;
    check(&wire, &m, &Key::short_term(SHORT_TERM_PASSWORD), b' ');
}

#[test]
fn rfc5769_ipv4_response_decodes_verifies_and_reencodes_byte_for_byte() {
    let wire = hex(include_str!("vectors/rfc5769-2.2-ipv4-response.hex"));
    assert_eq!(wire.len(), 80);
    let mapped: SocketAddr = "192.0.2.1:32853".parse().unwrap();
    let mut m = Message::new(
        Class::Success,
        Method::BINDING,
        TransactionId::new(RFC5769_TID),
    );
    m.attributes = vec![
        Attribute::Software("test vector"),
        Attribute::XorMappedAddress(mapped),
    ];
    m.message_integrity = true;
    m.fingerprint = true;
    check(&wire, &m, &Key::short_term(SHORT_TERM_PASSWORD), b' ');
    let decoded = Message::decode(&wire, &Limits::default()).unwrap();
    assert_eq!(decoded.mapped_address(), Some(mapped));
}

#[test]
fn rfc5769_ipv6_response_decodes_verifies_and_reencodes_byte_for_byte() {
    let wire = hex(include_str!("vectors/rfc5769-2.3-ipv6-response.hex"));
    assert_eq!(wire.len(), 92);
    let mapped: SocketAddr = "[2001:db8:1234:5678:11:2233:4455:6677]:32853"
        .parse()
        .unwrap();
    let mut m = Message::new(
        Class::Success,
        Method::BINDING,
        TransactionId::new(RFC5769_TID),
    );
    m.attributes = vec![
        Attribute::Software("test vector"),
        Attribute::XorMappedAddress(mapped),
    ];
    m.message_integrity = true;
    m.fingerprint = true;
    check(&wire, &m, &Key::short_term(SHORT_TERM_PASSWORD), b' ');
}

#[test]
fn rfc5769_long_term_request_decodes_verifies_and_reencodes_byte_for_byte() {
    let wire = hex(include_str!("vectors/rfc5769-2.4-long-term-request.hex"));
    assert_eq!(wire.len(), 116);
    let tid = [
        0x78, 0xad, 0x34, 0x33, 0xc6, 0xad, 0x72, 0xc0, 0x29, 0xda, 0x41, 0x2e,
    ];
    let mut m = Message::new(Class::Request, Method::BINDING, TransactionId::new(tid));
    m.attributes = vec![
        Attribute::Username(LONG_TERM_USER),
        Attribute::Nonce("f//499k954d6OL34oL9FSTvy64sA"),
        Attribute::Realm("example.org"),
    ];
    m.message_integrity = true;
    let key = Key::long_term(
        LONG_TERM_USER,
        "example.org",
        "TheMatrIX",
        PasswordAlgorithm::Md5,
    );
    check(&wire, &m, &key, 0);
}

/// RFC 8489 Appendix B.1: the request with USERHASH, NONCE, REALM, PASSWORD-ALGORITHM
/// (SHA-256) and MESSAGE-INTEGRITY-SHA256. The MESSAGE-INTEGRITY-SHA256 value printed
/// in the RFC is wrong (a reported erratum); this is the corrected value, which an
/// independent implementation computes as well. USERHASH is SHA-256 of
/// "username:realm" as the RFC prints it.
#[test]
fn rfc8489_appendix_b1_sha256_request_with_userhash_matches() {
    let tid = [
        0x78, 0xad, 0x34, 0x33, 0xc6, 0xad, 0x72, 0xc0, 0x29, 0xda, 0x41, 0x2e,
    ];
    let hash = userhash(LONG_TERM_USER, "example.org");
    assert_eq!(
        hash,
        [
            0x4a, 0x3c, 0xf3, 0x8f, 0xef, 0x69, 0x92, 0xbd, 0xa9, 0x52, 0xc6, 0x78, 0x04, 0x17,
            0xda, 0x0f, 0x24, 0x81, 0x94, 0x15, 0x56, 0x9e, 0x60, 0xb2, 0x05, 0xc4, 0x6e, 0x41,
            0x40, 0x7f, 0x17, 0x04,
        ]
    );
    let mut m = Message::new(Class::Request, Method::BINDING, TransactionId::new(tid));
    m.attributes = vec![
        Attribute::UserHash(hash),
        Attribute::Nonce("obMatJos2AAACf//499k954d6OL34oL9FSTvy64sA"),
        Attribute::Realm("example.org"),
        Attribute::PasswordAlgorithm(AlgorithmEntry {
            algorithm: PasswordAlgorithm::Sha256.number(),
            parameters: &[],
        }),
    ];
    m.message_integrity_sha256 = true;
    let key = Key::long_term(
        LONG_TERM_USER,
        "example.org",
        "TheMatrIX",
        PasswordAlgorithm::Sha256,
    );
    let mut wire = BytesMut::new();
    m.encode(Some(&key), &mut wire).unwrap();
    assert_eq!(wire.len(), 20 + 0x90);
    assert_eq!(&wire[..4], &[0x00, 0x01, 0x00, 0x90]);
    assert_eq!(
        &wire[wire.len() - 32..],
        &[
            0xb5, 0xc7, 0xbf, 0x00, 0x5b, 0x6c, 0x52, 0xa2, 0x1c, 0x51, 0xc5, 0xe8, 0x92, 0xf8,
            0x19, 0x24, 0x13, 0x62, 0x96, 0xcb, 0x92, 0x7c, 0x43, 0x14, 0x93, 0x09, 0x27, 0x8c,
            0xc6, 0x51, 0x8e, 0x65,
        ]
    );
    assert_eq!(Message::decode(&wire, &Limits::default()).unwrap(), m);
    Message::verify(&wire, &key).unwrap();
    // PASSWORD-ALGORITHMS round-trips too.
    let mut list = Vec::new();
    AlgorithmList::write(
        &[
            AlgorithmEntry {
                algorithm: 2,
                parameters: &[],
            },
            AlgorithmEntry {
                algorithm: 1,
                parameters: &[],
            },
        ],
        &mut list,
    );
    let parsed = AlgorithmList::from_wire(&list).unwrap();
    assert_eq!(
        parsed.iter().map(|e| e.algorithm).collect::<Vec<_>>(),
        [2, 1]
    );
}

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::BytesMut;
use proptest::collection::vec;
use proptest::prelude::*;

use super::*;

fn sample(key: &Key) -> BytesMut {
    let mut m = Message::new(Class::Success, Method::BINDING, TransactionId::new([9; 12]));
    m.attributes.push(Attribute::XorMappedAddress(
        "198.51.100.7:4242".parse().unwrap(),
    ));
    m.attributes.push(Attribute::Software("chorus"));
    m.message_integrity = true;
    m.fingerprint = true;
    let mut out = BytesMut::new();
    m.encode(Some(key), &mut out).unwrap();
    out
}

#[test]
fn message_type_interleaves_method_and_class_bits() {
    // RFC 8489 §5: Binding request 0x0001, success 0x0101, error 0x0111, indication 0x0011.
    assert_eq!(message_type(Class::Request, Method::BINDING), 0x0001);
    assert_eq!(message_type(Class::Success, Method::BINDING), 0x0101);
    assert_eq!(message_type(Class::Error, Method::BINDING), 0x0111);
    assert_eq!(message_type(Class::Indication, Method::BINDING), 0x0011);
    assert_eq!(message_type(Class::Request, Method::ALLOCATE), 0x0003);
    for m in [0u16, 1, 0x7f, 0x80, 0xfff] {
        for c in [
            Class::Request,
            Class::Indication,
            Class::Success,
            Class::Error,
        ] {
            let method = Method::new(m).unwrap();
            assert_eq!(split_type(message_type(c, method)), (c, method));
        }
    }
    assert_eq!(Method::new(0x1000), None);
}

#[test]
fn rejects_non_stun_headers() {
    let mut b = sample(&Key::short_term("k")).to_vec();
    let limits = Limits::default();
    b[0] |= 0x80;
    assert_eq!(Message::decode(&b, &limits), Err(DecodeError::NotStun));
    b[0] &= 0x3f;
    b[4] = 0;
    assert!(matches!(
        Message::decode(&b, &limits),
        Err(DecodeError::BadMagicCookie(_))
    ));
    let mut short = sample(&Key::short_term("k")).to_vec();
    short[3] = short[3].wrapping_add(4);
    assert!(matches!(
        Message::decode(&short, &limits),
        Err(DecodeError::BadLength(_))
    ));
    let big = vec![0u8; 5000];
    assert!(matches!(
        Message::decode(&big, &limits),
        Err(DecodeError::TooLong { .. })
    ));
}

#[test]
fn unknown_comprehension_required_attributes_are_listed_for_a_420() {
    let mut m = Message::new(Class::Request, Method::BINDING, TransactionId::new([1; 12]));
    m.attributes.push(Attribute::Unknown {
        attr_type: 0x8999,
        value: b"ok",
    });
    let mut out = BytesMut::new();
    m.encode(None, &mut out).unwrap();
    // Append two unknown comprehension-required attributes by hand.
    let mut raw = out.to_vec();
    raw.extend_from_slice(&[
        0x00, 0x7f, 0x00, 0x00, 0x00, 0x7e, 0x00, 0x01, 0xaa, 0, 0, 0,
    ]);
    let len = (raw.len() - HEADER_LEN) as u16;
    raw[2..4].copy_from_slice(&len.to_be_bytes());
    match Message::decode(&raw, &Limits::default()) {
        Err(DecodeError::UnknownRequiredAttributes(list)) => {
            assert_eq!(list.as_slice(), &[0x7f, 0x7e])
        }
        other => panic!("{other:?}"),
    }
    // Unknown optional attributes are kept as `Unknown`.
    assert_eq!(Message::decode(&out, &Limits::default()).unwrap(), m);
}

#[test]
fn rejects_attributes_after_fingerprint_and_ignores_those_after_integrity() {
    let key = Key::short_term("k");
    let good = sample(&key).to_vec();
    let mut after_fp = good.clone();
    after_fp.extend_from_slice(&[0x80, 0x22, 0x00, 0x00]);
    let len = (after_fp.len() - HEADER_LEN) as u16;
    after_fp[2..4].copy_from_slice(&len.to_be_bytes());
    assert!(Message::decode(&after_fp, &Limits::default()).is_err());

    // SOFTWARE inserted after MESSAGE-INTEGRITY (and no FINGERPRINT): ignored, and the
    // integrity still verifies because the HMAC ends at MESSAGE-INTEGRITY.
    let mut m = Message::new(Class::Request, Method::BINDING, TransactionId::new([2; 12]));
    m.message_integrity = true;
    let mut out = BytesMut::new();
    m.encode(Some(&key), &mut out).unwrap();
    let mut raw = out.to_vec();
    raw.extend_from_slice(&[0x80, 0x22, 0x00, 0x01, b'x', 0, 0, 0]);
    let len = (raw.len() - HEADER_LEN) as u16;
    raw[2..4].copy_from_slice(&len.to_be_bytes());
    let decoded = Message::decode(&raw, &Limits::default()).unwrap();
    assert!(decoded.attributes.is_empty());
    Message::verify(&raw, &key).unwrap();
}

#[test]
fn integrity_requires_a_key_and_missing_integrity_is_reported() {
    let mut m = Message::new(Class::Request, Method::BINDING, TransactionId::new([3; 12]));
    let mut out = BytesMut::new();
    m.message_integrity = true;
    assert_eq!(
        m.encode(None, &mut out),
        Err(Error::Usage(UsageError::MissingKey))
    );
    assert!(out.is_empty());
    m.message_integrity = false;
    m.encode(None, &mut out).unwrap();
    assert_eq!(
        Message::verify(&out, &Key::short_term("k")),
        Err(DecodeError::MissingIntegrity)
    );
}

#[test]
fn both_integrity_attributes_verify_with_sha256_taking_precedence() {
    let key = Key::long_term("u", "r", "p", PasswordAlgorithm::Sha256);
    let mut m = Message::new(
        Class::Request,
        Method::ALLOCATE,
        TransactionId::new([4; 12]),
    );
    m.attributes.push(Attribute::RequestedTransport(17));
    m.message_integrity = true;
    m.message_integrity_sha256 = true;
    m.fingerprint = true;
    let mut out = BytesMut::new();
    m.encode(Some(&key), &mut out).unwrap();
    assert_eq!(Message::decode(&out, &Limits::default()).unwrap(), m);
    Message::verify(&out, &key).unwrap();
}

#[test]
fn invalid_values_are_refused_on_encode() {
    let long = "x".repeat(600);
    let mut m = Message::new(Class::Error, Method::BINDING, TransactionId::new([5; 12]));
    m.attributes.push(Attribute::ErrorCode {
        code: 99,
        reason: "",
    });
    assert!(m.encode(None, &mut BytesMut::new()).is_err());
    m.attributes[0] = Attribute::Username(&long);
    assert!(m.encode(None, &mut BytesMut::new()).is_err());
    m.attributes[0] = Attribute::Unknown {
        attr_type: 0x0001,
        value: &[],
    };
    assert!(m.encode(None, &mut BytesMut::new()).is_err());
}

#[test]
fn header_and_prefix_helpers_read_only_the_header() {
    let out = sample(&Key::short_term("k"));
    let h = Header::decode(&out).unwrap();
    assert_eq!((h.class, h.method), (Class::Success, Method::BINDING));
    assert_eq!(Message::len_from_prefix(&out[..4]), Some(out.len()));
    assert_eq!(Message::len_from_prefix(&out[..3]), None);
}

fn arb_addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<u32>(), any::<u16>())
            .prop_map(|(ip, p)| SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), p)),
        (any::<u128>(), any::<u16>())
            .prop_map(|(ip, p)| SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), p)),
    ]
}

/// Owned inputs for attributes, since `Attribute` borrows.
#[derive(Debug, Clone)]
enum Spec {
    Addr(u8, SocketAddr),
    Text(u8, String),
    Bytes(u8, Vec<u8>),
    Num(u8, u64),
    Error(u16, String),
}

fn arb_spec() -> impl Strategy<Value = Spec> {
    prop_oneof![
        (0u8..7, arb_addr()).prop_map(|(k, a)| Spec::Addr(k, a)),
        (0u8..4, "[a-z:é]{0,40}").prop_map(|(k, s)| Spec::Text(k, s)),
        (0u8..4, vec(any::<u8>(), 0..40)).prop_map(|(k, b)| Spec::Bytes(k, b)),
        (0u8..16, any::<u64>()).prop_map(|(k, n)| Spec::Num(k, n)),
        (300u16..700, "[ -~]{0,20}").prop_map(|(c, s)| Spec::Error(c, s)),
    ]
}

fn build(spec: &Spec) -> Attribute<'_> {
    match spec {
        Spec::Addr(k, a) => match k {
            0 => Attribute::MappedAddress(*a),
            1 => Attribute::XorMappedAddress(*a),
            2 => Attribute::ResponseOrigin(*a),
            3 => Attribute::OtherAddress(*a),
            4 => Attribute::XorPeerAddress(*a),
            5 => Attribute::XorRelayedAddress(*a),
            _ => Attribute::AlternateServer(*a),
        },
        Spec::Text(k, s) => match k {
            0 => Attribute::Username(s),
            1 => Attribute::Realm(s),
            2 => Attribute::Nonce(s),
            _ => Attribute::Software(s),
        },
        Spec::Bytes(k, b) => match k {
            0 => Attribute::Padding(b),
            1 => Attribute::Data(b),
            2 => Attribute::Unknown {
                attr_type: 0xc001,
                value: b,
            },
            _ => {
                Attribute::UnknownAttributes(UnknownList::from_wire(&b[..b.len() / 2 * 2]).unwrap())
            }
        },
        Spec::Num(k, n) => {
            let (n32, n16, n8) = (*n as u32, *n as u16, *n as u8);
            let fam = if n & 1 == 0 {
                AddressFamily::V4
            } else {
                AddressFamily::V6
            };
            match k {
                0 => Attribute::ChangeRequest {
                    ip: n & 1 != 0,
                    port: n & 2 != 0,
                },
                1 => Attribute::ResponsePort(n16),
                2 => Attribute::ChannelNumber(n16),
                3 => Attribute::Lifetime(n32),
                4 => Attribute::RequestedAddressFamily(fam),
                5 => Attribute::EvenPort(n & 1 != 0),
                6 => Attribute::RequestedTransport(n8),
                7 => Attribute::DontFragment,
                8 => Attribute::ReservationToken(n.to_be_bytes()),
                9 => Attribute::AdditionalAddressFamily(fam),
                10 => Attribute::Icmp {
                    icmp_type: n8 & 0x7f,
                    code: n16 & 0x1ff,
                    data: (n >> 32) as u32,
                },
                11 => Attribute::Priority(n32),
                12 => Attribute::UseCandidate,
                13 => Attribute::IceControlled(*n),
                14 => Attribute::IceControlling(*n),
                _ => Attribute::UserHash([n8; 32]),
            }
        }
        Spec::Error(c, s) => {
            if c % 2 == 0 {
                Attribute::ErrorCode {
                    code: *c,
                    reason: s,
                }
            } else {
                Attribute::AddressErrorCode {
                    family: AddressFamily::V6,
                    code: *c,
                    reason: s,
                }
            }
        }
    }
}

proptest! {
    #[test]
    fn round_trip(
        specs in vec(arb_spec(), 0..12),
        tid in any::<[u8; 12]>(),
        method in 0u16..0x1000,
        class in 0u8..4,
        flags in 0u8..8,
    ) {
        let class = [Class::Request, Class::Indication, Class::Success, Class::Error][usize::from(class)];
        let mut m = Message::new(class, Method::new(method).unwrap(), TransactionId::new(tid));
        m.attributes = specs.iter().map(build).collect();
        m.message_integrity = flags & 1 != 0;
        m.message_integrity_sha256 = flags & 2 != 0;
        m.fingerprint = flags & 4 != 0;
        let key = Key::short_term("pw");
        let mut out = BytesMut::new();
        m.encode(Some(&key), &mut out).unwrap();
        prop_assert_eq!(out.len(), m.encoded_len());
        prop_assert_eq!(Message::decode(&out, &Limits::default()), Ok(m.clone()));
        if m.message_integrity || m.message_integrity_sha256 {
            prop_assert_eq!(Message::verify(&out, &key), Ok(()));
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(b in vec(any::<u8>(), 0..600)) {
        let _ = Message::decode(&b, &Limits::default());
        let _ = Message::verify(&b, &Key::short_term("k"));
        let _ = Header::decode(&b);
        let _ = Message::len_from_prefix(&b);
    }

    #[test]
    fn arbitrary_attributes_behind_a_valid_header_never_panic(body in vec(any::<u8>(), 0..300)) {
        let mut b = vec![0x00, 0x01, 0, 0, 0x21, 0x12, 0xa4, 0x42];
        b.extend_from_slice(&[7; 12]);
        let len = (body.len() / 4 * 4) as u16;
        b[2..4].copy_from_slice(&len.to_be_bytes());
        b.extend_from_slice(&body[..usize::from(len)]);
        let _ = Message::decode(&b, &Limits::default());
        let _ = Message::verify(&b, &Key::short_term("k"));
    }
}

#[test]
fn every_strict_prefix_of_a_sample_is_rejected() {
    let out = sample(&Key::short_term("k"));
    for end in 0..out.len() {
        assert!(
            Message::decode(&out[..end], &Limits::default()).is_err(),
            "prefix {end}"
        );
    }
}

#[test]
fn every_single_bit_flip_of_an_authenticated_message_is_rejected() {
    let key = Key::short_term("k");
    let out = sample(&key);
    let original = Message::decode(&out, &Limits::default()).unwrap();
    for bit in 0..out.len() * 8 {
        let mut b = out.to_vec();
        b[bit / 8] ^= 1 << (bit % 8);
        // Rejected: does not decode, does not verify, or (a flip that turns FINGERPRINT
        // into an ignored attribute after MESSAGE-INTEGRITY) is not the message sent.
        let accepted = Message::decode(&b, &Limits::default())
            .is_ok_and(|m| m == original && Message::verify(&b, &key).is_ok());
        assert!(!accepted, "bit {bit} flipped and still accepted");
    }
}

#[test]
fn icmp_attribute_follows_the_rfc_8656_figure() {
    // ICMPv4 destination unreachable (3), fragmentation needed (4), next-hop MTU 1400:
    // type in the 7 bits after the reserved half-word, code in the last 9 bits.
    let mut m = Message::new(Class::Indication, Method::DATA, TransactionId::new([7; 12]));
    m.attributes.push(Attribute::Icmp {
        icmp_type: 3,
        code: 4,
        data: 1400,
    });
    let mut out = BytesMut::new();
    m.encode(None, &mut out).unwrap();
    assert_eq!(
        &out[20..],
        &[0x80, 0x04, 0x00, 0x08, 0, 0, 0x06, 0x04, 0, 0, 0x05, 0x78]
    );
    assert_eq!(Message::decode(&out, &Limits::default()).unwrap(), m);
    m.attributes[0] = Attribute::Icmp {
        icmp_type: 128,
        code: 0,
        data: 0,
    };
    assert!(m.encode(None, &mut BytesMut::new()).is_err());
}

#[test]
fn nonce_cookie_security_features_follow_erratum_6290() {
    // RFC 8489 Appendix B.1's nonce: 0x000002, username anonymity only.
    let b1 = SecurityFeatures::from_nonce("obMatJos2AAACf//499k954d6OL34oL9FSTvy64sA").unwrap();
    assert!(b1.username_anonymity && !b1.password_algorithms);
    assert!(
        SecurityFeatures::from_nonce("obMatJos2AAAB")
            .unwrap()
            .password_algorithms
    );
    assert_eq!(SecurityFeatures::from_nonce("plain-nonce"), None);
    assert_eq!(SecurityFeatures::from_nonce("obMatJos2AA"), None);
    assert_eq!(SecurityFeatures::from_nonce("obMatJos2AA*A"), None);
    for pa in [false, true] {
        for ua in [false, true] {
            let f = SecurityFeatures {
                password_algorithms: pa,
                username_anonymity: ua,
            };
            let nonce = f.nonce_prefix() + "random-part";
            assert_eq!(SecurityFeatures::from_nonce(&nonce), Some(f));
        }
    }
}

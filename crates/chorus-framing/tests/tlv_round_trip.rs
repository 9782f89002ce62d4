//! TLV attribute lists: typed values round-trip, unknown optional attributes are
//! skipped, and arbitrary bytes never panic.

use std::net::{IpAddr, SocketAddr};

use bytes::BytesMut;
use chorus_framing::DecodeError;
use chorus_framing::tlv::{Attributes, TlvLimits, TlvWriter, is_optional};
use proptest::collection::vec;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Value {
    U8(u8),
    U16(u16),
    U32(u32),
    U64(u64),
    Str(String),
    Bytes(Vec<u8>),
    Addr(SocketAddr),
}

fn arb_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<u8>().prop_map(Value::U8),
        any::<u16>().prop_map(Value::U16),
        any::<u32>().prop_map(Value::U32),
        any::<u64>().prop_map(Value::U64),
        ".{0,40}".prop_map(Value::Str),
        vec(any::<u8>(), 0..100).prop_map(Value::Bytes),
        (any::<IpAddr>(), any::<u16>())
            .prop_map(|(ip, port)| Value::Addr(SocketAddr::new(ip, port))),
    ]
}

/// Distinct attribute types with values.
fn arb_list() -> impl Strategy<Value = Vec<(u16, Value)>> {
    proptest::collection::btree_map(any::<u16>(), arb_value(), 0..20)
        .prop_map(|m| m.into_iter().collect())
        .prop_shuffle()
}

fn write(list: &[(u16, Value)]) -> bytes::Bytes {
    let mut w = TlvWriter::new(TlvLimits::default());
    for (ty, v) in list {
        match v {
            Value::U8(x) => w.put(*ty, x),
            Value::U16(x) => w.put(*ty, x),
            Value::U32(x) => w.put(*ty, x),
            Value::U64(x) => w.put(*ty, x),
            Value::Str(x) => w.put(*ty, &x.as_str()),
            Value::Bytes(x) => w.put(*ty, &x.as_slice()),
            Value::Addr(x) => w.put(*ty, x),
        }
        .unwrap();
    }
    w.finish()
}

fn check(attrs: &Attributes<'_>, ty: u16, v: &Value) -> Result<(), DecodeError> {
    let ok = match v {
        Value::U8(x) => attrs.require::<u8>(ty)? == *x,
        Value::U16(x) => attrs.require::<u16>(ty)? == *x,
        Value::U32(x) => attrs.require::<u32>(ty)? == *x,
        Value::U64(x) => attrs.require::<u64>(ty)? == *x,
        Value::Str(x) => attrs.require::<&str>(ty)? == x,
        Value::Bytes(x) => attrs.require::<&[u8]>(ty)? == x.as_slice(),
        Value::Addr(x) => attrs.require::<SocketAddr>(ty)? == *x,
    };
    assert!(ok, "attribute {ty:#06x} changed");
    Ok(())
}

proptest! {
    #[test]
    fn typed_values_round_trip(list in arb_list()) {
        let bytes = write(&list);
        let known: Vec<u16> = list.iter().map(|(t, _)| *t).collect();
        let attrs = Attributes::decode(&bytes, &known, &TlvLimits::default()).unwrap();
        prop_assert_eq!(attrs.len(), list.len());
        for (ty, v) in &list {
            check(&attrs, *ty, v).unwrap();
        }
        let mut again = BytesMut::new();
        attrs.encode(&mut again);
        prop_assert_eq!(&again[..], &bytes[..]);
    }

    #[test]
    fn a_reader_knowing_nothing_skips_exactly_the_optional_ones(list in arb_list()) {
        let bytes = write(&list);
        let r = Attributes::decode(&bytes, &[], &TlvLimits::default());
        match list.iter().find(|(t, _)| !is_optional(*t)) {
            Some((first_required, _)) => {
                prop_assert_eq!(r, Err(DecodeError::UnknownRequiredAttribute(*first_required)));
            }
            None => prop_assert_eq!(r.unwrap().skipped(), list.len()),
        }
    }

    #[test]
    fn every_strict_prefix_inside_an_attribute_is_truncated(list in arb_list()) {
        let bytes = write(&list);
        let known: Vec<u16> = list.iter().map(|(t, _)| *t).collect();
        let mut boundaries = vec![0usize];
        let mut at = 0;
        for (_, v) in &list {
            let one = write(&[(1, v.clone())]);
            at += one.len();
            boundaries.push(at);
        }
        for n in 0..bytes.len() {
            let r = Attributes::decode(&bytes[..n], &known, &TlvLimits::default());
            if boundaries.contains(&n) {
                prop_assert!(r.is_ok());
            } else {
                prop_assert!(matches!(r, Err(DecodeError::Truncated { .. })), "prefix {}: {:?}", n, r);
            }
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..1024), known in vec(any::<u16>(), 0..8)) {
        if let Ok(attrs) = Attributes::decode(&bytes, &known, &TlvLimits::default()) {
            prop_assert!(attrs.len() + attrs.skipped() <= TlvLimits::default().max_attributes);
            for ty in known {
                let _ = attrs.get::<SocketAddr>(ty);
                let _ = attrs.get::<&str>(ty);
                let _ = attrs.get::<u64>(ty);
            }
        }
    }
}

//! TLV attribute lists: the body of control messages.
//!
//! An attribute list is a sequence of attributes, each a 16-bit type, a 16-bit value
//! length and the value, with no padding (`docs/wire-format.md`, "TLV attributes").
//! As in STUN (RFC 8489 §14), the top bit of the type says whether a reader must
//! understand it: types `0x0000..=0x7fff` are *comprehension-required* (an unknown one
//! rejects the whole list), types `0x8000..=0xffff` are *comprehension-optional* (an
//! unknown one is skipped, so newer peers can add information older ones ignore).
//!
//! Values are typed through [`AttrValue`]: integers, strings, byte strings and socket
//! addresses are provided, and a crate above can implement it for its own types.
//!
//! ```
//! use chorus_framing::tlv::{Attributes, TlvLimits, TlvWriter};
//!
//! const USERNAME: u16 = 0x0001;
//! const PORT: u16 = 0x0002;
//! const HINT: u16 = 0x8001; // optional: old readers skip it
//!
//! let mut w = TlvWriter::new(TlvLimits::default());
//! w.put(USERNAME, &"alice")?.put(PORT, &3478u16)?.put(HINT, &"new feature")?;
//! let bytes = w.finish();
//!
//! // A reader that knows only USERNAME and PORT still accepts the message.
//! let attrs = Attributes::decode(&bytes, &[USERNAME, PORT], &TlvLimits::default())?;
//! assert_eq!(attrs.require::<&str>(USERNAME)?, "alice");
//! assert_eq!(attrs.get::<u16>(PORT)?, Some(3478));
//! assert_eq!(attrs.skipped(), 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic
    )
)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::{DecodeError, Error, UsageError};
use crate::reader::Reader;

/// Length of an attribute's type and length fields.
pub const ATTR_HEADER_LEN: usize = 4;
/// The longest value an attribute can carry (its length field is 16 bits).
pub const MAX_VALUE_LEN: usize = u16::MAX as usize;
/// Default [`TlvLimits::max_attributes`].
pub const DEFAULT_MAX_ATTRIBUTES: usize = 32;
/// The largest value [`TlvLimits::max_attributes`] may take.
pub const MAX_ATTRIBUTES_LIMIT: usize = 1024;

/// Whether a reader that does not know attribute type `ty` may skip it.
#[must_use]
pub const fn is_optional(ty: u16) -> bool {
    ty & 0x8000 != 0
}

/// Bounds on an attribute list.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TlvLimits {
    /// Most attributes in one list, counting skipped unknown ones. Default
    /// [`DEFAULT_MAX_ATTRIBUTES`] (32); values above [`MAX_ATTRIBUTES_LIMIT`] (1024)
    /// are treated as 1024. Bounds both the memory and the work one list can cost.
    pub max_attributes: usize,
}

impl Default for TlvLimits {
    fn default() -> Self {
        Self {
            max_attributes: DEFAULT_MAX_ATTRIBUTES,
        }
    }
}

impl TlvLimits {
    fn max(&self) -> usize {
        self.max_attributes.min(MAX_ATTRIBUTES_LIMIT)
    }
}

/// A decoded attribute list whose values borrow from the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attributes<'a> {
    /// Known attributes in wire order; at most `max_attributes` of them.
    entries: Vec<(u16, &'a [u8])>,
    skipped: usize,
}

impl<'a> Attributes<'a> {
    /// Decodes a whole attribute list. `known` lists the attribute types the caller
    /// understands; unknown optional types are skipped, unknown required ones reject
    /// the list.
    ///
    /// # Errors
    /// [`DecodeError::Truncated`] if an attribute runs past the end,
    /// [`DecodeError::TooManyAttributes`], [`DecodeError::UnknownRequiredAttribute`],
    /// [`DecodeError::DuplicateAttribute`] (checked among known types).
    pub fn decode(bytes: &'a [u8], known: &[u16], limits: &TlvLimits) -> Result<Self, DecodeError> {
        let max = limits.max();
        let mut r = Reader::new(bytes);
        let mut entries = Vec::new();
        let mut seen = 0usize;
        let mut skipped = 0usize;
        while !r.is_empty() {
            if seen == max {
                return Err(DecodeError::TooManyAttributes { max });
            }
            seen += 1;
            let ty = r.u16()?;
            let len = usize::from(r.u16()?);
            let value = r.take(len)?;
            if !known.contains(&ty) {
                if is_optional(ty) {
                    skipped += 1;
                    continue;
                }
                return Err(DecodeError::UnknownRequiredAttribute(ty));
            }
            if entries.iter().any(|&(t, _)| t == ty) {
                return Err(DecodeError::DuplicateAttribute(ty));
            }
            entries.push((ty, value));
        }
        Ok(Self { entries, skipped })
    }

    /// The raw value of attribute `ty`, if present.
    #[must_use]
    pub fn raw(&self, ty: u16) -> Option<&'a [u8]> {
        self.entries
            .iter()
            .find_map(|&(t, v)| (t == ty).then_some(v))
    }

    /// The value of attribute `ty` decoded as `T`, if present.
    ///
    /// # Errors
    /// [`DecodeError::BadAttributeLength`] or [`DecodeError::BadAttributeValue`] if the
    /// value is not a valid `T`.
    pub fn get<T: AttrValue<'a>>(&self, ty: u16) -> Result<Option<T>, DecodeError> {
        self.raw(ty).map(|v| T::decode_value(ty, v)).transpose()
    }

    /// The value of attribute `ty` decoded as `T`, which must be present.
    ///
    /// # Errors
    /// [`DecodeError::MissingAttribute`] if absent, otherwise as [`Attributes::get`].
    pub fn require<T: AttrValue<'a>>(&self, ty: u16) -> Result<T, DecodeError> {
        self.get(ty)?.ok_or(DecodeError::MissingAttribute(ty))
    }

    /// Known attributes as `(type, value)`, in wire order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (u16, &'a [u8])> + '_ {
        self.entries.iter().copied()
    }

    /// Number of known attributes.
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no known attribute was present.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Number of unknown optional attributes that were skipped.
    #[must_use]
    pub const fn skipped(&self) -> usize {
        self.skipped
    }

    /// Bytes [`Attributes::encode`] writes.
    #[must_use]
    pub fn encoded_len(&self) -> usize {
        self.entries
            .iter()
            .map(|(_, v)| ATTR_HEADER_LEN + v.len())
            .sum()
    }

    /// Re-encodes the known attributes in their original order (skipped ones are gone).
    pub fn encode(&self, dst: &mut BytesMut) {
        dst.reserve(self.encoded_len());
        for &(ty, value) in &self.entries {
            dst.put_u16(ty);
            // Every value came from a 16-bit length field.
            dst.put_u16(value.len() as u16);
            dst.put_slice(value);
        }
    }
}

/// A type that can be an attribute's value.
pub trait AttrValue<'a>: Sized {
    /// Decodes the value of attribute `ty`.
    ///
    /// # Errors
    /// [`DecodeError::BadAttributeLength`] or [`DecodeError::BadAttributeValue`],
    /// naming `ty`.
    fn decode_value(ty: u16, value: &'a [u8]) -> Result<Self, DecodeError>;
    /// Bytes [`AttrValue::encode_value`] writes.
    fn value_len(&self) -> usize;
    /// Writes exactly [`AttrValue::value_len`] bytes.
    fn encode_value(&self, dst: &mut BytesMut);
}

macro_rules! int_value {
    ($($t:ty),*) => {$(
        impl AttrValue<'_> for $t {
            fn decode_value(ty: u16, value: &[u8]) -> Result<Self, DecodeError> {
                let bytes = <[u8; size_of::<$t>()]>::try_from(value)
                    .map_err(|_| DecodeError::BadAttributeLength { attr: ty, len: value.len() })?;
                Ok(<$t>::from_be_bytes(bytes))
            }
            fn value_len(&self) -> usize {
                size_of::<$t>()
            }
            fn encode_value(&self, dst: &mut BytesMut) {
                dst.put_slice(&self.to_be_bytes());
            }
        }
    )*};
}
int_value!(u8, u16, u32, u64);

impl<'a> AttrValue<'a> for &'a [u8] {
    fn decode_value(_: u16, value: &'a [u8]) -> Result<Self, DecodeError> {
        Ok(value)
    }
    fn value_len(&self) -> usize {
        self.len()
    }
    fn encode_value(&self, dst: &mut BytesMut) {
        dst.put_slice(self);
    }
}

impl<'a> AttrValue<'a> for &'a str {
    fn decode_value(ty: u16, value: &'a [u8]) -> Result<Self, DecodeError> {
        std::str::from_utf8(value).map_err(|_| DecodeError::BadAttributeValue(ty))
    }
    fn value_len(&self) -> usize {
        self.len()
    }
    fn encode_value(&self, dst: &mut BytesMut) {
        dst.put_slice(self.as_bytes());
    }
}

/// Socket addresses: family (4 or 6), port, then 4 or 16 address bytes.
impl AttrValue<'_> for SocketAddr {
    fn decode_value(ty: u16, value: &[u8]) -> Result<Self, DecodeError> {
        let bad_len = DecodeError::BadAttributeLength {
            attr: ty,
            len: value.len(),
        };
        let mut r = Reader::new(value);
        let family = r.u8().map_err(|_| bad_len)?;
        let port = r.u16().map_err(|_| bad_len)?;
        let ip = match family {
            4 => IpAddr::V4(Ipv4Addr::from(r.array::<4>().map_err(|_| bad_len)?)),
            6 => IpAddr::V6(Ipv6Addr::from(r.array::<16>().map_err(|_| bad_len)?)),
            _ => return Err(DecodeError::BadAttributeValue(ty)),
        };
        if !r.is_empty() {
            return Err(bad_len);
        }
        Ok(Self::new(ip, port))
    }
    fn value_len(&self) -> usize {
        match self {
            Self::V4(_) => 7,
            Self::V6(_) => 19,
        }
    }
    fn encode_value(&self, dst: &mut BytesMut) {
        match self.ip() {
            IpAddr::V4(ip) => {
                dst.put_u8(4);
                dst.put_u16(self.port());
                dst.put_slice(&ip.octets());
            }
            IpAddr::V6(ip) => {
                dst.put_u8(6);
                dst.put_u16(self.port());
                dst.put_slice(&ip.octets());
            }
        }
    }
}

/// Builds an attribute list, refusing what a reader would reject.
#[derive(Debug, Clone)]
pub struct TlvWriter {
    buf: BytesMut,
    types: Vec<u16>,
    max: usize,
}

impl TlvWriter {
    /// An empty list bounded by `limits`.
    #[must_use]
    pub fn new(limits: TlvLimits) -> Self {
        Self {
            buf: BytesMut::new(),
            types: Vec::new(),
            max: limits.max(),
        }
    }

    /// Appends attribute `ty` with `value`.
    ///
    /// # Errors
    /// [`UsageError::DuplicateAttribute`], [`UsageError::TooManyAttributes`], or
    /// [`UsageError::PayloadTooLarge`] if the value exceeds [`MAX_VALUE_LEN`]. The list
    /// is unchanged then.
    pub fn put<'v, T: AttrValue<'v>>(&mut self, ty: u16, value: &T) -> Result<&mut Self, Error> {
        if self.types.contains(&ty) {
            return Err(UsageError::DuplicateAttribute(ty).into());
        }
        if self.types.len() == self.max {
            return Err(UsageError::TooManyAttributes { max: self.max }.into());
        }
        let len = value.value_len();
        let Ok(len16) = u16::try_from(len) else {
            return Err(UsageError::PayloadTooLarge {
                len,
                max: MAX_VALUE_LEN,
            }
            .into());
        };
        self.buf.reserve(ATTR_HEADER_LEN + len);
        self.buf.put_u16(ty);
        self.buf.put_u16(len16);
        value.encode_value(&mut self.buf);
        self.types.push(ty);
        Ok(self)
    }

    /// Bytes written so far.
    #[must_use]
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether nothing has been written.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The encoded list.
    #[must_use]
    pub fn finish(self) -> Bytes {
        self.buf.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: u16 = 0x0001;
    const B: u16 = 0x0002;
    const OPT: u16 = 0x8005;

    fn list(attrs: &[(u16, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (ty, v) in attrs {
            out.extend_from_slice(&ty.to_be_bytes());
            out.extend_from_slice(&(v.len() as u16).to_be_bytes());
            out.extend_from_slice(v);
        }
        out
    }

    fn decode(bytes: &[u8]) -> Result<Attributes<'_>, DecodeError> {
        Attributes::decode(bytes, &[A, B], &TlvLimits::default())
    }

    #[test]
    fn layout_is_type_length_value_without_padding() {
        let mut w = TlvWriter::new(TlvLimits::default());
        w.put(A, &0x0102_0304u32).unwrap().put(B, &"hi").unwrap();
        assert_eq!(
            &w.finish()[..],
            &[0, 1, 0, 4, 1, 2, 3, 4, 0, 2, 0, 2, b'h', b'i']
        );
    }

    #[test]
    fn unknown_optional_attributes_are_skipped() {
        let bytes = list(&[(OPT, b"future"), (A, b"x"), (0xffff, b"")]);
        let attrs = decode(&bytes).unwrap();
        assert_eq!(attrs.skipped(), 2);
        assert_eq!(attrs.len(), 1);
        assert_eq!(attrs.raw(A), Some(&b"x"[..]));
    }

    #[test]
    fn unknown_required_attributes_reject_the_list() {
        let bytes = list(&[(A, b"x"), (0x7fff, b"?")]);
        assert_eq!(
            decode(&bytes),
            Err(DecodeError::UnknownRequiredAttribute(0x7fff))
        );
    }

    #[test]
    fn duplicates_are_rejected_both_ways() {
        let bytes = list(&[(A, b"x"), (B, b""), (A, b"y")]);
        assert_eq!(decode(&bytes), Err(DecodeError::DuplicateAttribute(A)));
        let mut w = TlvWriter::new(TlvLimits::default());
        w.put(A, &1u8).unwrap();
        assert_eq!(
            w.put(A, &2u8).map(|_| ()),
            Err(Error::Usage(UsageError::DuplicateAttribute(A)))
        );
        assert_eq!(w.len(), 5, "failed put leaves the list unchanged");
    }

    #[test]
    fn attribute_count_is_bounded_both_ways() {
        let limits = TlvLimits { max_attributes: 2 };
        let bytes = list(&[(OPT, b""), (OPT, b""), (OPT, b"")]);
        assert_eq!(
            Attributes::decode(&bytes, &[], &limits),
            Err(DecodeError::TooManyAttributes { max: 2 })
        );
        let mut w = TlvWriter::new(limits);
        w.put(1, &1u8).unwrap().put(2, &2u8).unwrap();
        assert_eq!(
            w.put(3, &3u8).map(|_| ()),
            Err(Error::Usage(UsageError::TooManyAttributes { max: 2 }))
        );
        let huge = TlvLimits {
            max_attributes: usize::MAX,
        };
        assert_eq!(huge.max(), MAX_ATTRIBUTES_LIMIT);
    }

    #[test]
    fn every_strict_prefix_is_truncated() {
        let bytes = list(&[(A, b"abc"), (B, b"defgh")]);
        for n in 0..bytes.len() {
            let r = decode(&bytes[..n]);
            // Prefixes ending exactly on an attribute boundary are themselves valid lists.
            if n == 0 || n == 7 {
                assert!(r.is_ok(), "prefix {n}");
            } else {
                assert!(
                    matches!(r, Err(DecodeError::Truncated { .. })),
                    "prefix {n}: {r:?}"
                );
            }
        }
    }

    #[test]
    fn typed_values_check_their_lengths() {
        let bytes = list(&[(A, &[1, 2, 3])]);
        let attrs = decode(&bytes).unwrap();
        assert_eq!(
            attrs.get::<u32>(A),
            Err(DecodeError::BadAttributeLength { attr: A, len: 3 })
        );
        assert_eq!(
            attrs.get::<u16>(A),
            Err(DecodeError::BadAttributeLength { attr: A, len: 3 })
        );
        assert_eq!(attrs.get::<&[u8]>(A), Ok(Some(&[1u8, 2, 3][..])));
        assert_eq!(attrs.get::<u8>(B), Ok(None));
        assert_eq!(
            attrs.require::<u8>(B),
            Err(DecodeError::MissingAttribute(B))
        );
    }

    #[test]
    fn strings_must_be_utf8() {
        let bytes = list(&[(A, &[0xff, 0xfe])]);
        assert_eq!(
            decode(&bytes).unwrap().get::<&str>(A),
            Err(DecodeError::BadAttributeValue(A))
        );
    }

    #[test]
    fn socket_addresses_round_trip_for_both_families() {
        let v4: SocketAddr = "192.0.2.1:3478".parse().unwrap();
        let v6: SocketAddr = "[2001:db8::1]:5349".parse().unwrap();
        let mut w = TlvWriter::new(TlvLimits::default());
        w.put(A, &v4).unwrap().put(B, &v6).unwrap();
        let bytes = w.finish();
        let attrs = decode(&bytes).unwrap();
        assert_eq!(attrs.require::<SocketAddr>(A), Ok(v4));
        assert_eq!(attrs.require::<SocketAddr>(B), Ok(v6));
    }

    #[test]
    fn malformed_socket_addresses_are_rejected() {
        let cases: [(&[u8], DecodeError); 4] = [
            (
                &[4, 0, 1, 127, 0, 0],
                DecodeError::BadAttributeLength { attr: A, len: 6 },
            ),
            (
                &[4, 0, 1, 127, 0, 0, 1, 9],
                DecodeError::BadAttributeLength { attr: A, len: 8 },
            ),
            (&[5, 0, 1, 127, 0, 0, 1], DecodeError::BadAttributeValue(A)),
            (&[], DecodeError::BadAttributeLength { attr: A, len: 0 }),
        ];
        for (value, err) in cases {
            let bytes = list(&[(A, value)]);
            assert_eq!(decode(&bytes).unwrap().get::<SocketAddr>(A), Err(err));
        }
    }

    #[test]
    fn oversize_values_are_refused() {
        let big = vec![0u8; MAX_VALUE_LEN + 1];
        let mut w = TlvWriter::new(TlvLimits::default());
        assert_eq!(
            w.put(A, &&big[..]).map(|_| ()),
            Err(Error::Usage(UsageError::PayloadTooLarge {
                len: MAX_VALUE_LEN + 1,
                max: MAX_VALUE_LEN
            }))
        );
        assert!(w.is_empty());
        w.put(A, &&big[..MAX_VALUE_LEN]).unwrap();
    }

    #[test]
    fn re_encoding_drops_skipped_attributes_and_keeps_order() {
        let bytes = list(&[(B, b"2"), (OPT, b"?"), (A, b"1")]);
        let attrs = decode(&bytes).unwrap();
        let mut out = BytesMut::new();
        attrs.encode(&mut out);
        assert_eq!(out.len(), attrs.encoded_len());
        assert_eq!(&out[..], &list(&[(B, b"2"), (A, b"1")])[..]);
        assert_eq!(attrs.iter().map(|(t, _)| t).collect::<Vec<_>>(), [B, A]);
    }
}

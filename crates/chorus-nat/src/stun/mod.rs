//! The STUN message codec (RFC 8489, compatible with RFC 5389 peers).
//!
//! A message is a 20-byte header followed by attributes (RFC 8489 §5):
//!
//! ```text
//!  0                   1                   2                   3
//! |0 0|     STUN Message Type     |         Message Length        |
//! |                         Magic Cookie                          |
//! |                     Transaction ID (96 bits)                  |
//! ```
//!
//! [`Message::decode`] borrows every variable-length value from its input, checks
//! FINGERPRINT, applies the ordering rules of RFC 8489 §14.5-§14.7 (attributes after
//! MESSAGE-INTEGRITY are ignored except MESSAGE-INTEGRITY-SHA256 and FINGERPRINT;
//! FINGERPRINT is last) and reports unknown comprehension-required attributes as
//! [`DecodeError::UnknownRequiredAttributes`] for a 420 response. Integrity is checked
//! with [`Message::verify`] once the receiver knows which key applies.
//!
//! ```
//! use bytes::BytesMut;
//! use chorus_nat::stun::{Attribute, Class, Key, Limits, Message, Method, TransactionId};
//!
//! let key = Key::short_term("secret");
//! let mut msg = Message::new(Class::Request, Method::BINDING, TransactionId::new([7; 12]));
//! msg.attributes.push(Attribute::Username("alice:bob"));
//! msg.message_integrity = true;
//! msg.fingerprint = true;
//! let mut wire = BytesMut::new();
//! msg.encode(Some(&key), &mut wire)?;
//! assert_eq!(wire.len(), msg.encoded_len());
//!
//! let decoded = Message::decode(&wire, &Limits::default())?;
//! assert_eq!(decoded, msg);
//! Message::verify(&wire, &key)?;
//! assert!(Message::verify(&wire, &Key::short_term("wrong")).is_err());
//! # Ok::<(), chorus_nat::Error>(())
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

mod attr;
mod integrity;

pub use attr::{
    AddressFamily, AlgorithmEntry, AlgorithmList, Attribute, MAX_TEXT, MAX_USERNAME, UnknownList,
    types,
};
pub use integrity::{Key, NONCE_COOKIE, PasswordAlgorithm, SecurityFeatures, userhash};

use std::net::SocketAddr;

use bytes::{BufMut, BytesMut};
use chorus_framing::{Entropy, Reader};

use crate::error::{DecodeError, Error, UnknownAttributes, UsageError};
use attr::pad;
use integrity::{FINGERPRINT_XOR, crc32, hmac_sha1, hmac_sha256};

/// RFC 8489 §5: the fixed value at bytes 4..8 of every message.
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
/// The header's size.
pub const HEADER_LEN: usize = 20;
const MI_LEN: usize = 4 + 20;
const MI256_LEN: usize = 4 + 32;
const FP_LEN: usize = 4 + 4;

/// A 96-bit transaction id (RFC 8489 §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TransactionId(pub [u8; 12]);

impl TransactionId {
    /// Wraps 12 bytes.
    #[must_use]
    pub const fn new(bytes: [u8; 12]) -> Self {
        Self(bytes)
    }

    /// A fresh, unpredictable id (RFC 8489 §6: "uniformly and randomly chosen").
    ///
    /// # Errors
    /// [`Error::Entropy`] if the source fails.
    pub fn random(entropy: &mut (impl Entropy + ?Sized)) -> Result<Self, Error> {
        let mut b = [0u8; 12];
        entropy.fill(&mut b)?;
        Ok(Self(b))
    }
}

/// The four message classes (RFC 8489 §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// 0b00.
    Request,
    /// 0b01.
    Indication,
    /// 0b10.
    Success,
    /// 0b11.
    Error,
}

impl Class {
    const fn bits(self) -> u16 {
        match self {
            Self::Request => 0,
            Self::Indication => 1,
            Self::Success => 2,
            Self::Error => 3,
        }
    }
}

/// A 12-bit STUN method (RFC 8489 §18.2, RFC 8656 §17).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Method(u16);

impl Method {
    /// Binding (RFC 8489).
    pub const BINDING: Self = Self(0x001);
    /// Allocate (RFC 8656).
    pub const ALLOCATE: Self = Self(0x003);
    /// Refresh (RFC 8656).
    pub const REFRESH: Self = Self(0x004);
    /// Send (RFC 8656).
    pub const SEND: Self = Self(0x006);
    /// Data (RFC 8656).
    pub const DATA: Self = Self(0x007);
    /// CreatePermission (RFC 8656).
    pub const CREATE_PERMISSION: Self = Self(0x008);
    /// ChannelBind (RFC 8656).
    pub const CHANNEL_BIND: Self = Self(0x009);

    /// A method from its number, if it fits in 12 bits.
    #[must_use]
    pub const fn new(n: u16) -> Option<Self> {
        if n <= 0xfff { Some(Self(n)) } else { None }
    }

    /// The method number.
    #[must_use]
    pub const fn number(self) -> u16 {
        self.0
    }
}

/// RFC 8489 §5: the method's bits M0..M11 interleaved with the class bits C0, C1.
const fn message_type(class: Class, method: Method) -> u16 {
    let m = method.0;
    let c = class.bits();
    (m & 0x000f) | ((m & 0x0070) << 1) | ((m & 0x0f80) << 2) | ((c & 1) << 4) | ((c & 2) << 7)
}

const fn split_type(t: u16) -> (Class, Method) {
    let m = (t & 0x000f) | ((t >> 1) & 0x0070) | ((t >> 2) & 0x0f80);
    let class = match ((t >> 4) & 1) | ((t >> 7) & 2) {
        0 => Class::Request,
        1 => Class::Indication,
        2 => Class::Success,
        _ => Class::Error,
    };
    (class, Method(m))
}

/// The fixed header, readable without decoding attributes (to answer a message whose
/// attributes are rejected, or to route by transaction id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The class.
    pub class: Class,
    /// The method.
    pub method: Method,
    /// The length of the attributes, from the header.
    pub length: usize,
    /// The transaction id.
    pub transaction_id: TransactionId,
}

impl Header {
    /// Decodes the header of a STUN message: first two bits zero, magic cookie, a
    /// length that is a multiple of 4 and fits `bytes`.
    ///
    /// # Errors
    /// The first [`DecodeError`] found.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let t = r.u16()?;
        if t & 0xc000 != 0 {
            return Err(DecodeError::NotStun);
        }
        let length = usize::from(r.u16()?);
        let cookie = r.u32()?;
        if cookie != MAGIC_COOKIE {
            return Err(DecodeError::BadMagicCookie(cookie));
        }
        let transaction_id = TransactionId(r.array()?);
        if length % 4 != 0 {
            return Err(DecodeError::BadLength(length));
        }
        let (class, method) = split_type(t);
        Ok(Self {
            class,
            method,
            length,
            transaction_id,
        })
    }
}

/// Bounds applied while decoding (STYLE.md §5).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Longest message accepted, header included. Default 4096 bytes (larger than any
    /// STUN message over a 1500-byte path); at most 65,555 (the 16-bit length).
    pub max_len: usize,
    /// Most attributes accepted in one message. Default 48.
    pub max_attributes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_len: 4096,
            max_attributes: 48,
        }
    }
}

/// A STUN message, borrowing its variable-length values from the bytes it was decoded
/// from.
///
/// `message_integrity`, `message_integrity_sha256` and `fingerprint` say which of the
/// three trailing attributes the message carries (decode) or should carry (encode):
/// their values are computed by [`Message::encode`] and checked by [`Message::decode`]
/// (FINGERPRINT) and [`Message::verify`] (integrity).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message<'a> {
    /// The class.
    pub class: Class,
    /// The method.
    pub method: Method,
    /// The transaction id.
    pub transaction_id: TransactionId,
    /// Attributes in wire order, without the integrity and fingerprint attributes and
    /// without anything that followed MESSAGE-INTEGRITY (RFC 8489 §14.5: ignored).
    pub attributes: Vec<Attribute<'a>>,
    /// MESSAGE-INTEGRITY (HMAC-SHA1) present / to be added.
    pub message_integrity: bool,
    /// MESSAGE-INTEGRITY-SHA256 present / to be added.
    pub message_integrity_sha256: bool,
    /// FINGERPRINT present (and verified) / to be added.
    pub fingerprint: bool,
}

impl<'a> Message<'a> {
    /// A message with no attributes.
    #[must_use]
    pub const fn new(class: Class, method: Method, transaction_id: TransactionId) -> Self {
        Self {
            class,
            method,
            transaction_id,
            attributes: Vec::new(),
            message_integrity: false,
            message_integrity_sha256: false,
            fingerprint: false,
        }
    }

    /// The first attribute for which `f` returns `Some`.
    pub fn find<T>(&self, f: impl FnMut(&Attribute<'a>) -> Option<T>) -> Option<T> {
        self.attributes.iter().find_map(f)
    }

    /// XOR-MAPPED-ADDRESS, else MAPPED-ADDRESS.
    #[must_use]
    pub fn mapped_address(&self) -> Option<SocketAddr> {
        self.find(|a| match a {
            Attribute::XorMappedAddress(x) => Some(*x),
            _ => None,
        })
        .or_else(|| {
            self.find(|a| match a {
                Attribute::MappedAddress(x) => Some(*x),
                _ => None,
            })
        })
    }

    /// ERROR-CODE's code and reason.
    #[must_use]
    pub fn error_code(&self) -> Option<(u16, &'a str)> {
        self.find(|a| match a {
            Attribute::ErrorCode { code, reason } => Some((*code, *reason)),
            _ => None,
        })
    }

    /// Decodes one message that fills `bytes` exactly (a UDP datagram, or one message cut
    /// from a TCP stream with [`Message::len_from_prefix`]).
    ///
    /// # Errors
    /// A [`DecodeError`] naming the first problem; unknown comprehension-required
    /// attributes are reported together, after the rest of the message was checked.
    pub fn decode(bytes: &'a [u8], limits: &Limits) -> Result<Self, DecodeError> {
        if bytes.len() > limits.max_len {
            return Err(DecodeError::TooLong {
                len: bytes.len(),
                max: limits.max_len,
            });
        }
        let header = Header::decode(bytes)?;
        if HEADER_LEN + header.length != bytes.len() {
            return Err(DecodeError::BadLength(header.length));
        }
        let tid = header.transaction_id;
        let mut msg = Self::new(header.class, header.method, tid);
        let mut unknown = UnknownAttributes::new();
        let mut r = Reader::new(bytes);
        r.skip(HEADER_LEN)?;
        let mut count = 0usize;
        while !r.is_empty() {
            let start = r.consumed();
            let t = r.u16()?;
            let len = usize::from(r.u16()?);
            let value = r.take(len)?;
            r.skip(pad(len))?;
            count += 1;
            if count > limits.max_attributes {
                return Err(DecodeError::TooManyAttributes {
                    max: limits.max_attributes,
                });
            }
            if msg.fingerprint {
                // RFC 8489 §14.7: FINGERPRINT is the last attribute.
                return Err(DecodeError::AttributeAfterFingerprint(t));
            }
            match t {
                types::FINGERPRINT => {
                    let got = u32::from_be_bytes(
                        value
                            .try_into()
                            .map_err(|_| DecodeError::BadAttributeLength { attr: t, len })?,
                    );
                    let covered = bytes.get(..start).ok_or(DecodeError::BadLength(start))?;
                    if crc32(&[covered]) ^ FINGERPRINT_XOR != got {
                        return Err(DecodeError::FingerprintMismatch);
                    }
                    msg.fingerprint = true;
                }
                types::MESSAGE_INTEGRITY_SHA256 => {
                    // RFC 8489 §14.6: 16 to 32 bytes, a multiple of 4. It may follow
                    // MESSAGE-INTEGRITY, but nothing but FINGERPRINT may follow it.
                    if !(16..=32).contains(&len) || len % 4 != 0 || msg.message_integrity_sha256 {
                        return Err(DecodeError::BadAttributeLength { attr: t, len });
                    }
                    msg.message_integrity_sha256 = true;
                }
                _ if msg.message_integrity_sha256 => {}
                types::MESSAGE_INTEGRITY => {
                    if len != 20 || msg.message_integrity {
                        return Err(DecodeError::BadAttributeLength { attr: t, len });
                    }
                    msg.message_integrity = true;
                }
                // RFC 8489 §14.5: ignore everything else after MESSAGE-INTEGRITY.
                _ if msg.message_integrity => {}
                _ => match Attribute::decode(t, value, &tid)? {
                    Some(a) => msg.attributes.push(a),
                    None => unknown.push(t),
                },
            }
        }
        if !unknown.is_empty() {
            return Err(DecodeError::UnknownRequiredAttributes(unknown));
        }
        Ok(msg)
    }

    /// The total length of the message that starts `prefix` (at least its first 4
    /// bytes), for cutting messages out of a TCP stream (RFC 8489 §6.2.2).
    #[must_use]
    pub fn len_from_prefix(prefix: &[u8]) -> Option<usize> {
        let mut r = Reader::new(prefix);
        let t = r.u16().ok()?;
        let len = r.u16().ok()?;
        (t & 0xc000 == 0).then_some(HEADER_LEN + usize::from(len))
    }

    /// Checks MESSAGE-INTEGRITY-SHA256, or MESSAGE-INTEGRITY when that is the only
    /// integrity attribute, of the message in `bytes` with `key` (RFC 8489 §14.5-§14.6).
    /// The tags are compared in constant time.
    ///
    /// # Errors
    /// [`DecodeError::MissingIntegrity`] if neither attribute is present,
    /// [`DecodeError::IntegrityMismatch`] if the check fails, or a framing error.
    pub fn verify(bytes: &[u8], key: &Key) -> Result<(), DecodeError> {
        let header = Header::decode(bytes)?;
        let mut r = Reader::new(bytes);
        r.skip(HEADER_LEN)?;
        let body = r.take(header.length)?;
        let mut r = Reader::new(body);
        let mut found: Option<(usize, u16, &[u8])> = None;
        while !r.is_empty() {
            let start = HEADER_LEN + r.consumed();
            let t = r.u16()?;
            let len = usize::from(r.u16()?);
            let value = r.take(len)?;
            r.skip(pad(len))?;
            match t {
                types::MESSAGE_INTEGRITY_SHA256 => {
                    found = Some((start, t, value));
                    break;
                }
                types::MESSAGE_INTEGRITY if found.is_none() => found = Some((start, t, value)),
                types::FINGERPRINT => break,
                _ => {}
            }
        }
        let (start, t, tag) = found.ok_or(DecodeError::MissingIntegrity)?;
        // RFC 8489 §14.5: the HMAC covers the header, with the length rewritten to end
        // just after the integrity attribute, and every attribute before it.
        let end = start + 4 + tag.len();
        let covered = bytes.get(..start).ok_or(DecodeError::IntegrityMismatch)?;
        let (head, rest) = covered
            .split_at_checked(4)
            .ok_or(DecodeError::IntegrityMismatch)?;
        let (ty, _) = head
            .split_at_checked(2)
            .ok_or(DecodeError::IntegrityMismatch)?;
        let new_len = ((end - HEADER_LEN) as u16).to_be_bytes();
        let ok = if t == types::MESSAGE_INTEGRITY_SHA256 {
            let mac = hmac_sha256(key, &[ty, &new_len, rest]);
            mac.get(..tag.len())
                .is_some_and(|m| chorus_crypto::ct_eq(m, tag))
        } else {
            chorus_crypto::ct_eq(&hmac_sha1(key, &[ty, &new_len, rest]), tag)
        };
        if ok {
            Ok(())
        } else {
            Err(DecodeError::IntegrityMismatch)
        }
    }

    /// The encoded length, header and trailing attributes included.
    #[must_use]
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN
            + self
                .attributes
                .iter()
                .map(|a| 4 + a.value_len() + pad(a.value_len()))
                .sum::<usize>()
            + if self.message_integrity { MI_LEN } else { 0 }
            + if self.message_integrity_sha256 {
                MI256_LEN
            } else {
                0
            }
            + if self.fingerprint { FP_LEN } else { 0 }
    }

    /// Appends the message to `dst`: exactly [`Message::encoded_len`] bytes, values
    /// padded with zeros, MESSAGE-INTEGRITY(-SHA256) computed with `key`, FINGERPRINT
    /// last.
    ///
    /// # Errors
    /// [`UsageError::MissingKey`] if integrity is asked for without a key, or a value
    /// too long or invalid for its attribute. `dst` is unchanged on error.
    pub fn encode(&self, key: Option<&Key>, dst: &mut BytesMut) -> Result<(), Error> {
        self.encode_padded(key, 0, dst)
    }

    /// As [`Message::encode`], with padding bytes of value `pad_byte` (RFC 8489 §14:
    /// padding may be any value; RFC 5769's vectors use spaces).
    ///
    /// # Errors
    /// As [`Message::encode`].
    pub fn encode_padded(
        &self,
        key: Option<&Key>,
        pad_byte: u8,
        dst: &mut BytesMut,
    ) -> Result<(), Error> {
        for a in &self.attributes {
            a.validate()?;
        }
        let total = self.encoded_len();
        if total - HEADER_LEN > usize::from(u16::MAX) {
            return Err(UsageError::ValueTooLong(0).into());
        }
        let key = match (self.message_integrity || self.message_integrity_sha256, key) {
            (true, None) => return Err(UsageError::MissingKey.into()),
            (_, k) => k,
        };
        let start = dst.len();
        dst.reserve(total);
        dst.put_u16(message_type(self.class, self.method));
        dst.put_u16(0); // patched below
        dst.put_u32(MAGIC_COOKIE);
        dst.put_slice(&self.transaction_id.0);
        for a in &self.attributes {
            let len = a.value_len();
            dst.put_u16(a.attr_type());
            dst.put_u16(len as u16);
            a.write_value(&self.transaction_id, dst);
            dst.put_bytes(pad_byte, pad(len));
        }
        let set_len = |dst: &mut BytesMut, end: usize| {
            let l = ((end - HEADER_LEN) as u16).to_be_bytes();
            if let Some(field) = dst.get_mut(start + 2..start + 4) {
                field.copy_from_slice(&l);
            }
        };
        if let Some(key) = key {
            if self.message_integrity {
                set_len(dst, dst.len() - start + MI_LEN);
                let mac = hmac_sha1(key, &[dst.get(start..).unwrap_or(&[])]);
                dst.put_u16(types::MESSAGE_INTEGRITY);
                dst.put_u16(20);
                dst.put_slice(&mac);
            }
            if self.message_integrity_sha256 {
                set_len(dst, dst.len() - start + MI256_LEN);
                let mac = hmac_sha256(key, &[dst.get(start..).unwrap_or(&[])]);
                dst.put_u16(types::MESSAGE_INTEGRITY_SHA256);
                dst.put_u16(32);
                dst.put_slice(&mac);
            }
        }
        set_len(dst, total);
        if self.fingerprint {
            let crc = crc32(&[dst.get(start..).unwrap_or(&[])]) ^ FINGERPRINT_XOR;
            dst.put_u16(types::FINGERPRINT);
            dst.put_u16(4);
            dst.put_u32(crc);
        }
        debug_assert_eq!(dst.len() - start, total);
        Ok(())
    }
}

#[cfg(test)]
mod tests;

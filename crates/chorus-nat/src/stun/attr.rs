//! STUN attributes (RFC 8489 §14, RFC 5780 §7, RFC 8656 §18, RFC 8445 §16.1): types,
//! value layouts and their codecs.
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

use bytes::{BufMut, BytesMut};
use chorus_framing::Reader;

use super::{MAGIC_COOKIE, TransactionId};
use crate::error::{DecodeError, UsageError};

/// Registered attribute type numbers. Types below 0x8000 are comprehension-required.
pub mod types {
    /// RFC 8489 §14.1.
    pub const MAPPED_ADDRESS: u16 = 0x0001;
    /// RFC 5780 §7.2.
    pub const CHANGE_REQUEST: u16 = 0x0003;
    /// RFC 8489 §14.3.
    pub const USERNAME: u16 = 0x0006;
    /// RFC 8489 §14.5.
    pub const MESSAGE_INTEGRITY: u16 = 0x0008;
    /// RFC 8489 §14.8.
    pub const ERROR_CODE: u16 = 0x0009;
    /// RFC 8489 §14.13.
    pub const UNKNOWN_ATTRIBUTES: u16 = 0x000A;
    /// RFC 8656 §18.1.
    pub const CHANNEL_NUMBER: u16 = 0x000C;
    /// RFC 8656 §18.2.
    pub const LIFETIME: u16 = 0x000D;
    /// RFC 8656 §18.3.
    pub const XOR_PEER_ADDRESS: u16 = 0x0012;
    /// RFC 8656 §18.4.
    pub const DATA: u16 = 0x0013;
    /// RFC 8489 §14.9.
    pub const REALM: u16 = 0x0014;
    /// RFC 8489 §14.10.
    pub const NONCE: u16 = 0x0015;
    /// RFC 8656 §18.5.
    pub const XOR_RELAYED_ADDRESS: u16 = 0x0016;
    /// RFC 8656 §18.6.
    pub const REQUESTED_ADDRESS_FAMILY: u16 = 0x0017;
    /// RFC 8656 §18.7.
    pub const EVEN_PORT: u16 = 0x0018;
    /// RFC 8656 §18.8.
    pub const REQUESTED_TRANSPORT: u16 = 0x0019;
    /// RFC 8656 §18.9.
    pub const DONT_FRAGMENT: u16 = 0x001A;
    /// RFC 8489 §14.6.
    pub const MESSAGE_INTEGRITY_SHA256: u16 = 0x001C;
    /// RFC 8489 §14.12.
    pub const PASSWORD_ALGORITHM: u16 = 0x001D;
    /// RFC 8489 §14.4.
    pub const USERHASH: u16 = 0x001E;
    /// RFC 8489 §14.2.
    pub const XOR_MAPPED_ADDRESS: u16 = 0x0020;
    /// RFC 8656 §18.10.
    pub const RESERVATION_TOKEN: u16 = 0x0022;
    /// RFC 8445 §16.1.
    pub const PRIORITY: u16 = 0x0024;
    /// RFC 8445 §16.1.
    pub const USE_CANDIDATE: u16 = 0x0025;
    /// RFC 5780 §7.6.
    pub const PADDING: u16 = 0x0026;
    /// RFC 5780 §7.5.
    pub const RESPONSE_PORT: u16 = 0x0027;
    /// RFC 8656 §18.11.
    pub const ADDITIONAL_ADDRESS_FAMILY: u16 = 0x8000;
    /// RFC 8656 §18.12.
    pub const ADDRESS_ERROR_CODE: u16 = 0x8001;
    /// RFC 8489 §14.11.
    pub const PASSWORD_ALGORITHMS: u16 = 0x8002;
    /// RFC 8656 §18.13.
    pub const ICMP: u16 = 0x8004;
    /// RFC 8489 §14.14.
    pub const SOFTWARE: u16 = 0x8022;
    /// RFC 8489 §14.15.
    pub const ALTERNATE_SERVER: u16 = 0x8023;
    /// RFC 8489 §14.7.
    pub const FINGERPRINT: u16 = 0x8028;
    /// RFC 8445 §16.1.
    pub const ICE_CONTROLLED: u16 = 0x8029;
    /// RFC 8445 §16.1.
    pub const ICE_CONTROLLING: u16 = 0x802A;
    /// RFC 5780 §7.3.
    pub const RESPONSE_ORIGIN: u16 = 0x802B;
    /// RFC 5780 §7.4.
    pub const OTHER_ADDRESS: u16 = 0x802C;
}

use types::*;

/// Longest USERNAME value (RFC 8489 §14.3: less than 513 bytes).
pub const MAX_USERNAME: usize = 512;
/// Longest REALM, NONCE, SOFTWARE and error reason (RFC 8489 §14.8-§14.14: 763 bytes).
pub const MAX_TEXT: usize = 763;

/// An address family for REQUESTED-ADDRESS-FAMILY and friends (RFC 8656 §18.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddressFamily {
    /// 0x01.
    V4,
    /// 0x02.
    V6,
}

impl AddressFamily {
    const fn number(self) -> u8 {
        match self {
            Self::V4 => 1,
            Self::V6 => 2,
        }
    }
    fn from_number(n: u8, attr: u16) -> Result<Self, DecodeError> {
        match n {
            1 => Ok(Self::V4),
            2 => Ok(Self::V6),
            _ => Err(DecodeError::BadAttributeValue(attr)),
        }
    }
}

/// One entry of PASSWORD-ALGORITHMS, or the value of PASSWORD-ALGORITHM (RFC 8489 §14.11).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AlgorithmEntry<'a> {
    /// The algorithm number (1 = MD5, 2 = SHA-256; see [`super::PasswordAlgorithm`]).
    pub algorithm: u16,
    /// Its parameters (empty for MD5 and SHA-256).
    pub parameters: &'a [u8],
}

/// A list of algorithm entries as it sits on the wire (PASSWORD-ALGORITHMS), validated
/// at decode time and iterated without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AlgorithmList<'a>(&'a [u8]);

impl<'a> AlgorithmList<'a> {
    fn parse(value: &'a [u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(value);
        while !r.is_empty() {
            read_algorithm(&mut r)
                .map_err(|_| DecodeError::BadAttributeValue(PASSWORD_ALGORITHMS))?;
        }
        Ok(Self(value))
    }

    /// The list as on the wire (for comparing with what was sent, RFC 8489 §9.2.4).
    #[must_use]
    pub const fn as_wire(&self) -> &'a [u8] {
        self.0
    }

    /// The entries, in the order the sender prefers them.
    pub fn iter(&self) -> impl Iterator<Item = AlgorithmEntry<'a>> {
        let mut r = Reader::new(self.0);
        core::iter::from_fn(move || read_algorithm(&mut r).ok())
    }

    /// Encodes a list of entries into `dst` (for building a PASSWORD-ALGORITHMS value).
    pub fn write(entries: &[AlgorithmEntry<'_>], dst: &mut Vec<u8>) {
        for e in entries {
            dst.extend_from_slice(&e.algorithm.to_be_bytes());
            dst.extend_from_slice(&(e.parameters.len() as u16).to_be_bytes());
            dst.extend_from_slice(e.parameters);
            dst.resize(dst.len() + pad(e.parameters.len()), 0);
        }
    }

    /// Wraps bytes produced by [`AlgorithmList::write`] (or checked by decode).
    ///
    /// # Errors
    /// [`DecodeError::BadAttributeValue`] if `bytes` is not a valid list.
    pub fn from_wire(bytes: &'a [u8]) -> Result<Self, DecodeError> {
        Self::parse(bytes)
    }

    fn as_bytes(&self) -> &'a [u8] {
        self.0
    }
}

fn read_algorithm<'a>(
    r: &mut Reader<'a>,
) -> Result<AlgorithmEntry<'a>, chorus_framing::DecodeError> {
    let algorithm = r.u16()?;
    let len = usize::from(r.u16()?);
    let parameters = r.take(len)?;
    r.skip(pad(len))?;
    Ok(AlgorithmEntry {
        algorithm,
        parameters,
    })
}

/// Bytes of padding after a value of `len` bytes (RFC 8489 §14: 32-bit alignment).
pub(crate) const fn pad(len: usize) -> usize {
    (4 - len % 4) % 4
}

/// A decoded STUN attribute, borrowing variable-length values from the message.
///
/// MESSAGE-INTEGRITY, MESSAGE-INTEGRITY-SHA256 and FINGERPRINT are not attributes of
/// this enum: they are computed on encode and checked on decode (see
/// [`super::Message`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Attribute<'a> {
    /// MAPPED-ADDRESS (RFC 8489 §14.1), for RFC 3489 clients.
    MappedAddress(SocketAddr),
    /// XOR-MAPPED-ADDRESS (RFC 8489 §14.2).
    XorMappedAddress(SocketAddr),
    /// USERNAME (RFC 8489 §14.3), at most 512 bytes of UTF-8.
    Username(&'a str),
    /// USERHASH (RFC 8489 §14.4).
    UserHash([u8; 32]),
    /// ERROR-CODE (RFC 8489 §14.8): `code` in 300..=699.
    ErrorCode {
        /// The code, class * 100 + number.
        code: u16,
        /// The reason phrase.
        reason: &'a str,
    },
    /// UNKNOWN-ATTRIBUTES (RFC 8489 §14.13), as big-endian u16s on the wire.
    UnknownAttributes(UnknownList<'a>),
    /// REALM (RFC 8489 §14.9).
    Realm(&'a str),
    /// NONCE (RFC 8489 §14.10).
    Nonce(&'a str),
    /// PASSWORD-ALGORITHMS (RFC 8489 §14.11).
    PasswordAlgorithms(AlgorithmList<'a>),
    /// PASSWORD-ALGORITHM (RFC 8489 §14.12).
    PasswordAlgorithm(AlgorithmEntry<'a>),
    /// SOFTWARE (RFC 8489 §14.14).
    Software(&'a str),
    /// ALTERNATE-SERVER (RFC 8489 §14.15).
    AlternateServer(SocketAddr),
    /// CHANGE-REQUEST (RFC 5780 §7.2).
    ChangeRequest {
        /// Send the response from the other IP address.
        ip: bool,
        /// Send the response from the other port.
        port: bool,
    },
    /// RESPONSE-ORIGIN (RFC 5780 §7.3).
    ResponseOrigin(SocketAddr),
    /// OTHER-ADDRESS (RFC 5780 §7.4).
    OtherAddress(SocketAddr),
    /// RESPONSE-PORT (RFC 5780 §7.5).
    ResponsePort(u16),
    /// PADDING (RFC 5780 §7.6).
    Padding(&'a [u8]),
    /// CHANNEL-NUMBER (RFC 8656 §18.1).
    ChannelNumber(u16),
    /// LIFETIME in seconds (RFC 8656 §18.2).
    Lifetime(u32),
    /// XOR-PEER-ADDRESS (RFC 8656 §18.3).
    XorPeerAddress(SocketAddr),
    /// DATA (RFC 8656 §18.4).
    Data(&'a [u8]),
    /// XOR-RELAYED-ADDRESS (RFC 8656 §18.5).
    XorRelayedAddress(SocketAddr),
    /// REQUESTED-ADDRESS-FAMILY (RFC 8656 §18.6).
    RequestedAddressFamily(AddressFamily),
    /// EVEN-PORT (RFC 8656 §18.7): `true` asks to reserve the next port too.
    EvenPort(bool),
    /// REQUESTED-TRANSPORT (RFC 8656 §18.8): an IP protocol number (17 = UDP).
    RequestedTransport(u8),
    /// DONT-FRAGMENT (RFC 8656 §18.9).
    DontFragment,
    /// RESERVATION-TOKEN (RFC 8656 §18.10).
    ReservationToken([u8; 8]),
    /// ADDITIONAL-ADDRESS-FAMILY (RFC 8656 §18.11).
    AdditionalAddressFamily(AddressFamily),
    /// ADDRESS-ERROR-CODE (RFC 8656 §18.12).
    AddressErrorCode {
        /// The family the error is about.
        family: AddressFamily,
        /// The code, class * 100 + number.
        code: u16,
        /// The reason phrase.
        reason: &'a str,
    },
    /// ICMP (RFC 8656 §18.13). The field widths follow the RFC's figure: 16 reserved
    /// bits, a 7-bit type, a 9-bit code.
    Icmp {
        /// ICMP type (7 bits on the wire: 0..=127).
        icmp_type: u8,
        /// ICMP code (9 bits on the wire: 0..=511).
        code: u16,
        /// Error data.
        data: u32,
    },
    /// PRIORITY (RFC 8445 §16.1).
    Priority(u32),
    /// USE-CANDIDATE (RFC 8445 §16.1).
    UseCandidate,
    /// ICE-CONTROLLED tie breaker (RFC 8445 §16.1).
    IceControlled(u64),
    /// ICE-CONTROLLING tie breaker (RFC 8445 §16.1).
    IceControlling(u64),
    /// A comprehension-optional attribute this implementation does not interpret.
    Unknown {
        /// Its type (at least 0x8000).
        attr_type: u16,
        /// Its value.
        value: &'a [u8],
    },
}

/// The attribute types listed in UNKNOWN-ATTRIBUTES, as on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UnknownList<'a>(&'a [u8]);

impl<'a> UnknownList<'a> {
    /// Wraps big-endian u16s (an even number of bytes).
    ///
    /// # Errors
    /// [`DecodeError::BadAttributeLength`] for an odd length.
    pub fn from_wire(bytes: &'a [u8]) -> Result<Self, DecodeError> {
        if bytes.len().is_multiple_of(2) {
            Ok(Self(bytes))
        } else {
            Err(DecodeError::BadAttributeLength {
                attr: UNKNOWN_ATTRIBUTES,
                len: bytes.len(),
            })
        }
    }

    /// The listed types.
    pub fn iter(&self) -> impl Iterator<Item = u16> + 'a {
        self.0.chunks_exact(2).map(|c| {
            u16::from_be_bytes([
                c.first().copied().unwrap_or(0),
                c.get(1).copied().unwrap_or(0),
            ])
        })
    }
}

impl<'a> Attribute<'a> {
    /// This attribute's type number.
    #[must_use]
    pub const fn attr_type(&self) -> u16 {
        match self {
            Self::MappedAddress(_) => MAPPED_ADDRESS,
            Self::XorMappedAddress(_) => XOR_MAPPED_ADDRESS,
            Self::Username(_) => USERNAME,
            Self::UserHash(_) => USERHASH,
            Self::ErrorCode { .. } => ERROR_CODE,
            Self::UnknownAttributes(_) => UNKNOWN_ATTRIBUTES,
            Self::Realm(_) => REALM,
            Self::Nonce(_) => NONCE,
            Self::PasswordAlgorithms(_) => PASSWORD_ALGORITHMS,
            Self::PasswordAlgorithm(_) => PASSWORD_ALGORITHM,
            Self::Software(_) => SOFTWARE,
            Self::AlternateServer(_) => ALTERNATE_SERVER,
            Self::ChangeRequest { .. } => CHANGE_REQUEST,
            Self::ResponseOrigin(_) => RESPONSE_ORIGIN,
            Self::OtherAddress(_) => OTHER_ADDRESS,
            Self::ResponsePort(_) => RESPONSE_PORT,
            Self::Padding(_) => PADDING,
            Self::ChannelNumber(_) => CHANNEL_NUMBER,
            Self::Lifetime(_) => LIFETIME,
            Self::XorPeerAddress(_) => XOR_PEER_ADDRESS,
            Self::Data(_) => DATA,
            Self::XorRelayedAddress(_) => XOR_RELAYED_ADDRESS,
            Self::RequestedAddressFamily(_) => REQUESTED_ADDRESS_FAMILY,
            Self::EvenPort(_) => EVEN_PORT,
            Self::RequestedTransport(_) => REQUESTED_TRANSPORT,
            Self::DontFragment => DONT_FRAGMENT,
            Self::ReservationToken(_) => RESERVATION_TOKEN,
            Self::AdditionalAddressFamily(_) => ADDITIONAL_ADDRESS_FAMILY,
            Self::AddressErrorCode { .. } => ADDRESS_ERROR_CODE,
            Self::Icmp { .. } => ICMP,
            Self::Priority(_) => PRIORITY,
            Self::UseCandidate => USE_CANDIDATE,
            Self::IceControlled(_) => ICE_CONTROLLED,
            Self::IceControlling(_) => ICE_CONTROLLING,
            Self::Unknown { attr_type, .. } => *attr_type,
        }
    }

    /// The length of the value, before padding.
    #[must_use]
    pub fn value_len(&self) -> usize {
        let addr = |a: &SocketAddr| if a.is_ipv4() { 8 } else { 20 };
        match self {
            Self::MappedAddress(a)
            | Self::XorMappedAddress(a)
            | Self::AlternateServer(a)
            | Self::ResponseOrigin(a)
            | Self::OtherAddress(a)
            | Self::XorPeerAddress(a)
            | Self::XorRelayedAddress(a) => addr(a),
            Self::Username(s) | Self::Realm(s) | Self::Nonce(s) | Self::Software(s) => s.len(),
            Self::UserHash(_) => 32,
            Self::ErrorCode { reason, .. } | Self::AddressErrorCode { reason, .. } => {
                4 + reason.len()
            }
            Self::UnknownAttributes(l) => l.0.len(),
            Self::PasswordAlgorithms(l) => l.as_bytes().len(),
            Self::PasswordAlgorithm(e) => 4 + e.parameters.len() + pad(e.parameters.len()),
            Self::Padding(b) | Self::Data(b) | Self::Unknown { value: b, .. } => b.len(),
            Self::ChangeRequest { .. }
            | Self::ResponsePort(_)
            | Self::ChannelNumber(_)
            | Self::Lifetime(_)
            | Self::RequestedAddressFamily(_)
            | Self::RequestedTransport(_)
            | Self::AdditionalAddressFamily(_)
            | Self::Priority(_) => 4,
            Self::EvenPort(_) => 1,
            Self::DontFragment | Self::UseCandidate => 0,
            Self::ReservationToken(_)
            | Self::Icmp { .. }
            | Self::IceControlled(_)
            | Self::IceControlling(_) => 8,
        }
    }

    /// Checks that this attribute can be encoded (lengths within the RFC's bounds).
    pub(crate) fn validate(&self) -> Result<(), UsageError> {
        let t = self.attr_type();
        let too_long = |max: usize, len: usize| {
            if len > max {
                Err(UsageError::ValueTooLong(t))
            } else {
                Ok(())
            }
        };
        match self {
            Self::Username(s) => too_long(MAX_USERNAME, s.len()),
            Self::Realm(s) | Self::Nonce(s) | Self::Software(s) => too_long(MAX_TEXT, s.len()),
            Self::ErrorCode { code, reason } | Self::AddressErrorCode { code, reason, .. } => {
                if !(300..=699).contains(code) {
                    return Err(UsageError::InvalidValue(t));
                }
                too_long(MAX_TEXT, reason.len())
            }
            Self::Icmp {
                icmp_type, code, ..
            } if *icmp_type > 0x7f || *code > 0x1ff => Err(UsageError::InvalidValue(t)),
            Self::Unknown { attr_type, .. } if *attr_type < 0x8000 => {
                Err(UsageError::InvalidValue(t))
            }
            Self::UnknownAttributes(_)
            | Self::PasswordAlgorithms(_)
            | Self::PasswordAlgorithm(_)
            | Self::Padding(_)
            | Self::Data(_)
            | Self::Unknown { .. } => too_long(0xfff0, self.value_len()),
            _ => Ok(()),
        }
    }

    /// Writes the value (without header or padding).
    pub(crate) fn write_value(&self, tid: &TransactionId, dst: &mut BytesMut) {
        match self {
            Self::MappedAddress(a)
            | Self::AlternateServer(a)
            | Self::ResponseOrigin(a)
            | Self::OtherAddress(a) => {
                write_addr(*a, dst);
            }
            Self::XorMappedAddress(a) | Self::XorPeerAddress(a) | Self::XorRelayedAddress(a) => {
                write_addr(xor_addr(*a, tid), dst);
            }
            Self::Username(s) | Self::Realm(s) | Self::Nonce(s) | Self::Software(s) => {
                dst.put_slice(s.as_bytes())
            }
            Self::UserHash(h) => dst.put_slice(h),
            Self::ErrorCode { code, reason } => {
                dst.put_u16(0);
                dst.put_u8((code / 100) as u8);
                dst.put_u8((code % 100) as u8);
                dst.put_slice(reason.as_bytes());
            }
            Self::AddressErrorCode {
                family,
                code,
                reason,
            } => {
                dst.put_u8(family.number());
                dst.put_u8(0);
                dst.put_u8((code / 100) as u8);
                dst.put_u8((code % 100) as u8);
                dst.put_slice(reason.as_bytes());
            }
            Self::UnknownAttributes(l) => dst.put_slice(l.0),
            Self::PasswordAlgorithms(l) => dst.put_slice(l.as_bytes()),
            Self::PasswordAlgorithm(e) => {
                dst.put_u16(e.algorithm);
                dst.put_u16(e.parameters.len() as u16);
                dst.put_slice(e.parameters);
                dst.put_bytes(0, pad(e.parameters.len()));
            }
            Self::ChangeRequest { ip, port } => {
                dst.put_u32(u32::from(*ip) << 2 | u32::from(*port) << 1);
            }
            Self::ResponsePort(p) => {
                dst.put_u16(*p);
                dst.put_u16(0);
            }
            Self::Padding(b) | Self::Data(b) | Self::Unknown { value: b, .. } => dst.put_slice(b),
            Self::ChannelNumber(c) => {
                dst.put_u16(*c);
                dst.put_u16(0);
            }
            Self::Lifetime(v) | Self::Priority(v) => dst.put_u32(*v),
            Self::RequestedAddressFamily(f) | Self::AdditionalAddressFamily(f) => {
                dst.put_u8(f.number());
                dst.put_bytes(0, 3);
            }
            Self::EvenPort(r) => dst.put_u8(if *r { 0x80 } else { 0 }),
            Self::RequestedTransport(p) => {
                dst.put_u8(*p);
                dst.put_bytes(0, 3);
            }
            Self::DontFragment | Self::UseCandidate => {}
            Self::ReservationToken(t) => dst.put_slice(t),
            Self::Icmp {
                icmp_type,
                code,
                data,
            } => {
                // RFC 8656 §18.13 (its figure): 16 reserved bits, 7-bit type, 9-bit code,
                // error data.
                dst.put_u16(0);
                dst.put_u16(u16::from(*icmp_type) << 9 | code);
                dst.put_u32(*data);
            }
            Self::IceControlled(v) | Self::IceControlling(v) => dst.put_u64(*v),
        }
    }

    /// Decodes the value of an attribute of type `t`. `Ok(None)` means "unknown
    /// comprehension-required": the caller collects it for a 420 response.
    pub(crate) fn decode(
        t: u16,
        value: &'a [u8],
        tid: &TransactionId,
    ) -> Result<Option<Self>, DecodeError> {
        let bad_len = || DecodeError::BadAttributeLength {
            attr: t,
            len: value.len(),
        };
        let exact = |n: usize| {
            if value.len() == n {
                Ok(())
            } else {
                Err(bad_len())
            }
        };
        let mut r = Reader::new(value);
        let text = |max: usize| -> Result<&'a str, DecodeError> {
            if value.len() > max {
                return Err(bad_len());
            }
            core::str::from_utf8(value).map_err(|_| DecodeError::BadAttributeValue(t))
        };
        let attr = match t {
            MAPPED_ADDRESS => Self::MappedAddress(read_addr(value, t)?),
            ALTERNATE_SERVER => Self::AlternateServer(read_addr(value, t)?),
            RESPONSE_ORIGIN => Self::ResponseOrigin(read_addr(value, t)?),
            OTHER_ADDRESS => Self::OtherAddress(read_addr(value, t)?),
            XOR_MAPPED_ADDRESS => Self::XorMappedAddress(xor_addr(read_addr(value, t)?, tid)),
            XOR_PEER_ADDRESS => Self::XorPeerAddress(xor_addr(read_addr(value, t)?, tid)),
            XOR_RELAYED_ADDRESS => Self::XorRelayedAddress(xor_addr(read_addr(value, t)?, tid)),
            USERNAME => Self::Username(text(MAX_USERNAME)?),
            REALM => Self::Realm(text(MAX_TEXT)?),
            NONCE => Self::Nonce(text(MAX_TEXT)?),
            SOFTWARE => Self::Software(text(MAX_TEXT)?),
            USERHASH => Self::UserHash(
                r.array()
                    .map_err(|_| bad_len())
                    .and_then(|a| exact(32).map(|()| a))?,
            ),
            ERROR_CODE => {
                let (code, reason) = read_error(&mut r, t)?;
                Self::ErrorCode { code, reason }
            }
            ADDRESS_ERROR_CODE => {
                let family = AddressFamily::from_number(r.u8().map_err(|_| bad_len())?, t)?;
                let (code, reason) = read_error(&mut r, t)?;
                // `read_error` reads 16 reserved bits; here the first byte was the family.
                Self::AddressErrorCode {
                    family,
                    code,
                    reason,
                }
            }
            UNKNOWN_ATTRIBUTES => Self::UnknownAttributes(UnknownList::from_wire(value)?),
            PASSWORD_ALGORITHMS => Self::PasswordAlgorithms(AlgorithmList::parse(value)?),
            PASSWORD_ALGORITHM => {
                let e = read_algorithm(&mut r).map_err(|_| bad_len())?;
                if !r.is_empty() {
                    return Err(bad_len());
                }
                Self::PasswordAlgorithm(e)
            }
            CHANGE_REQUEST => {
                exact(4)?;
                let flags = r.u32()?;
                if flags & !0x6 != 0 {
                    return Err(DecodeError::BadAttributeValue(t));
                }
                Self::ChangeRequest {
                    ip: flags & 4 != 0,
                    port: flags & 2 != 0,
                }
            }
            RESPONSE_PORT => {
                exact(4)?;
                Self::ResponsePort(r.u16()?)
            }
            PADDING => Self::Padding(value),
            CHANNEL_NUMBER => {
                exact(4)?;
                Self::ChannelNumber(r.u16()?)
            }
            LIFETIME => {
                exact(4)?;
                Self::Lifetime(r.u32()?)
            }
            PRIORITY => {
                exact(4)?;
                Self::Priority(r.u32()?)
            }
            DATA => Self::Data(value),
            REQUESTED_ADDRESS_FAMILY | ADDITIONAL_ADDRESS_FAMILY => {
                exact(4)?;
                let f = AddressFamily::from_number(r.u8()?, t)?;
                if t == REQUESTED_ADDRESS_FAMILY {
                    Self::RequestedAddressFamily(f)
                } else {
                    Self::AdditionalAddressFamily(f)
                }
            }
            EVEN_PORT => {
                exact(1)?;
                Self::EvenPort(r.u8()? & 0x80 != 0)
            }
            REQUESTED_TRANSPORT => {
                exact(4)?;
                Self::RequestedTransport(r.u8()?)
            }
            DONT_FRAGMENT => {
                exact(0)?;
                Self::DontFragment
            }
            USE_CANDIDATE => {
                exact(0)?;
                Self::UseCandidate
            }
            RESERVATION_TOKEN => {
                exact(8)?;
                Self::ReservationToken(r.array()?)
            }
            ICMP => {
                exact(8)?;
                r.skip(2)?;
                let tc = r.u16()?;
                Self::Icmp {
                    icmp_type: (tc >> 9) as u8,
                    code: tc & 0x1ff,
                    data: r.u32()?,
                }
            }
            ICE_CONTROLLED => {
                exact(8)?;
                Self::IceControlled(r.u64()?)
            }
            ICE_CONTROLLING => {
                exact(8)?;
                Self::IceControlling(r.u64()?)
            }
            t if t >= 0x8000 => Self::Unknown {
                attr_type: t,
                value,
            },
            _ => return Ok(None),
        };
        Ok(Some(attr))
    }
}

/// ERROR-CODE's layout after any leading bytes (RFC 8489 §14.8): reserved bits, a
/// 3-bit class, an 8-bit number below 100, then the reason.
fn read_error<'a>(r: &mut Reader<'a>, t: u16) -> Result<(u16, &'a str), DecodeError> {
    let bad = DecodeError::BadAttributeValue(t);
    if t == ERROR_CODE {
        r.u16().map_err(|_| bad)?;
    } else {
        r.u8().map_err(|_| bad)?;
    }
    let class = r.u8().map_err(|_| bad)?;
    let number = r.u8().map_err(|_| bad)?;
    if !(3..=6).contains(&class) || number >= 100 {
        return Err(bad);
    }
    let reason = r.take_rest();
    if reason.len() > MAX_TEXT {
        return Err(DecodeError::BadAttributeLength {
            attr: t,
            len: reason.len() + 4,
        });
    }
    let reason = core::str::from_utf8(reason).map_err(|_| bad)?;
    Ok((u16::from(class) * 100 + u16::from(number), reason))
}

/// RFC 8489 §14.1: reserved byte, family, port, address.
fn read_addr(value: &[u8], t: u16) -> Result<SocketAddr, DecodeError> {
    let bad_len = DecodeError::BadAttributeLength {
        attr: t,
        len: value.len(),
    };
    let mut r = Reader::new(value);
    let _reserved = r.u8().map_err(|_| bad_len)?;
    let family = r.u8().map_err(|_| bad_len)?;
    let port = r.u16().map_err(|_| bad_len)?;
    let ip = match (family, value.len()) {
        (1, 8) => IpAddr::V4(Ipv4Addr::from(r.array::<4>()?)),
        (2, 20) => IpAddr::V6(Ipv6Addr::from(r.array::<16>()?)),
        (1 | 2, _) => return Err(bad_len),
        _ => return Err(DecodeError::BadAttributeValue(t)),
    };
    Ok(SocketAddr::new(ip, port))
}

fn write_addr(a: SocketAddr, dst: &mut BytesMut) {
    dst.put_u8(0);
    match a.ip() {
        IpAddr::V4(ip) => {
            dst.put_u8(1);
            dst.put_u16(a.port());
            dst.put_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            dst.put_u8(2);
            dst.put_u16(a.port());
            dst.put_slice(&ip.octets());
        }
    }
}

/// RFC 8489 §14.2: the port is XORed with the cookie's top 16 bits, an IPv4 address
/// with the cookie, an IPv6 address with the cookie and the transaction id. XOR is its
/// own inverse, so this both encodes and decodes.
fn xor_addr(a: SocketAddr, tid: &TransactionId) -> SocketAddr {
    let port = a.port() ^ (MAGIC_COOKIE >> 16) as u16;
    let ip = match a.ip() {
        IpAddr::V4(ip) => IpAddr::V4(Ipv4Addr::from(ip.to_bits() ^ MAGIC_COOKIE)),
        IpAddr::V6(ip) => {
            let mut mask = [0u8; 16];
            let (cookie, id) = mask.split_at_mut(4);
            cookie.copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
            id.copy_from_slice(&tid.0);
            IpAddr::V6(Ipv6Addr::from(ip.to_bits() ^ u128::from_be_bytes(mask)))
        }
    };
    SocketAddr::new(ip, port)
}

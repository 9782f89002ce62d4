//! Presence records: where a user can be reached, signed by the user.
//!
//! A record maps a username to the user's certificate, the super node(s) the user is
//! attached to, the user's reachable candidates, NAT class, a version counter and an
//! expiry. The user signs it with the key the login authority certified; every node
//! verifies the certificate and the signature (through a [`Verifier`]) before it
//! stores or returns a record, and keeps only the newest version of each.
//!
//! The record is a TLV attribute list (`docs/index.md`, "Presence record"); the
//! signature covers a context string and the canonical encoding of every other
//! attribute, in type order:
//!
//! | type | name | value |
//! |---|---|---|
//! | 0x0001 | username | UTF-8, 1-64 bytes |
//! | 0x0002 | display name | UTF-8, 0-64 bytes |
//! | 0x0003 | user certificate | chorus-crypto certificate, at most 1,300 bytes |
//! | 0x0004 | super nodes | 0-4 addresses |
//! | 0x0005 | candidates | 0-8 addresses |
//! | 0x0006 | NAT class | u8 |
//! | 0x0007 | version | u64 |
//! | 0x0008 | issued at | u64, Unix seconds |
//! | 0x0009 | expires at | u64, Unix seconds |
//! | 0x000a | signature | RSA-PSS-SHA256, at most 512 bytes |
//!
//! An address is `family(1: 4 or 6) port(2) ip(4 or 16)`; a list is addresses back to
//! back.
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
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use chorus_crypto::cert::{MAX_CERT_LEN, MAX_USERNAME_LEN, NodeId, Role, TrustStore};
use chorus_crypto::identity::{IdentityKeyPair, MAX_SIGNATURE_LEN};
use chorus_framing::Reader;
use chorus_framing::tlv::{Attributes, TlvLimits};

use crate::error::{DecodeError, Error, UsageError, Violation};
use crate::id::user_key;

/// Longest display name, in bytes of UTF-8.
pub const MAX_DISPLAY_NAME_LEN: usize = 64;
/// Most super nodes a record names.
pub const MAX_SUPER_NODES: usize = 4;
/// Most candidates a record carries.
pub const MAX_CANDIDATES: usize = 8;
/// Longest encoded record.
pub const MAX_RECORD_LEN: usize = 2_400;

const USERNAME: u16 = 0x0001;
const DISPLAY_NAME: u16 = 0x0002;
const USER_CERT: u16 = 0x0003;
const SUPER_NODES: u16 = 0x0004;
const CANDIDATES: u16 = 0x0005;
const NAT_CLASS: u16 = 0x0006;
const VERSION: u16 = 0x0007;
const ISSUED_AT: u16 = 0x0008;
const EXPIRES_AT: u16 = 0x0009;
const SIGNATURE: u16 = 0x000a;
const KNOWN: [u16; 10] = [
    USERNAME,
    DISPLAY_NAME,
    USER_CERT,
    SUPER_NODES,
    CANDIDATES,
    NAT_CLASS,
    VERSION,
    ISSUED_AT,
    EXPIRES_AT,
    SIGNATURE,
];
/// Domain separation for record signatures.
const SIGNING_CONTEXT: &[u8] = b"chorus presence record v1\0";

/// The NAT and firewall situation of a user, from RFC 5780 discovery (chorus-nat).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(u8)]
pub enum NatClass {
    /// Not determined.
    #[default]
    Unknown = 0,
    /// A public address, no NAT or firewall.
    Open = 1,
    /// Endpoint-independent mapping and filtering.
    FullCone = 2,
    /// Endpoint-independent mapping, address-dependent filtering.
    Restricted = 3,
    /// Endpoint-independent mapping, address-and-port-dependent filtering.
    PortRestricted = 4,
    /// Address- or port-dependent mapping.
    Symmetric = 5,
    /// UDP blocked: reachable over TCP or a relay only.
    UdpBlocked = 6,
}

impl NatClass {
    /// The class with wire value `b`.
    #[must_use]
    pub const fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            0 => Self::Unknown,
            1 => Self::Open,
            2 => Self::FullCone,
            3 => Self::Restricted,
            4 => Self::PortRestricted,
            5 => Self::Symmetric,
            6 => Self::UdpBlocked,
            _ => return None,
        })
    }
}

/// The class a client's RFC 5780 discovery run reports (chorus-nat), as published.
/// A public host behind a filtering firewall ("symmetric UDP firewall") keeps its
/// address and filters by address and port, so peers see it as port-restricted.
impl From<chorus_nat::discovery::Classic> for NatClass {
    fn from(c: chorus_nat::discovery::Classic) -> Self {
        use chorus_nat::discovery::Classic;
        match c {
            Classic::OpenInternet => Self::Open,
            Classic::FullCone => Self::FullCone,
            Classic::RestrictedCone => Self::Restricted,
            Classic::PortRestrictedCone | Classic::SymmetricUdpFirewall => Self::PortRestricted,
            Classic::Symmetric => Self::Symmetric,
            Classic::UdpBlocked => Self::UdpBlocked,
            Classic::Unknown => Self::Unknown,
        }
    }
}

/// The class a client kept from an earlier run (chorus-hostcache's `shared.xml`).
impl From<chorus_hostcache::nat::ClassicNat> for NatClass {
    fn from(c: chorus_hostcache::nat::ClassicNat) -> Self {
        use chorus_hostcache::nat::ClassicNat;
        match c {
            ClassicNat::OpenInternet => Self::Open,
            ClassicNat::FullCone => Self::FullCone,
            ClassicNat::RestrictedCone => Self::Restricted,
            ClassicNat::PortRestrictedCone => Self::PortRestricted,
            ClassicNat::Symmetric => Self::Symmetric,
            ClassicNat::UdpBlocked => Self::UdpBlocked,
            ClassicNat::Unknown => Self::Unknown,
        }
    }
}

/// A user's presence record. Nothing in it is trusted until a [`Verifier`] accepts it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PresenceRecord {
    /// The user (1-64 bytes, as in the certificate).
    pub username: String,
    /// The name shown in search results (0-64 bytes).
    pub display_name: String,
    /// The user's certificate from the login authority, encoded.
    pub user_cert: Bytes,
    /// The super nodes the user is attached to (at most [`MAX_SUPER_NODES`]).
    pub super_nodes: Vec<SocketAddr>,
    /// Addresses the user can be reached at, relays first (at most
    /// [`MAX_CANDIDATES`]).
    pub candidates: Vec<SocketAddr>,
    /// The user's NAT class.
    pub nat_class: NatClass,
    /// Increases with every publication; a node keeps only the highest.
    pub version: u64,
    /// When the user signed it, in Unix seconds.
    pub issued_at: u64,
    /// When nodes drop it, in Unix seconds (by default 72 hours after login).
    pub expires_at: u64,
    /// The user's signature over everything else.
    pub signature: Bytes,
}

/// Seconds since the Unix epoch (0 before it).
#[must_use]
pub fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn valid_username(name: &str) -> bool {
    (1..=MAX_USERNAME_LEN).contains(&name.len())
        && !name.chars().any(|c| c.is_control() || c.is_whitespace())
}

fn addr_len(a: &SocketAddr) -> usize {
    match a {
        SocketAddr::V4(_) => 7,
        SocketAddr::V6(_) => 19,
    }
}

/// Writes an address: family, port, IP.
pub(crate) fn put_addr(dst: &mut BytesMut, a: &SocketAddr) {
    match a.ip() {
        IpAddr::V4(ip) => {
            dst.put_u8(4);
            dst.put_u16(a.port());
            dst.put_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            dst.put_u8(6);
            dst.put_u16(a.port());
            dst.put_slice(&ip.octets());
        }
    }
}

/// Reads an address written by [`put_addr`]; `attr` names the attribute in errors.
pub(crate) fn read_addr(r: &mut Reader<'_>, attr: u16) -> Result<SocketAddr, DecodeError> {
    let family = r.u8()?;
    let port = r.u16()?;
    let ip = match family {
        4 => IpAddr::V4(Ipv4Addr::from(r.array::<4>()?)),
        6 => IpAddr::V6(Ipv6Addr::from(r.array::<16>()?)),
        _ => return Err(DecodeError::BadAttributeValue(attr)),
    };
    Ok(SocketAddr::new(ip, port))
}

fn read_addrs(value: &[u8], attr: u16, max: usize) -> Result<Vec<SocketAddr>, DecodeError> {
    let mut r = Reader::new(value);
    let mut out = Vec::new();
    while !r.is_empty() {
        if out.len() == max {
            return Err(DecodeError::TooLong {
                len: out.len() + 1,
                max,
            });
        }
        out.push(read_addr(&mut r, attr)?);
    }
    Ok(out)
}

fn put_attr(dst: &mut BytesMut, ty: u16, value: &[u8]) {
    dst.put_u16(ty);
    // Every value is bounded well below 64 KiB by `check`.
    dst.put_u16(value.len() as u16);
    dst.put_slice(value);
}

impl PresenceRecord {
    /// Where this record is stored in the index.
    #[must_use]
    pub fn key(&self) -> NodeId {
        user_key(&self.username)
    }

    /// Checks every field against its bound (what [`PresenceRecord::decode`] would
    /// reject).
    ///
    /// # Errors
    /// [`UsageError::InvalidRecord`] naming the field.
    pub fn check(&self) -> Result<(), Error> {
        let bad = |why| Err(UsageError::InvalidRecord(why).into());
        if !valid_username(&self.username) {
            return bad("username must be 1-64 bytes without whitespace or controls");
        }
        if self.display_name.len() > MAX_DISPLAY_NAME_LEN {
            return bad("display name longer than 64 bytes");
        }
        if self.user_cert.len() > MAX_CERT_LEN {
            return bad("user certificate too long");
        }
        if self.super_nodes.len() > MAX_SUPER_NODES {
            return bad("more than 4 super nodes");
        }
        if self.candidates.len() > MAX_CANDIDATES {
            return bad("more than 8 candidates");
        }
        if self.signature.len() > MAX_SIGNATURE_LEN {
            return bad("signature too long");
        }
        Ok(())
    }

    fn encode_tbs(&self, dst: &mut BytesMut) {
        put_attr(dst, USERNAME, self.username.as_bytes());
        put_attr(dst, DISPLAY_NAME, self.display_name.as_bytes());
        put_attr(dst, USER_CERT, &self.user_cert);
        for (ty, list) in [
            (SUPER_NODES, &self.super_nodes),
            (CANDIDATES, &self.candidates),
        ] {
            dst.put_u16(ty);
            dst.put_u16(list.iter().map(addr_len).sum::<usize>() as u16);
            for a in list {
                put_addr(dst, a);
            }
        }
        put_attr(dst, NAT_CLASS, &[self.nat_class as u8]);
        put_attr(dst, VERSION, &self.version.to_be_bytes());
        put_attr(dst, ISSUED_AT, &self.issued_at.to_be_bytes());
        put_attr(dst, EXPIRES_AT, &self.expires_at.to_be_bytes());
    }

    /// The bytes the user signs: a context string and every attribute but the
    /// signature, canonically encoded.
    #[must_use]
    pub fn signed_message(&self) -> Vec<u8> {
        let mut out = BytesMut::with_capacity(SIGNING_CONTEXT.len() + self.encoded_len());
        out.put_slice(SIGNING_CONTEXT);
        self.encode_tbs(&mut out);
        out.to_vec()
    }

    /// Signs the record with the user's identity key (RSA-PSS-SHA256).
    ///
    /// # Errors
    /// [`UsageError::InvalidRecord`] if a field is out of bounds; [`Error::Entropy`] if
    /// signing fails.
    pub fn sign(&mut self, key: &IdentityKeyPair) -> Result<(), Error> {
        self.signature = Bytes::new();
        self.check()?;
        let sig = key
            .sign(&self.signed_message())
            .map_err(|_| chorus_framing::EntropyError)?;
        self.signature = sig.into();
        Ok(())
    }

    /// Bytes [`PresenceRecord::encode`] writes.
    #[must_use]
    pub fn encoded_len(&self) -> usize {
        4 * KNOWN.len()
            + self.username.len()
            + self.display_name.len()
            + self.user_cert.len()
            + self.super_nodes.iter().map(addr_len).sum::<usize>()
            + self.candidates.iter().map(addr_len).sum::<usize>()
            + 1
            + 8 * 3
            + self.signature.len()
    }

    /// Appends the encoded record (call [`PresenceRecord::check`] first for a record
    /// you built: an out-of-bounds field would not decode).
    pub fn encode(&self, dst: &mut BytesMut) {
        dst.reserve(self.encoded_len());
        self.encode_tbs(dst);
        put_attr(dst, SIGNATURE, &self.signature);
    }

    /// The encoded record.
    #[must_use]
    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(self.encoded_len());
        self.encode(&mut out);
        out.freeze()
    }

    /// Decodes a record that fills `bytes`. Checks structure and bounds only; a
    /// [`Verifier`] checks the certificate and signature.
    ///
    /// # Errors
    /// [`DecodeError::TooLong`] beyond [`MAX_RECORD_LEN`] or a field's bound,
    /// [`DecodeError::MissingAttribute`], [`DecodeError::BadAttributeValue`],
    /// and the TLV errors of [`Attributes::decode`].
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() > MAX_RECORD_LEN {
            return Err(DecodeError::TooLong {
                len: bytes.len(),
                max: MAX_RECORD_LEN,
            });
        }
        let attrs = Attributes::decode(bytes, &KNOWN, &TlvLimits::default())?;
        let username = attrs.require::<&str>(USERNAME)?;
        if !valid_username(username) {
            return Err(DecodeError::BadAttributeValue(USERNAME));
        }
        let display_name = attrs.require::<&str>(DISPLAY_NAME)?;
        if display_name.len() > MAX_DISPLAY_NAME_LEN {
            return Err(DecodeError::TooLong {
                len: display_name.len(),
                max: MAX_DISPLAY_NAME_LEN,
            });
        }
        let user_cert = attrs.require::<&[u8]>(USER_CERT)?;
        if user_cert.len() > MAX_CERT_LEN {
            return Err(DecodeError::TooLong {
                len: user_cert.len(),
                max: MAX_CERT_LEN,
            });
        }
        let super_nodes = read_addrs(
            attrs.require::<&[u8]>(SUPER_NODES)?,
            SUPER_NODES,
            MAX_SUPER_NODES,
        )?;
        let candidates = read_addrs(
            attrs.require::<&[u8]>(CANDIDATES)?,
            CANDIDATES,
            MAX_CANDIDATES,
        )?;
        let nat_class = NatClass::from_u8(attrs.require::<u8>(NAT_CLASS)?)
            .ok_or(DecodeError::BadAttributeValue(NAT_CLASS))?;
        let signature = attrs.require::<&[u8]>(SIGNATURE)?;
        if signature.len() > MAX_SIGNATURE_LEN {
            return Err(DecodeError::TooLong {
                len: signature.len(),
                max: MAX_SIGNATURE_LEN,
            });
        }
        Ok(Self {
            username: username.to_owned(),
            display_name: display_name.to_owned(),
            user_cert: Bytes::copy_from_slice(user_cert),
            super_nodes,
            candidates,
            nat_class,
            version: attrs.require(VERSION)?,
            issued_at: attrs.require(ISSUED_AT)?,
            expires_at: attrs.require(EXPIRES_AT)?,
            signature: Bytes::copy_from_slice(signature),
        })
    }

    /// Whether the record has expired at `now` (Unix seconds).
    #[must_use]
    pub const fn is_expired(&self, now: u64) -> bool {
        now > self.expires_at
    }

    /// Whether `self` should replace `held`: a higher version, or the same version
    /// with a later issue time (ties broken by signature bytes so every node makes
    /// the same choice).
    #[must_use]
    pub fn supersedes(&self, held: &Self) -> bool {
        (self.version, self.issued_at, &self.signature[..])
            > (held.version, held.issued_at, &held.signature[..])
    }

    /// Lowercase words of the display name, for the search index (at most 8, each
    /// 2-32 bytes).
    #[must_use]
    pub fn words(&self) -> Vec<String> {
        let mut words: Vec<String> = self
            .display_name
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| (2..=32).contains(&w.len()))
            .map(str::to_lowercase)
            .collect();
        words.sort();
        words.dedup();
        words.truncate(8);
        words
    }
}

/// Checks certificates and signatures. The real node uses [`CertVerifier`] (RSA via
/// chorus-crypto); the simulator a cheap deterministic one, because 100,000 nodes
/// verifying RSA signatures would measure RSA, not the index (`docs/index.md`).
pub trait Verifier: Send + Sync {
    /// Verifies a super node's certificate at `now` and returns its node id, derived
    /// from its certified key.
    ///
    /// # Errors
    /// [`Violation::BadNodeCertificate`].
    fn verify_node(&self, cert: &[u8], now: SystemTime) -> Result<NodeId, Violation>;

    /// Verifies a record: its user certificate (for the record's username) at `now`
    /// and its signature by the certified key.
    ///
    /// # Errors
    /// [`Violation::BadUserCertificate`] or [`Violation::BadSignature`].
    fn verify_record(&self, record: &PresenceRecord, now: SystemTime) -> Result<(), Violation>;

    /// Verifies a proof of key possession: `signature` over `message` (a
    /// [`possession_message`](crate::message::possession_message)) by the key that
    /// the super node certificate `cert` names. The node calls it once per contact
    /// not yet proven, then remembers the contact.
    ///
    /// # Errors
    /// [`Violation::BadNodeCertificate`] or [`Violation::BadProof`].
    fn verify_possession(
        &self,
        cert: &[u8],
        message: &[u8],
        signature: &[u8],
        now: SystemTime,
    ) -> Result<(), Violation>;
}

/// Signs with a super node's own key, to prove it holds the key its certificate names
/// (RSA-PSS through chorus-crypto's [`IdentityKeyPair`] in production; about 0.5 ms
/// per signature, so the node signs once per requester and nonce and caches the
/// result).
pub trait Signer: Send + Sync {
    /// The signature over `message`.
    ///
    /// # Errors
    /// [`EntropyError`](chorus_framing::EntropyError) if the signing randomness fails.
    fn sign(&self, message: &[u8]) -> Result<Bytes, chorus_framing::EntropyError>;
}

impl Signer for IdentityKeyPair {
    fn sign(&self, message: &[u8]) -> Result<Bytes, chorus_framing::EntropyError> {
        Self::sign(self, message)
            .map(Bytes::from)
            .map_err(|_| chorus_framing::EntropyError)
    }
}

impl<S: Signer + ?Sized> Signer for Arc<S> {
    fn sign(&self, message: &[u8]) -> Result<Bytes, chorus_framing::EntropyError> {
        (**self).sign(message)
    }
}

impl<V: Verifier + ?Sized> Verifier for Arc<V> {
    fn verify_node(&self, cert: &[u8], now: SystemTime) -> Result<NodeId, Violation> {
        (**self).verify_node(cert, now)
    }
    fn verify_possession(
        &self,
        cert: &[u8],
        message: &[u8],
        signature: &[u8],
        now: SystemTime,
    ) -> Result<(), Violation> {
        (**self).verify_possession(cert, message, signature, now)
    }
    fn verify_record(&self, record: &PresenceRecord, now: SystemTime) -> Result<(), Violation> {
        (**self).verify_record(record, now)
    }
}

/// The real verifier: chorus-crypto certificates checked against a [`TrustStore`],
/// RSA-PSS signatures.
#[derive(Debug, Clone)]
pub struct CertVerifier {
    trust: Arc<TrustStore>,
}

impl CertVerifier {
    /// Trusts the login authorities in `trust`.
    #[must_use]
    pub const fn new(trust: Arc<TrustStore>) -> Self {
        Self { trust }
    }
}

impl Verifier for CertVerifier {
    fn verify_node(&self, cert: &[u8], now: SystemTime) -> Result<NodeId, Violation> {
        let verified = self
            .trust
            .verify_bytes(cert, now)
            .map_err(|_| Violation::BadNodeCertificate)?;
        if verified.role() != Role::SuperNode {
            return Err(Violation::BadNodeCertificate);
        }
        Ok(verified.node_id())
    }

    fn verify_possession(
        &self,
        cert: &[u8],
        message: &[u8],
        signature: &[u8],
        now: SystemTime,
    ) -> Result<(), Violation> {
        let verified = self
            .trust
            .verify_bytes(cert, now)
            .map_err(|_| Violation::BadNodeCertificate)?;
        if verified.role() != Role::SuperNode {
            return Err(Violation::BadNodeCertificate);
        }
        verified
            .public_key()
            .verify(message, signature)
            .map_err(|_| Violation::BadProof)
    }

    fn verify_record(&self, record: &PresenceRecord, now: SystemTime) -> Result<(), Violation> {
        let cert = self
            .trust
            .verify_bytes(&record.user_cert, now)
            .map_err(|_| Violation::BadUserCertificate)?;
        if cert.role() != Role::User || cert.username() != record.username {
            return Err(Violation::BadUserCertificate);
        }
        cert.public_key()
            .verify(&record.signed_message(), &record.signature)
            .map_err(|_| Violation::BadSignature)
    }
}

#[cfg(test)]
pub(crate) mod tests {

    #[test]
    fn nat_classes_from_discovery_and_the_host_cache_agree() {
        use chorus_hostcache::nat::ClassicNat;
        use chorus_nat::discovery::Classic;
        let pairs = [
            (
                Classic::OpenInternet,
                ClassicNat::OpenInternet,
                NatClass::Open,
            ),
            (Classic::FullCone, ClassicNat::FullCone, NatClass::FullCone),
            (
                Classic::RestrictedCone,
                ClassicNat::RestrictedCone,
                NatClass::Restricted,
            ),
            (
                Classic::PortRestrictedCone,
                ClassicNat::PortRestrictedCone,
                NatClass::PortRestricted,
            ),
            (
                Classic::Symmetric,
                ClassicNat::Symmetric,
                NatClass::Symmetric,
            ),
            (
                Classic::UdpBlocked,
                ClassicNat::UdpBlocked,
                NatClass::UdpBlocked,
            ),
            (Classic::Unknown, ClassicNat::Unknown, NatClass::Unknown),
        ];
        for (discovered, stored, published) in pairs {
            assert_eq!(NatClass::from(discovered), published);
            assert_eq!(NatClass::from(stored), published);
            // The wire value survives.
            assert_eq!(NatClass::from_u8(published as u8), Some(published));
        }
        assert_eq!(
            NatClass::from(Classic::SymmetricUdpFirewall),
            NatClass::PortRestricted
        );
    }
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;

    pub(crate) fn sample() -> PresenceRecord {
        PresenceRecord {
            username: "alice".into(),
            display_name: "Alice Liddell".into(),
            user_cert: Bytes::from_static(b"cert"),
            super_nodes: vec!["192.0.2.1:33033".parse().unwrap()],
            candidates: vec![
                "198.51.100.7:4000".parse().unwrap(),
                "[2001:db8::1]:4000".parse().unwrap(),
            ],
            nat_class: NatClass::PortRestricted,
            version: 3,
            issued_at: 1_700_000_000,
            expires_at: 1_700_259_200,
            signature: Bytes::from_static(&[7; 256]),
        }
    }

    fn arb_addr() -> impl Strategy<Value = SocketAddr> {
        prop_oneof![
            (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, p)| SocketAddr::from((ip, p))),
            (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, p)| SocketAddr::from((ip, p))),
        ]
    }

    pub(crate) fn arb_record() -> impl Strategy<Value = PresenceRecord> {
        (
            "[a-z0-9._-]{1,64}",
            "[a-zA-Z ]{0,64}",
            vec(any::<u8>(), 0..400),
            vec(arb_addr(), 0..=MAX_SUPER_NODES),
            vec(arb_addr(), 0..=MAX_CANDIDATES),
            0u8..7,
            any::<(u64, u64, u64)>(),
            vec(any::<u8>(), 0..=512),
        )
            .prop_map(|(u, d, c, s, k, n, (v, i, e), sig)| PresenceRecord {
                username: u,
                display_name: d,
                user_cert: c.into(),
                super_nodes: s,
                candidates: k,
                nat_class: NatClass::from_u8(n).unwrap(),
                version: v,
                issued_at: i,
                expires_at: e,
                signature: sig.into(),
            })
    }

    #[test]
    fn every_strict_prefix_is_rejected() {
        let bytes = sample().to_bytes();
        for n in 0..bytes.len() {
            assert!(PresenceRecord::decode(&bytes[..n]).is_err(), "prefix {n}");
        }
    }

    #[test]
    fn out_of_bounds_fields_are_refused_before_encoding() {
        let mut r = sample();
        r.candidates = vec![r.candidates[0]; MAX_CANDIDATES + 1];
        assert!(r.check().is_err());
        let mut bytes = BytesMut::new();
        r.encode(&mut bytes);
        assert!(matches!(
            PresenceRecord::decode(&bytes),
            Err(DecodeError::TooLong { .. })
        ));
    }

    #[test]
    fn newer_versions_supersede() {
        let a = sample();
        let mut b = sample();
        b.version += 1;
        assert!(b.supersedes(&a));
        assert!(!a.supersedes(&b));
        assert!(!a.supersedes(&a));
    }

    #[test]
    fn display_name_words_are_lowercased_and_bounded() {
        let mut r = sample();
        r.display_name = "Alice  LIDDELL, a x alice".into();
        assert_eq!(r.words(), ["alice", "liddell"]);
    }

    proptest! {
        #[test]
        fn round_trip(r in arb_record()) {
            let bytes = r.to_bytes();
            prop_assert_eq!(bytes.len(), r.encoded_len());
            prop_assert_eq!(PresenceRecord::decode(&bytes), Ok(r));
        }

        #[test]
        fn arbitrary_bytes_never_panic(b in vec(any::<u8>(), 0..3000)) {
            let _ = PresenceRecord::decode(&b);
        }
    }
}

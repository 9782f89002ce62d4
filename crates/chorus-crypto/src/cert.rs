//! Login-authority certificates: who a key belongs to, and in which role.
//!
//! The login authority (Skype's login server) certifies each user's public key at
//! login; super nodes and the login server itself hold certificates too. A Chorus
//! certificate is a compact binary structure, documented byte by byte in
//! `docs/handshake.md` ("Certificate"):
//!
//! ```text
//! version(1) role(1) reserved(2) serial(8) not_before(8) not_after(8) issuer_key_id(32)
//! username_len(1) username(n) key_len(2) subject_key(PKCS#1, m) sig_len(2) signature(s)
//! ```
//!
//! The signature is RSA-PSS-SHA256 by the issuer over a context string followed by
//! every byte before `sig_len`. Verification against a [`TrustStore`] checks the
//! issuer, the signature, the validity period against an injected clock, and the
//! revocation list; only it can make a [`VerifiedCert`].
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use chorus_crypto::cert::{Authority, CertificateRequest, Role, TrustStore};
//! use chorus_crypto::identity::{IdentityKeyPair, KeySize};
//! use chorus_crypto::SystemEntropy;
//!
//! let mut rng = SystemEntropy::new();
//! let authority = Authority::new(IdentityKeyPair::generate(KeySize::Rsa2048, &mut rng)?);
//! let alice = IdentityKeyPair::generate(KeySize::Rsa2048, &mut rng)?;
//! let now = SystemTime::now();
//! let cert = authority.issue(&CertificateRequest {
//!     username: "alice".into(),
//!     public_key: alice.public_key().clone(),
//!     role: Role::User,
//!     serial: 1,
//!     not_before: now,
//!     not_after: now + Duration::from_secs(86_400),
//! })?;
//!
//! let mut trust = TrustStore::new();
//! trust.add_authority(authority.public_key().clone());
//! let verified = trust.verify_bytes(&cert.to_bytes(), now)?;
//! assert_eq!(verified.username(), "alice");
//! assert_eq!(verified.role(), Role::User);
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

use core::fmt;
use std::collections::BTreeSet;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{BufMut, BytesMut};
use chorus_framing::Reader;
use ring::digest;

use crate::error::{AuthError, DecodeError, Error, UsageError};
use crate::identity::{IdentityKeyPair, KeyId, MAX_PUBLIC_KEY_LEN, MAX_SIGNATURE_LEN, PublicKey};

/// The certificate format version this implementation reads and writes.
pub const CERT_VERSION: u8 = 1;
/// Longest username a certificate may carry, in bytes of UTF-8.
pub const MAX_USERNAME_LEN: usize = 64;
/// Longest encoded certificate.
pub const MAX_CERT_LEN: usize =
    60 + 1 + MAX_USERNAME_LEN + 2 + MAX_PUBLIC_KEY_LEN + 2 + MAX_SIGNATURE_LEN;
/// Domain separation for certificate signatures, so no other Chorus signature can be
/// passed off as a certificate.
const SIGNING_CONTEXT: &[u8] = b"chorus certificate v1\0";
/// Domain separation for node ids.
const NODE_ID_CONTEXT: &[u8] = b"chorus node id v1\0";

/// What a certificate's holder may act as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Role {
    /// A user's client.
    User = 1,
    /// A super node: may route, store index records and relay.
    SuperNode = 2,
    /// The login server: certifies users.
    LoginAuthority = 3,
}

impl Role {
    /// Every role.
    pub const ALL: [Self; 3] = [Self::User, Self::SuperNode, Self::LoginAuthority];

    /// The role with wire value `b`.
    #[must_use]
    pub const fn from_u8(b: u8) -> Option<Self> {
        match b {
            1 => Some(Self::User),
            2 => Some(Self::SuperNode),
            3 => Some(Self::LoginAuthority),
            _ => None,
        }
    }
}

/// A 256-bit Global Index identifier derived from a certificate's key, so that no node
/// chooses its own position in the index.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub [u8; 32]);

impl NodeId {
    /// SHA-256 of a context string and the key's PKCS#1 encoding.
    #[must_use]
    pub fn from_public_key(key: &PublicKey) -> Self {
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(NODE_ID_CONTEXT);
        ctx.update(key.as_pkcs1_der());
        let mut id = [0u8; 32];
        id.copy_from_slice(ctx.finish().as_ref());
        Self(id)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NodeId(")?;
        for b in self.0.iter().take(8) {
            write!(f, "{b:02x}")?;
        }
        f.write_str("..)")
    }
}

/// A decoded certificate. Nothing about it is trusted until a [`TrustStore`] turns it
/// into a [`VerifiedCert`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certificate {
    /// The holder's role.
    pub role: Role,
    /// The issuer's serial number, unique per issuer; the revocation list names it.
    pub serial: u64,
    /// Start of validity, in seconds since the Unix epoch.
    pub not_before: u64,
    /// End of validity (inclusive), in seconds since the Unix epoch.
    pub not_after: u64,
    /// The issuer's key id.
    pub issuer: KeyId,
    /// The holder's username (1 to 64 bytes of UTF-8, no whitespace or controls).
    pub username: String,
    /// The holder's public key.
    pub public_key: PublicKey,
    /// The issuer's signature.
    pub signature: Vec<u8>,
}

/// What the login authority is asked to certify.
#[derive(Debug, Clone)]
pub struct CertificateRequest {
    /// The holder's username.
    pub username: String,
    /// The key to certify.
    pub public_key: PublicKey,
    /// The role to grant.
    pub role: Role,
    /// A serial number the authority has not used before.
    pub serial: u64,
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
}

fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn valid_username(name: &str) -> bool {
    (1..=MAX_USERNAME_LEN).contains(&name.len())
        && !name.chars().any(|c| c.is_control() || c.is_whitespace())
}

impl Certificate {
    /// Writes the signed part (everything before `sig_len`).
    fn encode_tbs(&self, dst: &mut BytesMut) {
        dst.put_u8(CERT_VERSION);
        dst.put_u8(self.role as u8);
        dst.put_u16(0);
        dst.put_u64(self.serial);
        dst.put_u64(self.not_before);
        dst.put_u64(self.not_after);
        dst.put_slice(&self.issuer.0);
        // Usernames are at most 64 bytes and keys at most 600: checked on every path
        // that builds a certificate.
        dst.put_u8(self.username.len() as u8);
        dst.put_slice(self.username.as_bytes());
        let key = self.public_key.as_pkcs1_der();
        dst.put_u16(key.len() as u16);
        dst.put_slice(key);
    }

    fn signed_message(&self) -> BytesMut {
        let mut msg = BytesMut::with_capacity(SIGNING_CONTEXT.len() + MAX_CERT_LEN);
        msg.put_slice(SIGNING_CONTEXT);
        self.encode_tbs(&mut msg);
        msg
    }

    /// Bytes [`Certificate::encode`] writes.
    #[must_use]
    pub fn encoded_len(&self) -> usize {
        60 + 1
            + self.username.len()
            + 2
            + self.public_key.as_pkcs1_der().len()
            + 2
            + self.signature.len()
    }

    /// Appends the encoded certificate to `dst`.
    pub fn encode(&self, dst: &mut BytesMut) {
        dst.reserve(self.encoded_len());
        self.encode_tbs(dst);
        dst.put_u16(self.signature.len() as u16);
        dst.put_slice(&self.signature);
    }

    /// The encoded certificate.
    #[must_use]
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = BytesMut::new();
        self.encode(&mut out);
        out.to_vec()
    }

    /// Decodes a certificate that fills `bytes` exactly. Checks structure only: the
    /// signature and dates are checked by [`TrustStore::verify`].
    ///
    /// # Errors
    /// [`DecodeError::Truncated`], [`DecodeError::TooLong`] for oversized fields,
    /// [`DecodeError::UnknownVersion`], [`DecodeError::ReservedNotZero`],
    /// [`DecodeError::TrailingBytes`], [`DecodeError::BadAttributeValue`] for a bad
    /// role (0x0001), username (0x0002) or key (0x0003).
    pub fn decode(bytes: &[u8]) -> Result<Self, Error> {
        if bytes.len() > MAX_CERT_LEN {
            return Err(DecodeError::TooLong {
                len: bytes.len(),
                max: MAX_CERT_LEN,
            }
            .into());
        }
        let mut r = Reader::new(bytes);
        let version = r.u8()?;
        if version != CERT_VERSION {
            return Err(DecodeError::UnknownVersion(version).into());
        }
        let role = Role::from_u8(r.u8()?).ok_or(DecodeError::BadAttributeValue(1))?;
        if r.u16()? != 0 {
            return Err(DecodeError::ReservedNotZero.into());
        }
        let serial = r.u64()?;
        let not_before = r.u64()?;
        let not_after = r.u64()?;
        let issuer = KeyId(r.array::<32>()?);
        let name_len = usize::from(r.u8()?);
        let username = std::str::from_utf8(r.take(name_len)?)
            .ok()
            .filter(|n| valid_username(n))
            .ok_or(DecodeError::BadAttributeValue(2))?
            .to_owned();
        let key_len = usize::from(r.u16()?);
        if key_len > MAX_PUBLIC_KEY_LEN {
            return Err(DecodeError::TooLong {
                len: key_len,
                max: MAX_PUBLIC_KEY_LEN,
            }
            .into());
        }
        let public_key = PublicKey::from_pkcs1_der(r.take(key_len)?)
            .map_err(|_| DecodeError::BadAttributeValue(3))?;
        let sig_len = usize::from(r.u16()?);
        if sig_len > MAX_SIGNATURE_LEN {
            return Err(DecodeError::TooLong {
                len: sig_len,
                max: MAX_SIGNATURE_LEN,
            }
            .into());
        }
        let signature = r.take(sig_len)?.to_vec();
        if !r.is_empty() {
            return Err(DecodeError::TrailingBytes(r.remaining()).into());
        }
        Ok(Self {
            role,
            serial,
            not_before,
            not_after,
            issuer,
            username,
            public_key,
            signature,
        })
    }
}

/// A login authority: the key that certifies users, super nodes and login servers.
#[derive(Debug)]
pub struct Authority {
    key: IdentityKeyPair,
}

impl Authority {
    /// An authority signing with `key`.
    #[must_use]
    pub const fn new(key: IdentityKeyPair) -> Self {
        Self { key }
    }

    /// The authority's public key, which relying parties put in their [`TrustStore`].
    #[must_use]
    pub const fn public_key(&self) -> &PublicKey {
        self.key.public_key()
    }

    /// Issues a certificate.
    ///
    /// # Errors
    /// [`UsageError::InvalidConfig`] for an invalid username or an empty validity
    /// period; [`Error::Entropy`] if signing fails.
    pub fn issue(&self, request: &CertificateRequest) -> Result<Certificate, Error> {
        if !valid_username(&request.username) {
            return Err(UsageError::InvalidConfig(
                "username must be 1-64 bytes without whitespace or controls",
            )
            .into());
        }
        let (not_before, not_after) = (
            unix_seconds(request.not_before),
            unix_seconds(request.not_after),
        );
        if not_after < not_before {
            return Err(UsageError::InvalidConfig("not_after precedes not_before").into());
        }
        let mut cert = Certificate {
            role: request.role,
            serial: request.serial,
            not_before,
            not_after,
            issuer: self.key.public_key().key_id(),
            username: request.username.clone(),
            public_key: request.public_key.clone(),
            signature: Vec::new(),
        };
        cert.signature = self.key.sign(&cert.signed_message())?;
        Ok(cert)
    }
}

/// The authorities a node trusts and the certificates they have revoked.
#[derive(Debug, Clone, Default)]
pub struct TrustStore {
    authorities: Vec<(KeyId, PublicKey)>,
    revoked: BTreeSet<(KeyId, u64)>,
}

impl TrustStore {
    /// A store trusting no one.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Trusts certificates signed by `key`.
    pub fn add_authority(&mut self, key: PublicKey) {
        let id = key.key_id();
        if !self.authorities.iter().any(|(k, _)| *k == id) {
            self.authorities.push((id, key));
        }
    }

    /// Revokes the certificate `serial` issued by `issuer`.
    pub fn revoke(&mut self, issuer: KeyId, serial: u64) {
        self.revoked.insert((issuer, serial));
    }

    /// Whether `issuer` revoked `serial`.
    #[must_use]
    pub fn is_revoked(&self, issuer: KeyId, serial: u64) -> bool {
        self.revoked.contains(&(issuer, serial))
    }

    /// Decodes and verifies a certificate at time `now`.
    ///
    /// # Errors
    /// As [`Certificate::decode`] and [`TrustStore::verify`].
    pub fn verify_bytes(&self, bytes: &[u8], now: SystemTime) -> Result<VerifiedCert, Error> {
        self.verify(Certificate::decode(bytes)?, now)
    }

    /// Verifies `cert` at time `now`: a trusted issuer, a valid signature, within its
    /// validity period, not revoked.
    ///
    /// # Errors
    /// [`AuthError::UntrustedIssuer`], [`AuthError::BadSignature`],
    /// [`AuthError::NotYetValid`], [`AuthError::Expired`], [`AuthError::Revoked`], in
    /// that order.
    pub fn verify(&self, cert: Certificate, now: SystemTime) -> Result<VerifiedCert, Error> {
        let issuer_key = self
            .authorities
            .iter()
            .find_map(|(id, key)| (*id == cert.issuer).then_some(key))
            .ok_or(AuthError::UntrustedIssuer)?;
        issuer_key.verify(&cert.signed_message(), &cert.signature)?;
        let now = unix_seconds(now);
        if now < cert.not_before {
            return Err(AuthError::NotYetValid.into());
        }
        if now > cert.not_after {
            return Err(AuthError::Expired.into());
        }
        if self.is_revoked(cert.issuer, cert.serial) {
            return Err(AuthError::Revoked {
                serial: cert.serial,
            }
            .into());
        }
        let node_id = NodeId::from_public_key(&cert.public_key);
        Ok(VerifiedCert { cert, node_id })
    }
}

/// A certificate a [`TrustStore`] has verified. Only [`TrustStore::verify`] makes one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedCert {
    cert: Certificate,
    node_id: NodeId,
}

impl VerifiedCert {
    /// The certificate.
    #[must_use]
    pub const fn certificate(&self) -> &Certificate {
        &self.cert
    }

    /// The holder's username.
    #[must_use]
    pub fn username(&self) -> &str {
        &self.cert.username
    }

    /// The holder's role.
    #[must_use]
    pub const fn role(&self) -> Role {
        self.cert.role
    }

    /// The holder's public key.
    #[must_use]
    pub const fn public_key(&self) -> &PublicKey {
        &self.cert.public_key
    }

    /// The holder's Global Index id, derived from the certified key.
    #[must_use]
    pub const fn node_id(&self) -> NodeId {
        self.node_id
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use proptest::collection::vec;
    use proptest::prelude::*;

    use super::*;
    use crate::identity::tests::test_key;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn authority() -> Authority {
        Authority::new(IdentityKeyPair::from_pkcs8_der(test_key(0).pkcs8_der().expose()).unwrap())
    }

    fn request(name: &str) -> CertificateRequest {
        CertificateRequest {
            username: name.into(),
            public_key: test_key(1).public_key().clone(),
            role: Role::User,
            serial: 42,
            not_before: at(1_000),
            not_after: at(2_000),
        }
    }

    fn trust(a: &Authority) -> TrustStore {
        let mut t = TrustStore::new();
        t.add_authority(a.public_key().clone());
        t
    }

    #[test]
    fn issued_certificates_verify_within_their_period() {
        let a = authority();
        let cert = a.issue(&request("alice")).unwrap();
        let bytes = cert.to_bytes();
        assert_eq!(bytes.len(), cert.encoded_len());
        assert!(bytes.len() <= MAX_CERT_LEN);
        let v = trust(&a).verify_bytes(&bytes, at(1_500)).unwrap();
        assert_eq!(v.username(), "alice");
        assert_eq!(v.role(), Role::User);
        assert_eq!(v.public_key(), test_key(1).public_key());
        assert_eq!(
            v.node_id(),
            NodeId::from_public_key(test_key(1).public_key())
        );
        assert_eq!(v.certificate(), &cert);
        // Boundaries are inclusive.
        trust(&a).verify_bytes(&bytes, at(1_000)).unwrap();
        trust(&a).verify_bytes(&bytes, at(2_000)).unwrap();
    }

    #[test]
    fn dates_outside_the_period_are_rejected() {
        let a = authority();
        let cert = a.issue(&request("alice")).unwrap();
        assert_eq!(
            trust(&a).verify(cert.clone(), at(999)).unwrap_err(),
            Error::Auth(AuthError::NotYetValid)
        );
        assert_eq!(
            trust(&a).verify(cert, at(2_001)).unwrap_err(),
            Error::Auth(AuthError::Expired)
        );
    }

    #[test]
    fn revoked_serials_are_rejected() {
        let a = authority();
        let cert = a.issue(&request("alice")).unwrap();
        let mut t = trust(&a);
        t.revoke(a.public_key().key_id(), 42);
        assert!(t.is_revoked(a.public_key().key_id(), 42));
        assert_eq!(
            t.verify(cert, at(1_500)).unwrap_err(),
            Error::Auth(AuthError::Revoked { serial: 42 })
        );
    }

    #[test]
    fn unknown_issuers_and_forged_fields_are_rejected() {
        let a = authority();
        let cert = a.issue(&request("alice")).unwrap();
        assert_eq!(
            TrustStore::new()
                .verify(cert.clone(), at(1_500))
                .unwrap_err(),
            Error::Auth(AuthError::UntrustedIssuer)
        );
        let mut forged = cert.clone();
        forged.username = "mallory".into();
        assert_eq!(
            trust(&a).verify(forged, at(1_500)).unwrap_err(),
            Error::Auth(AuthError::BadSignature)
        );
        let mut promoted = cert;
        promoted.role = Role::SuperNode;
        assert_eq!(
            trust(&a).verify(promoted, at(1_500)).unwrap_err(),
            Error::Auth(AuthError::BadSignature)
        );
        // A certificate signed by a key that only claims the trusted issuer's id.
        let imposter = Authority::new(
            IdentityKeyPair::from_pkcs8_der(test_key(2).pkcs8_der().expose()).unwrap(),
        );
        let mut fake = imposter.issue(&request("alice")).unwrap();
        fake.issuer = a.public_key().key_id();
        assert_eq!(
            trust(&a).verify(fake, at(1_500)).unwrap_err(),
            Error::Auth(AuthError::BadSignature)
        );
    }

    #[test]
    fn issuing_checks_its_request() {
        let a = authority();
        for bad in ["", "has space", "tab\t", &"x".repeat(65)] {
            assert!(
                matches!(a.issue(&request(bad)), Err(Error::Usage(_))),
                "{bad:?}"
            );
        }
        let mut backwards = request("alice");
        backwards.not_after = at(10);
        assert!(matches!(a.issue(&backwards), Err(Error::Usage(_))));
        a.issue(&request(&"x".repeat(64))).unwrap();
        a.issue(&request("ünïcødé")).unwrap();
    }

    #[test]
    fn every_single_bit_flip_is_rejected() {
        let a = authority();
        let t = trust(&a);
        let bytes = a.issue(&request("bob")).unwrap().to_bytes();
        // Every byte, one bit each (rotating), keeps the test fast while touching all fields.
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 1 << (i % 8);
            assert!(
                t.verify_bytes(&b, at(1_500)).is_err(),
                "flip in byte {i} accepted"
            );
        }
    }

    #[test]
    fn structural_errors_are_distinct() {
        let a = authority();
        let good = a.issue(&request("bob")).unwrap().to_bytes();
        let with = |i: usize, v: u8| {
            let mut b = good.clone();
            b[i] = v;
            Certificate::decode(&b).unwrap_err()
        };
        assert_eq!(with(0, 2), Error::Decode(DecodeError::UnknownVersion(2)));
        assert_eq!(with(1, 9), Error::Decode(DecodeError::BadAttributeValue(1)));
        assert_eq!(with(2, 1), Error::Decode(DecodeError::ReservedNotZero));
        assert_eq!(
            with(61, b' '),
            Error::Decode(DecodeError::BadAttributeValue(2))
        );
        let mut trailing = good.clone();
        trailing.push(0);
        assert_eq!(
            Certificate::decode(&trailing).unwrap_err(),
            Error::Decode(DecodeError::TrailingBytes(1))
        );
        for n in 0..good.len() {
            assert!(Certificate::decode(&good[..n]).is_err(), "prefix {n}");
        }
        assert!(matches!(
            Certificate::decode(&vec![1u8; MAX_CERT_LEN + 1]),
            Err(Error::Decode(DecodeError::TooLong { .. }))
        ));
    }

    #[test]
    fn node_ids_differ_per_key_and_are_not_the_key_id() {
        let (k1, k2) = (test_key(1).public_key(), test_key(2).public_key());
        assert_ne!(NodeId::from_public_key(k1), NodeId::from_public_key(k2));
        assert_ne!(NodeId::from_public_key(k1).0, k1.key_id().0);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..1500)) {
            let _ = Certificate::decode(&bytes);
        }

        #[test]
        fn decode_inverts_encode(serial in any::<u64>(), nb in any::<u64>(), len in 0u64..1_000_000, name in "[a-z0-9._-]{1,64}", role in 1u8..=3) {
            let cert = Certificate {
                role: Role::from_u8(role).unwrap(),
                serial,
                not_before: nb,
                not_after: nb.saturating_add(len),
                issuer: KeyId([7; 32]),
                username: name,
                public_key: test_key(3).public_key().clone(),
                signature: vec![9; 256],
            };
            prop_assert_eq!(Certificate::decode(&cert.to_bytes()).unwrap(), cert);
        }
    }
}

//! The authenticated key exchange: SIGMA-I over X25519, signed with identity keys.
//!
//! Every Chorus connection that needs to know who is at the other end (client to super
//! node, client to login server, peer to peer for a buddy call) starts with this
//! three-message handshake. It replaces Skype's RSA-1024 key transport with ephemeral
//! Diffie-Hellman (forward secrecy), and hides both identities from passive observers
//! and the initiator's from active ones too (SIGMA-I). `docs/handshake.md` documents it
//! message by message with its security argument.
//!
//! ```text
//! Initiator                                              Responder
//!   Hello: versions, suites, e_i, n_i          ──►
//!                                              ◄──  Response: version, suite, e_r, n_r,
//!                                                     AEAD_hs_r{ cert_R, sig_R, fin_R }
//!   Finish: AEAD_hs_i{ cert_I, sig_I, fin_I }  ──►
//! ```
//!
//! The handshake is a typestate machine and performs no I/O: each step consumes the
//! previous state and returns the next one with the bytes to send. Any error ends the
//! handshake (the state is consumed); start a new one.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::{Duration, SystemTime};
//! use chorus_crypto::cert::{Authority, CertificateRequest, Role, TrustStore};
//! use chorus_crypto::handshake::{Config, ExpectedPeer, Initiator, LocalIdentity, Responder};
//! use chorus_crypto::identity::{IdentityKeyPair, KeySize};
//! use chorus_crypto::SystemEntropy;
//!
//! let mut rng = SystemEntropy::new();
//! let now = SystemTime::now();
//! let authority = Authority::new(IdentityKeyPair::generate(KeySize::Rsa2048, &mut rng)?);
//! let mut trust = TrustStore::new();
//! trust.add_authority(authority.public_key().clone());
//! let trust = Arc::new(trust);
//! let identity = |name: &str, role, rng: &mut SystemEntropy| -> Result<Arc<LocalIdentity>, chorus_crypto::Error> {
//!     let key = IdentityKeyPair::generate(KeySize::Rsa2048, rng)?;
//!     let cert = authority.issue(&CertificateRequest {
//!         username: name.into(), public_key: key.public_key().clone(), role, serial: 1,
//!         not_before: now, not_after: now + Duration::from_secs(3600),
//!     })?;
//!     Ok(Arc::new(LocalIdentity::new(key, cert)?))
//! };
//! // Alice calls exactly the super node sn1; sn1 serves any certified user.
//! let alice = Config::new(
//!     identity("alice", Role::User, &mut rng)?,
//!     trust.clone(),
//!     ExpectedPeer::user("sn1", &[Role::SuperNode]),
//! );
//! let node = Config::new(
//!     identity("sn1", Role::SuperNode, &mut rng)?,
//!     trust,
//!     ExpectedPeer::accept_any_user(),
//! );
//!
//! let (initiator, hello) = Initiator::start(&alice, &mut rng)?;
//! let (responder, response) = Responder::handle_hello(&node, &hello, &mut rng)?;
//! let (alice_side, finish) = initiator.handle_response(&response, now)?;
//! let node_side = responder.handle_finish(&finish, now)?;
//!
//! assert_eq!(alice_side.peer().username(), "sn1");
//! assert_eq!(node_side.peer().username(), "alice");
//! assert_eq!(alice_side.session_id(), node_side.session_id());
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
use std::sync::Arc;
use std::time::SystemTime;

use bytes::BufMut;
use chorus_framing::{Entropy, Reader};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::agreement::{self, EphemeralPrivateKey, X25519};
use ring::digest::{self, SHA256};
use ring::rand::SystemRandom;
use ring::{hkdf, hmac};

use crate::cert::{Certificate, MAX_CERT_LEN, NodeId, Role, TrustStore, VerifiedCert};
use crate::error::{AuthError, DecodeError, Error, UsageError};
use crate::identity::{IdentityKeyPair, MAX_SIGNATURE_LEN};
use crate::sealed::SealedChannel;
use crate::secret::Secret;

/// The handshake protocol version this implementation speaks.
pub const VERSION: u8 = 1;
/// Most versions a Hello may offer.
pub const MAX_OFFERED_VERSIONS: usize = 8;
/// Most suites a Hello may offer.
pub const MAX_OFFERED_SUITES: usize = 16;
/// Longest handshake message: a Response with a maximal certificate and signature.
pub const MAX_MESSAGE_LEN: usize = 1 + 1 + 2 + 32 + 32 + 2 + PLAINTEXT_MAX + TAG_LEN;

const TYPE_HELLO: u8 = 0x01;
const TYPE_RESPONSE: u8 = 0x02;
const TYPE_FINISH: u8 = 0x03;
const KEY_SHARE_LEN: usize = 32;
const NONCE_LEN: usize = 32;
const TAG_LEN: usize = 16;
const FINISHED_LEN: usize = 32;
const PLAINTEXT_MAX: usize = 2 + MAX_CERT_LEN + 2 + MAX_SIGNATURE_LEN + FINISHED_LEN;
const HKDF_SALT: &[u8] = b"chorus handshake v1";
const RESPONDER_SIG_CONTEXT: &[u8] = b"chorus responder signature v1\0";
const INITIATOR_SIG_CONTEXT: &[u8] = b"chorus initiator signature v1\0";

/// A cipher suite: key exchange, signature, AEAD and hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum Suite {
    /// X25519, RSA-PSS-SHA256 identities, AES-256-GCM, HKDF-SHA256.
    X25519RsaPssAes256GcmSha256 = 0x0001,
}

impl Suite {
    /// Every suite this implementation supports, most preferred first.
    pub const ALL: [Self; 1] = [Self::X25519RsaPssAes256GcmSha256];

    /// The suite with wire value `v`.
    #[must_use]
    pub const fn from_u16(v: u16) -> Option<Self> {
        match v {
            0x0001 => Some(Self::X25519RsaPssAes256GcmSha256),
            _ => None,
        }
    }
}

/// Which end of the handshake this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Sent the Hello.
    Initiator,
    /// Answered it.
    Responder,
}

/// This node's identity key and the certificate the login authority issued for it.
pub struct LocalIdentity {
    key: IdentityKeyPair,
    cert: Certificate,
    cert_bytes: Vec<u8>,
}

impl LocalIdentity {
    /// Pairs `key` with `cert`.
    ///
    /// # Errors
    /// [`UsageError::InvalidConfig`] if the certificate is for another key.
    pub fn new(key: IdentityKeyPair, cert: Certificate) -> Result<Self, Error> {
        if &cert.public_key != key.public_key() {
            return Err(UsageError::InvalidConfig("certificate is for another key").into());
        }
        let cert_bytes = cert.to_bytes();
        Ok(Self {
            key,
            cert,
            cert_bytes,
        })
    }

    /// The certificate.
    #[must_use]
    pub const fn certificate(&self) -> &Certificate {
        &self.cert
    }
}

impl fmt::Debug for LocalIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalIdentity")
            .field("username", &self.cert.username)
            .field("role", &self.cert.role)
            .finish_non_exhaustive()
    }
}

/// Whom a side accepts at the other end of a handshake: an identity (or, named as
/// such, any certified peer) and the roles its certificate may hold. Every [`Config`]
/// states one; there is no default, so the lax choice is visible where it is made.
///
/// The peer's certificate must first verify against the [`TrustStore`]; then a role
/// outside `roles` is refused with [`AuthError::WrongRole`], and a certificate for
/// another identity with [`AuthError::WrongPeer`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExpectedPeer {
    /// Exactly this user: the certificate's username must equal `username`. What a
    /// caller uses after looking the callee up (its presence record names the user).
    User {
        /// The username the peer's certificate must carry.
        username: String,
        /// Roles the peer's certificate may hold (at least one).
        roles: Vec<Role>,
    },
    /// Exactly the holder of one key: the certificate's [`NodeId`] (the hash of its
    /// public key) must equal `node_id`. What a node uses to reach an index peer it
    /// knows by id.
    Node {
        /// The node id the peer's certificate key must hash to.
        node_id: NodeId,
        /// Roles the peer's certificate may hold (at least one).
        roles: Vec<Role>,
    },
    /// Any peer whose certificate a trusted authority issued, in one of `roles`: for
    /// a side that serves whoever connects (a super node accepting clients, a client
    /// answering an incoming call). Prefer [`User`](Self::User) or
    /// [`Node`](Self::Node) whenever the peer is known in advance.
    AnyCertified {
        /// Roles the peer's certificate may hold (at least one).
        roles: Vec<Role>,
    },
}

impl ExpectedPeer {
    /// Exactly the user `username`, in one of `roles`.
    #[must_use]
    pub fn user(username: impl Into<String>, roles: &[Role]) -> Self {
        Self::User {
            username: username.into(),
            roles: roles.to_vec(),
        }
    }

    /// Exactly the holder of the key whose node id is `node_id`, in one of `roles`.
    #[must_use]
    pub fn node(node_id: NodeId, roles: &[Role]) -> Self {
        Self::Node {
            node_id,
            roles: roles.to_vec(),
        }
    }

    /// Any certified peer in one of `roles`.
    #[must_use]
    pub fn any_certified(roles: &[Role]) -> Self {
        Self::AnyCertified {
            roles: roles.to_vec(),
        }
    }

    /// Any certified user: [`AnyCertified`](Self::AnyCertified) with
    /// [`Role::User`] only. A super node or a login authority is refused.
    #[must_use]
    pub fn accept_any_user() -> Self {
        Self::any_certified(&[Role::User])
    }

    /// The roles the peer's certificate may hold.
    #[must_use]
    pub fn roles(&self) -> &[Role] {
        match self {
            Self::User { roles, .. } | Self::Node { roles, .. } | Self::AnyCertified { roles } => {
                roles
            }
        }
    }

    fn check(&self) -> Result<(), Error> {
        if self.roles().is_empty() {
            return Err(UsageError::InvalidConfig("the expected peer must allow a role").into());
        }
        if let Self::User { username, .. } = self
            && username.is_empty()
        {
            return Err(UsageError::InvalidConfig("the expected username is empty").into());
        }
        Ok(())
    }

    /// The peer's certificate (already verified against the trust store) is acceptable.
    fn accept(&self, cert: &VerifiedCert) -> Result<(), Error> {
        if !self.roles().contains(&cert.role()) {
            return Err(AuthError::WrongRole.into());
        }
        let same = match self {
            Self::User { username, .. } => username == cert.username(),
            Self::Node { node_id, .. } => *node_id == cert.node_id(),
            Self::AnyCertified { .. } => true,
        };
        if !same {
            return Err(AuthError::WrongPeer.into());
        }
        Ok(())
    }
}

/// What one side brings to a handshake and what it accepts from the other.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// This side's key and certificate.
    pub identity: Arc<LocalIdentity>,
    /// The authorities whose certificates this side accepts, and their revocations.
    pub trust: Arc<TrustStore>,
    /// Whom this side accepts at the other end, and in which roles. No default: given
    /// to [`Config::new`].
    pub peer: ExpectedPeer,
    /// Suites offered (initiator, in order of preference) or accepted (responder).
    /// Default: [`Suite::ALL`].
    pub suites: Vec<Suite>,
}

impl Config {
    /// A configuration that accepts `peer` at the other end, offering or accepting
    /// every suite.
    #[must_use]
    pub fn new(identity: Arc<LocalIdentity>, trust: Arc<TrustStore>, peer: ExpectedPeer) -> Self {
        Self {
            identity,
            trust,
            peer,
            suites: Suite::ALL.to_vec(),
        }
    }

    fn check(&self) -> Result<(), Error> {
        if self.suites.is_empty() || self.suites.len() > MAX_OFFERED_SUITES {
            return Err(UsageError::InvalidConfig("suites must list 1 to 16 suites").into());
        }
        self.peer.check()
    }

    fn accept_peer(&self, cert: VerifiedCert) -> Result<VerifiedCert, Error> {
        self.peer.accept(&cert)?;
        Ok(cert)
    }
}

/// Starts handshakes.
#[derive(Debug)]
pub struct Initiator;

impl Initiator {
    /// Makes a Hello; send it, then feed the Response to
    /// [`AwaitingResponse::handle_response`].
    ///
    /// # Errors
    /// [`UsageError::InvalidConfig`] for an invalid config (no suite, or an
    /// [`ExpectedPeer`] without a role or with an empty username); [`Error::Entropy`].
    pub fn start(
        config: &Config,
        entropy: &mut dyn Entropy,
    ) -> Result<(AwaitingResponse, Vec<u8>), Error> {
        config.check()?;
        let ephemeral = EphemeralPrivateKey::generate(&X25519, &SystemRandom::new())
            .map_err(|_| chorus_framing::EntropyError)?;
        let share = ephemeral
            .compute_public_key()
            .map_err(|_| chorus_framing::EntropyError)?;
        let mut nonce = [0u8; NONCE_LEN];
        entropy.fill(&mut nonce)?;

        let mut hello = Vec::with_capacity(4 + 2 * config.suites.len() + KEY_SHARE_LEN + NONCE_LEN);
        hello.put_u8(TYPE_HELLO);
        hello.put_u8(1);
        hello.put_u8(VERSION);
        // At most 16 suites: checked by `config.check`.
        hello.put_u8(config.suites.len() as u8);
        for s in &config.suites {
            hello.put_u16(*s as u16);
        }
        hello.put_slice(share.as_ref());
        hello.put_slice(&nonce);

        let mut transcript = digest::Context::new(&SHA256);
        transcript.update(&hello);
        let state = AwaitingResponse {
            config: config.clone(),
            ephemeral,
            transcript,
        };
        Ok((state, hello))
    }
}

/// An initiator that sent its Hello and waits for the Response.
pub struct AwaitingResponse {
    config: Config,
    ephemeral: EphemeralPrivateKey,
    transcript: digest::Context,
}

impl fmt::Debug for AwaitingResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AwaitingResponse(..)")
    }
}

impl AwaitingResponse {
    /// Verifies the responder's Response at time `now` (for certificate validity) and
    /// makes the Finish to send. The handshake is complete on this side.
    ///
    /// # Errors
    /// [`Error::Decode`] for a malformed message; [`AuthError::Downgrade`] if the
    /// responder chose a version or suite that was not offered; [`AuthError::BadTag`]
    /// if it was not encrypted under this handshake's keys (tampering anywhere in the
    /// transcript, or a replay from another handshake); certificate errors from
    /// [`TrustStore::verify`]; [`AuthError::WrongRole`] if the peer's role is not one
    /// [`Config::peer`] allows, [`AuthError::WrongPeer`] if it is another identity
    /// than [`Config::peer`] names; [`AuthError::BadSignature`].
    pub fn handle_response(
        self,
        response: &[u8],
        now: SystemTime,
    ) -> Result<(Established, Vec<u8>), Error> {
        let Self {
            config,
            ephemeral,
            mut transcript,
        } = self;
        let mut r = Reader::new(response);
        expect_type(&mut r, TYPE_RESPONSE)?;
        let version = r.u8()?;
        let suite_value = r.u16()?;
        let share = r.array::<KEY_SHARE_LEN>()?;
        let _responder_nonce = r.array::<NONCE_LEN>()?;
        let ct_len = usize::from(r.u16()?);
        let header_len = r.consumed();
        let ciphertext = r.take(ct_len)?;
        if !r.is_empty() {
            return Err(DecodeError::TrailingBytes(r.remaining()).into());
        }
        let suite = Suite::from_u16(suite_value).ok_or(AuthError::Downgrade)?;
        if version != VERSION || !config.suites.contains(&suite) {
            return Err(AuthError::Downgrade.into());
        }
        let header = response.get(..header_len).ok_or(DecodeError::Truncated {
            offset: 0,
            needed: header_len,
        })?;
        transcript.update(header);
        let keys = HandshakeKeys::agree(ephemeral, &share, &transcript)?;

        let plaintext = open(&keys.responder_key, header, ciphertext)?;
        let peer = verify_auth(
            &config,
            &plaintext,
            transcript.clone(),
            RESPONDER_SIG_CONTEXT,
            &keys.responder_finished,
            now,
        )?;
        transcript.update(ciphertext);

        // Finish: our certificate, signature and MAC, under the initiator's key.
        let identity = &config.identity;
        let finish_plain = build_auth(
            identity,
            INITIATOR_SIG_CONTEXT,
            &keys.initiator_finished,
            &transcript,
            1 + 2,
        )?;
        let mut finish = Vec::with_capacity(3 + finish_plain.len() + TAG_LEN);
        finish.put_u8(TYPE_FINISH);
        // Bounded by PLAINTEXT_MAX + TAG_LEN < 65536.
        finish.put_u16((finish_plain.len() + TAG_LEN) as u16);
        let mut body = finish_plain;
        seal(&keys.initiator_key, &finish, &mut body)?;
        transcript.update(&finish);
        transcript.update(&body);
        finish.extend_from_slice(&body);

        let established =
            Established::new(Side::Initiator, peer, version, suite, &keys, transcript)?;
        Ok((established, finish))
    }
}

/// Answers handshakes.
#[derive(Debug)]
pub struct Responder;

impl Responder {
    /// Answers a Hello; send the Response, then feed the Finish to
    /// [`AwaitingFinish::handle_finish`].
    ///
    /// Cheap for the responder until the Finish arrives except for one signature, so a
    /// node should bound how many handshakes it has in `AwaitingFinish`.
    ///
    /// # Errors
    /// [`Error::Decode`] for a malformed Hello; [`AuthError::Downgrade`] if no offered
    /// version and suite is acceptable; [`AuthError::BadSignature`] never (the Hello is
    /// unauthenticated); [`Error::Entropy`].
    pub fn handle_hello(
        config: &Config,
        hello: &[u8],
        entropy: &mut dyn Entropy,
    ) -> Result<(AwaitingFinish, Vec<u8>), Error> {
        config.check()?;
        let mut r = Reader::new(hello);
        expect_type(&mut r, TYPE_HELLO)?;
        let n_versions = usize::from(r.u8()?);
        if n_versions == 0 || n_versions > MAX_OFFERED_VERSIONS {
            return Err(DecodeError::BadPayloadLength {
                frame_type: TYPE_HELLO,
                len: n_versions,
            }
            .into());
        }
        let versions = r.take(n_versions)?;
        let n_suites = usize::from(r.u8()?);
        if n_suites == 0 || n_suites > MAX_OFFERED_SUITES {
            return Err(DecodeError::BadPayloadLength {
                frame_type: TYPE_HELLO,
                len: n_suites,
            }
            .into());
        }
        let mut offered = Vec::with_capacity(n_suites);
        for _ in 0..n_suites {
            offered.push(r.u16()?);
        }
        let share = r.array::<KEY_SHARE_LEN>()?;
        let _initiator_nonce = r.array::<NONCE_LEN>()?;
        if !r.is_empty() {
            return Err(DecodeError::TrailingBytes(r.remaining()).into());
        }
        if !versions.contains(&VERSION) {
            return Err(AuthError::Downgrade.into());
        }
        // The responder's preference among what the initiator offered.
        let suite = config
            .suites
            .iter()
            .copied()
            .find(|s| offered.contains(&(*s as u16)))
            .ok_or(AuthError::Downgrade)?;

        let ephemeral = EphemeralPrivateKey::generate(&X25519, &SystemRandom::new())
            .map_err(|_| chorus_framing::EntropyError)?;
        let our_share = ephemeral
            .compute_public_key()
            .map_err(|_| chorus_framing::EntropyError)?;
        let mut nonce = [0u8; NONCE_LEN];
        entropy.fill(&mut nonce)?;

        let mut transcript = digest::Context::new(&SHA256);
        transcript.update(hello);
        let mut header = Vec::with_capacity(1 + 1 + 2 + KEY_SHARE_LEN + NONCE_LEN + 2);
        header.put_u8(TYPE_RESPONSE);
        header.put_u8(VERSION);
        header.put_u16(suite as u16);
        header.put_slice(our_share.as_ref());
        header.put_slice(&nonce);
        // The ciphertext length is known before encryption: plaintext + tag.
        let identity = &config.identity;
        let plain_len = 2
            + identity.cert_bytes.len()
            + 2
            + identity.key.public_key().size().signature_len()
            + FINISHED_LEN;
        header.put_u16((plain_len + TAG_LEN) as u16);
        transcript.update(&header);
        let keys = HandshakeKeys::agree(ephemeral, &share, &transcript)?;

        let mut body = build_auth(
            identity,
            RESPONDER_SIG_CONTEXT,
            &keys.responder_finished,
            &transcript,
            0,
        )?;
        seal(&keys.responder_key, &header, &mut body)?;
        transcript.update(&body);
        let mut response = header;
        response.extend_from_slice(&body);
        let state = AwaitingFinish {
            config: config.clone(),
            suite,
            keys,
            transcript,
        };
        Ok((state, response))
    }
}

/// A responder that sent its Response and waits for the Finish.
pub struct AwaitingFinish {
    config: Config,
    suite: Suite,
    keys: HandshakeKeys,
    transcript: digest::Context,
}

impl fmt::Debug for AwaitingFinish {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AwaitingFinish(..)")
    }
}

impl AwaitingFinish {
    /// Verifies the initiator's Finish at time `now`. The handshake is complete.
    ///
    /// # Errors
    /// As [`AwaitingResponse::handle_response`], without the downgrade checks.
    pub fn handle_finish(self, finish: &[u8], now: SystemTime) -> Result<Established, Error> {
        let Self {
            config,
            suite,
            keys,
            mut transcript,
        } = self;
        let mut r = Reader::new(finish);
        expect_type(&mut r, TYPE_FINISH)?;
        let ct_len = usize::from(r.u16()?);
        let header_len = r.consumed();
        let ciphertext = r.take(ct_len)?;
        if !r.is_empty() {
            return Err(DecodeError::TrailingBytes(r.remaining()).into());
        }
        let header = finish.get(..header_len).ok_or(DecodeError::Truncated {
            offset: 0,
            needed: header_len,
        })?;
        let plaintext = open(&keys.initiator_key, header, ciphertext)?;
        let mut th = transcript.clone();
        th.update(header);
        let peer = verify_auth(
            &config,
            &plaintext,
            th,
            INITIATOR_SIG_CONTEXT,
            &keys.initiator_finished,
            now,
        )?;
        transcript.update(header);
        transcript.update(ciphertext);
        Established::new(Side::Responder, peer, VERSION, suite, &keys, transcript)
    }
}

/// A completed handshake: the authenticated peer and the keys for what follows.
pub struct Established {
    side: Side,
    peer: VerifiedCert,
    version: u8,
    suite: Suite,
    session_id: [u8; 32],
    send: (Secret<32>, Secret<12>),
    recv: (Secret<32>, Secret<12>),
    exporter: hkdf::Prk,
}

impl fmt::Debug for Established {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Established")
            .field("side", &self.side)
            .field("peer", &self.peer.username())
            .field("suite", &self.suite)
            .finish_non_exhaustive()
    }
}

/// The direction an SRTP key protects, named by the handshake roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SrtpDirection {
    /// Media the initiator sends and the responder receives.
    InitiatorToResponder,
    /// Media the responder sends and the initiator receives.
    ResponderToInitiator,
}

/// The exporter label of the SRTP master key and salt for `suite` in `direction`:
/// `"chorus srtp " || suite name || " " || ("initiator->responder" |
/// "responder->initiator")`, in ASCII, for example
/// `chorus srtp AEAD_AES_128_GCM initiator->responder` (`docs/handshake.md`, "SRTP
/// keys"). The suite name is its RFC 4568 / RFC 7714 name ([`crate::srtp::Suite::name`]).
#[must_use]
pub fn srtp_exporter_label(suite: crate::srtp::Suite, direction: SrtpDirection) -> Vec<u8> {
    let direction = match direction {
        SrtpDirection::InitiatorToResponder => "initiator->responder",
        SrtpDirection::ResponderToInitiator => "responder->initiator",
    };
    let mut label = Vec::with_capacity(12 + suite.name().len() + 1 + direction.len());
    label.extend_from_slice(b"chorus srtp ");
    label.extend_from_slice(suite.name().as_bytes());
    label.push(b' ');
    label.extend_from_slice(direction.as_bytes());
    label
}

/// SRTP master key and salt for one direction of a call, from [`Established::srtp_keys`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrtpKeyMaterial {
    /// The master key.
    pub key: crate::SecretVec,
    /// The master salt.
    pub salt: crate::SecretVec,
}

impl Established {
    fn new(
        side: Side,
        peer: VerifiedCert,
        version: u8,
        suite: Suite,
        keys: &HandshakeKeys,
        transcript: digest::Context,
    ) -> Result<Self, Error> {
        let th = transcript.finish();
        let mut session_id = [0u8; 32];
        session_id.copy_from_slice(th.as_ref());
        let i2r = (
            expand::<32>(&keys.prk, b"chorus i2r key", &session_id)?,
            expand::<12>(&keys.prk, b"chorus i2r iv", &session_id)?,
        );
        let r2i = (
            expand::<32>(&keys.prk, b"chorus r2i key", &session_id)?,
            expand::<12>(&keys.prk, b"chorus r2i iv", &session_id)?,
        );
        let exporter_secret = expand::<32>(&keys.prk, b"chorus exporter", &session_id)?;
        let exporter = hkdf::Prk::new_less_safe(hkdf::HKDF_SHA256, exporter_secret.expose());
        let (send, recv) = match side {
            Side::Initiator => (i2r, r2i),
            Side::Responder => (r2i, i2r),
        };
        Ok(Self {
            side,
            peer,
            version,
            suite,
            session_id,
            send,
            recv,
            exporter,
        })
    }

    /// The authenticated peer.
    #[must_use]
    pub const fn peer(&self) -> &VerifiedCert {
        &self.peer
    }

    /// Which side this is.
    #[must_use]
    pub const fn side(&self) -> Side {
        self.side
    }

    /// The negotiated protocol version.
    #[must_use]
    pub const fn version(&self) -> u8 {
        self.version
    }

    /// The negotiated suite.
    #[must_use]
    pub const fn suite(&self) -> Suite {
        self.suite
    }

    /// The hash of the whole transcript: equal on both sides, unique per handshake.
    #[must_use]
    pub const fn session_id(&self) -> &[u8; 32] {
        &self.session_id
    }

    /// Fills `out` with keying material bound to this handshake, `label` and `context`
    /// (as a TLS exporter, RFC 8446 §7.5). Both sides get the same bytes.
    ///
    /// # Errors
    /// [`UsageError::InvalidLength`] if `out` is longer than 8160 bytes.
    pub fn export(&self, label: &[u8], context: &[u8], out: &mut [u8]) -> Result<(), Error> {
        let len = Len(out.len());
        let info = [label, &[0u8][..], context];
        self.exporter
            .expand(&info, len)
            .and_then(|okm| okm.fill(out))
            .map_err(|_| {
                UsageError::InvalidLength {
                    len: out.len(),
                    expected: "at most 8160 bytes",
                }
                .into()
            })
    }

    /// SRTP master keys and salts for `suite` in one call: `(ours, theirs)`, where
    /// ours protects what this side sends and theirs unprotects what the peer sends.
    /// `context` is the caller's name for what the keys protect (for example a call
    /// number, big-endian), so that each call over one handshake gets its own keys.
    ///
    /// Each direction's key and salt are one exporter output ([`Established::export`])
    /// whose label names the suite and the direction (see [`srtp_exporter_label`] and
    /// `docs/handshake.md`): two directions, two suites or two contexts never derive
    /// the same key, and so never the same keystream or nonce.
    ///
    /// # Errors
    /// As [`Established::export`].
    pub fn srtp_keys(
        &self,
        suite: crate::srtp::Suite,
        context: &[u8],
    ) -> Result<(SrtpKeyMaterial, SrtpKeyMaterial), Error> {
        let direction = |d: SrtpDirection| -> Result<SrtpKeyMaterial, Error> {
            // key || salt, one expansion (the label fixes both lengths).
            let mut key = vec![0u8; suite.key_len() + suite.salt_len()];
            self.export(&srtp_exporter_label(suite, d), context, &mut key)?;
            // Both halves end up in `SecretVec`s, which wipe their whole capacity.
            let salt = key.split_off(suite.key_len());
            Ok(SrtpKeyMaterial {
                key: crate::SecretVec::new(key),
                salt: crate::SecretVec::new(salt),
            })
        };
        let i2r = direction(SrtpDirection::InitiatorToResponder)?;
        let r2i = direction(SrtpDirection::ResponderToInitiator)?;
        Ok(match self.side {
            Side::Initiator => (i2r, r2i),
            Side::Responder => (r2i, i2r),
        })
    }

    /// SRTP policies for `suite` in the call named by `context` (as in
    /// [`Established::srtp_keys`]): `(send, receive)`, ready for
    /// [`crate::srtp::SrtpSession::new`]. Both sides of the handshake get matching
    /// policies: what one sends with, the other receives with.
    ///
    /// # Errors
    /// As [`Established::srtp_keys`] and [`crate::srtp::Policy::new`].
    pub fn srtp_policies(
        &self,
        suite: crate::srtp::Suite,
        context: &[u8],
    ) -> Result<(crate::srtp::Policy, crate::srtp::Policy), Error> {
        let (send, recv) = self.srtp_keys(suite, context)?;
        Ok((
            crate::srtp::Policy::new(suite, send.key.expose(), send.salt.expose())?,
            crate::srtp::Policy::new(suite, recv.key.expose(), recv.salt.expose())?,
        ))
    }

    /// The sealed signalling channel keyed by this handshake.
    #[must_use]
    pub fn into_channel(self) -> SealedChannel {
        SealedChannel::new(&self.send.0, &self.send.1, &self.recv.0, &self.recv.1)
    }
}

/// Handshake secrets derived from the X25519 shared secret and the transcript so far.
struct HandshakeKeys {
    prk: hkdf::Prk,
    responder_key: LessSafeKey,
    initiator_key: LessSafeKey,
    responder_finished: hmac::Key,
    initiator_finished: hmac::Key,
}

impl HandshakeKeys {
    fn agree(
        ephemeral: EphemeralPrivateKey,
        peer_share: &[u8; KEY_SHARE_LEN],
        transcript: &digest::Context,
    ) -> Result<Self, Error> {
        let th = transcript.clone().finish();
        let peer = agreement::UnparsedPublicKey::new(&X25519, peer_share);
        // ring rejects key shares that give an all-zero shared secret.
        let prk = agreement::agree_ephemeral(ephemeral, &peer, |shared| {
            hkdf::Salt::new(hkdf::HKDF_SHA256, HKDF_SALT).extract(shared)
        })
        .map_err(|_| AuthError::BadTag)?;
        let aead_key = |label: &[u8]| -> Result<LessSafeKey, Error> {
            let k = expand::<32>(&prk, label, th.as_ref())?;
            let key = UnboundKey::new(&AES_256_GCM, k.expose()).map_err(|_| {
                UsageError::InvalidLength {
                    len: 32,
                    expected: "an AES-256 key",
                }
            })?;
            Ok(LessSafeKey::new(key))
        };
        let mac_key = |label: &[u8]| -> Result<hmac::Key, Error> {
            let k = expand::<32>(&prk, label, th.as_ref())?;
            Ok(hmac::Key::new(hmac::HMAC_SHA256, k.expose()))
        };
        Ok(Self {
            responder_key: aead_key(b"chorus r hs key")?,
            initiator_key: aead_key(b"chorus i hs key")?,
            responder_finished: mac_key(b"chorus r finished")?,
            initiator_finished: mac_key(b"chorus i finished")?,
            prk,
        })
    }
}

struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

fn expand<const N: usize>(
    prk: &hkdf::Prk,
    label: &[u8],
    context: &[u8],
) -> Result<Secret<N>, Error> {
    let mut out = [0u8; N];
    prk.expand(&[label, context], Len(N))
        .and_then(|okm| okm.fill(&mut out))
        .map_err(|_| UsageError::InvalidLength {
            len: N,
            expected: "at most 8160 bytes",
        })?;
    Ok(Secret::new(out))
}

fn expect_type(r: &mut Reader<'_>, expected: u8) -> Result<(), Error> {
    let ty = r.u8()?;
    if ty != expected {
        return Err(DecodeError::UnknownFrameType(ty).into());
    }
    Ok(())
}

/// The message a side signs: a context string and the transcript hash.
fn signed(context: &[u8], transcript: &digest::Context) -> Vec<u8> {
    let th = transcript.clone().finish();
    let mut msg = Vec::with_capacity(context.len() + 32);
    msg.extend_from_slice(context);
    msg.extend_from_slice(th.as_ref());
    msg
}

/// `cert_len | cert | sig_len | sig | finished`, over `transcript` plus
/// `extra_header_len` bytes the caller will prepend (the Finish header, which is known
/// only after this is built: its length field counts these bytes).
fn build_auth(
    identity: &LocalIdentity,
    context: &[u8],
    finished_key: &hmac::Key,
    transcript: &digest::Context,
    finish_header: usize,
) -> Result<Vec<u8>, Error> {
    let cert = &identity.cert_bytes;
    let sig_len = identity.key.public_key().size().signature_len();
    let plain_len = 2 + cert.len() + 2 + sig_len + FINISHED_LEN;
    let mut th = transcript.clone();
    if finish_header > 0 {
        let mut header = Vec::with_capacity(3);
        header.put_u8(TYPE_FINISH);
        header.put_u16((plain_len + TAG_LEN) as u16);
        th.update(&header);
    }
    let mut plain = Vec::with_capacity(plain_len + TAG_LEN);
    // Certificates are at most MAX_CERT_LEN bytes and signatures 512.
    plain.put_u16(cert.len() as u16);
    plain.put_slice(cert);
    let mut th_sig = th.clone();
    th_sig.update(&plain);
    let sig = identity.key.sign(&signed(context, &th_sig))?;
    plain.put_u16(sig.len() as u16);
    plain.put_slice(&sig);
    th.update(&plain);
    let fin = hmac::sign(finished_key, th.finish().as_ref());
    plain.put_slice(fin.as_ref());
    Ok(plain)
}

/// The fields of an authentication plaintext (`cert_len | cert | sig_len | sig |
/// finished`), as slices of it.
struct AuthFields<'a> {
    /// The certificate.
    cert: &'a [u8],
    /// `cert_len | cert`: what the signature covers after the transcript.
    cert_field: &'a [u8],
    /// `cert_len | cert | sig_len | sig`: what the finished MAC covers.
    signed_fields: &'a [u8],
    sig: &'a [u8],
    finished: &'a [u8],
}

fn parse_auth(plain: &[u8]) -> Result<AuthFields<'_>, Error> {
    let mut r = Reader::new(plain);
    let cert_len = usize::from(r.u16()?);
    if cert_len > MAX_CERT_LEN {
        return Err(DecodeError::TooLong {
            len: cert_len,
            max: MAX_CERT_LEN,
        }
        .into());
    }
    let cert = r.take(cert_len)?;
    let cert_field_len = r.consumed();
    let sig_len = usize::from(r.u16()?);
    if sig_len > MAX_SIGNATURE_LEN {
        return Err(DecodeError::TooLong {
            len: sig_len,
            max: MAX_SIGNATURE_LEN,
        }
        .into());
    }
    let sig = r.take(sig_len)?;
    let signed_len = r.consumed();
    let finished = r.take(FINISHED_LEN)?;
    if !r.is_empty() {
        return Err(DecodeError::TrailingBytes(r.remaining()).into());
    }
    let prefix = |n: usize| {
        plain.get(..n).ok_or(DecodeError::Truncated {
            offset: 0,
            needed: n,
        })
    };
    Ok(AuthFields {
        cert,
        cert_field: prefix(cert_field_len)?,
        signed_fields: prefix(signed_len)?,
        sig,
        finished,
    })
}

/// Authenticates the peer from its decrypted certificate, signature and finished MAC.
/// `transcript` holds everything before the plaintext. The signature covers it plus the
/// certificate field; the finished MAC covers it plus the certificate and signature
/// fields, binding the identity to the session key (SIGMA's MAC).
fn verify_auth(
    config: &Config,
    plaintext: &[u8],
    transcript: digest::Context,
    sig_context: &[u8],
    finished_key: &hmac::Key,
    now: SystemTime,
) -> Result<VerifiedCert, Error> {
    let fields = parse_auth(plaintext)?;
    let peer = config.accept_peer(config.trust.verify_bytes(fields.cert, now)?)?;
    let mut th = transcript.clone();
    th.update(fields.cert_field);
    peer.public_key()
        .verify(&signed(sig_context, &th), fields.sig)?;
    let mut th_fin = transcript;
    th_fin.update(fields.signed_fields);
    hmac::verify(finished_key, th_fin.finish().as_ref(), fields.finished)
        .map_err(|_| AuthError::BadTag)?;
    Ok(peer)
}

/// Each handshake key encrypts exactly one message, so a fixed nonce is safe.
fn seal(key: &LessSafeKey, aad: &[u8], in_out: &mut Vec<u8>) -> Result<(), Error> {
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key([0; 12]),
        Aad::from(aad),
        in_out,
    )
    .map_err(|_| {
        UsageError::InvalidLength {
            len: in_out.len(),
            expected: "a sealable message",
        }
        .into()
    })
}

fn open(key: &LessSafeKey, aad: &[u8], ciphertext: &[u8]) -> Result<Vec<u8>, Error> {
    if ciphertext.len() > PLAINTEXT_MAX + TAG_LEN {
        return Err(DecodeError::TooLong {
            len: ciphertext.len(),
            max: PLAINTEXT_MAX + TAG_LEN,
        }
        .into());
    }
    let mut buf = ciphertext.to_vec();
    let plain_len = key
        .open_in_place(
            Nonce::assume_unique_for_key([0; 12]),
            Aad::from(aad),
            &mut buf,
        )
        .map_err(|_| AuthError::BadTag)?
        .len();
    buf.truncate(plain_len);
    Ok(buf)
}

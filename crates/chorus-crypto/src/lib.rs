//! Security for Chorus: who is who, and keys nobody else has.
//!
//! Skype certified user keys at a login server, agreed voice keys with RSA-1024 and
//! obscured signalling with RC4. Chorus keeps the roles and replaces the cryptography:
//!
//! - [`identity`]: RSA identity keys (2048/3072/4096 bits), PEM/DER files, RSA-PSS
//!   signatures through ring.
//! - [`cert`]: compact login-authority certificates, a [`cert::TrustStore`] with
//!   revocation, and Global Index node ids derived from certified keys.
//! - [`handshake`]: SIGMA-I over X25519 (mutual authentication, forward secrecy,
//!   identity hiding, no downgrade), as a sans-IO typestate machine.
//! - [`sealed`]: the AES-256-GCM signalling channel keyed by the handshake.
//! - [`srtp`]: SRTP and SRTCP (RFC 3711, RFC 6188, RFC 7714) for media.
//! - [`password`]: PBKDF2 password hashes for the login server.
//! - [`obfuscation`]: optional RC4 obfuscation on top of real encryption, **which is
//!   not security**.
//!
//! Secrets are zeroized on drop and never printed by `Debug`; randomness comes from an
//! injected [`chorus_framing::Entropy`] ([`SystemEntropy`] in production). The wire
//! formats and the security argument are in `docs/handshake.md`.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::{Duration, SystemTime};
//! use chorus_crypto::cert::{Authority, CertificateRequest, Role, TrustStore};
//! use chorus_crypto::handshake::{Config, ExpectedPeer, Initiator, LocalIdentity, Responder};
//! use chorus_crypto::identity::{IdentityKeyPair, KeySize};
//! use chorus_crypto::SystemEntropy;
//! use chorus_framing::Frame;
//!
//! let (mut rng, now) = (SystemEntropy::new(), SystemTime::now());
//! // The login authority certifies a user and a super node.
//! let authority = Authority::new(IdentityKeyPair::generate(KeySize::Rsa2048, &mut rng)?);
//! let mut trust = TrustStore::new();
//! trust.add_authority(authority.public_key().clone());
//! let trust = Arc::new(trust);
//! // Each side states whom it accepts: alice exactly sn-1 as a super node, the super
//! // node any certified user.
//! let mut certified = |name: &str, role, peer| -> Result<Config, chorus_crypto::Error> {
//!     let key = IdentityKeyPair::generate(KeySize::Rsa2048, &mut rng)?;
//!     let cert = authority.issue(&CertificateRequest {
//!         username: name.into(), public_key: key.public_key().clone(), role, serial: 1,
//!         not_before: now, not_after: now + Duration::from_secs(3600),
//!     })?;
//!     Ok(Config::new(Arc::new(LocalIdentity::new(key, cert)?), trust.clone(), peer))
//! };
//! let alice = certified("alice", Role::User, ExpectedPeer::user("sn-1", &[Role::SuperNode]))?;
//! let node = certified("sn-1", Role::SuperNode, ExpectedPeer::accept_any_user())?;
//!
//! // Three messages authenticate both sides and agree fresh keys.
//! let (waiting, hello) = Initiator::start(&alice, &mut rng)?;
//! let (node_waiting, response) = Responder::handle_hello(&node, &hello, &mut rng)?;
//! let (alice_done, finish) = waiting.handle_response(&response, now)?;
//! let node_done = node_waiting.handle_finish(&finish, now)?;
//! assert_eq!(node_done.peer().username(), "alice");
//!
//! // Signalling is then sealed; tampering or replay is rejected.
//! let (mut a, mut n) = (alice_done.into_channel(), node_done.into_channel());
//! let sealed = a.seal(&Frame::data(1, &b"search bob"[..]))?;
//! assert_eq!(&n.open(&sealed)?.payload[..], b"search bob");
//! assert!(n.open(&sealed).is_err());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![doc(test(attr(deny(warnings))))]
// docs.rs (`--cfg docsrs`, nightly) labels feature-gated items with their feature.
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod at_rest;
pub mod cert;
mod error;
#[cfg(any(test, feature = "_fuzz"))]
#[doc(hidden)]
pub mod fuzz;
pub mod handshake;
pub mod identity;
pub mod obfuscation;
pub mod password;
mod random;
pub mod sealed;
mod secret;
pub mod srtp;

pub use error::{AuthError, DecodeError, Error, KeyError, Limit, UsageError};
pub use obfuscation::Obfuscator;
pub use password::{PasswordConfig, PasswordHash, PasswordHasher, Verified};
pub use random::SystemEntropy;
pub use secret::{Secret, SecretVec, ct_eq};

//! The Global Index: a DHT across super nodes holding signed presence records.
//!
//! Skype located users through a "Global Index" among its super nodes whose
//! organisation was never published. Chorus makes it an open, measured design:
//!
//! - [`id`]: node ids derived from super node certificates (a node cannot choose its
//!   position), record keys, the XOR metric.
//! - [`table`]: Kademlia buckets with wide top levels, so most lookups take two hops.
//! - [`record`]: presence records signed by the user's certified key, verified by
//!   every node before storing or returning them; newest version wins.
//! - [`message`]: the wire messages, strict bounded decoders.
//! - [`node`]: the sans-IO node: iterative lookups over disjoint paths, replication
//!   to the k closest nodes, hand-off, republishing, expiry, rate limits.
//! - `sim` (feature `sim`): a deterministic simulator of up to 100,000 nodes with
//!   latency, loss, churn and malicious nodes, driving the same core.
//! - `driver` (feature `tokio`, on by default): the tokio UDP driver, typed commands
//!   and events over chorus-framing's runtime's `Runtime`.
//!
//! The design and its numbers are in `docs/index.md`.
//!
//! Two super nodes and a user, wired by hand (a sans-IO core needs no network):
//!
//! ```
//! use std::sync::Arc;
//! use std::time::{Duration, Instant, SystemTime};
//! use bytes::Bytes;
//! use chorus_crypto::cert::{Authority, CertificateRequest, Role, TrustStore};
//! use chorus_crypto::identity::{IdentityKeyPair, KeySize};
//! use chorus_crypto::SystemEntropy;
//! use chorus_index::node::{Config, Event, Node, NodeIdentity};
//! use chorus_index::record::{unix_secs, CertVerifier, NatClass, PresenceRecord, Verifier};
//!
//! let (mut rng, t0, wall) = (SystemEntropy::new(), Instant::now(), SystemTime::now());
//! // The login authority certifies two super nodes and a user.
//! let authority = Authority::new(IdentityKeyPair::generate(KeySize::Rsa2048, &mut rng)?);
//! let mut certify = |name: &str, role| -> Result<_, chorus_crypto::Error> {
//!     let key = IdentityKeyPair::generate(KeySize::Rsa2048, &mut rng)?;
//!     let cert = authority.issue(&CertificateRequest {
//!         username: name.into(), public_key: key.public_key().clone(), role, serial: 1,
//!         not_before: wall, not_after: wall + Duration::from_secs(86_400),
//!     })?;
//!     Ok((key, Bytes::from(cert.to_bytes())))
//! };
//! let mut trust = TrustStore::new();
//! trust.add_authority(authority.public_key().clone());
//! let verifier: Arc<dyn Verifier> = Arc::new(CertVerifier::new(Arc::new(trust)));
//! let mut nodes = Vec::new();
//! for name in ["sn-0", "sn-1"] {
//!     let (key, cert) = certify(name, Role::SuperNode)?;
//!     // The node id is derived from the certificate; the key proves the node holds it.
//!     let identity = NodeIdentity { cert, key: Arc::new(key) };
//!     nodes.push(Node::new(Config::default(), identity, verifier.clone(),
//!                          Box::new(SystemEntropy::new()), t0, wall)?);
//! }
//! let addrs = ["192.0.2.1:4000".parse()?, "192.0.2.2:4000".parse()?];
//! let deliver = |nodes: &mut Vec<Node>| {
//!     for _ in 0..10 {
//!         for from in 0..2 {
//!             while let Some(t) = nodes[from].poll_transmit() {
//!                 let to = addrs.iter().position(|a| *a == t.dst).unwrap();
//!                 let _ = nodes[to].handle_input(t0, addrs[from], &t.payload);
//!             }
//!         }
//!     }
//! };
//!
//! // Node 1 joins through node 0 (an address from its host cache).
//! nodes[1].bootstrap(t0, &[addrs[0]])?;
//! deliver(&mut nodes);
//! assert_eq!(nodes[1].poll_event(), Some(Event::Bootstrapped { contacts: 1 }));
//!
//! // Alice logs in at node 0, which publishes her signed presence record...
//! let (alice, alice_cert) = certify("alice", Role::User)?;
//! let now = unix_secs(wall);
//! let mut record = PresenceRecord {
//!     username: "alice".into(), display_name: "Alice Liddell".into(),
//!     user_cert: alice_cert, super_nodes: vec![addrs[0]],
//!     candidates: vec!["198.51.100.7:4000".parse()?], nat_class: NatClass::PortRestricted,
//!     version: 1, issued_at: now, expires_at: now + 72 * 3600, signature: Bytes::new(),
//! };
//! record.sign(&alice)?;
//! nodes[0].publish(t0, record.clone())?;
//! deliver(&mut nodes);
//!
//! // ...and a caller at node 1 finds it, verified.
//! nodes[1].find_user(t0, "alice")?;
//! deliver(&mut nodes);
//! let found = std::iter::from_fn(|| nodes[1].poll_event()).find_map(|e| match e {
//!     Event::Lookup(outcome) => outcome.record,
//!     _ => None,
//! });
//! assert_eq!(found, Some(record));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![doc(test(attr(deny(warnings))))]
// docs.rs (`--cfg docsrs`, nightly) labels feature-gated items with their feature.
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "tokio")]
pub mod driver;
mod error;
#[cfg(any(test, feature = "_fuzz"))]
#[doc(hidden)]
pub mod fuzz;
pub mod id;
pub mod message;
pub mod node;
mod rate;
pub mod record;
#[cfg(any(test, feature = "sim"))]
pub mod sim;
pub mod table;

pub use error::{DecodeError, Error, Limit, UsageError, Violation};

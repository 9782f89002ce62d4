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
//! - `driver` (feature `tokio`, on by default): the tokio UDP driver.
//!
//! The design and its numbers are in `docs/index.md`.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::{Instant, SystemTime};
//! use chorus_framing::SeededEntropy;
//! use chorus_index::node::{Config, Event, Node, NodeIdentity};
//! # use chorus_index::record::{PresenceRecord, Verifier};
//! # use chorus_index::Violation;
//! # use chorus_crypto::cert::NodeId;
//! # // A verifier that trusts everything: real nodes use `record::CertVerifier`.
//! # struct TrustAll;
//! # impl Verifier for TrustAll {
//! #     fn verify_node(&self, cert: &[u8], _: SystemTime) -> Result<NodeId, Violation> {
//! #         Ok(chorus_index::id::user_key(std::str::from_utf8(cert).unwrap()))
//! #     }
//! #     fn verify_record(&self, _: &PresenceRecord, _: SystemTime) -> Result<(), Violation> { Ok(()) }
//! # }
//! # let verifier: Arc<dyn Verifier> = Arc::new(TrustAll);
//!
//! let (t0, wall) = (Instant::now(), SystemTime::now());
//! let mut nodes: Vec<Node> = (0..2)
//!     .map(|i| {
//!         let identity = NodeIdentity { cert: format!("node-{i}").into() };
//!         Node::new(Config::default(), identity, verifier.clone(),
//!                   Box::new(SeededEntropy::new(i)), t0, wall)
//!     })
//!     .collect::<Result<_, _>>()?;
//! let addrs = ["192.0.2.1:4000".parse()?, "192.0.2.2:4000".parse()?];
//!
//! // Node 1 joins through node 0; datagrams are carried by hand.
//! nodes[1].bootstrap(t0, &[addrs[0]])?;
//! for _ in 0..10 {
//!     for from in 0..2 {
//!         while let Some(t) = nodes[from].poll_transmit() {
//!             let to = addrs.iter().position(|a| *a == t.dst).unwrap();
//!             let _ = nodes[to].handle_input(t0, addrs[from], &t.payload);
//!         }
//!     }
//! }
//! assert_eq!(nodes[1].poll_event(), Some(Event::Bootstrapped { contacts: 1 }));
//! assert_eq!(nodes[0].table().len(), 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![doc(test(attr(deny(warnings))))]

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

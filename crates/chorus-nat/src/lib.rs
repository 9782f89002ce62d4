//! NAT traversal for Chorus: how a peer learns what stands between it and the Internet.
//!
//! Skype used "a variation of STUN and TURN"; Chorus speaks the standards so that it
//! works with the world's STUN servers and clients, and its server works for them.
//!
//! - [`stun`]: the STUN message codec (RFC 8489, compatible with RFC 5389), with every
//!   attribute of RFC 8489, RFC 5780, RFC 8656 and ICE, short- and long-term
//!   credentials, MESSAGE-INTEGRITY(-SHA256) and FINGERPRINT.
//! - [`client`]: STUN client transactions with RFC 8489 §6.2 retransmission timers.
//! - [`server`]: a Binding server with RFC 5780 behaviour discovery, per-source rate
//!   limits and no amplification.
//! - [`discovery`]: RFC 5780 NAT behaviour discovery (mapping, filtering, classic name,
//!   hairpinning, binding lifetime).
//! - [`turn`]: TURN relaying (RFC 8656): the ChannelData codec, the relay server with
//!   long-term credentials and a pluggable authenticator, and the client.
//! - [`ice`]: ICE connectivity establishment (RFC 8445): candidates, signalling text,
//!   paced checks, hole punching, relay fallback, nomination and consent.
//! - `driver` (feature `tokio`, on by default): thin UDP/TCP drivers for all of them,
//!   adapters over chorus-framing's runtime's one run loop.
//!
//! Every core is sans-IO: it never opens a socket, reads a clock or draws randomness
//! itself; time and an [`chorus_framing::Entropy`] are passed in. Every decoder treats
//! its input as hostile: it borrows from the input, returns a [`DecodeError`] naming
//! what is wrong, never panics, and never allocates past a configured bound. Coverage
//! and limits are described in `docs/stun.md`.
//!
//! A client core and a server core wired together by hand, no network needed:
//!
//! ```
//! use std::time::Instant;
//! use chorus_crypto::SystemEntropy;
//! use chorus_nat::client::{Client, ClientConfig, Event, Transport};
//! use chorus_nat::server::{Server, ServerConfig};
//!
//! let mut config = ServerConfig::default();
//! config.primary = "192.0.2.1:3478".parse()?;
//! config.alternate_ip = Some("192.0.2.2".parse()?); // RFC 5780: a second IP ...
//! config.alternate_port = Some(3479); // ... and a second port
//! let mut server = Server::new(config)?;
//! let mut client = Client::new(ClientConfig::default(), Box::new(SystemEntropy::new()))?;
//!
//! let (now, me) = (Instant::now(), "203.0.113.5:40000".parse()?);
//! let id = client.start_binding(now, "192.0.2.1:3478".parse()?)?;
//! while let Some(request) = client.poll_transmit() {
//!     // The "network": the request arrives at the server's primary address from `me`.
//!     server.handle_input(now, request.dst, me, Transport::Udp, &request.payload)?;
//! }
//! while let Some(response) = server.poll_transmit() {
//!     client.handle_input(now, response.src.expect("server names its source"), &response.payload)?;
//! }
//! match client.poll_event() {
//!     Some(Event::Response(r)) => {
//!         assert_eq!(r.id, id);
//!         assert_eq!(r.mapped, Some(me)); // the server-reflexive address
//!         assert_eq!(r.other_address, Some("192.0.2.2:3479".parse()?));
//!     }
//!     other => panic!("unexpected {other:?}"),
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![doc(test(attr(deny(warnings))))]
// docs.rs (`--cfg docsrs`, nightly) labels feature-gated items with their feature.
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod client;
pub mod discovery;
#[cfg(feature = "tokio")]
pub mod driver;
mod error;
#[cfg(any(test, feature = "_fuzz"))]
#[doc(hidden)]
pub mod fuzz;
pub mod ice;
mod rate;
pub mod server;
pub mod stun;
pub mod turn;

pub use error::{DecodeError, Error, Limit, UnknownAttributes, UsageError, Violation};
// The main types, flat (as quinn-proto does): each module names its own without
// repeating the module (`turn::server::Server`), so the root says which is which.
pub use turn::client::{Client as TurnClient, Config as TurnClientConfig};
pub use turn::server::{Config as TurnConfig, Server as TurnServer};

//! NAT traversal for Chorus: how a peer learns what stands between it and the Internet.
//!
//! Skype used "a variation of STUN and TURN"; Chorus speaks the standards so that it
//! works with the world's STUN servers and clients, and its server works for them.
//!
//! - [`stun`]: the STUN message codec (RFC 8489, compatible with RFC 5389), with every
//!   attribute of RFC 8489, RFC 5780, RFC 8656 and ICE, short- and long-term
//!   credentials, MESSAGE-INTEGRITY(-SHA256) and FINGERPRINT.
//!
//! Every decoder treats its input as hostile: it borrows from the input, returns a
//! [`DecodeError`] naming what is wrong, never panics, and never allocates past a
//! configured bound. Coverage and limits are described in `docs/stun.md`.
//!
//! ```
//! use bytes::BytesMut;
//! use chorus_nat::stun::{Attribute, Class, Limits, Message, Method, TransactionId};
//!
//! let request = Message::new(Class::Request, Method::BINDING, TransactionId::new([1; 12]));
//! let mut wire = BytesMut::new();
//! request.encode(None, &mut wire)?;
//! assert_eq!(wire.len(), 20);
//!
//! let mut response = Message::new(Class::Success, Method::BINDING, request.transaction_id);
//! response.attributes.push(Attribute::XorMappedAddress("192.0.2.1:32853".parse()?));
//! response.fingerprint = true;
//! let mut wire = BytesMut::new();
//! response.encode(None, &mut wire)?;
//! let decoded = Message::decode(&wire, &Limits::default())?;
//! assert_eq!(decoded.mapped_address(), Some("192.0.2.1:32853".parse()?));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![doc(test(attr(deny(warnings))))]

pub mod client;
#[cfg(feature = "tokio")]
pub mod driver;
mod error;
#[cfg(any(test, feature = "_fuzz"))]
#[doc(hidden)]
pub mod fuzz;
pub mod server;
pub mod stun;

pub use error::{DecodeError, Error, Limit, UnknownAttributes, UsageError, Violation};

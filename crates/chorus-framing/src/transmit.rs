//! The datagram a sans-IO core asks its driver to send.

use std::net::SocketAddr;

use bytes::Bytes;

/// A datagram the caller must send.
///
/// Sans-IO cores never touch a socket: they queue `Transmit`s, and the driver drains
/// them with `poll_transmit()` and sends each `payload` to `dst`, from `src` when the
/// core cares which local address it leaves from (for example an RFC 5780 server
/// answering from its alternate address).
#[must_use]
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Transmit {
    /// The local address to send from, or `None` for the socket's default.
    pub src: Option<SocketAddr>,
    /// The destination.
    pub dst: SocketAddr,
    /// The datagram's bytes.
    pub payload: Bytes,
}

impl Transmit {
    /// A datagram to `dst` from the default local address.
    pub fn new(dst: SocketAddr, payload: impl Into<Bytes>) -> Self {
        Self {
            src: None,
            dst,
            payload: payload.into(),
        }
    }

    /// The same datagram, sent from `src`.
    pub fn with_src(self, src: SocketAddr) -> Self {
        Self {
            src: Some(src),
            ..self
        }
    }
}

/// The transport a message travels over, where a protocol runs over both: UDP
/// (unreliable: a STUN transaction retransmits, RFC 8489 §6.2.1) or TCP (reliable:
/// sent once, RFC 8489 §6.2.2; a bootstrap that reached a super node by connecting).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Transport {
    /// Datagrams.
    Udp,
    /// A stream.
    Tcp,
}

//! STUN client transactions (RFC 8489 §6.2, §6.3), as a sans-IO core.
//!
//! Over UDP a request is retransmitted after RTO, 2·RTO, 4·RTO, ... until `Rc`
//! requests were sent, then the client waits `Rm`·RTO more before giving up (RFC 8489
//! §6.2.1: with the defaults, sends at 0, 0.5, 1.5, 3.5, 7.5, 15.5 and 31.5 s and a
//! timeout at 39.5 s). Over TCP the request is sent once and times out after Ti =
//! 39.5 s (§6.2.2). Responses are matched by transaction id only, so an RFC 5780
//! response from the server's other address is accepted.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use chorus_framing::{Entropy, Transmit};

use crate::error::{Error, Limit, UsageError, Violation};
use crate::stun::{Attribute, Class, Key, Limits, Message, Method, TransactionId};

/// The transport a transaction runs over: it decides the retransmission rules
/// (chorus-framing's, shared by every crate).
pub use chorus_framing::Transport;

/// Client configuration; validated by [`Client::new`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientConfig {
    /// Initial retransmission timeout (RTO). Default 500 ms; at least 1 ms.
    pub rto: Duration,
    /// Rc: requests sent over UDP before giving up. Default 7; 1..=16.
    pub max_sends: u32,
    /// Rm: how many RTOs to wait after the last UDP request. Default 16; at least 1.
    pub last_wait_multiplier: u32,
    /// Ti: the TCP transaction timeout. Default 39.5 s.
    pub tcp_timeout: Duration,
    /// Outstanding transactions at most; [`Limit::Transactions`] beyond. Default 64.
    pub max_transactions: usize,
    /// Decode limits for responses.
    pub limits: Limits,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            rto: Duration::from_millis(500),
            max_sends: 7,
            last_wait_multiplier: 16,
            tcp_timeout: Duration::from_millis(39_500),
            max_transactions: 64,
            limits: Limits::default(),
        }
    }
}

/// The outcome of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A success or error response arrived.
    Response(Response),
    /// No response within the transaction's time (RFC 8489 §6.2.1 / §6.2.2).
    TimedOut {
        /// The transaction.
        id: TransactionId,
        /// The server it was sent to.
        server: SocketAddr,
    },
}

/// A response, with the fields callers usually need copied out and the whole message
/// kept for the rest.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Response {
    /// The transaction.
    pub id: TransactionId,
    /// Where the request went.
    pub server: SocketAddr,
    /// Where the response came from (differs for RFC 5780 CHANGE-REQUEST).
    pub from: SocketAddr,
    /// Success or error.
    pub class: Class,
    /// XOR-MAPPED-ADDRESS, else MAPPED-ADDRESS.
    pub mapped: Option<SocketAddr>,
    /// ERROR-CODE's code, for an error response.
    pub error_code: Option<u16>,
    /// OTHER-ADDRESS (RFC 5780 §7.4).
    pub other_address: Option<SocketAddr>,
    /// RESPONSE-ORIGIN (RFC 5780 §7.3).
    pub response_origin: Option<SocketAddr>,
    /// The response's bytes, to decode again for other attributes.
    pub bytes: Bytes,
}

#[derive(Debug)]
struct Pending {
    server: SocketAddr,
    transport: Transport,
    payload: Bytes,
    sends: u32,
    rto: Duration,
    next: Instant,
    key: Option<Key>,
}

/// STUN client transactions (RFC 8489 §6.2). Performs no I/O.
///
/// The run loop:
/// 1. Start transactions with [`Client::start_binding`] or [`Client::start_request`].
/// 2. After that and after every `handle_*`, drain [`Client::poll_transmit`] (send each
///    datagram) and [`Client::poll_event`] until `None`.
/// 3. Call [`Client::handle_timeout`] at [`Client::poll_timeout`]; an early call is a
///    harmless no-op. `now` never goes backwards.
/// 4. Feed every received datagram to [`Client::handle_input`]; `Err` means it was
///    rejected and nothing changed.
pub struct Client {
    config: ClientConfig,
    entropy: Box<dyn Entropy>,
    pending: HashMap<TransactionId, Pending>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
}

impl core::fmt::Debug for Client {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Client")
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client with no transactions.
    ///
    /// # Errors
    /// [`UsageError::InvalidConfig`] for a value outside its documented bounds.
    pub fn new(config: ClientConfig, entropy: Box<dyn Entropy>) -> Result<Self, Error> {
        if config.rto < Duration::from_millis(1) {
            return Err(UsageError::InvalidConfig("rto below 1 ms").into());
        }
        if !(1..=16).contains(&config.max_sends) {
            return Err(UsageError::InvalidConfig("max_sends outside 1..=16").into());
        }
        if config.last_wait_multiplier == 0 {
            return Err(UsageError::InvalidConfig("last_wait_multiplier is 0").into());
        }
        if config.max_transactions == 0 {
            return Err(UsageError::InvalidConfig("max_transactions is 0").into());
        }
        Ok(Self {
            config,
            entropy,
            pending: HashMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        })
    }

    /// Starts a Binding request to `server` over UDP.
    ///
    /// # Errors
    /// As [`Client::start_request`].
    pub fn start_binding(
        &mut self,
        now: Instant,
        server: SocketAddr,
    ) -> Result<TransactionId, Error> {
        self.start_request(now, server, Transport::Udp, Method::BINDING, &[], None)
    }

    /// Starts a request with `attributes` (and MESSAGE-INTEGRITY plus FINGERPRINT when
    /// `key` is given; the success response must then carry valid integrity too). Its
    /// first datagram comes out of [`Client::poll_transmit`].
    ///
    /// # Errors
    /// [`Limit::Transactions`] when too many are outstanding, [`Error::Entropy`], or an
    /// attribute that cannot be encoded.
    pub fn start_request(
        &mut self,
        now: Instant,
        server: SocketAddr,
        transport: Transport,
        method: Method,
        attributes: &[Attribute<'_>],
        key: Option<&Key>,
    ) -> Result<TransactionId, Error> {
        let mut msg = Message::new(Class::Request, method, TransactionId::new([0; 12]));
        msg.attributes.extend_from_slice(attributes);
        msg.message_integrity = key.is_some();
        msg.fingerprint = key.is_some();
        self.start_message(now, server, transport, msg, key)
    }

    /// As [`Client::start_request`], for a request built by the caller: its
    /// transaction id is replaced by a fresh one, and its `message_integrity`,
    /// `message_integrity_sha256` and `fingerprint` flags are kept (a TURN client uses
    /// MESSAGE-INTEGRITY-SHA256 when the server offers it, RFC 8489 §9.2.4).
    ///
    /// # Errors
    /// As [`Client::start_request`]; [`UsageError::MissingKey`] when integrity is asked
    /// for without a key.
    pub fn start_message(
        &mut self,
        now: Instant,
        server: SocketAddr,
        transport: Transport,
        mut msg: Message<'_>,
        key: Option<&Key>,
    ) -> Result<TransactionId, Error> {
        if self.pending.len() >= self.config.max_transactions {
            return Err(Limit::Transactions(self.pending.len()).into());
        }
        let mut id = TransactionId::random(&mut self.entropy)?;
        while self.pending.contains_key(&id) {
            id = TransactionId::random(&mut self.entropy)?;
        }
        msg.class = Class::Request;
        msg.transaction_id = id;
        let mut out = BytesMut::with_capacity(msg.encoded_len());
        msg.encode(key, &mut out)?;
        let payload = out.freeze();
        self.transmits
            .push_back(Transmit::new(server, payload.clone()));
        let rto = self.config.rto;
        let next = match transport {
            Transport::Udp if self.config.max_sends > 1 => now + rto,
            Transport::Udp => now + rto * self.config.last_wait_multiplier,
            Transport::Tcp => now + self.config.tcp_timeout,
        };
        self.pending.insert(
            id,
            Pending {
                server,
                transport,
                payload,
                sends: 1,
                rto,
                next,
                key: key.cloned(),
            },
        );
        Ok(id)
    }

    /// Abandons a transaction; later responses to it are rejected.
    ///
    /// # Errors
    /// [`Violation::UnknownTransaction`] if it is not outstanding.
    pub fn cancel(&mut self, id: TransactionId) -> Result<(), Error> {
        self.pending
            .remove(&id)
            .map(drop)
            .ok_or(Violation::UnknownTransaction.into())
    }

    /// How many transactions are outstanding.
    #[must_use]
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Whether `bytes` look like a response to one of this client's transactions (for
    /// sharing one socket between several cores).
    #[must_use]
    pub fn accepts(&self, bytes: &[u8]) -> bool {
        crate::stun::Header::decode(bytes)
            .is_ok_and(|h| self.pending.contains_key(&h.transaction_id))
    }

    /// One received datagram.
    ///
    /// # Errors
    /// Rejected (state unchanged): not STUN, not a response, no such transaction, or a
    /// response that fails the integrity check its request asked for.
    pub fn handle_input(
        &mut self,
        _now: Instant,
        from: SocketAddr,
        bytes: &[u8],
    ) -> Result<(), Error> {
        let msg = Message::decode(bytes, &self.config.limits)?;
        if !matches!(msg.class, Class::Success | Class::Error) {
            return Err(Violation::UnexpectedClass.into());
        }
        let id = msg.transaction_id;
        let pending = self.pending.get(&id).ok_or(Violation::UnknownTransaction)?;
        if let Some(key) = &pending.key
            && msg.class == Class::Success
        {
            // RFC 8489 §9.1.4: a response to an authenticated request must verify.
            Message::verify(bytes, key)?;
        }
        let server = pending.server;
        self.pending.remove(&id);
        let find = |want: fn(&Attribute<'_>) -> Option<SocketAddr>| msg.find(want);
        self.events.push_back(Event::Response(Response {
            id,
            server,
            from,
            class: msg.class,
            mapped: msg.mapped_address(),
            error_code: msg.error_code().map(|(c, _)| c),
            other_address: find(|a| match a {
                Attribute::OtherAddress(x) => Some(*x),
                _ => None,
            }),
            response_origin: find(|a| match a {
                Attribute::ResponseOrigin(x) => Some(*x),
                _ => None,
            }),
            bytes: Bytes::copy_from_slice(bytes),
        }));
        Ok(())
    }

    /// Retransmits and times out what is due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let (max_sends, rm) = (self.config.max_sends, self.config.last_wait_multiplier);
        let mut expired = Vec::new();
        for (id, p) in &mut self.pending {
            if p.next > now {
                continue;
            }
            if p.transport == Transport::Tcp || p.sends >= max_sends {
                expired.push(*id);
                continue;
            }
            self.transmits
                .push_back(Transmit::new(p.server, p.payload.clone()));
            p.sends += 1;
            p.rto *= 2;
            // After the last request wait Rm·RTO (the initial RTO), else the doubled RTO.
            p.next = if p.sends >= max_sends {
                now + self.config.rto * rm
            } else {
                now + p.rto
            };
        }
        expired.sort();
        for id in expired {
            if let Some(p) = self.pending.remove(&id) {
                self.events.push_back(Event::TimedOut {
                    id,
                    server: p.server,
                });
            }
        }
    }

    /// The next datagram to send.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next outcome.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Client::handle_timeout`] should next be called.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.pending.values().map(|p| p.next).min()
    }
}

// The STUN client as a datagram core: it takes responses to its own transactions.
chorus_framing::datagram_core! {
    impl for Client {
        type Event = Event;
        type Error = Error;
        fn accepts(&self, _local, _from, bytes) {
            Self::accepts(self, bytes)
        }
        fn handle_datagram(&mut self, now, _local, from, bytes) {
            self.handle_input(now, from, bytes)
        }
    }
}

#[cfg(test)]
#[allow(clippy::field_reassign_with_default)] // as callers outside the crate must
mod tests {
    use chorus_framing::SeededEntropy;

    use super::*;

    fn client() -> Client {
        Client::new(ClientConfig::default(), Box::new(SeededEntropy::new(1))).unwrap()
    }

    fn server() -> SocketAddr {
        "192.0.2.9:3478".parse().unwrap()
    }

    fn respond(request: &[u8], mapped: SocketAddr, key: Option<&Key>) -> Vec<u8> {
        let req = Message::decode(request, &Limits::default()).unwrap();
        let mut m = Message::new(Class::Success, req.method, req.transaction_id);
        m.attributes.push(Attribute::XorMappedAddress(mapped));
        m.message_integrity = key.is_some();
        let mut out = BytesMut::new();
        m.encode(key, &mut out).unwrap();
        out.to_vec()
    }

    #[test]
    fn udp_retransmits_on_the_rfc_8489_schedule_then_times_out_at_39_5_seconds() {
        let t0 = Instant::now();
        let mut c = client();
        let id = c.start_binding(t0, server()).unwrap();
        assert!(c.poll_transmit().is_some());
        let mut sends_at = vec![0u64];
        let mut now = t0;
        while let Some(deadline) = c.poll_timeout() {
            now = deadline;
            c.handle_timeout(now);
            while c.poll_transmit().is_some() {
                sends_at.push((now - t0).as_millis() as u64);
            }
        }
        assert_eq!(sends_at, [0, 500, 1500, 3500, 7500, 15500, 31500]);
        assert_eq!((now - t0).as_millis(), 39_500);
        assert_eq!(
            c.poll_event(),
            Some(Event::TimedOut {
                id,
                server: server()
            })
        );
        assert_eq!(c.poll_event(), None);
    }

    #[test]
    fn tcp_sends_once_and_times_out_after_ti() {
        let t0 = Instant::now();
        let mut c = client();
        let id = c
            .start_request(t0, server(), Transport::Tcp, Method::BINDING, &[], None)
            .unwrap();
        assert!(c.poll_transmit().is_some());
        c.handle_timeout(t0 + Duration::from_secs(39));
        assert!(c.poll_transmit().is_none());
        assert!(c.poll_event().is_none());
        c.handle_timeout(t0 + Duration::from_millis(39_500));
        assert!(c.poll_transmit().is_none());
        assert_eq!(
            c.poll_event(),
            Some(Event::TimedOut {
                id,
                server: server()
            })
        );
    }

    #[test]
    fn a_response_completes_the_matching_transaction_only() {
        let t0 = Instant::now();
        let mut c = client();
        let a = c.start_binding(t0, server()).unwrap();
        let b = c.start_binding(t0, server()).unwrap();
        let ra = c.poll_transmit().unwrap();
        let _rb = c.poll_transmit().unwrap();
        let mapped: SocketAddr = "203.0.113.5:6000".parse().unwrap();
        let from: SocketAddr = "192.0.2.10:3479".parse().unwrap();
        let response = respond(&ra.payload, mapped, None);
        c.handle_input(t0, from, &response).unwrap();
        match c.poll_event() {
            Some(Event::Response(r)) => {
                assert_eq!(
                    (r.id, r.mapped, r.from, r.class),
                    (a, Some(mapped), from, Class::Success)
                );
            }
            other => panic!("{other:?}"),
        }
        // A duplicate is an unknown transaction now; the other one is still pending.
        assert_eq!(
            c.handle_input(t0, from, &response),
            Err(Error::Protocol(Violation::UnknownTransaction))
        );
        assert_eq!(c.pending(), 1);
        c.cancel(b).unwrap();
        assert!(c.cancel(b).is_err());
        assert_eq!(c.poll_timeout(), None);
        // An early timeout is a no-op.
        c.handle_timeout(t0);
        assert!(c.poll_transmit().is_none());
    }

    #[test]
    fn authenticated_requests_reject_unauthenticated_success_responses() {
        let t0 = Instant::now();
        let mut c = client();
        let key = Key::short_term("pw");
        let id = c
            .start_request(
                t0,
                server(),
                Transport::Udp,
                Method::BINDING,
                &[Attribute::Username("a:b")],
                Some(&key),
            )
            .unwrap();
        let req = c.poll_transmit().unwrap();
        Message::verify(&req.payload, &key).unwrap();
        let mapped: SocketAddr = "203.0.113.5:6000".parse().unwrap();
        assert!(
            c.handle_input(t0, server(), &respond(&req.payload, mapped, None))
                .is_err()
        );
        assert!(
            c.handle_input(
                t0,
                server(),
                &respond(&req.payload, mapped, Some(&Key::short_term("x")))
            )
            .is_err()
        );
        assert_eq!(c.pending(), 1);
        c.handle_input(t0, server(), &respond(&req.payload, mapped, Some(&key)))
            .unwrap();
        assert!(matches!(c.poll_event(), Some(Event::Response(r)) if r.id == id));
    }

    #[test]
    fn requests_and_garbage_are_rejected_and_limits_hold() {
        let t0 = Instant::now();
        let mut cfg = ClientConfig::default();
        cfg.max_transactions = 1;
        let mut c = Client::new(cfg, Box::new(SeededEntropy::new(2))).unwrap();
        c.start_binding(t0, server()).unwrap();
        assert!(matches!(
            c.start_binding(t0, server()),
            Err(Error::Limit(Limit::Transactions(1)))
        ));
        let req = c.poll_transmit().unwrap();
        assert!(c.accepts(&req.payload));
        assert_eq!(
            c.handle_input(t0, server(), &req.payload),
            Err(Error::Protocol(Violation::UnexpectedClass))
        );
        assert!(c.handle_input(t0, server(), b"garbage").is_err());
        assert!(!c.accepts(b"garbage"));

        let bad = |f: fn(&mut ClientConfig)| {
            let mut cfg = ClientConfig::default();
            f(&mut cfg);
            Client::new(cfg, Box::new(SeededEntropy::new(0))).is_err()
        };
        assert!(bad(|c| c.rto = Duration::ZERO));
        assert!(bad(|c| c.max_sends = 0));
        assert!(bad(|c| c.max_sends = 17));
        assert!(bad(|c| c.last_wait_multiplier = 0));
        assert!(bad(|c| c.max_transactions = 0));
    }
}

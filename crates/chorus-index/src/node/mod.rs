//! The sans-IO Global Index node: routing, lookups, record storage and replication.
//!
//! A [`Node`] never opens a socket, reads a clock or draws from a global generator:
//! the caller feeds it datagrams and the current [`Instant`], and drains what it wants
//! sent, what happened and when to wake it. The run loop:
//!
//! 1. Build it with [`Node::new`] (which verifies the node's own certificate: the
//!    node id is derived from it, never chosen), then [`Node::bootstrap`] with super
//!    node addresses from the host cache.
//! 2. Feed every datagram of type `Index` to [`Node::handle_input`]; an `Err` means
//!    "rejected, state unchanged" (the sender may have been penalized).
//! 3. Issue commands: [`Node::find_user`], [`Node::find_node`], [`Node::publish`],
//!    [`Node::leave`].
//! 4. After any of these, drain [`Node::poll_transmit`] and [`Node::poll_event`] until
//!    `None`, then sleep until [`Node::poll_timeout`] and call
//!    [`Node::handle_timeout`]. `now` never goes backwards; an early
//!    `handle_timeout` is a harmless no-op.
//!
//! Wall-clock time (record issue and expiry, certificate validity) is derived from the
//! `SystemTime` given to [`Node::new`] plus the monotonic time elapsed since, so the
//! core takes one clock and stays deterministic.
//!
//! Lookups are iterative (the node itself queries each hop), `alpha` requests in
//! parallel per path, over `disjoint_paths` paths that never share a node
//! (S/Kademlia): a minority of malicious nodes must sit on every path to hide a
//! record. A request that has not been answered after `stall_timeout` stops counting
//! against `alpha` (the lookup moves on) and fails after `request_timeout`; Store,
//! Ping and bootstrap requests are retried `retries` times.
//!
//! Neither a reflector nor a CPU sink (`docs/index.md`, "Not a CPU sink, not a
//! reflector"): a source address that has not shown it receives there (by echoing a
//! cookie of ours, answering one of our requests, or being a contact proven at that
//! address) is sent no more bytes than it sent (RFC 9000 §8.1): the answer if it
//! fits, the closest contacts that fit, or a `Cookie` to echo. Requests without a
//! cookie are padded to `pad_requests_to` so that first answers usually fit. Proofs
//! of possession are signed, and certificates and records of requests verified,
//! from token buckets for the whole node (`proof_rate`, `proof_burst`;
//! `verify_rate`, `verify_burst`), not only per source IP.
//!
//! The node is a hub (this module: configuration, public API, dispatch of each
//! datagram, timers, the datagram-core contract) over subsystems, each a type in
//! its own file with its own tests: `lookup` (iterative lookups), `requests`
//! (requests in flight and their timer table), `store` (records held), `search`
//! (search entries and searches), `replication` (publishing, re-replication,
//! hand-off), `proofs` (proofs of possession and the signing budget), `certs`
//! (the certificate cache), `validation` (return routability: cookies and
//! validated addresses) and `serve` (answers to requests, within what the source
//! may receive).
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic
    )
)]

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use chorus_crypto::cert::NodeId;
use chorus_framing::{Entropy, Redacted, Transmit};

use crate::error::{Error, UsageError, Violation};
use crate::id::{closer, user_key};
use crate::message::{
    Body, COOKIE_LEN, Contact, MAX_NODES, Message, NONCE_LEN, possession_message, with_cookie,
    with_padding,
};
use crate::rate::{GlobalBudget, RateLimiter};
use crate::record::{PresenceRecord, Signer, Verifier, unix_secs};
use crate::table::{Insert, RoutingTable};

mod certs;
mod config;
mod lookup;
mod proofs;
mod replication;
mod requests;
mod search;
mod serve;
mod store;
mod validation;

pub use config::{Config, DEFAULT_NETWORK};

use certs::CertCache;
use lookup::{CandState, Lookup, LookupKind};
use proofs::{Proofs, Proven};
use replication::{Publications, Published};
use requests::{Pending, Purpose, Requests, Stalled};
use search::Words;
use store::Store;
use validation::AddressValidation;

/// Who this node is: its super node certificate (encoded) and the key it names. The
/// node id is derived from the certified key by the [`Verifier`]; the key signs the
/// nonces of peers that challenge this node to prove it is not replaying the
/// certificate.
#[derive(Clone)]
pub struct NodeIdentity {
    /// The encoded certificate, sent with every message.
    pub cert: Bytes,
    /// The certified key (an [`IdentityKeyPair`](chorus_crypto::identity::IdentityKeyPair)
    /// in production).
    pub key: Arc<dyn Signer>,
}

impl core::fmt::Debug for NodeIdentity {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("NodeIdentity")
            .field("cert_len", &self.cert.len())
            .field("key", &"<redacted>")
            .finish()
    }
}

/// Names a lookup started by a command; its outcome carries the same id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LookupId(pub u64);

/// What a finished lookup found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupOutcome {
    /// The lookup.
    pub id: LookupId,
    /// The id or key looked up.
    pub target: NodeId,
    /// For a user lookup: the newest verified record found.
    pub record: Option<PresenceRecord>,
    /// The closest nodes that answered, closest first (at most `replication`).
    pub closest: Vec<Contact>,
    /// Hops to the first verified record: 1 if a node from our own table held it.
    pub hops: Option<u32>,
    /// Time from the start to the first verified record.
    pub found_after: Option<Duration>,
    /// Time from the start to the end of the lookup.
    pub duration: Duration,
    /// Requests the lookup sent.
    pub messages: u32,
    /// For a search: verified records whose display name has every query word,
    /// newest version per user, by username (at most `max_search_results`).
    pub results: Vec<PresenceRecord>,
}

/// Something the application should know.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// Joining finished: the routing table holds `contacts` nodes.
    Bootstrapped {
        /// Contacts in the table.
        contacts: usize,
    },
    /// No bootstrap node answered.
    BootstrapFailed,
    /// A lookup started by [`Node::find_user`] or [`Node::find_node`] finished.
    Lookup(Box<LookupOutcome>),
    /// A record given to [`Node::publish`] was stored on `replicas` nodes (this one
    /// included, if it is among the closest).
    Published {
        /// The user.
        username: String,
        /// Nodes that acknowledged it.
        replicas: usize,
    },
}

/// Counters, for tests, the simulator and monitoring.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Datagrams accepted.
    pub received: u64,
    /// Datagrams rejected (malformed, rate-limited, unsolicited, not verifying).
    pub rejected: u64,
    /// Datagrams queued for sending.
    pub sent: u64,
    /// Peers penalized for records that did not verify.
    pub penalized: u64,
    /// Datagrams or events dropped because the caller did not drain the queues.
    pub overflow: u64,
    /// Requests sent with a possession challenge (to a node not yet proven).
    pub challenges: u64,
    /// Proofs of possession signed (an RSA signature each in production).
    pub proofs_signed: u64,
    /// Requests left unanswered because the global proof budget was spent.
    pub proofs_refused: u64,
    /// `Cookie` messages sent to sources that had not proven their address.
    pub cookies_sent: u64,
    /// Node certificates verified (not answered from the certificate cache): an RSA
    /// verification each in production.
    pub certs_verified: u64,
    /// Requests left unanswered, or answered with a cookie, because the global
    /// verification budget was spent.
    pub verifications_refused: u64,
    /// Answers to sources that had not proven their address, cut to fit their
    /// request.
    pub truncated: u64,
}

/// A Global Index node. See the [module documentation](self) for the run loop.
pub struct Node {
    // A hub: one value per subsystem (the routing table, the record `Store`, the
    // search `Words`, the `Requests` in flight with their timer table, the lookups,
    // the `Publications`, the `CertCache`, the `Proofs` we sign and the contacts
    // `Proven` to us, the `AddressValidation`), each with its own methods and
    // tests. The hub dispatches each datagram to them and queues what they send.
    config: Config,
    cert: Bytes,
    id: NodeId,
    verifier: Arc<dyn Verifier>,
    entropy: Box<dyn Entropy>,
    /// The proofs of possession we sign, within the global proof budget.
    proofs: Proofs,
    /// Contacts that proved possession of their key, and our challenges.
    proven: Proven,
    /// The global budget of signature checks for requests (`verify_rate`).
    verify_tokens: GlobalBudget,
    /// Cookies, validated addresses and responders' cookies.
    validation: AddressValidation,
    anchor: (Instant, SystemTime),
    table: RoutingTable,
    store: Store,
    words: Words,
    certs: CertCache,
    published: Publications,
    requests: Requests,
    lookups: BTreeMap<u64, Lookup>,
    next_id: u64,
    bootstrap_pending: usize,
    bootstrap_found: Vec<Contact>,
    joining: bool,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    rate: RateLimiter,
    next_maintenance: Instant,
    left: bool,
    stats: Stats,
}

impl core::fmt::Debug for Node {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.id)
            .field("contacts", &self.table.len())
            .field("records", &self.store.len())
            .field("lookups", &self.lookups.len())
            .field("pending", &self.requests.len())
            .finish_non_exhaustive()
    }
}

impl Node {
    /// A node with certificate `identity`, verified by `verifier` at `wall` (the
    /// wall-clock time matching the monotonic `now`).
    ///
    /// # Errors
    /// [`UsageError::InvalidConfig`] for a configuration out of bounds;
    /// [`Violation::BadNodeCertificate`] if the node's own certificate does not
    /// verify, [`Violation::BadProof`] if its key is not the one the certificate
    /// names; [`Error::Entropy`] if the entropy source or signing fails.
    pub fn new(
        config: Config,
        identity: NodeIdentity,
        verifier: Arc<dyn Verifier>,
        mut entropy: Box<dyn Entropy>,
        now: Instant,
        wall: SystemTime,
    ) -> Result<Self, Error> {
        config.validate().map_err(UsageError::InvalidConfig)?;
        let id = verifier.verify_node(&identity.cert, wall)?;
        let proven = Proven::new(&config, &mut *entropy)?;
        // A key that does not match the certificate would fail every challenge.
        let probe = possession_message(&[0; NONCE_LEN], &id);
        let sig = identity.key.sign(&probe)?;
        verifier.verify_possession(&identity.cert, &probe, &sig, wall)?;
        let validation = AddressValidation::new(&config, &mut *entropy)?;
        let table =
            RoutingTable::new(id, config.table.clone()).map_err(UsageError::InvalidConfig)?;
        let rate = RateLimiter::new(config.rate_limit, config.rate_burst, config.max_rate_peers);
        let next_maintenance = now + config.maintenance_interval;
        Ok(Self {
            cert: identity.cert,
            id,
            verifier,
            entropy,
            proofs: Proofs::new(identity.key, sig.len(), &config, now),
            proven,
            verify_tokens: GlobalBudget::new(config.verify_burst, now),
            validation,
            anchor: (now, wall),
            table,
            store: Store::new(&config),
            words: Words::new(&config),
            certs: CertCache::new(&config),
            published: Publications::default(),
            requests: Requests::default(),
            lookups: BTreeMap::new(),
            next_id: 1,
            bootstrap_pending: 0,
            bootstrap_found: Vec::new(),
            joining: false,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            rate,
            next_maintenance,
            left: false,
            stats: Stats::default(),
            config,
        })
    }

    /// This node's id (derived from its certificate).
    #[must_use]
    pub const fn id(&self) -> NodeId {
        self.id
    }

    /// The configuration.
    #[must_use]
    pub const fn config(&self) -> &Config {
        &self.config
    }

    /// The routing table.
    #[must_use]
    pub const fn table(&self) -> &RoutingTable {
        &self.table
    }

    /// Counters.
    #[must_use]
    pub const fn stats(&self) -> Stats {
        self.stats
    }

    /// Records stored for the index.
    #[must_use]
    pub fn records(&self) -> usize {
        self.store.len()
    }

    /// The stored record of `username`, if this node holds one.
    #[must_use]
    pub fn record(&self, username: &str) -> Option<&PresenceRecord> {
        self.store.get(&user_key(username)).map(|s| &s.record)
    }

    /// Whether [`Node::leave`] was called.
    #[must_use]
    pub const fn has_left(&self) -> bool {
        self.left
    }

    /// Approximate heap bytes this node holds: routing table, records, rate limiter,
    /// requests and lookups in flight.
    #[must_use]
    pub fn memory_bytes(&self) -> usize {
        size_of::<Self>()
            + self.table.memory_bytes()
            + self.store.memory_bytes()
            + self.words.memory_bytes()
            + self.certs.len() * 96
            + self.proven.memory_bytes()
            + self.validation.memory_bytes()
            + self.proofs.memory_bytes()
            + self.rate.memory_bytes()
            + self.requests.len() * (64 + size_of::<Pending>())
            + self
                .lookups
                .values()
                .map(Lookup::memory_bytes)
                .sum::<usize>()
    }

    fn wall(&self, now: Instant) -> SystemTime {
        self.anchor.1 + now.saturating_duration_since(self.anchor.0)
    }

    /// Adds a known contact without talking to it (a warm start from a saved table,
    /// or the simulator's initial state). Its id must be the one its certificate
    /// gives; the first failed request removes a wrong one.
    pub fn add_contact(&mut self, contact: Contact, now: Instant) -> bool {
        self.table.insert(contact, now) == Insert::Added
    }

    /// Joins the index through `seeds` (super node addresses from the host cache):
    /// asks each for the nodes closest to our id, then looks our id up and refreshes
    /// the buckets farther away. Ends with [`Event::Bootstrapped`] or
    /// [`Event::BootstrapFailed`].
    ///
    /// # Errors
    /// [`UsageError::Left`] after [`Node::leave`].
    pub fn bootstrap(&mut self, now: Instant, seeds: &[SocketAddr]) -> Result<(), Error> {
        if self.left {
            return Err(UsageError::Left.into());
        }
        self.joining = true;
        if seeds.is_empty() {
            return self.start_join(now);
        }
        for &addr in seeds.iter().take(16) {
            let body = Body::FindNode { target: self.id };
            if self
                .send_request(now, addr, None, body, Purpose::Bootstrap)
                .is_some()
            {
                self.bootstrap_pending += 1;
            }
        }
        Ok(())
    }

    /// [`Node::bootstrap`] through the 16 best-ranked super nodes of the host cache
    /// (chorus-hostcache), as a client or a new super node does at start-up.
    ///
    /// # Errors
    /// As [`Node::bootstrap`].
    pub fn bootstrap_from_host_cache(
        &mut self,
        now: Instant,
        cache: &chorus_hostcache::hostcache::HostCache,
    ) -> Result<(), Error> {
        let seeds = cache.best(16, self.wall(now));
        self.bootstrap(now, &seeds)
    }

    fn start_join(&mut self, now: Instant) -> Result<(), Error> {
        let extra = core::mem::take(&mut self.bootstrap_found);
        self.start_lookup(now, LookupKind::Join, self.id, &extra)
            .map(drop)
    }

    /// Looks up the presence record of `username`; ends with [`Event::Lookup`].
    ///
    /// # Errors
    /// [`Limit::TooManyLookups`](crate::Limit::TooManyLookups), [`UsageError::Left`].
    pub fn find_user(&mut self, now: Instant, username: &str) -> Result<LookupId, Error> {
        let key = user_key(username);
        if self.config.value_quorum == 1
            && !self.left
            && let Some(s) = self.store.get(&key)
        {
            // We are a holder: answer from the store (verified when stored).
            let id = self.next_id;
            self.next_id += 1;
            let outcome = LookupOutcome {
                id: LookupId(id),
                target: key,
                record: Some(s.record.clone()),
                closest: Vec::new(),
                hops: Some(0),
                found_after: Some(Duration::ZERO),
                duration: Duration::ZERO,
                messages: 0,
                results: Vec::new(),
            };
            self.push_event(Event::Lookup(Box::new(outcome)));
            return Ok(LookupId(id));
        }
        self.start_lookup(now, LookupKind::FindValue, key, &[])
            .map(LookupId)
    }

    /// Looks up the nodes closest to `target`; ends with [`Event::Lookup`].
    ///
    /// # Errors
    /// [`Limit::TooManyLookups`](crate::Limit::TooManyLookups), [`UsageError::Left`].
    pub fn find_node(&mut self, now: Instant, target: NodeId) -> Result<LookupId, Error> {
        self.start_lookup(now, LookupKind::FindNode, target, &[])
            .map(LookupId)
    }

    /// Publishes a user's signed record: verifies it, finds the `replication` nodes
    /// closest to its key, stores it there, and republishes it every
    /// `republish_interval` until [`Node::withdraw`] or expiry. Ends with
    /// [`Event::Published`].
    ///
    /// # Errors
    /// The record's verification failure ([`Violation`]), [`Violation::Stale`] if an
    /// equal or newer version is already published here, [`Limit::TooManyLookups`](crate::Limit::TooManyLookups),
    /// [`UsageError::Left`].
    pub fn publish(&mut self, now: Instant, record: PresenceRecord) -> Result<LookupId, Error> {
        if self.left {
            return Err(UsageError::Left.into());
        }
        self.check_record(&record, now)?;
        let key = record.key();
        if let Some(p) = self.published.get(&key)
            && !record.supersedes(&p.record)
        {
            return Err(Violation::Stale.into());
        }
        let id = self.start_lookup(now, LookupKind::Publish, key, &[])?;
        let words = record.words();
        self.published.insert(
            key,
            Published {
                record,
                next: now + self.config.republish_interval,
            },
        );
        self.publish_words(now, key, &words);
        Ok(LookupId(id))
    }

    /// Stops republishing `username`'s record (it stays in the index until it
    /// expires or a newer version replaces it).
    pub fn withdraw(&mut self, username: &str) {
        self.published.withdraw(&user_key(username));
    }

    /// Leaves the index gracefully: hands each stored record to the next node in
    /// line for it, tells the nodes closest to us, and stops. Queued datagrams should
    /// still be sent.
    pub fn leave(&mut self, _now: Instant) {
        if self.left {
            return;
        }
        // Records go to the next two in line, search entries (`word`) to the next.
        let held: Vec<(NodeId, Bytes, bool)> = self
            .store
            .iter()
            .map(|(k, s)| (*k, s.bytes.clone(), false))
            .chain(self.words.iter().map(|(k, s)| (*k, s.bytes.clone(), true)))
            .collect();
        for (key, bytes, word) in held {
            let own = self.id;
            let heirs: Vec<Contact> = self
                .table
                .closest(&key, self.config.replication)
                .into_iter()
                .filter(|c| closer(&key, &own, &c.id))
                .take(if word { 1 } else { 2 })
                .collect();
            for c in heirs {
                let record = &bytes;
                let body = if word {
                    Body::StoreWord { key, record }
                } else {
                    Body::Store { record }
                };
                self.send_oneway(c.addr, body);
            }
        }
        for c in self.table.closest(&self.id, self.config.replication) {
            self.send_oneway(c.addr, Body::Leave);
        }
        self.left = true;
        self.requests.clear();
        self.lookups.clear();
        self.published.clear();
    }

    /// Whether `bytes` looks like a Global Index datagram (for routing on a shared
    /// port): a Chorus datagram of type `Index`.
    #[must_use]
    pub fn accepts(bytes: &[u8]) -> bool {
        bytes.get(1) == Some(&(chorus_framing::DatagramType::Index as u8))
            && chorus_framing::classify(bytes) == chorus_framing::PacketKind::Chorus
    }

    /// One received datagram.
    ///
    /// # Errors
    /// [`Error::Decode`] for malformed bytes, [`Violation`]s (bad certificate or
    /// record, unsolicited response, wrong network), [`Limit::RateLimited`](crate::Limit::RateLimited),
    /// [`UsageError::Left`]. The node's state is unchanged, except that a peer that
    /// sent a record that does not verify is dropped from the table and rate-limited.
    pub fn handle_input(
        &mut self,
        now: Instant,
        from: SocketAddr,
        bytes: &[u8],
    ) -> Result<(), Error> {
        let r = self.handle_input_inner(now, from, bytes);
        if r.is_err() {
            self.stats.rejected += 1;
        } else {
            self.stats.received += 1;
        }
        r
    }

    fn handle_input_inner(
        &mut self,
        now: Instant,
        from: SocketAddr,
        bytes: &[u8],
    ) -> Result<(), Error> {
        if self.left {
            return Err(UsageError::Left.into());
        }
        let msg = Message::decode(bytes)?;
        if msg.network != self.config.network {
            return Err(Violation::WrongNetwork(msg.network).into());
        }
        if msg.body.is_response() {
            return self.handle_response(now, from, msg);
        }
        self.handle_request(now, from, msg, bytes.len())
    }

    /// A verified node talked to us: refresh or add it, and hand it the records it
    /// should now hold.
    fn seen(&mut self, contact: Contact, now: Instant) {
        if self.table.insert(contact, now) == Insert::Added {
            self.hand_off(contact, now);
        }
    }

    /// Penalizes the sender of a record that failed verification (a forged signature or
    /// user certificate, or bytes that do not decode); other refusals are not its fault.
    fn penalize_forgery(&mut self, e: &Error, from: SocketAddr, id: &NodeId, now: Instant) {
        if matches!(
            e,
            Error::Protocol(Violation::BadSignature | Violation::BadUserCertificate)
                | Error::Decode(_)
        ) {
            self.penalize(from, id, now);
        }
    }

    /// Drops the node at `from` claiming `id` (from the table only if it sits there
    /// at that address: a certificate replayed from elsewhere must not evict its
    /// owner) and empties the source's rate-limit bucket.
    fn penalize(&mut self, from: SocketAddr, id: &NodeId, now: Instant) {
        self.stats.penalized += 1;
        if self.table.get(id).is_some_and(|e| e.contact.addr == from) {
            self.table.remove(id, now);
        }
        self.proven.forget(id, from);
        self.rate.penalize(from.ip(), now);
    }

    /// Checks a record for storing or returning: structure, expiry, lifetime bound,
    /// certificate and signature.
    fn check_record(&self, record: &PresenceRecord, now: Instant) -> Result<(), Error> {
        record.check()?;
        let wall = self.wall(now);
        let secs = unix_secs(wall);
        let lifetime = record.expires_at.saturating_sub(record.issued_at);
        if record.is_expired(secs)
            || lifetime > self.config.max_record_lifetime.as_secs()
            || record.issued_at > secs + 600
        {
            return Err(Violation::Expired.into());
        }
        self.verifier.verify_record(record, wall)?;
        Ok(())
    }

    fn handle_response(
        &mut self,
        now: Instant,
        from: SocketAddr,
        msg: Message<'_>,
    ) -> Result<(), Error> {
        let Some(p) = self.requests.get(msg.txid) else {
            return Err(Violation::Unsolicited.into());
        };
        if p.to != from {
            return Err(Violation::Unsolicited.into());
        }
        if let (Body::Cookie, Some(cookie)) = (&msg.body, msg.cookie) {
            return self.handle_cookie(now, from, msg.txid, cookie);
        }
        let expect = p.expect;
        let sender = match self.verify_sender(msg.sender_cert, now, None) {
            Ok(Some(id)) if expect.is_none_or(|e| e == id) && id != self.id => id,
            Ok(_) => return Err(Violation::Unsolicited.into()),
            Err(v) => return Err(v.into()),
        };
        let Some(p) = self.requests.remove(msg.txid) else {
            return Err(Violation::Unsolicited.into());
        };
        let contact = Contact {
            id: sender,
            addr: from,
        };
        if let Some(nonce) = p.nonce {
            let wall = self.wall(now);
            let proven = msg.proof.is_some_and(|sig| {
                self.verifier
                    .verify_possession(
                        msg.sender_cert,
                        &possession_message(&nonce, &self.id),
                        sig,
                        wall,
                    )
                    .is_ok()
            });
            if !proven {
                // A valid certificate without its key: a replayed certificate.
                self.penalize(from, &sender, now);
                self.request_failed(now, p, false);
                return Err(Violation::BadProof.into());
            }
            self.proven.insert(contact, now);
        }
        // It answered our transaction id at that address, so it receives there.
        self.validation.remember_validated(from, now);
        if let Some(c) = msg.cookie {
            self.validation.remember_cookie(from, c, now);
        }
        // Proven now, or it was when we sent the request (no nonce).
        self.seen(contact, now);
        match p.purpose {
            Purpose::Ping => {}
            Purpose::Store { op } => {
                let stored = matches!(msg.body, Body::StoreAck { stored: true });
                self.store_done(op, stored);
            }
            Purpose::Bootstrap => {
                self.bootstrap_pending = self.bootstrap_pending.saturating_sub(1);
                if let Body::Nodes { nodes } = &msg.body {
                    self.bootstrap_found
                        .extend(nodes.iter().filter(|c| c.id != self.id));
                    self.bootstrap_found.truncate(2 * MAX_NODES);
                }
                if self.joining && !self.lookups.values().any(|l| l.kind == LookupKind::Join) {
                    self.start_join(now)?;
                }
            }
            Purpose::Lookup { lookup, path } => {
                self.lookup_response(now, lookup, path, contact, from, &msg.body);
                self.step_lookup(now, lookup);
            }
        }
        Ok(())
    }

    /// The peer at `from` asks us to echo `cookie` before it answers request `txid`
    /// (RFC 9000 §8.1.2): remember the cookie for later requests, and send this one
    /// again with it, once (it does not count as a retry).
    fn handle_cookie(
        &mut self,
        now: Instant,
        from: SocketAddr,
        txid: u64,
        cookie: [u8; COOKIE_LEN],
    ) -> Result<(), Error> {
        // Only the peer at `from` (or a node on the path) saw our transaction id.
        self.validation.remember_validated(from, now);
        self.validation.remember_cookie(from, cookie, now);
        if !self.requests.contains(txid) {
            return Err(Violation::Unsolicited.into());
        }
        // A cookie for the echo of a cookie: the retry timer decides.
        if let Some(request) = self.requests.echo_cookie(txid, now, self.timeouts()) {
            self.queue(Transmit::new(from, with_cookie(&request, &cookie)));
        }
        Ok(())
    }

    fn send_oneway(&mut self, to: SocketAddr, body: Body<'_>) {
        let Ok(txid) = self.entropy.u64() else { return };
        let payload = Message {
            network: self.config.network,
            txid,
            sender_cert: &self.cert,
            nonce: None,
            proof: None,
            cookie: None,
            padding: 0,
            body,
        }
        .to_bytes();
        self.queue(Transmit::new(to, payload));
    }

    fn queue(&mut self, t: Transmit) {
        if self.transmits.len() >= self.config.max_queue {
            self.stats.overflow += 1;
            return;
        }
        self.stats.sent += 1;
        self.transmits.push_back(t);
    }

    fn push_event(&mut self, e: Event) {
        match &e {
            Event::Bootstrapped { contacts } => tracing::info!(contacts, "joined the index"),
            Event::BootstrapFailed => tracing::warn!("no bootstrap node answered"),
            Event::Lookup(o) => tracing::debug!(
                found = o.record.is_some(),
                results = o.results.len(),
                hops = ?o.hops,
                ms = o.duration.as_millis(),
                messages = o.messages,
                "lookup finished"
            ),
            Event::Published { username, replicas } => {
                tracing::debug!(user = %Redacted(username), replicas, "record published");
            }
        }
        if self.events.len() >= self.config.max_queue {
            self.stats.overflow += 1;
            return;
        }
        self.events.push_back(e);
    }

    /// Pings `addr`; the answer refreshes (or adds) it in the routing table.
    pub fn ping(&mut self, now: Instant, addr: SocketAddr) {
        if !self.left {
            let _ = self.send_request(now, addr, None, Body::Ping, Purpose::Ping);
        }
    }

    /// Processes timers: request stalls, timeouts and retries, and every
    /// `maintenance_interval` record expiry, bucket refresh and republishing.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.left {
            return;
        }
        let (stalled, expired) = self.requests.due(now);
        for Stalled {
            lookup,
            path,
            expect,
        } in stalled
        {
            if let Some(c) = self
                .lookups
                .get_mut(&lookup)
                .and_then(|l| expect.and_then(|id| l.cand_mut(path, &id)))
                && c.state == CandState::Waiting
            {
                c.state = CandState::Stalled;
            }
            self.step_lookup(now, lookup);
        }
        for txid in expired {
            let Some(mut p) = self.requests.remove(txid) else {
                continue;
            };
            let retry =
                !matches!(p.purpose, Purpose::Lookup { .. }) && p.tries <= self.config.retries;
            if retry {
                p.retry(now, self.config.request_timeout);
                let payload = match p.fixed_len {
                    Some(len) if !self.validation.is_validated(p.to, now) => {
                        with_padding(&p.payload, len)
                    }
                    _ => self.validation.dress(p.to, &p.payload, now),
                };
                self.queue(Transmit::new(p.to, payload));
                self.requests.insert(txid, p);
                continue;
            }
            self.request_failed(now, p, true);
        }
        // Value lookups whose quorum waited long enough for a second path.
        self.ripen_lookups(now);
        if now >= self.next_maintenance {
            self.next_maintenance = now + self.config.maintenance_interval;
            self.maintain(now);
        }
    }

    /// A request timed out (`count` against the contact in the table) or was
    /// answered by an impostor: fail what waited for it.
    fn request_failed(&mut self, now: Instant, p: Pending, count: bool) {
        if count && let Some(id) = p.expect {
            self.table.record_failure(&id, now);
        }
        {
            match p.purpose {
                Purpose::Lookup { lookup, path } => {
                    if let Some(c) = self
                        .lookups
                        .get_mut(&lookup)
                        .and_then(|l| p.expect.and_then(|id| l.cand_mut(path, &id)))
                    {
                        c.state = CandState::Failed;
                    }
                    self.step_lookup(now, lookup);
                }
                Purpose::Store { op } => self.store_done(op, false),
                Purpose::Ping => {}
                Purpose::Bootstrap => {
                    self.bootstrap_pending = self.bootstrap_pending.saturating_sub(1);
                    if self.bootstrap_pending == 0
                        && self.joining
                        && !self.lookups.values().any(|l| l.kind == LookupKind::Join)
                    {
                        if self.table.is_empty() && self.bootstrap_found.is_empty() {
                            self.joining = false;
                            self.push_event(Event::BootstrapFailed);
                        } else {
                            let _ = self.start_join(now);
                        }
                    }
                }
            }
        }
    }

    /// Every `maintenance_interval`: expiry, republishing, re-replication and
    /// bucket refresh.
    fn maintain(&mut self, now: Instant) {
        let secs = unix_secs(self.wall(now));
        self.store.expire(secs);
        self.published.expire(secs);
        self.words.expire(secs);
        self.rate.forget_idle(now);
        self.proven.expire(now);
        self.republish_due(now);
        self.replicate_due_records(now);
        // Refresh buckets nobody looked into for a while.
        if let Some(before) = now.checked_sub(self.config.refresh_interval) {
            let stale = self.table.stale_levels(before);
            self.refresh_levels(now, stale.into_iter().take(self.config.max_refreshes));
        }
    }

    /// The next datagram to send.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Node::handle_timeout`] should next be called (`None` after leaving).
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.left {
            return None;
        }
        // Requests from their timer table; value lookups are at most `max_lookups`.
        let t = [self.requests.next_timeout(), self.next_ripe()]
            .into_iter()
            .flatten()
            .fold(self.next_maintenance, Instant::min);
        Some(t)
    }
}

// The Global Index node as a datagram core: it takes Chorus datagrams of type
// `Index`.
chorus_framing::datagram_core! {
    impl for Node {
        type Event = Event;
        type Error = Error;
        fn accepts(&self, _local, _from, bytes) {
            Self::accepts(bytes)
        }
        fn handle_datagram(&mut self, now, _local, from, bytes) {
            self.handle_input(now, from, bytes)
        }
    }
}

#[cfg(test)]
mod tests;

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
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic
    )
)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use chorus_crypto::cert::NodeId;
use chorus_framing::{Entropy, Transmit};

use crate::error::{Error, Limit, UsageError, Violation};
use crate::id::{closer, distance, random_in_bucket, user_key, word_key};
use crate::message::{
    Body, COOKIE_LEN, Contact, MAX_NODES, Message, NONCE_LEN, possession_message, with_cookie,
    with_padding,
};
use crate::rate::{GlobalBudget, RateLimiter};
use crate::record::{PresenceRecord, Signer, Verifier, unix_secs};
use crate::table::{Insert, RoutingTable, TableConfig};

/// The default network id: "CHOR".
pub const DEFAULT_NETWORK: u32 = 0x4348_4f52;

/// Node configuration. Every field's bound is checked by [`Node::new`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Config {
    /// Separates independent index networks. Default [`DEFAULT_NETWORK`].
    pub network: u32,
    /// Routing table sizes. Default: Chorus's wide top buckets
    /// ([`TableConfig::default`]); [`TableConfig::kademlia`] for the baseline.
    pub table: TableConfig,
    /// Replication factor k: records live on the k closest nodes, lookups converge on
    /// the k closest. Default 20; 1-20.
    pub replication: usize,
    /// Requests in flight per lookup path. Default 3; 1-16.
    pub alpha: usize,
    /// Node-disjoint lookup paths (S/Kademlia). Default 2; 1-8.
    pub disjoint_paths: usize,
    /// Distinct holders whose records a value lookup waits for before it returns the
    /// newest, on as many distinct paths as there are (guards against attackers
    /// replaying a stale version). Default 2; 1-8.
    pub value_quorum: usize,
    /// After this long without an answer a request stops counting against `alpha`.
    /// Default 250 ms.
    pub stall_timeout: Duration,
    /// After this long without an answer a request has failed. Default 1 s.
    pub request_timeout: Duration,
    /// Retries of Store, Ping and bootstrap requests. Default 1; at most 5.
    pub retries: u8,
    /// How often expiry, bucket refresh and republishing run. Default 60 s.
    pub maintenance_interval: Duration,
    /// A bucket not looked up for this long is refreshed. Default 1 hour.
    pub refresh_interval: Duration,
    /// Records this node publishes are republished this often. Default 1 hour.
    pub republish_interval: Duration,
    /// Records this node holds for others are re-replicated (looked up and stored on
    /// the current `replication` closest nodes) this often, plus a random 0-25 %
    /// jitter; a record stored here again by someone else (the publisher's or
    /// another holder's republish) restarts its timer, so a record is usually
    /// re-replicated by one holder per interval. Default 1 hour; at most 30 days.
    pub replicate_interval: Duration,
    /// Most records re-replicated per maintenance round (each costs a lookup and up
    /// to `replication` stores); the rest wait for the next round. At most half of
    /// `max_lookups` is used for it. Default 8; 0 turns holder-side replication off.
    pub max_replications: usize,
    /// The longest lifetime (expiry minus issue time) a record may claim. Default
    /// 72 hours (records outlive the user's last login by this much).
    pub max_record_lifetime: Duration,
    /// Records stored for other nodes. Default 100,000; at least 1.
    pub max_records: usize,
    /// Records one peer may have stored here. Default 1,024; at least 1.
    pub max_records_per_peer: usize,
    /// Lookups running at once (including internal ones). Default 64; 1-4,096.
    pub max_lookups: usize,
    /// Requests in flight. Default 1,024; at least 16.
    pub max_pending: usize,
    /// Datagrams and events queued for the caller before new ones are dropped.
    /// Default 4,096.
    pub max_queue: usize,
    /// Requests per second a source IP may send. Default 200.
    pub rate_limit: f32,
    /// Requests a source IP may send in a burst. Default 400.
    pub rate_burst: f32,
    /// Source IPs tracked by the rate limiter. Default 8,192.
    pub max_rate_peers: usize,
    /// Refresh lookups started per maintenance round. Default 2.
    pub max_refreshes: usize,
    /// Whether [`Node::publish`] also adds the record to the search entries of each
    /// display-name word (one more lookup per word, at most 8). Default `true`.
    pub publish_words: bool,
    /// Search entries kept per word (newest first). Default 64; 1-1,024.
    pub max_entries_per_word: usize,
    /// Search entries kept in all. Default 100,000; at least 1.
    pub max_word_entries: usize,
    /// Rate-limit tokens a search request costs (a plain request costs 1). Default 5.
    pub search_cost: f32,
    /// Holders a search waits for before it returns. Default 3; 1-8.
    pub search_holders: usize,
    /// Most results a search returns. Default 32; 1-1,024.
    pub max_search_results: usize,
    /// Verified node certificates remembered (by SHA-256), so a known sender costs a
    /// hash instead of an RSA verification. Default 1,024; 0 disables the cache.
    pub cert_cache: usize,
    /// How long a verified certificate is trusted without checking it again (a
    /// revoked or expired certificate is accepted at most this long); also how long
    /// a contact that proved possession of its key stays proven outside the routing
    /// table. Default 600 s.
    pub cert_cache_ttl: Duration,
    /// Contacts (id and address) remembered as having proved possession of their
    /// certified key, besides those in the routing table. Default 4,096; at least 16.
    pub max_verified: usize,
    /// Proofs of possession this node made, remembered by requester and nonce so a
    /// repeated challenge costs no second signature. Default 256; at least 1.
    pub proof_cache: usize,
    /// Rate-limit tokens a request carrying a possession challenge costs (answering
    /// it may cost an RSA signature). Default 10.
    pub proof_cost: f32,
    /// Proofs of possession this node signs per second, all requesters together (a
    /// token bucket: the per-IP rate limit alone lets many sources, or spoofed ones,
    /// make a node sign without bound). A request whose proof would exceed it is
    /// dropped unanswered (as if lost: the requester retries or moves on; an answer
    /// without the proof would be taken for an impostor's). Sources that have not
    /// proven their address may use only the upper half of the bucket, so they
    /// cannot starve known peers. Default 50 per second (about 2.5 % of a core for
    /// RSA-2048); at least 0.01, at most 100,000.
    pub proof_rate: f32,
    /// Signatures the proof budget allows in a burst (a newcomer is challenged by
    /// most nodes its join lookups reach, within a second or two). Default 400
    /// (0.2 s of RSA-2048); at least 2, at most 1,000,000.
    pub proof_burst: f32,
    /// Signature checks this node makes per second for requests, all senders
    /// together: a sender certificate not in the certificate cache, and each record a
    /// `Store` or `StoreWord` carries (a token bucket, as `proof_rate`: padded
    /// requests from many sources, or spoofed ones, each with a certificate never
    /// seen, would otherwise cost an RSA verification each without bound). A request
    /// beyond it is dropped unanswered; a source that has not proven its address gets
    /// a cookie instead (with it, it may use the reserved lower half of the bucket).
    /// Default 2,000 per second (RSA-2048 verification costs about 30 us: 6 % of a
    /// core); at least 1, at most 1,000,000.
    pub verify_rate: f32,
    /// Signature checks the verification budget allows in a burst. Default 4,000; at
    /// least 2, at most 10,000,000.
    pub verify_burst: f32,
    /// How long an address-validation cookie (return routability, RFC 9000 §8.1)
    /// stays good: the key that makes cookies is drawn anew from the entropy source
    /// every `cookie_lifetime`, and cookies made with the current or the previous
    /// key are accepted (so a cookie lasts between one and two lifetimes). Also how
    /// long a requester reuses a cookie it received, and how long an address that
    /// answered one of our requests counts as validated. Default 600 s; 1 s to 1 day.
    pub cookie_lifetime: Duration,
    /// Addresses remembered as validated (they answered one of our requests) and,
    /// separately, cookies remembered from responders (one per address). Overflow:
    /// expired entries are dropped, else an arbitrary one (which costs that address
    /// one cookie round trip). Default 4,096 each; at least 16.
    pub max_validated: usize,
    /// A request to an address we hold no cookie for is padded to at least this
    /// many bytes (as QUIC pads Initial packets to 1,200, RFC 9000 §14.1), so the
    /// responder may answer it in full without sending more than it received. An
    /// answer that would not fit is cut to the closest contacts that fit, or
    /// replaced by a `Cookie` (one more round trip). Default 1,200 bytes; 0 turns
    /// padding off; at most 4,096 (and at most 2,048 bytes of padding are added).
    pub pad_requests_to: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            network: DEFAULT_NETWORK,
            table: TableConfig::default(),
            replication: 20,
            alpha: 3,
            disjoint_paths: 2,
            value_quorum: 2,
            stall_timeout: Duration::from_millis(250),
            request_timeout: Duration::from_secs(1),
            retries: 1,
            maintenance_interval: Duration::from_secs(60),
            refresh_interval: Duration::from_secs(3600),
            republish_interval: Duration::from_secs(3600),
            replicate_interval: Duration::from_secs(3600),
            max_replications: 8,
            max_record_lifetime: Duration::from_secs(72 * 3600),
            max_records: 100_000,
            max_records_per_peer: 1024,
            max_lookups: 64,
            max_pending: 1024,
            max_queue: 4096,
            rate_limit: 200.0,
            rate_burst: 400.0,
            max_rate_peers: 8192,
            max_refreshes: 2,
            publish_words: true,
            max_entries_per_word: 64,
            max_word_entries: 100_000,
            search_cost: 5.0,
            search_holders: 3,
            max_search_results: 32,
            cert_cache: 1024,
            cert_cache_ttl: Duration::from_secs(600),
            max_verified: 4096,
            proof_cache: 256,
            proof_cost: 10.0,
            proof_rate: 50.0,
            proof_burst: 400.0,
            verify_rate: 2000.0,
            verify_burst: 4000.0,
            cookie_lifetime: Duration::from_secs(600),
            max_validated: 4096,
            pad_requests_to: 1200,
        }
    }
}

impl Config {
    /// Plain Kademlia as published: k = 20, alpha = 3, one path, no wide buckets,
    /// the first record found wins.
    #[must_use]
    pub fn kademlia() -> Self {
        Self {
            table: TableConfig::kademlia(20),
            disjoint_paths: 1,
            value_quorum: 1,
            ..Self::default()
        }
    }

    fn validate(&self) -> Result<(), &'static str> {
        self.table.validate()?;
        let day = Duration::from_secs(86_400);
        let checks: [(bool, &'static str); 19] = [
            (
                (0.01..=100_000.0).contains(&self.proof_rate)
                    && (2.0..=1_000_000.0).contains(&self.proof_burst),
                "proof_rate must be 0.01-100000 per second and proof_burst 2-1000000",
            ),
            (
                (1.0..=1_000_000.0).contains(&self.verify_rate)
                    && (2.0..=10_000_000.0).contains(&self.verify_burst),
                "verify_rate must be 1-1000000 per second and verify_burst 2-10000000",
            ),
            (
                (Duration::from_secs(1)..=day).contains(&self.cookie_lifetime)
                    && self.max_validated >= 16
                    && self.pad_requests_to <= 4096,
                "cookie_lifetime must be 1 s to a day, max_validated at least 16 and \
                 pad_requests_to at most 4096",
            ),
            (
                self.max_verified >= 16 && self.proof_cache >= 1 && self.proof_cost >= 1.0,
                "max_verified must be at least 16, proof_cache at least 1, proof_cost at \
                 least 1",
            ),
            (
                self.request_timeout <= day && self.maintenance_interval <= day,
                "request_timeout and maintenance_interval must be at most a day",
            ),
            (
                self.refresh_interval <= 30 * day
                    && self.republish_interval <= 30 * day
                    && self.replicate_interval <= 30 * day
                    && !self.replicate_interval.is_zero()
                    && self.max_record_lifetime <= 365 * day
                    && self.cert_cache_ttl <= day,
                "refresh, republish and replicate intervals positive and at most 30 days, \
                 record lifetime at most a year, cert_cache_ttl at most a day",
            ),
            (
                (1..=1024).contains(&self.max_entries_per_word) && self.max_word_entries >= 1,
                "max_entries_per_word must be 1-1024 and max_word_entries at least 1",
            ),
            (
                (1..=8).contains(&self.search_holders),
                "search_holders must be 1-8",
            ),
            (
                (1..=1024).contains(&self.max_search_results) && self.search_cost >= 1.0,
                "max_search_results must be 1-1024 and search_cost at least 1",
            ),
            (
                (1..=MAX_NODES).contains(&self.replication),
                "replication must be 1-20",
            ),
            ((1..=16).contains(&self.alpha), "alpha must be 1-16"),
            (
                (1..=8).contains(&self.disjoint_paths),
                "disjoint_paths must be 1-8",
            ),
            (
                (1..=8).contains(&self.value_quorum),
                "value_quorum must be 1-8",
            ),
            (
                !self.stall_timeout.is_zero() && self.stall_timeout <= self.request_timeout,
                "stall_timeout must be positive and at most request_timeout",
            ),
            (self.retries <= 5, "retries must be at most 5"),
            (
                !self.maintenance_interval.is_zero(),
                "maintenance_interval must be positive",
            ),
            (
                self.max_records >= 1 && self.max_records_per_peer >= 1,
                "record bounds must be at least 1",
            ),
            (
                (1..=4096).contains(&self.max_lookups) && self.max_pending >= 16,
                "max_lookups must be 1-4096 and max_pending at least 16",
            ),
            (
                self.rate_limit > 0.0 && self.rate_burst >= 1.0 && self.max_rate_peers >= 1,
                "rate limits must be positive",
            ),
        ];
        checks
            .into_iter()
            .find_map(|(ok, why)| (!ok).then_some(why))
            .map_or(Ok(()), Err)
    }
}

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LookupKind {
    FindNode,
    FindValue,
    Publish,
    Refresh,
    Replicate,
    Join,
    Search,
    PublishWord,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CandState {
    Fresh,
    Waiting,
    Stalled,
    Done,
    Failed,
}

#[derive(Debug, Clone)]
struct Cand {
    contact: Contact,
    depth: u32,
    state: CandState,
}

#[derive(Debug, Clone, Default)]
struct Path {
    cands: Vec<Cand>,
}

#[derive(Debug)]
struct Lookup {
    kind: LookupKind,
    target: NodeId,
    paths: Vec<Path>,
    seen: BTreeSet<NodeId>,
    started: Instant,
    messages: u32,
    best: Option<PresenceRecord>,
    holders: usize,
    /// Bit i: path i found a holder.
    holder_paths: u8,
    first_value: Option<(Instant, u32)>,
    /// PublishWord: the user key of the published record.
    subject: Option<NodeId>,
    /// Search: the query words (lowercase).
    query: Vec<String>,
    /// Search: results so far, by username.
    results: BTreeMap<String, PresenceRecord>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Lookup { lookup: u64, path: usize },
    Store { op: Option<u64> },
    Ping,
    Bootstrap,
}

#[derive(Debug)]
struct Pending {
    to: SocketAddr,
    expect: Option<NodeId>,
    deadline: Instant,
    stall_at: Option<Instant>,
    purpose: Purpose,
    payload: Bytes,
    tries: u8,
    /// The possession challenge the request carried, if the peer was not proven.
    nonce: Option<[u8; NONCE_LEN]>,
    /// Whether the request was sent again with a cookie the peer asked us to echo
    /// (once per request: a peer that keeps asking is left to time out).
    cookie_echoed: bool,
    /// A challenge to an address that has not proven it receives there: sent
    /// (and retried) padded to at most this length and without a cookie, so it
    /// stays within what that address sent us. `None`: dressed as usual.
    fixed_len: Option<usize>,
}

#[derive(Debug)]
struct Stored {
    record: PresenceRecord,
    bytes: Bytes,
    from: Option<NodeId>,
    /// When this holder re-replicates the record (presence records only).
    due: Instant,
}

#[derive(Debug)]
struct Published {
    record: PresenceRecord,
    next: Instant,
}

#[derive(Debug)]
struct StoreOp {
    username: String,
    acked: usize,
    outstanding: usize,
}

/// An answer being prepared (owned, so its size can be checked before it is sent).
enum Reply {
    Pong,
    Nodes(Vec<Contact>),
    Value {
        record: Option<Bytes>,
        records: Vec<Bytes>,
        nodes: Vec<Contact>,
    },
    StoreAck(bool),
}

impl Reply {
    /// Drops the farthest contact; `false` if there was none.
    fn pop_contact(&mut self) -> bool {
        match self {
            Self::Nodes(nodes) | Self::Value { nodes, .. } => nodes.pop().is_some(),
            Self::Pong | Self::StoreAck(_) => false,
        }
    }
}

/// The keys of address-validation cookies: the current window's and the previous
/// one's, each drawn from the entropy source when its window starts.
struct CookieKeys {
    window: u64,
    current: ring::hmac::Key,
    previous: Option<ring::hmac::Key>,
}

impl CookieKeys {
    fn new(entropy: &mut dyn Entropy, window: u64) -> Result<Self, Error> {
        Ok(Self {
            window,
            current: Self::draw(entropy)?,
            previous: None,
        })
    }

    fn draw(entropy: &mut dyn Entropy) -> Result<ring::hmac::Key, Error> {
        let mut secret = [0u8; 32];
        entropy.fill(&mut secret)?;
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secret);
        secret.fill(0);
        Ok(key)
    }

    /// The cookie `key` makes for `addr`: HMAC-SHA256 over the address, truncated.
    fn make(key: &ring::hmac::Key, addr: SocketAddr) -> [u8; COOKIE_LEN] {
        let mut ctx = ring::hmac::Context::with_key(key);
        match addr.ip() {
            std::net::IpAddr::V4(ip) => {
                ctx.update(&[4]);
                ctx.update(&ip.octets());
            }
            std::net::IpAddr::V6(ip) => {
                ctx.update(&[6]);
                ctx.update(&ip.octets());
            }
        }
        ctx.update(&addr.port().to_be_bytes());
        let mut c = [0u8; COOKIE_LEN];
        for (d, s) in c.iter_mut().zip(ctx.sign().as_ref()) {
            *d = *s;
        }
        c
    }
}

/// A Global Index node. See the [module documentation](self) for the run loop.
pub struct Node {
    config: Config,
    cert: Bytes,
    id: NodeId,
    verifier: Arc<dyn Verifier>,
    signer: Arc<dyn Signer>,
    entropy: Box<dyn Entropy>,
    /// Keys the possession challenges (nonces) this node sends.
    challenge_secret: [u8; 32],
    /// Contacts that proved possession of their key: id -> (address, when).
    verified: BTreeMap<NodeId, (SocketAddr, Instant)>,
    /// Proofs made for (requester, nonce), oldest first for eviction.
    proofs: BTreeMap<(NodeId, [u8; NONCE_LEN]), Bytes>,
    proof_order: VecDeque<(NodeId, [u8; NONCE_LEN])>,
    /// The global proof budget (`proof_rate`).
    proof_tokens: GlobalBudget,
    /// The global budget of signature checks for requests (`verify_rate`).
    verify_tokens: GlobalBudget,
    /// The length of our signatures (to know whether an answer with a proof fits
    /// before signing it).
    proof_len: usize,
    /// Keys of the address-validation cookies we hand out.
    cookie_keys: CookieKeys,
    /// Addresses that answered one of our requests (so they receive there): when.
    validated: BTreeMap<SocketAddr, Instant>,
    /// Cookies responders gave us for our address: responder -> (cookie, when).
    cookies: BTreeMap<SocketAddr, ([u8; COOKIE_LEN], Instant)>,
    anchor: (Instant, SystemTime),
    table: RoutingTable,
    store: BTreeMap<NodeId, Stored>,
    words: BTreeMap<NodeId, Vec<Stored>>,
    word_entries: usize,
    certs: BTreeMap<[u8; 32], (NodeId, Instant)>,
    per_peer: BTreeMap<NodeId, usize>,
    published: BTreeMap<NodeId, Published>,
    pending: BTreeMap<u64, Pending>,
    lookups: BTreeMap<u64, Lookup>,
    store_ops: BTreeMap<u64, StoreOp>,
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
            .field("pending", &self.pending.len())
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
        let (proof_burst, verify_burst) = (config.proof_burst, config.verify_burst);
        let id = verifier.verify_node(&identity.cert, wall)?;
        let mut challenge_secret = [0u8; 32];
        entropy.fill(&mut challenge_secret)?;
        // A key that does not match the certificate would fail every challenge.
        let probe = possession_message(&[0; NONCE_LEN], &id);
        let sig = identity.key.sign(&probe)?;
        verifier.verify_possession(&identity.cert, &probe, &sig, wall)?;
        let cookie_keys = CookieKeys::new(&mut *entropy, 0)?;
        let table =
            RoutingTable::new(id, config.table.clone()).map_err(UsageError::InvalidConfig)?;
        let rate = RateLimiter::new(config.rate_limit, config.rate_burst, config.max_rate_peers);
        let next_maintenance = now + config.maintenance_interval;
        Ok(Self {
            config,
            cert: identity.cert,
            id,
            verifier,
            signer: identity.key,
            entropy,
            challenge_secret,
            verified: BTreeMap::new(),
            proofs: BTreeMap::new(),
            proof_order: VecDeque::new(),
            proof_tokens: GlobalBudget::new(proof_burst, now),
            verify_tokens: GlobalBudget::new(verify_burst, now),
            proof_len: sig.len(),
            cookie_keys,
            validated: BTreeMap::new(),
            cookies: BTreeMap::new(),
            anchor: (now, wall),
            table,
            store: BTreeMap::new(),
            words: BTreeMap::new(),
            word_entries: 0,
            certs: BTreeMap::new(),
            per_peer: BTreeMap::new(),
            published: BTreeMap::new(),
            pending: BTreeMap::new(),
            lookups: BTreeMap::new(),
            store_ops: BTreeMap::new(),
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
        let records: usize = self
            .store
            .values()
            .map(|s| {
                96 + size_of::<Stored>()
                    + s.bytes.len()
                    + s.record.username.len()
                    + s.record.display_name.len()
                    + 32 * (s.record.super_nodes.len() + s.record.candidates.len())
            })
            .sum();
        size_of::<Self>()
            + self.table.memory_bytes()
            + records
            + self
                .words
                .values()
                .map(|v| {
                    64 + v
                        .iter()
                        .map(|s| 96 + size_of::<Stored>() + s.bytes.len())
                        .sum::<usize>()
                })
                .sum::<usize>()
            + self.certs.len() * 96
            + self.verified.len() * 96
            + self.validated.len() * 64
            + self.cookies.len() * 80
            + self.proofs.values().map(|p| 128 + p.len()).sum::<usize>()
            + self.per_peer.len() * 64
            + self.rate.memory_bytes()
            + self.pending.len() * (64 + size_of::<Pending>())
            + self
                .lookups
                .values()
                .map(|l| {
                    size_of::<Lookup>()
                        + l.seen.len() * 48
                        + l.paths
                            .iter()
                            .map(|p| p.cands.capacity() * size_of::<Cand>())
                            .sum::<usize>()
                })
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
    /// [`Limit::TooManyLookups`], [`UsageError::Left`].
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
    /// [`Limit::TooManyLookups`], [`UsageError::Left`].
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
    /// equal or newer version is already published here, [`Limit::TooManyLookups`],
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

    /// Starts one lookup per display-name word of the record published under `key`,
    /// to store it among that word's search entries.
    fn publish_words(&mut self, now: Instant, key: NodeId, words: &[String]) {
        if !self.config.publish_words {
            return;
        }
        for w in words {
            let started = self.start_lookup_with(
                now,
                LookupKind::PublishWord,
                word_key(w),
                &[],
                Some(key),
                Vec::new(),
            );
            if started.is_err() {
                break;
            }
        }
    }

    /// Searches users by display-name words: looks up the entries of the first word
    /// and keeps the records whose display name has every word. Ends with
    /// [`Event::Lookup`] whose `results` are the matches.
    ///
    /// # Errors
    /// [`UsageError::InvalidRecord`] if the query has no word of 2-32 letters or
    /// digits; [`Limit::TooManyLookups`], [`UsageError::Left`].
    pub fn search(&mut self, now: Instant, query: &str) -> Result<LookupId, Error> {
        let probe = PresenceRecord {
            username: String::new(),
            display_name: query.chars().take(256).collect(),
            user_cert: Bytes::new(),
            super_nodes: Vec::new(),
            candidates: Vec::new(),
            nat_class: crate::record::NatClass::Unknown,
            version: 0,
            issued_at: 0,
            expires_at: 0,
            signature: Bytes::new(),
        };
        let words = probe.words();
        let Some(first) = words.first() else {
            return Err(UsageError::InvalidRecord(
                "a search needs a word of 2-32 letters or digits",
            )
            .into());
        };
        let key = word_key(first);
        self.start_lookup_with(now, LookupKind::Search, key, &[], None, words)
            .map(LookupId)
    }

    /// Stops republishing `username`'s record (it stays in the index until it
    /// expires or a newer version replaces it).
    pub fn withdraw(&mut self, username: &str) {
        self.published.remove(&user_key(username));
    }

    /// Leaves the index gracefully: hands each stored record to the next node in
    /// line for it, tells the nodes closest to us, and stops. Queued datagrams should
    /// still be sent.
    pub fn leave(&mut self, _now: Instant) {
        if self.left {
            return;
        }
        let stored: Vec<(NodeId, Bytes)> = self
            .store
            .iter()
            .map(|(k, s)| (*k, s.bytes.clone()))
            .collect();
        for (key, bytes) in stored {
            let own = self.id;
            let heirs: Vec<Contact> = self
                .table
                .closest(&key, self.config.replication)
                .into_iter()
                .filter(|c| closer(&key, &own, &c.id))
                .take(2)
                .collect();
            for c in heirs {
                self.send_oneway(c.addr, Body::Store { record: &bytes });
            }
        }
        let entries: Vec<(NodeId, Bytes)> = self
            .words
            .iter()
            .flat_map(|(k, v)| v.iter().map(|s| (*k, s.bytes.clone())))
            .collect();
        for (key, bytes) in entries {
            let own = self.id;
            if let Some(heir) = self
                .table
                .closest(&key, self.config.replication)
                .into_iter()
                .find(|c| closer(&key, &own, &c.id))
            {
                self.send_oneway(
                    heir.addr,
                    Body::StoreWord {
                        key,
                        record: &bytes,
                    },
                );
            }
        }
        for c in self.table.closest(&self.id, self.config.replication) {
            self.send_oneway(c.addr, Body::Leave);
        }
        self.left = true;
        self.pending.clear();
        self.lookups.clear();
        self.store_ops.clear();
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
    /// record, unsolicited response, wrong network), [`Limit::RateLimited`],
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
        let cost = match &msg.body {
            Body::FindValue { key } if self.words.contains_key(key) => self.config.search_cost,
            _ => 1.0,
        } + if msg.nonce.is_some() {
            self.config.proof_cost
        } else {
            0.0
        };
        if !self.rate.allow(from.ip(), now, cost) {
            return Err(Limit::RateLimited.into());
        }
        self.rotate_cookie_keys(now);
        // Return routability (RFC 9000 §8.1, RFC 6347 §4.2.1): a source that has not
        // shown it receives at its address (a cookie of ours, an answer to one of
        // our requests, a proven contact there) may be spoofed, so it gets nothing
        // larger than what it sent.
        let mut validated = msg.cookie.is_some_and(|c| self.cookie_valid(from, &c))
            || self
                .validated
                .get(&from)
                .is_some_and(|at| now < *at + self.config.cookie_lifetime);
        let limit = bytes.len();
        if !validated && !matches!(msg.body, Body::Leave) && limit < self.min_answer_len() {
            // No answer fits: ask for the cookie before spending a certificate check
            // on an address that may be spoofed.
            self.send_cookie(from, msg.txid, limit);
            return Ok(());
        }
        // Records a store request carries are checked too: one token each.
        let checks = match msg.body {
            Body::Store { .. } | Body::StoreWord { .. } => 1,
            _ => 0,
        };
        let sender = match self.verify_sender(msg.sender_cert, now, Some(!validated))? {
            Some(id) if (0..checks).all(|_| self.take_verify_token(now, !validated)) => id,
            _ if validated => return Err(Limit::VerifyBudget.into()),
            _ => {
                // It may come back with the cookie and use the reserved half.
                self.send_cookie(from, msg.txid, limit);
                return Ok(());
            }
        };
        if sender == self.id {
            return Err(Violation::FromSelf.into());
        }
        let contact = Contact {
            id: sender,
            addr: from,
        };
        if let Body::Leave = msg.body {
            // Only the contact at that address leaves: a node replaying the
            // certificate from elsewhere cannot evict its owner.
            if self
                .table
                .get(&sender)
                .is_some_and(|e| e.contact.addr == from)
            {
                self.table.remove(&sender, now);
            }
            return Ok(());
        }
        validated = validated || self.is_proven(&sender, from, now);
        // The answer first, without side effects or a signature, so that its size
        // can be checked against the request's.
        let mut reply = match msg.body {
            Body::Ping => Reply::Pong,
            Body::FindNode { target } => Reply::Nodes(self.closest_for(&target, &sender)),
            Body::FindValue { key } => {
                let record = self.store.get(&key).map(|s| s.bytes.clone());
                let mut entries: Vec<&Stored> = self
                    .words
                    .get(&key)
                    .map(|v| v.iter().collect())
                    .unwrap_or_default();
                // Newest first; as many as fit in one datagram's record list.
                entries.sort_by_key(|s| core::cmp::Reverse(s.record.issued_at));
                let mut records: Vec<Bytes> = Vec::new();
                let mut size = 0;
                for e in entries.into_iter().take(crate::message::MAX_RECORDS) {
                    if size + e.bytes.len() > 12_000 {
                        break;
                    }
                    size += e.bytes.len() + 2;
                    records.push(e.bytes.clone());
                }
                Reply::Value {
                    record,
                    records,
                    nodes: self.closest_for(&key, &sender),
                }
            }
            Body::Store { .. } | Body::StoreWord { .. } => Reply::StoreAck(false),
            // Responses were routed above; Leave returned.
            _ => return Ok(()),
        };
        let cookie = self.cookie_for(from);
        if !validated {
            let proof_len = msg.nonce.map_or(0, |nonce| {
                4 + self
                    .proofs
                    .get(&(sender, nonce))
                    .map_or(self.proof_len, Bytes::len)
            });
            let len = |r: &Reply| proof_len + self.reply(msg.txid, None, cookie, r).encoded_len();
            if len(&reply) > limit {
                // Cut the contact list (closest first) to fit; else only a cookie.
                while len(&reply) > limit && reply.pop_contact() {}
                if len(&reply) > limit {
                    self.send_cookie(from, msg.txid, limit);
                    return Ok(());
                }
                self.stats.truncated += 1;
            }
        }
        match msg.body {
            Body::Store { record } => {
                let stored = self
                    .accept_store(now, record, Some(sender))
                    .inspect_err(|e| self.penalize_forgery(e, from, &sender, now))?;
                reply = Reply::StoreAck(stored);
            }
            Body::StoreWord { key, record } => {
                let stored = self
                    .accept_word(now, key, record, Some(sender))
                    .inspect_err(|e| self.penalize_forgery(e, from, &sender, now))?;
                reply = Reply::StoreAck(stored);
            }
            _ => {}
        }
        let proof = match msg.nonce {
            None => None,
            Some(nonce) => {
                if let Some(p) = self.prove(now, sender, nonce, !validated)? {
                    Some(p)
                } else {
                    self.stats.proofs_refused += 1;
                    if validated {
                        // Dropped as if lost: the requester retries or moves on.
                        return Err(Limit::ProofBudget.into());
                    }
                    // It may come back with the cookie and use the reserved half.
                    self.send_cookie(from, msg.txid, limit);
                    return Ok(());
                }
            }
        };
        let payload = self
            .reply(msg.txid, proof.as_deref(), cookie, &reply)
            .to_bytes();
        if !validated && payload.len() > limit {
            // Unreachable by the check above unless a signature came out longer
            // than ours usually are; the bound holds regardless.
            self.send_cookie(from, msg.txid, limit);
            return Ok(());
        }
        let spare = (!validated).then(|| limit.saturating_sub(payload.len()));
        self.queue(Transmit::new(from, payload));
        // An unvalidated source is challenged only if the challenge fits in what
        // is left of its request; else when it comes back with the cookie.
        self.heard_from(contact, now, spare);
        Ok(())
    }

    /// The answer message for `reply`.
    fn reply<'a>(
        &'a self,
        txid: u64,
        proof: Option<&'a [u8]>,
        cookie: [u8; COOKIE_LEN],
        reply: &'a Reply,
    ) -> Message<'a> {
        Message {
            network: self.config.network,
            txid,
            sender_cert: &self.cert,
            nonce: None,
            proof,
            cookie: Some(cookie),
            padding: 0,
            body: match reply {
                Reply::Pong => Body::Pong,
                Reply::Nodes(nodes) => Body::Nodes {
                    nodes: nodes.clone(),
                },
                Reply::Value {
                    record,
                    records,
                    nodes,
                } => Body::Value {
                    record: record.as_deref(),
                    records: records.iter().map(|b| &b[..]).collect(),
                    nodes: nodes.clone(),
                },
                Reply::StoreAck(stored) => Body::StoreAck { stored: *stored },
            },
        }
    }

    /// The smallest answer we can give (a Pong without a proof, with a cookie).
    fn min_answer_len(&self) -> usize {
        16 + (4 + 1) + (4 + self.cert.len()) + (4 + COOKIE_LEN)
    }

    /// Answers request `txid` from an address that has not proven it receives there
    /// with a `Cookie` (41 bytes; RFC 9000 §8.1.2 Retry, RFC 6347 §4.2.1
    /// HelloVerifyRequest), if that is no larger than the request (`limit` bytes);
    /// else with nothing.
    fn send_cookie(&mut self, to: SocketAddr, txid: u64, limit: usize) {
        let payload = Message {
            network: self.config.network,
            txid,
            sender_cert: &[],
            nonce: None,
            proof: None,
            cookie: Some(self.cookie_for(to)),
            padding: 0,
            body: Body::Cookie,
        }
        .to_bytes();
        if payload.len() <= limit {
            self.stats.cookies_sent += 1;
            self.queue(Transmit::new(to, payload));
        }
    }

    /// Starts a new cookie window if `cookie_lifetime` has passed: a fresh key from
    /// the entropy source; the last window's key stays good for one more window.
    fn rotate_cookie_keys(&mut self, now: Instant) {
        let life = self.config.cookie_lifetime.as_millis().max(1);
        let window = now.saturating_duration_since(self.anchor.0).as_millis() / life;
        let window = u64::try_from(window).unwrap_or(u64::MAX);
        if window == self.cookie_keys.window {
            return;
        }
        // A failing entropy source keeps the current key (tried again next time).
        let Ok(key) = CookieKeys::draw(&mut *self.entropy) else {
            return;
        };
        let old = core::mem::replace(&mut self.cookie_keys.current, key);
        self.cookie_keys.previous = (window == self.cookie_keys.window + 1).then_some(old);
        self.cookie_keys.window = window;
    }

    /// The cookie we hand `addr` now.
    fn cookie_for(&self, addr: SocketAddr) -> [u8; COOKIE_LEN] {
        CookieKeys::make(&self.cookie_keys.current, addr)
    }

    /// Whether `cookie` is one we made for `addr` in this window or the last
    /// (compared in constant time).
    fn cookie_valid(&self, addr: SocketAddr, cookie: &[u8; COOKIE_LEN]) -> bool {
        let k = &self.cookie_keys;
        chorus_crypto::ct_eq(&CookieKeys::make(&k.current, addr), cookie)
            | k.previous
                .as_ref()
                .is_some_and(|p| chorus_crypto::ct_eq(&CookieKeys::make(p, addr), cookie))
    }

    /// A request as sent to `to`: with the cookie `to` gave us, if we hold a fresh
    /// one, else padded to `pad_requests_to` so that a full answer fits in it.
    fn dress(&self, to: SocketAddr, request: &Bytes, now: Instant) -> Bytes {
        match self.cookies.get(&to) {
            Some((c, at)) if now < *at + self.config.cookie_lifetime => with_cookie(request, c),
            _ if self.config.pad_requests_to > 0 => {
                with_padding(request, self.config.pad_requests_to)
            }
            _ => request.clone(),
        }
    }

    /// Takes a token from the global proof budget; a source that has not proven its
    /// address (`unvalidated`) only from the bucket's upper half.
    fn take_proof_token(&mut self, now: Instant, unvalidated: bool) -> bool {
        let (rate, burst) = (self.config.proof_rate, self.config.proof_burst);
        self.proof_tokens.take(now, rate, burst, unvalidated)
    }

    /// Takes a token from the global verification budget (as [`Self::take_proof_token`]);
    /// counts a refusal.
    fn take_verify_token(&mut self, now: Instant, unvalidated: bool) -> bool {
        let (rate, burst) = (self.config.verify_rate, self.config.verify_burst);
        let ok = self.verify_tokens.take(now, rate, burst, unvalidated);
        if !ok {
            self.stats.verifications_refused += 1;
        }
        ok
    }

    /// Our proof of key possession for `requester`'s `nonce`: signed once (RSA costs
    /// about 0.5 ms), then answered from a bounded cache. `None` if a signature is
    /// needed and the global budget has none left (for a source that has not proven
    /// its address, `unvalidated`, none in the bucket's upper half).
    fn prove(
        &mut self,
        now: Instant,
        requester: NodeId,
        nonce: [u8; NONCE_LEN],
        unvalidated: bool,
    ) -> Result<Option<Bytes>, Error> {
        if let Some(p) = self.proofs.get(&(requester, nonce)) {
            return Ok(Some(p.clone()));
        }
        if !self.take_proof_token(now, unvalidated) {
            return Ok(None);
        }
        let sig = self.signer.sign(&possession_message(&nonce, &requester))?;
        self.stats.proofs_signed += 1;
        while self.proofs.len() >= self.config.proof_cache {
            let Some(old) = self.proof_order.pop_front() else {
                break;
            };
            self.proofs.remove(&old);
        }
        self.proofs.insert((requester, nonce), sig.clone());
        self.proof_order.push_back((requester, nonce));
        Ok(Some(sig))
    }

    /// The nonce we challenge the node at `addr` with: a keyed hash of the address
    /// and a 10-minute window, so parallel requests to one peer share a nonce (and
    /// the peer signs once) while a proof made for another address is worthless.
    fn nonce_for(&self, addr: SocketAddr, now: Instant) -> [u8; NONCE_LEN] {
        let window = now.saturating_duration_since(self.anchor.0).as_secs() / 600;
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(&self.challenge_secret);
        match addr.ip() {
            std::net::IpAddr::V4(ip) => ctx.update(&ip.octets()),
            std::net::IpAddr::V6(ip) => ctx.update(&ip.octets()),
        }
        ctx.update(&addr.port().to_be_bytes());
        ctx.update(&window.to_be_bytes());
        let mut n = [0u8; NONCE_LEN];
        n.copy_from_slice(
            ctx.finish()
                .as_ref()
                .get(..NONCE_LEN)
                .unwrap_or(&[0; NONCE_LEN]),
        );
        n
    }

    /// Whether `id` at `addr` has proved possession of its key: it is in the routing
    /// table at that address (entries are proven before they are inserted, or added
    /// by the caller), or it proved it within `cert_cache_ttl`.
    fn is_proven(&self, id: &NodeId, addr: SocketAddr, now: Instant) -> bool {
        self.table.get(id).is_some_and(|e| e.contact.addr == addr)
            || self
                .verified
                .get(id)
                .is_some_and(|(a, at)| *a == addr && now < *at + self.config.cert_cache_ttl)
    }

    fn remember_proven(&mut self, contact: Contact, now: Instant) {
        if self.verified.len() >= self.config.max_verified
            && !self.verified.contains_key(&contact.id)
        {
            let ttl = self.config.cert_cache_ttl;
            self.verified.retain(|_, (_, at)| now < *at + ttl);
            if self.verified.len() >= self.config.max_verified {
                // Keys are hashes: the first one is an arbitrary victim.
                self.verified.pop_first();
            }
        }
        self.verified.insert(contact.id, (contact.addr, now));
    }

    /// A verified certificate sent us a request from `contact.addr`: refresh the
    /// contact if it is proven, else, if its bucket has room, challenge it (a Ping
    /// with a nonce) once; it enters the routing table when it answers with a valid
    /// proof. `spare`: for an address not validated, the bytes its request left
    /// after our answer; the challenge (unpadded, with its retries) must fit in it.
    fn heard_from(&mut self, contact: Contact, now: Instant, spare: Option<usize>) {
        if self.is_proven(&contact.id, contact.addr, now) {
            self.seen(contact, now);
            return;
        }
        if !self.table.has_room(&contact.id) {
            // It could only wait as a replacement: not worth a challenge (and maybe
            // a signature). Replacements also come from answers to our requests.
            return;
        }
        let mut fixed_len = None;
        if let Some(spare) = spare {
            let ping = 16 + (4 + 1) + (4 + self.cert.len()) + (4 + NONCE_LEN);
            let per_try = spare / (1 + usize::from(self.config.retries));
            if ping > per_try {
                // It is challenged when it comes back with our cookie.
                return;
            }
            // Padded so that its Pong (with a proof and a cookie, about as long as
            // ours, plus slack for a longer certificate) fits even if the challenge
            // overtakes our answer and finds us not yet validated there.
            let pong = 16 + (4 + 1) + (4 + self.cert.len()) + (4 + self.proof_len);
            fixed_len = Some(per_try.min(pong + 4 + COOKIE_LEN + 64));
        }
        let challenged = self
            .pending
            .values()
            .any(|p| p.to == contact.addr && p.purpose == Purpose::Ping);
        if !challenged {
            let _ = self.send_request_as(
                now,
                contact.addr,
                Some(contact.id),
                Body::Ping,
                Purpose::Ping,
                fixed_len,
            );
        }
    }

    /// The node id of a message's sender, from its certificate: found in the cache
    /// of certificates verified in the last `cert_cache_ttl` (keyed by the
    /// certificate's SHA-256), or verified (RSA in production). A request's check
    /// (`budget`: whether its source is unvalidated) is paid from the global
    /// verification budget; `None` when that is spent.
    fn verify_sender(
        &mut self,
        cert: &[u8],
        now: Instant,
        budget: Option<bool>,
    ) -> Result<Option<NodeId>, Violation> {
        let mut key = [0u8; 32];
        let cached = self.config.cert_cache > 0;
        if cached {
            key.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, cert).as_ref());
            if let Some(&(id, at)) = self.certs.get(&key)
                && now < at + self.config.cert_cache_ttl
            {
                return Ok(Some(id));
            }
        }
        if let Some(unvalidated) = budget
            && !self.take_verify_token(now, unvalidated)
        {
            return Ok(None);
        }
        self.stats.certs_verified += 1;
        let id = self.verifier.verify_node(cert, self.wall(now))?;
        if !cached {
            return Ok(Some(id));
        }
        let ttl = self.config.cert_cache_ttl;
        if self.certs.len() >= self.config.cert_cache {
            self.certs.retain(|_, (_, at)| now < *at + ttl);
            if self.certs.len() >= self.config.cert_cache {
                // Keys are hashes: the first one is an arbitrary victim.
                self.certs.pop_first();
            }
        }
        self.certs.insert(key, (id, now));
        Ok(Some(id))
    }

    fn closest_for(&self, target: &NodeId, requester: &NodeId) -> Vec<Contact> {
        let mut nodes = self.table.closest(target, self.config.replication + 1);
        nodes.retain(|c| c.id != *requester);
        nodes.truncate(self.config.replication.min(MAX_NODES));
        nodes
    }

    /// A verified node talked to us: refresh or add it, and hand it the records it
    /// should now hold.
    fn seen(&mut self, contact: Contact, now: Instant) {
        if self.table.insert(contact, now) == Insert::Added {
            self.hand_off(contact, now);
        }
    }

    /// Replication on join: for each record we hold, if `newcomer` is among the
    /// `replication` closest to its key and we are the closest holder we know of,
    /// send it the record. Bounded: looks at 128 records and sends at most 64 per
    /// newcomer.
    fn hand_off(&mut self, newcomer: Contact, now: Instant) {
        let k = self.config.replication;
        let mut sends = Vec::new();
        // Keys the newcomer may now be among the closest to share a long prefix
        // with its id, and keys sharing a prefix sit next to it in key order: look
        // at the 64 held keys on either side of its id, not at the whole store.
        let after = self.store.range(newcomer.id..).take(64);
        let before = self.store.range(..newcomer.id).rev().take(64);
        for (key, s) in after.chain(before) {
            if sends.len() == 64 {
                break;
            }
            if !closer(key, &newcomer.id, &self.id) {
                // Only nodes closer than us can have been missing from the set.
                continue;
            }
            let near = self.table.closest(key, k);
            let rank = near.iter().position(|c| c.id == newcomer.id);
            let we_are_first = near
                .iter()
                .filter(|c| c.id != newcomer.id)
                .all(|c| closer(key, &self.id, &c.id));
            if rank.is_some() && we_are_first {
                sends.push(s.bytes.clone());
            }
        }
        for bytes in sends {
            let body = Body::Store { record: &bytes };
            let _ = self.send_request(
                now,
                newcomer.addr,
                Some(newcomer.id),
                body,
                Purpose::Store { op: None },
            );
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
        if self.verified.get(id).is_some_and(|(a, _)| *a == from) {
            self.verified.remove(id);
        }
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

    /// Stores a record a peer sent (or we publish). `Ok(false)`: not stored because
    /// we hold a newer one.
    fn accept_store(
        &mut self,
        now: Instant,
        bytes: &[u8],
        from: Option<NodeId>,
    ) -> Result<bool, Error> {
        let record = PresenceRecord::decode(bytes)?;
        let key = record.key();
        let due = self.replicate_due(now);
        if let Some(held) = self.store.get_mut(&key) {
            if held.record == record {
                // Someone else replicated it just now: our turn can wait.
                held.due = held.due.max(due);
                return Ok(true);
            }
            if !record.supersedes(&held.record) {
                return Ok(false);
            }
        }
        self.check_record(&record, now)?;
        if let Some(peer) = from {
            let count = self.per_peer.get(&peer).copied().unwrap_or(0);
            let replacing_own = self.store.get(&key).is_some_and(|s| s.from == Some(peer));
            if !replacing_own && count >= self.config.max_records_per_peer {
                return Err(Limit::PeerStoreFull {
                    max: self.config.max_records_per_peer,
                }
                .into());
            }
        }
        if !self.store.contains_key(&key) && self.store.len() >= self.config.max_records {
            // Full: evict the record farthest from us if the new one is closer.
            let own = self.id;
            let farthest = self.store.keys().max_by_key(|k| distance(&own, k)).copied();
            match farthest {
                Some(f) if closer(&own, &key, &f) => self.remove_record(&f),
                _ => {
                    return Err(Limit::StoreFull {
                        max: self.config.max_records,
                    }
                    .into());
                }
            }
        }
        self.remove_record(&key);
        if let Some(peer) = from {
            *self.per_peer.entry(peer).or_insert(0) += 1;
        }
        self.store.insert(
            key,
            Stored {
                bytes: record.to_bytes(),
                record,
                from,
                due,
            },
        );
        Ok(true)
    }

    fn remove_record(&mut self, key: &NodeId) {
        if let Some(old) = self.store.remove(key)
            && let Some(peer) = old.from
            && let Some(c) = self.per_peer.get_mut(&peer)
        {
            *c -= 1;
            if *c == 0 {
                self.per_peer.remove(&peer);
            }
        }
    }

    fn handle_response(
        &mut self,
        now: Instant,
        from: SocketAddr,
        msg: Message<'_>,
    ) -> Result<(), Error> {
        let Some(p) = self.pending.get(&msg.txid) else {
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
        let Some(p) = self.pending.remove(&msg.txid) else {
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
            self.remember_proven(contact, now);
        }
        // It answered our transaction id at that address, so it receives there.
        self.remember_validated(from, now);
        if let Some(c) = msg.cookie {
            self.remember_cookie(from, c, now);
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
        self.remember_validated(from, now);
        self.remember_cookie(from, cookie, now);
        let (request_timeout, stall_timeout) =
            (self.config.request_timeout, self.config.stall_timeout);
        let Some(p) = self.pending.get_mut(&txid) else {
            return Err(Violation::Unsolicited.into());
        };
        if p.cookie_echoed {
            // A cookie for the echo of a cookie: the retry timer decides.
            return Ok(());
        }
        p.cookie_echoed = true;
        p.deadline = now + request_timeout;
        if p.stall_at.is_some() {
            p.stall_at = Some(now + stall_timeout);
        }
        let payload = with_cookie(&p.payload, &cookie);
        self.queue(Transmit::new(from, payload));
        Ok(())
    }

    /// Remembers that `addr` answered one of our requests (bounded by
    /// `max_validated`; expired entries go first, then an arbitrary one).
    fn remember_validated(&mut self, addr: SocketAddr, now: Instant) {
        let life = self.config.cookie_lifetime;
        bounded_insert(
            &mut self.validated,
            addr,
            now,
            self.config.max_validated,
            |at| now < *at + life,
        );
    }

    /// Remembers the cookie `addr` gave us, for our next requests to it.
    fn remember_cookie(&mut self, addr: SocketAddr, cookie: [u8; COOKIE_LEN], now: Instant) {
        let life = self.config.cookie_lifetime;
        bounded_insert(
            &mut self.cookies,
            addr,
            (cookie, now),
            self.config.max_validated,
            |(_, at)| now < *at + life,
        );
    }

    fn lookup_response(
        &mut self,
        now: Instant,
        lookup: u64,
        path: usize,
        sender: Contact,
        from: SocketAddr,
        body: &Body<'_>,
    ) {
        let own = self.id;
        let k = self.config.replication;
        let Some(l) = self.lookups.get_mut(&lookup) else {
            return;
        };
        let Some(p) = l.paths.get_mut(path) else {
            return;
        };
        let Some(depth) = p
            .cands
            .iter_mut()
            .find(|c| c.contact.id == sender.id)
            .map(|c| {
                c.state = CandState::Done;
                c.depth
            })
        else {
            return;
        };
        let (nodes, record, records) = match body {
            Body::Nodes { nodes } => (nodes.as_slice(), None, &[][..]),
            Body::Value {
                record,
                nodes,
                records,
            } => (nodes.as_slice(), *record, records.as_slice()),
            _ => (&[][..], None, &[][..]),
        };
        if l.kind == LookupKind::Search && !records.is_empty() {
            self.search_response(now, lookup, depth, sender, from, records);
        }
        let Some(l) = self.lookups.get_mut(&lookup) else {
            return;
        };
        if let (Some(bytes), LookupKind::FindValue) = (record, l.kind) {
            let target = l.target;
            let verdict = PresenceRecord::decode(bytes)
                .map_err(Error::from)
                .and_then(|r| {
                    if r.key() == target {
                        Ok(r)
                    } else {
                        Err(Violation::BadSignature.into())
                    }
                })
                .and_then(|r| self.check_record(&r, now).map(|()| r));
            match verdict {
                Ok(r) => {
                    let Some(l) = self.lookups.get_mut(&lookup) else {
                        return;
                    };
                    l.holders += 1;
                    l.holder_paths |= 1 << path.min(7);
                    if l.first_value.is_none() {
                        l.first_value = Some((now, depth));
                    }
                    if l.best.as_ref().is_none_or(|b| r.supersedes(b)) {
                        l.best = Some(r);
                    }
                }
                Err(Error::Protocol(Violation::Expired)) => {}
                Err(_) => {
                    // A record that does not verify: drop it and the node that sent it.
                    self.penalize(from, &sender.id, now);
                    if let Some(c) = self
                        .lookups
                        .get_mut(&lookup)
                        .and_then(|l| l.paths.get_mut(path))
                        .and_then(|p| p.cands.iter_mut().find(|c| c.contact.id == sender.id))
                    {
                        c.state = CandState::Failed;
                    }
                    return;
                }
            }
        }
        let Some(l) = self.lookups.get_mut(&lookup) else {
            return;
        };
        let target = l.target;
        let mut added = false;
        for c in nodes {
            if c.id == own || !l.seen.insert(c.id) {
                continue;
            }
            if let Some(p) = l.paths.get_mut(path) {
                p.cands.push(Cand {
                    contact: *c,
                    depth: depth.saturating_add(1),
                    state: CandState::Fresh,
                });
                added = true;
            }
        }
        if added && let Some(p) = l.paths.get_mut(path) {
            p.cands.sort_by_key(|c| distance(&target, &c.contact.id));
            // Bounded: drop the farthest never-queried candidates beyond 3k.
            let mut excess = p.cands.len().saturating_sub(3 * k);
            while excess > 0 {
                let Some(pos) = p.cands.iter().rposition(|c| c.state == CandState::Fresh) else {
                    break;
                };
                p.cands.remove(pos);
                excess -= 1;
            }
        }
    }

    /// Verifies the search entries a holder returned and merges them.
    fn search_response(
        &mut self,
        now: Instant,
        lookup: u64,
        depth: u32,
        sender: Contact,
        from: SocketAddr,
        records: &[&[u8]],
    ) {
        let Some(target) = self.lookups.get(&lookup).map(|l| l.target) else {
            return;
        };
        let mut good = Vec::new();
        let mut bad = false;
        for bytes in records {
            let verdict = PresenceRecord::decode(bytes)
                .map_err(Error::from)
                .and_then(|r| {
                    if r.words().iter().any(|w| word_key(w) == target) {
                        Ok(r)
                    } else {
                        Err(Violation::BadSignature.into())
                    }
                })
                .and_then(|r| self.check_record(&r, now).map(|()| r));
            match verdict {
                Ok(r) => good.push(r),
                Err(Error::Protocol(Violation::Expired)) => {}
                Err(_) => bad = true,
            }
        }
        if bad {
            self.penalize(from, &sender.id, now);
        }
        let Some(l) = self.lookups.get_mut(&lookup) else {
            return;
        };
        l.holders += 1;
        if l.first_value.is_none() {
            l.first_value = Some((now, depth));
        }
        for r in good {
            let newer = l
                .results
                .get(&r.username)
                .is_none_or(|held| r.supersedes(held));
            if newer {
                l.results.insert(r.username.clone(), r);
            }
        }
    }

    fn start_lookup(
        &mut self,
        now: Instant,
        kind: LookupKind,
        target: NodeId,
        extra: &[Contact],
    ) -> Result<u64, Error> {
        self.start_lookup_with(now, kind, target, extra, None, Vec::new())
    }

    fn start_lookup_with(
        &mut self,
        now: Instant,
        kind: LookupKind,
        target: NodeId,
        extra: &[Contact],
        subject: Option<NodeId>,
        query: Vec<String>,
    ) -> Result<u64, Error> {
        if self.left {
            return Err(UsageError::Left.into());
        }
        if self.lookups.len() >= self.config.max_lookups {
            return Err(Limit::TooManyLookups {
                max: self.config.max_lookups,
            }
            .into());
        }
        let k = self.config.replication;
        let d = self.config.disjoint_paths;
        let mut initial = self.table.closest(&target, k * d);
        for c in extra {
            if c.id != self.id && !initial.iter().any(|i| i.id == c.id) {
                initial.push(*c);
            }
        }
        initial.sort_by_key(|c| distance(&target, &c.id));
        let mut paths = vec![Path::default(); d];
        let mut seen = BTreeSet::new();
        for (i, c) in initial.into_iter().enumerate() {
            seen.insert(c.id);
            if let Some(p) = paths.get_mut(i % d) {
                p.cands.push(Cand {
                    contact: c,
                    depth: 1,
                    state: CandState::Fresh,
                });
            }
        }
        self.table.touch(&target, now);
        let id = self.next_id;
        self.next_id += 1;
        self.lookups.insert(
            id,
            Lookup {
                kind,
                target,
                paths,
                seen,
                started: now,
                messages: 0,
                best: None,
                holders: 0,
                holder_paths: 0,
                first_value: None,
                subject,
                query,
                results: BTreeMap::new(),
            },
        );
        self.step_lookup(now, id);
        Ok(id)
    }

    /// Sends what each path may send, and finishes the lookup when it is done.
    fn step_lookup(&mut self, now: Instant, id: u64) {
        let k = self.config.replication;
        let alpha = self.config.alpha;
        let Some(mut l) = self.lookups.remove(&id) else {
            return;
        };
        let value_done = match l.kind {
            // A quorum counts holders on distinct paths where there are several: a
            // stale record replayed by attackers on one path cannot win alone.
            // After `stall_timeout` a quorum on one path is accepted too, so a path
            // that wanders does not hold the answer back.
            LookupKind::FindValue => {
                let q = self.config.value_quorum;
                l.holders >= q
                    && (l.holder_paths.count_ones() as usize >= q.min(l.paths.len())
                        || l.first_value
                            .is_some_and(|(t, _)| now >= t + self.config.stall_timeout))
            }
            LookupKind::Search => l.holders >= self.config.search_holders,
            _ => false,
        };
        let mut all_done = true;
        if !value_done {
            for pi in 0..l.paths.len() {
                let mut sends = Vec::new();
                let mut path_done = true;
                if let Some(p) = l.paths.get(pi) {
                    let mut waiting = p
                        .cands
                        .iter()
                        .filter(|c| c.state == CandState::Waiting)
                        .count();
                    for (ci, c) in p
                        .cands
                        .iter()
                        .filter(|c| c.state != CandState::Failed)
                        .take(k)
                        .enumerate()
                    {
                        match c.state {
                            CandState::Fresh => {
                                path_done = false;
                                if waiting < alpha {
                                    sends.push((ci, c.contact));
                                    waiting += 1;
                                }
                            }
                            CandState::Waiting | CandState::Stalled => path_done = false,
                            CandState::Done | CandState::Failed => {}
                        }
                    }
                }
                for (_, contact) in sends {
                    let body = match l.kind {
                        LookupKind::FindValue | LookupKind::Search => {
                            Body::FindValue { key: l.target }
                        }
                        _ => Body::FindNode { target: l.target },
                    };
                    let sent = self
                        .send_request(
                            now,
                            contact.addr,
                            Some(contact.id),
                            body,
                            Purpose::Lookup {
                                lookup: id,
                                path: pi,
                            },
                        )
                        .is_some();
                    if sent {
                        l.messages += 1;
                    }
                    if let Some(c) = l
                        .paths
                        .get_mut(pi)
                        .and_then(|p| p.cands.iter_mut().find(|c| c.contact.id == contact.id))
                    {
                        c.state = if sent {
                            CandState::Waiting
                        } else {
                            CandState::Failed
                        };
                    }
                    if !sent {
                        path_done = false;
                    }
                }
                all_done &= path_done;
            }
        }
        if value_done || all_done {
            // A failed send above may leave a path with nothing to do but not done:
            // re-check that no request is still out before finishing.
            self.finish_lookup(now, id, l);
        } else {
            let stuck = l.paths.iter().all(|p| {
                !p.cands
                    .iter()
                    .any(|c| matches!(c.state, CandState::Waiting | CandState::Stalled))
            });
            if stuck {
                self.finish_lookup(now, id, l);
            } else {
                self.lookups.insert(id, l);
            }
        }
    }

    fn finish_lookup(&mut self, now: Instant, id: u64, l: Lookup) {
        // Forget requests still out for it: late answers are unsolicited.
        self.pending
            .retain(|_, p| !matches!(p.purpose, Purpose::Lookup { lookup, .. } if lookup == id));
        let k = self.config.replication;
        let mut closest: Vec<Contact> = l
            .paths
            .iter()
            .flat_map(|p| p.cands.iter())
            .filter(|c| c.state == CandState::Done)
            .map(|c| c.contact)
            .collect();
        closest.sort_by_key(|c| distance(&l.target, &c.id));
        closest.truncate(k);
        match l.kind {
            LookupKind::FindNode | LookupKind::FindValue => {
                let outcome = LookupOutcome {
                    id: LookupId(id),
                    target: l.target,
                    record: l.best,
                    closest,
                    hops: l.first_value.map(|(_, h)| h),
                    found_after: l
                        .first_value
                        .map(|(t, _)| t.saturating_duration_since(l.started)),
                    duration: now.saturating_duration_since(l.started),
                    messages: l.messages,
                    results: Vec::new(),
                };
                self.push_event(Event::Lookup(Box::new(outcome)));
            }
            LookupKind::Search => {
                let max = self.config.max_search_results;
                let query = l.query;
                let results: Vec<PresenceRecord> = l
                    .results
                    .into_values()
                    .filter(|r| {
                        let words = r.words();
                        query.iter().all(|q| words.contains(q))
                    })
                    .take(max)
                    .collect();
                let outcome = LookupOutcome {
                    id: LookupId(id),
                    target: l.target,
                    record: None,
                    closest,
                    hops: l.first_value.map(|(_, h)| h),
                    found_after: l
                        .first_value
                        .map(|(t, _)| t.saturating_duration_since(l.started)),
                    duration: now.saturating_duration_since(l.started),
                    messages: l.messages,
                    results,
                };
                self.push_event(Event::Lookup(Box::new(outcome)));
            }
            LookupKind::PublishWord => {
                if let Some(subject) = l.subject {
                    self.store_word_at(now, &l.target, &subject, &closest);
                }
            }
            LookupKind::Publish => self.store_at(now, &l.target, &closest),
            LookupKind::Refresh => {}
            LookupKind::Replicate => self.replicate_to(now, &l.target, &closest),
            LookupKind::Join => {
                self.joining = false;
                if self.table.is_empty() {
                    self.push_event(Event::BootstrapFailed);
                } else {
                    // Refresh every bucket farther than our closest neighbour.
                    let levels = self.table.levels().min(24);
                    for level in 0..levels.saturating_sub(1) {
                        let mut r = [0u8; 32];
                        if self.entropy.fill(&mut r).is_err() {
                            break;
                        }
                        let target = random_in_bucket(&self.id, level, r);
                        if self
                            .start_lookup(now, LookupKind::Refresh, target, &[])
                            .is_err()
                        {
                            break;
                        }
                    }
                    let contacts = self.table.len();
                    self.push_event(Event::Bootstrapped { contacts });
                }
            }
        }
    }

    /// When a record stored now is next re-replicated: `replicate_interval` plus a
    /// 0-25 % jitter, so holders do not all fire at once.
    fn replicate_due(&mut self, now: Instant) -> Instant {
        let interval = self.config.replicate_interval;
        let r = self.entropy.u64().unwrap_or(0);
        let jitter = interval.mul_f64((r >> 11) as f64 / (1u64 << 53) as f64 / 4.0);
        now + interval + jitter
    }

    /// Starts re-replication lookups for held records that are due: at most
    /// `max_replications` per round and at most half of `max_lookups` in all.
    fn replicate_due_records(&mut self, now: Instant) {
        let running = self
            .lookups
            .values()
            .filter(|l| l.kind == LookupKind::Replicate)
            .count();
        let budget = self
            .config
            .max_replications
            .min((self.config.max_lookups / 2).saturating_sub(running));
        if budget == 0 {
            return;
        }
        let due: Vec<NodeId> = self
            .store
            .iter()
            .filter(|(_, s)| s.due <= now)
            .map(|(k, _)| *k)
            .take(budget)
            .collect();
        for key in due {
            if self
                .start_lookup(now, LookupKind::Replicate, key, &[])
                .is_err()
            {
                break;
            }
            let next = self.replicate_due(now);
            if let Some(s) = self.store.get_mut(&key) {
                s.due = next;
            }
        }
    }

    /// Stores a held record on the `replication` closest nodes a re-replication
    /// lookup found (those that hold it already just acknowledge).
    fn replicate_to(&mut self, now: Instant, key: &NodeId, closest: &[Contact]) {
        let Some(bytes) = self.store.get(key).map(|s| s.bytes.clone()) else {
            return;
        };
        for c in closest.iter().take(self.config.replication) {
            let body = Body::Store { record: &bytes };
            let _ = self.send_request(now, c.addr, Some(c.id), body, Purpose::Store { op: None });
        }
    }

    /// Sends a published record to the `replication` closest nodes found.
    fn store_at(&mut self, now: Instant, key: &NodeId, closest: &[Contact]) {
        let Some(p) = self.published.get(key) else {
            return;
        };
        let record = p.record.clone();
        let bytes = record.to_bytes();
        let k = self.config.replication;
        let mut acked = 0;
        // Store locally too if we are among the k closest.
        let own_rank = closest
            .iter()
            .filter(|c| closer(key, &c.id, &self.id))
            .count();
        let local = own_rank < k;
        if local && self.accept_store(now, &bytes, None).unwrap_or(false) {
            acked += 1;
        }
        let op = self.next_id;
        self.next_id += 1;
        let mut outstanding = 0;
        for c in closest.iter().take(k - usize::from(local)) {
            let body = Body::Store { record: &bytes };
            if self
                .send_request(
                    now,
                    c.addr,
                    Some(c.id),
                    body,
                    Purpose::Store { op: Some(op) },
                )
                .is_some()
            {
                outstanding += 1;
            }
        }
        if outstanding == 0 {
            self.push_event(Event::Published {
                username: record.username,
                replicas: acked,
            });
        } else {
            self.store_ops.insert(
                op,
                StoreOp {
                    username: record.username,
                    acked,
                    outstanding,
                },
            );
        }
    }

    /// Sends the record published under `subject` to the closest nodes of word key
    /// `key` (and keeps it here if we are among them).
    fn store_word_at(&mut self, now: Instant, key: &NodeId, subject: &NodeId, closest: &[Contact]) {
        let Some(p) = self.published.get(subject) else {
            return;
        };
        let bytes = p.record.to_bytes();
        let k = self.config.replication;
        let own_rank = closest
            .iter()
            .filter(|c| closer(key, &c.id, &self.id))
            .count();
        let local = own_rank < k;
        if local {
            let _ = self.accept_word(now, *key, &bytes, None);
        }
        for c in closest.iter().take(k - usize::from(local)) {
            let body = Body::StoreWord {
                key: *key,
                record: &bytes,
            };
            let _ = self.send_request(now, c.addr, Some(c.id), body, Purpose::Store { op: None });
        }
    }

    /// Adds a record to the search entries of word key `key`: it must verify and
    /// its display name must have the word. Keeps the newest version per user and
    /// at most `max_entries_per_word` users (the most recently issued).
    fn accept_word(
        &mut self,
        now: Instant,
        key: NodeId,
        bytes: &[u8],
        from: Option<NodeId>,
    ) -> Result<bool, Error> {
        let record = PresenceRecord::decode(bytes)?;
        if !record.words().iter().any(|w| word_key(w) == key) {
            return Err(Violation::BadSignature.into());
        }
        if let Some(held) = self
            .words
            .get(&key)
            .and_then(|v| v.iter().find(|s| s.record.username == record.username))
        {
            if held.record == record {
                return Ok(true);
            }
            if !record.supersedes(&held.record) {
                return Ok(false);
            }
        }
        self.check_record(&record, now)?;
        if self.word_entries >= self.config.max_word_entries {
            return Err(Limit::StoreFull {
                max: self.config.max_word_entries,
            }
            .into());
        }
        let max_per_word = self.config.max_entries_per_word;
        let entries = self.words.entry(key).or_default();
        let before = entries.len();
        entries.retain(|s| s.record.username != record.username);
        let mut removed = before - entries.len();
        if entries.len() >= max_per_word {
            // Full: the least recently issued entry makes room, unless it is newer.
            let oldest = entries
                .iter()
                .enumerate()
                .min_by_key(|(_, s)| s.record.issued_at)
                .map(|(i, s)| (i, s.record.issued_at));
            match oldest {
                Some((i, issued)) if issued < record.issued_at => {
                    entries.swap_remove(i);
                    removed += 1;
                }
                _ => {
                    self.word_entries = self.word_entries.saturating_sub(removed);
                    return Ok(false);
                }
            }
        }
        entries.push(Stored {
            bytes: record.to_bytes(),
            record,
            from,
            due: now,
        });
        self.word_entries = self.word_entries.saturating_sub(removed) + 1;
        Ok(true)
    }

    fn store_done(&mut self, op: Option<u64>, stored: bool) {
        let Some(op) = op else { return };
        let Some(s) = self.store_ops.get_mut(&op) else {
            return;
        };
        s.outstanding = s.outstanding.saturating_sub(1);
        if stored {
            s.acked += 1;
        }
        if s.outstanding == 0
            && let Some(s) = self.store_ops.remove(&op)
        {
            self.push_event(Event::Published {
                username: s.username,
                replicas: s.acked,
            });
        }
    }

    fn txid(&mut self) -> Option<u64> {
        for _ in 0..4 {
            let t = self.entropy.u64().ok()?;
            if !self.pending.contains_key(&t) {
                return Some(t);
            }
        }
        None
    }

    fn send_request(
        &mut self,
        now: Instant,
        to: SocketAddr,
        expect: Option<NodeId>,
        body: Body<'_>,
        purpose: Purpose,
    ) -> Option<u64> {
        self.send_request_as(now, to, expect, body, purpose, None)
    }

    /// Sends a request: with the peer's cookie or padding (see `dress`), or, for a
    /// challenge that must stay within what an unvalidated peer sent us, padded to
    /// at most `fixed_len` (retries too).
    fn send_request_as(
        &mut self,
        now: Instant,
        to: SocketAddr,
        expect: Option<NodeId>,
        body: Body<'_>,
        purpose: Purpose,
        fixed_len: Option<usize>,
    ) -> Option<u64> {
        if self.pending.len() >= self.config.max_pending {
            return None;
        }
        let txid = self.txid()?;
        let nonce = expect
            .is_none_or(|id| !self.is_proven(&id, to, now))
            .then(|| self.nonce_for(to, now));
        self.stats.challenges += u64::from(nonce.is_some());
        let payload = Message {
            network: self.config.network,
            txid,
            sender_cert: &self.cert,
            nonce,
            proof: None,
            cookie: None,
            padding: 0,
            body,
        }
        .to_bytes();
        let wire = match fixed_len {
            None => self.dress(to, &payload, now),
            Some(len) => with_padding(&payload, len),
        };
        self.queue(Transmit::new(to, wire));
        let stall_at =
            matches!(purpose, Purpose::Lookup { .. }).then(|| now + self.config.stall_timeout);
        self.pending.insert(
            txid,
            Pending {
                to,
                expect,
                deadline: now + self.config.request_timeout,
                stall_at,
                purpose,
                payload,
                tries: 1,
                nonce,
                cookie_echoed: false,
                fixed_len,
            },
        );
        Some(txid)
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
        let mut stalled = Vec::new();
        let mut expired = Vec::new();
        for (txid, p) in &mut self.pending {
            if p.deadline <= now {
                expired.push(*txid);
            } else if p.stall_at.is_some_and(|s| s <= now) {
                p.stall_at = None;
                if let Purpose::Lookup { lookup, path } = p.purpose {
                    stalled.push((lookup, path, p.expect));
                }
            }
        }
        for (lookup, path, expect) in stalled {
            if let Some(c) = self
                .lookups
                .get_mut(&lookup)
                .and_then(|l| l.paths.get_mut(path))
                .and_then(|p| p.cands.iter_mut().find(|c| Some(c.contact.id) == expect))
                && c.state == CandState::Waiting
            {
                c.state = CandState::Stalled;
            }
            self.step_lookup(now, lookup);
        }
        for txid in expired {
            let Some(mut p) = self.pending.remove(&txid) else {
                continue;
            };
            let retry =
                !matches!(p.purpose, Purpose::Lookup { .. }) && p.tries <= self.config.retries;
            if retry {
                p.tries += 1;
                p.deadline = now + self.config.request_timeout;
                let validated = self
                    .validated
                    .get(&p.to)
                    .is_some_and(|at| now < *at + self.config.cookie_lifetime);
                let payload = match p.fixed_len {
                    Some(len) if !validated => with_padding(&p.payload, len),
                    _ => self.dress(p.to, &p.payload, now),
                };
                self.queue(Transmit::new(p.to, payload));
                self.pending.insert(txid, p);
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
                        .and_then(|l| l.paths.get_mut(path))
                        .and_then(|pa| pa.cands.iter_mut().find(|c| Some(c.contact.id) == p.expect))
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

    fn ripen_lookups(&mut self, now: Instant) {
        let quorum = self.config.value_quorum;
        let ripe: Vec<u64> = self
            .lookups
            .iter()
            .filter(|(_, l)| {
                l.kind == LookupKind::FindValue
                    && l.holders >= quorum
                    && l.first_value
                        .is_some_and(|(t, _)| now >= t + self.config.stall_timeout)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in ripe {
            self.step_lookup(now, id);
        }
    }

    fn maintain(&mut self, now: Instant) {
        let secs = unix_secs(self.wall(now));
        let expired: Vec<NodeId> = self
            .store
            .iter()
            .filter(|(_, s)| s.record.is_expired(secs))
            .map(|(k, _)| *k)
            .collect();
        for k in expired {
            self.remove_record(&k);
        }
        self.published.retain(|_, p| !p.record.is_expired(secs));
        let mut removed = 0;
        for entries in self.words.values_mut() {
            let before = entries.len();
            entries.retain(|s| !s.record.is_expired(secs));
            removed += before - entries.len();
        }
        self.word_entries = self.word_entries.saturating_sub(removed);
        self.words.retain(|_, v| !v.is_empty());
        self.rate.forget_idle(now);
        // Proofs older than `cert_cache_ttl` no longer count: forget them.
        let ttl = self.config.cert_cache_ttl;
        self.verified.retain(|_, (_, at)| now < *at + ttl);
        // Republish what is due.
        let due: Vec<NodeId> = self
            .published
            .iter()
            .filter(|(_, p)| p.next <= now)
            .map(|(k, _)| *k)
            .collect();
        for key in due {
            if self
                .start_lookup(now, LookupKind::Publish, key, &[])
                .is_err()
            {
                break;
            }
            let mut words = Vec::new();
            if let Some(p) = self.published.get_mut(&key) {
                p.next = now + self.config.republish_interval;
                words = p.record.words();
            }
            self.publish_words(now, key, &words);
        }
        self.replicate_due_records(now);
        // Refresh buckets nobody looked into for a while.
        if let Some(before) = now.checked_sub(self.config.refresh_interval) {
            let stale = self.table.stale_levels(before);
            for level in stale.into_iter().take(self.config.max_refreshes) {
                let mut r = [0u8; 32];
                if self.entropy.fill(&mut r).is_err() {
                    break;
                }
                let target = random_in_bucket(&self.id, level, r);
                if self
                    .start_lookup(now, LookupKind::Refresh, target, &[])
                    .is_err()
                {
                    break;
                }
            }
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
        let mut t = self.next_maintenance;
        for p in self.pending.values() {
            t = t.min(p.stall_at.unwrap_or(p.deadline).min(p.deadline));
        }
        for l in self.lookups.values() {
            if l.kind == LookupKind::FindValue
                && l.holders >= self.config.value_quorum
                && let Some((found, _)) = l.first_value
            {
                t = t.min(found + self.config.stall_timeout);
            }
        }
        Some(t)
    }
}

/// Inserts into a map bounded by `max`: when full, entries that are no longer
/// `fresh` are dropped, then (if still full) the first one, an arbitrary victim.
fn bounded_insert<K: Ord, V>(
    map: &mut BTreeMap<K, V>,
    key: K,
    value: V,
    max: usize,
    fresh: impl Fn(&V) -> bool,
) {
    if map.len() >= max && !map.contains_key(&key) {
        map.retain(|_, v| fresh(v));
        if map.len() >= max {
            map.pop_first();
        }
    }
    map.insert(key, value);
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

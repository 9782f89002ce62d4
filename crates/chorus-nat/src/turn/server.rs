//! The TURN relay server (RFC 8656) as a sans-IO core.
//!
//! A client authenticates with long-term credentials (RFC 8489 §9.2), allocates a
//! relayed transport address on the server (§7), installs permissions for its peers
//! (§9), optionally binds channels (§11), and then exchanges data with peers through
//! Send/Data indications (§10) or ChannelData messages (§12). The core also answers
//! Binding requests, as every TURN server is a STUN server.
//!
//! The core owns a pool of relay ports on the configured relay IP addresses; it never
//! binds a socket. It asks the driver for one with [`Event::OpenRelay`] and is told the
//! outcome through [`Server::handle_relay_bound`]: the Allocate success response
//! leaves only once every relayed address of the allocation is bound. A port that
//! fails to bind (another process holds it) is replaced by another from the pool, up
//! to four per relayed address; then the answer is 508 (Insufficient Capacity).
//!
//! The run loop:
//! 1. Give every datagram or framed TCP message to [`Server::handle_input`] with
//!    the local address it arrived on: a listening address for clients, a relayed
//!    address for peers (or use [`Server::handle_peer_input`]). `Err` means the
//!    input was dropped; the reason is for logs.
//! 2. Drain [`Server::poll_event`]: bind or close relay sockets as asked, and
//!    report each bind with [`Server::handle_relay_bound`].
//! 3. Drain [`Server::poll_transmit`]: each `(transport, transmit)` leaves from the
//!    socket bound to `transmit.src`; over TCP, on the connection between `src` and
//!    `dst`. Transmits to peers are always UDP, from a relayed address.
//! 4. Call [`Server::handle_timeout`] at [`Server::poll_timeout`] (allocations,
//!    permissions, channels and reservations expire there). `now` never goes
//!    backwards; an early call is a harmless no-op.
//! 5. When a TCP connection closes, call [`Server::handle_connection_closed`]: its
//!    allocation ends with it (RFC 8656 §3.1).
//!
//! Every table is bounded by [`Config`]; unauthenticated requests are rate-limited
//! per source IP; peers at special-purpose addresses are refused (403) unless
//! allow-listed (RFC 8656 §21.1.2).
//!
//! Inside, the server is a hub over child state machines (STYLE.md §2): every
//! allocation is an `Allocation` (`server/allocation.rs`: its relays and their bind
//! state, lifetime, permissions and channels) that the server owns by slot and finds
//! by 5-tuple or relayed address. The hub keeps those tables, authentication
//! (`server/auth.rs`), rate limits and dispatch; `server/requests.rs` handles
//! Allocate, Refresh, CreatePermission and ChannelBind, `server/data.rs` the relayed
//! data path, `server/pool.rs` the relay ports and `server/policy.rs` the peer policy.
//!
//! ```
//! use std::time::Instant;
//! use chorus_crypto::SystemEntropy;
//! use chorus_nat::client::Transport;
//! use chorus_nat::stun::{Attribute, Class, Limits, Message, Method, TransactionId};
//! use chorus_nat::turn::server::{StaticUsers, Config, Server};
//!
//! let mut config = Config::default();
//! config.realm = "example.org".into();
//! config.relay_ips = vec!["192.0.2.1".parse()?];
//! let mut users = StaticUsers::new("example.org");
//! users.add("alice", "secret");
//! let mut server = Server::new(config, Box::new(users), Box::new(SystemEntropy::new()))?;
//!
//! // An Allocate without credentials is challenged with 401, REALM and NONCE.
//! let mut req = Message::new(Class::Request, Method::ALLOCATE, TransactionId::new([1; 12]));
//! req.attributes.push(Attribute::RequestedTransport(17));
//! let mut wire = bytes::BytesMut::new();
//! req.encode(None, &mut wire)?;
//! let (server_addr, client) = ("192.0.2.1:3478".parse()?, "203.0.113.5:40000".parse()?);
//! server.handle_input(Instant::now(), server_addr, client, Transport::Udp, &wire)?;
//! let (_, answer) = server.poll_transmit().expect("a challenge");
//! let answer = Message::decode(&answer.payload, &Limits::default())?;
//! assert_eq!(answer.error_code().map(|(c, _)| c), Some(401));
//! assert!(answer.find(|a| matches!(a, Attribute::Nonce(_)).then_some(())).is_some());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod allocation;
mod auth;
mod data;
#[cfg(any(test, feature = "_fuzz"))]
#[doc(hidden)]
pub mod fuzz;
mod policy;
mod pool;
mod requests;

pub use auth::{Authenticator, StaticUsers};
pub use policy::{Cidr, is_special_purpose};

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use chorus_framing::{Entropy, Redacted, Transmit};

use crate::client::Transport;
use crate::error::{DecodeError, Error, Limit, UsageError, Violation};
use crate::rate::RateTable;
use crate::server::RateLimit;
use crate::stun::{
    AlgorithmList, Attribute, Class, HEADER_LEN, Header, Key, Limits, Message, Method,
    PasswordAlgorithm, TransactionId, UnknownList,
};

/// PASSWORD-ALGORITHMS as every challenge offers it (RFC 8489 §14.11): SHA-256 first,
/// then MD5, neither with parameters.
const OFFERED_ALGORITHMS: [u8; 8] = [0, 2, 0, 0, 0, 1, 0, 0];
use crate::turn::channel_data::is_channel_data;
use allocation::{Allocation, family_index};
use auth::{NonceCheck, Nonces};
use pool::Pool;

/// REQUESTED-TRANSPORT's value for UDP (RFC 8656 §18.8: an IP protocol number).
const UDP: u8 = 17;
/// How often expired state is swept.
const SWEEP: Duration = Duration::from_secs(1);

/// TURN server configuration; validated by [`Server::new`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Config {
    /// REALM (RFC 8489 §14.9). Default `"chorus"`; at most 763 bytes.
    pub realm: String,
    /// The addresses clients reach the server on; peers at these IPs are refused
    /// unless allow-listed. Default none.
    pub server_addresses: Vec<SocketAddr>,
    /// The IP addresses relayed addresses are allocated on: at most one IPv4 and one
    /// IPv6, each a specific (not unspecified) address. Default `[127.0.0.1]`.
    pub relay_ips: Vec<IpAddr>,
    /// The relay ports; not empty, not including 0. Default 49152..=65535 (RFC 8656
    /// §7.2: the dynamic range).
    pub relay_ports: RangeInclusive<u16>,
    /// Allocation lifetime when the client asks for none or less (RFC 8656 §7.2).
    /// Default 600 s.
    pub default_lifetime: Duration,
    /// The longest allocation lifetime granted. Default 3600 s; at least the default.
    pub max_lifetime: Duration,
    /// Permission lifetime (RFC 8656 §9: 300 s). Default 300 s.
    pub permission_lifetime: Duration,
    /// Channel binding lifetime (RFC 8656 §11: 600 s). Default 600 s.
    pub channel_lifetime: Duration,
    /// How long a nonce stays valid before requests get 438 (Stale Nonce). Default
    /// 600 s.
    pub nonce_lifetime: Duration,
    /// How long a port reserved by EVEN-PORT's R bit is held (RFC 8656 §14.9: about
    /// 30 s). Default 30 s.
    pub reservation_lifetime: Duration,
    /// Allocations at most; more get 508. Default 1000.
    pub max_allocations: usize,
    /// Allocations per username at most; more get 486 (Allocation Quota Reached).
    /// Default 10.
    pub max_allocations_per_user: usize,
    /// Permissions per allocation at most; more get 508. Default 64.
    pub max_permissions: usize,
    /// Channels per allocation at most (expired ones cooling down count); more get
    /// 508. Default 64.
    pub max_channels: usize,
    /// Outgoing datagrams queued at most; further input is dropped until the caller
    /// drains [`Server::poll_transmit`]. Default 4096.
    pub max_queued: usize,
    /// Rate of requests answered without authentication (Binding, challenges, errors
    /// before authentication), per source IP; `None` disables it.
    /// Default [`RateLimit::default`].
    pub rate_limit: Option<RateLimit>,
    /// SOFTWARE in responses. Default none.
    pub software: Option<String>,
    /// Peers allowed even though they are special-purpose addresses (RFC 8656 §21.1.2).
    /// Default none.
    pub allowed_peers: Vec<Cidr>,
    /// Allow loopback peers (127.0.0.0/8, ::1), for tests on one machine. Default false.
    pub allow_loopback_peers: bool,
    /// Accept the channel numbers of RFC 5766, 0x4000 through 0x7FFF, as clients
    /// written to it (coturn's `turnutils_uclient` among them) use; RFC 8656 §12
    /// narrowed the range to 0x4000-0x4FFF. Default false.
    pub rfc5766_channels: bool,
    /// Decode limits for client messages. Default: 65,555 bytes (a TCP-framed STUN
    /// message of the largest length) and 48 attributes.
    pub limits: Limits,
}

impl Default for Config {
    fn default() -> Self {
        let limits = Limits {
            max_len: HEADER_LEN + usize::from(u16::MAX),
            ..Limits::default()
        };
        Self {
            realm: "chorus".into(),
            server_addresses: Vec::new(),
            relay_ips: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
            relay_ports: 49152..=65535,
            default_lifetime: Duration::from_secs(600),
            max_lifetime: Duration::from_secs(3600),
            permission_lifetime: Duration::from_secs(300),
            channel_lifetime: Duration::from_secs(600),
            nonce_lifetime: Duration::from_secs(600),
            reservation_lifetime: Duration::from_secs(30),
            max_allocations: 1000,
            max_allocations_per_user: 10,
            max_permissions: 64,
            max_channels: 64,
            max_queued: 4096,
            rate_limit: Some(RateLimit::default()),
            software: None,
            allowed_peers: Vec::new(),
            allow_loopback_peers: false,
            rfc5766_channels: false,
            limits,
        }
    }
}

/// What the driver must do for the core.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// Bind a UDP socket to this relayed address, then report with
    /// [`Server::handle_relay_bound`]. Datagrams it receives go to
    /// [`Server::handle_input`] with it as the local address.
    OpenRelay(SocketAddr),
    /// Close the relay socket bound to this address (its allocation ended). May name
    /// an address whose bind failed or was never reported: then there is nothing to do.
    CloseRelay(SocketAddr),
}

/// Counters, for monitoring.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Allocations created.
    pub allocations: u64,
    /// Success responses sent.
    pub responses: u64,
    /// Error responses sent (challenges included).
    pub errors: u64,
    /// Datagrams relayed from clients to peers.
    pub to_peers: u64,
    /// Datagrams relayed from peers to clients.
    pub to_clients: u64,
    /// Inputs dropped.
    pub dropped: u64,
}

/// The 5-tuple that names an allocation (RFC 8656 §2): client address, server address
/// and transport protocol.
type FiveTuple = (SocketAddr, SocketAddr, Transport);

/// A port held by EVEN-PORT's R bit (RFC 8656 §7.2).
#[derive(Debug)]
struct Reservation {
    addr: SocketAddr,
    expires: Instant,
}

/// The response context: where it goes and how it is protected.
struct Reply {
    tuple: FiveTuple,
    method: Method,
    tid: TransactionId,
    fingerprint: bool,
}

/// A request's verified credentials.
struct Auth {
    username: String,
    key: Key,
    mi: bool,
    mi256: bool,
}

/// A TURN server (RFC 8656). Performs no I/O; see the [module docs](self) for the run
/// loop.
pub struct Server {
    config: Config,
    auth: Box<dyn Authenticator>,
    entropy: Box<dyn Entropy>,
    nonces: Nonces,
    epoch: Option<Instant>,
    pools: [Option<Pool>; 2],
    allowed: Vec<Cidr>,
    own_ips: Vec<IpAddr>,
    allocs: Vec<Option<Allocation>>,
    free_slots: Vec<usize>,
    by_tuple: HashMap<FiveTuple, usize>,
    /// The last `by_tuple` hit: clients send in bursts, so most lookups on the relay
    /// path skip hashing. Checked against the slot's tuple, so it never goes stale.
    last_tuple: std::cell::Cell<Option<(FiveTuple, usize)>>,
    by_relay: HashMap<SocketAddr, usize>,
    per_user: HashMap<Box<str>, usize>,
    reservations: HashMap<[u8; 8], Reservation>,
    rate: Option<RateTable>,
    transmits: VecDeque<(Transport, Transmit)>,
    events: VecDeque<Event>,
    next_sweep: Option<Instant>,
    tid_prefix: [u8; 4],
    tid_counter: u64,
    /// Reused for every encoding: relayed datagrams are `split` off it, so the hot
    /// path allocates only when a previous buffer is still in flight.
    buf: BytesMut,
    stats: Stats,
}

impl core::fmt::Debug for Server {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Server")
            .field("config", &self.config)
            .field("allocations", &self.by_tuple.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// The reason phrases of the codes this server sends (RFC 8489 §14.8, RFC 8656 §19).
const fn reason(code: u16) -> &'static str {
    match code {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        420 => "Unknown Attribute",
        437 => "Allocation Mismatch",
        438 => "Stale Nonce",
        440 => "Address Family not Supported",
        441 => "Wrong Credentials",
        442 => "Unsupported Transport Protocol",
        443 => "Peer Address Family Mismatch",
        486 => "Allocation Quota Reached",
        508 => "Insufficient Capacity",
        _ => "Server Error",
    }
}

impl Server {
    /// A server admitting the users `auth` knows, drawing nonce secrets, reservation
    /// tokens, ports and indication transaction ids from `entropy`.
    ///
    /// # Errors
    /// [`UsageError::InvalidConfig`] for a value outside its documented bounds;
    /// [`Error::Entropy`] if the nonce secret cannot be drawn.
    pub fn new(
        config: Config,
        auth: Box<dyn Authenticator>,
        mut entropy: Box<dyn Entropy>,
    ) -> Result<Self, Error> {
        let invalid = |what| Err(Error::Usage(UsageError::InvalidConfig(what)));
        if config.realm.is_empty() || config.realm.len() > crate::stun::MAX_TEXT {
            return invalid("realm must be 1 to 763 bytes");
        }
        if config.relay_ports.is_empty() || *config.relay_ports.start() == 0 {
            return invalid("relay_ports is empty or contains port 0");
        }
        let mut pools: [Option<Pool>; 2] = [None, None];
        for ip in &config.relay_ips {
            if ip.is_unspecified() {
                return invalid("relay_ips must be specific addresses");
            }
            let slot = pools.get_mut(family_index(*ip));
            match slot {
                Some(s @ None) => {
                    *s = Some(Pool::new(
                        *ip,
                        *config.relay_ports.start(),
                        *config.relay_ports.end(),
                    ));
                }
                _ => return invalid("at most one relay IP per address family"),
            }
        }
        if pools.iter().all(Option::is_none) {
            return invalid("relay_ips is empty");
        }
        if config.max_lifetime < config.default_lifetime
            || config.default_lifetime.is_zero()
            || config.permission_lifetime.is_zero()
            || config.channel_lifetime.is_zero()
            || config.nonce_lifetime.is_zero()
            || config.max_lifetime.as_secs() > u64::from(u32::MAX)
        {
            return invalid("lifetimes must be nonzero, max_lifetime >= default_lifetime");
        }
        if config.max_allocations == 0
            || config.max_allocations_per_user == 0
            || config.max_permissions == 0
            || config.max_channels == 0
            || config.max_queued == 0
        {
            return invalid("limits must be at least 1");
        }
        if let Some(r) = &config.rate_limit
            && (r.per_second == 0 || r.burst == 0 || r.max_sources == 0)
        {
            return invalid("rate limit values must be at least 1");
        }
        let mut secret = [0u8; 32];
        entropy.fill(&mut secret)?;
        let nonces = Nonces::new(&secret, config.nonce_lifetime);
        let mut tid_prefix = [0u8; 4];
        entropy.fill(&mut tid_prefix)?;
        let mut allowed = config.allowed_peers.clone();
        if config.allow_loopback_peers {
            allowed.extend(
                [
                    Cidr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0)), 8),
                    Some(Cidr::host(IpAddr::V6(Ipv6Addr::LOCALHOST))),
                ]
                .into_iter()
                .flatten(),
            );
        }
        let own_ips = config
            .relay_ips
            .iter()
            .copied()
            .chain(config.server_addresses.iter().map(SocketAddr::ip))
            .collect();
        let rate = config.rate_limit.clone().map(RateTable::new);
        Ok(Self {
            config,
            auth,
            entropy,
            nonces,
            epoch: None,
            pools,
            allowed,
            own_ips,
            allocs: Vec::new(),
            free_slots: Vec::new(),
            by_tuple: HashMap::new(),
            last_tuple: std::cell::Cell::new(None),
            by_relay: HashMap::new(),
            per_user: HashMap::new(),
            reservations: HashMap::new(),
            rate,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            next_sweep: None,
            tid_prefix,
            tid_counter: 0,
            buf: BytesMut::with_capacity(64 * 1024),
            stats: Stats::default(),
        })
    }

    /// The counters so far.
    #[must_use]
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// How many allocations exist (pending ones included).
    #[must_use]
    pub fn allocations(&self) -> usize {
        self.by_tuple.len()
    }

    /// The relayed addresses of the allocation of `client` on `server` over
    /// `transport` (IPv4 first), for monitoring and tests.
    #[must_use]
    pub fn relayed_addresses(
        &self,
        client: SocketAddr,
        server: SocketAddr,
        transport: Transport,
    ) -> Vec<SocketAddr> {
        self.alloc_by_tuple(&(client, server, transport))
            .map(|a| a.relayed().collect())
            .unwrap_or_default()
    }

    /// Whether `peer` may be relayed to under the deny-list and allow-list (RFC 8656
    /// §21.1.2).
    #[must_use]
    pub fn peer_allowed(&self, peer: IpAddr) -> bool {
        if self.allowed.iter().any(|c| c.contains(peer)) {
            return true;
        }
        let canonical = match peer {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(peer, IpAddr::V4),
            v4 => v4,
        };
        !is_special_purpose(peer) && !self.own_ips.contains(&canonical)
    }

    fn alloc_by_tuple(&self, tuple: &FiveTuple) -> Option<&Allocation> {
        if let Some((t, slot)) = self.last_tuple.get()
            && t == *tuple
            && let Some(Some(a)) = self.allocs.get(slot)
            && a.tuple() == *tuple
        {
            return Some(a);
        }
        let slot = *self.by_tuple.get(tuple)?;
        self.last_tuple.set(Some((*tuple, slot)));
        self.allocs.get(slot)?.as_ref()
    }

    /// The allocation in `slot`.
    fn allocation(&self, slot: usize) -> Result<&Allocation, Error> {
        self.allocs
            .get(slot)
            .and_then(Option::as_ref)
            .ok_or_else(|| Violation::NoAllocation.into())
    }

    fn arm(&mut self, now: Instant) {
        self.epoch.get_or_insert(now);
        if self.next_sweep.is_none() {
            self.next_sweep = Some(now + SWEEP);
        }
    }

    /// One received datagram or framed TCP message. `local` is the address it arrived
    /// on: a listening address (from a client) or a relayed address (from a peer, UDP).
    ///
    /// # Errors
    /// Why the input was dropped (the server answers what deserves an answer): a
    /// malformed message, a rate limit, a full queue, data without an allocation,
    /// permission or channel.
    pub fn handle_input(
        &mut self,
        now: Instant,
        local: SocketAddr,
        from: SocketAddr,
        transport: Transport,
        bytes: &[u8],
    ) -> Result<(), Error> {
        // Client input arrives on a listening address: that check (a short list)
        // spares the relay table's hash on the per-packet path.
        let listening = self.config.server_addresses.contains(&local);
        let result = if transport == Transport::Udp
            && !listening
            && let Some(&slot) = self.by_relay.get(&local)
        {
            self.peer_data(now, slot, local, from, bytes)
        } else {
            self.arm(now);
            self.client_input(now, (from, local, transport), bytes)
        };
        if result.is_err() {
            self.stats.dropped += 1;
        }
        result
    }

    /// A datagram from `peer` received on the relayed address `relayed`: relayed to
    /// the client as ChannelData or a Data indication (RFC 8656 §10.3, §12.5) if a
    /// permission for the peer's IP exists.
    ///
    /// # Errors
    /// [`Violation::NoAllocation`] if `relayed` belongs to no allocation, otherwise
    /// as [`Server::handle_input`].
    pub fn handle_peer_input(
        &mut self,
        now: Instant,
        relayed: SocketAddr,
        peer: SocketAddr,
        bytes: &[u8],
    ) -> Result<(), Error> {
        let Some(&slot) = self.by_relay.get(&relayed) else {
            self.stats.dropped += 1;
            return Err(Violation::NoAllocation.into());
        };
        let result = self.peer_data(now, slot, relayed, peer, bytes);
        if result.is_err() {
            self.stats.dropped += 1;
        }
        result
    }

    fn push(&mut self, transport: Transport, t: Transmit) -> Result<(), Error> {
        if self.transmits.len() >= self.config.max_queued {
            return Err(Limit::Queue(self.transmits.len()).into());
        }
        self.transmits.push_back((transport, t));
        Ok(())
    }

    fn queue_full(&self) -> Result<(), Error> {
        if self.transmits.len() >= self.config.max_queued {
            return Err(Limit::Queue(self.transmits.len()).into());
        }
        Ok(())
    }

    fn client_input(&mut self, now: Instant, tuple: FiveTuple, bytes: &[u8]) -> Result<(), Error> {
        self.queue_full()?;
        let first = *bytes.first().ok_or(DecodeError::Truncated {
            offset: 0,
            needed: 1,
        })?;
        if is_channel_data(first) {
            return self.client_channel_data(now, tuple, bytes);
        }
        let header = Header::decode(bytes)?;
        if HEADER_LEN + header.length != bytes.len() {
            return Err(DecodeError::BadLength(header.length).into());
        }
        match header.class {
            Class::Request => self.request(now, tuple, &header, bytes),
            Class::Indication if header.method == Method::SEND => {
                self.send_indication(now, tuple, &header, bytes)
            }
            Class::Indication => Err(Violation::UnsupportedMethod(header.method.number()).into()),
            Class::Success | Class::Error => Err(Violation::UnexpectedClass.into()),
        }
    }

    fn rate_allow(&mut self, now: Instant, ip: IpAddr) -> Result<(), Error> {
        match &mut self.rate {
            Some(rate) => Ok(rate.allow(now, ip)?),
            None => Ok(()),
        }
    }

    fn send_message(
        &mut self,
        reply: &Reply,
        class: Class,
        attrs: &[Attribute<'_>],
        auth: Option<&Auth>,
    ) -> Result<(), Error> {
        let mut m = Message::new(class, reply.method, reply.tid);
        m.attributes.reserve(attrs.len() + 1);
        m.attributes.extend_from_slice(attrs);
        if let Some(s) = &self.config.software {
            m.attributes.push(Attribute::Software(s));
        }
        let key = auth.map(|a| {
            m.message_integrity = a.mi || !a.mi256;
            m.message_integrity_sha256 = a.mi256;
            &a.key
        });
        m.fingerprint = reply.fingerprint;
        m.encode(key, &mut self.buf)?;
        let payload = self.buf.split().freeze();
        let (client, server, transport) = reply.tuple;
        drop(m);
        self.push(transport, Transmit::new(client, payload).with_src(server))?;
        if class == Class::Error {
            self.stats.errors += 1;
        } else {
            self.stats.responses += 1;
        }
        Ok(())
    }

    fn error(&mut self, reply: &Reply, code: u16, auth: Option<&Auth>) -> Result<(), Error> {
        tracing::debug!(
            client = %Redacted(reply.tuple.0),
            method = ?reply.method,
            code,
            reason = reason(code),
            "request refused"
        );
        let attrs = [Attribute::ErrorCode {
            code,
            reason: reason(code),
        }];
        self.send_message(reply, Class::Error, &attrs, auth)
    }

    /// 401 or 438 with REALM and a fresh NONCE (RFC 8489 §9.2.4).
    fn challenge(&mut self, now: Instant, reply: &Reply, code: u16) -> Result<(), Error> {
        tracing::debug!(client = %Redacted(reply.tuple.0), code, "request challenged");
        let epoch = *self.epoch.get_or_insert(now);
        let nonce = self.nonces.issue(epoch, now, reply.tuple.0);
        let realm = self.config.realm.clone();
        let attrs = [
            Attribute::ErrorCode {
                code,
                reason: reason(code),
            },
            Attribute::Realm(&realm),
            Attribute::Nonce(&nonce),
            Attribute::PasswordAlgorithms(AlgorithmList::from_wire(&OFFERED_ALGORITHMS)?),
        ];
        self.send_message(reply, Class::Error, &attrs, None)
    }

    fn request(
        &mut self,
        now: Instant,
        tuple: FiveTuple,
        header: &Header,
        bytes: &[u8],
    ) -> Result<(), Error> {
        let mut reply = Reply {
            tuple,
            method: header.method,
            tid: header.transaction_id,
            fingerprint: false,
        };
        let msg = match Message::decode(bytes, &self.config.limits) {
            Ok(m) => m,
            Err(DecodeError::UnknownRequiredAttributes(list)) => {
                // RFC 8489 §6.3.1: 420 with UNKNOWN-ATTRIBUTES.
                self.rate_allow(now, tuple.0.ip())?;
                let mut raw = [0u8; 16];
                for (slot, t) in raw.chunks_exact_mut(2).zip(list.as_slice()) {
                    slot.copy_from_slice(&t.to_be_bytes());
                }
                let listed = raw.get(..list.as_slice().len() * 2).unwrap_or(&[]);
                let attrs = [
                    Attribute::ErrorCode {
                        code: 420,
                        reason: reason(420),
                    },
                    Attribute::UnknownAttributes(UnknownList::from_wire(listed)?),
                ];
                return self.send_message(&reply, Class::Error, &attrs, None);
            }
            Err(e) => return Err(e.into()),
        };
        reply.fingerprint = msg.fingerprint;
        let m = msg.method;
        if m == Method::BINDING {
            // RFC 8656 §3: a TURN server is a STUN server.
            self.rate_allow(now, tuple.0.ip())?;
            let attrs = [Attribute::XorMappedAddress(tuple.0)];
            return self.send_message(&reply, Class::Success, &attrs, None);
        }
        if ![
            Method::ALLOCATE,
            Method::REFRESH,
            Method::CREATE_PERMISSION,
            Method::CHANNEL_BIND,
        ]
        .contains(&m)
        {
            self.rate_allow(now, tuple.0.ip())?;
            return self.error(&reply, 400, None);
        }
        let auth = match self.authenticate(now, tuple.0, &msg, bytes) {
            Ok(a) => a,
            Err(code) => {
                self.rate_allow(now, tuple.0.ip())?;
                return if code == 400 {
                    self.error(&reply, 400, None)
                } else {
                    self.challenge(now, &reply, code)
                };
            }
        };
        if m == Method::ALLOCATE {
            return self.allocate(now, &reply, &msg, &auth);
        }
        let Some(&slot) = self.by_tuple.get(&tuple) else {
            // RFC 8656 §7.3, §9.2, §11.2: no allocation on this 5-tuple.
            return self.error(&reply, 437, Some(&auth));
        };
        let a = self.allocation(slot)?;
        // RFC 8656 §5: later requests must use the allocation's credentials.
        if a.username() != auth.username {
            return self.error(&reply, 441, Some(&auth));
        }
        if a.is_pending() {
            return self.error(&reply, 437, Some(&auth));
        }
        match m {
            Method::REFRESH => self.refresh(now, slot, &reply, &msg, &auth),
            Method::CREATE_PERMISSION => self.create_permission(now, slot, &reply, &msg, &auth),
            _ => self.channel_bind(now, slot, &reply, &msg, &auth),
        }
    }

    /// RFC 8489 §9.2.4. `Err(code)`: 400, 401 or 438.
    fn authenticate(
        &self,
        now: Instant,
        from: SocketAddr,
        msg: &Message<'_>,
        bytes: &[u8],
    ) -> Result<Auth, u16> {
        if !msg.message_integrity && !msg.message_integrity_sha256 {
            return Err(401);
        }
        let (mut username, mut hash, mut realm, mut nonce) = (None, None, None, None);
        let (mut offered, mut chosen) = (None, None);
        for a in &msg.attributes {
            match a {
                Attribute::Username(u) => username = username.or(Some(*u)),
                Attribute::UserHash(h) => hash = hash.or(Some(*h)),
                Attribute::Realm(r) => realm = realm.or(Some(*r)),
                Attribute::Nonce(n) => nonce = nonce.or(Some(*n)),
                Attribute::PasswordAlgorithms(l) => offered = offered.or(Some(*l)),
                Attribute::PasswordAlgorithm(e) => chosen = chosen.or(Some(*e)),
                _ => {}
            }
        }
        // RFC 8489 §9.2.4: our nonces announce "Password algorithms", so a request
        // either carries both attributes, PASSWORD-ALGORITHMS exactly as we sent it
        // and PASSWORD-ALGORITHM one of it, or neither (MD5, for RFC 5389 clients).
        let algorithm = match (offered, chosen) {
            (None, None) => PasswordAlgorithm::Md5,
            (Some(list), Some(entry))
                if list.as_wire() == OFFERED_ALGORITHMS.as_slice()
                    && entry.parameters.is_empty() =>
            {
                PasswordAlgorithm::from_number(entry.algorithm).ok_or(400u16)?
            }
            _ => return Err(400),
        };
        let (Some(realm), Some(nonce)) = (realm, nonce) else {
            return Err(400);
        };
        if username.is_none() && hash.is_none() {
            return Err(400);
        }
        let epoch = self.epoch.unwrap_or(now);
        if let NonceCheck::Stale = self.nonces.check(epoch, now, from, nonce) {
            return Err(438);
        }
        if realm != self.config.realm {
            return Err(401);
        }
        let username = match (username, hash) {
            (Some(u), _) => u.to_owned(),
            (None, Some(h)) => self.auth.username_for_hash(&h, realm).ok_or(401u16)?,
            (None, None) => return Err(400),
        };
        let key = self.auth.key(&username, realm, algorithm).ok_or(401u16)?;
        Message::verify(bytes, &key).map_err(|_| 401u16)?;
        Ok(Auth {
            username,
            key,
            mi: msg.message_integrity,
            mi256: msg.message_integrity_sha256,
        })
    }

    /// Files a new allocation in the tables (by 5-tuple, by relayed address, per
    /// user) and asks the driver to bind its relays.
    fn insert_allocation(&mut self, alloc: Allocation) {
        let slot = match self.free_slots.pop() {
            Some(s) => s,
            None => {
                self.allocs.push(None);
                self.allocs.len() - 1
            }
        };
        for addr in alloc.relayed() {
            self.by_relay.insert(addr, slot);
            self.events.push_back(Event::OpenRelay(addr));
        }
        *self.per_user.entry(alloc.username().into()).or_insert(0) += 1;
        self.by_tuple.insert(alloc.tuple(), slot);
        tracing::info!(
            client = %Redacted(alloc.tuple().0),
            user = %Redacted(alloc.username()),
            relays = alloc.relay_count(),
            "allocation opening"
        );
        if let Some(s) = self.allocs.get_mut(slot) {
            *s = Some(alloc);
        }
        self.stats.allocations += 1;
    }

    /// Removes an allocation from the tables, closing its relays.
    fn remove_allocation(&mut self, slot: usize) {
        let Some(a) = self.allocs.get_mut(slot).and_then(Option::take) else {
            return;
        };
        tracing::info!(client = %Redacted(a.tuple().0), "allocation closed");
        self.free_slots.push(slot);
        self.by_tuple.remove(&a.tuple());
        for addr in a.relayed() {
            self.close_relay(addr);
        }
        if let Some(n) = self.per_user.get_mut(a.username()) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_user.remove(a.username());
            }
        }
    }

    /// A relayed address is given up: it leaves the relay table, its port returns
    /// to the pool and the driver closes its socket.
    fn close_relay(&mut self, addr: SocketAddr) {
        self.by_relay.remove(&addr);
        if let Some(pool) = self
            .pools
            .get_mut(family_index(addr.ip()))
            .and_then(Option::as_mut)
        {
            pool.release(addr.port());
        }
        self.events.push_back(Event::CloseRelay(addr));
    }

    /// The TCP connection between `client` and the server's `local` address closed:
    /// its allocation, if any, is deleted (RFC 8656 §3.1).
    pub fn handle_connection_closed(&mut self, local: SocketAddr, client: SocketAddr) {
        if let Some(&slot) = self.by_tuple.get(&(client, local, Transport::Tcp)) {
            self.remove_allocation(slot);
        }
    }

    fn expire_reservations(&mut self, now: Instant, oldest_too: bool) {
        let oldest = oldest_too
            .then(|| {
                self.reservations
                    .iter()
                    .min_by_key(|(_, r)| r.expires)
                    .map(|(t, _)| *t)
            })
            .flatten();
        let pools = &mut self.pools;
        self.reservations.retain(|t, r| {
            let keep = r.expires > now && Some(*t) != oldest;
            if !keep
                && let Some(pool) = pools
                    .get_mut(family_index(r.addr.ip()))
                    .and_then(Option::as_mut)
            {
                pool.release(r.addr.port());
            }
            keep
        });
    }

    /// Expires allocations, permissions, channels, reservations and idle rate-limit
    /// entries that are due.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.next_sweep.is_none_or(|t| t > now) {
            return;
        }
        self.next_sweep = Some(now + SWEEP);
        let expired: Vec<usize> = self
            .allocs
            .iter()
            .enumerate()
            .filter_map(|(i, a)| a.as_ref().filter(|a| !a.is_live(now)).map(|_| i))
            .collect();
        for slot in expired {
            self.remove_allocation(slot);
        }
        for a in self.allocs.iter_mut().flatten() {
            a.sweep(now);
        }
        self.expire_reservations(now, false);
        if let Some(rate) = &mut self.rate {
            rate.purge(now);
        }
        let no_sources = self.rate.as_ref().is_none_or(RateTable::is_empty);
        if self.by_tuple.is_empty() && self.reservations.is_empty() && no_sources {
            self.next_sweep = None;
        }
    }

    /// The next datagram to send and the transport it goes over.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<(Transport, Transmit)> {
        self.transmits.pop_front()
    }

    /// The next thing the driver must do.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Server::handle_timeout`] should run next: once a second while any
    /// state exists that can expire.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_sweep
    }
}

/// The TURN server as a [`chorus_framing::DatagramCore`]: UDP only (the contract has
/// no TCP), so transmits for TCP clients, which cannot exist there, are dropped.
/// Its events ask the driver to open and close relay sockets.
impl chorus_framing::DatagramCore for Server {
    type Event = Event;
    type Error = Error;

    /// On its listening port: STUN messages and ChannelData (RFC 8656 §12.4). A
    /// relay socket is the server's alone, so whatever a peer sends there needs no
    /// routing.
    fn accepts(&self, _: SocketAddr, _: SocketAddr, bytes: &[u8]) -> bool {
        use chorus_framing::PacketKind;
        matches!(
            chorus_framing::classify(bytes),
            PacketKind::Stun | PacketKind::ChannelData
        )
    }

    fn handle_datagram(
        &mut self,
        now: Instant,
        local: SocketAddr,
        from: SocketAddr,
        bytes: &[u8],
    ) -> Result<(), Error> {
        self.handle_input(now, local, from, Transport::Udp, bytes)
    }

    fn poll_transmit(&mut self) -> Option<Transmit> {
        loop {
            match Self::poll_transmit(self)? {
                (Transport::Udp, t) => return Some(t),
                (Transport::Tcp, _) => {}
            }
        }
    }

    fn poll_event(&mut self) -> Option<Event> {
        Self::poll_event(self)
    }

    fn poll_timeout(&self) -> Option<Instant> {
        Self::poll_timeout(self)
    }

    fn handle_timeout(&mut self, now: Instant) {
        Self::handle_timeout(self, now);
    }
}

#[cfg(test)]
mod tests;

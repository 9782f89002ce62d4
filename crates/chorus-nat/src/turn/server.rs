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

mod auth;
#[cfg(any(test, feature = "_fuzz"))]
#[doc(hidden)]
pub mod fuzz;
mod policy;
mod pool;

pub use auth::{Authenticator, StaticUsers};
pub use policy::{Cidr, is_special_purpose};

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use chorus_framing::{Entropy, Reader, Redacted, Transmit};

use crate::client::Transport;
use crate::error::{DecodeError, Error, Limit, UnknownAttributes, UsageError, Violation};
use crate::rate::RateTable;
use crate::server::RateLimit;
use crate::stun::{
    AddressFamily, AlgorithmList, Attribute, Class, HEADER_LEN, Header, Key, Limits, MAGIC_COOKIE,
    Message, Method, PasswordAlgorithm, TransactionId, UnknownList, types,
};

/// PASSWORD-ALGORITHMS as every challenge offers it (RFC 8489 §14.11): SHA-256 first,
/// then MD5, neither with parameters.
const OFFERED_ALGORITHMS: [u8; 8] = [0, 2, 0, 0, 0, 1, 0, 0];
use crate::turn::channel_data::{ChannelData, is_channel_data, is_valid_channel};
use auth::{NonceCheck, Nonces};
use pool::Pool;

/// REQUESTED-TRANSPORT's value for UDP (RFC 8656 §18.8: an IP protocol number).
const UDP: u8 = 17;
/// RFC 8656 §11: a channel number and its peer are not rebound elsewhere for this
/// long after the binding expired.
const CHANNEL_COOLDOWN: Duration = Duration::from_secs(300);
/// How often expired state is swept.
const SWEEP: Duration = Duration::from_secs(1);
/// RFC 8489 §5 message type of a Data indication (method 0x007, class 0b01).
const DATA_INDICATION: u16 = 0x0017;

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

#[derive(Debug)]
struct Relay {
    addr: SocketAddr,
    bound: bool,
    /// Binds tried for this relay so far; a port drawn freely from the pool (not a
    /// reserved or EVEN-PORT one) is replaced by another when its bind fails, up to
    /// [`RELAY_BIND_ATTEMPTS`].
    attempts: u8,
    replaceable: bool,
}

/// Ports tried for one relayed address before the allocation fails with 508: a port
/// the pool believes free can be held by another process on the host.
const RELAY_BIND_ATTEMPTS: u8 = 4;

impl Relay {
    fn new(addr: SocketAddr, replaceable: bool) -> Self {
        Self {
            addr,
            bound: false,
            attempts: 1,
            replaceable,
        }
    }
}

#[derive(Debug)]
struct Channel {
    peer: SocketAddr,
    /// The binding is live before this; afterwards it cools down for 5 minutes.
    expires: Instant,
}

/// The answer an allocation owes until its relays are bound.
#[derive(Debug, Clone, Copy)]
struct Pending {
    mi: bool,
    mi256: bool,
    fingerprint: bool,
}

#[derive(Debug)]
struct Allocation {
    tuple: FiveTuple,
    username: Box<str>,
    key: Key,
    /// The Allocate that created it: a retransmission gets the same answer (§7.2).
    tid: TransactionId,
    expires: Instant,
    /// Index 0: IPv4, 1: IPv6.
    relays: [Option<Relay>; 2],
    primary: usize,
    permissions: HashMap<IpAddr, Instant>,
    channels: HashMap<u16, Channel>,
    peer_channels: HashMap<SocketAddr, u16>,
    pending: Option<Pending>,
    /// RESERVATION-TOKEN to return (EVEN-PORT with R).
    token: Option<[u8; 8]>,
    /// ADDRESS-ERROR-CODE to return for a failed additional family.
    address_error: Option<(AddressFamily, u16)>,
}

impl Allocation {
    fn relay_for(&self, peer: IpAddr) -> Option<SocketAddr> {
        self.relays
            .get(family_index(peer))?
            .as_ref()
            .filter(|r| r.bound)
            .map(|r| r.addr)
    }

    fn permitted(&self, now: Instant, peer: IpAddr) -> bool {
        self.permissions.get(&peer).is_some_and(|t| *t > now)
    }
}

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

fn family_index(ip: IpAddr) -> usize {
    usize::from(ip.is_ipv6())
}

const fn family_of(index: usize) -> AddressFamily {
    if index == 0 {
        AddressFamily::V4
    } else {
        AddressFamily::V6
    }
}

const fn index_of(family: AddressFamily) -> usize {
    match family {
        AddressFamily::V4 => 0,
        AddressFamily::V6 => 1,
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

const fn pad4(len: usize) -> usize {
    (4 - len % 4) % 4
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
            .map(|a| a.relays.iter().flatten().map(|r| r.addr).collect())
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
            && a.tuple == *tuple
        {
            return Some(a);
        }
        let slot = *self.by_tuple.get(tuple)?;
        self.last_tuple.set(Some((*tuple, slot)));
        self.allocs.get(slot)?.as_ref()
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

    /// RFC 8656 §10.3 and §12.5: peer data to the client, if permitted.
    fn peer_data(
        &mut self,
        now: Instant,
        slot: usize,
        relayed: SocketAddr,
        peer: SocketAddr,
        bytes: &[u8],
    ) -> Result<(), Error> {
        self.queue_full()?;
        let Some(Some(a)) = self.allocs.get(slot) else {
            return Err(Violation::NoAllocation.into());
        };
        if a.expires <= now || a.relay_for(peer.ip()) != Some(relayed) {
            return Err(Violation::NoAllocation.into());
        }
        if !a.permitted(now, peer.ip()) {
            return Err(Violation::NoPermission.into());
        }
        let (client, server, transport) = a.tuple;
        let channel = a
            .peer_channels
            .get(&peer)
            .filter(|ch| a.channels.get(ch).is_some_and(|c| c.expires > now))
            .copied();
        let buf = &mut self.buf;
        if let Some(channel) = channel {
            // RFC 8656 §12.4 layout; padded over TCP (§12.5). Encoded here rather than
            // with `ChannelData` so that RFC 5766 channel numbers work too.
            let len =
                u16::try_from(bytes.len()).map_err(|_| UsageError::ValueTooLong(types::DATA))?;
            let padding = if transport == Transport::Tcp {
                pad4(bytes.len())
            } else {
                0
            };
            buf.reserve(4 + bytes.len() + padding);
            buf.put_u16(channel);
            buf.put_u16(len);
            buf.put_slice(bytes);
            buf.put_bytes(0, padding);
        } else {
            // RFC 8656 §10.3: XOR-PEER-ADDRESS and DATA; no integrity, no FINGERPRINT.
            let peer_attr = Attribute::XorPeerAddress(peer);
            let plen = peer_attr.value_len();
            let body = 4 + plen + 4 + bytes.len() + pad4(bytes.len());
            let len = u16::try_from(body).map_err(|_| UsageError::ValueTooLong(types::DATA))?;
            self.tid_counter = self.tid_counter.wrapping_add(1);
            let mut id = [0u8; 12];
            let (p, c) = id.split_at_mut(4);
            p.copy_from_slice(&self.tid_prefix);
            c.copy_from_slice(&self.tid_counter.to_be_bytes());
            let tid = TransactionId::new(id);
            buf.reserve(HEADER_LEN + body);
            buf.put_u16(DATA_INDICATION);
            buf.put_u16(len);
            buf.put_u32(MAGIC_COOKIE);
            buf.put_slice(&tid.0);
            buf.put_u16(types::XOR_PEER_ADDRESS);
            buf.put_u16(plen as u16);
            peer_attr.write_value(&tid, buf);
            buf.put_u16(types::DATA);
            buf.put_u16(bytes.len() as u16);
            buf.put_slice(bytes);
            buf.put_bytes(0, pad4(bytes.len()));
        }
        let payload = self.buf.split().freeze();
        self.push(transport, Transmit::new(client, payload).with_src(server))?;
        self.stats.to_clients += 1;
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

    /// RFC 8656 §12.6: ChannelData from the client goes to the channel's peer.
    fn client_channel_data(
        &mut self,
        now: Instant,
        tuple: FiveTuple,
        bytes: &[u8],
    ) -> Result<(), Error> {
        let cd = self.decode_channel_data(bytes, tuple.2)?;
        let a = self
            .alloc_by_tuple(&tuple)
            .filter(|a| a.expires > now)
            .ok_or(Violation::NoAllocation)?;
        let peer = a
            .channels
            .get(&cd.channel)
            .filter(|c| c.expires > now)
            .map(|c| c.peer)
            .ok_or(Violation::UnboundChannel)?;
        if !a.permitted(now, peer.ip()) {
            return Err(Violation::NoPermission.into());
        }
        let relayed = a.relay_for(peer.ip()).ok_or(Violation::NoAllocation)?;
        self.relay_to_peer(relayed, peer, cd.data)
    }

    fn channel_ok(&self, n: u16) -> bool {
        if self.config.rfc5766_channels {
            (0x4000..=0x7fff).contains(&n)
        } else {
            is_valid_channel(n)
        }
    }

    /// RFC 8656 §12.4-§12.5: header, data, and over TCP the padding (the driver cut
    /// the frame with it). Trailing bytes of a UDP datagram are ignored.
    fn decode_channel_data<'b>(
        &self,
        bytes: &'b [u8],
        transport: Transport,
    ) -> Result<ChannelData<'b>, DecodeError> {
        let mut r = Reader::new(bytes);
        let channel = r.u16()?;
        let len = usize::from(r.u16()?);
        let data = r.take(len)?;
        if transport == Transport::Tcp {
            r.skip(pad4(len))?;
        }
        if !self.channel_ok(channel) {
            return Err(DecodeError::NotStun);
        }
        Ok(ChannelData { channel, data })
    }

    fn relay_to_peer(
        &mut self,
        relayed: SocketAddr,
        peer: SocketAddr,
        data: &[u8],
    ) -> Result<(), Error> {
        self.buf.extend_from_slice(data);
        let payload = self.buf.split().freeze();
        self.push(
            Transport::Udp,
            Transmit::new(peer, payload).with_src(relayed),
        )?;
        self.stats.to_peers += 1;
        Ok(())
    }

    /// RFC 8656 §10.2: a Send indication's DATA goes to its XOR-PEER-ADDRESS, if
    /// permitted. Parsed without allocating: it is the per-packet path.
    fn send_indication(
        &mut self,
        now: Instant,
        tuple: FiveTuple,
        header: &Header,
        bytes: &[u8],
    ) -> Result<(), Error> {
        let tid = header.transaction_id;
        let mut r = Reader::new(bytes);
        r.skip(HEADER_LEN).map_err(DecodeError::from)?;
        let (mut peer, mut data) = (None, None);
        while !r.is_empty() {
            let t = r.u16().map_err(DecodeError::from)?;
            let len = usize::from(r.u16().map_err(DecodeError::from)?);
            let value = r.take(len).map_err(DecodeError::from)?;
            r.skip(pad4(len)).map_err(DecodeError::from)?;
            if matches!(
                t,
                types::MESSAGE_INTEGRITY | types::MESSAGE_INTEGRITY_SHA256 | types::FINGERPRINT
            ) {
                break;
            }
            match Attribute::decode(t, value, &tid)? {
                Some(Attribute::XorPeerAddress(a)) => peer = peer.or(Some(a)),
                Some(Attribute::Data(d)) => data = data.or(Some(d)),
                Some(_) => {}
                // RFC 8489 §6.3.2: an indication with an unknown comprehension-required
                // attribute is discarded.
                None => {
                    let mut unknown = UnknownAttributes::new();
                    unknown.push(t);
                    return Err(DecodeError::UnknownRequiredAttributes(unknown).into());
                }
            }
        }
        let (Some(peer), Some(data)) = (peer, data) else {
            return Err(Violation::MissingAttribute(types::XOR_PEER_ADDRESS).into());
        };
        let a = self
            .alloc_by_tuple(&tuple)
            .filter(|a| a.expires > now)
            .ok_or(Violation::NoAllocation)?;
        if !a.permitted(now, peer.ip()) {
            return Err(Violation::NoPermission.into());
        }
        let relayed = a.relay_for(peer.ip()).ok_or(Violation::NoAllocation)?;
        self.relay_to_peer(relayed, peer, data)
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
        let Some(a) = self.allocs.get(slot).and_then(Option::as_ref) else {
            return Err(Violation::NoAllocation.into());
        };
        // RFC 8656 §5: later requests must use the allocation's credentials.
        if *a.username != *auth.username {
            return self.error(&reply, 441, Some(&auth));
        }
        if a.pending.is_some() {
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

    fn lifetime(&self, requested: Option<u32>) -> Duration {
        // RFC 8656 §7.2: min(requested, max), but never below the default.
        let d = self.config.default_lifetime;
        requested.map_or(d, |s| {
            Duration::from_secs(u64::from(s))
                .min(self.config.max_lifetime)
                .max(d)
        })
    }

    fn random_u32(&mut self) -> Result<u32, Error> {
        Ok(self.entropy.u32()?)
    }

    /// RFC 8656 §7.2.
    #[allow(clippy::too_many_lines)]
    fn allocate(
        &mut self,
        now: Instant,
        reply: &Reply,
        msg: &Message<'_>,
        auth: &Auth,
    ) -> Result<(), Error> {
        if let Some(&slot) = self.by_tuple.get(&reply.tuple) {
            let Some(a) = self.allocs.get(slot).and_then(Option::as_ref) else {
                return Err(Violation::NoAllocation.into());
            };
            if a.tid == msg.transaction_id && *a.username == *auth.username {
                if a.pending.is_some() {
                    // The answer leaves once the relay sockets are bound.
                    return Ok(());
                }
                return self.allocate_success(now, slot, reply, auth);
            }
            return self.error(reply, 437, Some(auth));
        }
        let (mut transport, mut even, mut token, mut requested, mut additional, mut life) =
            (None, None, None, None, None, None);
        for a in &msg.attributes {
            match a {
                Attribute::RequestedTransport(t) => transport = transport.or(Some(*t)),
                Attribute::EvenPort(r) => even = even.or(Some(*r)),
                Attribute::ReservationToken(t) => token = token.or(Some(*t)),
                Attribute::RequestedAddressFamily(f) => requested = requested.or(Some(*f)),
                Attribute::AdditionalAddressFamily(f) => additional = additional.or(Some(*f)),
                Attribute::Lifetime(l) => life = life.or(Some(*l)),
                // DONT-FRAGMENT (§7.2): accepted; the relay sockets send whole datagrams.
                _ => {}
            }
        }
        let Some(transport) = transport else {
            return self.error(reply, 400, Some(auth));
        };
        if transport != UDP {
            return self.error(reply, 442, Some(auth));
        }
        // RFC 8656 §7.2: the combinations that make no sense are 400.
        if (token.is_some() && (even.is_some() || requested.is_some() || additional.is_some()))
            || (requested.is_some() && additional.is_some())
            || (even.is_some() && additional.is_some())
            || additional == Some(AddressFamily::V4)
        {
            return self.error(reply, 400, Some(auth));
        }
        if self
            .per_user
            .get(auth.username.as_str())
            .copied()
            .unwrap_or(0)
            >= self.config.max_allocations_per_user
        {
            return self.error(reply, 486, Some(auth));
        }
        if self.by_tuple.len() >= self.config.max_allocations {
            return self.error(reply, 508, Some(auth));
        }
        let mut relays: [Option<Relay>; 2] = [None, None];
        let mut new_token = None;
        let mut address_error = None;
        let primary;
        if let Some(t) = token {
            let Some(r) = self.reservations.remove(&t).filter(|r| r.expires > now) else {
                return self.error(reply, 508, Some(auth));
            };
            primary = family_index(r.addr.ip());
            if let Some(slot) = relays.get_mut(primary) {
                *slot = Some(Relay::new(r.addr, false));
            }
        } else {
            primary = index_of(requested.unwrap_or(AddressFamily::V4));
            let start = self.random_u32()?;
            let pair = even == Some(true);
            let Some(pool) = self.pools.get_mut(primary).and_then(Option::as_mut) else {
                return self.error(reply, 440, Some(auth));
            };
            let Some(addr) = pool.take(start, even.is_some(), pair) else {
                return self.error(reply, 508, Some(auth));
            };
            if pair {
                let mut t = [0u8; 8];
                self.entropy.fill(&mut t)?;
                let next = SocketAddr::new(addr.ip(), addr.port().wrapping_add(1));
                if self.reservations.len() >= self.config.max_allocations {
                    // Bounded: the oldest reservations make room rather than grow.
                    self.expire_reservations(now, true);
                }
                self.reservations.insert(
                    t,
                    Reservation {
                        addr: next,
                        expires: now + self.config.reservation_lifetime,
                    },
                );
                new_token = Some(t);
            }
            if let Some(slot) = relays.get_mut(primary) {
                *slot = Some(Relay::new(addr, even.is_none()));
            }
            if let Some(f) = additional {
                let i = index_of(f);
                let start = self.random_u32()?;
                match self.pools.get_mut(i).and_then(Option::as_mut) {
                    None => address_error = Some((f, 440)),
                    Some(pool) => match pool.take(start, false, false) {
                        None => address_error = Some((f, 508)),
                        Some(addr) => {
                            if let Some(slot) = relays.get_mut(i) {
                                *slot = Some(Relay::new(addr, true));
                            }
                        }
                    },
                }
            }
        }
        let alloc = Allocation {
            tuple: reply.tuple,
            username: auth.username.as_str().into(),
            key: auth.key.clone(),
            tid: msg.transaction_id,
            expires: now + self.lifetime(life),
            relays,
            primary,
            permissions: HashMap::new(),
            channels: HashMap::new(),
            peer_channels: HashMap::new(),
            pending: Some(Pending {
                mi: auth.mi,
                mi256: auth.mi256,
                fingerprint: reply.fingerprint,
            }),
            token: new_token,
            address_error,
        };
        let slot = match self.free_slots.pop() {
            Some(s) => s,
            None => {
                self.allocs.push(None);
                self.allocs.len() - 1
            }
        };
        for r in alloc.relays.iter().flatten() {
            self.by_relay.insert(r.addr, slot);
            self.events.push_back(Event::OpenRelay(r.addr));
        }
        *self.per_user.entry(alloc.username.clone()).or_insert(0) += 1;
        self.by_tuple.insert(reply.tuple, slot);
        tracing::info!(
            client = %Redacted(reply.tuple.0),
            user = %Redacted(&alloc.username),
            relays = alloc.relays.iter().flatten().count(),
            "allocation opening"
        );
        if let Some(s) = self.allocs.get_mut(slot) {
            *s = Some(alloc);
        }
        self.stats.allocations += 1;
        Ok(())
    }

    fn allocate_success(
        &mut self,
        now: Instant,
        slot: usize,
        reply: &Reply,
        auth: &Auth,
    ) -> Result<(), Error> {
        let Some(a) = self.allocs.get(slot).and_then(Option::as_ref) else {
            return Err(Violation::NoAllocation.into());
        };
        let lifetime = a.expires.saturating_duration_since(now).as_secs() as u32;
        let mut attrs: Vec<Attribute<'_>> = a
            .relays
            .iter()
            .flatten()
            .map(|r| Attribute::XorRelayedAddress(r.addr))
            .collect();
        attrs.push(Attribute::Lifetime(lifetime));
        if let Some(t) = a.token {
            attrs.push(Attribute::ReservationToken(t));
        }
        if let Some((family, code)) = a.address_error {
            attrs.push(Attribute::AddressErrorCode {
                family,
                code,
                reason: reason(code),
            });
        }
        attrs.push(Attribute::XorMappedAddress(reply.tuple.0));
        self.send_message(reply, Class::Success, &attrs, Some(auth))
    }

    /// The driver's answer to [`Event::OpenRelay`]: whether binding `relayed` worked.
    /// Once every relayed address of an allocation is bound its Allocate success
    /// response is queued. An unbindable port is not offered again: a port drawn
    /// freely from the pool is replaced by another (a new [`Event::OpenRelay`]), up to
    /// four ports per relayed address; a reserved or EVEN-PORT one, or the last
    /// attempt, answers 508 (or, for the additional family of a dual allocation,
    /// ADDRESS-ERROR-CODE 508).
    ///
    /// # Errors
    /// [`UsageError::UnknownRelay`] if no allocation waits for `relayed` (it ended
    /// meanwhile): the driver should close that socket.
    pub fn handle_relay_bound(
        &mut self,
        now: Instant,
        relayed: SocketAddr,
        ok: bool,
    ) -> Result<(), Error> {
        let slot = *self
            .by_relay
            .get(&relayed)
            .ok_or(UsageError::UnknownRelay)?;
        let i = family_index(relayed.ip());
        let Some(a) = self.allocs.get_mut(slot).and_then(Option::as_mut) else {
            return Err(UsageError::UnknownRelay.into());
        };
        let Some(Some(relay)) = a.relays.get_mut(i) else {
            return Err(UsageError::UnknownRelay.into());
        };
        if relay.addr != relayed {
            return Err(UsageError::UnknownRelay.into());
        }
        if ok {
            relay.bound = true;
        } else {
            tracing::warn!(
                relay = %Redacted(relayed),
                attempt = relay.attempts,
                "relay port could not be bound"
            );
            // The port stays marked taken in the pool: someone else holds it.
            if relay.replaceable && relay.attempts < RELAY_BIND_ATTEMPTS {
                let start = self.entropy.u32()?;
                let next = self
                    .pools
                    .get_mut(i)
                    .and_then(Option::as_mut)
                    .and_then(|pool| pool.take(start, false, false));
                if let Some(next) = next {
                    relay.addr = next;
                    relay.attempts += 1;
                    self.by_relay.remove(&relayed);
                    self.by_relay.insert(next, slot);
                    self.events.push_back(Event::OpenRelay(next));
                    return Ok(());
                }
            }
            if let Some(r) = a.relays.get_mut(i) {
                *r = None;
            }
            self.by_relay.remove(&relayed);
            if i == a.primary {
                let p = a.pending;
                let reply = Reply {
                    tuple: a.tuple,
                    method: Method::ALLOCATE,
                    tid: a.tid,
                    fingerprint: p.is_some_and(|p| p.fingerprint),
                };
                let auth = Auth {
                    username: String::new(),
                    key: a.key.clone(),
                    mi: p.is_some_and(|p| p.mi),
                    mi256: p.is_some_and(|p| p.mi256),
                };
                self.remove_allocation(slot);
                return self.error(&reply, 508, Some(&auth));
            }
            a.address_error = Some((family_of(i), 508));
        }
        self.maybe_complete(now, slot)
    }

    fn maybe_complete(&mut self, now: Instant, slot: usize) -> Result<(), Error> {
        let Some(a) = self.allocs.get_mut(slot).and_then(Option::as_mut) else {
            return Ok(());
        };
        if a.relays.iter().flatten().any(|r| !r.bound) {
            return Ok(());
        }
        let Some(p) = a.pending.take() else {
            return Ok(());
        };
        let reply = Reply {
            tuple: a.tuple,
            method: Method::ALLOCATE,
            tid: a.tid,
            fingerprint: p.fingerprint,
        };
        let auth = Auth {
            username: String::new(),
            key: a.key.clone(),
            mi: p.mi,
            mi256: p.mi256,
        };
        self.allocate_success(now, slot, &reply, &auth)
    }

    fn remove_allocation(&mut self, slot: usize) {
        let Some(a) = self.allocs.get_mut(slot).and_then(Option::take) else {
            return;
        };
        tracing::info!(client = %Redacted(a.tuple.0), "allocation closed");
        self.free_slots.push(slot);
        self.by_tuple.remove(&a.tuple);
        for r in a.relays.iter().flatten() {
            self.by_relay.remove(&r.addr);
            if let Some(pool) = self
                .pools
                .get_mut(family_index(r.addr.ip()))
                .and_then(Option::as_mut)
            {
                pool.release(r.addr.port());
            }
            self.events.push_back(Event::CloseRelay(r.addr));
        }
        if let Some(n) = self.per_user.get_mut(&a.username) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_user.remove(&a.username);
            }
        }
    }

    /// RFC 8656 §7.3-§7.4.
    fn refresh(
        &mut self,
        now: Instant,
        slot: usize,
        reply: &Reply,
        msg: &Message<'_>,
        auth: &Auth,
    ) -> Result<(), Error> {
        let life = msg.find(|a| match a {
            Attribute::Lifetime(l) => Some(*l),
            _ => None,
        });
        let family = msg.find(|a| match a {
            Attribute::RequestedAddressFamily(f) => Some(*f),
            _ => None,
        });
        let granted = self.lifetime(life);
        let Some(a) = self.allocs.get_mut(slot).and_then(Option::as_mut) else {
            return Err(Violation::NoAllocation.into());
        };
        if let Some(f) = family
            && a.relays.get(index_of(f)).is_none_or(Option::is_none)
        {
            // RFC 8656 §7.3: that family is not part of the allocation.
            return self.error(reply, 443, Some(auth));
        }
        if life == Some(0) {
            let relays = a.relays.iter().flatten().count();
            match family {
                // §7.3: a family of a dual allocation can be deleted alone.
                Some(f) if relays == 2 => {
                    let i = index_of(f);
                    if let Some(r) = a.relays.get_mut(i).and_then(Option::take) {
                        if i == a.primary {
                            a.primary = 1 - i;
                        }
                        self.by_relay.remove(&r.addr);
                        if let Some(pool) = self.pools.get_mut(i).and_then(Option::as_mut) {
                            pool.release(r.addr.port());
                        }
                        self.events.push_back(Event::CloseRelay(r.addr));
                    }
                }
                _ => self.remove_allocation(slot),
            }
            let attrs = [Attribute::Lifetime(0)];
            return self.send_message(reply, Class::Success, &attrs, Some(auth));
        }
        a.expires = now + granted;
        let attrs = [Attribute::Lifetime(granted.as_secs() as u32)];
        self.send_message(reply, Class::Success, &attrs, Some(auth))
    }

    /// The error a peer address gets, if any: 443 for a family the allocation lacks,
    /// 403 for a denied address.
    fn check_peer(&self, a: &Allocation, peer: SocketAddr) -> Option<u16> {
        if a.relays
            .get(family_index(peer.ip()))
            .is_none_or(Option::is_none)
        {
            return Some(443);
        }
        (!self.peer_allowed(peer.ip())).then_some(403)
    }

    /// RFC 8656 §9.2: all XOR-PEER-ADDRESSes are checked before any is installed.
    fn create_permission(
        &mut self,
        now: Instant,
        slot: usize,
        reply: &Reply,
        msg: &Message<'_>,
        auth: &Auth,
    ) -> Result<(), Error> {
        let Some(a) = self.allocs.get(slot).and_then(Option::as_ref) else {
            return Err(Violation::NoAllocation.into());
        };
        let mut new = 0;
        let mut any = false;
        for attr in &msg.attributes {
            if let Attribute::XorPeerAddress(p) = attr {
                any = true;
                if let Some(code) = self.check_peer(a, *p) {
                    return self.error(reply, code, Some(auth));
                }
                if !a.permissions.contains_key(&p.ip()) {
                    new += 1;
                }
            }
        }
        if !any {
            return self.error(reply, 400, Some(auth));
        }
        if a.permissions.len() + new > self.config.max_permissions {
            return self.error(reply, 508, Some(auth));
        }
        let expires = now + self.config.permission_lifetime;
        if let Some(a) = self.allocs.get_mut(slot).and_then(Option::as_mut) {
            for attr in &msg.attributes {
                if let Attribute::XorPeerAddress(p) = attr {
                    a.permissions.insert(p.ip(), expires);
                }
            }
        }
        self.send_message(reply, Class::Success, &[], Some(auth))
    }

    /// RFC 8656 §11.2.
    fn channel_bind(
        &mut self,
        now: Instant,
        slot: usize,
        reply: &Reply,
        msg: &Message<'_>,
        auth: &Auth,
    ) -> Result<(), Error> {
        let Some(a) = self.allocs.get(slot).and_then(Option::as_ref) else {
            return Err(Violation::NoAllocation.into());
        };
        let channel = msg.find(|a| match a {
            Attribute::ChannelNumber(n) => Some(*n),
            _ => None,
        });
        let peer = msg.find(|a| match a {
            Attribute::XorPeerAddress(p) => Some(*p),
            _ => None,
        });
        let (Some(channel), Some(peer)) = (channel, peer) else {
            return self.error(reply, 400, Some(auth));
        };
        if !self.channel_ok(channel) {
            return self.error(reply, 400, Some(auth));
        }
        if let Some(code) = self.check_peer(a, peer) {
            return self.error(reply, code, Some(auth));
        }
        // The channel is bound (or cooling down) to another peer, or the peer to
        // another channel: 400.
        if a.channels.get(&channel).is_some_and(|c| c.peer != peer)
            || a.peer_channels.get(&peer).is_some_and(|c| *c != channel)
        {
            return self.error(reply, 400, Some(auth));
        }
        if (!a.channels.contains_key(&channel) && a.channels.len() >= self.config.max_channels)
            || (!a.permissions.contains_key(&peer.ip())
                && a.permissions.len() >= self.config.max_permissions)
        {
            return self.error(reply, 508, Some(auth));
        }
        let (c_exp, p_exp) = (
            now + self.config.channel_lifetime,
            now + self.config.permission_lifetime,
        );
        if let Some(a) = self.allocs.get_mut(slot).and_then(Option::as_mut) {
            a.channels.insert(
                channel,
                Channel {
                    peer,
                    expires: c_exp,
                },
            );
            a.peer_channels.insert(peer, channel);
            // §11.2: binding a channel installs or refreshes the peer's permission.
            let p = a.permissions.entry(peer.ip()).or_insert(p_exp);
            *p = (*p).max(p_exp);
        }
        self.send_message(reply, Class::Success, &[], Some(auth))
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
            .filter_map(|(i, a)| a.as_ref().filter(|a| a.expires <= now).map(|_| i))
            .collect();
        for slot in expired {
            self.remove_allocation(slot);
        }
        for a in self.allocs.iter_mut().flatten() {
            a.permissions.retain(|_, t| *t > now);
            let peer_channels = &mut a.peer_channels;
            a.channels.retain(|_, c| {
                let keep = c.expires + CHANNEL_COOLDOWN > now;
                if !keep {
                    peer_channels.remove(&c.peer);
                }
                keep
            });
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

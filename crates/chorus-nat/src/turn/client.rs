//! The TURN client (RFC 8656) as a sans-IO core: allocate a relayed address, keep it
//! alive, install permissions and channels, and move application data through the
//! server.
//!
//! Requests run as [`crate::client::Client`] transactions (RFC 8489 §6.2: UDP
//! retransmissions, one 39.5 s timeout over TCP). Long-term credentials follow RFC 8489
//! §9.2: the first Allocate goes out without credentials; the 401 names REALM and NONCE
//! (and possibly PASSWORD-ALGORITHMS); every later request carries USERNAME, REALM,
//! NONCE and MESSAGE-INTEGRITY, or MESSAGE-INTEGRITY-SHA256 with the SHA-256 key when
//! the server offers SHA-256. A 438 (Stale Nonce) is retried with the new nonce. Retries
//! are bounded by [`Config::max_auth_attempts`].
//!
//! The run loop:
//! 1. Create the core with [`Client::new`] and call [`Client::allocate`].
//! 2. After that, after every command and every `handle_*`, drain
//!    [`Client::poll_transmit`] (send each datagram, or write it to the TCP stream)
//!    and [`Client::poll_event`] until `None`.
//! 3. Call [`Client::handle_timeout`] at [`Client::poll_timeout`]; an early call
//!    is a harmless no-op. `now` never goes backwards.
//! 4. Feed every datagram from the server (over TCP: every message cut out of the
//!    stream by a [`Deframer`]) to [`Client::handle_input`]; `Err` means it was
//!    rejected and nothing changed.
//!
//! ```
//! use std::time::Instant;
//! use chorus_crypto::SystemEntropy;
//! use chorus_nat::client::Transport;
//! use chorus_nat::turn::client::{Client, Config};
//!
//! let config = Config::new("192.0.2.1:3478".parse()?, Transport::Udp, "alice", "secret");
//! let mut turn = Client::new(config, Box::new(SystemEntropy::new()))?;
//! turn.allocate(Instant::now())?;
//! let request = turn.poll_transmit().expect("an Allocate request");
//! assert_eq!(request.dst, "192.0.2.1:3478".parse()?);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic
    )
)]

#[cfg(any(test, feature = "_fuzz"))]
#[doc(hidden)]
pub mod fuzz;
mod stream;
#[cfg(test)]
mod tests;

pub use stream::Deframer;

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use chorus_framing::{Entropy, Transmit};

use super::channel_data::{ChannelData, MAX_CHANNEL, MIN_CHANNEL, is_channel_data};
use crate::client::{
    Client as StunClient, ClientConfig as StunClientConfig, Event as StunEvent, Response, Transport,
};
use crate::error::{Error, Limit, UsageError, Violation};
use crate::stun::{
    AddressFamily, AlgorithmEntry, AlgorithmList, Attribute, Class, Header, Key, Message, Method,
    PasswordAlgorithm, TransactionId, types,
};

/// RFC 8656 §9: a permission lives 300 s unless refreshed.
const PERMISSION_LIFETIME: Duration = Duration::from_secs(300);
/// RFC 8656 §11: a channel binding lives 600 s unless refreshed.
const CHANNEL_LIFETIME: Duration = Duration::from_secs(600);
/// How long to wait before retrying a refresh that could not even be started (the
/// transaction table was full).
const RETRY_DELAY: Duration = Duration::from_secs(1);
/// REQUESTED-TRANSPORT: UDP (RFC 8656 §18.8; the only transport RFC 8656 relays).
const UDP: u8 = 17;
/// Longest lifetime believed from a server (RFC 8656 §7.2 suggests at most an hour);
/// longer grants are taken as this, which only makes the refreshes earlier.
const MAX_GRANTED_LIFETIME: u32 = 86_400;

/// Which relayed address families to ask for (RFC 8656 §7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// IPv4 only, the server's default: no family attribute is sent.
    V4,
    /// IPv6 only: REQUESTED-ADDRESS-FAMILY IPv6 (RFC 8656 §18.6).
    V6,
    /// IPv4 and IPv6: ADDITIONAL-ADDRESS-FAMILY IPv6 (RFC 8656 §18.11). The server may
    /// grant only one; [`Event::Allocated`] lists what it granted.
    Dual,
}

/// TURN client configuration; validated by [`Client::new`].
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Config {
    /// The TURN server.
    pub server: SocketAddr,
    /// UDP datagrams, or one TCP stream carrying STUN messages and padded ChannelData.
    pub transport: Transport,
    /// The long-term credential's username (RFC 8489 §9.2), at most 512 bytes.
    pub username: String,
    /// The long-term credential's password, used as given (the caller applies
    /// OpaqueString if its passwords need it). Never printed by `Debug`.
    pub password: String,
    /// The allocation lifetime to ask for (LIFETIME, RFC 8656 §7.1); the server decides.
    /// Default 600 s; 1 s to `u32::MAX` seconds.
    pub lifetime: Duration,
    /// Relayed address families. Default [`Family::V4`].
    pub family: Family,
    /// EVEN-PORT (RFC 8656 §7.1, §18.7): `Some(reserve)` asks for an even relayed port
    /// and, when `reserve`, to keep the next port for a second allocation (the token
    /// comes back in [`Event::Allocated`]). Default `None`.
    pub even_port: Option<bool>,
    /// RESERVATION-TOKEN (RFC 8656 §18.10): take the port another allocation reserved.
    /// Cannot be combined with `even_port` or a family other than IPv4 (RFC 8656
    /// §7.2). Default `None`.
    pub reservation_token: Option<[u8; 8]>,
    /// SOFTWARE to send, at most 763 bytes. Default `None`.
    pub software: Option<String>,
    /// Permissions kept at most ([`Limit::Permissions`] beyond). Default 64; 1..=4096.
    pub max_permissions: usize,
    /// Channels kept at most ([`Limit::Channels`] beyond). Default 64; 1..=4096 (the
    /// channel number space, RFC 8656 §12).
    pub max_channels: usize,
    /// Outgoing data datagrams and events queued at most ([`Limit::Queue`] beyond):
    /// the caller drains them after every call. Default 256; at least 1.
    pub max_queued: usize,
    /// Requests sent per operation at most, counting the retries after 401 and 438.
    /// Default 3; 2..=8.
    pub max_auth_attempts: u32,
    /// When to refresh a permission after it was installed. Default 240 s; below the
    /// 300 s permission lifetime (RFC 8656 §9) and at least 1 s.
    pub permission_refresh: Duration,
    /// When to refresh a channel binding after it was confirmed. Default 480 s; below
    /// the 600 s binding lifetime (RFC 8656 §11) and at least 1 s.
    pub channel_refresh: Duration,
    /// STUN transaction settings (retransmissions, the transaction cap, decode limits).
    pub stun: StunClientConfig,
}

impl Config {
    /// A configuration with the defaults and these credentials.
    #[must_use]
    pub fn new(server: SocketAddr, transport: Transport, username: &str, password: &str) -> Self {
        Self {
            server,
            transport,
            username: username.to_owned(),
            password: password.to_owned(),
            lifetime: Duration::from_secs(600),
            family: Family::V4,
            even_port: None,
            reservation_token: None,
            software: None,
            max_permissions: 64,
            max_channels: 64,
            max_queued: 256,
            max_auth_attempts: 3,
            permission_refresh: Duration::from_secs(240),
            channel_refresh: Duration::from_secs(480),
            stun: StunClientConfig::default(),
        }
    }

    fn validate(&self) -> Result<(), UsageError> {
        let bad = |ok: bool, what| {
            if ok {
                Ok(())
            } else {
                Err(UsageError::InvalidConfig(what))
            }
        };
        bad(
            self.username.len() <= crate::stun::MAX_USERNAME,
            "username longer than 512 bytes",
        )?;
        bad(
            self.software
                .as_ref()
                .is_none_or(|s| s.len() <= crate::stun::MAX_TEXT),
            "software longer than 763 bytes",
        )?;
        bad(
            (1..=u64::from(u32::MAX)).contains(&self.lifetime.as_secs()),
            "lifetime outside 1 s..=u32::MAX s",
        )?;
        bad(
            !(self.reservation_token.is_some()
                && (self.even_port.is_some() || self.family != Family::V4)),
            "reservation_token with even_port or a non-IPv4 family (RFC 8656 §7.2)",
        )?;
        bad(
            (1..=4096).contains(&self.max_permissions),
            "max_permissions outside 1..=4096",
        )?;
        bad(
            (1..=4096).contains(&self.max_channels),
            "max_channels outside 1..=4096",
        )?;
        bad(self.max_queued >= 1, "max_queued is 0")?;
        bad(
            (2..=8).contains(&self.max_auth_attempts),
            "max_auth_attempts outside 2..=8",
        )?;
        bad(
            self.permission_refresh >= Duration::from_secs(1)
                && self.permission_refresh < PERMISSION_LIFETIME,
            "permission_refresh outside 1 s..300 s",
        )?;
        bad(
            self.channel_refresh >= Duration::from_secs(1)
                && self.channel_refresh < CHANNEL_LIFETIME,
            "channel_refresh outside 1 s..600 s",
        )
    }
}

impl core::fmt::Debug for Config {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Config")
            .field("server", &self.server)
            .field("transport", &self.transport)
            .field("username", &self.username)
            .field("password", &"..")
            .field("lifetime", &self.lifetime)
            .field("family", &self.family)
            .field("even_port", &self.even_port)
            .field("reservation_token", &self.reservation_token.map(|_| ".."))
            .finish_non_exhaustive()
    }
}

/// What the client reports.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The allocation exists (RFC 8656 §7.3).
    Allocated {
        /// XOR-RELAYED-ADDRESS values: one, or two for [`Family::Dual`].
        relayed: Vec<SocketAddr>,
        /// XOR-MAPPED-ADDRESS: the client's server-reflexive address.
        mapped: Option<SocketAddr>,
        /// The lifetime the server granted.
        lifetime: Duration,
        /// RESERVATION-TOKEN: pass it to a second client's
        /// [`Config::reservation_token`] to take the reserved odd port.
        reservation_token: Option<[u8; 8]>,
    },
    /// The Allocate failed; the client is finished.
    AllocationFailed {
        /// ERROR-CODE's code, or `None` for a timeout or an unusable response.
        code: Option<u16>,
        /// The server's reason phrase, or what was wrong locally.
        reason: String,
    },
    /// A Refresh succeeded (RFC 8656 §8).
    Refreshed {
        /// The new lifetime.
        lifetime: Duration,
    },
    /// The allocation ended without [`Client::close`]: a refresh failed or it
    /// expired. The client is finished.
    Lost {
        /// ERROR-CODE's code, or `None` for a timeout or expiry.
        code: Option<u16>,
        /// The server's reason phrase, or what happened locally.
        reason: String,
    },
    /// [`Client::close`] completed (or the allocation was already gone).
    Closed,
    /// A CreatePermission (or a ChannelBind, which also installs one) succeeded for the
    /// first time for this IP (RFC 8656 §9).
    PermissionCreated {
        /// The peer IP.
        ip: IpAddr,
    },
    /// Creating or refreshing a permission failed; it was removed.
    PermissionFailed {
        /// The peer IP.
        ip: IpAddr,
        /// ERROR-CODE's code, or `None` for a timeout.
        code: Option<u16>,
    },
    /// A ChannelBind succeeded for the first time (RFC 8656 §11): data to this peer now
    /// goes as ChannelData.
    ChannelBound {
        /// The peer.
        peer: SocketAddr,
        /// The channel number.
        channel: u16,
    },
    /// Binding or refreshing a channel failed; it was removed (data goes as Send
    /// indications again).
    ChannelFailed {
        /// The peer.
        peer: SocketAddr,
        /// The channel number.
        channel: u16,
        /// ERROR-CODE's code, or `None` for a timeout.
        code: Option<u16>,
    },
    /// Data from a peer, relayed by the server (a Data indication or ChannelData).
    Data {
        /// The peer.
        peer: SocketAddr,
        /// The application data.
        data: Bytes,
    },
}

/// The credentials learned from a 401/438 (RFC 8489 §9.2.4).
struct Auth {
    realm: String,
    nonce: String,
    /// PASSWORD-ALGORITHMS as the server sent it, echoed in every request.
    algorithms: Option<Vec<u8>>,
    /// The chosen algorithm, sent as PASSWORD-ALGORITHM when `algorithms` is set.
    algorithm: PasswordAlgorithm,
    key: Key,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Allocate,
    Refresh { lifetime: u32 },
    Permission { ip: IpAddr },
    ChannelBind { peer: SocketAddr, channel: u16 },
}

#[derive(Debug, Clone, Copy)]
struct Request {
    kind: Kind,
    /// Requests sent for this operation so far.
    attempts: u32,
    /// Whether the request carried credentials, to tell a wrong password (401 to an
    /// authenticated request with the current nonce) from a first challenge.
    authenticated: bool,
}

#[derive(Debug)]
enum State {
    Idle,
    Allocating,
    Allocated {
        expires_at: Instant,
        refresh_at: Instant,
        refreshing: bool,
    },
    Closing,
    Finished,
}

#[derive(Debug)]
struct Permission {
    installed: bool,
    refresh_at: Option<Instant>,
    in_flight: bool,
}

#[derive(Debug)]
struct Channel {
    number: u16,
    confirmed: bool,
    refresh_at: Option<Instant>,
    in_flight: bool,
}

/// A TURN client (RFC 8656) for one allocation on one server. Performs no I/O.
///
/// The run loop is in the [module docs](self). Data to a peer needs a permission for
/// its IP, requested with [`Client::create_permission`] (or implicitly by
/// [`Client::bind_channel`]): [`Client::send`] refuses a peer without one
/// ([`UsageError::NoPermission`]) rather than installing one behind the caller's back,
/// so that every request the server sees was asked for. Data sent before
/// [`Event::PermissionCreated`] may be dropped by the server. Permissions and channels
/// are refreshed automatically until [`Client::remove_permission`] or
/// [`Client::close`]; the allocation is refreshed at 3/4 of its lifetime.
pub struct Client {
    config: Config,
    stun: StunClient,
    auth: Option<Auth>,
    state: State,
    relayed: Vec<SocketAddr>,
    mapped: Option<SocketAddr>,
    pending: HashMap<TransactionId, Request>,
    permissions: HashMap<IpAddr, Permission>,
    channels: HashMap<SocketAddr, Channel>,
    channel_peers: HashMap<u16, SocketAddr>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    /// Send indications get no response, so their ids need not be unpredictable: a
    /// random base plus a counter saves an entropy draw per datagram.
    indication_base: [u8; 12],
    indication_count: u64,
}

impl core::fmt::Debug for Client {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Client")
            .field("state", &self.state)
            .field("permissions", &self.permissions.len())
            .field("channels", &self.channels.len())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client that has not allocated yet.
    ///
    /// # Errors
    /// [`UsageError::InvalidConfig`] for a value outside its documented bounds (or an
    /// invalid [`StunClientConfig`]), [`Error::Entropy`] if the source fails.
    pub fn new(config: Config, mut entropy: Box<dyn Entropy>) -> Result<Self, Error> {
        config.validate()?;
        let mut indication_base = [0u8; 12];
        entropy.fill(&mut indication_base)?;
        let stun = StunClient::new(config.stun.clone(), entropy)?;
        Ok(Self {
            config,
            stun,
            auth: None,
            state: State::Idle,
            relayed: Vec::new(),
            mapped: None,
            pending: HashMap::new(),
            permissions: HashMap::new(),
            channels: HashMap::new(),
            channel_peers: HashMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            indication_base,
            indication_count: 0,
        })
    }

    /// The configuration.
    #[must_use]
    pub const fn config(&self) -> &Config {
        &self.config
    }

    /// Sends the Allocate request (RFC 8656 §7.1). The outcome is [`Event::Allocated`]
    /// or [`Event::AllocationFailed`].
    ///
    /// # Errors
    /// [`UsageError::InvalidConfig`] if already started; else as
    /// [`StunClient::start_message`].
    pub fn allocate(&mut self, now: Instant) -> Result<(), Error> {
        if !matches!(self.state, State::Idle) {
            return Err(UsageError::InvalidConfig("allocate called twice").into());
        }
        self.start(now, Kind::Allocate, 0)?;
        self.state = State::Allocating;
        Ok(())
    }

    /// The relayed addresses, once allocated.
    #[must_use]
    pub fn relayed(&self) -> &[SocketAddr] {
        &self.relayed
    }

    /// The server-reflexive address the Allocate response reported.
    #[must_use]
    pub const fn mapped(&self) -> Option<SocketAddr> {
        self.mapped
    }

    /// Whether the allocation exists (allocated and not closing or lost).
    #[must_use]
    pub const fn is_allocated(&self) -> bool {
        matches!(self.state, State::Allocated { .. })
    }

    /// Whether a permission for `ip` was requested (and not removed or failed).
    #[must_use]
    pub fn has_permission(&self, ip: IpAddr) -> bool {
        self.permissions.contains_key(&ip)
    }

    /// Requests (Allocate, Refresh, CreatePermission, ChannelBind) awaiting a response.
    #[must_use]
    pub fn pending_requests(&self) -> usize {
        self.pending.len()
    }

    /// Whether the permission for `ip` is installed (`Some(true)`), requested and not yet
    /// confirmed (`Some(false)`), or unknown (`None`).
    #[must_use]
    pub fn permission(&self, ip: IpAddr) -> Option<bool> {
        self.permissions.get(&ip).map(|p| p.installed)
    }

    /// The channel bound (or being bound) to `peer`, and whether the server confirmed it.
    #[must_use]
    pub fn channel(&self, peer: SocketAddr) -> Option<(u16, bool)> {
        self.channels.get(&peer).map(|c| (c.number, c.confirmed))
    }

    /// Asks for a permission for `ip` (RFC 8656 §9) and keeps refreshing it until
    /// [`Client::remove_permission`]. Asking again for a known IP does nothing.
    ///
    /// # Errors
    /// [`UsageError::NotAllocated`], [`Limit::Permissions`], or a transaction error.
    pub fn create_permission(&mut self, now: Instant, ip: IpAddr) -> Result<(), Error> {
        self.require_allocated()?;
        if self.permissions.contains_key(&ip) {
            return Ok(());
        }
        if self.permissions.len() >= self.config.max_permissions {
            return Err(Limit::Permissions(self.permissions.len()).into());
        }
        self.start(now, Kind::Permission { ip }, 0)?;
        self.permissions.insert(
            ip,
            Permission {
                installed: false,
                refresh_at: None,
                in_flight: true,
            },
        );
        Ok(())
    }

    /// Stops refreshing the permission for `ip` and the channels to peers at `ip`; the
    /// server lets them expire (RFC 8656 has no way to delete them). Returns whether
    /// there was one.
    pub fn remove_permission(&mut self, ip: IpAddr) -> bool {
        self.channels.retain(|peer, c| {
            let keep = peer.ip() != ip;
            if !keep {
                self.channel_peers.remove(&c.number);
            }
            keep
        });
        self.permissions.remove(&ip).is_some()
    }

    /// Binds a channel to `peer` (RFC 8656 §11), picking the lowest free number in
    /// 0x4000..=0x4FFF, and keeps refreshing it (and the permission for the peer's IP,
    /// which the binding installs) until [`Client::remove_permission`]. Returns the
    /// number; binding a peer again returns its existing number.
    ///
    /// # Errors
    /// [`UsageError::NotAllocated`], [`Limit::Channels`], [`Limit::Permissions`], or
    /// a transaction error.
    pub fn bind_channel(&mut self, now: Instant, peer: SocketAddr) -> Result<u16, Error> {
        self.require_allocated()?;
        if let Some(c) = self.channels.get(&peer) {
            return Ok(c.number);
        }
        if self.channels.len() >= self.config.max_channels {
            return Err(Limit::Channels(self.channels.len()).into());
        }
        let new_permission = !self.permissions.contains_key(&peer.ip());
        if new_permission && self.permissions.len() >= self.config.max_permissions {
            return Err(Limit::Permissions(self.permissions.len()).into());
        }
        let number = (MIN_CHANNEL..=MAX_CHANNEL)
            .find(|n| !self.channel_peers.contains_key(n))
            .ok_or(Limit::Channels(self.channels.len()))?;
        self.start(
            now,
            Kind::ChannelBind {
                peer,
                channel: number,
            },
            0,
        )?;
        self.channels.insert(
            peer,
            Channel {
                number,
                confirmed: false,
                refresh_at: None,
                in_flight: true,
            },
        );
        self.channel_peers.insert(number, peer);
        if new_permission {
            // The ChannelBind installs it; from then on it is refreshed like any other.
            self.permissions.insert(
                peer.ip(),
                Permission {
                    installed: false,
                    refresh_at: None,
                    in_flight: true,
                },
            );
        }
        Ok(number)
    }

    /// Sends `data` to `peer` through the relay: as ChannelData once a channel to
    /// `peer` is confirmed (RFC 8656 §12.5), else as a Send indication (§10.1).
    ///
    /// # Errors
    /// [`UsageError::NotAllocated`], [`UsageError::NoPermission`] if no permission was
    /// requested for `peer`'s IP, [`Limit::Queue`] if the caller has not drained
    /// [`Client::poll_transmit`], or [`UsageError::ValueTooLong`] for data that
    /// does not fit a message.
    pub fn send(&mut self, peer: SocketAddr, data: &[u8]) -> Result<(), Error> {
        self.require_allocated()?;
        if !self.permissions.contains_key(&peer.ip()) {
            return Err(UsageError::NoPermission.into());
        }
        if self.transmits.len() >= self.config.max_queued {
            return Err(Limit::Queue(self.transmits.len()).into());
        }
        let transport = self.config.transport;
        let mut out = BytesMut::new();
        match self.channels.get(&peer) {
            Some(c) if c.confirmed => {
                let msg = ChannelData {
                    channel: c.number,
                    data,
                };
                out.reserve(msg.encoded_len(transport));
                msg.encode(transport, &mut out)
                    .map_err(|_| UsageError::ValueTooLong(types::DATA))?;
            }
            _ => {
                let mut id = self.indication_base;
                let count = self.indication_count.to_be_bytes();
                for (b, c) in id.iter_mut().rev().zip(count.iter().rev()) {
                    *b ^= c;
                }
                self.indication_count = self.indication_count.wrapping_add(1);
                let mut msg = Message::new(Class::Indication, Method::SEND, TransactionId(id));
                msg.attributes.push(Attribute::XorPeerAddress(peer));
                msg.attributes.push(Attribute::Data(data));
                msg.encode(None, &mut out)?;
            }
        }
        self.transmits
            .push_back(Transmit::new(self.config.server, out.freeze()));
        Ok(())
    }

    /// Deletes the allocation: a Refresh with LIFETIME 0 (RFC 8656 §8). Ends with
    /// [`Event::Closed`]; permissions and channels are forgotten at once. Closing a
    /// client that never allocated, or is finished, reports [`Event::Closed`] directly.
    ///
    /// # Errors
    /// A transaction error; the client is then finished anyway.
    pub fn close(&mut self, now: Instant) -> Result<(), Error> {
        for id in self.pending.drain().map(|(id, _)| id) {
            let _ = self.stun.cancel(id);
        }
        self.permissions.clear();
        self.channels.clear();
        self.channel_peers.clear();
        let was_allocated = matches!(self.state, State::Allocated { .. });
        if !was_allocated {
            if !matches!(self.state, State::Finished | State::Closing) {
                self.push_event(Event::Closed);
            }
            self.state = State::Finished;
            return Ok(());
        }
        self.state = State::Closing;
        if let Err(e) = self.start(now, Kind::Refresh { lifetime: 0 }, 0) {
            self.state = State::Finished;
            self.push_event(Event::Closed);
            return Err(e);
        }
        Ok(())
    }

    /// One datagram (UDP) or one message cut out of the stream by a [`Deframer`]
    /// (TCP) from `from`, which must be the server.
    ///
    /// # Errors
    /// Rejected, nothing changed: [`Violation::UnexpectedPeer`] for a source other than
    /// the server or a Data indication from a peer without a permission,
    /// [`Violation::UnknownChannel`], a decode error, a response to no outstanding
    /// request, or [`Limit::Queue`] when the event queue is full.
    pub fn handle_input(
        &mut self,
        now: Instant,
        from: SocketAddr,
        bytes: &[u8],
    ) -> Result<(), Error> {
        if from != self.config.server {
            return Err(Violation::UnexpectedPeer.into());
        }
        let first = bytes.first().copied().unwrap_or(0);
        if is_channel_data(first) {
            // RFC 8656 §12.6: data on a channel bound (or being bound) to a peer.
            let (msg, _) = ChannelData::decode(bytes, self.config.transport)?;
            let peer = *self
                .channel_peers
                .get(&msg.channel)
                .ok_or(Violation::UnknownChannel(msg.channel))?;
            return self.deliver(peer, msg.data);
        }
        let header = Header::decode(bytes)?;
        match header.class {
            Class::Indication if header.method == Method::DATA => {
                // RFC 8656 §10.4.
                let msg = Message::decode(bytes, &self.config.stun.limits)?;
                let peer = msg
                    .find(|a| match a {
                        Attribute::XorPeerAddress(p) => Some(*p),
                        _ => None,
                    })
                    .ok_or(Violation::MissingAttribute(types::XOR_PEER_ADDRESS))?;
                let data = msg
                    .find(|a| match a {
                        Attribute::Data(d) => Some(*d),
                        _ => None,
                    })
                    .ok_or(Violation::MissingAttribute(types::DATA))?;
                if !self.permissions.contains_key(&peer.ip()) {
                    return Err(Violation::UnexpectedPeer.into());
                }
                self.deliver(peer, data)
            }
            Class::Success | Class::Error => {
                self.stun.handle_input(now, from, bytes)?;
                self.drain_stun(now);
                Ok(())
            }
            _ => Err(Violation::UnexpectedClass.into()),
        }
    }

    /// Retransmits, times out and refreshes what is due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.stun.handle_timeout(now);
        self.drain_stun(now);
        if let State::Allocated {
            expires_at,
            refresh_at,
            refreshing,
        } = self.state
        {
            if now >= expires_at {
                self.lose(None, "allocation expired");
                return;
            }
            if !refreshing && now >= refresh_at {
                let lifetime = lifetime_secs(self.config.lifetime);
                match self.start(now, Kind::Refresh { lifetime }, 0) {
                    Ok(_) => self.set_refreshing(true),
                    Err(_) => self.set_refresh_at(now + RETRY_DELAY),
                }
            }
        }
        if !self.is_allocated() {
            return;
        }
        let due: Vec<IpAddr> = self
            .permissions
            .iter()
            .filter(|(_, p)| !p.in_flight && p.refresh_at.is_some_and(|t| t <= now))
            .map(|(ip, _)| *ip)
            .collect();
        for ip in due {
            let started = self.start(now, Kind::Permission { ip }, 0).is_ok();
            if let Some(p) = self.permissions.get_mut(&ip) {
                if started {
                    p.in_flight = true;
                } else {
                    p.refresh_at = Some(now + RETRY_DELAY);
                }
            }
        }
        let due: Vec<(SocketAddr, u16)> = self
            .channels
            .iter()
            .filter(|(_, c)| !c.in_flight && c.refresh_at.is_some_and(|t| t <= now))
            .map(|(peer, c)| (*peer, c.number))
            .collect();
        for (peer, channel) in due {
            let started = self
                .start(now, Kind::ChannelBind { peer, channel }, 0)
                .is_ok();
            if let Some(c) = self.channels.get_mut(&peer) {
                if started {
                    c.in_flight = true;
                } else {
                    c.refresh_at = Some(now + RETRY_DELAY);
                }
            }
        }
    }

    /// The next datagram to send to the server (over TCP: the next bytes to write).
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.stun
            .poll_transmit()
            .or_else(|| self.transmits.pop_front())
    }

    /// The next event.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Client::handle_timeout`] should next be called.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut next = self.stun.poll_timeout();
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        if let State::Allocated {
            expires_at,
            refresh_at,
            refreshing,
        } = self.state
        {
            consider(Some(expires_at));
            if !refreshing {
                consider(Some(refresh_at));
            }
            for p in self.permissions.values().filter(|p| !p.in_flight) {
                consider(p.refresh_at);
            }
            for c in self.channels.values().filter(|c| !c.in_flight) {
                consider(c.refresh_at);
            }
        }
        next
    }

    fn require_allocated(&self) -> Result<(), Error> {
        if self.is_allocated() {
            Ok(())
        } else {
            Err(UsageError::NotAllocated.into())
        }
    }

    fn push_event(&mut self, e: Event) {
        self.events.push_back(e);
    }

    fn deliver(&mut self, peer: SocketAddr, data: &[u8]) -> Result<(), Error> {
        // Control events are few and bounded by the tables; data is what a peer can
        // flood with, so only data is refused when the caller falls behind.
        if self.events.len() >= self.config.max_queued {
            return Err(Limit::Queue(self.events.len()).into());
        }
        self.push_event(Event::Data {
            peer,
            data: Bytes::copy_from_slice(data),
        });
        Ok(())
    }

    fn set_refreshing(&mut self, value: bool) {
        if let State::Allocated { refreshing, .. } = &mut self.state {
            *refreshing = value;
        }
    }

    fn set_refresh_at(&mut self, at: Instant) {
        if let State::Allocated { refresh_at, .. } = &mut self.state {
            *refresh_at = at;
        }
    }

    /// Starts the request for `kind`, with credentials once known.
    fn start(&mut self, now: Instant, kind: Kind, attempts: u32) -> Result<TransactionId, Error> {
        let method = match kind {
            Kind::Allocate => Method::ALLOCATE,
            Kind::Refresh { .. } => Method::REFRESH,
            Kind::Permission { .. } => Method::CREATE_PERMISSION,
            Kind::ChannelBind { .. } => Method::CHANNEL_BIND,
        };
        let cfg = &self.config;
        let mut msg = Message::new(Class::Request, method, TransactionId::new([0; 12]));
        let a = &mut msg.attributes;
        match kind {
            Kind::Allocate => {
                // RFC 8656 §7.1.
                a.push(Attribute::RequestedTransport(UDP));
                a.push(Attribute::Lifetime(lifetime_secs(cfg.lifetime)));
                match cfg.family {
                    Family::V4 => {}
                    Family::V6 => a.push(Attribute::RequestedAddressFamily(AddressFamily::V6)),
                    Family::Dual => a.push(Attribute::AdditionalAddressFamily(AddressFamily::V6)),
                }
                if let Some(reserve) = cfg.even_port {
                    a.push(Attribute::EvenPort(reserve));
                }
                if let Some(token) = cfg.reservation_token {
                    a.push(Attribute::ReservationToken(token));
                }
            }
            Kind::Refresh { lifetime } => a.push(Attribute::Lifetime(lifetime)),
            Kind::Permission { ip } => a.push(Attribute::XorPeerAddress(SocketAddr::new(ip, 0))),
            Kind::ChannelBind { peer, channel } => {
                a.push(Attribute::ChannelNumber(channel));
                a.push(Attribute::XorPeerAddress(peer));
            }
        }
        if let Some(s) = &cfg.software {
            a.push(Attribute::Software(s));
        }
        let mut key = None;
        if let Some(auth) = &self.auth {
            // RFC 8489 §9.2.4: USERNAME, REALM, NONCE, the algorithms as offered.
            a.push(Attribute::Username(&cfg.username));
            a.push(Attribute::Realm(&auth.realm));
            a.push(Attribute::Nonce(&auth.nonce));
            if let Some(list) = &auth.algorithms {
                let list = AlgorithmList::from_wire(list)?;
                a.push(Attribute::PasswordAlgorithms(list));
                a.push(Attribute::PasswordAlgorithm(AlgorithmEntry {
                    algorithm: auth.algorithm.number(),
                    parameters: &[],
                }));
            }
            if auth.algorithm == PasswordAlgorithm::Sha256 {
                msg.message_integrity_sha256 = true;
            } else {
                msg.message_integrity = true;
            }
            key = Some(&auth.key);
        }
        msg.fingerprint = true;
        let authenticated = key.is_some();
        let id = self
            .stun
            .start_message(now, cfg.server, cfg.transport, msg, key)?;
        self.pending.insert(
            id,
            Request {
                kind,
                attempts: attempts + 1,
                authenticated,
            },
        );
        Ok(id)
    }

    fn drain_stun(&mut self, now: Instant) {
        while let Some(e) = self.stun.poll_event() {
            match e {
                StunEvent::Response(r) => self.on_response(now, &r),
                StunEvent::TimedOut { id, .. } => {
                    if let Some(req) = self.pending.remove(&id) {
                        self.fail(req.kind, None, "no response");
                    }
                }
            }
        }
    }

    fn on_response(&mut self, now: Instant, r: &Response) {
        let Some(req) = self.pending.remove(&r.id) else {
            return;
        };
        let Ok(msg) = Message::decode(&r.bytes, &self.config.stun.limits) else {
            self.fail(req.kind, None, "undecodable response");
            return;
        };
        if msg.class == Class::Error {
            let (code, reason) = msg
                .error_code()
                .unwrap_or((0, "error response without ERROR-CODE"));
            if (code == 401 || code == 438) && self.retry_auth(now, &msg, req) {
                return;
            }
            let code = (code != 0).then_some(code);
            self.fail(req.kind, code, reason);
            return;
        }
        match req.kind {
            Kind::Allocate => self.on_allocated(now, &msg),
            Kind::Refresh { lifetime: 0 } => {
                self.state = State::Finished;
                self.push_event(Event::Closed);
            }
            Kind::Refresh { .. } => {
                if let State::Allocated { .. } = self.state {
                    let granted = msg
                        .find(|a| match a {
                            Attribute::Lifetime(l) => Some(*l),
                            _ => None,
                        })
                        .unwrap_or_else(|| lifetime_secs(self.config.lifetime));
                    if granted == 0 {
                        self.lose(None, "refresh granted lifetime 0");
                        return;
                    }
                    let lifetime =
                        Duration::from_secs(u64::from(granted.min(MAX_GRANTED_LIFETIME)));
                    self.state = allocated_state(now, lifetime);
                    self.push_event(Event::Refreshed { lifetime });
                }
            }
            Kind::Permission { ip } => {
                if let Some(p) = self.permissions.get_mut(&ip) {
                    let first = !p.installed;
                    p.installed = true;
                    p.in_flight = false;
                    p.refresh_at = Some(now + self.config.permission_refresh);
                    if first {
                        self.push_event(Event::PermissionCreated { ip });
                    }
                }
            }
            Kind::ChannelBind { peer, channel } => {
                let Some(c) = self.channels.get_mut(&peer).filter(|c| c.number == channel) else {
                    return;
                };
                let first = !c.confirmed;
                c.confirmed = true;
                c.in_flight = false;
                c.refresh_at = Some(now + self.config.channel_refresh);
                if first {
                    self.push_event(Event::ChannelBound { peer, channel });
                }
                // RFC 8656 §11.3: the binding installed or refreshed the permission.
                if let Some(p) = self.permissions.get_mut(&peer.ip()) {
                    let first = !p.installed;
                    p.installed = true;
                    if p.refresh_at.is_none() || first {
                        p.in_flight = false;
                        p.refresh_at = Some(now + self.config.permission_refresh);
                    }
                    if first {
                        self.push_event(Event::PermissionCreated { ip: peer.ip() });
                    }
                }
            }
        }
    }

    /// RFC 8489 §9.2.5: a 401 gives REALM and NONCE, a 438 a new NONCE; retry once per
    /// change, within `max_auth_attempts`. Returns whether a retry was started.
    fn retry_auth(&mut self, now: Instant, msg: &Message<'_>, req: Request) -> bool {
        let text = |want: u16| {
            msg.find(|a| match (a, want) {
                (Attribute::Realm(s), types::REALM) | (Attribute::Nonce(s), types::NONCE) => {
                    Some(*s)
                }
                _ => None,
            })
        };
        let Some(nonce) = text(types::NONCE) else {
            return false;
        };
        let code = msg.error_code().map_or(0, |(c, _)| c);
        let realm = match (text(types::REALM), &self.auth) {
            (Some(r), _) => r.to_owned(),
            (None, Some(a)) if code == 438 => a.realm.clone(),
            _ => return false,
        };
        // A 401 to a request that carried the current realm and nonce means the
        // credentials are wrong: retrying cannot help.
        if code == 401
            && req.authenticated
            && self
                .auth
                .as_ref()
                .is_some_and(|a| a.realm == realm && a.nonce == nonce)
        {
            return false;
        }
        let offered = msg.find(|a| match a {
            Attribute::PasswordAlgorithms(l) => Some(*l),
            _ => None,
        });
        // RFC 8489 §9.2.5: a nonce announcing "Password algorithms" without a
        // PASSWORD-ALGORITHMS attribute means someone stripped the offer (a bid-down
        // attack): do not retry with a weaker algorithm.
        if offered.is_none()
            && crate::stun::SecurityFeatures::from_nonce(nonce)
                .is_some_and(|f| f.password_algorithms)
        {
            return false;
        }
        let (algorithms, algorithm) = match offered {
            None => (None, PasswordAlgorithm::Md5),
            Some(list) => {
                // RFC 8489 §9.2.4: the first algorithm of the server's list we support.
                let Some(alg) = list
                    .iter()
                    .find_map(|e| PasswordAlgorithm::from_number(e.algorithm))
                else {
                    return false;
                };
                let entries: Vec<AlgorithmEntry<'_>> = list.iter().collect();
                let mut wire = Vec::new();
                AlgorithmList::write(&entries, &mut wire);
                (Some(wire), alg)
            }
        };
        let key = Key::long_term(
            &self.config.username,
            &realm,
            &self.config.password,
            algorithm,
        );
        self.auth = Some(Auth {
            realm,
            nonce: nonce.to_owned(),
            algorithms,
            algorithm,
            key,
        });
        // The new nonce is kept for later requests even when this one gives up.
        req.attempts < self.config.max_auth_attempts
            && self.start(now, req.kind, req.attempts).is_ok()
    }

    fn on_allocated(&mut self, now: Instant, msg: &Message<'_>) {
        if !matches!(self.state, State::Allocating) {
            return;
        }
        let relayed: Vec<SocketAddr> = msg
            .attributes
            .iter()
            .filter_map(|a| match a {
                Attribute::XorRelayedAddress(x) => Some(*x),
                _ => None,
            })
            .take(2)
            .collect();
        let lifetime = msg.find(|a| match a {
            Attribute::Lifetime(l) => Some(*l),
            _ => None,
        });
        let (Some(lifetime), false) = (lifetime.filter(|l| *l > 0), relayed.is_empty()) else {
            self.state = State::Finished;
            self.push_event(Event::AllocationFailed {
                code: None,
                reason: "success without XOR-RELAYED-ADDRESS or LIFETIME".to_owned(),
            });
            return;
        };
        let lifetime = Duration::from_secs(u64::from(lifetime.min(MAX_GRANTED_LIFETIME)));
        let reservation_token = msg.find(|a| match a {
            Attribute::ReservationToken(t) => Some(*t),
            _ => None,
        });
        self.mapped = msg.mapped_address();
        self.relayed.clone_from(&relayed);
        self.state = allocated_state(now, lifetime);
        self.push_event(Event::Allocated {
            relayed,
            mapped: self.mapped,
            lifetime,
            reservation_token,
        });
    }

    fn lose(&mut self, code: Option<u16>, reason: &str) {
        for id in self.pending.drain().map(|(id, _)| id) {
            let _ = self.stun.cancel(id);
        }
        self.permissions.clear();
        self.channels.clear();
        self.channel_peers.clear();
        self.state = State::Finished;
        self.push_event(Event::Lost {
            code,
            reason: reason.to_owned(),
        });
    }

    fn fail(&mut self, kind: Kind, code: Option<u16>, reason: &str) {
        match kind {
            Kind::Allocate => {
                if matches!(self.state, State::Allocating) {
                    self.state = State::Finished;
                    self.push_event(Event::AllocationFailed {
                        code,
                        reason: reason.to_owned(),
                    });
                }
            }
            Kind::Refresh { lifetime: 0 } => {
                // The allocation is gone either way (437: it already was).
                if matches!(self.state, State::Closing) {
                    self.state = State::Finished;
                    self.push_event(Event::Closed);
                }
            }
            Kind::Refresh { .. } => {
                if self.is_allocated() {
                    self.lose(code, reason);
                }
            }
            Kind::Permission { ip } => {
                if self.permissions.remove(&ip).is_some() {
                    self.push_event(Event::PermissionFailed { ip, code });
                }
            }
            Kind::ChannelBind { peer, channel } => {
                if self
                    .channels
                    .get(&peer)
                    .is_some_and(|c| c.number == channel)
                {
                    self.channels.remove(&peer);
                    self.channel_peers.remove(&channel);
                    self.push_event(Event::ChannelFailed {
                        peer,
                        channel,
                        code,
                    });
                }
                // A permission that only this binding was installing goes too.
                if self
                    .permissions
                    .get(&peer.ip())
                    .is_some_and(|p| !p.installed && p.refresh_at.is_none())
                    && !self
                        .pending
                        .values()
                        .any(|r| r.kind == Kind::Permission { ip: peer.ip() })
                {
                    self.permissions.remove(&peer.ip());
                }
            }
        }
    }
}

/// LIFETIME in whole seconds (validated to fit when configured).
fn lifetime_secs(d: Duration) -> u32 {
    u32::try_from(d.as_secs()).unwrap_or(u32::MAX)
}

/// Refresh at 3/4 of the lifetime: leaves a quarter (150 s of the default 600 s) for
/// the Refresh transaction and its retransmissions (RFC 8656 §8).
fn allocated_state(now: Instant, lifetime: Duration) -> State {
    State::Allocated {
        expires_at: now + lifetime,
        refresh_at: now + lifetime * 3 / 4,
        refreshing: false,
    }
}

// The TURN client as a datagram core: it takes STUN and ChannelData from its server.
chorus_framing::datagram_core! {
    impl for Client {
        type Event = Event;
        type Error = Error;
        fn accepts(&self, _local, from, bytes) {
            from == self.config.server
                && matches!(
                    chorus_framing::classify(bytes),
                    chorus_framing::PacketKind::Stun | chorus_framing::PacketKind::ChannelData
                )
        }
        fn handle_datagram(&mut self, now, _local, from, bytes) {
            self.handle_input(now, from, bytes)
        }
    }
}

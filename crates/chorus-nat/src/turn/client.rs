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
//! Inside, the client is a hub: it keeps the configuration, the allocation's
//! lifecycle and the public API; the permission and channel tables with their
//! refresh schedule are a `Bindings` subsystem (`client/bindings.rs`), and building
//! requests, retrying after 401/438 and applying outcomes live in
//! `client/requests.rs`.
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

mod bindings;
#[cfg(any(test, feature = "_fuzz"))]
#[doc(hidden)]
pub mod fuzz;
mod requests;
mod stream;
#[cfg(test)]
mod tests;

pub use stream::Deframer;

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use chorus_framing::{Entropy, Transmit};

use super::channel_data::{ChannelData, is_channel_data};
use crate::client::{Client as StunClient, ClientConfig as StunClientConfig, Transport};
use crate::error::{Error, Limit, UsageError, Violation};
use crate::stun::{Attribute, Class, Header, Message, Method, TransactionId, types};
use bindings::Bindings;
use requests::{Auth, Kind, Request};

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
    /// Permissions and channels.
    bindings: Bindings,
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
            .field("permissions", &self.bindings.permission_count())
            .field("channels", &self.bindings.channel_count())
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
            bindings: Bindings::default(),
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
        self.bindings.has_permission(ip)
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
        self.bindings.permission(ip)
    }

    /// The channel bound (or being bound) to `peer`, and whether the server confirmed it.
    #[must_use]
    pub fn channel(&self, peer: SocketAddr) -> Option<(u16, bool)> {
        self.bindings.channel(peer)
    }

    /// Asks for a permission for `ip` (RFC 8656 §9) and keeps refreshing it until
    /// [`Client::remove_permission`]. Asking again for a known IP does nothing.
    ///
    /// # Errors
    /// [`UsageError::NotAllocated`], [`Limit::Permissions`], or a transaction error.
    pub fn create_permission(&mut self, now: Instant, ip: IpAddr) -> Result<(), Error> {
        self.require_allocated()?;
        if self.bindings.has_permission(ip) {
            return Ok(());
        }
        let count = self.bindings.permission_count();
        if count >= self.config.max_permissions {
            return Err(Limit::Permissions(count).into());
        }
        self.start(now, Kind::Permission { ip }, 0)?;
        self.bindings.request_permission(ip);
        Ok(())
    }

    /// Stops refreshing the permission for `ip` and the channels to peers at `ip`; the
    /// server lets them expire (RFC 8656 has no way to delete them). Returns whether
    /// there was one.
    pub fn remove_permission(&mut self, ip: IpAddr) -> bool {
        self.bindings.remove_permission(ip)
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
        if let Some((number, _)) = self.bindings.channel(peer) {
            return Ok(number);
        }
        let channels = self.bindings.channel_count();
        if channels >= self.config.max_channels {
            return Err(Limit::Channels(channels).into());
        }
        let new_permission = !self.bindings.has_permission(peer.ip());
        let permissions = self.bindings.permission_count();
        if new_permission && permissions >= self.config.max_permissions {
            return Err(Limit::Permissions(permissions).into());
        }
        let number = self
            .bindings
            .free_channel()
            .ok_or(Limit::Channels(channels))?;
        self.start(
            now,
            Kind::ChannelBind {
                peer,
                channel: number,
            },
            0,
        )?;
        self.bindings.request_channel(peer, number);
        if new_permission {
            // The ChannelBind installs it; from then on it is refreshed like any other.
            self.bindings.request_permission(peer.ip());
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
        if !self.bindings.has_permission(peer.ip()) {
            return Err(UsageError::NoPermission.into());
        }
        if self.transmits.len() >= self.config.max_queued {
            return Err(Limit::Queue(self.transmits.len()).into());
        }
        let transport = self.config.transport;
        let mut out = BytesMut::new();
        match self.bindings.channel(peer) {
            Some((channel, true)) => {
                let msg = ChannelData { channel, data };
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
        self.bindings.clear();
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
            let peer = self
                .bindings
                .peer_of(msg.channel)
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
                if !self.bindings.has_permission(peer.ip()) {
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
        for ip in self.bindings.due_permissions(now) {
            let started = self.start(now, Kind::Permission { ip }, 0).is_ok();
            self.bindings.permission_refresh_started(ip, started, now);
        }
        for (peer, channel) in self.bindings.due_channels(now) {
            let started = self
                .start(now, Kind::ChannelBind { peer, channel }, 0)
                .is_ok();
            self.bindings.channel_refresh_started(peer, started, now);
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
            consider(self.bindings.next_refresh());
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

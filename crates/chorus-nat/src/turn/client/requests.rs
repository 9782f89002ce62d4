//! The client's requests and their outcomes (RFC 8656 §7-§11, RFC 8489 §9.2):
//! building Allocate, Refresh, CreatePermission and ChannelBind with the long-term
//! credentials, retrying after 401/438, and applying each response or failure to
//! the allocation's state and its [`Bindings`](super::bindings::Bindings).

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::{
    Client, Event, Family, MAX_GRANTED_LIFETIME, State, UDP, allocated_state, lifetime_secs,
};
use crate::client::{Event as StunEvent, Response};
use crate::error::Error;
use crate::stun::{
    AddressFamily, AlgorithmEntry, AlgorithmList, Attribute, Class, Key, Message, Method,
    PasswordAlgorithm, TransactionId, types,
};

/// The credentials learned from a 401/438 (RFC 8489 §9.2.4).
pub(super) struct Auth {
    realm: String,
    nonce: String,
    /// PASSWORD-ALGORITHMS as the server sent it, echoed in every request.
    algorithms: Option<Vec<u8>>,
    /// The chosen algorithm, sent as PASSWORD-ALGORITHM when `algorithms` is set.
    algorithm: PasswordAlgorithm,
    key: Key,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Allocate,
    Refresh { lifetime: u32 },
    Permission { ip: IpAddr },
    ChannelBind { peer: SocketAddr, channel: u16 },
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Request {
    kind: Kind,
    /// Requests sent for this operation so far.
    attempts: u32,
    /// Whether the request carried credentials, to tell a wrong password (401 to an
    /// authenticated request with the current nonce) from a first challenge.
    authenticated: bool,
}

impl Client {
    /// Starts the request for `kind`, with credentials once known.
    pub(super) fn start(
        &mut self,
        now: Instant,
        kind: Kind,
        attempts: u32,
    ) -> Result<TransactionId, Error> {
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

    pub(super) fn drain_stun(&mut self, now: Instant) {
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

    pub(super) fn on_response(&mut self, now: Instant, r: &Response) {
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
                let at = now + self.config.permission_refresh;
                if self.bindings.permission_confirmed(ip, at) == Some(true) {
                    self.push_event(Event::PermissionCreated { ip });
                }
            }
            Kind::ChannelBind { peer, channel } => {
                let at = now + self.config.channel_refresh;
                let Some(first) = self.bindings.channel_confirmed(peer, channel, at) else {
                    return;
                };
                if first {
                    self.push_event(Event::ChannelBound { peer, channel });
                }
                // RFC 8656 §11.3: the binding installed or refreshed the permission.
                let at = now + self.config.permission_refresh;
                if self.bindings.permission_installed_by_channel(peer.ip(), at) == Some(true) {
                    self.push_event(Event::PermissionCreated { ip: peer.ip() });
                }
            }
        }
    }

    /// RFC 8489 §9.2.5: a 401 gives REALM and NONCE, a 438 a new NONCE; retry once per
    /// change, within `max_auth_attempts`. Returns whether a retry was started.
    pub(super) fn retry_auth(&mut self, now: Instant, msg: &Message<'_>, req: Request) -> bool {
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

    pub(super) fn on_allocated(&mut self, now: Instant, msg: &Message<'_>) {
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

    pub(super) fn lose(&mut self, code: Option<u16>, reason: &str) {
        for id in self.pending.drain().map(|(id, _)| id) {
            let _ = self.stun.cancel(id);
        }
        self.bindings.clear();
        self.state = State::Finished;
        self.push_event(Event::Lost {
            code,
            reason: reason.to_owned(),
        });
    }

    pub(super) fn fail(&mut self, kind: Kind, code: Option<u16>, reason: &str) {
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
                if self.bindings.permission_failed(ip) {
                    self.push_event(Event::PermissionFailed { ip, code });
                }
            }
            Kind::ChannelBind { peer, channel } => {
                if self.bindings.channel_failed(peer, channel) {
                    self.push_event(Event::ChannelFailed {
                        peer,
                        channel,
                        code,
                    });
                }
                // A permission that only this binding was installing goes too.
                if self.bindings.permission_only_requested(peer.ip())
                    && !self
                        .pending
                        .values()
                        .any(|r| r.kind == Kind::Permission { ip: peer.ip() })
                {
                    self.bindings.permission_failed(peer.ip());
                }
            }
        }
    }
}

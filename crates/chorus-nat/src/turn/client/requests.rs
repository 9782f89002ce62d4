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

/// The same subsystem driven through the client against the scripted server of
/// `client/tests.rs`.
#[cfg(test)]
#[allow(clippy::field_reassign_with_default)]
mod behaviour {
    use std::net::SocketAddr;
    use std::time::{Duration, Instant};

    use chorus_framing::SeededEntropy;

    use super::super::tests::*;
    use super::super::*;
    use crate::stun::{AddressFamily, AlgorithmEntry, AlgorithmList, Key, PasswordAlgorithm};

    #[test]
    fn allocate_retries_with_credentials_after_401_and_reports_the_relayed_address() {
        let t0 = Instant::now();
        let mut c = client(config(Transport::Udp));
        c.allocate(t0).unwrap();
        let first = take(&mut c);
        let m = decode(&first);
        // RFC 8656 §7.1 / RFC 8489 §9.2.3: UDP transport, our lifetime, no credentials yet.
        assert_eq!(m.method, Method::ALLOCATE);
        assert!(m.attributes.contains(&Attribute::RequestedTransport(17)));
        assert!(m.attributes.contains(&Attribute::Lifetime(600)));
        assert!(!has(&m, types::USERNAME) && !m.message_integrity);

        assert_eq!(c.pending_requests(), 1);
        c.handle_input(t0, SERVER, &challenge(&first, "n1"))
            .unwrap();
        assert_eq!(events(&mut c), []);
        assert_eq!(c.pending_requests(), 1, "the retry replaced the request");
        let second = take(&mut c);
        let m = decode(&second);
        assert_ne!(m.transaction_id, decode(&first).transaction_id);
        assert!(m.attributes.contains(&Attribute::Username("alice")));
        assert!(m.attributes.contains(&Attribute::Realm("example.org")));
        assert!(m.attributes.contains(&Attribute::Nonce("n1")));
        assert!(m.message_integrity && !m.message_integrity_sha256);
        Message::verify(&second, &md5_key()).unwrap();

        // A success without valid integrity is not accepted (RFC 8489 §9.2.5).
        let forged = reply(
            &second,
            Class::Success,
            &[
                Attribute::XorRelayedAddress(RELAYED),
                Attribute::Lifetime(600),
            ],
            None,
        );
        assert!(c.handle_input(t0, SERVER, &forged).is_err());
        assert!(!c.is_allocated());

        ok(
            &mut c,
            t0,
            &second,
            &[
                Attribute::XorRelayedAddress(RELAYED),
                Attribute::XorMappedAddress(MAPPED),
                Attribute::Lifetime(600),
            ],
        );
        assert_eq!(
            events(&mut c),
            [Event::Allocated {
                relayed: vec![RELAYED],
                mapped: Some(MAPPED),
                lifetime: Duration::from_secs(600),
                reservation_token: None,
            }]
        );
        assert_eq!(c.relayed(), [RELAYED]);
        assert_eq!(c.mapped(), Some(MAPPED));
        assert_eq!(c.pending_requests(), 0);
        assert!(c.allocate(t0).is_err(), "only once");
    }

    #[test]
    fn a_second_401_with_the_same_nonce_means_wrong_credentials() {
        let t0 = Instant::now();
        let mut c = client(config(Transport::Udp));
        c.allocate(t0).unwrap();
        let first = take(&mut c);
        c.handle_input(t0, SERVER, &challenge(&first, "n1"))
            .unwrap();
        let second = take(&mut c);
        c.handle_input(t0, SERVER, &challenge(&second, "n1"))
            .unwrap();
        assert!(c.poll_transmit().is_none(), "no third attempt");
        assert!(matches!(
            events(&mut c).as_slice(),
            [Event::AllocationFailed {
                code: Some(401),
                ..
            }]
        ));
        assert!(c.create_permission(t0, PEER.ip()).is_err());
    }

    #[test]
    fn stale_nonce_is_retried_with_the_new_nonce_within_the_attempt_bound() {
        let (mut c, t0) = allocated(config(Transport::Udp));
        c.create_permission(t0, PEER.ip()).unwrap();
        let req = take(&mut c);
        let m = decode(&req);
        assert_eq!(m.method, Method::CREATE_PERMISSION);
        assert!(
            m.attributes
                .contains(&Attribute::XorPeerAddress(SocketAddr::new(PEER.ip(), 0)))
        );
        c.handle_input(t0, SERVER, &error(&req, 438, &[Attribute::Nonce("n2")]))
            .unwrap();
        let retry = take(&mut c);
        let m = decode(&retry);
        assert!(m.attributes.contains(&Attribute::Nonce("n2")));
        assert!(m.attributes.contains(&Attribute::Realm("example.org")));
        Message::verify(&retry, &md5_key()).unwrap();
        c.handle_input(t0, SERVER, &error(&retry, 438, &[Attribute::Nonce("n3")]))
            .unwrap();
        let third = take(&mut c);
        // The third attempt is the last one (max_auth_attempts = 3).
        c.handle_input(t0, SERVER, &error(&third, 438, &[Attribute::Nonce("n4")]))
            .unwrap();
        assert!(c.poll_transmit().is_none());
        assert_eq!(
            events(&mut c),
            [Event::PermissionFailed {
                ip: PEER.ip(),
                code: Some(438)
            }]
        );
        assert!(!c.has_permission(PEER.ip()));
        // The new nonce stays in use.
        c.create_permission(t0, PEER.ip()).unwrap();
        assert!(
            decode(&take(&mut c))
                .attributes
                .contains(&Attribute::Nonce("n4"))
        );
    }

    #[test]
    fn sha256_credentials_and_integrity_are_used_when_the_server_offers_them() {
        let t0 = Instant::now();
        let mut c = client(config(Transport::Udp));
        c.allocate(t0).unwrap();
        let first = take(&mut c);
        let mut list = Vec::new();
        AlgorithmList::write(
            &[
                AlgorithmEntry {
                    algorithm: 0x0002,
                    parameters: &[],
                },
                AlgorithmEntry {
                    algorithm: 0x0001,
                    parameters: &[],
                },
            ],
            &mut list,
        );
        let offered = AlgorithmList::from_wire(&list).unwrap();
        let challenge = error(
            &first,
            401,
            &[
                Attribute::Realm("example.org"),
                Attribute::Nonce("obMatJos2AAACn1"),
                Attribute::PasswordAlgorithms(offered),
            ],
        );
        c.handle_input(t0, SERVER, &challenge).unwrap();
        let second = take(&mut c);
        let m = decode(&second);
        // RFC 8489 §9.2.4: the list echoed, the first supported algorithm chosen.
        assert!(
            m.attributes
                .contains(&Attribute::PasswordAlgorithms(offered))
        );
        assert!(
            m.attributes
                .contains(&Attribute::PasswordAlgorithm(AlgorithmEntry {
                    algorithm: 0x0002,
                    parameters: &[]
                }))
        );
        assert!(m.message_integrity_sha256 && !m.message_integrity);
        let sha = Key::long_term("alice", "example.org", "secret", PasswordAlgorithm::Sha256);
        Message::verify(&second, &sha).unwrap();
        assert!(Message::verify(&second, &md5_key()).is_err());

        // A list with no algorithm we know cannot be answered.
        let mut c = client(config(Transport::Udp));
        c.allocate(t0).unwrap();
        let first = take(&mut c);
        let mut list = Vec::new();
        AlgorithmList::write(
            &[AlgorithmEntry {
                algorithm: 0x0077,
                parameters: &[],
            }],
            &mut list,
        );
        let challenge = error(
            &first,
            401,
            &[
                Attribute::Realm("example.org"),
                Attribute::Nonce("n"),
                Attribute::PasswordAlgorithms(AlgorithmList::from_wire(&list).unwrap()),
            ],
        );
        c.handle_input(t0, SERVER, &challenge).unwrap();
        assert!(c.poll_transmit().is_none());
        assert!(matches!(
            events(&mut c).as_slice(),
            [Event::AllocationFailed {
                code: Some(401),
                ..
            }]
        ));
    }

    #[test]
    fn a_stripped_password_algorithms_offer_is_not_retried() {
        // RFC 8489 §9.2.5: the nonce says the server offered PASSWORD-ALGORITHMS, the 401
        // carries none: a man in the middle removed it to force MD5. No retry.
        let t0 = Instant::now();
        let mut c = client(config(Transport::Udp));
        c.allocate(t0).unwrap();
        let first = take(&mut c);
        let nonce = crate::stun::SecurityFeatures {
            password_algorithms: true,
            username_anonymity: false,
        }
        .nonce_prefix()
            + "xyz";
        c.handle_input(t0, SERVER, &challenge(&first, &nonce))
            .unwrap();
        assert!(c.poll_transmit().is_none(), "no downgraded retry");
        assert!(matches!(
            events(&mut c).as_slice(),
            [Event::AllocationFailed {
                code: Some(401),
                ..
            }]
        ));
        // The same cookie without the bit is an ordinary MD5 challenge.
        let mut c = client(config(Transport::Udp));
        c.allocate(t0).unwrap();
        let first = take(&mut c);
        let plain = crate::stun::SecurityFeatures::default().nonce_prefix() + "xyz";
        c.handle_input(t0, SERVER, &challenge(&first, &plain))
            .unwrap();
        assert!(c.poll_transmit().is_some(), "retried with credentials");
    }

    #[test]
    fn allocate_errors_bad_successes_and_timeouts_fail_cleanly() {
        let t0 = Instant::now();
        let mut c = client(config(Transport::Udp));
        c.allocate(t0).unwrap();
        let first = take(&mut c);
        c.handle_input(t0, SERVER, &challenge(&first, "n1"))
            .unwrap();
        let second = take(&mut c);
        c.handle_input(t0, SERVER, &error(&second, 486, &[]))
            .unwrap();
        assert_eq!(
            events(&mut c),
            [Event::AllocationFailed {
                code: Some(486),
                reason: "no".to_owned()
            }]
        );

        // A success without XOR-RELAYED-ADDRESS (no auth: the server skipped the 401).
        let mut c = client(config(Transport::Udp));
        c.allocate(t0).unwrap();
        let first = take(&mut c);
        let r = reply(&first, Class::Success, &[Attribute::Lifetime(600)], None);
        c.handle_input(t0, SERVER, &r).unwrap();
        assert!(matches!(
            events(&mut c).as_slice(),
            [Event::AllocationFailed { code: None, .. }]
        ));

        // A 401 without NONCE cannot be answered.
        let mut c = client(config(Transport::Udp));
        c.allocate(t0).unwrap();
        let first = take(&mut c);
        c.handle_input(t0, SERVER, &error(&first, 401, &[Attribute::Realm("r")]))
            .unwrap();
        assert!(matches!(
            events(&mut c).as_slice(),
            [Event::AllocationFailed {
                code: Some(401),
                ..
            }]
        ));

        // No answer at all: over TCP a single request and 39.5 s.
        let mut c = client(config(Transport::Tcp));
        c.allocate(t0).unwrap();
        let _ = take(&mut c);
        let deadline = c.poll_timeout().unwrap();
        assert_eq!(deadline, t0 + Duration::from_millis(39_500));
        c.handle_timeout(deadline);
        assert!(c.poll_transmit().is_none());
        assert!(matches!(
            events(&mut c).as_slice(),
            [Event::AllocationFailed { code: None, .. }]
        ));
    }

    #[test]
    fn even_port_reservation_token_and_families_are_requested_as_configured() {
        let t0 = Instant::now();
        let mut cfg = config(Transport::Udp);
        cfg.even_port = Some(true);
        cfg.family = Family::Dual;
        cfg.software = Some("chorus".to_owned());
        let mut c = client(cfg);
        c.allocate(t0).unwrap();
        let first = take(&mut c);
        let m = decode(&first);
        assert!(m.attributes.contains(&Attribute::EvenPort(true)));
        assert!(
            m.attributes
                .contains(&Attribute::AdditionalAddressFamily(AddressFamily::V6))
        );
        assert!(m.attributes.contains(&Attribute::Software("chorus")));
        let v6: SocketAddr = "[2001:db8::1]:50000".parse().unwrap();
        let r = reply(
            &first,
            Class::Success,
            &[
                Attribute::XorRelayedAddress(RELAYED),
                Attribute::XorRelayedAddress(v6),
                Attribute::Lifetime(600),
                Attribute::ReservationToken([9; 8]),
            ],
            None,
        );
        c.handle_input(t0, SERVER, &r).unwrap();
        assert_eq!(
            events(&mut c),
            [Event::Allocated {
                relayed: vec![RELAYED, v6],
                mapped: None,
                lifetime: Duration::from_secs(600),
                reservation_token: Some([9; 8]),
            }]
        );

        let mut cfg = config(Transport::Udp);
        cfg.reservation_token = Some([9; 8]);
        let mut c = client(cfg.clone());
        c.allocate(t0).unwrap();
        let req = take(&mut c);
        let m = decode(&req);
        assert!(m.attributes.contains(&Attribute::ReservationToken([9; 8])));
        assert!(!has(&m, types::EVEN_PORT));
        cfg.even_port = Some(false);
        assert!(Client::new(cfg, Box::new(SeededEntropy::new(1))).is_err());

        let mut cfg = config(Transport::Udp);
        cfg.family = Family::V6;
        let mut c = client(cfg);
        c.allocate(t0).unwrap();
        let req = take(&mut c);
        let m = decode(&req);
        assert!(
            m.attributes
                .contains(&Attribute::RequestedAddressFamily(AddressFamily::V6))
        );
    }
}

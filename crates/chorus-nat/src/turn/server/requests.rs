//! The server's requests on allocations (RFC 8656 §7, §9, §11): Allocate, Refresh,
//! CreatePermission and ChannelBind, and the relay binds an Allocate waits for.
//! The hub has authenticated each request and found its allocation; these handlers
//! check what the RFC asks, draw ports from the pools, and change the allocation
//! through its own methods.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use chorus_framing::Redacted;

use super::allocation::{Allocation, Relay, family_index, index_of};
use super::{Auth, Event, Reply, Reservation, Server, UDP};
use crate::error::{Error, UsageError, Violation};
use crate::stun::{AddressFamily, Attribute, Class, Message};

impl Server {
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
    pub(super) fn allocate(
        &mut self,
        now: Instant,
        reply: &Reply,
        msg: &Message<'_>,
        auth: &Auth,
    ) -> Result<(), Error> {
        if let Some(&slot) = self.by_tuple.get(&reply.tuple) {
            let a = self.allocation(slot)?;
            if a.is_retransmission(msg.transaction_id, &auth.username) {
                if a.is_pending() {
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
        let alloc = Allocation::new(reply, auth, now + self.lifetime(life), relays, primary)
            .with_token(new_token)
            .with_address_error(address_error);
        self.insert_allocation(alloc);
        Ok(())
    }

    fn allocate_success(
        &mut self,
        now: Instant,
        slot: usize,
        reply: &Reply,
        auth: &Auth,
    ) -> Result<(), Error> {
        let a = self.allocation(slot)?;
        let attrs = a.success_attributes(now);
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
        let Some(relay) = a.relay_mut(relayed) else {
            return Err(UsageError::UnknownRelay.into());
        };
        if ok {
            relay.mark_bound();
        } else {
            tracing::warn!(
                relay = %Redacted(relayed),
                attempt = relay.attempts(),
                "relay port could not be bound"
            );
            // The port stays marked taken in the pool: someone else holds it.
            if relay.may_retry() {
                let start = self.entropy.u32()?;
                let next = self
                    .pools
                    .get_mut(i)
                    .and_then(Option::as_mut)
                    .and_then(|pool| pool.take(start, false, false));
                if let Some(next) = next {
                    relay.retry(next);
                    self.by_relay.remove(&relayed);
                    self.by_relay.insert(next, slot);
                    self.events.push_back(Event::OpenRelay(next));
                    return Ok(());
                }
            }
            a.fail_family(i);
            self.by_relay.remove(&relayed);
            if a.is_primary(i) {
                let (reply, auth) = a.answer(a.pending());
                self.remove_allocation(slot);
                return self.error(&reply, 508, Some(&auth));
            }
        }
        self.maybe_complete(now, slot)
    }

    fn maybe_complete(&mut self, now: Instant, slot: usize) -> Result<(), Error> {
        let Some(a) = self.allocs.get_mut(slot).and_then(Option::as_mut) else {
            return Ok(());
        };
        let Some(p) = a.take_completed() else {
            return Ok(());
        };
        let (reply, auth) = a.answer(Some(p));
        self.allocate_success(now, slot, &reply, &auth)
    }

    /// RFC 8656 §7.3-§7.4.
    pub(super) fn refresh(
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
            && !a.has_family(index_of(f))
        {
            // RFC 8656 §7.3: that family is not part of the allocation.
            return self.error(reply, 443, Some(auth));
        }
        if life == Some(0) {
            match family {
                // §7.3: a family of a dual allocation can be deleted alone.
                Some(f) if a.relay_count() == 2 => {
                    if let Some(addr) = a.remove_family(index_of(f)) {
                        self.close_relay(addr);
                    }
                }
                _ => self.remove_allocation(slot),
            }
            let attrs = [Attribute::Lifetime(0)];
            return self.send_message(reply, Class::Success, &attrs, Some(auth));
        }
        a.refresh(now + granted);
        let attrs = [Attribute::Lifetime(granted.as_secs() as u32)];
        self.send_message(reply, Class::Success, &attrs, Some(auth))
    }

    /// The error a peer address gets, if any: 443 for a family the allocation lacks,
    /// 403 for a denied address.
    fn check_peer(&self, a: &Allocation, peer: SocketAddr) -> Option<u16> {
        if !a.has_family(family_index(peer.ip())) {
            return Some(443);
        }
        (!self.peer_allowed(peer.ip())).then_some(403)
    }

    /// RFC 8656 §9.2: all XOR-PEER-ADDRESSes are checked before any is installed.
    pub(super) fn create_permission(
        &mut self,
        now: Instant,
        slot: usize,
        reply: &Reply,
        msg: &Message<'_>,
        auth: &Auth,
    ) -> Result<(), Error> {
        let a = self.allocation(slot)?;
        let peers = || {
            msg.attributes.iter().filter_map(|attr| match attr {
                Attribute::XorPeerAddress(p) => Some(*p),
                _ => None,
            })
        };
        for p in peers() {
            if let Some(code) = self.check_peer(a, p) {
                return self.error(reply, code, Some(auth));
            }
        }
        if peers().next().is_none() {
            return self.error(reply, 400, Some(auth));
        }
        if !a.permissions_fit(peers().map(|p| p.ip()), self.config.max_permissions) {
            return self.error(reply, 508, Some(auth));
        }
        let expires = now + self.config.permission_lifetime;
        if let Some(a) = self.allocs.get_mut(slot).and_then(Option::as_mut) {
            for p in peers() {
                a.permit(p.ip(), expires);
            }
        }
        self.send_message(reply, Class::Success, &[], Some(auth))
    }

    /// RFC 8656 §11.2.
    pub(super) fn channel_bind(
        &mut self,
        now: Instant,
        slot: usize,
        reply: &Reply,
        msg: &Message<'_>,
        auth: &Auth,
    ) -> Result<(), Error> {
        let a = self.allocation(slot)?;
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
        if a.channel_conflicts(channel, peer) {
            return self.error(reply, 400, Some(auth));
        }
        if !a.channel_fits(
            channel,
            peer,
            self.config.max_channels,
            self.config.max_permissions,
        ) {
            return self.error(reply, 508, Some(auth));
        }
        let (c_exp, p_exp) = (
            now + self.config.channel_lifetime,
            now + self.config.permission_lifetime,
        );
        if let Some(a) = self.allocs.get_mut(slot).and_then(Option::as_mut) {
            // §11.2: binding a channel installs or refreshes the peer's permission.
            a.bind_channel(channel, peer, c_exp, p_exp);
        }
        self.send_message(reply, Class::Success, &[], Some(auth))
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::*;
    use super::super::*;
    use crate::stun::AddressFamily;

    #[test]
    fn allocate_answers_relayed_mapped_and_lifetime_once_the_relay_is_bound() {
        let mut h = H::new(config());
        h.login();
        // Without a bind report there is no answer yet.
        let tid = h.tid();
        let mut m = Message::new(Class::Request, Method::ALLOCATE, tid);
        m.attributes = vec![
            Attribute::RequestedTransport(UDP),
            Attribute::DontFragment,
            Attribute::Username("alice"),
            Attribute::Realm(REALM),
            Attribute::Nonce(&h.nonce),
        ];
        m.message_integrity = true;
        m.fingerprint = true;
        let mut w = BytesMut::new();
        m.encode(Some(&key("alice", "secret")), &mut w).unwrap();
        h.s.handle_input(h.now, listen(), client(), Transport::Udp, &w)
            .unwrap();
        assert!(h.s.poll_transmit().is_none());
        let Some(Event::OpenRelay(relay)) = h.s.poll_event() else {
            panic!("no OpenRelay")
        };
        assert_eq!(relay.ip(), "192.0.2.1".parse::<IpAddr>().unwrap());
        assert!((50000..=50099).contains(&relay.port()));
        // A retransmission while the bind is pending gets no second answer.
        h.s.handle_input(h.now, listen(), client(), Transport::Udp, &w)
            .unwrap();
        assert!(h.s.poll_transmit().is_none());
        h.s.handle_relay_bound(h.now, relay, true).unwrap();
        let (_, t) = h.s.poll_transmit().unwrap();
        Message::verify(&t.payload, &key("alice", "secret")).unwrap();
        let r = Message::decode(&t.payload, &Limits::default()).unwrap();
        assert_eq!(r.class, Class::Success);
        assert!(r.fingerprint, "FINGERPRINT mirrored");
        assert_eq!(relayed_of(&t.payload), vec![relay]);
        assert_eq!(lifetime_of(&t.payload), Some(600));
        assert_eq!(r.mapped_address(), Some(client()));
        // A retransmission after success gets the same success; a new request 437.
        h.s.handle_input(h.now, listen(), client(), Transport::Udp, &w)
            .unwrap();
        let (_, again) = h.s.poll_transmit().unwrap();
        assert_eq!(relayed_of(&again.payload), vec![relay]);
        assert_eq!(code(&h.allocate(vec![])), Some(437));
        assert_eq!(h.s.allocations(), 1);
        assert_eq!(
            h.s.relayed_addresses(client(), listen(), Transport::Udp),
            vec![relay]
        );
    }

    #[test]
    fn dual_allocation_gets_two_relayed_addresses_and_can_drop_one_family() {
        let mut h = H::new(config());
        let r = h.allocate(vec![Attribute::AdditionalAddressFamily(AddressFamily::V6)]);
        let relays = relayed_of(&r);
        assert_eq!(relays.len(), 2);
        assert!(relays[0].is_ipv4() && relays[1].is_ipv6());
        // Permissions for both families now work.
        h.permit(peer());
        h.permit(peer6());
        // Refresh naming a family deletes just that one (RFC 8656 §7.3).
        let r = h.request(
            Method::REFRESH,
            vec![
                Attribute::Lifetime(0),
                Attribute::RequestedAddressFamily(AddressFamily::V6),
            ],
        );
        assert_eq!(code(&r), None);
        assert_eq!(h.closed, vec![relays[1]]);
        assert_eq!(
            h.s.relayed_addresses(client(), listen(), Transport::Udp),
            vec![relays[0]]
        );
        let r = h.request(
            Method::REFRESH,
            vec![Attribute::RequestedAddressFamily(AddressFamily::V6)],
        );
        assert_eq!(code(&r), Some(443));
        let r = h.request(
            Method::CREATE_PERMISSION,
            vec![Attribute::XorPeerAddress(peer6())],
        );
        assert_eq!(code(&r), Some(443));
    }

    #[test]
    fn even_port_with_r_reserves_the_next_port_for_a_token() {
        let mut h = H::new(config());
        let r = h.allocate(vec![Attribute::EvenPort(true)]);
        let relay = relayed_of(&r)[0];
        assert_eq!(relay.port() % 2, 0);
        let token = Message::decode(&r, &Limits::default())
            .unwrap()
            .find(|a| match a {
                Attribute::ReservationToken(t) => Some(*t),
                _ => None,
            })
            .expect("RESERVATION-TOKEN");
        // Another client claims the reserved port with the token.
        h.from = "203.0.113.5:40001".parse().unwrap();
        h.login();
        let r = h.allocate(vec![Attribute::ReservationToken(token)]);
        assert_eq!(
            relayed_of(&r),
            vec![SocketAddr::new(relay.ip(), relay.port() + 1)]
        );
        // The token is single-use.
        h.from = "203.0.113.5:40002".parse().unwrap();
        h.login();
        assert_eq!(
            code(&h.allocate(vec![Attribute::ReservationToken(token)])),
            Some(508)
        );
        // EVEN-PORT without R: an even port, no token.
        let r = h.allocate(vec![Attribute::EvenPort(false)]);
        assert_eq!(relayed_of(&r)[0].port() % 2, 0);
        assert!(
            Message::decode(&r, &Limits::default())
                .unwrap()
                .find(|a| matches!(a, Attribute::ReservationToken(_)).then_some(()))
                .is_none()
        );
    }

    #[test]
    fn lifetime_negotiation_refresh_and_expiry() {
        let mut h = H::new(config());
        assert_eq!(
            lifetime_of(&h.allocate(vec![Attribute::Lifetime(100)])),
            Some(600)
        );
        let relay = h.s.relayed_addresses(client(), listen(), Transport::Udp)[0];
        let r = h.request(Method::REFRESH, vec![Attribute::Lifetime(5000)]);
        assert_eq!(lifetime_of(&r), Some(3600));
        let r = h.request(Method::REFRESH, vec![]);
        assert_eq!(lifetime_of(&r), Some(600));
        // Expiry after 600 s closes the relay.
        h.advance(Duration::from_secs(599));
        assert_eq!(h.s.allocations(), 1);
        assert!(h.s.poll_timeout().is_some());
        h.advance(Duration::from_secs(2));
        assert_eq!(h.s.allocations(), 0);
        assert_eq!(h.closed, vec![relay]);
        h.login();
        assert_eq!(code(&h.request(Method::REFRESH, vec![])), Some(437));
        // A fresh allocation with a long lifetime, deleted by LIFETIME 0.
        assert_eq!(
            lifetime_of(&h.allocate(vec![Attribute::Lifetime(1200)])),
            Some(1200)
        );
        let r = h.request(Method::REFRESH, vec![Attribute::Lifetime(0)]);
        assert_eq!(lifetime_of(&r), Some(0));
        assert_eq!(h.s.allocations(), 0);
        assert_eq!(h.closed.len(), 2);
        // Nothing left to expire but the rate-limit table: the timer stops eventually.
        h.advance(Duration::from_secs(10));
        assert_eq!(h.s.poll_timeout(), None);
    }

    #[test]
    fn create_permission_installs_several_peers_and_enforces_the_deny_list() {
        let mut h = H::new(config());
        h.allocate(vec![Attribute::AdditionalAddressFamily(AddressFamily::V6)]);
        let other: SocketAddr = "198.51.100.8:1".parse().unwrap();
        let r = h.request(
            Method::CREATE_PERMISSION,
            vec![
                Attribute::XorPeerAddress(peer()),
                Attribute::XorPeerAddress(other),
            ],
        );
        assert_eq!(code(&r), None);
        for denied in [
            "127.0.0.1:9",
            "10.0.0.1:9",
            "192.168.1.1:9",
            "169.254.0.1:9",
            "224.0.0.1:9",
            "0.0.0.0:9",
            "[fd00::1]:9",
            "[::1]:9",
            "[fe80::1]:9",
            "192.0.2.1:9", // the relay's own address
        ] {
            let p: SocketAddr = denied.parse().unwrap();
            let r = h.request(
                Method::CREATE_PERMISSION,
                vec![
                    Attribute::XorPeerAddress(peer()),
                    Attribute::XorPeerAddress(p),
                ],
            );
            assert_eq!(code(&r), Some(403), "{denied}");
        }
        assert_eq!(
            code(&h.request(Method::CREATE_PERMISSION, vec![])),
            Some(400)
        );
        // Loopback allowed by configuration.
        let mut cfg = config();
        cfg.allow_loopback_peers = true;
        cfg.allowed_peers = vec!["10.0.0.0/8".parse().unwrap()];
        let mut h = H::new(cfg);
        h.relayed();
        h.permit("127.0.0.1:9".parse().unwrap());
        h.permit("10.1.1.1:9".parse().unwrap());
        assert!(h.s.peer_allowed("::1".parse().unwrap()));
        assert!(!h.s.peer_allowed("192.168.0.1".parse().unwrap()));
    }

    #[test]
    fn channel_bind_rules_and_cooldown() {
        let mut h = H::new(config());
        h.relayed();
        let other: SocketAddr = "198.51.100.8:1".parse().unwrap();
        let bind = |h: &mut H, ch: u16, p: SocketAddr| {
            code(&h.request(
                Method::CHANNEL_BIND,
                vec![Attribute::ChannelNumber(ch), Attribute::XorPeerAddress(p)],
            ))
        };
        assert_eq!(bind(&mut h, 0x3fff, peer()), Some(400));
        assert_eq!(bind(&mut h, 0x5000, peer()), Some(400));
        assert_eq!(
            bind(&mut h, 0x4000, "10.0.0.1:1".parse().unwrap()),
            Some(403)
        );
        assert_eq!(bind(&mut h, 0x4000, peer6()), Some(443));
        assert_eq!(bind(&mut h, 0x4000, peer()), None);
        assert_eq!(bind(&mut h, 0x4000, peer()), None, "refresh");
        assert_eq!(bind(&mut h, 0x4000, other), Some(400), "channel taken");
        assert_eq!(bind(&mut h, 0x4001, peer()), Some(400), "peer taken");
        assert_eq!(
            code(&h.request(Method::CHANNEL_BIND, vec![Attribute::ChannelNumber(0x4002)])),
            Some(400)
        );
        // After expiry (600 s) the channel cools down for 300 s more.
        let r = h.request(Method::REFRESH, vec![Attribute::Lifetime(3600)]);
        assert_eq!(lifetime_of(&r), Some(3600));
        h.advance(Duration::from_secs(601));
        h.login();
        assert_eq!(bind(&mut h, 0x4000, other), Some(400));
        h.advance(Duration::from_secs(300));
        h.login();
        assert_eq!(bind(&mut h, 0x4000, other), None);
        assert_eq!(bind(&mut h, 0x4001, peer()), None);
    }

    #[test]
    fn a_failed_relay_bind_is_retried_on_another_port_and_the_port_is_not_offered_again() {
        let mut cfg = config();
        cfg.relay_ports = 50000..=50002;
        let mut h = H::new(cfg);
        // Held by another process: the first port drawn fails, the next one binds.
        h.fail_binds = 1;
        let first = h.relayed();
        assert_eq!(h.opened.len(), 2, "{:?}", h.opened);
        assert_eq!(first, h.opened[1]);
        assert_ne!(h.opened[0], h.opened[1]);
        assert_eq!(h.s.allocations(), 1);
        // The failed port is out of the pool and the first allocation holds another:
        // one port is left, and when it fails too nothing is left to try.
        h.from = "203.0.113.5:40001".parse().unwrap();
        h.login();
        h.fail_binds = usize::MAX;
        assert_eq!(code(&h.allocate(vec![])), Some(508));
        assert_eq!(h.opened.len(), 3);
        assert_eq!(h.s.allocations(), 1);
        for a in &h.opened {
            assert!((50000..=50002).contains(&a.port()));
        }
        assert_eq!(
            h.s.handle_relay_bound(h.now, h.opened[0], true),
            Err(UsageError::UnknownRelay.into()),
            "a replaced port no longer names the allocation"
        );
        assert_eq!(
            h.s.handle_relay_bound(h.now, "192.0.2.1:1".parse().unwrap(), true),
            Err(UsageError::UnknownRelay.into())
        );
    }

    #[test]
    fn a_relay_bind_is_tried_on_four_ports_at_most() {
        let mut cfg = config();
        cfg.relay_ports = 50000..=50099;
        let mut h = H::new(cfg);
        h.fail_binds = usize::MAX;
        assert_eq!(code(&h.allocate(vec![])), Some(508));
        assert_eq!(h.opened.len(), 4);
        assert_eq!(h.s.allocations(), 0);
        h.fail_binds = 0;
        let relayed = h.relayed();
        assert!(!h.opened[..4].contains(&relayed), "failed ports stay out");
    }
}

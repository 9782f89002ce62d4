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
            let Some(a) = self.allocs.get(slot).and_then(Option::as_ref) else {
                return Err(Violation::NoAllocation.into());
            };
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
        let Some(a) = self.allocs.get(slot).and_then(Option::as_ref) else {
            return Err(Violation::NoAllocation.into());
        };
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
        let Some(a) = self.allocs.get(slot).and_then(Option::as_ref) else {
            return Err(Violation::NoAllocation.into());
        };
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

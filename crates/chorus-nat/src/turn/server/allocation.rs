//! One TURN allocation (RFC 8656 §2), a child state machine of the
//! [`Server`](super::Server).
//!
//! The server keeps the tables that find an allocation (by 5-tuple, by relayed
//! address, per user), authenticates requests and dispatches them; the allocation
//! owns everything that belongs to it alone: its relayed addresses and their bind
//! state (§7.2), its lifetime (§7.3), its permissions (§9) and its channels with
//! their cooldown (§11), plus the Allocate answer it owes until its relays are bound.
//! It never touches the port pools, the outgoing queue or the entropy source: where
//! those are needed it reports what happened and the server acts on it.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::{Auth, FiveTuple, Reply, reason};
use crate::stun::{AddressFamily, Attribute, Key, Method, TransactionId};

/// RFC 8656 §11: a channel number and its peer are not rebound elsewhere for this
/// long after the binding expired.
const CHANNEL_COOLDOWN: Duration = Duration::from_secs(300);

/// Ports tried for one relayed address before the allocation fails with 508: a port
/// the pool believes free can be held by another process on the host.
const RELAY_BIND_ATTEMPTS: u8 = 4;

/// The relay slot of an address family: 0 for IPv4, 1 for IPv6.
pub(super) fn family_index(ip: IpAddr) -> usize {
    usize::from(ip.is_ipv6())
}

/// The address family of a relay slot.
pub(super) const fn family_of(index: usize) -> AddressFamily {
    if index == 0 {
        AddressFamily::V4
    } else {
        AddressFamily::V6
    }
}

/// The relay slot of an address family.
pub(super) const fn index_of(family: AddressFamily) -> usize {
    match family {
        AddressFamily::V4 => 0,
        AddressFamily::V6 => 1,
    }
}

/// One relayed transport address and whether the driver has bound its socket.
#[derive(Debug)]
pub(super) struct Relay {
    addr: SocketAddr,
    bound: bool,
    /// Binds tried for this relay so far; a port drawn freely from the pool (not a
    /// reserved or EVEN-PORT one) is replaced by another when its bind fails, up to
    /// [`RELAY_BIND_ATTEMPTS`].
    attempts: u8,
    replaceable: bool,
}

impl Relay {
    /// A relay on `addr`, not yet bound; `replaceable` if the port was drawn freely
    /// from the pool, so a failed bind may move it to another port.
    pub(super) fn new(addr: SocketAddr, replaceable: bool) -> Self {
        Self {
            addr,
            bound: false,
            attempts: 1,
            replaceable,
        }
    }

    /// The binds tried so far.
    pub(super) fn attempts(&self) -> u8 {
        self.attempts
    }

    /// The bind worked.
    pub(super) fn mark_bound(&mut self) {
        self.bound = true;
    }

    /// Whether a failed bind may be retried on another port.
    pub(super) fn may_retry(&self) -> bool {
        self.replaceable && self.attempts < RELAY_BIND_ATTEMPTS
    }

    /// Moves the relay to `next` after a failed bind.
    pub(super) fn retry(&mut self, next: SocketAddr) {
        self.addr = next;
        self.attempts += 1;
    }
}

#[derive(Debug)]
struct Channel {
    peer: SocketAddr,
    /// The binding is live before this; afterwards it cools down for 5 minutes.
    expires: Instant,
}

/// The answer an allocation owes until its relays are bound: how the Allocate
/// request was protected, so the success response is protected the same way.
#[derive(Debug, Clone, Copy)]
pub(super) struct Pending {
    pub(super) mi: bool,
    pub(super) mi256: bool,
    pub(super) fingerprint: bool,
}

/// One allocation: its relays, lifetime, permissions and channels.
#[derive(Debug)]
pub(super) struct Allocation {
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
    /// The allocation an Allocate request (`reply`, verified as `auth`) creates:
    /// it lives until `expires` and owes its success response until every relay in
    /// `relays` is bound; `primary` is the family the client asked for.
    pub(super) fn new(
        reply: &Reply,
        auth: &Auth,
        expires: Instant,
        relays: [Option<Relay>; 2],
        primary: usize,
    ) -> Self {
        Self {
            tuple: reply.tuple,
            username: auth.username.as_str().into(),
            key: auth.key.clone(),
            tid: reply.tid,
            expires,
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
            token: None,
            address_error: None,
        }
    }

    /// With the RESERVATION-TOKEN its success response returns.
    pub(super) fn with_token(mut self, token: Option<[u8; 8]>) -> Self {
        self.token = token;
        self
    }

    /// With the ADDRESS-ERROR-CODE its success response returns.
    pub(super) fn with_address_error(mut self, error: Option<(AddressFamily, u16)>) -> Self {
        self.address_error = error;
        self
    }

    /// The 5-tuple it belongs to.
    pub(super) fn tuple(&self) -> FiveTuple {
        self.tuple
    }

    /// The user who created it.
    pub(super) fn username(&self) -> &str {
        &self.username
    }

    /// Whether its Allocate response still waits for relay binds.
    pub(super) fn is_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// Whether an Allocate `tid` from `username` is a retransmission of the one
    /// that created it (RFC 8656 §7.2).
    pub(super) fn is_retransmission(&self, tid: TransactionId, username: &str) -> bool {
        self.tid == tid && *self.username == *username
    }

    /// Whether it has not expired at `now`.
    pub(super) fn is_live(&self, now: Instant) -> bool {
        self.expires > now
    }

    /// Extends its life to `expires` (a Refresh, RFC 8656 §7.3).
    pub(super) fn refresh(&mut self, expires: Instant) {
        self.expires = expires;
    }

    /// Its remaining lifetime in whole seconds, for LIFETIME.
    pub(super) fn lifetime_secs(&self, now: Instant) -> u32 {
        self.expires.saturating_duration_since(now).as_secs() as u32
    }

    /// All its relayed addresses, bound or not, IPv4 first.
    pub(super) fn relayed(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.relays.iter().flatten().map(|r| r.addr)
    }

    /// How many relayed addresses it has.
    pub(super) fn relay_count(&self) -> usize {
        self.relays.iter().flatten().count()
    }

    /// Whether it has a relayed address in family slot `index`.
    pub(super) fn has_family(&self, index: usize) -> bool {
        self.relays.get(index).is_some_and(Option::is_some)
    }

    /// The bound relayed address that serves `peer`'s family.
    pub(super) fn relay_for(&self, peer: IpAddr) -> Option<SocketAddr> {
        self.relays
            .get(family_index(peer))?
            .as_ref()
            .filter(|r| r.bound)
            .map(|r| r.addr)
    }

    /// The relay on `relayed`, if it is one of this allocation's.
    pub(super) fn relay_mut(&mut self, relayed: SocketAddr) -> Option<&mut Relay> {
        self.relays
            .get_mut(family_index(relayed.ip()))?
            .as_mut()
            .filter(|r| r.addr == relayed)
    }

    /// Whether family slot `index` holds the family the client asked for.
    pub(super) fn is_primary(&self, index: usize) -> bool {
        index == self.primary
    }

    /// The relay of family slot `index` failed for good: it is removed, and the
    /// success response reports ADDRESS-ERROR-CODE 508 for its family.
    pub(super) fn fail_family(&mut self, index: usize) -> Option<SocketAddr> {
        let relay = self.relays.get_mut(index).and_then(Option::take);
        self.address_error = Some((family_of(index), 508));
        relay.map(|r| r.addr)
    }

    /// Removes the relay of family slot `index` (RFC 8656 §7.3: a family of a dual
    /// allocation deleted alone); the other family becomes the primary one.
    pub(super) fn remove_family(&mut self, index: usize) -> Option<SocketAddr> {
        let relay = self.relays.get_mut(index).and_then(Option::take)?;
        if index == self.primary {
            self.primary = 1 - index;
        }
        Some(relay.addr)
    }

    /// Once every relay is bound, the answer it owed (taken: it is given once).
    pub(super) fn take_completed(&mut self) -> Option<Pending> {
        if self.relays.iter().flatten().any(|r| !r.bound) {
            return None;
        }
        self.pending.take()
    }

    /// Where its Allocate response goes and how it is protected, given the
    /// `pending` answer (none: unprotected by MESSAGE-INTEGRITY-SHA256 nor
    /// FINGERPRINT, as when it no longer waits).
    pub(super) fn answer(&self, pending: Option<Pending>) -> (Reply, Auth) {
        let reply = Reply {
            tuple: self.tuple,
            method: Method::ALLOCATE,
            tid: self.tid,
            fingerprint: pending.is_some_and(|p| p.fingerprint),
        };
        let auth = Auth {
            username: String::new(),
            key: self.key.clone(),
            mi: pending.is_some_and(|p| p.mi),
            mi256: pending.is_some_and(|p| p.mi256),
        };
        (reply, auth)
    }

    /// The pending answer, if its Allocate response still waits.
    pub(super) fn pending(&self) -> Option<Pending> {
        self.pending
    }

    /// The attributes of its Allocate success response (RFC 8656 §7.2): the relayed
    /// addresses, LIFETIME, RESERVATION-TOKEN, ADDRESS-ERROR-CODE and the client's
    /// XOR-MAPPED-ADDRESS.
    pub(super) fn success_attributes(&self, now: Instant) -> Vec<Attribute<'static>> {
        let mut attrs: Vec<Attribute<'_>> =
            self.relayed().map(Attribute::XorRelayedAddress).collect();
        attrs.push(Attribute::Lifetime(self.lifetime_secs(now)));
        if let Some(t) = self.token {
            attrs.push(Attribute::ReservationToken(t));
        }
        if let Some((family, code)) = self.address_error {
            attrs.push(Attribute::AddressErrorCode {
                family,
                code,
                reason: reason(code),
            });
        }
        attrs.push(Attribute::XorMappedAddress(self.tuple.0));
        attrs
    }

    /// Whether a permission for `peer` is installed and not expired (RFC 8656 §9).
    pub(super) fn permitted(&self, now: Instant, peer: IpAddr) -> bool {
        self.permissions.get(&peer).is_some_and(|t| *t > now)
    }

    /// Whether installing permissions for `peers` keeps the table within `max`.
    pub(super) fn permissions_fit(
        &self,
        peers: impl IntoIterator<Item = IpAddr>,
        max: usize,
    ) -> bool {
        let new = peers
            .into_iter()
            .filter(|p| !self.permissions.contains_key(p))
            .count();
        self.permissions.len() + new <= max
    }

    /// Installs or refreshes the permission for `peer` until `expires` (RFC 8656
    /// §9.2).
    pub(super) fn permit(&mut self, peer: IpAddr, expires: Instant) {
        self.permissions.insert(peer, expires);
    }

    /// The peer of `channel` while its binding is live (RFC 8656 §12.6).
    pub(super) fn channel_peer(&self, now: Instant, channel: u16) -> Option<SocketAddr> {
        self.channels
            .get(&channel)
            .filter(|c| c.expires > now)
            .map(|c| c.peer)
    }

    /// The channel bound to `peer` while its binding is live (RFC 8656 §12.5).
    pub(super) fn channel_for(&self, now: Instant, peer: SocketAddr) -> Option<u16> {
        self.peer_channels
            .get(&peer)
            .filter(|ch| self.channels.get(ch).is_some_and(|c| c.expires > now))
            .copied()
    }

    /// Whether `channel` is bound (or cooling down) to another peer, or `peer` to
    /// another channel (RFC 8656 §11.2: 400).
    pub(super) fn channel_conflicts(&self, channel: u16, peer: SocketAddr) -> bool {
        self.channels.get(&channel).is_some_and(|c| c.peer != peer)
            || self.peer_channels.get(&peer).is_some_and(|c| *c != channel)
    }

    /// Whether binding `channel` to `peer` keeps both tables within their bounds.
    pub(super) fn channel_fits(
        &self,
        channel: u16,
        peer: SocketAddr,
        max_channels: usize,
        max_permissions: usize,
    ) -> bool {
        (self.channels.contains_key(&channel) || self.channels.len() < max_channels)
            && (self.permissions.contains_key(&peer.ip())
                || self.permissions.len() < max_permissions)
    }

    /// Binds or refreshes `channel` to `peer` until `channel_expires`; the peer's
    /// permission lasts at least until `permission_expires` (RFC 8656 §11.2).
    pub(super) fn bind_channel(
        &mut self,
        channel: u16,
        peer: SocketAddr,
        channel_expires: Instant,
        permission_expires: Instant,
    ) {
        self.channels.insert(
            channel,
            Channel {
                peer,
                expires: channel_expires,
            },
        );
        self.peer_channels.insert(peer, channel);
        let p = self
            .permissions
            .entry(peer.ip())
            .or_insert(permission_expires);
        *p = (*p).max(permission_expires);
    }

    /// Drops expired permissions and channels whose cooldown ended.
    pub(super) fn sweep(&mut self, now: Instant) {
        self.permissions.retain(|_, t| *t > now);
        let peer_channels = &mut self.peer_channels;
        self.channels.retain(|_, c| {
            let keep = c.expires + CHANNEL_COOLDOWN > now;
            if !keep {
                peer_channels.remove(&c.peer);
            }
            keep
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::Transport;
    use crate::stun::PasswordAlgorithm;

    const V4: &str = "192.0.2.1:50000";
    const V6: &str = "[2001:db8::1]:50002";

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn reply() -> Reply {
        Reply {
            tuple: (
                addr("203.0.113.5:40000"),
                addr("192.0.2.1:3478"),
                Transport::Udp,
            ),
            method: Method::ALLOCATE,
            tid: TransactionId::new([7; 12]),
            fingerprint: true,
        }
    }

    fn auth() -> Auth {
        Auth {
            username: "alice".into(),
            key: Key::long_term("alice", "chorus", "secret", PasswordAlgorithm::Sha256),
            mi: false,
            mi256: true,
        }
    }

    fn dual(now: Instant) -> Allocation {
        let relays = [
            Some(Relay::new(addr(V4), true)),
            Some(Relay::new(addr(V6), true)),
        ];
        Allocation::new(&reply(), &auth(), now + Duration::from_secs(600), relays, 0)
    }

    #[test]
    fn the_answer_waits_until_every_relay_is_bound_and_is_given_once() {
        let now = Instant::now();
        let mut a = dual(now);
        assert!(a.is_pending());
        assert_eq!(a.relay_for("198.51.100.1".parse().unwrap()), None);
        a.relay_mut(addr(V4)).unwrap().mark_bound();
        assert!(a.take_completed().is_none());
        a.relay_mut(addr(V6)).unwrap().mark_bound();
        let p = a.take_completed().expect("all bound");
        assert!(p.fingerprint && p.mi256 && !p.mi);
        assert!(!a.is_pending());
        assert!(a.take_completed().is_none());
        assert_eq!(a.relay_for("198.51.100.1".parse().unwrap()), Some(addr(V4)));
        let (reply, auth) = a.answer(Some(p));
        assert_eq!(
            (reply.tid, reply.fingerprint, auth.mi256),
            (a.tid, true, true)
        );
    }

    #[test]
    fn a_relay_is_found_only_by_its_own_address_and_retries_are_bounded() {
        let mut a = dual(Instant::now());
        assert!(a.relay_mut(addr("192.0.2.1:50001")).is_none());
        let r = a.relay_mut(addr(V4)).unwrap();
        for port in 50010..50013 {
            assert!(r.may_retry());
            r.retry(SocketAddr::new(addr(V4).ip(), port));
        }
        assert_eq!(r.attempts(), RELAY_BIND_ATTEMPTS);
        assert!(!r.may_retry());
        assert!(a.relay_mut(addr("192.0.2.1:50012")).is_some());
        assert!(!Relay::new(addr(V4), false).may_retry());
    }

    #[test]
    fn a_failed_or_removed_family_leaves_the_other() {
        let now = Instant::now();
        let mut a = dual(now);
        assert_eq!(a.fail_family(1), Some(addr(V6)));
        assert!(!a.has_family(1) && a.has_family(0));
        assert!(a.success_attributes(now).iter().any(|at| matches!(
            at,
            Attribute::AddressErrorCode {
                family: AddressFamily::V6,
                code: 508,
                ..
            }
        )));
        let mut b = dual(now);
        assert_eq!(b.remove_family(0), Some(addr(V4)));
        assert!(b.is_primary(1));
        assert_eq!(b.relay_count(), 1);
        assert_eq!(b.remove_family(0), None);
    }

    #[test]
    fn success_attributes_list_relays_lifetime_token_and_mapped_address() {
        let now = Instant::now();
        let a = dual(now).with_token(Some([9; 8]));
        let attrs = a.success_attributes(now + Duration::from_secs(100));
        assert_eq!(
            attrs,
            vec![
                Attribute::XorRelayedAddress(addr(V4)),
                Attribute::XorRelayedAddress(addr(V6)),
                Attribute::Lifetime(500),
                Attribute::ReservationToken([9; 8]),
                Attribute::XorMappedAddress(reply().tuple.0),
            ]
        );
    }

    #[test]
    fn lifetime_refresh_and_expiry() {
        let now = Instant::now();
        let mut a = dual(now);
        assert!(a.is_live(now + Duration::from_secs(599)));
        assert!(!a.is_live(now + Duration::from_secs(600)));
        a.refresh(now + Duration::from_secs(1000));
        assert_eq!(a.lifetime_secs(now), 1000);
        assert!(a.is_retransmission(TransactionId::new([7; 12]), "alice"));
        assert!(!a.is_retransmission(TransactionId::new([7; 12]), "bob"));
    }

    #[test]
    fn permissions_are_bounded_and_expire() {
        let now = Instant::now();
        let mut a = dual(now);
        let (p1, p2): (IpAddr, IpAddr) = (
            "198.51.100.1".parse().unwrap(),
            "198.51.100.2".parse().unwrap(),
        );
        assert!(a.permissions_fit([p1], 1));
        assert!(!a.permissions_fit([p1, p2], 1));
        a.permit(p1, now + Duration::from_secs(300));
        assert!(a.permissions_fit([p1], 1));
        assert!(a.permitted(now, p1) && !a.permitted(now, p2));
        a.sweep(now + Duration::from_secs(300));
        assert!(!a.permitted(now, p1));
    }

    #[test]
    fn channels_bind_install_permissions_conflict_and_cool_down() {
        let now = Instant::now();
        let mut a = dual(now);
        let (peer, other) = (addr("198.51.100.1:7000"), addr("198.51.100.2:7000"));
        assert!(a.channel_fits(0x4000, peer, 1, 1));
        a.bind_channel(
            0x4000,
            peer,
            now + Duration::from_secs(600),
            now + Duration::from_secs(300),
        );
        assert_eq!(a.channel_peer(now, 0x4000), Some(peer));
        assert_eq!(a.channel_for(now, peer), Some(0x4000));
        assert!(a.permitted(now, peer.ip()));
        assert!(a.channel_conflicts(0x4000, other) && a.channel_conflicts(0x4001, peer));
        assert!(!a.channel_conflicts(0x4000, peer));
        assert!(!a.channel_fits(0x4001, other, 1, 2) && !a.channel_fits(0x4001, other, 2, 1));
        // Expired: no longer usable, but held for the cooldown.
        let later = now + Duration::from_secs(600);
        a.sweep(later);
        assert_eq!(a.channel_peer(later, 0x4000), None);
        assert_eq!(a.channel_for(later, peer), None);
        assert!(a.channel_conflicts(0x4000, other));
        a.sweep(later + CHANNEL_COOLDOWN);
        assert!(!a.channel_conflicts(0x4000, other));
    }

    #[test]
    fn family_slots_round_trip() {
        for i in 0..2 {
            assert_eq!(index_of(family_of(i)), i);
        }
        assert_eq!(family_index("::1".parse().unwrap()), 1);
        assert_eq!(family_index("127.0.0.1".parse().unwrap()), 0);
    }
}

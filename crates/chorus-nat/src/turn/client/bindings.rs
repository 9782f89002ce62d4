//! The client's permission and channel tables (RFC 8656 §9, §11): which peers it
//! asked for, what the server confirmed, and when each entry is refreshed. The
//! allocation lifecycle (Allocate, Refresh, close, loss) lives in the hub; the
//! requests that install and refresh these entries in `requests.rs`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use super::RETRY_DELAY;
use crate::turn::channel_data::{MAX_CHANNEL, MIN_CHANNEL};

#[derive(Debug)]
struct Permission {
    installed: bool,
    refresh_at: Option<Instant>,
    in_flight: bool,
}

impl Permission {
    /// Requested, not yet confirmed.
    const fn requested() -> Self {
        Self {
            installed: false,
            refresh_at: None,
            in_flight: true,
        }
    }
}

#[derive(Debug)]
struct Channel {
    number: u16,
    confirmed: bool,
    refresh_at: Option<Instant>,
    in_flight: bool,
}

/// Permissions by peer IP and channels by peer address (and by number, for data
/// arriving on a channel).
#[derive(Debug, Default)]
pub(super) struct Bindings {
    permissions: HashMap<IpAddr, Permission>,
    channels: HashMap<SocketAddr, Channel>,
    channel_peers: HashMap<u16, SocketAddr>,
}

impl Bindings {
    /// How many permissions are kept.
    pub(super) fn permission_count(&self) -> usize {
        self.permissions.len()
    }

    /// How many channels are kept.
    pub(super) fn channel_count(&self) -> usize {
        self.channels.len()
    }

    /// Whether a permission for `ip` was requested (and not removed or failed).
    pub(super) fn has_permission(&self, ip: IpAddr) -> bool {
        self.permissions.contains_key(&ip)
    }

    /// Whether the permission for `ip` is installed, requested only, or unknown.
    pub(super) fn permission(&self, ip: IpAddr) -> Option<bool> {
        self.permissions.get(&ip).map(|p| p.installed)
    }

    /// The channel bound (or being bound) to `peer`, and whether it is confirmed.
    pub(super) fn channel(&self, peer: SocketAddr) -> Option<(u16, bool)> {
        self.channels.get(&peer).map(|c| (c.number, c.confirmed))
    }

    /// The peer of channel `number` (bound or being bound).
    pub(super) fn peer_of(&self, number: u16) -> Option<SocketAddr> {
        self.channel_peers.get(&number).copied()
    }

    /// The lowest channel number not in use (RFC 8656 §12: 0x4000..=0x4FFF).
    pub(super) fn free_channel(&self) -> Option<u16> {
        (MIN_CHANNEL..=MAX_CHANNEL).find(|n| !self.channel_peers.contains_key(n))
    }

    /// Records a requested permission for `ip`, its request in flight.
    pub(super) fn request_permission(&mut self, ip: IpAddr) {
        self.permissions.insert(ip, Permission::requested());
    }

    /// Records a requested channel `number` to `peer`, its request in flight.
    pub(super) fn request_channel(&mut self, peer: SocketAddr, number: u16) {
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
    }

    /// Forgets the permission for `ip` and the channels to peers at `ip`. Returns
    /// whether there was a permission.
    pub(super) fn remove_permission(&mut self, ip: IpAddr) -> bool {
        let channel_peers = &mut self.channel_peers;
        self.channels.retain(|peer, c| {
            let keep = peer.ip() != ip;
            if !keep {
                channel_peers.remove(&c.number);
            }
            keep
        });
        self.permissions.remove(&ip).is_some()
    }

    /// Forgets everything (the allocation is gone).
    pub(super) fn clear(&mut self) {
        self.permissions.clear();
        self.channels.clear();
        self.channel_peers.clear();
    }

    /// The permissions whose refresh is due at `now` and not yet under way.
    pub(super) fn due_permissions(&self, now: Instant) -> Vec<IpAddr> {
        self.permissions
            .iter()
            .filter(|(_, p)| !p.in_flight && p.refresh_at.is_some_and(|t| t <= now))
            .map(|(ip, _)| *ip)
            .collect()
    }

    /// The channels whose refresh is due at `now` and not yet under way.
    pub(super) fn due_channels(&self, now: Instant) -> Vec<(SocketAddr, u16)> {
        self.channels
            .iter()
            .filter(|(_, c)| !c.in_flight && c.refresh_at.is_some_and(|t| t <= now))
            .map(|(peer, c)| (*peer, c.number))
            .collect()
    }

    /// A refresh of the permission for `ip` was `started` at `now`; if it could not
    /// be, it is tried again after a short delay.
    pub(super) fn permission_refresh_started(&mut self, ip: IpAddr, started: bool, now: Instant) {
        if let Some(p) = self.permissions.get_mut(&ip) {
            if started {
                p.in_flight = true;
            } else {
                p.refresh_at = Some(now + RETRY_DELAY);
            }
        }
    }

    /// As [`Bindings::permission_refresh_started`], for the channel to `peer`.
    pub(super) fn channel_refresh_started(
        &mut self,
        peer: SocketAddr,
        started: bool,
        now: Instant,
    ) {
        if let Some(c) = self.channels.get_mut(&peer) {
            if started {
                c.in_flight = true;
            } else {
                c.refresh_at = Some(now + RETRY_DELAY);
            }
        }
    }

    /// The earliest refresh not under way.
    pub(super) fn next_refresh(&self) -> Option<Instant> {
        let permissions = self
            .permissions
            .values()
            .filter(|p| !p.in_flight)
            .filter_map(|p| p.refresh_at);
        let channels = self
            .channels
            .values()
            .filter(|c| !c.in_flight)
            .filter_map(|c| c.refresh_at);
        permissions.chain(channels).min()
    }

    /// A CreatePermission for `ip` succeeded: installed, refreshed again at
    /// `refresh_at`. Returns whether it was installed for the first time (`None`: no
    /// such permission any more).
    pub(super) fn permission_confirmed(&mut self, ip: IpAddr, refresh_at: Instant) -> Option<bool> {
        let p = self.permissions.get_mut(&ip)?;
        let first = !p.installed;
        p.installed = true;
        p.in_flight = false;
        p.refresh_at = Some(refresh_at);
        Some(first)
    }

    /// A ChannelBind of `channel` to `peer` succeeded: confirmed, refreshed again at
    /// `refresh_at`. Returns whether it was confirmed for the first time (`None`: the
    /// channel is no longer bound to that peer).
    pub(super) fn channel_confirmed(
        &mut self,
        peer: SocketAddr,
        channel: u16,
        refresh_at: Instant,
    ) -> Option<bool> {
        let c = self
            .channels
            .get_mut(&peer)
            .filter(|c| c.number == channel)?;
        let first = !c.confirmed;
        c.confirmed = true;
        c.in_flight = false;
        c.refresh_at = Some(refresh_at);
        Some(first)
    }

    /// RFC 8656 §11.3: a ChannelBind installed or refreshed the permission for `ip`;
    /// one that had no refresh scheduled (or was not installed) is refreshed at
    /// `refresh_at`. Returns whether it was installed for the first time.
    pub(super) fn permission_installed_by_channel(
        &mut self,
        ip: IpAddr,
        refresh_at: Instant,
    ) -> Option<bool> {
        let p = self.permissions.get_mut(&ip)?;
        let first = !p.installed;
        p.installed = true;
        if p.refresh_at.is_none() || first {
            p.in_flight = false;
            p.refresh_at = Some(refresh_at);
        }
        Some(first)
    }

    /// A CreatePermission for `ip` failed: the permission is removed. Returns whether
    /// there was one.
    pub(super) fn permission_failed(&mut self, ip: IpAddr) -> bool {
        self.permissions.remove(&ip).is_some()
    }

    /// A ChannelBind of `channel` to `peer` failed: the channel is removed if it is
    /// still that one. Returns whether it was.
    pub(super) fn channel_failed(&mut self, peer: SocketAddr, channel: u16) -> bool {
        if self
            .channels
            .get(&peer)
            .is_some_and(|c| c.number == channel)
        {
            self.channels.remove(&peer);
            self.channel_peers.remove(&channel);
            return true;
        }
        false
    }

    /// Whether the permission for `ip` exists only because a ChannelBind was
    /// installing it: never installed, no refresh scheduled.
    pub(super) fn permission_only_requested(&self, ip: IpAddr) -> bool {
        self.permissions
            .get(&ip)
            .is_some_and(|p| !p.installed && p.refresh_at.is_none())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn peer(port: u16) -> SocketAddr {
        SocketAddr::from(([198, 51, 100, 1], port))
    }

    #[test]
    fn permissions_go_from_requested_to_installed_and_are_refreshed_when_due() {
        let now = Instant::now();
        let ip = peer(1).ip();
        let mut b = Bindings::default();
        b.request_permission(ip);
        assert_eq!(b.permission(ip), Some(false));
        assert!(b.due_permissions(now).is_empty() && b.next_refresh().is_none());
        let at = now + Duration::from_secs(240);
        assert_eq!(b.permission_confirmed(ip, at), Some(true));
        assert_eq!(b.permission_confirmed(ip, at), Some(false));
        assert_eq!(b.next_refresh(), Some(at));
        assert_eq!(b.due_permissions(at), vec![ip]);
        b.permission_refresh_started(ip, false, at);
        assert_eq!(b.next_refresh(), Some(at + RETRY_DELAY));
        b.permission_refresh_started(ip, true, at + RETRY_DELAY);
        assert!(b.due_permissions(at + RETRY_DELAY).is_empty());
        assert!(b.permission_failed(ip) && !b.has_permission(ip));
        assert_eq!(b.permission_confirmed(ip, at), None);
    }

    #[test]
    fn channels_take_the_lowest_free_number_and_go_with_their_permission() {
        let now = Instant::now();
        let mut b = Bindings::default();
        assert_eq!(b.free_channel(), Some(MIN_CHANNEL));
        b.request_channel(peer(1), MIN_CHANNEL);
        b.request_permission(peer(1).ip());
        assert_eq!(b.free_channel(), Some(MIN_CHANNEL + 1));
        assert_eq!(b.peer_of(MIN_CHANNEL), Some(peer(1)));
        assert!(b.permission_only_requested(peer(1).ip()));
        let at = now + Duration::from_secs(480);
        assert_eq!(b.channel_confirmed(peer(1), MIN_CHANNEL + 1, at), None);
        assert_eq!(b.channel_confirmed(peer(1), MIN_CHANNEL, at), Some(true));
        assert_eq!(b.channel(peer(1)), Some((MIN_CHANNEL, true)));
        assert_eq!(
            b.permission_installed_by_channel(peer(1).ip(), at),
            Some(true)
        );
        assert!(!b.permission_only_requested(peer(1).ip()));
        assert_eq!(b.due_channels(at), vec![(peer(1), MIN_CHANNEL)]);
        // Removing the permission takes the peer's channels with it.
        assert!(b.remove_permission(peer(1).ip()));
        assert_eq!((b.channel_count(), b.peer_of(MIN_CHANNEL)), (0, None));
    }

    #[test]
    fn a_failed_channel_is_removed_only_if_it_is_still_that_binding() {
        let mut b = Bindings::default();
        b.request_channel(peer(1), MIN_CHANNEL);
        assert!(!b.channel_failed(peer(1), MIN_CHANNEL + 1));
        assert!(b.channel_failed(peer(1), MIN_CHANNEL));
        assert_eq!(b.free_channel(), Some(MIN_CHANNEL));
        b.request_permission(peer(2).ip());
        b.request_channel(peer(2), MIN_CHANNEL);
        b.clear();
        assert_eq!((b.permission_count(), b.channel_count()), (0, 0));
    }
}

/// The same subsystem driven through the client against the scripted server of
/// `client/tests.rs`.
#[cfg(test)]
#[allow(clippy::field_reassign_with_default)]
mod behaviour {
    use std::net::SocketAddr;
    use std::time::Duration;

    use bytes::Bytes;

    use super::super::tests::*;
    use super::super::*;

    #[test]
    fn permissions_and_channels_are_refreshed_before_they_expire() {
        // A long allocation, so that its own refresh stays out of the way.
        let mut cfg = config(Transport::Udp);
        cfg.lifetime = Duration::from_secs(3600);
        let (mut c, t0) = allocated(cfg);
        permitted(&mut c, t0);
        let t1 = t0 + Duration::from_secs(240);
        assert_eq!(c.poll_timeout(), Some(t1));
        c.handle_timeout(t1);
        let req = take(&mut c);
        assert_eq!(decode(&req).method, Method::CREATE_PERMISSION);
        ok(&mut c, t1, &req, &[]);
        assert_eq!(events(&mut c), [], "a refresh is silent");

        let channel = c.bind_channel(t1, PEER).unwrap();
        assert_eq!(channel, 0x4000);
        assert_eq!(c.bind_channel(t1, PEER).unwrap(), channel, "idempotent");
        let req = take(&mut c);
        let m = decode(&req);
        assert_eq!(m.method, Method::CHANNEL_BIND);
        assert!(m.attributes.contains(&Attribute::ChannelNumber(0x4000)));
        assert!(m.attributes.contains(&Attribute::XorPeerAddress(PEER)));
        assert!(c.poll_transmit().is_none(), "one request");
        ok(&mut c, t1, &req, &[]);
        assert_eq!(
            events(&mut c),
            [Event::ChannelBound {
                peer: PEER,
                channel: 0x4000
            }]
        );
        assert_eq!(c.channel(PEER), Some((0x4000, true)));

        // Permission refresh at t1 + 240 s; channel refresh at t1 + 480 s.
        let t2 = t1 + Duration::from_secs(240);
        c.handle_timeout(t2);
        let req = take(&mut c);
        assert_eq!(decode(&req).method, Method::CREATE_PERMISSION);
        ok(&mut c, t2, &req, &[]);
        let t3 = t1 + Duration::from_secs(480);
        c.handle_timeout(t3);
        // The permission is due again at the same moment: both go out.
        let mut due: Vec<Bytes> =
            std::iter::from_fn(|| c.poll_transmit().map(|t| t.payload)).collect();
        assert_eq!(due.len(), 2);
        due.sort_by_key(|b| decode(b).method.number());
        let req = due.pop().unwrap();
        let m = decode(&req);
        assert_eq!(m.method, Method::CHANNEL_BIND);
        assert!(m.attributes.contains(&Attribute::ChannelNumber(0x4000)));
        assert_eq!(decode(&due[0]).method, Method::CREATE_PERMISSION);
        // A failed channel refresh removes the channel; data falls back to Send.
        c.handle_input(t3, SERVER, &error(&req, 400, &[])).unwrap();
        assert_eq!(
            events(&mut c),
            [Event::ChannelFailed {
                peer: PEER,
                channel: 0x4000,
                code: Some(400)
            }]
        );
        assert_eq!(c.channel(PEER), None);
        assert!(c.has_permission(PEER.ip()));

        assert!(c.remove_permission(PEER.ip()));
        assert!(!c.has_permission(PEER.ip()));
    }

    #[test]
    fn channel_numbers_are_distinct_bounded_and_freed_on_failure() {
        let mut cfg = config(Transport::Udp);
        cfg.max_channels = 2;
        let (mut c, t0) = allocated(cfg);
        let a: SocketAddr = "198.51.100.1:1".parse().unwrap();
        let b: SocketAddr = "198.51.100.1:2".parse().unwrap();
        let d: SocketAddr = "198.51.100.1:3".parse().unwrap();
        assert_eq!(c.bind_channel(t0, a).unwrap(), 0x4000);
        let ra = take(&mut c);
        assert_eq!(c.bind_channel(t0, b).unwrap(), 0x4001);
        let _rb = take(&mut c);
        assert!(matches!(
            c.bind_channel(t0, d),
            Err(Error::Limit(Limit::Channels(2)))
        ));
        c.handle_input(t0, SERVER, &error(&ra, 400, &[])).unwrap();
        assert_eq!(
            c.bind_channel(t0, d).unwrap(),
            0x4000,
            "the number is free again"
        );
    }

    #[test]
    fn permission_and_channel_tables_are_bounded() {
        let mut cfg = config(Transport::Udp);
        cfg.max_permissions = 1;
        let (mut c, t0) = allocated(cfg);
        c.create_permission(t0, PEER.ip()).unwrap();
        c.create_permission(t0, PEER.ip()).unwrap();
        assert!(matches!(
            c.create_permission(t0, "198.51.100.8".parse().unwrap()),
            Err(Error::Limit(Limit::Permissions(1)))
        ));
        assert!(matches!(
            c.bind_channel(t0, "198.51.100.8:1".parse().unwrap()),
            Err(Error::Limit(Limit::Permissions(1)))
        ));
        // A channel to a peer whose IP is already permitted needs no new entry.
        c.bind_channel(t0, PEER).unwrap();
    }
}

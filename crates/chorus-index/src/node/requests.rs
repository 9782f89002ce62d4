//! Requests in flight and their deadlines: a timer table ordered by the next
//! instant each request needs attention (a stall or its deadline), so the node
//! finds what is due, and when to wake, without scanning every request; and how
//! the node sends a request (a fresh transaction id, a possession challenge to a
//! peer not yet proven, the peer's cookie or padding).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chorus_crypto::cert::NodeId;

use chorus_framing::Transmit;

use super::Node;
use crate::message::{Body, Message, NONCE_LEN, with_padding};

/// What an answer to a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Purpose {
    Lookup { lookup: u64, path: usize },
    Store { op: Option<u64> },
    Ping,
    Bootstrap,
}

/// A request in flight.
#[derive(Debug)]
pub(super) struct Pending {
    pub(super) to: SocketAddr,
    pub(super) expect: Option<NodeId>,
    /// When it has failed (or is retried). Changed only through [`Requests`], which
    /// keeps its timer.
    deadline: Instant,
    /// When it stops counting against `alpha` (lookup requests until they stall).
    stall_at: Option<Instant>,
    pub(super) purpose: Purpose,
    pub(super) payload: Bytes,
    pub(super) tries: u8,
    /// The possession challenge the request carried, if the peer was not proven.
    pub(super) nonce: Option<[u8; NONCE_LEN]>,
    /// Whether the request was sent again with a cookie the peer asked us to echo
    /// (once per request: a peer that keeps asking is left to time out).
    cookie_echoed: bool,
    /// A challenge to an address that has not proven it receives there: sent
    /// (and retried) padded to at most this length and without a cookie, so it
    /// stays within what that address sent us. `None`: dressed as usual.
    pub(super) fixed_len: Option<usize>,
}

impl Pending {
    /// A request first sent `now` to `to`, failing after `timeout`; a lookup
    /// request stalls after `stall`. It carries no challenge and is dressed as
    /// usual unless `nonce` and `fixed_len` are set before it is inserted.
    pub(super) fn new(
        now: Instant,
        to: SocketAddr,
        expect: Option<NodeId>,
        purpose: Purpose,
        payload: Bytes,
        (timeout, stall): (Duration, Duration),
    ) -> Self {
        Self {
            to,
            expect,
            deadline: now + timeout,
            stall_at: matches!(purpose, Purpose::Lookup { .. }).then(|| now + stall),
            purpose,
            payload,
            tries: 1,
            nonce: None,
            cookie_echoed: false,
            fixed_len: None,
        }
    }

    /// When the request next needs attention.
    fn wake(&self) -> Instant {
        self.stall_at
            .map_or(self.deadline, |s| s.min(self.deadline))
    }

    /// Sent again `now` for another try, failing after `timeout`.
    pub(super) fn retry(&mut self, now: Instant, timeout: Duration) {
        self.tries += 1;
        self.deadline = now + timeout;
    }
}

/// A lookup request that stopped counting against `alpha`.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Stalled {
    pub(super) lookup: u64,
    pub(super) path: usize,
    pub(super) expect: Option<NodeId>,
}

/// The requests in flight by transaction id, with a timer table.
#[derive(Debug, Default)]
pub(super) struct Requests {
    pending: BTreeMap<u64, Pending>,
    /// (wake, txid) of every pending request.
    timers: BTreeSet<(Instant, u64)>,
}

impl Requests {
    pub(super) fn len(&self) -> usize {
        self.pending.len()
    }

    #[cfg(test)]
    pub(super) fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    pub(super) fn contains(&self, txid: u64) -> bool {
        self.pending.contains_key(&txid)
    }

    pub(super) fn get(&self, txid: u64) -> Option<&Pending> {
        self.pending.get(&txid)
    }

    /// Whether a Ping to `addr` is in flight.
    pub(super) fn pinging(&self, addr: SocketAddr) -> bool {
        self.pending
            .values()
            .any(|p| p.to == addr && p.purpose == Purpose::Ping)
    }

    pub(super) fn insert(&mut self, txid: u64, p: Pending) {
        self.timers.insert((p.wake(), txid));
        if let Some(old) = self.pending.insert(txid, p) {
            self.timers.remove(&(old.wake(), txid));
        }
    }

    pub(super) fn remove(&mut self, txid: u64) -> Option<Pending> {
        let p = self.pending.remove(&txid)?;
        self.timers.remove(&(p.wake(), txid));
        Some(p)
    }

    /// Keeps only the requests `keep` is true of.
    pub(super) fn retain(&mut self, mut keep: impl FnMut(&Pending) -> bool) {
        let timers = &mut self.timers;
        self.pending.retain(|txid, p| {
            let k = keep(p);
            if !k {
                timers.remove(&(p.wake(), *txid));
            }
            k
        });
    }

    pub(super) fn clear(&mut self) {
        self.pending.clear();
        self.timers.clear();
    }

    /// The peer asked us to echo a cookie before it answers `txid`: the request's
    /// payload, to send again with the cookie, and its timers restarted. `None`
    /// if it was echoed once already (the retry timer decides).
    pub(super) fn echo_cookie(
        &mut self,
        txid: u64,
        now: Instant,
        (timeout, stall): (Duration, Duration),
    ) -> Option<Bytes> {
        let p = self.pending.get_mut(&txid)?;
        if p.cookie_echoed {
            return None;
        }
        self.timers.remove(&(p.wake(), txid));
        p.cookie_echoed = true;
        p.deadline = now + timeout;
        if p.stall_at.is_some() {
            p.stall_at = Some(now + stall);
        }
        self.timers.insert((p.wake(), txid));
        Some(p.payload.clone())
    }

    /// The requests that need attention at `now`, by transaction id: lookup
    /// requests that stalled (they stop counting against `alpha`; their stall is
    /// cleared), and the transaction ids of those past their deadline (still
    /// pending: the caller removes them, and may insert them again for a retry).
    pub(super) fn due(&mut self, now: Instant) -> (Vec<Stalled>, Vec<u64>) {
        let mut txids: Vec<u64> = self
            .timers
            .iter()
            .take_while(|(at, _)| *at <= now)
            .map(|(_, txid)| *txid)
            .collect();
        txids.sort_unstable();
        let (mut stalled, mut expired) = (Vec::new(), Vec::new());
        for txid in txids {
            let Some(p) = self.pending.get_mut(&txid) else {
                continue;
            };
            if p.deadline <= now {
                expired.push(txid);
            } else if p.stall_at.is_some_and(|s| s <= now) {
                self.timers.remove(&(p.wake(), txid));
                p.stall_at = None;
                self.timers.insert((p.wake(), txid));
                if let Purpose::Lookup { lookup, path } = p.purpose {
                    stalled.push(Stalled {
                        lookup,
                        path,
                        expect: p.expect,
                    });
                }
            }
        }
        (stalled, expired)
    }

    /// When the first request needs attention.
    pub(super) fn next_timeout(&self) -> Option<Instant> {
        self.timers.first().map(|(at, _)| *at)
    }
}

impl Node {
    /// A fresh transaction id (`None` if the entropy source fails or keeps
    /// repeating ids in flight).
    fn txid(&mut self) -> Option<u64> {
        for _ in 0..4 {
            let t = self.entropy.u64().ok()?;
            if !self.requests.contains(t) {
                return Some(t);
            }
        }
        None
    }

    /// A request's (`request_timeout`, `stall_timeout`).
    pub(super) const fn timeouts(&self) -> (Duration, Duration) {
        (self.config.request_timeout, self.config.stall_timeout)
    }

    /// Sends a request (see [`Self::send_request_as`]); its transaction id.
    pub(super) fn send_request(
        &mut self,
        now: Instant,
        to: SocketAddr,
        expect: Option<NodeId>,
        body: Body<'_>,
        purpose: Purpose,
    ) -> Option<u64> {
        self.send_request_as(now, to, expect, body, purpose, None)
    }

    /// Sends a request: with the peer's cookie or padding (see
    /// `AddressValidation::dress`), or, for a challenge that must stay within what
    /// an unvalidated peer sent us, padded to at most `fixed_len` (retries too).
    pub(super) fn send_request_as(
        &mut self,
        now: Instant,
        to: SocketAddr,
        expect: Option<NodeId>,
        body: Body<'_>,
        purpose: Purpose,
        fixed_len: Option<usize>,
    ) -> Option<u64> {
        if self.requests.len() >= self.config.max_pending {
            return None;
        }
        let txid = self.txid()?;
        let nonce = expect
            .is_none_or(|id| !self.is_proven(&id, to, now))
            .then(|| self.nonce_for(to, now));
        self.stats.challenges += u64::from(nonce.is_some());
        let payload = Message {
            network: self.config.network,
            txid,
            sender_cert: &self.cert,
            nonce,
            proof: None,
            cookie: None,
            padding: 0,
            body,
        }
        .to_bytes();
        let wire = match fixed_len {
            None => self.validation.dress(to, &payload, now),
            Some(len) => with_padding(&payload, len),
        };
        self.queue(Transmit::new(to, wire));
        let mut p = Pending::new(now, to, expect, purpose, payload, self.timeouts());
        p.nonce = nonce;
        p.fixed_len = fixed_len;
        self.requests.insert(txid, p);
        Some(txid)
    }
}

#[cfg(test)]
// Tests configure the way callers do (STYLE.md section 8).
#[allow(clippy::field_reassign_with_default)]
mod tests {
    use super::*;
    use crate::node::tests::*;

    const TIMEOUTS: (Duration, Duration) = (Duration::from_secs(1), Duration::from_millis(250));

    fn pending(now: Instant, purpose: Purpose) -> Pending {
        let to = SocketAddr::from(([192, 0, 2, 1], 4000));
        Pending::new(now, to, None, purpose, Bytes::new(), TIMEOUTS)
    }

    const LOOKUP: Purpose = Purpose::Lookup { lookup: 7, path: 1 };

    #[test]
    fn the_first_timer_is_the_earliest_stall_or_deadline() {
        let t0 = Instant::now();
        let mut r = Requests::default();
        assert_eq!(r.next_timeout(), None);
        r.insert(1, pending(t0, Purpose::Ping));
        assert_eq!(r.next_timeout(), Some(t0 + TIMEOUTS.0));
        r.insert(2, pending(t0, LOOKUP));
        assert_eq!(r.next_timeout(), Some(t0 + TIMEOUTS.1), "the stall");
        r.remove(2);
        assert_eq!(r.next_timeout(), Some(t0 + TIMEOUTS.0));
        r.retain(|p| p.purpose != Purpose::Ping);
        assert_eq!(r.next_timeout(), None);
        assert!(r.is_empty());
    }

    #[test]
    fn a_lookup_request_stalls_once_then_expires() {
        let t0 = Instant::now();
        let mut r = Requests::default();
        r.insert(9, pending(t0, LOOKUP));
        r.insert(3, pending(t0, Purpose::Store { op: None }));
        assert_eq!(r.due(t0 + TIMEOUTS.1 / 2), (Vec::new(), Vec::new()));
        let (stalled, expired) = r.due(t0 + TIMEOUTS.1);
        let stall = Stalled {
            lookup: 7,
            path: 1,
            expect: None,
        };
        assert_eq!((stalled, expired), (vec![stall], Vec::new()));
        assert_eq!(r.due(t0 + TIMEOUTS.1), (Vec::new(), Vec::new()), "once");
        assert_eq!(r.next_timeout(), Some(t0 + TIMEOUTS.0));
        let (_, expired) = r.due(t0 + TIMEOUTS.0);
        assert_eq!(expired, [3, 9], "by transaction id");
        assert_eq!(r.len(), 2, "the caller removes them");
    }

    #[test]
    fn a_retry_or_a_cookie_echo_restarts_the_timers() {
        let t0 = Instant::now();
        let t1 = t0 + TIMEOUTS.0;
        let mut r = Requests::default();
        r.insert(1, pending(t0, LOOKUP));
        assert!(r.echo_cookie(1, t0 + TIMEOUTS.1 / 2, TIMEOUTS).is_some());
        assert_eq!(r.next_timeout(), Some(t0 + TIMEOUTS.1 / 2 + TIMEOUTS.1));
        assert!(r.echo_cookie(1, t0, TIMEOUTS).is_none(), "echoed once");
        let mut p = r.remove(1).unwrap();
        p.retry(t1, TIMEOUTS.0);
        assert_eq!(p.tries, 2);
        r.insert(1, p);
        assert!(r.contains(1));
        assert_eq!(r.next_timeout(), Some(t0 + TIMEOUTS.1 / 2 + TIMEOUTS.1));
        let _ = r.due(t1);
        assert_eq!(r.next_timeout(), Some(t1 + TIMEOUTS.0));
    }

    #[test]
    fn store_requests_are_retried() {
        let mut config = Config::default();
        config.replication = 2;
        config.retries = 1;
        let mut net = Net::new(3, &config);
        let r = net.record("gina", 1);
        let now = net.now;
        net.nodes[0].published.insert(
            r.key(),
            Published {
                record: r,
                next: now,
            },
        );
        let targets = [Contact {
            id: net.nodes[1].id(),
            addr: addr(1),
        }];
        net.nodes[0].store_at(now, &user_key("gina"), &targets);
        let first = net.nodes[0].poll_transmit().unwrap();
        // Lost. After the request timeout the same datagram goes out again.
        net.nodes[0].handle_timeout(now + config.request_timeout);
        let again = net.nodes[0].poll_transmit().unwrap();
        assert_eq!(first, again);
        net.nodes[1]
            .handle_input(now, addr(0), &again.payload)
            .unwrap();
        let ack = net.nodes[1].poll_transmit().unwrap();
        net.nodes[0]
            .handle_input(now, addr(1), &ack.payload)
            .unwrap();
        assert!(matches!(
            net.nodes[0].poll_event(),
            Some(Event::Published { replicas, .. }) if replicas >= 1
        ));
    }
}

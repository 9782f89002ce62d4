//! Per-peer rate limits: a token bucket per source IP, in a bounded map.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f32,
    last: Instant,
}

/// Token buckets keyed by source IP address. At most `max_peers` are tracked; when
/// the map is full, buckets idle long enough to have refilled are forgotten (a full
/// bucket is the same as no bucket), and if none has, the newcomer is refused until
/// one does.
#[derive(Debug, Clone)]
pub(crate) struct RateLimiter {
    rate: f32,
    burst: f32,
    max_peers: usize,
    buckets: HashMap<IpAddr, Bucket>,
}

impl RateLimiter {
    pub(crate) fn new(rate: f32, burst: f32, max_peers: usize) -> Self {
        Self {
            rate,
            burst,
            max_peers,
            buckets: HashMap::new(),
        }
    }

    /// Time for an empty bucket to refill.
    fn refill_time(&self) -> Duration {
        Duration::from_secs_f32((self.burst / self.rate).max(0.001))
    }

    /// Takes `cost` tokens from `ip`'s bucket; `false` if it does not have them.
    pub(crate) fn allow(&mut self, ip: IpAddr, now: Instant, cost: f32) -> bool {
        if !self.buckets.contains_key(&ip) && self.buckets.len() >= self.max_peers {
            self.forget_idle(now);
            if self.buckets.len() >= self.max_peers {
                return false;
            }
        }
        let (rate, burst) = (self.rate, self.burst);
        let b = self.buckets.entry(ip).or_insert(Bucket {
            tokens: burst,
            last: now,
        });
        let elapsed = now.saturating_duration_since(b.last).as_secs_f32();
        b.tokens = (b.tokens + elapsed * rate).min(burst);
        b.last = now;
        if b.tokens >= cost {
            b.tokens -= cost;
            true
        } else {
            false
        }
    }

    /// Empties `ip`'s bucket: a peer that sent a bad record waits a full refill.
    pub(crate) fn penalize(&mut self, ip: IpAddr, now: Instant) {
        if let Some(b) = self.buckets.get_mut(&ip) {
            b.tokens = -self.burst;
            b.last = now;
        }
    }

    /// Forgets buckets that have refilled (equivalent to absent).
    pub(crate) fn forget_idle(&mut self, now: Instant) {
        let refill = self.refill_time() * 2;
        self.buckets
            .retain(|_, b| now.saturating_duration_since(b.last) < refill);
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.buckets.len()
    }

    pub(crate) fn memory_bytes(&self) -> usize {
        self.buckets.capacity() * (size_of::<IpAddr>() + size_of::<Bucket>() + 8)
    }
}

/// A token bucket for the whole node (not per source): bounds work that many
/// sources, or spoofed ones, could otherwise demand without limit. Sources that
/// have not proven their address draw only from the upper half, so they cannot
/// starve known peers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct GlobalBudget {
    tokens: f32,
    last: Instant,
}

impl GlobalBudget {
    /// A full bucket of `burst` tokens.
    pub(crate) fn new(burst: f32, now: Instant) -> Self {
        Self {
            tokens: burst,
            last: now,
        }
    }

    /// Takes one token (refilled at `rate` per second up to `burst`); an
    /// `unvalidated` source only above half of `burst`.
    pub(crate) fn take(&mut self, now: Instant, rate: f32, burst: f32, unvalidated: bool) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f32();
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        self.last = now;
        let floor = if unvalidated { burst / 2.0 } else { 0.0 };
        if self.tokens >= floor + 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_then_refills_at_the_rate() {
        let t0 = Instant::now();
        let ip: IpAddr = [192, 0, 2, 1].into();
        let mut r = RateLimiter::new(10.0, 5.0, 4);
        for _ in 0..5 {
            assert!(r.allow(ip, t0, 1.0));
        }
        assert!(!r.allow(ip, t0, 1.0));
        assert!(r.allow(ip, t0 + Duration::from_millis(100), 1.0));
        r.penalize(ip, t0);
        assert!(!r.allow(ip, t0 + Duration::from_millis(500), 1.0));
    }

    #[test]
    fn a_global_budget_keeps_its_lower_half_for_validated_sources() {
        let t0 = Instant::now();
        let mut b = GlobalBudget::new(10.0, t0);
        let taken = (0..20).filter(|_| b.take(t0, 1.0, 10.0, true)).count();
        assert_eq!(taken, 5, "unvalidated: the upper half");
        let taken = (0..20).filter(|_| b.take(t0, 1.0, 10.0, false)).count();
        assert_eq!(taken, 5, "validated: the rest");
        assert!(
            b.take(t0 + Duration::from_secs(1), 1.0, 10.0, false),
            "refilled"
        );
    }

    #[test]
    fn the_map_is_bounded() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(10.0, 5.0, 2);
        assert!(r.allow([192, 0, 2, 1].into(), t0, 1.0));
        assert!(r.allow([192, 0, 2, 2].into(), t0, 1.0));
        assert!(!r.allow([192, 0, 2, 3].into(), t0, 1.0));
        assert!(r.allow([192, 0, 2, 3].into(), t0 + Duration::from_secs(2), 1.0));
        assert!(r.len() <= 2);
    }
}

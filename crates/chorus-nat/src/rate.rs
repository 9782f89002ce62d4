//! The per-source token bucket both servers (STUN Binding, TURN) hold unauthenticated
//! requests to: keyed by source IP, bounded in sources, refilled without floating point.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::error::Limit;
use crate::server::RateLimit;

#[derive(Debug, Clone, Copy)]
pub(crate) struct Bucket {
    /// Tokens, in millitokens so refills need no floating point.
    milli: u64,
    last: Instant,
}

#[derive(Debug)]
pub(crate) struct RateTable {
    cfg: RateLimit,
    buckets: HashMap<IpAddr, Bucket>,
    last_purge: Option<Instant>,
}

impl RateTable {
    pub(crate) fn new(cfg: RateLimit) -> Self {
        Self {
            cfg,
            buckets: HashMap::new(),
            last_purge: None,
        }
    }

    /// Whether no source is tracked.
    pub(crate) fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// When idle entries should next be purged: every 10 s while sources are tracked.
    pub(crate) fn next_purge(&self) -> Option<Instant> {
        if self.buckets.is_empty() {
            return None;
        }
        let last = self
            .last_purge
            .or_else(|| self.buckets.values().map(|b| b.last).min())?;
        Some(last + Duration::from_secs(10))
    }

    fn refill(&self, b: &mut Bucket, now: Instant) {
        let elapsed = now.saturating_duration_since(b.last);
        let add = elapsed
            .as_micros()
            .saturating_mul(u128::from(self.cfg.per_second))
            / 1000;
        let cap = u64::from(self.cfg.burst) * 1000;
        b.milli = u64::try_from(u128::from(b.milli).saturating_add(add).min(u128::from(cap)))
            .unwrap_or(cap);
        b.last = now;
    }

    pub(crate) fn purge(&mut self, now: Instant) {
        let cap = u64::from(self.cfg.burst) * 1000;
        let per_second = u64::from(self.cfg.per_second);
        self.buckets.retain(|_, b| {
            let elapsed = now.saturating_duration_since(b.last).as_millis();
            u128::from(b.milli) + elapsed * u128::from(per_second) < u128::from(cap)
        });
        self.last_purge = Some(now);
    }

    pub(crate) fn allow(&mut self, now: Instant, ip: IpAddr) -> Result<(), Limit> {
        if !self.buckets.contains_key(&ip) && self.buckets.len() >= self.cfg.max_sources {
            if self
                .last_purge
                .is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_secs(1))
            {
                self.purge(now);
            }
            if self.buckets.len() >= self.cfg.max_sources {
                return Err(Limit::Sources(self.buckets.len()));
            }
        }
        let cap = u64::from(self.cfg.burst) * 1000;
        let mut b = self.buckets.get(&ip).copied().unwrap_or(Bucket {
            milli: cap,
            last: now,
        });
        self.refill(&mut b, now);
        let result = if b.milli >= 1000 {
            b.milli -= 1000;
            Ok(())
        } else {
            Err(Limit::Rate)
        };
        self.buckets.insert(ip, b);
        result
    }
}

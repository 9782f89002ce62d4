//! The node's configuration and its bounds.

use std::time::Duration;

use crate::message::MAX_NODES;
use crate::table::TableConfig;

/// The default network id: "CHOR".
pub const DEFAULT_NETWORK: u32 = 0x4348_4f52;

/// Node configuration. Every field's bound is checked by [`Node::new`](super::Node::new).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Config {
    /// Separates independent index networks. Default [`DEFAULT_NETWORK`].
    pub network: u32,
    /// Routing table sizes. Default: Chorus's wide top buckets
    /// ([`TableConfig::default`]); [`TableConfig::kademlia`] for the baseline.
    pub table: TableConfig,
    /// Replication factor k: records live on the k closest nodes, lookups converge on
    /// the k closest. Default 20; 1-20.
    pub replication: usize,
    /// Requests in flight per lookup path. Default 3; 1-16.
    pub alpha: usize,
    /// Node-disjoint lookup paths (S/Kademlia). Default 2; 1-8.
    pub disjoint_paths: usize,
    /// Distinct holders whose records a value lookup waits for before it returns the
    /// newest, on as many distinct paths as there are (guards against attackers
    /// replaying a stale version). Default 2; 1-8.
    pub value_quorum: usize,
    /// After this long without an answer a request stops counting against `alpha`.
    /// Default 250 ms.
    pub stall_timeout: Duration,
    /// After this long without an answer a request has failed. Default 1 s.
    pub request_timeout: Duration,
    /// Retries of Store, Ping and bootstrap requests. Default 1; at most 5.
    pub retries: u8,
    /// How often expiry, bucket refresh and republishing run. Default 60 s.
    pub maintenance_interval: Duration,
    /// A bucket not looked up for this long is refreshed. Default 1 hour.
    pub refresh_interval: Duration,
    /// Records this node publishes are republished this often. Default 1 hour.
    pub republish_interval: Duration,
    /// Records this node holds for others are re-replicated (looked up and stored on
    /// the current `replication` closest nodes) this often, plus a random 0-25 %
    /// jitter; a record stored here again by someone else (the publisher's or
    /// another holder's republish) restarts its timer, so a record is usually
    /// re-replicated by one holder per interval. Default 1 hour; at most 30 days.
    pub replicate_interval: Duration,
    /// Most records re-replicated per maintenance round (each costs a lookup and up
    /// to `replication` stores); the rest wait for the next round. At most half of
    /// `max_lookups` is used for it. Default 8; 0 turns holder-side replication off.
    pub max_replications: usize,
    /// The longest lifetime (expiry minus issue time) a record may claim. Default
    /// 72 hours (records outlive the user's last login by this much).
    pub max_record_lifetime: Duration,
    /// Records stored for other nodes. Default 100,000; at least 1.
    pub max_records: usize,
    /// Records one peer may have stored here. Default 1,024; at least 1.
    pub max_records_per_peer: usize,
    /// Lookups running at once (including internal ones). Default 64; 1-4,096.
    pub max_lookups: usize,
    /// Requests in flight. Default 1,024; at least 16.
    pub max_pending: usize,
    /// Datagrams and events queued for the caller before new ones are dropped.
    /// Default 4,096.
    pub max_queue: usize,
    /// Requests per second a source IP may send. Default 200.
    pub rate_limit: f32,
    /// Requests a source IP may send in a burst. Default 400.
    pub rate_burst: f32,
    /// Source IPs tracked by the rate limiter. Default 8,192.
    pub max_rate_peers: usize,
    /// Refresh lookups started per maintenance round. Default 2.
    pub max_refreshes: usize,
    /// Whether [`Node::publish`](super::Node::publish) also adds the record to the search entries of each
    /// display-name word (one more lookup per word, at most 8). Default `true`.
    pub publish_words: bool,
    /// Search entries kept per word (newest first). Default 64; 1-1,024.
    pub max_entries_per_word: usize,
    /// Search entries kept in all. Default 100,000; at least 1.
    pub max_word_entries: usize,
    /// Rate-limit tokens a search request costs (a plain request costs 1). Default 5.
    pub search_cost: f32,
    /// Holders a search waits for before it returns. Default 3; 1-8.
    pub search_holders: usize,
    /// Most results a search returns. Default 32; 1-1,024.
    pub max_search_results: usize,
    /// Verified node certificates remembered (by SHA-256), so a known sender costs a
    /// hash instead of an RSA verification. Default 1,024; 0 disables the cache.
    pub cert_cache: usize,
    /// How long a verified certificate is trusted without checking it again (a
    /// revoked or expired certificate is accepted at most this long); also how long
    /// a contact that proved possession of its key stays proven outside the routing
    /// table. Default 600 s.
    pub cert_cache_ttl: Duration,
    /// Contacts (id and address) remembered as having proved possession of their
    /// certified key, besides those in the routing table. Default 4,096; at least 16.
    pub max_verified: usize,
    /// Proofs of possession this node made, remembered by requester and nonce so a
    /// repeated challenge costs no second signature. Default 256; at least 1.
    pub proof_cache: usize,
    /// Rate-limit tokens a request carrying a possession challenge costs (answering
    /// it may cost an RSA signature). Default 10.
    pub proof_cost: f32,
    /// Proofs of possession this node signs per second, all requesters together (a
    /// token bucket: the per-IP rate limit alone lets many sources, or spoofed ones,
    /// make a node sign without bound). A request whose proof would exceed it is
    /// dropped unanswered (as if lost: the requester retries or moves on; an answer
    /// without the proof would be taken for an impostor's). Sources that have not
    /// proven their address may use only the upper half of the bucket, so they
    /// cannot starve known peers. Default 50 per second (about 2.5 % of a core for
    /// RSA-2048); at least 0.01, at most 100,000.
    pub proof_rate: f32,
    /// Signatures the proof budget allows in a burst (a newcomer is challenged by
    /// most nodes its join lookups reach, within a second or two). Default 400
    /// (0.2 s of RSA-2048); at least 2, at most 1,000,000.
    pub proof_burst: f32,
    /// Signature checks this node makes per second for requests, all senders
    /// together: a sender certificate not in the certificate cache, and each record a
    /// `Store` or `StoreWord` carries (a token bucket, as `proof_rate`: padded
    /// requests from many sources, or spoofed ones, each with a certificate never
    /// seen, would otherwise cost an RSA verification each without bound). A request
    /// beyond it is dropped unanswered; a source that has not proven its address gets
    /// a cookie instead (with it, it may use the reserved lower half of the bucket).
    /// Default 2,000 per second (RSA-2048 verification costs about 30 us: 6 % of a
    /// core); at least 1, at most 1,000,000.
    pub verify_rate: f32,
    /// Signature checks the verification budget allows in a burst. Default 4,000; at
    /// least 2, at most 10,000,000.
    pub verify_burst: f32,
    /// How long an address-validation cookie (return routability, RFC 9000 §8.1)
    /// stays good: the key that makes cookies is drawn anew from the entropy source
    /// every `cookie_lifetime`, and cookies made with the current or the previous
    /// key are accepted (so a cookie lasts between one and two lifetimes). Also how
    /// long a requester reuses a cookie it received, and how long an address that
    /// answered one of our requests counts as validated. Default 600 s; 1 s to 1 day.
    pub cookie_lifetime: Duration,
    /// Addresses remembered as validated (they answered one of our requests) and,
    /// separately, cookies remembered from responders (one per address). Overflow:
    /// expired entries are dropped, else an arbitrary one (which costs that address
    /// one cookie round trip). Default 4,096 each; at least 16.
    pub max_validated: usize,
    /// A request to an address we hold no cookie for is padded to at least this
    /// many bytes (as QUIC pads Initial packets to 1,200, RFC 9000 §14.1), so the
    /// responder may answer it in full without sending more than it received. An
    /// answer that would not fit is cut to the closest contacts that fit, or
    /// replaced by a `Cookie` (one more round trip). Default 1,200 bytes; 0 turns
    /// padding off; at most 4,096 (and at most 2,048 bytes of padding are added).
    pub pad_requests_to: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            network: DEFAULT_NETWORK,
            table: TableConfig::default(),
            replication: 20,
            alpha: 3,
            disjoint_paths: 2,
            value_quorum: 2,
            stall_timeout: Duration::from_millis(250),
            request_timeout: Duration::from_secs(1),
            retries: 1,
            maintenance_interval: Duration::from_secs(60),
            refresh_interval: Duration::from_secs(3600),
            republish_interval: Duration::from_secs(3600),
            replicate_interval: Duration::from_secs(3600),
            max_replications: 8,
            max_record_lifetime: Duration::from_secs(72 * 3600),
            max_records: 100_000,
            max_records_per_peer: 1024,
            max_lookups: 64,
            max_pending: 1024,
            max_queue: 4096,
            rate_limit: 200.0,
            rate_burst: 400.0,
            max_rate_peers: 8192,
            max_refreshes: 2,
            publish_words: true,
            max_entries_per_word: 64,
            max_word_entries: 100_000,
            search_cost: 5.0,
            search_holders: 3,
            max_search_results: 32,
            cert_cache: 1024,
            cert_cache_ttl: Duration::from_secs(600),
            max_verified: 4096,
            proof_cache: 256,
            proof_cost: 10.0,
            proof_rate: 50.0,
            proof_burst: 400.0,
            verify_rate: 2000.0,
            verify_burst: 4000.0,
            cookie_lifetime: Duration::from_secs(600),
            max_validated: 4096,
            pad_requests_to: 1200,
        }
    }
}

impl Config {
    /// Plain Kademlia as published: k = 20, alpha = 3, one path, no wide buckets,
    /// the first record found wins.
    #[must_use]
    pub fn kademlia() -> Self {
        Self {
            table: TableConfig::kademlia(20),
            disjoint_paths: 1,
            value_quorum: 1,
            ..Self::default()
        }
    }

    pub(super) fn validate(&self) -> Result<(), &'static str> {
        self.table.validate()?;
        let day = Duration::from_secs(86_400);
        let checks: [(bool, &'static str); 19] = [
            (
                (0.01..=100_000.0).contains(&self.proof_rate)
                    && (2.0..=1_000_000.0).contains(&self.proof_burst),
                "proof_rate must be 0.01-100000 per second and proof_burst 2-1000000",
            ),
            (
                (1.0..=1_000_000.0).contains(&self.verify_rate)
                    && (2.0..=10_000_000.0).contains(&self.verify_burst),
                "verify_rate must be 1-1000000 per second and verify_burst 2-10000000",
            ),
            (
                (Duration::from_secs(1)..=day).contains(&self.cookie_lifetime)
                    && self.max_validated >= 16
                    && self.pad_requests_to <= 4096,
                "cookie_lifetime must be 1 s to a day, max_validated at least 16 and \
                 pad_requests_to at most 4096",
            ),
            (
                self.max_verified >= 16 && self.proof_cache >= 1 && self.proof_cost >= 1.0,
                "max_verified must be at least 16, proof_cache at least 1, proof_cost at \
                 least 1",
            ),
            (
                self.request_timeout <= day && self.maintenance_interval <= day,
                "request_timeout and maintenance_interval must be at most a day",
            ),
            (
                self.refresh_interval <= 30 * day
                    && self.republish_interval <= 30 * day
                    && self.replicate_interval <= 30 * day
                    && !self.replicate_interval.is_zero()
                    && self.max_record_lifetime <= 365 * day
                    && self.cert_cache_ttl <= day,
                "refresh, republish and replicate intervals positive and at most 30 days, \
                 record lifetime at most a year, cert_cache_ttl at most a day",
            ),
            (
                (1..=1024).contains(&self.max_entries_per_word) && self.max_word_entries >= 1,
                "max_entries_per_word must be 1-1024 and max_word_entries at least 1",
            ),
            (
                (1..=8).contains(&self.search_holders),
                "search_holders must be 1-8",
            ),
            (
                (1..=1024).contains(&self.max_search_results) && self.search_cost >= 1.0,
                "max_search_results must be 1-1024 and search_cost at least 1",
            ),
            (
                (1..=MAX_NODES).contains(&self.replication),
                "replication must be 1-20",
            ),
            ((1..=16).contains(&self.alpha), "alpha must be 1-16"),
            (
                (1..=8).contains(&self.disjoint_paths),
                "disjoint_paths must be 1-8",
            ),
            (
                (1..=8).contains(&self.value_quorum),
                "value_quorum must be 1-8",
            ),
            (
                !self.stall_timeout.is_zero() && self.stall_timeout <= self.request_timeout,
                "stall_timeout must be positive and at most request_timeout",
            ),
            (self.retries <= 5, "retries must be at most 5"),
            (
                !self.maintenance_interval.is_zero(),
                "maintenance_interval must be positive",
            ),
            (
                self.max_records >= 1 && self.max_records_per_peer >= 1,
                "record bounds must be at least 1",
            ),
            (
                (1..=4096).contains(&self.max_lookups) && self.max_pending >= 16,
                "max_lookups must be 1-4096 and max_pending at least 16",
            ),
            (
                self.rate_limit > 0.0 && self.rate_burst >= 1.0 && self.max_rate_peers >= 1,
                "rate limits must be positive",
            ),
        ];
        checks
            .into_iter()
            .find_map(|(ok, why)| (!ok).then_some(why))
            .map_or(Ok(()), Err)
    }
}

#[cfg(test)]
// Tests configure the way callers do (STYLE.md section 8).
#[allow(clippy::field_reassign_with_default)]
mod tests {
    use crate::node::tests::*;

    #[test]
    fn budget_and_cookie_settings_out_of_bounds_are_refused() {
        for f in [
            (|c: &mut Config| c.proof_rate = 0.0) as fn(&mut Config),
            |c| c.proof_burst = 1.0,
            |c| c.verify_rate = 0.5,
            |c| c.verify_burst = 1.0,
            |c| c.cookie_lifetime = Duration::ZERO,
            |c| c.max_validated = 1,
            |c| c.pad_requests_to = 5000,
        ] {
            let mut c = Config::default();
            f(&mut c);
            assert!(c.validate().is_err());
        }
    }
}

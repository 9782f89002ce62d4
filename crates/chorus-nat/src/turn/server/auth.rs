//! Long-term credentials for the TURN server (RFC 8489 §9.2, RFC 8656 §5): the
//! pluggable [`Authenticator`] and time-limited, unpredictable nonces.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::stun::{Key, PasswordAlgorithm, userhash};

/// Decides who may use the relay: maps a USERNAME (or a USERHASH) in a realm to the
/// long-term key its requests are authenticated with (RFC 8489 §9.2.2).
///
/// The default, [`StaticUsers`], is a table of `user:password` pairs. A Chorus super
/// node implements this trait to admit clients by a login-authority certificate
/// instead: the USERNAME carries a token the authority signed (checked here, with no
/// I/O), and the key is derived from it, so that the client proves it holds the
/// matching secret by the MESSAGE-INTEGRITY it computes.
///
/// Implementations run inside the sans-IO core: they must not block.
pub trait Authenticator: Send {
    /// The long-term key of `username` in `realm` under `algorithm` (RFC 8489 §9.2.2:
    /// MD5 or SHA-256 of `username:realm:password`), or `None` to refuse it (401).
    fn key(&self, username: &str, realm: &str, algorithm: PasswordAlgorithm) -> Option<Key>;

    /// The username whose USERHASH (RFC 8489 §14.4: SHA-256 of `username:realm`) is
    /// `hash`, for clients that hide their username. Default: USERHASH unsupported.
    fn username_for_hash(&self, hash: &[u8; 32], realm: &str) -> Option<String> {
        let _ = (hash, realm);
        None
    }
}

/// A fixed table of users and their long-term keys (the passwords themselves are not
/// kept: only MD5 and SHA-256 of `username:realm:password`, RFC 8489 §9.2.2, and the
/// USERHASH).
///
/// ```
/// use chorus_nat::stun::PasswordAlgorithm::{Md5, Sha256};
/// use chorus_nat::turn::server::{Authenticator, StaticUsers};
///
/// let mut users = StaticUsers::new("example.org");
/// users.add("alice", "secret");
/// assert!(users.key("alice", "example.org", Md5).is_some());
/// assert!(users.key("alice", "example.org", Sha256).is_some());
/// assert!(users.key("alice", "other.org", Md5).is_none());
/// assert!(users.key("bob", "example.org", Md5).is_none());
/// ```
#[derive(Debug, Clone)]
pub struct StaticUsers {
    realm: String,
    keys: HashMap<String, (Key, Key)>,
    hashes: HashMap<[u8; 32], String>,
}

impl StaticUsers {
    /// An empty table for `realm`.
    #[must_use]
    pub fn new(realm: &str) -> Self {
        Self {
            realm: realm.to_owned(),
            keys: HashMap::new(),
            hashes: HashMap::new(),
        }
    }

    /// Adds (or replaces) a user.
    pub fn add(&mut self, username: &str, password: &str) {
        let md5 = Key::long_term(username, &self.realm, password, PasswordAlgorithm::Md5);
        let sha256 = Key::long_term(username, &self.realm, password, PasswordAlgorithm::Sha256);
        self.keys.insert(username.to_owned(), (md5, sha256));
        self.hashes
            .insert(userhash(username, &self.realm), username.to_owned());
    }

    /// How many users the table holds.
    #[must_use]
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the table is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

impl Authenticator for StaticUsers {
    fn key(&self, username: &str, realm: &str, algorithm: PasswordAlgorithm) -> Option<Key> {
        let (md5, sha256) = self.keys.get(username).filter(|_| realm == self.realm)?;
        Some(match algorithm {
            PasswordAlgorithm::Md5 => md5.clone(),
            PasswordAlgorithm::Sha256 => sha256.clone(),
        })
    }

    fn username_for_hash(&self, hash: &[u8; 32], realm: &str) -> Option<String> {
        (realm == self.realm)
            .then(|| self.hashes.get(hash).cloned())
            .flatten()
    }
}

/// Stateless nonces (RFC 8489 §9.2): 16 hex digits of the expiry (milliseconds after
/// the server's epoch) and 24 hex digits of HMAC-SHA256(secret, expiry ‖ client
/// address). Unpredictable (the secret comes from the injected entropy), time-limited,
/// bound to the client's address, and they need no table.
pub(super) struct Nonces {
    key: ring::hmac::Key,
    lifetime: Duration,
}

/// The nonce cookie with the "Password algorithms" security feature (RFC 8489 §9.2):
/// every nonce starts with it, since every challenge offers PASSWORD-ALGORITHMS.
pub(super) const NONCE_PREFIX: &str = "obMatJos2AAAB";

/// A nonce's length in characters.
pub(super) const NONCE_LEN: usize = NONCE_PREFIX.len() + 40;

pub(super) enum NonceCheck {
    Valid,
    /// Well-formed and authentic but expired, or not ours: 438.
    Stale,
}

impl Nonces {
    pub(super) fn new(secret: &[u8; 32], lifetime: Duration) -> Self {
        Self {
            key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret),
            lifetime,
        }
    }

    fn tag(&self, expiry: u64, client: SocketAddr) -> [u8; 12] {
        let mut ctx = ring::hmac::Context::with_key(&self.key);
        ctx.update(&expiry.to_be_bytes());
        match client.ip() {
            std::net::IpAddr::V4(ip) => ctx.update(&ip.octets()),
            std::net::IpAddr::V6(ip) => ctx.update(&ip.octets()),
        }
        ctx.update(&client.port().to_be_bytes());
        let mut out = [0u8; 12];
        let tag = ctx.sign();
        if let Some(t) = tag.as_ref().get(..12) {
            out.copy_from_slice(t);
        }
        out
    }

    /// A fresh nonce for `client`, valid for the configured lifetime from `now`.
    pub(super) fn issue(&self, epoch: Instant, now: Instant, client: SocketAddr) -> String {
        let expiry = (now.saturating_duration_since(epoch) + self.lifetime).as_millis() as u64;
        let mut s = String::with_capacity(NONCE_LEN);
        s.push_str(NONCE_PREFIX);
        push_hex(&mut s, &expiry.to_be_bytes());
        push_hex(&mut s, &self.tag(expiry, client));
        s
    }

    pub(super) fn check(
        &self,
        epoch: Instant,
        now: Instant,
        client: SocketAddr,
        nonce: &str,
    ) -> NonceCheck {
        let mut raw = [0u8; 20];
        let Some(hex) = nonce.strip_prefix(NONCE_PREFIX) else {
            return NonceCheck::Stale;
        };
        if nonce.len() != NONCE_LEN || !parse_hex(hex, &mut raw) {
            return NonceCheck::Stale;
        }
        let (e, tag) = raw.split_at(8);
        let mut eb = [0u8; 8];
        eb.copy_from_slice(e);
        let expiry = u64::from_be_bytes(eb);
        let now_ms = now.saturating_duration_since(epoch).as_millis() as u64;
        if !chorus_crypto::ct_eq(&self.tag(expiry, client), tag) || expiry <= now_ms {
            return NonceCheck::Stale;
        }
        NonceCheck::Valid
    }
}

fn push_hex(s: &mut String, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        for nibble in [b >> 4, b & 15] {
            s.push(char::from(
                HEX.get(usize::from(nibble)).copied().unwrap_or(b'0'),
            ));
        }
    }
}

fn parse_hex(s: &str, out: &mut [u8]) -> bool {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let bytes = s.as_bytes();
    if bytes.len() != out.len() * 2 {
        return false;
    }
    for (o, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        match (
            pair.first().copied().and_then(digit),
            pair.get(1).copied().and_then(digit),
        ) {
            (Some(h), Some(l)) => *o = h << 4 | l,
            _ => return false,
        }
    }
    true
}

//! A deterministic large-scale simulator of the Global Index (feature `sim`).
//!
//! It drives the same sans-IO [`Node`] the tokio driver does, over a simulated network
//! on a virtual clock: no sockets, no threads, no wall-clock reads. Every datagram is
//! really encoded and decoded. The model:
//!
//! - **Latency**: each pair of nodes has a fixed round-trip time drawn from a
//!   log-normal distribution (median [`SimConfig::median_rtt`], shape
//!   [`SimConfig::rtt_sigma`]); each datagram adds up to 10 % jitter.
//! - **Loss**: each datagram is lost with probability [`SimConfig::loss`].
//! - **Churn**: honest nodes leave at [`SimConfig::churn_per_hour`] of the network per
//!   hour (exponential session lengths, so leaves form a Poisson process), a fraction
//!   [`SimConfig::graceful`] of them gracefully; each leave is matched by a join of a
//!   fresh node that bootstraps through three random online nodes (its host cache).
//! - **Users**: [`SimConfig::users`] users, each attached to a random honest super
//!   node that publishes their record; when that node leaves, the user reconnects to
//!   another after [`SimConfig::reconnect_delay`] and publishes a new version.
//! - **Malicious nodes**: a fraction [`SimConfig::malicious`] of the initial nodes,
//!   present in routing tables like any other, answer pings and acknowledge stores
//!   (and discard them), and answer lookups by one of four behaviours (in turn):
//!   *drop* (no answer), *lie* (claim no record and return only colluding malicious
//!   nodes close to the target, the eclipse attempt), *stale* (return an older,
//!   validly signed version of the record, and colluding nodes), *forge* (return a
//!   "newer" version whose signature does not verify, and colluding nodes).
//! - **Signatures**: RSA verification of every record at every node would make a
//!   100,000-node run measure RSA. The simulator's [`SimVerifier`] uses a keyed hash
//!   instead (same call sites, same accept/reject decisions); the real node uses
//!   [`CertVerifier`](crate::record::CertVerifier), and `benches/index.rs` gives the
//!   per-record RSA cost to add.
//!
//! Initial routing tables are filled directly from the global view (as if the network
//! had run for a while); joins during the run use the real protocol.
//!
//! ```
//! use chorus_index::sim::{run, SimConfig};
//! let mut c = SimConfig::default();
//! c.nodes = 200;
//! c.users = 100;
//! c.lookups = 100;
//! let report = run(&c);
//! assert!(report.success_rate() > 0.95, "{report}");
//! ```

use core::fmt;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use chorus_crypto::cert::NodeId;
use chorus_framing::SeededEntropy;
use ring::digest;

use crate::error::Violation;
use crate::id::{distance, user_key};
use crate::message::{Body, Contact, Message, possession_message};
use crate::node::{Config, Event, LookupId, Node, NodeIdentity};
use crate::record::{NatClass, PresenceRecord, Signer, Verifier};

/// Simulation parameters.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SimConfig {
    /// Super nodes at the start (kept constant by churn). Default 1,000.
    pub nodes: usize,
    /// Seed of every random choice. Default 1.
    pub seed: u64,
    /// Fraction of honest nodes replaced per simulated hour. Default 0.2.
    pub churn_per_hour: f64,
    /// Fraction of leaves that are graceful (hand-off and Leave messages). Default 0.5.
    pub graceful: f64,
    /// Fraction of malicious nodes. Default 0.
    pub malicious: f64,
    /// Users with a presence record. Default 1,000.
    pub users: usize,
    /// User lookups, spread evenly over the measured period. Default 1,000.
    pub lookups: usize,
    /// Searches by a display-name word, spread the same way. Default 0. When
    /// non-zero, records are also published under their display-name words (each
    /// user is "User U`n`": one word unique to the user, one shared by all).
    pub searches: usize,
    /// Time for publishing before lookups start. Default 30 s.
    pub warmup: Duration,
    /// Simulated time over which lookups run, after the warm-up. Default 600 s.
    pub duration: Duration,
    /// Median round-trip time. Default 50 ms.
    pub median_rtt: Duration,
    /// Log-normal shape of round-trip times. Default 0.6 (p99 about 4x the median).
    pub rtt_sigma: f64,
    /// Probability that a datagram is lost. Default 0.01.
    pub loss: f64,
    /// How long a user whose super node left takes to publish again. Default 10 s.
    pub reconnect_delay: Duration,
    /// The node configuration (Chorus's by default; [`Config::kademlia`] for the
    /// baseline).
    pub node: Config,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            nodes: 1000,
            seed: 1,
            churn_per_hour: 0.2,
            graceful: 0.5,
            malicious: 0.0,
            users: 1000,
            lookups: 1000,
            searches: 0,
            warmup: Duration::from_secs(30),
            duration: Duration::from_secs(600),
            median_rtt: Duration::from_millis(50),
            rtt_sigma: 0.6,
            loss: 0.01,
            reconnect_delay: Duration::from_secs(10),
            node: Config::default(),
        }
    }
}

/// What a run measured.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Report {
    /// Lookups started.
    pub lookups: usize,
    /// Lookups that found a verified record of the user.
    pub found: usize,
    /// Lookups that found the user's current version.
    pub fresh: usize,
    /// Lookups whose node left before they finished (not counted).
    pub abandoned: usize,
    /// Searches started.
    pub searches: usize,
    /// Searches whose results included the user searched for.
    pub searches_found: usize,
    /// Hops to the first record, per successful lookup, sorted.
    pub hops: Vec<u32>,
    /// Time until a successful lookup returned its record, sorted.
    pub latency: Vec<Duration>,
    /// Requests sent per lookup, sorted.
    pub messages: Vec<u32>,
    /// Mean routing table size of online honest nodes at the end.
    pub table_mean: f64,
    /// Mean [`Node::memory_bytes`] of online honest nodes at the end.
    pub memory_mean: f64,
    /// Datagrams delivered.
    pub datagrams: u64,
    /// Records published (initial and after reconnects) and acknowledged replicas.
    pub publishes: usize,
    /// Mean replicas acknowledged per publication.
    pub replicas_mean: f64,
    /// At the end, for up to 200 online users: mean online nodes holding their current
    /// version.
    pub replicas_end_mean: f64,
    /// The fewest such holders of any of those users.
    pub replicas_end_min: usize,
    /// Leaves and joins.
    pub churned: usize,
    /// Peers penalized for records that did not verify (or proofs of possession).
    pub penalized: u64,
    /// Requests honest nodes sent with a possession challenge.
    pub challenges: u64,
    /// Proofs of possession honest nodes signed (an RSA signature each in
    /// production).
    pub proofs_signed: u64,
    /// Requests honest nodes left unanswered because their signing budget was spent.
    pub proofs_refused: u64,
    /// Node certificates honest nodes verified (an RSA verification each in
    /// production; the certificate cache answers the rest).
    pub certs_verified: u64,
    /// Requests honest nodes dropped or answered with a cookie because their
    /// verification budget was spent.
    pub verifications_refused: u64,
    /// `Cookie` messages honest nodes sent (an address had to prove it receives).
    pub cookies: u64,
    /// Answers honest nodes cut to the size of an unvalidated requester's request.
    pub truncated: u64,
    /// Simulated time.
    pub simulated: Duration,
    /// Wall-clock time of the run.
    pub wall: Duration,
}

fn percentile<T: Copy + Default>(sorted: &[T], p: f64) -> T {
    if sorted.is_empty() {
        return T::default();
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted
        .get(i.min(sorted.len() - 1))
        .copied()
        .unwrap_or_default()
}

impl Report {
    /// Adds an honest node's counters (when it leaves, or at the end).
    fn add(&mut self, stats: &crate::node::Stats) {
        self.penalized += stats.penalized;
        self.challenges += stats.challenges;
        self.proofs_signed += stats.proofs_signed;
        self.proofs_refused += stats.proofs_refused;
        self.certs_verified += stats.certs_verified;
        self.verifications_refused += stats.verifications_refused;
        self.cookies += stats.cookies_sent;
        self.truncated += stats.truncated;
    }

    /// Fraction of counted lookups that found a verified record.
    #[must_use]
    pub fn success_rate(&self) -> f64 {
        let n = self.lookups - self.abandoned;
        if n == 0 {
            0.0
        } else {
            self.found as f64 / n as f64
        }
    }

    /// Fraction of counted lookups that found the current version.
    #[must_use]
    pub fn fresh_rate(&self) -> f64 {
        let n = self.lookups - self.abandoned;
        if n == 0 {
            0.0
        } else {
            self.fresh as f64 / n as f64
        }
    }

    /// Hops at percentile `p` (0-1).
    #[must_use]
    pub fn hops_at(&self, p: f64) -> u32 {
        percentile(&self.hops, p)
    }

    /// Latency at percentile `p` (0-1).
    #[must_use]
    pub fn latency_at(&self, p: f64) -> Duration {
        percentile(&self.latency, p)
    }

    /// Mean requests per lookup.
    #[must_use]
    pub fn messages_mean(&self) -> f64 {
        if self.messages.is_empty() {
            0.0
        } else {
            self.messages.iter().map(|&m| f64::from(m)).sum::<f64>() / self.messages.len() as f64
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "lookups            {} ({} abandoned: their node left)",
            self.lookups, self.abandoned
        )?;
        writeln!(
            f,
            "success rate       {:.3} % (any verified record), {:.3} % (current version)",
            100.0 * self.success_rate(),
            100.0 * self.fresh_rate()
        )?;
        let share = |h: u32| {
            100.0 * self.hops.iter().filter(|&&x| x == h).count() as f64
                / self.hops.len().max(1) as f64
        };
        writeln!(
            f,
            "hops               median {}, p99 {} (0: {:.1} %, 1: {:.1} %, 2: {:.1} %, 3: {:.1} %, more: {:.1} %)",
            self.hops_at(0.5),
            self.hops_at(0.99),
            share(0),
            share(1),
            share(2),
            share(3),
            100.0 * self.hops.iter().filter(|&&x| x > 3).count() as f64
                / self.hops.len().max(1) as f64
        )?;
        writeln!(
            f,
            "latency            median {:.0} ms, p99 {:.0} ms",
            self.latency_at(0.5).as_secs_f64() * 1e3,
            self.latency_at(0.99).as_secs_f64() * 1e3
        )?;
        writeln!(
            f,
            "messages/lookup    mean {:.1}, median {}, p99 {}",
            self.messages_mean(),
            percentile(&self.messages, 0.5),
            percentile(&self.messages, 0.99)
        )?;
        writeln!(
            f,
            "routing table      {:.0} contacts, {:.1} KiB per node (core estimate)",
            self.table_mean,
            self.memory_mean / 1024.0
        )?;
        writeln!(
            f,
            "publications       {} (mean {:.1} replicas acknowledged)",
            self.publishes, self.replicas_mean
        )?;
        writeln!(
            f,
            "replicas at end    mean {:.1}, min {} (current version, online holders)",
            self.replicas_end_mean, self.replicas_end_min
        )?;
        writeln!(
            f,
            "churn              {} leaves (each with a join); {} peers penalized",
            self.churned, self.penalized
        )?;
        if self.searches > 0 {
            writeln!(
                f,
                "searches           {} ({:.2} % found the user)",
                self.searches,
                100.0 * self.searches_found as f64 / self.searches as f64
            )?;
        }
        writeln!(
            f,
            "possession         {} challenges sent, {} proofs signed",
            self.challenges, self.proofs_signed
        )?;
        writeln!(
            f,
            "address validation {} cookies sent, {} answers cut to fit, {} proofs refused \
             (signing budget)",
            self.cookies, self.truncated, self.proofs_refused
        )?;
        writeln!(
            f,
            "verification       {} certificate checks (the simulator keeps no certificate \
             cache), {} requests refused (verification budget)",
            self.certs_verified, self.verifications_refused
        )?;
        writeln!(f, "datagrams          {}", self.datagrams)?;
        write!(
            f,
            "simulated          {:.0} s in {:.1} s of wall-clock time",
            self.simulated.as_secs_f64(),
            self.wall.as_secs_f64()
        )
    }
}

/// The simulator's verifier: certificates and signatures are keyed hashes under a
/// per-run secret that only the simulator knows. Cheap and deterministic; it accepts
/// and rejects exactly where RSA would (a forged or altered record fails). **Not
/// secure**: for simulation only.
#[derive(Debug, Clone)]
pub struct SimVerifier {
    secret: [u8; 16],
}

impl SimVerifier {
    /// A verifier for a run with `seed`.
    #[must_use]
    pub fn new(seed: u64) -> Self {
        let mut secret = [0u8; 16];
        secret[..8].copy_from_slice(&seed.to_be_bytes());
        secret[8..].copy_from_slice(b"sim-key!");
        Self { secret }
    }

    fn tag(&self, data: &[u8]) -> [u8; 16] {
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(&self.secret);
        ctx.update(data);
        let mut out = [0u8; 16];
        out.copy_from_slice(&ctx.finish().as_ref()[..16]);
        out
    }

    /// The certificate of simulated super node `index`: the index and its tag.
    #[must_use]
    pub fn node_cert(&self, index: u64) -> Bytes {
        let mut cert = Vec::with_capacity(24);
        cert.extend_from_slice(&index.to_be_bytes());
        cert.extend_from_slice(&self.tag(&index.to_be_bytes()));
        cert.into()
    }

    /// The key of simulated super node `index` (a keyed hash only the simulator can
    /// compute: a node replaying another's certificate cannot sign for it).
    #[must_use]
    pub fn node_key(&self, index: u64) -> Arc<dyn Signer> {
        let mut seed = b"node key".to_vec();
        seed.extend_from_slice(&index.to_be_bytes());
        Arc::new(SimSigner {
            key: self.tag(&seed),
        })
    }

    /// The node id a certificate made by [`SimVerifier::node_cert`] yields.
    #[must_use]
    pub fn node_id(cert: &[u8]) -> NodeId {
        let mut id = [0u8; 32];
        id.copy_from_slice(digest::digest(&digest::SHA256, cert).as_ref());
        NodeId(id)
    }

    /// Signs `record` for the simulation (its user certificate is set to the
    /// username's).
    pub fn sign(&self, record: &mut PresenceRecord) {
        record.user_cert = Bytes::from(format!("user:{}", record.username));
        record.signature = Bytes::new();
        record.signature = Bytes::copy_from_slice(&self.tag(&record.signed_message()));
    }
}

/// A simulated node's key: signatures are keyed hashes (see [`SimVerifier`]).
struct SimSigner {
    key: [u8; 16],
}

impl SimSigner {
    fn sig(key: &[u8; 16], message: &[u8]) -> [u8; 16] {
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(key);
        ctx.update(message);
        let mut out = [0u8; 16];
        out.copy_from_slice(&ctx.finish().as_ref()[..16]);
        out
    }
}

impl Signer for SimSigner {
    fn sign(&self, message: &[u8]) -> Result<Bytes, chorus_framing::EntropyError> {
        Ok(Bytes::copy_from_slice(&Self::sig(&self.key, message)))
    }
}

impl Verifier for SimVerifier {
    fn verify_node(&self, cert: &[u8], _: SystemTime) -> Result<NodeId, Violation> {
        let (index, tag) = cert
            .split_at_checked(8)
            .ok_or(Violation::BadNodeCertificate)?;
        if tag != self.tag(index) {
            return Err(Violation::BadNodeCertificate);
        }
        Ok(Self::node_id(cert))
    }

    fn verify_possession(
        &self,
        cert: &[u8],
        message: &[u8],
        signature: &[u8],
        now: SystemTime,
    ) -> Result<(), Violation> {
        self.verify_node(cert, now)?;
        let mut seed = b"node key".to_vec();
        seed.extend_from_slice(cert.get(..8).unwrap_or_default());
        if signature != SimSigner::sig(&self.tag(&seed), message) {
            return Err(Violation::BadProof);
        }
        Ok(())
    }

    fn verify_record(&self, record: &PresenceRecord, _: SystemTime) -> Result<(), Violation> {
        if record.user_cert.strip_prefix(b"user:") != Some(record.username.as_bytes()) {
            return Err(Violation::BadUserCertificate);
        }
        if record.signature.as_ref() != self.tag(&record.signed_message()) {
            return Err(Violation::BadSignature);
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Drop,
    Lie,
    Stale,
    Forge,
}

enum Actor {
    Honest(Box<Node>),
    Malicious {
        cert: Bytes,
        key: Arc<dyn Signer>,
        mode: Mode,
    },
    Gone,
}

#[derive(Debug)]
enum Ev {
    Deliver { to: u32, from: u32, payload: Bytes },
    Timer { node: u32 },
    Churn,
    Lookup,
    Search,
    Reconnect { user: u32 },
}

struct Queued {
    at: u64,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Queued {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, o: &Self) -> Option<core::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Queued {
    fn cmp(&self, o: &Self) -> core::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

struct User {
    name: String,
    home: Option<u32>,
    version: u64,
    published: bool,
    stale: Option<Bytes>,
}

struct PendingLookup {
    user: u32,
    version: u64,
    search: bool,
}

const EPOCH_SECS: u64 = 1_700_000_000;

fn addr(i: u32) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)), 4000)
}

fn index_of(a: SocketAddr) -> Option<u32> {
    match a.ip() {
        IpAddr::V4(ip) => u32::from(ip).checked_sub(0x0a00_0000),
        IpAddr::V6(_) => None,
    }
}

struct Sim<'c> {
    c: &'c SimConfig,
    t0: Instant,
    wall0: SystemTime,
    now: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<Queued>>,
    actors: Vec<Actor>,
    ids: Vec<NodeId>,
    timers: Vec<u64>,
    honest_online: Vec<u32>,
    malicious_sorted: Vec<(NodeId, u32)>,
    verifier: Arc<SimVerifier>,
    rng: SeededEntropy,
    users: Vec<User>,
    user_keys: BTreeMap<NodeId, u32>,
    lookups: BTreeMap<(u32, LookupId), PendingLookup>,
    publishes: BTreeMap<(u32, String), ()>,
    report: Report,
    replicas_total: usize,
    lookups_left: usize,
}

impl Sim<'_> {
    fn rand(&mut self) -> u64 {
        self.rng.next_u64()
    }

    fn uniform(&mut self) -> f64 {
        (self.rand() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn at(&self, t: u64) -> Instant {
        self.t0 + Duration::from_micros(t)
    }

    fn push(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse(Queued {
            at,
            seq: self.seq,
            ev,
        }));
    }

    /// The round-trip time between two nodes: fixed per pair, log-normal.
    fn rtt_us(&self, a: u32, b: u32) -> u64 {
        let (x, y) = (a.min(b), a.max(b));
        let h = digest::digest(
            &digest::SHA256,
            &[
                self.c.seed.to_be_bytes(),
                (u64::from(x) << 32 | u64::from(y)).to_be_bytes(),
            ]
            .concat(),
        );
        let h = h.as_ref();
        let u = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&h[i..i + 8]);
            ((u64::from_be_bytes(b) >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        };
        // Box-Muller.
        let z = (-2.0 * u(0).ln()).sqrt() * (2.0 * core::f64::consts::PI * u(8)).cos();
        let rtt = self.c.median_rtt.as_secs_f64() * (self.c.rtt_sigma * z).exp();
        (rtt.clamp(0.002, 3.0) * 1e6) as u64
    }

    fn new_honest(&mut self, index: u32) -> Box<Node> {
        let cert = self.verifier.node_cert(u64::from(index));
        let seed = self.c.seed ^ (u64::from(index) << 20) ^ 0x5eed;
        let key = self.verifier.node_key(u64::from(index));
        let node = Node::new(
            self.c.node.clone(),
            NodeIdentity { cert, key },
            self.verifier.clone(),
            Box::new(SeededEntropy::new(seed)),
            self.at(self.now),
            self.wall0 + Duration::from_micros(self.now),
        );
        match node {
            Ok(n) => Box::new(n),
            // The configuration was validated by the first node; certificates are ours.
            Err(e) => unreachable_config(e),
        }
    }

    /// Sends everything `i` queued and handles its events; reschedules its timer.
    fn sync(&mut self, i: u32) {
        let mut out = Vec::new();
        let mut events = Vec::new();
        let mut timeout = None;
        if let Some(Actor::Honest(node)) = self.actors.get_mut(i as usize) {
            while let Some(t) = node.poll_transmit() {
                out.push(t);
            }
            while let Some(e) = node.poll_event() {
                events.push(e);
            }
            timeout = node.poll_timeout();
        }
        for t in out {
            self.send(i, t.dst, t.payload);
        }
        for e in events {
            self.event(i, e);
        }
        if let Some(t) = timeout {
            let at =
                u64::try_from(t.saturating_duration_since(self.t0).as_micros()).unwrap_or(u64::MAX);
            let at = at.max(self.now);
            let slot = &mut self.timers[i as usize];
            if at < *slot || *slot < self.now {
                *slot = at;
                self.push(at, Ev::Timer { node: i });
            }
        }
    }

    fn send(&mut self, from: u32, dst: SocketAddr, payload: Bytes) {
        let Some(to) = index_of(dst) else { return };
        if self.uniform() < self.c.loss {
            return;
        }
        let rtt = self.rtt_us(from, to);
        let jitter = (self.uniform() * 0.1 * rtt as f64) as u64;
        let at = self.now + rtt / 2 + jitter;
        self.push(at, Ev::Deliver { to, from, payload });
    }

    fn event(&mut self, i: u32, e: Event) {
        match e {
            Event::Lookup(o) => {
                let Some(p) = self.lookups.remove(&(i, o.id)) else {
                    return;
                };
                let user = &self.users[p.user as usize];
                if p.search {
                    if o.results.iter().any(|r| r.username == user.name) {
                        self.report.searches_found += 1;
                    }
                    return;
                }
                self.report.messages.push(o.messages);
                if let Some(r) = &o.record
                    && r.username == user.name
                {
                    self.report.found += 1;
                    if r.version >= p.version {
                        self.report.fresh += 1;
                    }
                    self.report.hops.push(o.hops.unwrap_or(0));
                    // Until the lookup returned (with a quorum above 1, after the first
                    // record).
                    self.report.latency.push(o.duration);
                }
            }
            Event::Published { username, replicas }
                if self.publishes.remove(&(i, username.clone())).is_some() =>
            {
                self.report.publishes += 1;
                self.replicas_total += replicas;
            }
            _ => {}
        }
    }

    fn deliver(&mut self, to: u32, from: u32, payload: &Bytes) {
        let now = self.at(self.now);
        match self.actors.get_mut(to as usize) {
            Some(Actor::Honest(node)) => {
                self.report.datagrams += 1;
                let _ = node.handle_input(now, addr(from), payload);
                self.sync(to);
            }
            Some(Actor::Malicious { cert, key, mode }) => {
                self.report.datagrams += 1;
                let (cert, key, mode) = (cert.clone(), key.clone(), *mode);
                if let Some(reply) = self.malicious_reply(&cert, &*key, mode, payload) {
                    self.send(to, addr(from), reply);
                }
            }
            _ => {}
        }
    }

    fn colluders(&self, target: &NodeId) -> Vec<Contact> {
        let k = self.c.node.replication;
        let pos = self.malicious_sorted.partition_point(|(id, _)| id < target);
        let lo = pos.saturating_sub(k);
        let hi = (pos + k).min(self.malicious_sorted.len());
        let mut near: Vec<Contact> = self.malicious_sorted[lo..hi]
            .iter()
            .map(|&(id, i)| Contact { id, addr: addr(i) })
            .collect();
        near.sort_by_key(|c| distance(target, &c.id));
        near.truncate(k);
        near
    }

    fn malicious_reply(
        &self,
        cert: &Bytes,
        key: &dyn Signer,
        mode: Mode,
        payload: &[u8],
    ) -> Option<Bytes> {
        let msg = Message::decode(payload).ok()?;
        // Malicious nodes hold their own certified keys: they pass challenges.
        let proof = msg.nonce.and_then(|n| {
            key.sign(&possession_message(
                &n,
                &SimVerifier::node_id(msg.sender_cert),
            ))
            .ok()
        });
        let stale_record;
        let body = match msg.body {
            Body::Ping => Body::Pong,
            Body::Store { .. } => Body::StoreAck { stored: true },
            Body::FindNode { .. } | Body::FindValue { .. } if mode == Mode::Drop => return None,
            Body::FindNode { target } => Body::Nodes {
                nodes: self.colluders(&target),
            },
            Body::FindValue { key } => {
                stale_record = match mode {
                    Mode::Stale => self.stale_for(&key),
                    // A "newer" version with a broken signature: must be dropped and its
                    // sender penalized.
                    Mode::Forge => self
                        .stale_for(&key)
                        .and_then(|old| PresenceRecord::decode(&old).ok())
                        .map(|mut r| {
                            r.version += 1000;
                            r.to_bytes()
                        }),
                    _ => None,
                };
                Body::Value {
                    record: stale_record.as_deref(),
                    records: Vec::new(),
                    nodes: self.colluders(&key),
                }
            }
            _ => return None,
        };
        Some(
            Message {
                network: msg.network,
                txid: msg.txid,
                sender_cert: cert,
                nonce: None,
                proof: proof.as_deref(),
                cookie: None,
                padding: 0,
                body,
            }
            .to_bytes(),
        )
    }

    fn stale_for(&self, key: &NodeId) -> Option<Bytes> {
        // Users are few enough per run to search; a real attacker would have kept
        // the old versions it once stored.
        self.user_keys
            .get(key)
            .and_then(|&u| self.users.get(u as usize))
            .and_then(|u| u.stale.clone())
    }

    fn record(&self, user: u32, home: u32, version: u64) -> PresenceRecord {
        let u = &self.users[user as usize];
        let issued = EPOCH_SECS + self.now / 1_000_000 + version;
        let mut r = PresenceRecord {
            username: u.name.clone(),
            display_name: format!("User U{user}"),
            user_cert: Bytes::new(),
            super_nodes: vec![addr(home)],
            candidates: vec![SocketAddr::from(([192, 0, 2, (user % 250) as u8], 5000))],
            nat_class: NatClass::PortRestricted,
            version,
            issued_at: issued,
            expires_at: issued + 72 * 3600,
            signature: Bytes::new(),
        };
        self.verifier.sign(&mut r);
        r
    }

    fn publish(&mut self, user: u32, home: u32) {
        let version = self.users[user as usize].version;
        let r = self.record(user, home, version);
        let now = self.at(self.now);
        if let Some(Actor::Honest(node)) = self.actors.get_mut(home as usize)
            && node.publish(now, r).is_ok()
        {
            self.publishes
                .insert((home, self.users[user as usize].name.clone()), ());
            self.users[user as usize].home = Some(home);
        }
        self.sync(home);
    }

    fn random_honest(&mut self) -> Option<u32> {
        if self.honest_online.is_empty() {
            return None;
        }
        let i = (self.rand() % self.honest_online.len() as u64) as usize;
        self.honest_online.get(i).copied()
    }

    fn churn(&mut self) {
        let Some(pos) = (!self.honest_online.is_empty())
            .then(|| (self.rand() % self.honest_online.len() as u64) as usize)
        else {
            return;
        };
        let leaving = self.honest_online.swap_remove(pos);
        self.report.churned += 1;
        let graceful = self.uniform() < self.c.graceful;
        let now = self.at(self.now);
        if let Some(Actor::Honest(node)) = self.actors.get_mut(leaving as usize) {
            if graceful {
                node.leave(now);
            }
            self.report.add(&node.stats());
        }
        if graceful {
            self.sync(leaving);
        }
        self.actors[leaving as usize] = Actor::Gone;
        self.lookups.retain(|(n, _), _| *n != leaving);
        // Users attached to it reconnect elsewhere after a delay.
        for u in 0..self.users.len() {
            if self.users[u].home == Some(leaving) {
                self.users[u].home = None;
                self.push(
                    self.now + self.c.reconnect_delay.as_micros() as u64,
                    Ev::Reconnect { user: u as u32 },
                );
            }
        }
        // A fresh node joins through three nodes from its host cache.
        let index = self.actors.len() as u32;
        let node = self.new_honest(index);
        self.ids.push(node.id());
        self.actors.push(Actor::Honest(node));
        self.timers.push(u64::MAX);
        let seeds: Vec<SocketAddr> = (0..3)
            .filter_map(|_| self.random_honest())
            .map(addr)
            .collect();
        let now = self.at(self.now);
        if let Some(Actor::Honest(node)) = self.actors.get_mut(index as usize) {
            let _ = node.bootstrap(now, &seeds);
        }
        self.honest_online.push(index);
        self.sync(index);
    }

    fn start_lookup(&mut self, search: bool) {
        let Some(from) = self.random_honest() else {
            return;
        };
        // A random user who is online (attached to a super node).
        let mut user = None;
        for _ in 0..64 {
            let u = (self.rand() % self.users.len() as u64) as u32;
            if self.users[u as usize].home.is_some() {
                user = Some(u);
                break;
            }
        }
        let Some(user) = user else { return };
        let now = self.at(self.now);
        let name = self.users[user as usize].name.clone();
        let version = self.users[user as usize].version;
        if let Some(Actor::Honest(node)) = self.actors.get_mut(from as usize) {
            let started = if search {
                node.search(now, &format!("u{user}"))
            } else {
                node.find_user(now, &name)
            };
            if let Ok(id) = started {
                if search {
                    self.report.searches += 1;
                } else {
                    self.report.lookups += 1;
                }
                self.lookups.insert(
                    (from, id),
                    PendingLookup {
                        user,
                        version,
                        search,
                    },
                );
            }
        }
        self.sync(from);
    }

    /// Fills every initial honest node's table from the global view.
    fn warm_start(&mut self) {
        let mut sorted: Vec<(NodeId, u32)> = self
            .ids
            .iter()
            .enumerate()
            .map(|(i, id)| (*id, i as u32))
            .collect();
        sorted.sort_unstable();
        let cfg = self.c.node.table.clone();
        let now = self.at(0);
        for i in 0..self.actors.len() {
            if !matches!(self.actors[i], Actor::Honest(_)) {
                continue;
            }
            let own = self.ids[i];
            let mut picks: Vec<Contact> = Vec::new();
            for level in 0..256usize {
                // Ids sharing exactly `level` bits with ours: our first `level` bits,
                // then the opposite of our next bit.
                let mut lo = own.0;
                let byte = level / 8;
                let bit = 0x80u8 >> (level % 8);
                lo[byte] ^= bit;
                // Clear everything after the prefix for the lower bound.
                let keep = 0xffu8 << (7 - level % 8);
                lo[byte] &= keep;
                for b in lo.iter_mut().skip(byte + 1) {
                    *b = 0;
                }
                let mut hi = lo;
                hi[byte] |= !keep;
                for b in hi.iter_mut().skip(byte + 1) {
                    *b = 0xff;
                }
                let start = sorted.partition_point(|(id, _)| id.0 < lo);
                let end = sorted.partition_point(|(id, _)| id.0 <= hi);
                // The subtree on our side of this bit: stop when only we are in it.
                let mut same = lo;
                same[byte] ^= bit;
                let mut same_hi = same;
                same_hi[byte] |= !keep;
                for b in same_hi.iter_mut().skip(byte + 1) {
                    *b = 0xff;
                }
                let cap = if level < cfg.wide_levels {
                    cfg.wide_bucket_size
                } else {
                    cfg.bucket_size
                };
                let n = end - start;
                if n <= cap {
                    picks.extend(
                        sorted[start..end]
                            .iter()
                            .map(|&(id, j)| Contact { id, addr: addr(j) }),
                    );
                } else {
                    for _ in 0..cap {
                        let j = start + (self.rand() % n as u64) as usize;
                        let (id, idx) = sorted[j];
                        picks.push(Contact {
                            id,
                            addr: addr(idx),
                        });
                    }
                }
                let s = sorted.partition_point(|(id, _)| id.0 < same);
                let e = sorted.partition_point(|(id, _)| id.0 <= same_hi);
                if e - s <= 1 {
                    break;
                }
            }
            if let Actor::Honest(node) = &mut self.actors[i] {
                for c in picks {
                    node.add_contact(c, now);
                }
            }
        }
    }
}

#[cold]
fn unreachable_config(e: crate::Error) -> ! {
    // Only reachable with an invalid node configuration, which `run` checks first.
    panic!("simulated node refused its configuration: {e}")
}

/// Runs a simulation and reports what it measured.
///
/// # Panics
/// If `config.node` is not a valid node configuration.
#[must_use]
pub fn run(config: &SimConfig) -> Report {
    let started = Instant::now();
    let verifier = Arc::new(SimVerifier::new(config.seed));
    let mut node = config.node.clone();
    node.publish_words = config.searches > 0;
    // The simulator's certificates cost a hash to check anyway; a cache per node
    // would only add memory.
    node.cert_cache = 0;
    // Proofs are remembered only so a repeated challenge costs no second signature;
    // the simulator's signatures cost a hash, and 100,000 caches of 256 would
    // dominate its memory.
    node.proof_cache = node.proof_cache.min(8);
    let with_words = SimConfig {
        node,
        ..config.clone()
    };
    let config = &with_words;
    let mut sim = Sim {
        c: config,
        t0: started,
        wall0: UNIX_EPOCH + Duration::from_secs(EPOCH_SECS),
        now: 0,
        seq: 0,
        queue: BinaryHeap::new(),
        actors: Vec::with_capacity(config.nodes + 16),
        ids: Vec::with_capacity(config.nodes + 16),
        timers: Vec::new(),
        honest_online: Vec::new(),
        malicious_sorted: Vec::new(),
        verifier,
        rng: SeededEntropy::new(config.seed),
        users: Vec::new(),
        user_keys: BTreeMap::new(),
        lookups: BTreeMap::new(),
        publishes: BTreeMap::new(),
        report: Report::default(),
        replicas_total: 0,
        lookups_left: config.lookups + config.searches,
    };
    let n_malicious = (config.nodes as f64 * config.malicious).round() as usize;
    for i in 0..config.nodes {
        let index = i as u32;
        // Spread malicious nodes over the index range deterministically.
        let malicious = n_malicious > 0
            && (i * n_malicious) / config.nodes != ((i + 1) * n_malicious) / config.nodes;
        if malicious {
            let cert = sim.verifier.node_cert(u64::from(index));
            let id = SimVerifier::node_id(&cert);
            let mode = match sim.malicious_sorted.len() % 4 {
                0 => Mode::Drop,
                1 => Mode::Lie,
                2 => Mode::Stale,
                _ => Mode::Forge,
            };
            sim.malicious_sorted.push((id, index));
            sim.ids.push(id);
            let key = sim.verifier.node_key(u64::from(index));
            sim.actors.push(Actor::Malicious { cert, key, mode });
        } else {
            let node = sim.new_honest(index);
            sim.ids.push(node.id());
            sim.actors.push(Actor::Honest(node));
            sim.honest_online.push(index);
        }
        sim.timers.push(u64::MAX);
    }
    sim.malicious_sorted.sort_unstable();
    sim.warm_start();
    for i in 0..config.nodes as u32 {
        sim.sync(i);
    }
    // Users, each with an older signed version for stale-replay attackers.
    for u in 0..config.users as u32 {
        sim.users.push(User {
            name: format!("user{u}"),
            home: None,
            version: 2,
            published: false,
            stale: None,
        });
        sim.user_keys.insert(user_key(&format!("user{u}")), u);
        if let Some(home) = sim.random_honest() {
            let old = sim.record(u, home, 1).to_bytes();
            sim.users[u as usize].stale = Some(old);
            let at =
                (u64::from(u) * config.warmup.as_micros() as u64 / 2) / config.users.max(1) as u64;
            sim.push(at, Ev::Reconnect { user: u });
        }
    }
    let warmup = config.warmup.as_micros() as u64;
    let span = config.duration.as_micros() as u64;
    for l in 0..config.lookups as u64 {
        sim.push(warmup + l * span / config.lookups.max(1) as u64, Ev::Lookup);
    }
    for l in 0..config.searches as u64 {
        sim.push(
            warmup + l * span / config.searches.max(1) as u64 + 1,
            Ev::Search,
        );
    }
    let leaves_per_us =
        config.churn_per_hour * config.nodes as f64 * (1.0 - config.malicious) / 3.6e9;
    if leaves_per_us > 0.0 {
        let first = (-sim.uniform().max(1e-12).ln() / leaves_per_us) as u64;
        sim.push(first, Ev::Churn);
    }
    let end = warmup + span + 5_000_000;
    // First publications are "reconnects" of users with no previous home.
    while let Some(Reverse(q)) = sim.queue.pop() {
        if q.at > end {
            break;
        }
        sim.now = q.at;
        match q.ev {
            Ev::Deliver { to, from, payload } => sim.deliver(to, from, &payload),
            Ev::Timer { node } => {
                if sim.timers.get(node as usize) == Some(&q.at) {
                    sim.timers[node as usize] = u64::MAX;
                    let now = sim.at(sim.now);
                    if let Some(Actor::Honest(n)) = sim.actors.get_mut(node as usize) {
                        n.handle_timeout(now);
                    }
                    sim.sync(node);
                }
            }
            Ev::Churn => {
                if sim.now < warmup + span {
                    sim.churn();
                    let next = (-sim.uniform().max(1e-12).ln() / leaves_per_us) as u64;
                    sim.push(sim.now + next.max(1), Ev::Churn);
                }
            }
            Ev::Lookup => {
                sim.lookups_left = sim.lookups_left.saturating_sub(1);
                sim.start_lookup(false);
            }
            Ev::Search => {
                sim.lookups_left = sim.lookups_left.saturating_sub(1);
                sim.start_lookup(true);
            }
            Ev::Reconnect { user } => {
                if sim.users[user as usize].home.is_none()
                    && let Some(home) = sim.random_honest()
                {
                    let u = &mut sim.users[user as usize];
                    if u.published {
                        u.version += 1;
                    }
                    u.published = true;
                    sim.publish(user, home);
                }
            }
        }
        if sim.lookups_left == 0 && sim.lookups.is_empty() && sim.now > warmup + span {
            break;
        }
    }
    sim.report.abandoned = sim.report.lookups.saturating_sub(sim.report.messages.len());
    sim.report.simulated = Duration::from_micros(sim.now);
    let mut tables = 0usize;
    let mut memory = 0usize;
    let mut online = 0usize;
    for a in &sim.actors {
        if let Actor::Honest(n) = a {
            tables += n.table().len();
            memory += n.memory_bytes();
            online += 1;
            sim.report.add(&n.stats());
        }
    }
    sim.report.table_mean = tables as f64 / online.max(1) as f64;
    let sample: Vec<(String, u64)> = sim
        .users
        .iter()
        .filter(|u| u.home.is_some())
        .take(200)
        .map(|u| (u.name.clone(), u.version))
        .collect();
    let mut total = 0;
    let mut min = usize::MAX;
    for (name, version) in &sample {
        let holders = sim
            .actors
            .iter()
            .filter(|a| match a {
                Actor::Honest(n) => n.record(name).is_some_and(|r| r.version == *version),
                _ => false,
            })
            .count();
        total += holders;
        min = min.min(holders);
    }
    sim.report.replicas_end_mean = total as f64 / sample.len().max(1) as f64;
    sim.report.replicas_end_min = if sample.is_empty() { 0 } else { min };
    sim.report.memory_mean = memory as f64 / online.max(1) as f64;
    sim.report.replicas_mean = sim.replicas_total as f64 / sim.report.publishes.max(1) as f64;
    sim.report.hops.sort_unstable();
    sim.report.latency.sort_unstable();
    sim.report.messages.sort_unstable();
    sim.report.wall = started.elapsed();
    sim.report
}

#[cfg(test)]
mod tests;

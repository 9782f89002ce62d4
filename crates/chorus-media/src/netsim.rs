//! A deterministic network impairment simulator: random and Gilbert-Elliott burst
//! loss, replayable loss traces, delay, jitter, reordering, duplication and a bandwidth
//! cap with a bounded queue. Sans-IO and seeded: the same seed, configuration and
//! inputs give the same deliveries, so tests and the media-quality example replay.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use chorus_media::netsim::{LossModel, NetConfig, Network};
//!
//! let mut config = NetConfig::default();
//! config.loss = LossModel::Random { p: 0.1 };
//! config.delay = Duration::from_millis(40);
//! let mut net = Network::new(config, 7)?;
//! let t0 = Instant::now();
//! for i in 0..100u32 {
//!     net.handle_send(t0 + Duration::from_millis(20 * u64::from(i)), i, 100);
//! }
//! let mut got = Vec::new();
//! while let Some(at) = net.poll_timeout() {
//!     while let Some(p) = net.poll_deliver(at) { got.push(p); }
//! }
//! assert!((80..=98).contains(&got.len()), "{}", got.len());
//! assert!(got.windows(2).all(|w| w[0] < w[1]), "no reordering configured");
//! # Ok::<(), chorus_media::Error>(())
//! ```

use core::time::Duration;
use std::collections::BinaryHeap;
use std::time::Instant;

use chorus_framing::SplitMix64;

use crate::error::{Error, UsageError};

/// The simulators' deterministic generator: chorus-framing's [`SplitMix64`]
/// (defined once there). NOT for secrets.
pub type SimRng = SplitMix64;

/// How packets are lost.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum LossModel {
    /// No loss.
    None,
    /// Each packet lost independently with probability `p`.
    Random {
        /// Loss probability, 0-1.
        p: f64,
    },
    /// The two-state Gilbert-Elliott model: per packet, first a state transition
    /// (good -> bad with `p_good_to_bad`, bad -> good with `p_bad_to_good`), then a
    /// loss with the state's probability. Mean burst length is `1 / p_bad_to_good`.
    GilbertElliott {
        /// Probability of entering the bad state from the good one.
        p_good_to_bad: f64,
        /// Probability of leaving the bad state.
        p_bad_to_good: f64,
        /// Loss probability in the good state (often 0).
        loss_good: f64,
        /// Loss probability in the bad state (often 1).
        loss_bad: f64,
    },
    /// A replayed trace, cyclically: `true` = lost. See [`parse_trace`].
    Trace(Vec<bool>),
}

/// The impairments of one direction of a path.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct NetConfig {
    /// Loss model. Default none.
    pub loss: LossModel,
    /// Fixed one-way delay. Default 20 ms.
    pub delay: Duration,
    /// Extra delay drawn uniformly from [0, jitter] per packet. Packets stay in order
    /// unless chosen for reordering. Default 0.
    pub jitter: Duration,
    /// Probability that a packet is held back by `reorder_delay` (arriving after later
    /// ones). Default 0.
    pub reorder: f64,
    /// Extra delay of a reordered packet. Default 50 ms.
    pub reorder_delay: Duration,
    /// Probability that a delivered packet is delivered twice. Default 0.
    pub duplicate: f64,
    /// Bottleneck rate in bits per second; `None` = unlimited. Default `None`.
    pub bandwidth_bps: Option<u64>,
    /// Bytes the bottleneck queue holds before tail drop. Default 64 KiB.
    pub queue_bytes: usize,
    /// Packets in flight at most; further sends are dropped. Default 10,000.
    pub max_in_flight: usize,
}

impl Default for NetConfig {
    fn default() -> Self {
        Self {
            loss: LossModel::None,
            delay: Duration::from_millis(20),
            jitter: Duration::ZERO,
            reorder: 0.0,
            reorder_delay: Duration::from_millis(50),
            duplicate: 0.0,
            bandwidth_bps: None,
            queue_bytes: 64 * 1024,
            max_in_flight: 10_000,
        }
    }
}

/// Counters of a [`Network`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Packets handed to [`Network::handle_send`].
    pub sent: u64,
    /// Lost by the loss model.
    pub lost: u64,
    /// Dropped by the bandwidth queue or the in-flight bound.
    pub dropped: u64,
    /// Extra copies delivered.
    pub duplicated: u64,
    /// Packets held back for reordering.
    pub reordered: u64,
    /// Packets delivered (copies included).
    pub delivered: u64,
}

#[derive(Debug)]
struct InFlight<T> {
    at: Instant,
    order: u64,
    packet: T,
}

impl<T> PartialEq for InFlight<T> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.order) == (other.at, other.order)
    }
}
impl<T> Eq for InFlight<T> {}
impl<T> PartialOrd for InFlight<T> {
    fn partial_cmp(&self, other: &Self) -> Option<core::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for InFlight<T> {
    fn cmp(&self, other: &Self) -> core::cmp::Ordering {
        // Reversed: BinaryHeap is a max-heap, the earliest delivery must come first.
        (other.at, other.order).cmp(&(self.at, self.order))
    }
}

/// One direction of an impaired path. Sans-IO: time is passed in.
///
/// 1. [`Network::handle_send`] a packet at `now`;
/// 2. [`Network::poll_deliver`]`(now)` until `None` gives the packets due by `now`;
/// 3. [`Network::poll_timeout`] says when the next one is due.
#[derive(Debug)]
pub struct Network<T> {
    config: NetConfig,
    rng: SimRng,
    heap: BinaryHeap<InFlight<T>>,
    order: u64,
    bad_state: bool,
    trace_pos: usize,
    last_fifo: Option<Instant>,
    link_free: Option<Instant>,
    stats: NetStats,
}

fn valid_p(p: f64) -> bool {
    (0.0..=1.0).contains(&p)
}

impl<T: Clone> Network<T> {
    /// A path with `config`, its randomness from `seed`.
    pub fn new(config: NetConfig, seed: u64) -> Result<Self, Error> {
        let probabilities_ok = valid_p(config.reorder)
            && valid_p(config.duplicate)
            && match &config.loss {
                LossModel::None => true,
                LossModel::Random { p } => valid_p(*p),
                LossModel::GilbertElliott {
                    p_good_to_bad,
                    p_bad_to_good,
                    loss_good,
                    loss_bad,
                } => [*p_good_to_bad, *p_bad_to_good, *loss_good, *loss_bad]
                    .into_iter()
                    .all(valid_p),
                LossModel::Trace(t) => !t.is_empty(),
            };
        if !probabilities_ok {
            return Err(UsageError::InvalidConfig(
                "probabilities must be in [0, 1], traces non-empty",
            )
            .into());
        }
        if config.bandwidth_bps == Some(0) || config.max_in_flight == 0 {
            return Err(
                UsageError::InvalidConfig("bandwidth and max_in_flight must be positive").into(),
            );
        }
        Ok(Self {
            config,
            rng: SimRng::new(seed),
            heap: BinaryHeap::new(),
            order: 0,
            bad_state: false,
            trace_pos: 0,
            last_fifo: None,
            link_free: None,
            stats: NetStats::default(),
        })
    }

    /// The counters so far.
    #[must_use]
    pub const fn stats(&self) -> NetStats {
        self.stats
    }

    fn lose(&mut self) -> bool {
        match &self.config.loss {
            LossModel::None => false,
            LossModel::Random { p } => {
                let p = *p;
                self.rng.chance(p)
            }
            LossModel::GilbertElliott {
                p_good_to_bad,
                p_bad_to_good,
                loss_good,
                loss_bad,
            } => {
                let (gb, bg, lg, lb) = (*p_good_to_bad, *p_bad_to_good, *loss_good, *loss_bad);
                let flip = self.rng.chance(if self.bad_state { bg } else { gb });
                self.bad_state ^= flip;
                self.rng.chance(if self.bad_state { lb } else { lg })
            }
            LossModel::Trace(t) => {
                let lost = t
                    .get(self.trace_pos % t.len().max(1))
                    .copied()
                    .unwrap_or(false);
                self.trace_pos = self.trace_pos.wrapping_add(1);
                lost
            }
        }
    }

    fn jitter(&mut self) -> Duration {
        let j = self.config.jitter;
        if j.is_zero() {
            return Duration::ZERO;
        }
        j.mul_f64(self.rng.unit())
    }

    /// A packet of `len` bytes leaves the sender at `now`. Returns `false` when it will
    /// not arrive (lost, or dropped by a bound).
    pub fn handle_send(&mut self, now: Instant, packet: T, len: usize) -> bool {
        self.stats.sent += 1;
        // Draw every random decision for every packet, so that one setting does not
        // shift the random stream of the others.
        let lost = self.lose();
        let jitter = self.jitter();
        let reorder = self.rng.chance(self.config.reorder);
        let duplicate = self.rng.chance(self.config.duplicate);
        if lost {
            self.stats.lost += 1;
            return false;
        }
        let mut depart = now;
        if let Some(bps) = self.config.bandwidth_bps {
            let free = self.link_free.map_or(now, |f| f.max(now));
            let backlog = free.saturating_duration_since(now);
            let queued = backlog.as_secs_f64() * bps as f64 / 8.0;
            #[allow(clippy::cast_precision_loss, reason = "queue sizes are small")]
            let full = queued + len as f64 > self.config.queue_bytes as f64;
            if full {
                self.stats.dropped += 1;
                return false;
            }
            let tx = Duration::from_secs_f64(len as f64 * 8.0 / bps as f64);
            depart = free + tx;
            self.link_free = Some(depart);
        }
        if self.heap.len() + 2 > self.config.max_in_flight {
            self.stats.dropped += 1;
            return false;
        }
        let mut at = depart + self.config.delay + jitter;
        if reorder {
            at += self.config.reorder_delay;
            self.stats.reordered += 1;
        } else {
            // In-order delivery despite jitter, as on a single path.
            if let Some(last) = self.last_fifo {
                at = at.max(last);
            }
            self.last_fifo = Some(at);
        }
        if duplicate {
            self.stats.duplicated += 1;
            self.push(at, packet.clone());
        }
        self.push(at, packet);
        true
    }

    fn push(&mut self, at: Instant, packet: T) {
        self.order += 1;
        self.heap.push(InFlight {
            at,
            order: self.order,
            packet,
        });
    }

    /// The next packet due by `now`.
    #[must_use]
    pub fn poll_deliver(&mut self, now: Instant) -> Option<T> {
        if self.heap.peek()?.at > now {
            return None;
        }
        self.stats.delivered += 1;
        self.heap.pop().map(|p| p.packet)
    }

    /// When the next packet is due.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.heap.peek().map(|p| p.at)
    }
}

/// Why a loss trace did not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TraceError {
    /// A character other than `0`, `1`, `.`, `x`, whitespace or a `#` comment.
    BadCharacter {
        /// 1-based line.
        line: usize,
        /// 1-based column (in characters).
        column: usize,
    },
    /// More entries than the maximum.
    TooLong {
        /// The maximum.
        max: usize,
    },
    /// No entries at all.
    Empty,
}

impl core::fmt::Display for TraceError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::BadCharacter { line, column } => {
                write!(f, "unexpected character at line {line}, column {column}")
            }
            Self::TooLong { max } => write!(f, "more than {max} entries"),
            Self::Empty => f.write_str("no entries"),
        }
    }
}

impl std::error::Error for TraceError {}

/// Parses a loss trace: one entry per packet, `1` or `x` = lost, `0` or `.` =
/// delivered; whitespace is ignored and `#` starts a comment to the end of the line.
/// At most `max` entries.
pub fn parse_trace(text: &str, max: usize) -> Result<Vec<bool>, TraceError> {
    let mut out = Vec::new();
    for (ln, line) in text.lines().enumerate() {
        let body = line.split('#').next().unwrap_or("");
        for (col, c) in body.chars().enumerate() {
            let lost = match c {
                '1' | 'x' => true,
                '0' | '.' => false,
                c if c.is_whitespace() => continue,
                _ => {
                    return Err(TraceError::BadCharacter {
                        line: ln + 1,
                        column: col + 1,
                    });
                }
            };
            if out.len() >= max {
                return Err(TraceError::TooLong { max });
            }
            out.push(lost);
        }
    }
    if out.is_empty() {
        return Err(TraceError::Empty);
    }
    Ok(out)
}

#[cfg(test)]
#[allow(
    clippy::field_reassign_with_default,
    reason = "the style callers outside the crate must use (non_exhaustive)"
)]
mod tests {
    use super::*;

    fn run(config: NetConfig, seed: u64, n: u32) -> (Vec<(u32, Instant)>, NetStats) {
        let mut net = Network::new(config, seed).unwrap();
        let t0 = Instant::now();
        let mut out = Vec::new();
        for i in 0..n {
            let now = t0 + Duration::from_millis(20 * u64::from(i));
            while let Some(p) = net.poll_deliver(now) {
                out.push((p, now));
            }
            net.handle_send(now, i, 160);
        }
        while let Some(at) = net.poll_timeout() {
            while let Some(p) = net.poll_deliver(at) {
                out.push((p, at));
            }
        }
        (out, net.stats())
    }

    #[test]
    fn the_same_seed_replays_exactly() {
        let mut c = NetConfig::default();
        c.loss = LossModel::Random { p: 0.2 };
        c.jitter = Duration::from_millis(30);
        c.reorder = 0.05;
        c.duplicate = 0.05;
        let a = run(c.clone(), 42, 500);
        let b = run(c.clone(), 42, 500);
        assert_eq!(
            a.0.iter().map(|x| x.0).collect::<Vec<_>>(),
            b.0.iter().map(|x| x.0).collect::<Vec<_>>()
        );
        assert_eq!(a.1, b.1);
        assert_ne!(
            a.0.iter().map(|x| x.0).collect::<Vec<_>>(),
            run(c, 43, 500).0.iter().map(|x| x.0).collect::<Vec<_>>()
        );
    }

    #[test]
    fn gilbert_elliott_losses_come_in_bursts() {
        let mut c = NetConfig::default();
        c.loss = LossModel::GilbertElliott {
            p_good_to_bad: 0.02,
            p_bad_to_good: 0.25,
            loss_good: 0.0,
            loss_bad: 1.0,
        };
        let (got, stats) = run(c, 1, 20_000);
        let delivered: std::collections::BTreeSet<u32> = got.iter().map(|x| x.0).collect();
        let mut bursts = 0u32;
        let mut lost = 0u32;
        for i in 0..20_000 {
            if !delivered.contains(&i) {
                lost += 1;
                if i == 0 || delivered.contains(&(i - 1)) {
                    bursts += 1;
                }
            }
        }
        let mean_burst = f64::from(lost) / f64::from(bursts);
        assert!((3.0..5.0).contains(&mean_burst), "mean burst {mean_burst}");
        // Stationary loss rate 0.02 / (0.02 + 0.25) = 7.4 %.
        let rate = stats.lost as f64 / 20_000.0;
        assert!((0.05..0.10).contains(&rate), "loss {rate}");
    }

    #[test]
    fn jitter_alone_keeps_order_and_reordering_breaks_it() {
        let mut c = NetConfig::default();
        c.jitter = Duration::from_millis(60);
        let (got, _) = run(c.clone(), 3, 300);
        assert!(got.windows(2).all(|w| w[0].0 < w[1].0));
        c.reorder = 0.1;
        let (got, stats) = run(c, 3, 300);
        assert!(stats.reordered > 10);
        assert!(got.windows(2).any(|w| w[0].0 > w[1].0));
    }

    #[test]
    fn bandwidth_cap_delays_then_drops() {
        let mut c = NetConfig::default();
        // 160 bytes every 20 ms = 64 kbit/s offered into 32 kbit/s.
        c.bandwidth_bps = Some(32_000);
        c.queue_bytes = 1_600;
        let (got, stats) = run(c, 0, 1_000);
        assert!(stats.dropped > 400, "{stats:?}");
        assert_eq!(got.len() as u64 + stats.dropped, 1_000);
    }

    #[test]
    fn duplicates_are_delivered_twice() {
        let mut c = NetConfig::default();
        c.duplicate = 0.5;
        let (got, stats) = run(c, 9, 200);
        assert_eq!(got.len() as u64, 200 + stats.duplicated);
    }

    #[test]
    fn traces_parse_strictly_and_replay() {
        assert_eq!(
            parse_trace("0 1 # a comment\n..x\n", 10),
            Ok(vec![false, true, false, false, true])
        );
        assert_eq!(
            parse_trace("01\n0a", 10),
            Err(TraceError::BadCharacter { line: 2, column: 2 })
        );
        assert_eq!(parse_trace("0000", 3), Err(TraceError::TooLong { max: 3 }));
        assert_eq!(parse_trace("# nothing\n", 3), Err(TraceError::Empty));
        let mut c = NetConfig::default();
        c.loss = LossModel::Trace(parse_trace("0001", 10).unwrap());
        let (got, _) = run(c, 0, 8);
        assert_eq!(
            got.iter().map(|x| x.0).collect::<Vec<_>>(),
            [0, 1, 2, 4, 5, 6]
        );
    }
}

//! Adaptation: what the receiver's loss statistics say the sender should do.
//!
//! - [`LossEstimator`] turns the per-packet received/lost sequence into a loss rate
//!   and a mean burst length (the two-state Gilbert model's parameters, estimated by
//!   counting transitions).
//! - [`residual_loss_bursty`] is the exact loss left after Reed-Solomon FEC on such a
//!   path, for a group `(k, m)` interleaved `stride` deep, in the encoder's send order.
//! - [`choose_protection`] picks the Reed-Solomon group, the interleaving stride and
//!   Opus in-band FEC: nothing on a clean path, else the cheapest group reaching a
//!   residual-loss goal within a first delay/overhead budget, or a second, larger one
//!   when loss is heavy or bursty ([`ProtectionGoal`]).
//! - [`ProtectionController`] runs that choice at the sender from the receiver's
//!   reports: it starts with no protection, switches it on with loss and off when the
//!   loss clears, with hysteresis.
//! - [`RateController`] adapts the total send bitrate from RTCP loss reports (AIMD on
//!   the loss fraction) and splits it between media and FEC repair.
//!
//! The measurements behind the defaults (PESQ-WB per loss condition) are in
//! `docs/media.md`.

use core::time::Duration;

/// Loss statistics of a received stream, estimated packet by packet.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LossEstimator {
    packets: u64,
    lost: u64,
    /// Received -> lost transitions.
    good_to_bad: u64,
    /// Lost -> lost continuations.
    bad_to_bad: u64,
    last_lost: Option<bool>,
}

impl LossEstimator {
    /// An estimator with no history.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            packets: 0,
            lost: 0,
            good_to_bad: 0,
            bad_to_bad: 0,
            last_lost: None,
        }
    }

    /// One packet's fate, in sequence order.
    pub fn record(&mut self, lost: bool) {
        self.packets += 1;
        if lost {
            self.lost += 1;
            match self.last_lost {
                Some(true) => self.bad_to_bad += 1,
                Some(false) | None => self.good_to_bad += 1,
            }
        }
        self.last_lost = Some(lost);
    }

    /// Packets seen.
    #[must_use]
    pub const fn packets(&self) -> u64 {
        self.packets
    }

    /// Fraction of packets lost, 0-1.
    #[must_use]
    pub fn loss_rate(&self) -> f64 {
        if self.packets == 0 {
            return 0.0;
        }
        self.lost as f64 / self.packets as f64
    }

    /// Mean length of a loss burst in packets (1 for independent losses).
    #[must_use]
    pub fn mean_burst(&self) -> f64 {
        if self.good_to_bad == 0 {
            return 1.0;
        }
        (self.good_to_bad + self.bad_to_bad) as f64 / self.good_to_bad as f64
    }

    /// Halves the weight of the history (call once per report interval so that the
    /// estimate follows a changing path).
    pub fn decay(&mut self) {
        self.packets /= 2;
        self.lost /= 2;
        self.good_to_bad /= 2;
        self.bad_to_bad /= 2;
    }
}

/// What the sender should protect its stream with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Protection {
    /// Reed-Solomon `(k, m)`, or `None` for no packet FEC.
    pub rs: Option<(u8, u8)>,
    /// Interleaving stride for the Reed-Solomon groups (1 = none).
    pub stride: u8,
    /// Opus in-band FEC on or off.
    pub opus_fec: bool,
    /// The expected-loss hint for the Opus encoder, in percent.
    pub opus_expected_loss: u8,
}

impl Protection {
    /// Repair overhead: repair packets per source packet.
    #[must_use]
    pub fn overhead(&self) -> f64 {
        self.rs.map_or(0.0, |(k, m)| f64::from(m) / f64::from(k))
    }

    /// The extra receive delay the FEC groups need: a whole block must arrive before
    /// its first packet can be rebuilt (the repair packets leave right after it).
    #[must_use]
    pub fn delay(&self, frame: Duration) -> Duration {
        self.rs.map_or(Duration::ZERO, |(k, _)| {
            frame * (u32::from(k) * u32::from(self.stride)).saturating_sub(1)
        })
    }

    /// Whether the repairs can ride on the following media packets, one per packet
    /// (RFC 2198, [`crate::red`]): at most as many repairs as sources, so that a
    /// block's repairs have left before the next block's are made.
    #[must_use]
    pub fn can_piggyback(&self) -> bool {
        self.rs.is_some_and(|(k, m)| m <= k)
    }

    /// [`Protection::delay`] when the repairs ride on the following media packets:
    /// the block's sources, then one repair per frame.
    #[must_use]
    pub fn delay_piggybacked(&self, frame: Duration) -> Duration {
        self.rs.map_or(Duration::ZERO, |(k, m)| {
            let d = u32::from(self.stride);
            frame * (u32::from(k) * d + u32::from(m) * d).saturating_sub(1)
        })
    }

    /// The delay under `goal`: piggybacked when the goal says so and the group
    /// allows it.
    #[must_use]
    pub fn delay_for(&self, goal: &ProtectionGoal) -> Duration {
        if goal.piggyback && self.can_piggyback() {
            self.delay_piggybacked(goal.frame)
        } else {
            self.delay(goal.frame)
        }
    }
}

/// Bounds for [`choose_protection`].
///
/// Two tiers: protection is first sought within `max_delay` and `max_overhead`
/// (what a call on a moderately lossy path should pay); only when nothing there gets
/// the residual loss below `escalate` (heavy or bursty loss), within
/// `heavy_max_delay` and `heavy_max_overhead`.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct ProtectionGoal {
    /// Residual loss to reach after FEC, 0-1. Default 0.005 (0.5 %): PESQ-WB of
    /// speech drops by about 0.1-0.2 per 1 % of concealed 20 ms frames, more when
    /// they come in runs (see `docs/media.md`).
    pub residual: f64,
    /// The residual loss the first tier may settle for when it cannot reach
    /// `residual`; only worse than this does the second tier come in. Default 0.02:
    /// a noisy loss estimate on a moderately lossy path must not push the delay to
    /// the second tier's.
    pub escalate: f64,
    /// Largest FEC delay of the first tier (the wait for a group's repair packets,
    /// on top of the jitter buffer's own delay). Default 50 ms: with about 30 ms of
    /// jitter buffering, 80 ms in all.
    pub max_delay: Duration,
    /// Largest repair overhead of the first tier (repair packets per source
    /// packet). Default 1.0.
    pub max_overhead: f64,
    /// Largest FEC delay of the second tier. Default 110 ms (about 150 ms in all).
    pub heavy_max_delay: Duration,
    /// Largest repair overhead of the second tier. Default 2.0.
    pub heavy_max_overhead: f64,
    /// Loss below which no protection at all is used (no packet FEC, no Opus
    /// in-band FEC): a clean path keeps the codec's full quality. Default 0.005.
    pub min_loss: f64,
    /// Whether Opus in-band FEC (LBRR) is used alongside packet FEC. Default false:
    /// LBRR takes its bits from the primary encoding and needs one more frame of
    /// delay; measured at 32 kbit/s it is worth less than the
    /// packet FEC it would share the budget with (`docs/media.md`). It is used
    /// when packet FEC is not (loss up to `residual`, or `max_overhead` 0).
    pub opus_fec_with_rs: bool,
    /// Media frame duration. Default 20 ms.
    pub frame: Duration,
    /// Whether repairs of groups with `m <= k` ride on the following media packets
    /// (RFC 2198, one per packet) instead of in packets of their own: no packet
    /// header per repair (about 60 bytes with SRTP and UDP/IPv4), for `m` more
    /// frames of delay ([`Protection::delay_piggybacked`]). Default false.
    pub piggyback: bool,
}

impl Default for ProtectionGoal {
    fn default() -> Self {
        Self {
            residual: 0.005,
            escalate: 0.02,
            max_delay: Duration::from_millis(50),
            max_overhead: 1.0,
            heavy_max_delay: Duration::from_millis(110),
            heavy_max_overhead: 2.0,
            min_loss: 0.005,
            opus_fec_with_rs: false,
            frame: Duration::from_millis(20),
            piggyback: false,
        }
    }
}

/// P(X >= m) for X ~ Binomial(n, p).
fn binomial_tail(n: u32, p: f64, m: u32) -> f64 {
    let mut total = 0.0;
    let mut coef = 1.0; // C(n, i)
    for i in 0..=n {
        if i >= m {
            total += coef * p.powi(i as i32) * (1.0 - p).powi((n - i) as i32);
        }
        coef = coef * f64::from(n - i) / f64::from(i + 1);
    }
    total
}

/// The residual loss of a source packet under independent loss `p` with a `(k, m)`
/// code: it is lost and at least `m` of the other `k + m - 1` are lost too.
#[must_use]
pub fn residual_loss(p: f64, k: u8, m: u8) -> f64 {
    p * binomial_tail(u32::from(k) + u32::from(m) - 1, p, u32::from(m))
}

/// The residual loss of a source packet on a Gilbert path (loss rate `p`, mean loss
/// burst `mean_burst` packets; a lost packet is followed by another loss with
/// probability `1 - 1 / mean_burst`) with `(k, m)` groups interleaved `stride` deep,
/// in the order [`crate::fec::Encoder`] sends them: the `stride * k` sources of a
/// block, then each group's `m` repair packets. Exact: a forward pass over the
/// two-state chain counting the group's lost members.
#[must_use]
pub fn residual_loss_bursty(p: f64, mean_burst: f64, k: u8, m: u8, stride: u8) -> f64 {
    let p = p.clamp(0.0, 0.999);
    if p == 0.0 || k == 0 || m == 0 || stride == 0 {
        return if m == 0 || k == 0 { p } else { 0.0 };
    }
    // Leave the loss state with r; independent loss is r = 1 - p (the shortest mean
    // burst possible at this loss rate).
    let r = (1.0 / mean_burst.max(1.0)).clamp(1e-6, 1.0 - p);
    let p_gb = (p * r / (1.0 - p)).min(1.0);
    let (k, m, d) = (usize::from(k), usize::from(m), usize::from(stride));
    let cap = m + 1;
    let mut total = 0.0;
    for g in 0..d {
        // Positions in send order of this group's members: sources then repairs.
        let n = d * k + d * m;
        let member = |pos: usize| -> Option<bool> {
            if pos < d * k {
                (pos % d == g).then_some(true)
            } else {
                let rel = pos - d * k;
                (rel / m == g).then_some(false)
            }
        };
        // dist[state][lost members, capped][lost sources]
        let mut dist = vec![vec![vec![0.0f64; k + 1]; cap + 1]; 2];
        dist[0][0][0] = 1.0 - p;
        dist[1][0][0] = p;
        for pos in 0..n {
            let mut next = vec![vec![vec![0.0f64; k + 1]; cap + 1]; 2];
            for (state, layer) in dist.iter().enumerate() {
                for (lost, row) in layer.iter().enumerate() {
                    for (src, &w) in row.iter().enumerate() {
                        if w == 0.0 {
                            continue;
                        }
                        // The first packet keeps the stationary state; later ones move.
                        let to_bad = if pos == 0 {
                            if state == 1 { 1.0 } else { 0.0 }
                        } else if state == 1 {
                            1.0 - r
                        } else {
                            p_gb
                        };
                        for (bad, pr) in [(0usize, 1.0 - to_bad), (1, to_bad)] {
                            if pr == 0.0 {
                                continue;
                            }
                            let (l, s) = match (bad == 1, member(pos)) {
                                (true, Some(is_source)) => {
                                    ((lost + 1).min(cap), src + usize::from(is_source))
                                }
                                _ => (lost, src),
                            };
                            next[bad][l][s] += w * pr;
                        }
                    }
                }
            }
            dist = next;
        }
        // E[lost sources; more than m members lost] / k.
        for layer in &dist {
            for (src, &w) in layer[cap].iter().enumerate() {
                total += w * src as f64 / k as f64;
            }
        }
    }
    total / d as f64
}

/// The candidates [`choose_protection`] weighs within `max_delay` and
/// `max_overhead`, each with its residual loss: k 1-10, m 1-2k (at most 16),
/// stride 1-6.
fn candidates(
    loss: f64,
    mean_burst: f64,
    goal: &ProtectionGoal,
    max_delay: Duration,
    max_overhead: f64,
) -> Vec<(Protection, f64)> {
    let mut out = Vec::new();
    for k in 1u8..=10 {
        for stride in 1u8..=6 {
            let base = Protection {
                rs: Some((k, 1)),
                stride,
                opus_fec: false,
                opus_expected_loss: 0,
            };
            if base.delay_for(goal) > max_delay {
                continue;
            }
            for m in 1..=(2 * k).min(16) {
                let candidate = Protection {
                    rs: Some((k, m)),
                    ..base
                };
                if candidate.overhead() > max_overhead + 1e-9 {
                    break;
                }
                if candidate.delay_for(goal) > max_delay {
                    // Piggybacked repairs: each one more frame of delay.
                    continue;
                }
                let residual = residual_loss_bursty(loss, mean_burst, k, m, stride);
                out.push((candidate, residual));
            }
        }
    }
    out
}

/// Chooses the protection for the observed loss rate and mean burst length.
///
/// Below `goal.min_loss` nothing is used; up to `goal.residual` only Opus in-band
/// FEC. Otherwise Reed-Solomon groups `(k, m)` interleaved `stride` deep are scored
/// by their exact residual loss on a Gilbert path ([`residual_loss_bursty`]), first
/// within the goal's first tier (`max_delay`, `max_overhead`): the cheapest group
/// reaching `goal.residual` wins (ties: the lower residual, then the shorter delay);
/// if none does, the one with the lowest residual loss, as long as that is within
/// `goal.escalate`. Beyond it, the same within the second tier (`heavy_max_delay`,
/// `heavy_max_overhead`). `k = 1` is plain
/// repetition, with `stride` d its copies sent d frames after the originals (time
/// diversity against bursts).
#[must_use]
pub fn choose_protection(loss: f64, mean_burst: f64, goal: &ProtectionGoal) -> Protection {
    let loss = loss.clamp(0.0, 1.0);
    let none = Protection {
        rs: None,
        stride: 1,
        opus_fec: false,
        opus_expected_loss: 0,
    };
    if loss < goal.min_loss {
        return none;
    }
    let hint = (loss * 100.0).round().clamp(1.0, 100.0) as u8;
    let lbrr_only = Protection {
        opus_fec: true,
        opus_expected_loss: hint,
        ..none
    };
    if loss <= goal.residual {
        return lbrr_only;
    }
    let meets = |c: &(Protection, f64)| c.1 <= goal.residual;
    let cheapest = |list: &[(Protection, f64)]| {
        list.iter()
            .filter(|c| meets(c))
            .min_by(|a, b| {
                (a.0.overhead(), a.1, a.0.delay_for(goal))
                    .partial_cmp(&(b.0.overhead(), b.1, b.0.delay_for(goal)))
                    .unwrap_or(core::cmp::Ordering::Equal)
            })
            .map(|c| c.0)
    };
    let tier1 = candidates(loss, mean_burst, goal, goal.max_delay, goal.max_overhead);
    let tier2 = || {
        candidates(
            loss,
            mean_burst,
            goal,
            goal.heavy_max_delay.max(goal.max_delay),
            goal.heavy_max_overhead.max(goal.max_overhead),
        )
    };
    let strongest = |list: &[(Protection, f64)]| {
        list.iter()
            .min_by(|a, b| {
                (a.1, a.0.overhead())
                    .partial_cmp(&(b.1, b.0.overhead()))
                    .unwrap_or(core::cmp::Ordering::Equal)
            })
            .copied()
    };
    let chosen = cheapest(&tier1).or_else(|| match strongest(&tier1) {
        Some((p, residual)) if residual <= goal.escalate => Some(p),
        _ => {
            let all = tier2();
            cheapest(&all).or_else(|| strongest(&all).map(|c| c.0))
        }
    });
    match chosen {
        None => lbrr_only,
        Some(mut p) => {
            if goal.opus_fec_with_rs {
                p.opus_fec = true;
                p.opus_expected_loss = hint;
            }
            p
        }
    }
}

/// What a frame's bytes can buy, for [`choose_protection_for_budget`]: the send
/// rate pays for the codec and for every repair byte.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FrameBudget {
    /// Bytes per frame the send rate allows (media payload plus repairs).
    pub frame_bytes: f64,
    /// Bytes a repair costs besides the media bytes it codes, in a packet of its own.
    pub repair_cost: f64,
    /// The same when it rides on a media packet (RFC 2198).
    pub repair_cost_piggybacked: f64,
    /// The smallest media payload per frame FEC may leave the codec.
    pub min_media_bytes: f64,
}

impl FrameBudget {
    /// The media payload per frame `p` leaves the codec: `o` repairs per frame each
    /// cost a media payload plus their own overhead.
    #[must_use]
    pub fn media_bytes(&self, p: &Protection, goal: &ProtectionGoal) -> f64 {
        let o = p.overhead();
        let cost = if goal.piggyback && p.can_piggyback() {
            self.repair_cost_piggybacked
        } else {
            self.repair_cost
        };
        (self.frame_bytes - o * cost) / (1.0 + o)
    }
}

/// PESQ points one percent of concealed frames costs (measured on the speech of
/// `docs/media.md`: 0.2-0.3 per 1 % of 20 ms frames).
const RESIDUAL_WEIGHT: f64 = 23.0;
/// The codec's quality against its rate, as `-QUALITY_CURVE / kbps²`: a fit of
/// PESQ-WB of Opus speech through the session (+0.3 from 24 to 32 kbit/s, +0.3
/// more from 32 to 64, `docs/media.md`).
const QUALITY_CURVE: f64 = 395.0;

/// Chooses the protection that should sound best at a fixed send rate: the groups
/// [`choose_protection`] would weigh (those leaving the codec at least
/// `budget.min_media_bytes`) and no FEC, each scored as the codec's quality at the
/// media share it leaves (`-395 / kbps²`) less 0.23 per percent of residual loss
/// ([`residual_loss_bursty`]); the first tier's best unless its residual loss is
/// above `goal.escalate`, then the best of both tiers. Where [`choose_protection`] meets a residual-loss
/// goal at the least overhead, this one trades overhead for codec bits: on a
/// 64 kbit/s call with 10 % loss a piggybacked (3, 2) group (0.5 % residual, Opus
/// at 32 kbit/s) beats a (2, 2) one (0.3 %, 24 kbit/s).
#[must_use]
pub fn choose_protection_for_budget(
    loss: f64,
    mean_burst: f64,
    goal: &ProtectionGoal,
    budget: &FrameBudget,
) -> Protection {
    let loss = loss.clamp(0.0, 1.0);
    let none = choose_protection(0.0, 1.0, goal);
    if loss < goal.min_loss {
        return none;
    }
    let best_of = |list: Vec<(Protection, f64)>, mut best: (Protection, f64, f64)| {
        for (p, residual) in list {
            let s = score(&p, residual, goal, budget);
            // Ties: the shorter delay.
            if s > best.1 + 1e-9
                || (s > best.1 - 1e-9 && p.delay_for(goal) < best.0.delay_for(goal))
            {
                best = (p, s, residual);
            }
        }
        best
    };
    let start = (none, score(&none, loss, goal, budget), loss);
    let tier1 = best_of(
        candidates(loss, mean_burst, goal, goal.max_delay, goal.max_overhead),
        start,
    );
    if tier1.2 <= goal.escalate {
        return tier1.0;
    }
    // Heavy or bursty loss: the second tier's delay and overhead too.
    best_of(
        candidates(
            loss,
            mean_burst,
            goal,
            goal.heavy_max_delay.max(goal.max_delay),
            goal.heavy_max_overhead.max(goal.max_overhead),
        ),
        tier1,
    )
    .0
}

/// The score [`choose_protection_for_budget`] gives `p`, for hysteresis: a caller
/// keeps its group while a new choice is not clearly better.
#[must_use]
pub fn budget_score(
    p: &Protection,
    loss: f64,
    mean_burst: f64,
    goal: &ProtectionGoal,
    budget: &FrameBudget,
) -> f64 {
    let residual = match p.rs {
        Some((k, m)) => residual_loss_bursty(loss, mean_burst, k, m, p.stride),
        None => loss,
    };
    score(p, residual, goal, budget)
}

/// The codec's quality at the media share `p` leaves, less the residual loss's
/// cost; `-inf` below the budget's media floor.
fn score(p: &Protection, residual: f64, goal: &ProtectionGoal, budget: &FrameBudget) -> f64 {
    let media = budget.media_bytes(p, goal);
    if media <= 0.0 || (p.rs.is_some() && media < budget.min_media_bytes) {
        return f64::NEG_INFINITY;
    }
    let kbps = media * 8.0 / goal.frame.as_secs_f64() / 1000.0;
    -QUALITY_CURVE / kbps.powi(2) - RESIDUAL_WEIGHT * residual
}

/// Drives [`choose_protection`] from the receiver's per-packet loss record: the
/// sender's side of the loop, fed by the receiver's reports.
///
/// It starts with no protection at all. Every [`ProtectionController::report`]
/// re-chooses from the loss statistics (weighted towards the last few seconds:
/// the history is halved every `half_life` packets); protection switches on as soon
/// as a report shows loss and off once the estimate decays below `goal.min_loss`.
#[derive(Debug, Clone)]
pub struct ProtectionController {
    goal: ProtectionGoal,
    estimator: LossEstimator,
    half_life: u64,
    since_decay: u64,
    current: Protection,
}

impl ProtectionController {
    /// A controller for `goal`, halving its loss history every `half_life` packets
    /// (at least 1; 150 packets = 3 s of 20 ms frames is a good start).
    #[must_use]
    pub fn new(goal: ProtectionGoal, half_life: u64) -> Self {
        Self {
            goal,
            estimator: LossEstimator::new(),
            half_life: half_life.max(1),
            since_decay: 0,
            current: choose_protection(0.0, 1.0, &goal),
        }
    }

    /// One packet's fate as the receiver saw it, in sequence order.
    pub fn record(&mut self, lost: bool) {
        self.estimator.record(lost);
        self.since_decay += 1;
        if self.since_decay >= self.half_life {
            self.estimator.decay();
            self.since_decay = 0;
        }
    }

    /// The loss statistics so far.
    #[must_use]
    pub const fn estimator(&self) -> &LossEstimator {
        &self.estimator
    }

    /// A report boundary: re-chooses, returning the new protection if it changed.
    ///
    /// Hysteresis keeps the group in force while it still does the job: a change is
    /// made when protection switches on or off, when the current group's residual
    /// loss at the new estimate exceeds 1.5 times the goal, or when the new choice
    /// saves at least a quarter of a repair packet per source and would still meet
    /// the goal with a quarter more loss than estimated.
    pub fn report(&mut self) -> Option<Protection> {
        let (loss, burst) = (self.estimator.loss_rate(), self.estimator.mean_burst());
        let next = choose_protection(loss, burst, &self.goal);
        if next == self.current {
            return None;
        }
        let switch = match (self.current.rs, next.rs) {
            (Some((k, m)), Some((nk, nm))) => {
                let still = residual_loss_bursty(loss, burst, k, m, self.current.stride);
                // Cheaper only with a margin: a quarter of a repair per source saved,
                // and the goal still met at a quarter more loss than estimated.
                let cheaper_safely = next.overhead() + 0.25 <= self.current.overhead()
                    && residual_loss_bursty(loss * 1.25, burst, nk, nm, next.stride)
                        <= self.goal.residual;
                still > 1.5 * self.goal.residual || cheaper_safely
            }
            _ => true,
        };
        switch.then(|| {
            self.current = next;
            next
        })
    }

    /// The protection in force.
    #[must_use]
    pub const fn protection(&self) -> Protection {
        self.current
    }
}

/// Send-rate bounds and steps for [`RateController`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RateConfig {
    /// Lowest total rate, bit/s. Default 12,000.
    pub min_bps: u32,
    /// Highest total rate, bit/s. Default 128,000.
    pub max_bps: u32,
    /// Starting rate, bit/s. Default 48,000.
    pub start_bps: u32,
}

impl Default for RateConfig {
    fn default() -> Self {
        Self {
            min_bps: 12_000,
            max_bps: 128_000,
            start_bps: 48_000,
        }
    }
}

/// Loss-based send-rate control from RTCP reports, on the loss *above the path's
/// own*: below 2 % of it the rate grows 8 % per second of reports, between 2 % and
/// 10 % it holds, above 10 % it is cut in proportion (`rate * (1 - excess / 2)`, as
/// in the loss-based half of RFC 8836-style controllers). The path's own loss is the
/// lowest of the previous 8 reports: loss that persists whatever the rate (a lossy
/// radio hop, 10 % at random) is not ours to cure by sending less, and cutting on
/// it left a call with FEC at a codec rate of 6 kbit/s; loss that grows with the
/// rate (a policer, an overflowing queue) rises above that floor and cuts.
/// Congestion that queues before it drops is the delay-based controller's
/// ([`crate::congestion`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateController {
    config: RateConfig,
    rate: u32,
    /// The last reports' loss fractions (1/256), newest at `next - 1`.
    recent: [u8; 8],
    seen: usize,
}

impl RateController {
    /// A controller starting at `config.start_bps`.
    #[must_use]
    pub fn new(config: RateConfig) -> Self {
        let rate = config
            .start_bps
            .clamp(config.min_bps, config.max_bps.max(config.min_bps));
        Self {
            config,
            rate,
            recent: [0; 8],
            seen: 0,
        }
    }

    /// The path's own loss: the lowest fraction of the previous reports (0 before
    /// any).
    fn floor(&self) -> f64 {
        let n = self.seen.min(self.recent.len());
        let low = self.recent.iter().take(n).min().copied().unwrap_or(0);
        f64::from(low) / 256.0
    }

    /// The current total rate, bit/s.
    #[must_use]
    pub const fn rate(&self) -> u32 {
        self.rate
    }

    /// One report's loss fraction (RTCP `fraction_lost`, in 1/256), for a report
    /// interval of 1 s.
    pub fn handle_report(&mut self, fraction_lost: u8) -> u32 {
        self.handle_report_over(fraction_lost, core::time::Duration::from_secs(1))
    }

    /// One report's loss fraction over `interval` (the time since the previous
    /// report, 0.1-2 s): the step is scaled to the interval, so that reports twice
    /// as frequent move the rate no faster.
    pub fn handle_report_over(&mut self, fraction_lost: u8, interval: Duration) -> u32 {
        let loss = (f64::from(fraction_lost) / 256.0 - self.floor()).max(0.0);
        if let Some(slot) = self.recent.get_mut(self.seen % 8) {
            *slot = fraction_lost;
        }
        self.seen += 1;
        let rate = f64::from(self.rate);
        let scale = interval.as_secs_f64().clamp(0.1, 2.0);
        let next = if loss < 0.02 {
            rate * 1.08f64.powf(scale)
        } else if loss > 0.10 {
            rate * (1.0 - loss / 2.0).powf(scale)
        } else {
            rate
        };
        let (lo, hi) = (
            f64::from(self.config.min_bps),
            f64::from(self.config.max_bps.max(self.config.min_bps)),
        );
        self.rate = next.clamp(lo, hi) as u32;
        self.rate
    }

    /// The media (codec) share of the current rate when `protection` adds repair
    /// packets of about the media packets' size.
    #[must_use]
    pub fn media_bps(&self, protection: &Protection) -> u32 {
        (f64::from(self.rate) / (1.0 + protection.overhead())) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netsim::{LossModel, NetConfig, Network};
    use std::time::Instant;

    #[test]
    fn estimator_sees_bursts_of_a_gilbert_elliott_path() {
        let config = NetConfig {
            loss: LossModel::GilbertElliott {
                p_good_to_bad: 0.03,
                p_bad_to_good: 0.4,
                loss_good: 0.0,
                loss_bad: 1.0,
            },
            max_in_flight: 100_000,
            ..NetConfig::default()
        };
        let mut net = Network::new(config, 11).unwrap();
        let mut est = LossEstimator::new();
        let t0 = Instant::now();
        for i in 0..50_000u32 {
            let delivered = net.handle_send(t0, i, 100);
            est.record(!delivered);
        }
        assert!(
            (2.0..3.0).contains(&est.mean_burst()),
            "{}",
            est.mean_burst()
        );
        assert!(
            (0.05..0.10).contains(&est.loss_rate()),
            "{}",
            est.loss_rate()
        );
    }

    #[test]
    fn protection_grows_with_loss_and_stays_off_on_a_clean_path() {
        let goal = ProtectionGoal::default();
        let none = choose_protection(0.001, 1.0, &goal);
        assert_eq!((none.rs, none.opus_fec), (None, false));
        let mut lenient = goal;
        lenient.residual = 0.01;
        let light = choose_protection(0.008, 1.0, &lenient);
        assert_eq!((light.rs, light.opus_fec), (None, true), "LBRR alone");
        let five = choose_protection(0.05, 1.05, &goal);
        let ten = choose_protection(0.10, 1.1, &goal);
        for p in [five, ten] {
            let (k, m) = p.rs.unwrap();
            assert!(!p.opus_fec, "{p:?}");
            assert!(p.delay(goal.frame) <= goal.max_delay, "{p:?}");
            assert!(p.overhead() <= goal.max_overhead, "{p:?}");
            assert!(residual_loss_bursty(0.10, 1.1, k, m, p.stride) <= 0.012 || p == five);
        }
        assert!(ten.overhead() > five.overhead(), "{five:?} {ten:?}");
        // 20 % in bursts of 3: the first tier cannot get below 2 %; the second tier
        // gets below 1 %.
        let bursty = choose_protection(0.20, 3.0, &goal);
        let (k, m) = bursty.rs.unwrap();
        assert!(bursty.delay(goal.frame) > goal.max_delay, "{bursty:?}");
        assert!(
            bursty.delay(goal.frame) <= goal.heavy_max_delay,
            "{bursty:?}"
        );
        assert!(bursty.overhead() <= goal.heavy_max_overhead, "{bursty:?}");
        assert!(residual_loss_bursty(0.20, 3.0, k, m, bursty.stride) < 0.01);
        // A noisy estimate of random loss stays in the first tier.
        let noisy = choose_protection(0.13, 1.5, &goal);
        assert!(noisy.delay(goal.frame) <= goal.max_delay, "{noisy:?}");
        // Without a second tier, the best the first one has.
        let mut tight = goal;
        tight.heavy_max_delay = goal.max_delay;
        tight.heavy_max_overhead = goal.max_overhead;
        let capped = choose_protection(0.20, 3.0, &tight);
        assert!(capped.delay(goal.frame) <= goal.max_delay && capped.overhead() <= 1.0);
    }

    #[test]
    fn bursty_residual_matches_independent_loss_and_a_simulated_gilbert_path() {
        for (k, m) in [(1, 1), (3, 2), (4, 1), (6, 3)] {
            let exact = residual_loss(0.1, k, m);
            let chain = residual_loss_bursty(0.1, 1.0 / 0.9, k, m, 1);
            assert!((exact - chain).abs() < 1e-9, "{k},{m}: {exact} vs {chain}");
        }
        // Monte Carlo over the simulator's Gilbert-Elliott path, in the FEC
        // encoder's send order (a block of d * k sources, then each group's repairs).
        let (p, burst) = (0.2, 3.0);
        let r = 1.0 / burst;
        let config = NetConfig {
            loss: LossModel::GilbertElliott {
                p_good_to_bad: p * r / (1.0 - p),
                p_bad_to_good: r,
                loss_good: 0.0,
                loss_bad: 1.0,
            },
            max_in_flight: usize::MAX,
            ..NetConfig::default()
        };
        let t0 = Instant::now();
        for (k, m, d) in [(6u8, 6u8, 1u8), (2, 2, 3), (1, 1, 4)] {
            let mut net = Network::new(config.clone(), 3).unwrap();
            let (kk, mm, dd) = (usize::from(k), usize::from(m), usize::from(d));
            let (mut lost_sources, mut sources) = (0usize, 0usize);
            for _ in 0..40_000 / (kk * dd) {
                let fates: Vec<bool> = (0..dd * (kk + mm))
                    .map(|_| !net.handle_send(t0, (), 1))
                    .collect();
                for g in 0..dd {
                    let src = (0..kk).filter(|i| fates[g + i * dd]).count();
                    let rep = (0..mm).filter(|j| fates[dd * kk + g * mm + j]).count();
                    if src + rep > mm {
                        lost_sources += src;
                    }
                    sources += kk;
                }
            }
            let simulated = lost_sources as f64 / sources as f64;
            let exact = residual_loss_bursty(p, burst, k, m, d);
            assert!(
                (simulated - exact).abs() < 0.2 * exact + 0.002,
                "({k},{m},{d}): simulated {simulated}, exact {exact}"
            );
        }
    }

    #[test]
    fn controller_starts_clean_protects_on_loss_and_backs_off_when_it_clears() {
        let mut c = ProtectionController::new(ProtectionGoal::default(), 150);
        let mut rng = crate::netsim::SimRng::new(9);
        assert_eq!(c.protection().rs, None);
        // 20 s clean: never any protection.
        for _ in 0..40 {
            for _ in 0..25 {
                c.record(false);
            }
            assert_eq!(c.report(), None);
        }
        // 10 % random loss: protection within a second.
        let mut reports = 0;
        while c.protection().rs.is_none() {
            for _ in 0..25 {
                c.record(rng.chance(0.1));
            }
            c.report();
            reports += 1;
            assert!(reports <= 4, "{:?}", c.estimator());
        }
        let mut changes = 0;
        for _ in 0..80 {
            for _ in 0..25 {
                c.record(rng.chance(0.1));
            }
            changes += usize::from(c.report().is_some());
        }
        assert!(changes <= 4, "hysteresis: {changes} changes in 20 s");
        assert!(!c.protection().opus_fec);
        // Loss clears: back to nothing within 30 s.
        let mut reports = 0;
        while c.protection() != choose_protection(0.0, 1.0, &ProtectionGoal::default()) {
            for _ in 0..25 {
                c.record(false);
            }
            c.report();
            reports += 1;
            assert!(reports <= 60, "{:?}", c.protection());
        }
    }

    #[test]
    fn rate_backs_off_on_heavy_loss_and_probes_up_when_clean() {
        let mut rc = RateController::new(RateConfig::default());
        let start = rc.rate();
        rc.handle_report(64); // 25 % loss
        assert!(rc.rate() < start);
        for _ in 0..100 {
            rc.handle_report(0);
        }
        assert_eq!(rc.rate(), RateConfig::default().max_bps);
        let p = Protection {
            rs: Some((4, 1)),
            stride: 1,
            opus_fec: true,
            opus_expected_loss: 5,
        };
        assert_eq!(rc.media_bps(&p), 102_400);
    }

    #[test]
    fn steady_path_loss_holds_the_rate_and_loss_that_grows_cuts_it() {
        // 10-14 % at random, report after report: the first report cuts (nothing
        // is known of the path yet), then the rate holds or grows.
        let mut rc = RateController::new(RateConfig::default());
        rc.handle_report(31);
        let after_first = rc.rate();
        assert!(after_first < RateConfig::default().start_bps);
        for i in 0..30 {
            rc.handle_report([26, 36, 31][i % 3]);
            assert!(rc.rate() >= after_first, "report {i}: {}", rc.rate());
        }
        // A policer: loss jumps from ~12 % to 35 % as the rate exceeds it.
        let before = rc.rate();
        rc.handle_report(90);
        assert!(rc.rate() < before);
    }

    /// A 64 kbit/s budget (20 ms frames) with SRTP media packets: a repair on its own
    /// costs its shard plus ~94 bytes, riding on a media packet ~35.
    fn budget(bps: f64) -> FrameBudget {
        FrameBudget {
            frame_bytes: bps / 8.0 / 50.0,
            repair_cost: 94.0,
            repair_cost_piggybacked: 35.0,
            min_media_bytes: 40.0,
        }
    }

    #[test]
    fn budget_choice_trades_residual_loss_for_codec_bits() {
        let goal = ProtectionGoal {
            piggyback: true,
            max_delay: Duration::from_millis(100),
            ..ProtectionGoal::default()
        };
        // Clean: nothing.
        assert_eq!(
            choose_protection_for_budget(0.001, 1.0, &goal, &budget(64_000.0)).rs,
            None
        );
        // 10 % random at 64 kbit/s: a piggybacked group with fewer repairs than
        // sources (more codec bits, a little residual loss), not the one repair per
        // source that a 0.5 % residual goal alone picks.
        let p = choose_protection_for_budget(0.10, 1.0, &goal, &budget(64_000.0));
        let (k, m) = p.rs.unwrap();
        assert!(m < k && p.can_piggyback(), "{p:?}");
        assert!(p.delay_for(&goal) <= goal.max_delay);
        let by_goal = choose_protection(0.10, 1.0, &goal);
        assert!(by_goal.overhead() > p.overhead(), "{by_goal:?} {p:?}");
        // With ten times the budget, codec bits are worth little: lower residual.
        let rich = choose_protection_for_budget(0.10, 1.0, &goal, &budget(640_000.0));
        let (rk, rm) = rich.rs.unwrap();
        assert!(
            residual_loss(0.10, rk, rm) < residual_loss(0.10, k, m),
            "{rich:?} {p:?}"
        );
        // A budget that cannot pay for any repair and the codec floor: no FEC.
        assert_eq!(
            choose_protection_for_budget(0.10, 1.0, &goal, &budget(16_000.0)).rs,
            None
        );
        // Without piggybacking, the same budget affords fewer repairs per source.
        let own = ProtectionGoal {
            piggyback: false,
            ..goal
        };
        let q = choose_protection_for_budget(0.10, 1.0, &own, &budget(64_000.0));
        assert!(q.overhead() <= p.overhead(), "{q:?} {p:?}");
    }

    #[test]
    fn piggybacked_repairs_add_their_frames_of_delay() {
        let p = Protection {
            rs: Some((3, 2)),
            stride: 1,
            opus_fec: false,
            opus_expected_loss: 0,
        };
        let f = Duration::from_millis(20);
        assert_eq!(p.delay(f), Duration::from_millis(40));
        assert_eq!(p.delay_piggybacked(f), Duration::from_millis(80));
        assert!(p.can_piggyback());
        let heavy = Protection {
            rs: Some((3, 4)),
            ..p
        };
        let goal = ProtectionGoal {
            piggyback: true,
            ..ProtectionGoal::default()
        };
        assert!(!heavy.can_piggyback());
        assert_eq!(heavy.delay_for(&goal), heavy.delay(f));
    }
}

//! Adaptation: what the receiver's loss statistics say the sender should do.
//!
//! - [`LossEstimator`] turns the per-packet received/lost sequence into a loss rate
//!   and a mean burst length (the two-state Gilbert model's parameters, estimated by
//!   counting transitions).
//! - [`choose_protection`] picks the Reed-Solomon group `(k, m)`, the interleaving
//!   stride and Opus in-band FEC settings from those statistics: the cheapest
//!   protection whose residual loss meets a target within a delay budget.
//! - [`RateController`] adapts the total send bitrate from RTCP loss reports (AIMD on
//!   the loss fraction) and splits it between media and FEC repair.

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
    /// its first packet can be rebuilt.
    #[must_use]
    pub fn delay(&self, frame: Duration) -> Duration {
        self.rs.map_or(Duration::ZERO, |(k, _)| {
            frame * (u32::from(k) * u32::from(self.stride)).saturating_sub(1)
        })
    }
}

/// Bounds for [`choose_protection`].
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct ProtectionGoal {
    /// Residual loss to reach after FEC, 0-1. Default 0.01 (1 %).
    pub residual: f64,
    /// Largest FEC delay accepted. Default 120 ms.
    pub max_delay: Duration,
    /// Media frame duration. Default 20 ms.
    pub frame: Duration,
}

impl Default for ProtectionGoal {
    fn default() -> Self {
        Self {
            residual: 0.01,
            max_delay: Duration::from_millis(120),
            frame: Duration::from_millis(20),
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

/// Chooses the cheapest protection meeting `goal` for the observed statistics.
///
/// Bursts are spread by interleaving with a stride of the mean burst length (rounded
/// up, at most 4), after which losses within a group are treated as independent.
/// Opus in-band FEC is switched on from 1 % loss: it costs a little bitrate and
/// rescues single losses without any delay.
#[must_use]
pub fn choose_protection(loss: f64, mean_burst: f64, goal: &ProtectionGoal) -> Protection {
    let loss = loss.clamp(0.0, 1.0);
    let opus_expected_loss = (loss * 100.0).round().clamp(0.0, 100.0) as u8;
    let opus_fec = loss >= 0.01;
    let mut best = Protection {
        rs: None,
        stride: 1,
        opus_fec,
        opus_expected_loss,
    };
    if loss <= goal.residual {
        return best;
    }
    let stride = mean_burst.ceil().clamp(1.0, 4.0) as u8;
    let mut best_overhead = f64::INFINITY;
    for k in [2u8, 3, 4, 5, 6, 8, 10] {
        for m in 1u8..=4 {
            let candidate = Protection {
                rs: Some((k, m)),
                stride,
                ..best
            };
            if candidate.delay(goal.frame) > goal.max_delay {
                continue;
            }
            let overhead = candidate.overhead();
            if residual_loss(loss, k, m) <= goal.residual && overhead < best_overhead {
                best_overhead = overhead;
                best.rs = Some((k, m));
                best.stride = stride;
            }
        }
    }
    if best.rs.is_none() {
        // Nothing meets the goal within the delay budget: the strongest affordable.
        let k = 2;
        best.rs = Some((k, 2));
        let strong = Protection {
            rs: Some((k, 2)),
            stride,
            ..best
        };
        best.stride = if strong.delay(goal.frame) <= goal.max_delay {
            stride
        } else {
            1
        };
    }
    best
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

/// Loss-based send-rate control from RTCP reports: below 2 % loss the rate grows 8 %
/// per report, between 2 % and 10 % it holds, above 10 % it is cut in proportion to
/// the loss (`rate * (1 - loss / 2)`, as in the loss-based half of RFC 8836-style
/// controllers). Losses the FEC repairs still count: they are the path's congestion
/// signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateController {
    config: RateConfig,
    rate: u32,
}

impl RateController {
    /// A controller starting at `config.start_bps`.
    #[must_use]
    pub fn new(config: RateConfig) -> Self {
        let rate = config
            .start_bps
            .clamp(config.min_bps, config.max_bps.max(config.min_bps));
        Self { config, rate }
    }

    /// The current total rate, bit/s.
    #[must_use]
    pub const fn rate(&self) -> u32 {
        self.rate
    }

    /// One report's loss fraction (RTCP `fraction_lost`, in 1/256).
    pub fn handle_report(&mut self, fraction_lost: u8) -> u32 {
        let loss = f64::from(fraction_lost) / 256.0;
        let rate = f64::from(self.rate);
        let next = if loss < 0.02 {
            rate * 1.08
        } else if loss > 0.10 {
            rate * (1.0 - loss / 2.0)
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
        let clean = choose_protection(0.001, 1.0, &goal);
        assert_eq!(clean.rs, None);
        assert!(!clean.opus_fec);
        let five = choose_protection(0.05, 1.0, &goal);
        let ten = choose_protection(0.10, 1.0, &goal);
        assert!(five.rs.is_some() && five.opus_fec);
        assert!(ten.overhead() > five.overhead(), "{five:?} {ten:?}");
        assert!(residual_loss(0.10, ten.rs.unwrap().0, ten.rs.unwrap().1) <= 0.01);
        let bursty = choose_protection(0.10, 2.5, &goal);
        assert_eq!(bursty.stride, 3);
        assert!(bursty.delay(goal.frame) <= goal.max_delay);
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
}

//! Delay-based congestion control: the receiver-side half of Google Congestion Control
//! (draft-ietf-rmcat-gcc-02 §4-§5, with the trendline estimator of libwebrtc in place
//! of the draft's Kalman filter), its feedback message (REMB) and the send-time header
//! extension it needs (abs-send-time).
//!
//! Loss is a late congestion signal: by the time a bottleneck queue overflows, every
//! packet has waited through it. Queueing delay grows first, so this controller watches
//! the *one-way delay variation* between packet groups and cuts the rate as soon as it
//! trends upward. It complements the loss-based [`crate::adapt::RateController`]; the
//! session sends at the minimum of the two.
//!
//! Pipeline, per received packet (all on the receiver):
//! 1. **Grouping** (§5.2): packets whose send times lie within 5 ms of the first of a
//!    group form one group. When a group completes, the *inter-group delay variation*
//!    `d = (arrival_i - arrival_{i-1}) - (send_i - send_{i-1})` of its last packet is
//!    computed; reordered groups are skipped.
//! 2. **Trendline**: `d` accumulates into a delay curve, smoothed by an exponential
//!    filter (`SMOOTHING` = 0.9); a least-squares line through the last `WINDOW` (20)
//!    points gives the delay *slope*. The modified trend is
//!    `m = min(n, 60) * slope * THRESHOLD_GAIN (4)`.
//! 3. **Over-use detector** (§5.4): `m` is compared with an adaptive threshold `γ`
//!    (starts at 12.5, moves towards `|m|` at `K_UP` = 0.0087 per ms when `|m| > γ`
//!    and `K_DOWN` = 0.039 per ms otherwise, within 6..600, frozen while
//!    `|m| > γ + 15`). `m > γ` for over 10 ms and two groups, and not falling, is
//!    [`Signal::Overuse`]; `m < -γ` is [`Signal::Underuse`]; else [`Signal::Normal`].
//! 4. **AIMD rate controller** (§6): the state machine
//!
//!    | signal \ state | Hold     | Increase | Decrease |
//!    |----------------|----------|----------|----------|
//!    | Overuse        | Decrease | Decrease | Decrease |
//!    | Normal         | Increase | Increase | Hold     |
//!    | Underuse       | Hold     | Hold     | Hold     |
//!
//!    *Increase* is multiplicative, 8 % per second, until the rate nears the average
//!    incoming rate seen at past decreases (within 3 standard deviations), then
//!    additive: half a packet per response time (RTT + 100 ms), at least 4 kbit/s per
//!    second. *Decrease* sets the rate to `BETA` (0.85) times the incoming rate
//!    measured over the last 500 ms, never above the current rate. An increase stops
//!    at 1.5 times the incoming rate plus 10 kbit/s (a sender that is
//!    application-limited must not make the estimate run away); the rate stays within
//!    [`RateConfig`]'s bounds.
//! 5. **Feedback**: the estimate goes back to the sender in a REMB message
//!    ([`rtcp::Packet::Remb`](crate::rtcp::Packet::Remb), draft-alvestrand-rmcat-remb-03) at least every second, and at once
//!    (after 100 ms since the last) when it drops by 3 % or more.
//!
//! Behaviour under a bottleneck (tested with [`crate::netsim`]'s bandwidth cap, see
//! `tests/congestion_bandwidth_cap.rs`): the rate falls below a lowered cap within a
//! few seconds, climbs back when the cap is raised, and in steady state saw-tooths
//! between about 0.85 and 1.15 times the cap (the test's band is 0.75-1.2): it probes
//! above, sees the queue grow, and backs off to 85 % of what arrives.

#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic
    )
)]

use core::time::Duration;
use std::collections::VecDeque;
use std::time::Instant;

use chorus_framing::Reader;

use crate::adapt::RateConfig;
use crate::error::DecodeError;

/// The abs-send-time header extension's URI (for SDP `a=extmap`).
pub const ABS_SEND_TIME_URI: &str = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time";

/// abs-send-time units per second: 6.18 fixed-point seconds.
const ABS_UNITS_PER_SEC: u64 = 1 << 18;
/// The abs-send-time field wraps every 64 s (24 bits).
const ABS_MASK: u32 = 0x00ff_ffff;

/// The 3-byte abs-send-time value for a send time `elapsed` since any fixed epoch: 24
/// bits of 6.18 fixed-point seconds, wrapping every 64 s.
#[must_use]
pub fn abs_send_time(elapsed: Duration) -> [u8; 3] {
    let units = elapsed.as_nanos() * u128::from(ABS_UNITS_PER_SEC) / 1_000_000_000;
    let v = (units as u32) & ABS_MASK;
    let [_, a, b, c] = v.to_be_bytes();
    [a, b, c]
}

/// Decodes an abs-send-time element's data (exactly 3 bytes) to its 24-bit value.
pub fn decode_abs_send_time(data: &[u8]) -> Result<u32, DecodeError> {
    let mut r = Reader::new(data);
    let [a, b, c] = r.array::<3>()?;
    if r.remaining() != 0 {
        return Err(DecodeError::TooLong {
            len: data.len(),
            max: 3,
        });
    }
    Ok(u32::from_be_bytes([0, a, b, c]))
}

/// What the over-use detector concludes from the delay trend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Queues are growing: the path is over-used.
    Overuse,
    /// No clear trend.
    Normal,
    /// Queues are draining.
    Underuse,
}

/// The AIMD rate controller's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateState {
    /// Keep the rate.
    Hold,
    /// Probe for more.
    Increase,
    /// Back off (lasts one update, then Hold).
    Decrease,
}

const BURST: u64 = ABS_UNITS_PER_SEC * 5 / 1000; // 5 ms
const SMOOTHING: f64 = 0.9;
const WINDOW: usize = 20;
const THRESHOLD_GAIN: f64 = 4.0;
const K_UP: f64 = 0.0087;
const K_DOWN: f64 = 0.039;
const OVERUSE_TIME_MS: f64 = 10.0;
const BETA: f64 = 0.85;
const RATE_WINDOW: Duration = Duration::from_millis(500);
/// Arrivals kept for the incoming-rate window (bounds memory under any packet rate).
const MAX_RATE_SAMPLES: usize = 4096;

#[derive(Debug, Clone, Copy)]
struct Group {
    first_send: i64,
    last_send: i64,
    last_arrival_ms: f64,
}

/// The receiver-side delay-based bandwidth estimator. Sans-IO: arrival times and
/// round-trip times are passed in. See the module docs for the algorithm.
#[derive(Debug, Clone)]
pub struct DelayController {
    config: RateConfig,
    epoch: Option<Instant>,
    // Send-time unwrapping (24-bit abs-send-time to a 64-bit counter).
    last_abs: Option<(u32, i64)>,
    current: Option<Group>,
    previous: Option<Group>,
    // Trendline.
    first_arrival_ms: Option<f64>,
    accumulated: f64,
    smoothed: f64,
    points: VecDeque<(f64, f64)>,
    deltas: u32,
    // Detector.
    threshold: f64,
    last_update_ms: Option<f64>,
    overuse_ms: f64,
    overuse_count: u32,
    prev_trend: f64,
    signal: Signal,
    // AIMD.
    state: RateState,
    rate: f64,
    last_change: Option<Instant>,
    avg_max: Option<(f64, f64)>,
    rtt: Duration,
    packet_bits: f64,
    arrivals: VecDeque<(Instant, usize)>,
    arrival_bytes: usize,
    // Feedback.
    last_remb: Option<(Instant, u64)>,
}

impl DelayController {
    /// An estimator starting at `config.start_bps`.
    #[must_use]
    pub fn new(config: RateConfig) -> Self {
        let hi = config.max_bps.max(config.min_bps);
        Self {
            config,
            epoch: None,
            last_abs: None,
            current: None,
            previous: None,
            first_arrival_ms: None,
            accumulated: 0.0,
            smoothed: 0.0,
            points: VecDeque::with_capacity(WINDOW),
            deltas: 0,
            threshold: 12.5,
            last_update_ms: None,
            overuse_ms: 0.0,
            overuse_count: 0,
            prev_trend: 0.0,
            signal: Signal::Normal,
            state: RateState::Hold,
            rate: f64::from(config.start_bps.clamp(config.min_bps, hi)),
            last_change: None,
            avg_max: None,
            rtt: Duration::from_millis(200),
            packet_bits: 800.0,
            arrivals: VecDeque::new(),
            arrival_bytes: 0,
            last_remb: None,
        }
    }

    /// The current estimate, bit/s.
    #[must_use]
    pub fn estimate(&self) -> u32 {
        self.rate as u32
    }

    /// The detector's last conclusion.
    #[must_use]
    pub const fn signal(&self) -> Signal {
        self.signal
    }

    /// The rate controller's state.
    #[must_use]
    pub const fn state(&self) -> RateState {
        self.state
    }

    /// The incoming rate over the last 500 ms, bit/s.
    #[must_use]
    pub fn incoming_bps(&self) -> f64 {
        self.arrival_bytes as f64 * 8.0 / RATE_WINDOW.as_secs_f64()
    }

    /// A round-trip time measurement (from RTCP), which sets the additive increase's
    /// response time.
    pub fn handle_rtt(&mut self, rtt: Duration) {
        self.rtt = rtt.min(Duration::from_secs(10));
    }

    fn unwrap_send(&mut self, abs: u32) -> i64 {
        let abs = abs & ABS_MASK;
        let ext = match self.last_abs {
            None => i64::from(abs),
            Some((last, last_ext)) => {
                // The 24-bit difference, sign-extended: the nearest placement.
                let d = (((abs.wrapping_sub(last)) << 8) as i32) >> 8;
                last_ext + i64::from(d)
            }
        };
        if self.last_abs.is_none_or(|(_, e)| ext > e) {
            self.last_abs = Some((abs, ext));
        }
        ext
    }

    /// One received media packet: its arrival time, abs-send-time value (24 bits) and
    /// size in bytes (RTP header and payload).
    pub fn handle_packet(&mut self, now: Instant, send_abs: u32, size: usize) {
        let epoch = *self.epoch.get_or_insert(now);
        let arrival_ms = now.saturating_duration_since(epoch).as_secs_f64() * 1000.0;
        self.arrivals.push_back((now, size));
        self.arrival_bytes += size;
        self.trim_arrivals(now);
        self.packet_bits = 0.9 * self.packet_bits + 0.1 * (size as f64 * 8.0);
        let send = self.unwrap_send(send_abs);
        match self.current {
            None => {
                self.current = Some(Group {
                    first_send: send,
                    last_send: send,
                    last_arrival_ms: arrival_ms,
                });
            }
            Some(ref mut g) if send - g.first_send <= BURST as i64 => {
                if send >= g.last_send {
                    g.last_send = send;
                    g.last_arrival_ms = arrival_ms;
                }
            }
            Some(g) if send < g.first_send => {} // reordered: ignored for delay
            Some(g) => {
                if let Some(p) = self.previous {
                    let send_delta_ms =
                        (g.last_send - p.last_send) as f64 * 1000.0 / ABS_UNITS_PER_SEC as f64;
                    let arrival_delta_ms = g.last_arrival_ms - p.last_arrival_ms;
                    self.update_trend(arrival_delta_ms - send_delta_ms, g.last_arrival_ms, now);
                }
                self.previous = Some(g);
                self.current = Some(Group {
                    first_send: send,
                    last_send: send,
                    last_arrival_ms: arrival_ms,
                });
            }
        }
    }

    fn trim_arrivals(&mut self, now: Instant) {
        while let Some(&(t, size)) = self.arrivals.front() {
            if now.saturating_duration_since(t) <= RATE_WINDOW
                && self.arrivals.len() <= MAX_RATE_SAMPLES
            {
                break;
            }
            self.arrivals.pop_front();
            self.arrival_bytes -= size;
        }
    }

    fn update_trend(&mut self, delta_ms: f64, arrival_ms: f64, now: Instant) {
        self.deltas = self.deltas.saturating_add(1);
        self.accumulated += delta_ms;
        self.smoothed = SMOOTHING * self.smoothed + (1.0 - SMOOTHING) * self.accumulated;
        let first = *self.first_arrival_ms.get_or_insert(arrival_ms);
        self.points.push_back((arrival_ms - first, self.smoothed));
        if self.points.len() > WINDOW {
            self.points.pop_front();
        }
        let mut trend = self.prev_trend;
        if self.points.len() == WINDOW {
            trend = slope(&self.points).unwrap_or(trend);
        }
        let modified = f64::from(self.deltas.min(60)) * trend * THRESHOLD_GAIN;
        let dt_ms = self
            .last_update_ms
            .map_or(0.0, |t| (arrival_ms - t).clamp(0.0, 100.0));
        self.last_update_ms = Some(arrival_ms);
        self.detect(modified, dt_ms);
        self.update_rate(now);
    }

    fn detect(&mut self, m: f64, dt_ms: f64) {
        if self.deltas < 2 {
            self.signal = Signal::Normal;
            return;
        }
        if m > self.threshold {
            // The first over-threshold interval counts half (libwebrtc's estimate of
            // when the crossing happened).
            self.overuse_ms += if self.overuse_ms == 0.0 {
                dt_ms / 2.0
            } else {
                dt_ms
            };
            self.overuse_count += 1;
            if self.overuse_ms > OVERUSE_TIME_MS && self.overuse_count > 1 && m >= self.prev_trend {
                self.overuse_ms = 0.0;
                self.overuse_count = 0;
                self.signal = Signal::Overuse;
            }
        } else if m < -self.threshold {
            self.overuse_ms = 0.0;
            self.overuse_count = 0;
            self.signal = Signal::Underuse;
        } else {
            self.overuse_ms = 0.0;
            self.overuse_count = 0;
            self.signal = Signal::Normal;
        }
        self.prev_trend = m;
        // Adaptive threshold (draft-ietf-rmcat-gcc-02 §5.4).
        let abs = m.abs();
        if abs <= self.threshold + 15.0 {
            let k = if abs < self.threshold { K_DOWN } else { K_UP };
            self.threshold =
                (self.threshold + k * (abs - self.threshold) * dt_ms).clamp(6.0, 600.0);
        }
    }

    fn update_rate(&mut self, now: Instant) {
        self.state = match (self.signal, self.state) {
            (Signal::Overuse, _) => RateState::Decrease,
            (Signal::Normal, RateState::Decrease) | (Signal::Underuse, _) => RateState::Hold,
            (Signal::Normal, _) => RateState::Increase,
        };
        let incoming = self.incoming_bps();
        let dt = self
            .last_change
            .map_or(Duration::ZERO, |t| now.saturating_duration_since(t))
            .min(Duration::from_secs(1));
        self.last_change = Some(now);
        let before = self.rate;
        match self.state {
            RateState::Hold => {}
            RateState::Increase => {
                if let Some((mean, var)) = self.avg_max
                    && incoming > mean + 3.0 * var.sqrt()
                {
                    self.avg_max = None; // the path changed: probe fast again
                }
                let near = self
                    .avg_max
                    .is_some_and(|(mean, var)| incoming > mean - 3.0 * var.sqrt());
                if near {
                    let response = (self.rtt + Duration::from_millis(100)).as_secs_f64();
                    let per_sec = (self.packet_bits / 2.0 / response).max(4_000.0);
                    self.rate += per_sec * dt.as_secs_f64();
                } else {
                    self.rate *= 1.08f64.powf(dt.as_secs_f64());
                }
            }
            RateState::Decrease => {
                let target = BETA * incoming;
                if target < self.rate {
                    self.rate = target;
                }
                self.avg_max = Some(match self.avg_max {
                    None => (incoming, (incoming * 0.1).powi(2)),
                    Some((mean, var)) => {
                        let mean2 = 0.95 * mean + 0.05 * incoming;
                        let dev = incoming - mean2;
                        (mean2, 0.95 * var + 0.05 * dev * dev)
                    }
                });
                // One step down, then wait for the queues to drain.
                self.state = RateState::Hold;
            }
        }
        if self.rate > before {
            // An increase goes no further than the path has shown it carries.
            self.rate = self.rate.min((1.5 * incoming + 10_000.0).max(before));
        }
        let hi = f64::from(self.config.max_bps.max(self.config.min_bps));
        self.rate = self.rate.clamp(f64::from(self.config.min_bps), hi);
    }

    /// The estimate to send back now in a REMB, if one is due: at least every second,
    /// and at once (at most every 100 ms) when it fell by 3 % or more.
    pub fn poll_remb(&mut self, now: Instant) -> Option<u64> {
        self.epoch?;
        let rate = self.rate as u64;
        let due = match self.last_remb {
            None => true,
            Some((t, last)) => {
                let since = now.saturating_duration_since(t);
                since >= Duration::from_secs(1)
                    || (since >= Duration::from_millis(100) && rate * 100 <= last * 97)
            }
        };
        if !due {
            return None;
        }
        self.last_remb = Some((now, rate));
        Some(rate)
    }

    /// When the next periodic REMB is due (`None` before the first packet).
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let epoch = self.epoch?;
        Some(
            self.last_remb
                .map_or(epoch, |(t, _)| t + Duration::from_secs(1)),
        )
    }
}

/// Least-squares slope of `points` (x, y); `None` when all x are equal.
fn slope(points: &VecDeque<(f64, f64)>) -> Option<f64> {
    let n = points.len() as f64;
    let (sx, sy) = points
        .iter()
        .fold((0.0, 0.0), |(a, b), &(x, y)| (a + x, b + y));
    let (mx, my) = (sx / n, sy / n);
    let (num, den) = points.iter().fold((0.0, 0.0), |(num, den), &(x, y)| {
        (num + (x - mx) * (y - my), den + (x - mx) * (x - mx))
    });
    (den > 0.0).then(|| num / den)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;

    #[test]
    fn abs_send_time_round_trips_and_wraps() {
        let t = Duration::from_millis(1500);
        let v = decode_abs_send_time(&abs_send_time(t)).unwrap();
        assert_eq!(u64::from(v), 1500 * ABS_UNITS_PER_SEC / 1000);
        assert_eq!(
            abs_send_time(Duration::from_secs(64) + t),
            abs_send_time(t),
            "wraps every 64 s"
        );
        assert!(decode_abs_send_time(&[1, 2]).is_err());
        assert!(decode_abs_send_time(&[1, 2, 3, 4]).is_err());
    }

    proptest! {
        #[test]
        fn abs_send_time_round_trips(v in 0u32..1 << 24, junk in vec(any::<u8>(), 0..8)) {
            let [_, a, b, c] = v.to_be_bytes();
            prop_assert_eq!(decode_abs_send_time(&[a, b, c]), Ok(v));
            let _ = decode_abs_send_time(&junk);
        }

        #[test]
        fn delay_controller_never_panics_and_stays_in_bounds(
            ops in vec((0u64..200, any::<u32>(), 0usize..2000), 0..300),
        ) {
            let config = RateConfig::default();
            let mut dc = DelayController::new(config);
            let mut now = Instant::now();
            for (step, abs, size) in ops {
                now += Duration::from_millis(step);
                dc.handle_packet(now, abs, size);
                let _ = dc.poll_remb(now);
                prop_assert!((config.min_bps..=config.max_bps).contains(&dc.estimate()));
            }
        }
    }

    /// Packets of 200 bytes every 20 ms, through a path whose queueing delay grows by
    /// `growth` ms per packet: the estimator must see over-use and cut the rate.
    #[test]
    fn a_growing_queue_is_overuse_and_a_steady_path_is_not() {
        let t0 = Instant::now();
        let run = |growth: f64| {
            let mut dc = DelayController::new(RateConfig::default());
            let mut signals = Vec::new();
            for i in 0..200u32 {
                let send = Duration::from_millis(20 * u64::from(i));
                let queue = Duration::from_secs_f64(growth * f64::from(i) / 1000.0);
                let arrival = t0 + send + Duration::from_millis(30) + queue;
                let [a, b, c] = abs_send_time(send);
                dc.handle_packet(arrival, u32::from_be_bytes([0, a, b, c]), 200);
                signals.push(dc.signal());
            }
            (dc, signals)
        };
        let (steady, signals) = run(0.0);
        assert!(signals.iter().all(|&s| s == Signal::Normal));
        assert!(steady.estimate() > RateConfig::default().start_bps);
        let (congested, signals) = run(2.0);
        assert!(signals.contains(&Signal::Overuse));
        // Open loop (the test's sender ignores the estimate): the estimate falls well
        // below what arrives, where the steady path's keeps climbing.
        assert!(congested.estimate() < steady.estimate());
        assert!(f64::from(congested.estimate()) < 0.85 * congested.incoming_bps());
    }
}

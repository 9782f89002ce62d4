//! An adaptive jitter buffer: packets in, in arrival order; frames out, in sequence
//! order, on the playout clock. Sans-IO: the caller passes the time in.
//!
//! The buffer measures each packet's *relative transit* `r = arrival - timestamp /
//! clock rate` over a sliding window. The fastest packet of the window (`r_min`) gives
//! the path's base delay, a high quantile (97 % by default) its jitter; the *target delay* is that
//! jitter span (plus a configured extra, such as the FEC group delay, so that repair
//! packets come in before they are needed), clamped to `[min_delay, max_delay]`. A
//! packet with timestamp `ts` is due at `ts / rate + r_min + target`. Because the
//! window slides, a sender clock that drifts from the receiver's is followed.
//!
//! Run loop:
//! 1. [`JitterBuffer::handle_packet`] for every RTP packet (and every packet FEC
//!    rebuilt); a rejected one (duplicate, too late) changes nothing.
//! 2. At [`JitterBuffer::poll_timeout`] (every frame duration once started), call
//!    [`JitterBuffer::poll_frame`] and play what it returns: a packet to decode, a
//!    [`Playout::Missing`] packet to conceal (decoder PLC, or Opus in-band FEC from
//!    the next packet), or [`Playout::Empty`] (nothing due: silence, comfort noise or
//!    time-stretching while the buffer grows).
//!
//! Invariants: frames come out in strictly increasing sequence order (extended to 64
//! bits), never twice; at most `max_packets` are held.
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
use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use crate::error::{Error, UsageError};
use crate::rtp::{SequenceUnwrapper, TimestampUnwrapper};

/// Jitter buffer parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct JitterConfig {
    /// RTP clock rate. Default 48,000 (Opus, RFC 7587).
    pub clock_rate: u32,
    /// Playout tick, the duration of one frame. Default 20 ms.
    pub frame: Duration,
    /// Smallest target delay. Default 20 ms.
    pub min_delay: Duration,
    /// Largest target delay. Default 500 ms.
    pub max_delay: Duration,
    /// Added to the target: the FEC group delay, or a safety margin. Default 0.
    pub extra_delay: Duration,
    /// Packets held at most. A packet more than this far ahead of the playout point
    /// restarts the stream (the buffer is flushed). Default 256.
    pub max_packets: usize,
    /// Arrivals in the delay-measurement window. Default 250 (5 s of 20 ms frames).
    pub window: usize,
    /// The quantile of the window's transit times, in percent, that the target delay
    /// covers: packets slower than it (and than `guard`) arrive after their due time
    /// and are concealed. Default 97: a few reordered or spiking packets do not set
    /// the delay of all the others.
    pub quantile: u8,
    /// Added to the jitter span: the margin between the quantile and the slowest
    /// ordinary packets, which the span alone would conceal. Default 3 ms.
    pub guard: Duration,
    /// How much earlier (later) each tick may come when frames play later (earlier)
    /// than their due time: the playout clock slews towards the target delay instead
    /// of dropping frames or waiting a whole frame. The audio side must shorten
    /// (lengthen) its output by as much: time-scale modification, as NetEq's
    /// accelerate and preemptive expand. Default 1 ms per tick (5 % of a 20 ms
    /// frame); zero disables it.
    pub slew: Duration,
}

impl Default for JitterConfig {
    fn default() -> Self {
        Self {
            clock_rate: 48_000,
            frame: Duration::from_millis(20),
            min_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(500),
            extra_delay: Duration::ZERO,
            max_packets: 256,
            window: 250,
            quantile: 97,
            guard: Duration::from_millis(3),
            slew: Duration::from_millis(1),
        }
    }
}

/// What to play for one frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Playout<T> {
    /// A packet to decode.
    Packet {
        /// Its sequence number.
        seq: u16,
        /// Its RTP timestamp.
        timestamp: u32,
        /// Its payload.
        payload: T,
    },
    /// This packet never came in time: conceal it.
    Missing {
        /// Its sequence number.
        seq: u16,
    },
    /// Nothing is due yet (buffer empty or building up).
    Empty,
}

/// Why a packet was not buffered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rejected {
    /// The same sequence number is already buffered.
    Duplicate,
    /// Its turn has passed (played or concealed already).
    Late,
}

/// Counters of a [`JitterBuffer`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JitterStats {
    /// Packets accepted.
    pub buffered: u64,
    /// Duplicates rejected.
    pub duplicates: u64,
    /// Packets rejected as too late.
    pub late: u64,
    /// Packets played.
    pub played: u64,
    /// Packets concealed ([`Playout::Missing`]).
    pub concealed: u64,
    /// Ticks with nothing to play ([`Playout::Empty`]).
    pub empty: u64,
    /// Packets dropped to shrink the delay to the target.
    pub accelerated: u64,
    /// Stream restarts (a jump ahead larger than `max_packets`).
    pub restarts: u64,
}

#[derive(Debug)]
struct Entry<T> {
    timestamp: u32,
    ts_ext: u64,
    payload: T,
}

/// The adaptive jitter buffer. See the module docs for the run loop.
#[derive(Debug)]
pub struct JitterBuffer<T> {
    config: JitterConfig,
    epoch: Option<Instant>,
    seqs: SequenceUnwrapper,
    stamps: TimestampUnwrapper,
    packets: BTreeMap<u64, Entry<T>>,
    next_seq: Option<u64>,
    next_tick: Option<Instant>,
    /// Extended timestamp expected for `next_seq` (the last frame's plus one frame).
    next_ts: Option<u64>,
    /// Frames concealed in a row while nothing was buffered.
    blind: u32,
    transits: VecDeque<i64>,
    sorted: Vec<i64>,
    r_min: i64,
    target: Duration,
    stats: JitterStats,
}

/// Frames concealed in a row with nothing buffered before the buffer reports
/// [`Playout::Empty`] instead (the sender paused or the path broke).
const BLIND_MAX: u32 = 5;

fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

impl<T> JitterBuffer<T> {
    /// A new, empty buffer; fails on an invalid configuration.
    pub fn new(config: JitterConfig) -> Result<Self, Error> {
        if config.clock_rate == 0
            || config.frame.is_zero()
            || config.min_delay > config.max_delay
            || config.max_packets == 0
            || config.window == 0
        {
            return Err(UsageError::InvalidConfig(
                "clock_rate, frame, max_packets, window > 0 and min_delay <= max_delay",
            )
            .into());
        }
        Ok(Self {
            config,
            epoch: None,
            seqs: SequenceUnwrapper::new(),
            stamps: TimestampUnwrapper::new(),
            packets: BTreeMap::new(),
            next_seq: None,
            next_tick: None,
            next_ts: None,
            blind: 0,
            transits: VecDeque::new(),
            sorted: Vec::new(),
            r_min: 0,
            target: config.min_delay + config.extra_delay,
            stats: JitterStats::default(),
        })
    }

    /// The counters so far.
    #[must_use]
    pub const fn stats(&self) -> JitterStats {
        self.stats
    }

    /// The current target delay (jitter span plus `extra_delay`, clamped).
    #[must_use]
    pub const fn target_delay(&self) -> Duration {
        self.target
    }

    /// Packets held.
    #[must_use]
    pub fn len(&self) -> usize {
        self.packets.len()
    }

    /// Whether no packet is held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.packets.is_empty()
    }

    /// Changes the extra delay (for example when the FEC group size changes).
    pub fn set_extra_delay(&mut self, extra: Duration) {
        self.config.extra_delay = extra;
        self.update_target();
    }

    fn ts_nanos(&self, ts_ext: u64) -> i64 {
        let n = u128::from(ts_ext) * 1_000_000_000 / u128::from(self.config.clock_rate);
        i64::try_from(n).unwrap_or(i64::MAX)
    }

    fn since_epoch(&mut self, now: Instant) -> i64 {
        let epoch = *self.epoch.get_or_insert(now);
        nanos(now.saturating_duration_since(epoch))
    }

    fn update_target(&mut self) {
        // Reused scratch: no allocation per packet (a conference mixer runs thousands).
        let sorted = &mut self.sorted;
        sorted.clear();
        sorted.extend(self.transits.iter().copied());
        sorted.sort_unstable();
        let min = sorted.first().copied().unwrap_or(0);
        // Until the window is half full the quantile is poorly known: the maximum.
        let quantile = if sorted.len() < self.config.window / 2 {
            100
        } else {
            usize::from(self.config.quantile.min(100))
        };
        let idx = (sorted.len().saturating_sub(1) * quantile) / 100;
        let p95 = sorted.get(idx).copied().unwrap_or(min);
        self.r_min = min;
        let span = Duration::from_nanos(u64::try_from(p95.saturating_sub(min)).unwrap_or(0));
        self.target = (span + self.config.guard)
            .clamp(self.config.min_delay, self.config.max_delay)
            + self.config.extra_delay;
    }

    /// One received packet at `now`.
    pub fn handle_packet(
        &mut self,
        now: Instant,
        seq: u16,
        timestamp: u32,
        payload: T,
    ) -> Result<(), Rejected> {
        self.insert(now, seq, timestamp, payload, true)
    }

    /// A packet rebuilt by FEC (or retransmitted) at `now`: buffered like any other,
    /// but its arrival time is not a sample of the path's delay (it waited for its
    /// group's repair packets), so it does not widen the target delay; the FEC wait
    /// is accounted for by `extra_delay` instead.
    pub fn handle_recovered(
        &mut self,
        now: Instant,
        seq: u16,
        timestamp: u32,
        payload: T,
    ) -> Result<(), Rejected> {
        self.insert(now, seq, timestamp, payload, false)
    }

    fn insert(
        &mut self,
        now: Instant,
        seq: u16,
        timestamp: u32,
        payload: T,
        measure: bool,
    ) -> Result<(), Rejected> {
        let seq_ext = self.seqs.unwrap(seq);
        if self.packets.contains_key(&seq_ext) {
            self.stats.duplicates += 1;
            return Err(Rejected::Duplicate);
        }
        let ts_ext = self.stamps.unwrap(timestamp);
        // A late packet is still a sample of the path's delay (without it the target
        // would only see the fast packets and shrink).
        if measure || self.transits.is_empty() {
            let arrival = self.since_epoch(now);
            self.transits
                .push_back(arrival.saturating_sub(self.ts_nanos(ts_ext)));
            while self.transits.len() > self.config.window {
                self.transits.pop_front();
            }
            self.update_target();
        }
        if let Some(next) = self.next_seq {
            if seq_ext < next {
                self.stats.late += 1;
                return Err(Rejected::Late);
            }
            if seq_ext - next >= self.config.max_packets as u64 {
                // A jump this large is a restart of the stream, not a burst to wait for.
                self.stats.restarts += 1;
                self.packets.clear();
                self.next_seq = Some(seq_ext);
            }
        }
        if self.next_seq.is_none() {
            self.next_seq = Some(seq_ext);
            self.next_tick = Some(now);
        }
        self.packets.insert(
            seq_ext,
            Entry {
                timestamp,
                ts_ext,
                payload,
            },
        );
        self.stats.buffered += 1;
        Ok(())
    }

    /// The extended (64-bit, see [`SequenceUnwrapper`]) sequence number of the next
    /// frame to play, once the first packet came in.
    #[must_use]
    pub const fn next_sequence(&self) -> Option<u64> {
        self.next_seq
    }

    /// The payload of the next frame to play, if it is already buffered. Right after a
    /// [`Playout::Missing`], this is the packet that followed the lost one: with Opus,
    /// pass it to `opus::Decoder::decode_fec` to rebuild the lost frame from its
    /// in-band FEC (LBRR) instead of concealing it.
    #[must_use]
    pub fn peek(&self) -> Option<&T> {
        self.packets.get(&self.next_seq?).map(|e| &e.payload)
    }

    /// When [`JitterBuffer::poll_frame`] should next be called.
    #[must_use]
    pub const fn poll_timeout(&self) -> Option<Instant> {
        self.next_tick
    }

    fn due(&self, ts_ext: u64) -> i64 {
        self.ts_nanos(ts_ext)
            .saturating_add(self.r_min)
            .saturating_add(nanos(self.target))
    }

    /// The frame to play at `now`, or `None` before the next tick. Early calls are
    /// harmless no-ops.
    pub fn poll_frame(&mut self, now: Instant) -> Option<Playout<T>> {
        let tick = self.next_tick?;
        if now < tick {
            return None;
        }
        let frame = self.config.frame;
        // A caller that fell far behind resumes from now rather than bursting.
        self.next_tick = Some(if now.saturating_duration_since(tick) > frame * 10 {
            now + frame
        } else {
            tick + frame
        });
        let now_ns = self.since_epoch(now);
        let half = nanos(frame) / 2;
        let next = self.next_seq?;
        let frame_ts =
            u64::try_from(frame.as_nanos() * u128::from(self.config.clock_rate) / 1_000_000_000)
                .unwrap_or(0);
        let Some((&head_seq, head)) = self.packets.first_key_value() else {
            // Nothing buffered, but the next frame is due: it is late or lost. Conceal
            // it now, as the playout clock must go on (a late packet is then rejected);
            // after `BLIND_MAX` frames the stream is taken to have paused.
            if let Some(ts) = self.next_ts
                && self.blind < BLIND_MAX
                && self.due(ts) <= now_ns.saturating_add(nanos(self.config.slew))
            {
                self.blind += 1;
                self.next_ts = Some(ts + frame_ts);
                self.next_seq = Some(next + 1);
                self.stats.concealed += 1;
                return Some(Playout::Missing { seq: next as u16 });
            }
            self.stats.empty += 1;
            return Some(Playout::Empty);
        };
        if head_seq == next {
            let due = self.due(head.ts_ext);
            if due > now_ns.saturating_add(half) {
                // Before the first frame, the playout clock is phased on the first
                // packet's due time, so that frames play at their due time rather
                // than up to half a frame later.
                if self.stats.played + self.stats.concealed == 0
                    && let (Some(epoch), Ok(due)) = (self.epoch, u64::try_from(due))
                {
                    self.next_tick = Some((epoch + Duration::from_nanos(due)).max(now));
                }
                self.stats.empty += 1;
                return Some(Playout::Empty);
            }
            // More than two frames behind with more buffered: drop one to catch up.
            if due < now_ns.saturating_sub(4 * half) && self.packets.len() >= 2 {
                self.packets.pop_first();
                self.next_seq = Some(next + 1);
                self.stats.accelerated += 1;
            }
            // Playing off the due time: move the next tick towards it a little.
            let off = now_ns.saturating_sub(due);
            if let Some(tick) = self.next_tick {
                let step = self
                    .config
                    .slew
                    .min(Duration::from_nanos(off.unsigned_abs()));
                self.next_tick = Some(if off > 0 {
                    tick.checked_sub(step).unwrap_or(tick).max(now)
                } else {
                    tick + step
                });
            }
            let (seq, entry) = self.packets.pop_first()?;
            self.next_seq = Some(seq + 1);
            self.next_ts = Some(entry.ts_ext + frame_ts);
            self.blind = 0;
            self.stats.played += 1;
            return Some(Playout::Packet {
                seq: seq as u16,
                timestamp: entry.timestamp,
                payload: entry.payload,
            });
        }
        // `next` is missing: conceal it once a later packet shows it is due.
        let est_ts = head
            .ts_ext
            .saturating_sub((head_seq - next).saturating_mul(frame_ts));
        if self.due(est_ts) > now_ns.saturating_add(half) {
            self.stats.empty += 1;
            return Some(Playout::Empty);
        }
        self.next_seq = Some(next + 1);
        self.next_ts = Some(est_ts + frame_ts);
        self.stats.concealed += 1;
        Some(Playout::Missing { seq: next as u16 })
    }
}

#[cfg(test)]
#[allow(
    clippy::field_reassign_with_default,
    reason = "the style callers outside the crate must use (non_exhaustive)"
)]
mod tests {
    use super::*;
    use crate::netsim::{LossModel, NetConfig, Network};
    use proptest::collection::vec;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn never_emits_out_of_order_or_twice(ops in vec(any::<(u8, u16, u8)>(), 0..400)) {
            crate::fuzz::jitter_sequence(&ops.iter().flat_map(|&(a, b, c)| {
                let [b0, b1] = b.to_be_bytes();
                [a, b0, b1, c]
            }).collect::<Vec<u8>>());
        }
    }

    #[test]
    fn plays_a_jittery_lossy_stream_in_order_and_adapts() {
        let mut net_config = NetConfig::default();
        net_config.loss = LossModel::Random { p: 0.05 };
        net_config.jitter = Duration::from_millis(60);
        net_config.reorder = 0.02;
        net_config.duplicate = 0.02;
        let mut net = Network::new(net_config, 5).unwrap();
        let mut jb = JitterBuffer::new(JitterConfig::default()).unwrap();
        let t0 = Instant::now();
        let mut played = Vec::new();
        let (mut missing, mut sent) = (0, 0u16);
        let end = t0 + Duration::from_secs(30);
        let mut now = t0;
        while now < end {
            let next_send = t0 + Duration::from_millis(20) * u32::from(sent);
            let mut wake = if sent < 1400 { next_send } else { end };
            if let Some(t) = net.poll_timeout() {
                wake = wake.min(t);
            }
            if let Some(t) = jb.poll_timeout() {
                wake = wake.min(t);
            }
            now = wake.max(now);
            if now == next_send && sent < 1400 {
                net.handle_send(now, sent, 100);
                sent += 1;
            }
            while let Some(seq) = net.poll_deliver(now) {
                let _ = jb.handle_packet(now, seq.wrapping_add(60_000), u32::from(seq) * 960, seq);
            }
            while let Some(f) = jb.poll_frame(now) {
                match f {
                    Playout::Packet { payload, .. } => played.push(payload),
                    Playout::Missing { .. } => missing += 1,
                    Playout::Empty => {}
                }
            }
            if sent >= 1400 && net.poll_timeout().is_none() && jb.is_empty() {
                break;
            }
        }
        assert!(played.windows(2).all(|w| w[0] < w[1]));
        let stats = jb.stats();
        assert!(played.len() > 1250, "played {} {stats:?}", played.len());
        assert!(missing > 30, "{stats:?}");
        // 60 ms of uniform jitter: the target covers most of it.
        assert!(
            jb.target_delay() >= Duration::from_millis(40),
            "{:?}",
            jb.target_delay()
        );
        assert!(
            jb.target_delay() <= Duration::from_millis(80),
            "{:?}",
            jb.target_delay()
        );
    }

    #[test]
    fn conceals_at_the_due_time_and_recovered_packets_do_not_widen_the_target() {
        // Packets every 20 ms, 40 ms in transit; packet 10 lost, packet 20 rebuilt
        // by FEC 60 ms late.
        let mut jb = JitterBuffer::new(JitterConfig::default()).unwrap();
        let t0 = Instant::now();
        let frame = Duration::from_millis(20);
        let mut out = Vec::new();
        let arrival = |i: u32| t0 + frame * i + Duration::from_millis(40);
        let mut i = 0u32;
        while i < 40 || !jb.is_empty() {
            let tick = jb.poll_timeout().unwrap_or(arrival(i));
            let now = if i < 40 { arrival(i).min(tick) } else { tick };
            if i < 40 && now == arrival(i) {
                if i != 10 && i != 20 {
                    jb.handle_packet(now, i as u16, i * 960, i).unwrap();
                }
                if i == 22 {
                    assert_eq!(
                        jb.handle_recovered(now, 20, 20 * 960, 20),
                        Err(Rejected::Late)
                    );
                }
                i += 1;
            }
            while let Some(f) = jb.poll_frame(now) {
                match f {
                    Playout::Packet { seq, .. } => out.push((seq, now, true)),
                    Playout::Missing { seq } => out.push((seq, now, false)),
                    Playout::Empty => {}
                }
            }
        }
        // Every frame at a steady 20 ms rhythm: the loss did not stall the clock.
        assert_eq!(out.len(), 40, "{out:?}");
        for w in out.windows(2) {
            assert_eq!(w[1].0, w[0].0 + 1);
            assert_eq!(w[1].1 - w[0].1, frame, "{w:?}");
        }
        assert!(!out[10].2, "10 concealed");
        // 20 came in after its turn (it was due at 20 ms + 40 ms + the target).
        assert_eq!(jb.stats().late, 1);
        // A constant transit: the target is the minimum, not widened by the late one.
        assert_eq!(jb.target_delay(), JitterConfig::default().min_delay);
    }

    #[test]
    fn follows_a_sender_clock_that_drifts_either_way() {
        for drift in [0.99, 1.01] {
            let mut jb = JitterBuffer::new(JitterConfig::default()).unwrap();
            let t0 = Instant::now();
            let (mut played, mut max_len) = (0, 0);
            // 60 s of packets sent every 20 ms of *sender* time.
            let mut next_arrival = 0u32;
            let mut now = t0;
            let end = t0 + Duration::from_secs(60);
            while now < end {
                let arrival = t0 + Duration::from_secs_f64(0.02 * f64::from(next_arrival) * drift);
                let tick = jb.poll_timeout().unwrap_or(arrival);
                now = arrival.min(tick);
                if now == arrival {
                    jb.handle_packet(now, next_arrival as u16, next_arrival * 960, next_arrival)
                        .unwrap();
                    next_arrival += 1;
                }
                while let Some(f) = jb.poll_frame(now) {
                    if let Playout::Packet { .. } = f {
                        played += 1;
                    }
                }
                max_len = max_len.max(jb.len());
            }
            let stats = jb.stats();
            assert_eq!(stats.late, 0, "{drift}: {stats:?}");
            assert!(
                max_len < 10,
                "{drift}: the buffer does not grow ({max_len})"
            );
            // A fast sender's surplus (1 %) is dropped to hold the delay; a slow
            // sender's shortfall shows as empty ticks. Nothing else is lost.
            let accounted = played + stats.accelerated as u32 + jb.len() as u32;
            assert!(
                accounted + 5 >= next_arrival,
                "{drift}: {played} of {next_arrival} {stats:?}"
            );
            assert!(
                stats.accelerated <= 40 && stats.empty <= 40,
                "{drift}: {stats:?}"
            );
        }
    }
}

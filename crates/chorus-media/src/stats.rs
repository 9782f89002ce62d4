//! Receive statistics of one RTP source: sequence validation (RFC 3550 §A.1), loss
//! (§A.3) and interarrival jitter (§A.8), and the report block they produce; and the
//! per-packet arrival record behind an RTCP XR Loss RLE block (RFC 3611 §4.1).

use core::time::Duration;
use std::collections::VecDeque;
use std::time::Instant;

use crate::UsageError;
use crate::rtcp::ReportBlock;
use crate::rtcp::xr::LossRle;

/// RFC 3550 §A.1: a jump larger than this is a restart, not a loss burst.
const MAX_DROPOUT: u16 = 3000;
/// RFC 3550 §A.1: a step back larger than this is a restart, not reordering.
const MAX_MISORDER: u16 = 100;

/// Statistics of one received RTP stream. Sans-IO: arrival times are passed in.
#[derive(Debug, Clone)]
pub struct ReceiveStats {
    clock_rate: u32,
    started: bool,
    epoch: Option<Instant>,
    max_seq: u16,
    cycles: u64,
    base_seq: u64,
    bad_seq: Option<u16>,
    received: u64,
    expected_prior: u64,
    received_prior: u64,
    /// Previous (arrival in timestamp units, RTP timestamp) for the jitter estimate.
    last_transit: Option<i64>,
    /// Jitter times 16, as in RFC 3550 §A.8's integer form.
    jitter_q4: u64,
    duplicates_or_late: u64,
}

impl ReceiveStats {
    /// Statistics for a stream with the given RTP clock rate (48,000 for Opus).
    #[must_use]
    pub fn new(clock_rate: u32) -> Self {
        Self {
            clock_rate: clock_rate.max(1),
            started: false,
            epoch: None,
            max_seq: 0,
            cycles: 0,
            base_seq: 0,
            bad_seq: None,
            received: 0,
            expected_prior: 0,
            received_prior: 0,
            last_transit: None,
            jitter_q4: 0,
            duplicates_or_late: 0,
        }
    }

    fn arrival_units(&mut self, now: Instant) -> i64 {
        let epoch = *self.epoch.get_or_insert(now);
        let d = now.saturating_duration_since(epoch);
        // Microseconds in 64 bits (exact for 6 years at 90 kHz): no 128-bit division
        // per packet, which a relay pays for every packet it receives.
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let units = micros.saturating_mul(u64::from(self.clock_rate)) / 1_000_000;
        i64::try_from(units).unwrap_or(i64::MAX)
    }

    /// Records one packet that arrived at `now`. Returns `false` when RFC 3550 §A.1
    /// treats it as bad (a large jump not yet confirmed by its successor).
    pub fn handle_packet(&mut self, now: Instant, seq: u16, rtp_timestamp: u32) -> bool {
        let arrival = self.arrival_units(now);
        if !self.started {
            self.restart(seq);
        } else {
            let udelta = seq.wrapping_sub(self.max_seq);
            if udelta < MAX_DROPOUT {
                if seq < self.max_seq {
                    self.cycles += 1 << 16;
                }
                self.max_seq = seq;
            } else if udelta <= u16::MAX - MAX_MISORDER {
                // A very large jump: restart only if the next packet confirms it.
                if self.bad_seq == Some(seq) {
                    self.restart(seq);
                } else {
                    self.bad_seq = Some(seq.wrapping_add(1));
                    return false;
                }
            } else {
                // Duplicate or reordered packet.
                self.duplicates_or_late += 1;
            }
        }
        self.received += 1;
        // RFC 3550 §A.8: J += (|D| - J) / 16, in timestamp units.
        let transit = arrival - i64::from(rtp_timestamp);
        if let Some(last) = self.last_transit {
            // Timestamps wrap: take the difference modulo 2^32 as a signed value.
            let d = u64::from(((transit - last) as i32).unsigned_abs());
            let j = self.jitter_q4;
            self.jitter_q4 = j + d - ((j + 8) >> 4);
        }
        self.last_transit = Some(transit);
        true
    }

    fn restart(&mut self, seq: u16) {
        self.started = true;
        self.max_seq = seq;
        self.cycles = 0;
        self.base_seq = u64::from(seq);
        self.bad_seq = None;
        self.received = 0;
        self.expected_prior = 0;
        self.received_prior = 0;
    }

    /// The extended highest sequence number received.
    #[must_use]
    pub fn extended_max(&self) -> u64 {
        self.cycles + u64::from(self.max_seq)
    }

    /// Packets expected so far (RFC 3550 §A.3).
    #[must_use]
    pub fn expected(&self) -> u64 {
        if self.received == 0 {
            return 0;
        }
        self.extended_max() + 1 - self.base_seq
    }

    /// Packets received so far (duplicates included, as RFC 3550 counts them).
    #[must_use]
    pub const fn received(&self) -> u64 {
        self.received
    }

    /// Cumulative loss: expected minus received (negative with duplicates).
    #[must_use]
    pub fn cumulative_lost(&self) -> i64 {
        i64::try_from(self.expected()).unwrap_or(i64::MAX)
            - i64::try_from(self.received).unwrap_or(i64::MAX)
    }

    /// Interarrival jitter in timestamp units.
    #[must_use]
    pub fn jitter(&self) -> u32 {
        u32::try_from(self.jitter_q4 >> 4).unwrap_or(u32::MAX)
    }

    /// Interarrival jitter as a duration.
    #[must_use]
    pub fn jitter_duration(&self) -> Duration {
        Duration::from_nanos(u64::from(self.jitter()) * 1_000_000_000 / u64::from(self.clock_rate))
    }

    /// Duplicates and reordered packets seen.
    #[must_use]
    pub const fn duplicates_or_late(&self) -> u64 {
        self.duplicates_or_late
    }

    /// A report block for `ssrc` (RFC 3550 §A.3), starting a new loss interval.
    /// `last_sr` and `delay_since_last_sr` are the caller's (it saw the SRs).
    pub fn report_block(
        &mut self,
        ssrc: u32,
        last_sr: u32,
        delay_since_last_sr: u32,
    ) -> ReportBlock {
        let expected = self.expected();
        let expected_interval = expected - self.expected_prior;
        self.expected_prior = expected;
        let received_interval = self.received - self.received_prior;
        self.received_prior = self.received;
        let lost_interval = expected_interval.saturating_sub(received_interval);
        let fraction_lost = (lost_interval << 8)
            .checked_div(expected_interval)
            .map_or(0, |f| u8::try_from(f).unwrap_or(u8::MAX));
        ReportBlock {
            ssrc,
            fraction_lost,
            cumulative_lost: i32::try_from(self.cumulative_lost().clamp(-0x80_0000, 0x7f_ffff))
                .unwrap_or(0),
            highest_seq: self.extended_max() as u32,
            jitter: self.jitter(),
            last_sr,
            delay_since_last_sr,
        }
    }
}

/// Which of the last `window` sequence numbers of a stream arrived, for RTCP XR Loss
/// RLE reports (RFC 3611 §4.1): the sender learns the loss *pattern* (how long the
/// bursts are), not only the fraction a report block gives.
#[derive(Debug, Clone)]
pub struct ArrivalRecord {
    window: usize,
    lag: usize,
    /// Sequence number of `fates[0]`.
    start: u16,
    fates: VecDeque<bool>,
    /// Entries of `fates` already past the lag (what a report covers).
    settled: usize,
}

impl ArrivalRecord {
    /// A record of the last `window` sequence numbers (at least 16, at most 16,384)
    /// whose reports leave out the newest `lag` (a packet missing there may only be
    /// late: reordered by jitter).
    #[must_use]
    pub fn new(window: usize, lag: usize) -> Self {
        let window = window.clamp(16, 16_384);
        Self {
            window,
            lag: lag.min(window - 1),
            start: 0,
            fates: VecDeque::new(),
            settled: 0,
        }
    }

    /// Packet `seq` arrived. Older than the window: ignored. A jump of more than
    /// `MAX_DROPOUT` (RFC 3550 §A.1) restarts the record. Returns whether a packet
    /// has just been settled as lost: it is still missing `lag` packets after it (a
    /// loss worth reporting at once).
    pub fn record(&mut self, seq: u16) -> bool {
        let d = usize::from(seq.wrapping_sub(self.start));
        if self.fates.is_empty() || (d >= usize::from(MAX_DROPOUT) + self.fates.len() && d < 0x8000)
        {
            self.fates.clear();
            self.start = seq;
            self.fates.push_back(true);
            self.settled = 0;
            return false;
        }
        if d >= 0x8000 {
            return false; // before the window
        }
        while self.fates.len() <= d {
            self.fates.push_back(false);
        }
        if let Some(f) = self.fates.get_mut(d) {
            *f = true;
        }
        let settle_to = self.fates.len().saturating_sub(self.lag);
        let lost = self
            .fates
            .range(self.settled.min(settle_to)..settle_to)
            .any(|r| !r);
        self.settled = self.settled.max(settle_to);
        let excess = self.fates.len().saturating_sub(self.window);
        self.fates.drain(..excess);
        self.settled = self.settled.saturating_sub(excess);
        self.start = self.start.wrapping_add(excess as u16);
        lost
    }

    /// A Loss RLE block about `ssrc` covering the window but its newest `lag`
    /// sequence numbers; `None` when nothing is covered.
    pub fn loss_rle(&self, ssrc: u32) -> Result<Option<LossRle>, UsageError> {
        let n = self.fates.len().saturating_sub(self.lag);
        if n == 0 {
            return Ok(None);
        }
        let fates: Vec<bool> = self.fates.iter().take(n).copied().collect();
        LossRle::from_fates(ssrc, self.start, &fates).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrival_record_reports_the_window_across_a_wrap() {
        let mut r = ArrivalRecord::new(16, 2);
        assert_eq!(r.loss_rle(5), Ok(None));
        // 65,530..65,560 (wrapping), every third lost; the window keeps the last 16.
        // A loss settles when the packet two after it arrives: i = 1 at i = 3.
        for i in 0..30u16 {
            if i % 3 != 1 {
                let settled = r.record(65_530u16.wrapping_add(i));
                assert_eq!(settled, i >= 3 && i % 3 == 0, "{i}");
            }
        }
        assert!(!r.record(65_530), "too old: ignored");
        let rle = r.loss_rle(5).unwrap().unwrap();
        let fates: Vec<(u16, bool)> = rle.fates().collect();
        assert_eq!(fates.len(), 14);
        assert_eq!(fates[0].0, 65_530u16.wrapping_add(29 - 15));
        for (seq, received) in fates {
            let i = seq.wrapping_sub(65_530);
            assert_eq!(received, i % 3 != 1, "{seq}");
        }
        // A jump beyond RFC 3550's dropout restarts the record.
        assert!(!r.record(30_000));
        assert_eq!(r.loss_rle(5), Ok(None), "one packet, inside the lag");
    }

    #[test]
    fn counts_loss_across_a_sequence_wrap() {
        let t0 = Instant::now();
        let mut s = ReceiveStats::new(48_000);
        let mut seq = 65_000u16;
        for i in 0..2_000u32 {
            if i % 10 != 3 {
                assert!(s.handle_packet(
                    t0 + Duration::from_millis(20 * u64::from(i)),
                    seq,
                    960 * i
                ));
            }
            seq = seq.wrapping_add(1);
        }
        assert_eq!(s.expected(), 2_000); // the last packet (i = 1999) is received
        assert_eq!(s.cumulative_lost(), 200);
        let block = s.report_block(7, 0, 0);
        assert_eq!(block.fraction_lost, (200 * 256 / 2000) as u8);
        assert_eq!(block.highest_seq, 65_536 + u32::from(seq.wrapping_sub(1)));
        assert_eq!(s.jitter(), 0, "perfectly paced arrivals have no jitter");
        assert_eq!(s.report_block(7, 0, 0).fraction_lost, 0, "a new interval");
    }

    #[test]
    fn jitter_grows_with_alternating_delay() {
        let t0 = Instant::now();
        let mut s = ReceiveStats::new(8_000);
        for i in 0..500u32 {
            let extra = if i % 2 == 0 { 0 } else { 10 };
            s.handle_packet(
                t0 + Duration::from_millis(u64::from(20 * i + extra)),
                i as u16,
                160 * i,
            );
        }
        // |D| = 80 units every packet, so J converges to 80.
        assert!((75..=80).contains(&s.jitter()), "{}", s.jitter());
        assert_eq!(
            s.jitter_duration(),
            Duration::from_micros(u64::from(s.jitter()) * 125)
        );
    }

    #[test]
    fn a_large_jump_needs_confirmation() {
        let t0 = Instant::now();
        let mut s = ReceiveStats::new(8_000);
        for i in 0..10u16 {
            s.handle_packet(t0, i, 0);
        }
        assert!(!s.handle_packet(t0, 30_000, 0));
        assert!(s.handle_packet(t0, 30_001, 0));
        assert_eq!(s.expected(), 1);
    }
}

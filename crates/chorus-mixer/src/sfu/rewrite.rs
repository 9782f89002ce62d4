//! Per-receiver sequence number and timestamp rewriting: whatever layers a receiver
//! is switched between, it sees one RTP stream whose sequence numbers continue
//! without a gap or a repeat at each switch and whose timestamps keep advancing.

use std::time::Instant;

/// Sequence numbers older than this, relative to the newest forwarded one, are
/// treated as from before the last switch.
const REORDER_WINDOW: u16 = 0x4000;

#[derive(Debug, Clone, Copy)]
struct State {
    /// out = in + delta, modulo 2^16.
    seq_delta: u16,
    /// out = in + delta, modulo 2^32.
    ts_delta: u32,
    /// The lowest input sequence number of the current layer still forwarded: the
    /// switching packet, moved up as the layer advances.
    floor: u16,
    /// The newest packet forwarded: its input and output sequence numbers, output
    /// timestamp and arrival time.
    high_in: u16,
    high_out: u16,
    high_ts: u32,
    high_at: Instant,
}

/// The rewriting state of one receiver of one stream.
#[derive(Debug, Clone, Default)]
pub(crate) struct Rewriter {
    state: Option<State>,
}

impl Rewriter {
    /// Starts forwarding a new layer at its packet (`seq`, `ts`) arriving at `now`;
    /// returns that packet's output sequence number and timestamp. The first packet
    /// of the first layer keeps its numbers; a later switch continues right after the
    /// newest packet forwarded, and advances the timestamp by the time elapsed since
    /// it arrived (at `clock_rate`, at least one tick).
    pub(crate) fn switch(
        &mut self,
        seq: u16,
        ts: u32,
        now: Instant,
        clock_rate: u32,
    ) -> (u16, u32) {
        let (out_seq, out_ts) = match self.state {
            None => (seq, ts),
            Some(s) => {
                let elapsed = now.saturating_duration_since(s.high_at);
                let ticks = elapsed.as_micros() * u128::from(clock_rate) / 1_000_000;
                let ticks = u32::try_from(ticks).unwrap_or(u32::MAX / 2).max(1);
                (s.high_out.wrapping_add(1), s.high_ts.wrapping_add(ticks))
            }
        };
        self.state = Some(State {
            seq_delta: out_seq.wrapping_sub(seq),
            ts_delta: out_ts.wrapping_sub(ts),
            floor: seq,
            high_in: seq,
            high_out: out_seq,
            high_ts: out_ts,
            high_at: now,
        });
        (out_seq, out_ts)
    }

    /// Maps a packet of the current layer; `None` when it predates the last switch
    /// (its number was never given out, or was given to the layer before).
    pub(crate) fn map(&mut self, seq: u16, ts: u32, now: Instant) -> Option<(u16, u32)> {
        let s = self.state.as_mut()?;
        if seq.wrapping_sub(s.floor) >= 0x8000 {
            return None;
        }
        let out_seq = seq.wrapping_add(s.seq_delta);
        let out_ts = ts.wrapping_add(s.ts_delta);
        let ahead = seq.wrapping_sub(s.high_in);
        if ahead != 0 && ahead < 0x8000 {
            s.high_in = seq;
            s.high_out = out_seq;
            s.high_ts = out_ts;
            s.high_at = now;
            if seq.wrapping_sub(s.floor) > REORDER_WINDOW {
                s.floor = seq.wrapping_sub(REORDER_WINDOW);
            }
        }
        Some((out_seq, out_ts))
    }

    /// A timestamp of the current layer in the receiver's timeline (for sender
    /// reports).
    pub(crate) fn rewrite_timestamp(&self, ts: u32) -> Option<u32> {
        self.state.map(|s| ts.wrapping_add(s.ts_delta))
    }

    /// The input sequence number that output `out_seq` came from, when it belongs to
    /// the current layer (for translating a receiver's NACK).
    pub(crate) fn unmap(&self, out_seq: u16) -> Option<u16> {
        let s = self.state.as_ref()?;
        let seq = out_seq.wrapping_sub(s.seq_delta);
        (seq.wrapping_sub(s.floor) < 0x8000 && s.high_in.wrapping_sub(seq) < 0x8000).then_some(seq)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn switch_continues_numbering_and_time() {
        let t0 = Instant::now();
        let mut r = Rewriter::default();
        assert_eq!(r.switch(100, 9000, t0, 90_000), (100, 9000));
        assert_eq!(r.map(101, 9000, t0), Some((101, 9000)));
        assert_eq!(r.map(102, 12_000, t0), Some((102, 12_000)));
        // Another layer with unrelated numbers, 10 ms later.
        let t1 = t0 + Duration::from_millis(10);
        assert_eq!(r.switch(50_000, 7, t1, 90_000), (103, 12_900));
        assert_eq!(r.map(50_001, 7, t1), Some((104, 12_900)));
        // A late packet of the new layer from before the switch is dropped.
        assert_eq!(r.map(49_999, 7, t1), None);
        assert_eq!(r.unmap(104), Some(50_001));
        assert_eq!(r.unmap(102), None);
    }

    proptest! {
        /// Whatever the layers' numbers and wherever the switches fall, the output
        /// sequence runs on by exactly one per packet in order and its timestamps
        /// never go back.
        #[test]
        fn continuous_across_switches(
            starts in proptest::collection::vec((any::<u16>(), any::<u32>(), 1usize..50), 1..8),
        ) {
            let t0 = Instant::now();
            let mut r = Rewriter::default();
            let mut last: Option<(u16, u32)> = None;
            let mut n = 0u64;
            for (seq, ts, len) in starts {
                for i in 0..len {
                    n += 1;
                    let now = t0 + Duration::from_millis(n * 33);
                    let (s, t) = (seq.wrapping_add(i as u16), ts.wrapping_add(3000 * i as u32));
                    let out = if i == 0 { r.switch(s, t, now, 90_000) } else { r.map(s, t, now).unwrap() };
                    if let Some((ls, lt)) = last {
                        prop_assert_eq!(out.0, ls.wrapping_add(1));
                        let dt = out.1.wrapping_sub(lt);
                        prop_assert!(dt != 0 && dt < 0x8000_0000);
                    }
                    last = Some(out);
                }
            }
        }
    }
}

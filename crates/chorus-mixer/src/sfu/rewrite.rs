//! Per-receiver sequence number and timestamp rewriting: whatever layers a receiver
//! is switched between, it sees one RTP stream whose sequence numbers continue
//! without a gap or a repeat at each switch and whose timestamps keep advancing.

use std::collections::VecDeque;
use std::time::Instant;

/// Sequence numbers more than this behind the newest forwarded one may be treated as
/// from before the last switch: the floor below which packets are dropped trails the
/// newest packet by between half this and this (it moves in steps of half, so that
/// the forwarding path rarely moves it).
const REORDER_WINDOW: u16 = 0x4000;

/// Numbering epochs remembered: each packet left out (a temporal layer above the
/// receiver's) starts one, so a packet reordered across up to this many left-out
/// frames still gets its own number; an older one is dropped.
const MAX_EPOCHS: usize = 64;

/// From input sequence number `start` on, out = in + `delta` (modulo 2^16).
#[derive(Debug, Clone, Copy)]
struct Epoch {
    start: u16,
    delta: u16,
}

#[derive(Debug, Clone, Copy)]
struct State {
    /// The current numbering: every packet at or after its start.
    newest: Epoch,
    /// out = in + delta, modulo 2^32.
    ts_delta: u32,
    /// The lowest input sequence number of the current layer still forwarded: the
    /// switching packet, moved up as the layer advances.
    floor: u16,
    /// The newest packet forwarded or left out: its input and output sequence
    /// numbers (a left-out packet's is the last number given out or reserved before
    /// it), output timestamp and arrival time.
    high_in: u16,
    high_out: u16,
    high_ts: u32,
    high_at: Instant,
}

/// The rewriting state of one receiver of one stream.
#[derive(Debug, Clone, Default)]
pub(crate) struct Rewriter {
    state: Option<State>,
    /// The numberings before `newest`, oldest first, each until the next one starts.
    /// Each packet left out shifts the numbers of the packets after it down by one,
    /// so the receiver sees no gap; a packet reordered across such a shift keeps
    /// the number of its own epoch. Empty for a stream nothing is left out of, so
    /// that the forwarding path reads only `newest`.
    older: VecDeque<Epoch>,
    /// Set before the first switch: number on after this output sequence number
    /// instead of keeping the input's.
    resume: Option<u16>,
}

/// Whether `a` is at or after `b` in sequence-number order (RFC 3550 §A.1 style).
fn at_or_after(a: u16, b: u16) -> bool {
    a.wrapping_sub(b) < 0x8000
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
            None => (self.resume.take().map_or(seq, |s| s.wrapping_add(1)), ts),
            Some(s) => {
                let elapsed = now.saturating_duration_since(s.high_at);
                let ticks = elapsed.as_micros() * u128::from(clock_rate) / 1_000_000;
                let ticks = u32::try_from(ticks).unwrap_or(u32::MAX / 2).max(1);
                (s.high_out.wrapping_add(1), s.high_ts.wrapping_add(ticks))
            }
        };
        self.state = Some(State {
            newest: Epoch {
                start: seq,
                delta: out_seq.wrapping_sub(seq),
            },
            ts_delta: out_ts.wrapping_sub(ts),
            floor: seq,
            high_in: seq,
            high_out: out_seq,
            high_ts: out_ts,
            high_at: now,
        });
        self.older.clear();
        (out_seq, out_ts)
    }

    /// Whether nothing was forwarded yet.
    pub(crate) const fn is_fresh(&self) -> bool {
        self.state.is_none()
    }

    /// Makes the first switch number on after `out_seq` (the last number the
    /// receiver got of this SSRC before) instead of keeping the layer's numbers.
    pub(crate) fn resume_after(&mut self, out_seq: u16) {
        if self.state.is_none() {
            self.resume = Some(out_seq);
        }
    }

    /// Maps a packet of the current layer; `None` when it predates the last switch
    /// (its number was never given out, or was given to the layer before) or the
    /// oldest numbering epoch remembered.
    pub(crate) fn map(&mut self, seq: u16, ts: u32, now: Instant) -> Option<(u16, u32)> {
        let s = self.state.as_mut()?;
        if !at_or_after(seq, s.floor) {
            return None;
        }
        let delta = if at_or_after(seq, s.newest.start) {
            s.newest.delta
        } else {
            self.older
                .iter()
                .rev()
                .find(|e| at_or_after(seq, e.start))?
                .delta
        };
        let out_seq = seq.wrapping_add(delta);
        let out_ts = ts.wrapping_add(s.ts_delta);
        let ahead = seq.wrapping_sub(s.high_in);
        if ahead != 0 && ahead < 0x8000 {
            (s.high_in, s.high_out, s.high_ts, s.high_at) = (seq, out_seq, out_ts, now);
            if seq.wrapping_sub(s.floor) > REORDER_WINDOW {
                raise_floor(s, &mut self.older);
            }
        }
        Some((out_seq, out_ts))
    }

    /// A packet of the current layer that this receiver does not get (its temporal
    /// layer is above the receiver's): the packets after it are numbered one lower, so
    /// the receiver sees no gap. A left-out packet that arrives after a newer one was
    /// numbered leaves a gap (its number was reserved); it is still not forwarded.
    pub(crate) fn skip(&mut self, seq: u16) {
        let Some(s) = self.state.as_mut() else { return };
        let ahead = seq.wrapping_sub(s.high_in);
        if !at_or_after(seq, s.floor) || ahead == 0 || ahead >= 0x8000 {
            return;
        }
        // In order, so `seq` is in the newest epoch.
        let next = Epoch {
            start: seq.wrapping_add(1),
            delta: s.newest.delta.wrapping_sub(1),
        };
        // Consecutive left-out packets: the newest epoch just moves on.
        if s.newest.start != seq {
            if self.older.len() + 1 >= MAX_EPOCHS {
                self.older.pop_front();
                s.floor = self.older.front().map_or(s.newest.start, |e| e.start);
            }
            self.older.push_back(s.newest);
        }
        s.newest = next;
        // The last number given out or reserved stays the newest output.
        (s.high_in, s.high_out) = (seq, seq.wrapping_add(next.delta));
        if seq.wrapping_sub(s.floor) > REORDER_WINDOW {
            raise_floor(s, &mut self.older);
        }
    }

    /// A timestamp of the current layer in the receiver's timeline (for sender
    /// reports).
    pub(crate) fn rewrite_timestamp(&self, ts: u32) -> Option<u32> {
        self.state.map(|s| ts.wrapping_add(s.ts_delta))
    }

    /// The input sequence number that output `out_seq` came from, when it belongs to
    /// the current layer (for translating a receiver's NACK). Outputs are contiguous,
    /// so each epoch owns the outputs from its first one to the next epoch's.
    pub(crate) fn unmap(&self, out_seq: u16) -> Option<u16> {
        let s = self.state.as_ref()?;
        let owns = |e: &Epoch| at_or_after(out_seq, e.start.wrapping_add(e.delta));
        let e = if owns(&s.newest) {
            s.newest
        } else {
            *self.older.iter().rev().find(|e| owns(e))?
        };
        let seq = out_seq.wrapping_sub(e.delta);
        (at_or_after(seq, s.floor) && at_or_after(s.high_in, seq)).then_some(seq)
    }
}

/// Moves the reordering floor up behind the newest packet, forgetting the epochs
/// wholly behind it; the first remaining one then starts at the floor, so that every
/// start stays within the window behind the newest packet, where sequence-number
/// order is well defined.
#[cold]
fn raise_floor(s: &mut State, older: &mut VecDeque<Epoch>) {
    s.floor = s.high_in.wrapping_sub(REORDER_WINDOW / 2);
    while older.front().is_some() {
        let next_start = older.get(1).map_or(s.newest.start, |e| e.start);
        if !at_or_after(s.floor, next_start) {
            break;
        }
        older.pop_front();
    }
    let first = older.front_mut().unwrap_or(&mut s.newest);
    if !at_or_after(first.start, s.floor) {
        first.start = s.floor;
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

    #[test]
    fn a_resumed_rewriter_numbers_on_after_the_old_stream() {
        let t0 = Instant::now();
        let mut r = Rewriter::default();
        assert!(r.is_fresh());
        r.resume_after(5000);
        assert_eq!(r.switch(100, 9000, t0, 90_000), (5001, 9000));
        assert_eq!(r.map(101, 9000, t0), Some((5002, 9000)));
        assert_eq!(r.unmap(5002), Some(101));
        assert!(!r.is_fresh());
        // Only before the first switch.
        r.resume_after(1);
        assert_eq!(r.switch(7, 0, t0, 90_000).0, 5003);
    }

    #[test]
    fn left_out_packets_leave_no_gap_and_nacks_map_back() {
        let t0 = Instant::now();
        let mut r = Rewriter::default();
        assert_eq!(r.switch(1000, 0, t0, 90_000), (1000, 0));
        r.skip(1001);
        r.skip(1002);
        assert_eq!(r.map(1003, 3000, t0), Some((1001, 3000)));
        r.skip(1004);
        // 1005 is lost on the way in; 1006 keeps its place after it.
        assert_eq!(r.map(1006, 6000, t0), Some((1003, 6000)));
        assert_eq!(r.map(1005, 6000, t0), Some((1002, 6000)), "late, own epoch");
        assert_eq!(r.unmap(1001), Some(1003));
        assert_eq!(r.unmap(1002), Some(1005));
        assert_eq!(r.unmap(1003), Some(1006));
        assert_eq!(r.unmap(1004), None, "not given out yet");
        // A left-out packet arriving late changes nothing.
        r.skip(1002);
        assert_eq!(r.map(1007, 7000, t0), Some((1004, 7000)));
        // A switch continues after the newest output.
        assert_eq!(r.switch(9, 0, t0, 90_000).0, 1005);
    }

    #[test]
    fn numbering_survives_many_wraps_with_and_without_left_out_packets() {
        let t0 = Instant::now();
        for skip_every in [0u32, 4] {
            let mut r = Rewriter::default();
            let mut seq = 65_000u16;
            let mut last = r.switch(seq, 0, t0, 90_000).0;
            for i in 1..300_000u32 {
                seq = seq.wrapping_add(1);
                if skip_every != 0 && i % skip_every == 0 {
                    r.skip(seq);
                    continue;
                }
                let out = r.map(seq, i, t0).map(|o| o.0);
                assert_eq!(out, Some(last.wrapping_add(1)), "packet {i}");
                assert_eq!(r.unmap(last.wrapping_add(1)), Some(seq));
                last = last.wrapping_add(1);
            }
        }
    }

    #[test]
    fn a_packet_older_than_the_remembered_epochs_is_dropped() {
        let t0 = Instant::now();
        let mut r = Rewriter::default();
        r.switch(0, 0, t0, 90_000);
        // Packet 1 is delayed; then MAX_EPOCHS frames are left out between kept ones.
        for i in 0..MAX_EPOCHS as u16 {
            r.skip(2 + 2 * i);
            assert!(r.map(3 + 2 * i, 0, t0).is_some());
        }
        assert_eq!(r.map(1, 0, t0), None);
    }

    proptest! {
        /// In-order packets, each forwarded or left out, with switches anywhere:
        /// forwarded packets are numbered one after another, and every number maps
        /// back to its packet.
        #[test]
        fn continuous_with_left_out_packets(
            plan in proptest::collection::vec((any::<u16>(), proptest::collection::vec(any::<bool>(), 1..60)), 1..6),
        ) {
            let t0 = Instant::now();
            let mut r = Rewriter::default();
            let mut last: Option<u16> = None;
            for (start, keep) in plan {
                let mut switched = false;
                for (i, k) in keep.into_iter().enumerate() {
                    let seq = start.wrapping_add(i as u16);
                    if !switched && !k {
                        continue; // a layer is joined at a forwarded packet
                    }
                    if !k {
                        r.skip(seq);
                        continue;
                    }
                    let out = if switched { r.map(seq, 0, t0).unwrap().0 } else { r.switch(seq, 0, t0, 90_000).0 };
                    switched = true;
                    if let Some(l) = last {
                        prop_assert_eq!(out, l.wrapping_add(1));
                    }
                    prop_assert_eq!(r.unmap(out), Some(seq));
                    last = Some(out);
                }
            }
        }

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

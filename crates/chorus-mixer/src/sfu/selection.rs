//! Selection: which simulcast layer and temporal layer each receiver gets of each
//! stream (module docs of `sfu`, "Selection", "Temporal layers", "Silent layers").

use std::time::{Duration, Instant};

use super::rewrite::Rewriter;
use super::slab::Key;
use super::{Output, Sfu, Stream, Temporal};
use crate::Error;

/// A receiver's view of one stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Selection {
    /// The layer being forwarded, if any.
    pub current: Option<u8>,
    /// The layer selection wants; differs from `current` until its keyframe.
    pub target: Option<u8>,
    /// The highest temporal layer forwarded (0 for a stream without temporal layers).
    pub temporal: u8,
    /// The temporal layer selection wants; differs from `temporal` until the next
    /// frame start (down) or layer-sync frame (up).
    pub temporal_target: u8,
}

/// What selection gives a receiver of a stream: (layer, highest temporal layer).
type Choice = (u8, u8);

#[derive(Debug)]
pub(super) struct Forward {
    pub(super) endpoint: u32,
    pub(super) current: Option<u8>,
    pub(super) target: Option<u8>,
    /// The highest temporal layer forwarded, and the one wanted.
    pub(super) tid: u8,
    pub(super) tid_target: u8,
    /// Since when `tid` has been below `tid_target`: a sender that marks no sync
    /// frames is asked for a keyframe after `keyframe_interval`.
    pub(super) temporal_since: Option<Instant>,
    /// Layers the receiver accepts (bit i = layer i).
    pub(super) accept: u8,
    pub(super) rewriter: Rewriter,
}

impl Forward {
    pub(super) fn new(endpoint: u32) -> Self {
        Self {
            endpoint,
            current: None,
            target: None,
            tid: 0,
            tid_target: 0,
            temporal_since: None,
            accept: 0xff,
            rewriter: Rewriter::default(),
        }
    }

    /// Whether a packet of the current layer goes to this receiver, moving its
    /// temporal layer towards the target where that cannot cut a frame or leave one
    /// without its references: down at any frame start, up at a layer-sync frame of
    /// the next temporal layer up (one step at a time, so that a frame of a layer in
    /// between never arrives without the earlier frames of its layer it may use).
    /// A keyframe starts every temporal layer at once. While below its target, the
    /// receiver remembers since when (see `temporal_since`).
    pub(super) fn admits(&mut self, t: Temporal, now: Instant) -> bool {
        if t.frame_start {
            if self.tid_target < self.tid || t.keyframe {
                self.tid = self.tid_target;
            } else if t.sync && t.tid == self.tid + 1 && t.tid <= self.tid_target {
                self.tid = t.tid;
            }
        }
        if self.tid < self.tid_target {
            self.temporal_since.get_or_insert(now);
        } else {
            self.temporal_since = None;
        }
        t.tid <= self.tid
    }

    /// The layer whose keyframe would end a temporal up-switch that has waited
    /// `interval` without a sync frame.
    pub(super) fn temporal_stuck(&self, now: Instant, interval: Duration) -> Option<u8> {
        self.temporal_since
            .filter(|&t| now.saturating_duration_since(t) >= interval)
            .and(self.current)
    }
}

impl Sfu {
    /// Sets a receiver's bandwidth estimate (bit/s) and re-selects its layers. A REMB
    /// from the endpoint does the same.
    ///
    /// # Errors
    /// [`SfuError::UnknownPeer`](super::SfuError::UnknownPeer).
    pub fn set_bandwidth(
        &mut self,
        now: Instant,
        endpoint: u32,
        bps: u64,
        out: &mut Output,
    ) -> Result<(), Error> {
        self.endpoint_mut(endpoint)?.estimate_bps = bps;
        self.reallocate(now, endpoint, out);
        Ok(())
    }

    /// The active speaker changed: their streams are served first when bandwidth is
    /// shared.
    pub fn set_speaker(&mut self, now: Instant, participant: Option<u32>, out: &mut Output) {
        if self.speaker == participant {
            return;
        }
        self.speaker = participant;
        let ids: Vec<u32> = self.endpoints.values().map(|e| e.id).collect();
        for id in ids {
            self.reallocate(now, id, out);
        }
    }

    pub(super) fn reselect_receivers_of(&mut self, now: Instant, sk: Key, out: &mut Output) {
        let ids: Vec<u32> = self
            .streams
            .get(sk)
            .map(|s| s.forwards.iter().map(|f| f.endpoint).collect())
            .unwrap_or_default();
        for id in ids {
            self.reallocate(now, id, out);
        }
    }

    /// Shares `endpoint`'s estimate among its streams (module docs, "Selection") and
    /// starts the switches that changes.
    pub(super) fn reallocate(&mut self, now: Instant, endpoint: u32, out: &mut Output) {
        let Some(mut budget) = self.endpoints.get(endpoint).map(|e| e.estimate_bps) else {
            return;
        };
        // (stream, forward, choice of (layer, temporal layer)), speaker first, then
        // publication order.
        let mut plan: Vec<(Key, usize, Option<Choice>)> = Vec::new();
        for (sk, s) in self.streams.iter() {
            if let Some(fi) = s.forwards.iter().position(|f| f.endpoint == endpoint) {
                plan.push((sk, fi, None));
            }
        }
        let speaker = self.speaker;
        plan.sort_by_key(|&(sk, _, _)| {
            self.streams
                .get(sk)
                .map(|s| Some(s.info.participant) != speaker)
                .zip(self.streams.position(sk))
        });
        let allowed = |s: &Stream, f: usize| {
            let usable = s.forwards[f].accept & !s.stalled();
            (0..s.layers.len() as u8).filter(move |l| usable & (1 << l) != 0)
        };
        let cost = |s: &Stream, (l, t): Choice| s.info.bitrate(usize::from(l), t);
        for (sk, fi, choice) in &mut plan {
            let Some(s) = self.streams.get(*sk) else {
                continue;
            };
            if let Some(low) = allowed(s, *fi).next()
                && cost(s, (low, 0)) <= budget
            {
                budget -= cost(s, (low, 0));
                *choice = Some((low, 0));
            }
        }
        for (sk, fi, choice) in &mut plan {
            let Some(s) = self.streams.get(*sk) else {
                continue;
            };
            let Some(c) = *choice else { continue };
            let have = cost(s, c);
            let top = s.info.temporal_layers() - 1;
            // The highest layer, then the highest temporal layer in it, that fits.
            if let Some(up) = allowed(s, *fi)
                .rev()
                .filter(|&l| l >= c.0)
                .flat_map(|l| (0..=top).rev().map(move |t| (l, t)))
                .find(|&o| cost(s, o).saturating_sub(have) <= budget)
            {
                budget -= cost(s, up).saturating_sub(have);
                *choice = Some(up);
            }
        }
        for (sk, fi, choice) in plan {
            let Some(f) = self
                .streams
                .get_mut(sk)
                .and_then(|s| s.forwards.get_mut(fi))
            else {
                continue;
            };
            f.tid_target = choice.map_or(0, |c| c.1);
            let choice = choice.map(|c| c.0);
            if f.target == choice {
                continue;
            }
            f.target = choice;
            match choice {
                None => f.current = None,
                Some(t) if f.current != Some(t) => {
                    // The new layer must be subscribed upstream before it is asked for.
                    self.update_upstream(now, sk, out);
                    self.request_keyframe(now, sk, t, out);
                }
                Some(_) => {}
            }
            self.update_upstream(now, sk, out);
        }
    }
}

impl Stream {
    /// When a layer next changes silence state: an expected layer counts as silent
    /// `timeout` after it was last heard; a silent layer no longer expected is tried
    /// again four timeouts after it went silent.
    pub(super) fn silence_deadline(&self, timeout: Duration) -> Option<Instant> {
        let sending = self.sending();
        self.layers
            .iter()
            .enumerate()
            .filter_map(move |(li, l)| match l.stalled_at {
                None if sending & (1 << li) != 0 => l.heard.map(|h| h + timeout),
                Some(t) if sending & (1 << li) == 0 => Some(t + 4 * timeout),
                _ => None,
            })
            .min()
    }
}

impl Sfu {
    /// Takes the layers silent for `layer_timeout` out of selection, brings back
    /// relayed ones after four timeouts, and re-selects their receivers.
    pub(super) fn expire_silent_layers(&mut self, now: Instant, out: &mut Output) {
        let timeout = self.config.layer_timeout;
        for sk in self.streams.keys() {
            let mut changed = false;
            let Some(s) = self.streams.get_mut(sk) else {
                continue;
            };
            let sending = s.sending();
            for (li, l) in s.layers.iter_mut().enumerate() {
                let watched = sending & (1 << li) != 0;
                match l.stalled_at {
                    None if watched
                        && l.heard
                            .is_some_and(|h| now.saturating_duration_since(h) >= timeout) =>
                    {
                        l.stalled_at = Some(now);
                        changed = true;
                    }
                    Some(t) if !watched && now.saturating_duration_since(t) >= 4 * timeout => {
                        l.stalled_at = None;
                        l.heard = None;
                        changed = true;
                    }
                    _ => {}
                }
            }
            if changed {
                self.reselect_receivers_of(now, sk, out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(tid: u8, sync: bool) -> Temporal {
        Temporal {
            tid,
            frame_start: true,
            sync,
            keyframe: false,
        }
    }

    #[test]
    fn a_temporal_down_switch_waits_for_a_frame_start() {
        let now = Instant::now();
        let mut f = Forward::new(1);
        f.tid = 2;
        f.tid_target = 0;
        let middle = Temporal {
            frame_start: false,
            ..frame(2, false)
        };
        // Inside a frame of layer 2: it is finished.
        assert!(f.admits(middle, now));
        assert_eq!(f.tid, 2);
        // The next frame start moves down at once.
        assert!(!f.admits(frame(1, false), now));
        assert_eq!(f.tid, 0);
        assert_eq!(f.temporal_since, None);
    }

    #[test]
    fn a_temporal_up_switch_takes_one_sync_frame_step_at_a_time() {
        let now = Instant::now();
        let later = now + Duration::from_millis(10);
        let mut f = Forward::new(1);
        f.tid_target = 2;
        // Not a sync frame, and a sync frame two layers up: no step.
        assert!(!f.admits(frame(1, false), now));
        assert!(!f.admits(frame(2, true), later));
        assert_eq!(f.tid, 0);
        // Waiting since the first packet that found it below its target.
        assert_eq!(f.temporal_since, Some(now));
        assert_eq!(f.temporal_stuck(later, Duration::from_millis(10)), None);
        f.current = Some(0);
        assert_eq!(f.temporal_stuck(later, Duration::from_millis(10)), Some(0));
        assert!(f.admits(frame(1, true), later));
        assert_eq!(f.tid, 1);
        assert!(f.admits(frame(2, true), later));
        assert_eq!((f.tid, f.temporal_since), (2, None));
    }

    #[test]
    fn a_silent_layer_leaves_selection_at_its_deadline() {
        let (mut s, mut out, now) = super::super::tests::sfu();
        let timeout = s.config.layer_timeout;
        let stream = s.stream(1).unwrap();
        // Both layers of the local stream are expected from its publication.
        assert_eq!(stream.silence_deadline(timeout), Some(now + timeout));
        assert!(s.selection(2, 1).unwrap().target.is_some());
        s.expire_silent_layers(now + timeout, &mut out);
        let stream = s.stream(1).unwrap();
        assert_eq!(stream.stalled(), 0b11);
        // A local sender's silent layers wait for their next packet: no deadline.
        assert_eq!(stream.silence_deadline(timeout), None);
        assert_eq!(s.selection(2, 1).unwrap().target, None);
    }

    #[test]
    fn a_keyframe_starts_every_temporal_layer() {
        let now = Instant::now();
        let mut f = Forward::new(1);
        f.tid_target = 2;
        let key = Temporal {
            keyframe: true,
            ..frame(0, true)
        };
        assert!(f.admits(key, now));
        assert_eq!(f.tid, 2);
    }
}

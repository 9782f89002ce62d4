//! Active-speaker selection from the RFC 6464 client-to-mixer audio level.
//!
//! Each participant's level (0 = loudest, 127 = silence, in -dBov) becomes a loudness
//! `127 - level` smoothed with a fast attack and a slow release, so a talker is picked
//! up within a frame or two and kept through the short pauses between words. Every
//! tick the K loudest are chosen by partial selection (`select_nth_unstable`, O(N)),
//! with two kinds of hysteresis against flapping:
//!
//! - a current speaker's loudness counts `margin` dB higher when ranked, so a
//!   challenger must be clearly louder, not just louder by a rounding step;
//! - a new speaker keeps the seat for at least `hold` ticks.
//!
//! A participant whose smoothed level is at or below the silence threshold is never
//! selected (its stream need not be decoded at all).

/// Fixed-point scale of the smoothed loudness: 1 dB = 256.
const SCALE: u32 = 256;

/// A participant's smoothed loudness.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Loudness(u32);

impl Loudness {
    /// Feeds one frame's RFC 6464 level (-dBov, clamped to 0-127): attack 1/2, release
    /// 1/16 per frame (about 300 ms to fall 20 dB at 20 ms frames).
    pub fn observe(&mut self, level: u8) {
        let x = u32::from(127 - level.min(127)) * SCALE;
        if x > self.0 {
            self.0 += (x - self.0).div_ceil(2);
        } else {
            self.0 -= (self.0 - x) / 16;
        }
    }

    /// The smoothed level in -dBov (127 = silence).
    #[must_use]
    pub fn level(self) -> u8 {
        127 - u8::try_from(self.0 / SCALE).unwrap_or(127).min(127)
    }

    /// The raw fixed-point loudness (dB above silence times 256).
    #[must_use]
    pub const fn raw(self) -> u32 {
        self.0
    }
}

/// Selection parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SelectorConfig {
    pub(crate) speakers: usize,
    pub(crate) margin_db: u8,
    pub(crate) hold_ticks: u32,
    pub(crate) silence_level: u8,
}

/// One candidate: its slot, loudness, and since when it has been a speaker.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Candidate {
    pub(crate) slot: u32,
    pub(crate) loudness: Loudness,
    /// Ticks it has been a speaker (`None` when it is not one).
    pub(crate) speaking_for: Option<u32>,
}

/// The selector: a reusable scratch vector, so a tick allocates nothing once warm.
#[derive(Debug)]
pub(crate) struct Selector {
    config: SelectorConfig,
    scratch: Vec<(u32, u32)>,
}

impl Selector {
    pub(crate) const fn new(config: SelectorConfig) -> Self {
        Self {
            config,
            scratch: Vec::new(),
        }
    }

    /// Ranks the candidates and returns the slots of the chosen speakers (at most
    /// `speakers` of them), loudest first. O(N).
    pub(crate) fn select(&mut self, candidates: impl Iterator<Item = Candidate>) -> &[(u32, u32)] {
        let c = self.config;
        let floor = u32::from(127 - c.silence_level.min(127)) * SCALE;
        let margin = u32::from(c.margin_db) * SCALE;
        self.scratch.clear();
        for cand in candidates {
            let held = cand.speaking_for.is_some_and(|t| t < c.hold_ticks);
            let raw = cand.loudness.raw();
            if raw <= floor && !held {
                continue;
            }
            let key = match cand.speaking_for {
                Some(_) if held => u32::MAX,
                Some(_) => raw.saturating_add(margin),
                None => raw,
            };
            self.scratch.push((key, cand.slot));
        }
        let k = c.speakers.min(self.scratch.len());
        // Loudest first; equal keys go to the lower slot, so the choice is deterministic.
        let order = |a: &(u32, u32), b: &(u32, u32)| b.0.cmp(&a.0).then(a.1.cmp(&b.1));
        if k > 0 && k < self.scratch.len() {
            self.scratch.select_nth_unstable_by(k - 1, order);
        }
        self.scratch.truncate(k);
        self.scratch.sort_unstable_by(order);
        &self.scratch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(speakers: usize) -> SelectorConfig {
        SelectorConfig {
            speakers,
            margin_db: 6,
            hold_ticks: 10,
            silence_level: 90,
        }
    }

    /// Runs `ticks` of selection over participants whose level per tick comes from
    /// `level(tick, participant)`; returns the speaker set per tick.
    fn run(n: usize, k: usize, ticks: u32, level: impl Fn(u32, usize) -> u8) -> Vec<Vec<u32>> {
        let mut sel = Selector::new(config(k));
        let mut loud = vec![Loudness::default(); n];
        let mut since: Vec<Option<u32>> = vec![None; n];
        let mut history = Vec::new();
        for t in 0..ticks {
            for (i, l) in loud.iter_mut().enumerate() {
                l.observe(level(t, i));
            }
            let cands = (0..n).map(|i| Candidate {
                slot: i as u32,
                loudness: loud[i],
                speaking_for: since[i].map(|s| t - s),
            });
            let chosen: Vec<u32> = sel.select(cands).iter().map(|&(_, s)| s).collect();
            for (i, s) in since.iter_mut().enumerate() {
                let on = chosen.contains(&(i as u32));
                *s = match (*s, on) {
                    (Some(v), true) => Some(v),
                    (None, true) => Some(t),
                    (_, false) => None,
                };
            }
            let mut sorted = chosen;
            sorted.sort_unstable();
            history.push(sorted);
        }
        history
    }

    #[test]
    fn picks_the_k_loudest_and_ignores_silence() {
        // 50 participants: 5 talk at distinct levels, the rest send silence.
        let h = run(50, 3, 20, |_, i| match i {
            7 => 20,
            13 => 25,
            21 => 30,
            30 => 35,
            44 => 40,
            _ => 127,
        });
        assert_eq!(h.last().unwrap(), &[7, 13, 21]);
        let silent = run(10, 3, 5, |_, _| 127);
        assert!(silent.iter().all(Vec::is_empty));
    }

    #[test]
    fn close_levels_that_trade_places_do_not_flap() {
        // Two talkers 1-2 dB apart who swap every few ticks: whoever won first keeps
        // the single seat.
        let h = run(2, 1, 200, |t, i| {
            let swap = (t / 3) % 2 == 0;
            if (i == 0) == swap { 30 } else { 32 }
        });
        let changes = h.windows(2).filter(|w| w[0] != w[1]).count();
        assert_eq!(changes, 0, "{h:?}");
    }

    #[test]
    fn a_clearly_louder_talker_takes_over_after_the_hold() {
        // 0 talks at -40 dBov; from tick 50, 1 talks at -20 dBov and 0 goes on.
        let h = run(3, 1, 100, |t, i| match i {
            0 => 40,
            1 if t >= 50 => 20,
            _ => 127,
        });
        assert_eq!(h[49], [0]);
        let switch = h.iter().position(|s| s == &[1]).unwrap();
        assert!((50..53).contains(&switch), "switched at {switch}");
        assert!(h[switch..].iter().all(|s| s == &[1]), "no flapping back");
    }

    #[test]
    fn a_speaker_who_falls_silent_is_released() {
        let h = run(2, 3, 200, |t, i| if i == 0 && t < 20 { 30 } else { 127 });
        assert_eq!(h[10], [0]);
        assert!(h.last().unwrap().is_empty());
    }

    #[test]
    fn loudness_attacks_fast_and_releases_slowly() {
        let mut l = Loudness::default();
        assert_eq!(l.level(), 127);
        l.observe(20);
        l.observe(20);
        l.observe(20);
        assert!(l.level() <= 40, "{}", l.level());
        for _ in 0..5 {
            l.observe(127);
        }
        assert!(l.level() < 80, "still counted as talking: {}", l.level());
    }
}

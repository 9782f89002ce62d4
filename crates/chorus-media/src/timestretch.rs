//! Time stretching of PCM without changing its pitch: WSOLA (waveform-similarity
//! overlap-add, Verhelst and Roelands 1993), the technique behind NetEq's
//! "accelerate" and "preemptive expand".
//!
//! A jitter buffer that only drops or inserts whole frames changes its delay in
//! 20 ms steps that are heard as clicks and gaps. Stretching each decoded frame a
//! little instead (0.5x to 2x, typically 0.8x-1.25x) lets the playout delay follow the
//! target smoothly: a shorter frame plays the buffer out faster (accelerate), a longer
//! one lets it fill (preemptive expand).
//!
//! How one frame of `n` input samples is stretched:
//! 0. [`TimeStretcher::stretch`] takes a ratio *range*. It estimates the frame's pitch
//!    period `T` (normalised autocorrelation over 2.5-12.5 ms) and picks the output
//!    length `len` in the range whose difference to `n` is a whole number of periods,
//!    closest to the middle of the range; unvoiced frames get the middle. Both ends
//!    of a frame are kept (step 1), so only a whole number of periods can be added or
//!    removed in phase: that is what keeps a periodic waveform's pitch.
//! 1. The output is tiled with windows of `w` samples (10 ms, smaller for tiny
//!    inputs) every `w / 2` samples. Output position `o` maps to the nominal input
//!    position `o * (n - w) / (len - w)`, so the first window starts at input 0 and
//!    the last one ends at input `n`: consecutive stretched frames join without a
//!    seam.
//! 2. Each window's actual input position is searched within ±`w / 2` of its nominal
//!    one (at least half the longest period) for the best normalised
//!    cross-correlation with the *natural continuation* of the previous window (the
//!    input that followed it). This keeps the waveform in phase across each overlap:
//!    periods are repeated or skipped whole rather than resampled. The search is coarse (every
//!    4th lag, every 4th sample) and then refined around the best coarse lag.
//! 3. Windows are Hann shaped (flat on the outer half of the first and last), added,
//!    and divided by the sum of the weights.
//!
//! Any input (silence, noise, clipped square waves, a handful of samples) gives output
//! of exactly the requested length without panicking; silence stays silence. Mono
//! only: interleaved multi-channel audio must be stretched per channel.

use crate::error::{Error, UsageError};

/// The smallest output/input ratio accepted.
pub const MIN_RATIO: f64 = 0.5;
/// The largest output/input ratio accepted.
pub const MAX_RATIO: f64 = 2.0;

/// A WSOLA time stretcher for mono 16-bit PCM at one sample rate. Keeps scratch
/// buffers between calls, so stretching a frame does not allocate once warmed up.
#[derive(Debug, Clone)]
pub struct TimeStretcher {
    rate: u32,
    window: usize,
    input: Vec<f32>,
    dec: Vec<f32>,
    dec_energy: Vec<f32>,
    acc: Vec<f32>,
    weight: Vec<f32>,
    hann: Vec<f32>,
}

impl TimeStretcher {
    /// A stretcher for audio at `sample_rate` Hz (8,000-192,000).
    pub fn new(sample_rate: u32) -> Result<Self, Error> {
        if !(8_000..=192_000).contains(&sample_rate) {
            return Err(UsageError::InvalidConfig("sample_rate must be 8000..=192000").into());
        }
        // 10 ms windows: two periods of a 200 Hz voice, and a ±5 ms search reaches an
        // in-phase position for any pitch above 100 Hz.
        let window = (sample_rate / 100) as usize & !1;
        Ok(Self {
            rate: sample_rate,
            window,
            input: Vec::new(),
            dec: Vec::new(),
            dec_energy: Vec::new(),
            acc: Vec::new(),
            weight: Vec::new(),
            hann: Vec::new(),
        })
    }

    /// Stretches `input` by a ratio (output length / input length) within
    /// `min_ratio..=max_ratio` (both in [`MIN_RATIO`]..=[`MAX_RATIO`]) into `out`
    /// (cleared first) and returns the output length.
    ///
    /// The length is chosen inside the range so that the samples added or removed are
    /// a whole number of pitch periods when the frame is voiced (a periodic waveform
    /// can then be joined in phase, which is what keeps its pitch); otherwise, or when
    /// no multiple of the period fits, the middle of the range. A range narrower than
    /// one pitch period therefore trades pitch accuracy for length.
    pub fn stretch(
        &mut self,
        input: &[i16],
        min_ratio: f64,
        max_ratio: f64,
        out: &mut Vec<i16>,
    ) -> Result<usize, Error> {
        let ok = |r: f64| (MIN_RATIO..=MAX_RATIO).contains(&r);
        if !ok(min_ratio) || !ok(max_ratio) || min_ratio > max_ratio {
            return Err(
                UsageError::InvalidConfig("stretch ratios must be 0.5..=2, min <= max").into(),
            );
        }
        let n = input.len();
        let lo = (n as f64 * min_ratio).ceil() as usize;
        let hi = ((n as f64 * max_ratio).floor() as usize).max(lo);
        let mid = (lo + hi) / 2;
        let len = match self.pitch_period(input) {
            Some(period) => {
                // The multiple of the period closest to the middle of the range.
                let change = mid.abs_diff(n);
                let k = ((change + period / 2) / period).max(1);
                let candidates = [k - 1, k, k + 1].map(|k| {
                    if mid >= n {
                        n + k * period
                    } else {
                        n.saturating_sub(k * period)
                    }
                });
                candidates
                    .into_iter()
                    .filter(|&l| (lo..=hi).contains(&l) && l != n)
                    .min_by_key(|&l| l.abs_diff(mid))
                    .unwrap_or(mid)
            }
            None => mid,
        };
        self.stretch_to(input, len, out)?;
        Ok(len)
    }

    /// The pitch period of `input` in samples (2.5-12.5 ms) when it is clearly
    /// periodic (normalised autocorrelation above 0.6), searched on a 4x decimated
    /// signal and refined at full rate.
    fn pitch_period(&mut self, input: &[i16]) -> Option<usize> {
        let min_lag = self.rate as usize / 400;
        let max_lag = (self.rate as usize / 80).min(input.len() / 2);
        if max_lag <= min_lag + 8 {
            return None;
        }
        self.load(input);
        let (x, dec, e) = (&self.input, &self.dec, &self.dec_energy);
        let n = dec.len();
        let energy = |from: usize, to: usize| {
            e.get(to).copied().unwrap_or(0.0) - e.get(from).copied().unwrap_or(0.0)
        };
        let mut best = (0.0f32, 0usize);
        for dl in min_lag.div_ceil(4)..=(max_lag / 4).min(n.saturating_sub(1)) {
            let ab = dot(
                dec.get(..n - dl).unwrap_or(&[]),
                dec.get(dl..).unwrap_or(&[]),
            );
            let norm = (energy(0, n - dl) * energy(dl, n)).sqrt();
            let c = if norm <= f32::EPSILON { 0.0 } else { ab / norm };
            // Prefer the shortest lag among near-equal peaks (not a multiple).
            if c > best.0 + 0.02 {
                best = (c, dl * 4);
            }
        }
        let coarse = best.1;
        let mut fine = (f32::MIN, coarse);
        for lag in coarse.saturating_sub(4).max(min_lag)..=(coarse + 4).min(max_lag) {
            let (a, b) = (
                x.get(..x.len() - lag).unwrap_or(&[]),
                x.get(lag..).unwrap_or(&[]),
            );
            let norm = (dot(a, a) * dot(b, b)).sqrt();
            let c = if norm <= f32::EPSILON {
                0.0
            } else {
                dot(a, b) / norm
            };
            if c > fine.0 {
                fine = (c, lag);
            }
        }
        (fine.0 > 0.6).then_some(fine.1)
    }

    /// The input as floats, its 4x decimation (sums of 4) and the decimation's
    /// running energy (prefix sums of squares), for the searches.
    fn load(&mut self, input: &[i16]) {
        self.input.clear();
        self.input.extend(input.iter().map(|&s| f32::from(s)));
        self.dec.clear();
        self.dec
            .extend(self.input.chunks_exact(4).map(|c| c.iter().sum::<f32>()));
        self.dec_energy.clear();
        self.dec_energy.push(0.0);
        let mut acc = 0.0f32;
        for &d in &self.dec {
            acc += d * d;
            self.dec_energy.push(acc);
        }
    }

    /// Stretches `input` to exactly `len` samples into `out` (cleared first). `len`
    /// must be within [`MIN_RATIO`]..=[`MAX_RATIO`] times the input length (rounded
    /// outwards).
    pub fn stretch_to(
        &mut self,
        input: &[i16],
        len: usize,
        out: &mut Vec<i16>,
    ) -> Result<(), Error> {
        let n = input.len();
        let lo = (n as f64 * MIN_RATIO).floor() as usize;
        let hi = (n as f64 * MAX_RATIO).ceil() as usize;
        if !(lo..=hi).contains(&len) {
            return Err(UsageError::InvalidConfig(
                "stretch length must be 0.5..=2 times the input",
            )
            .into());
        }
        out.clear();
        if len == n {
            out.extend_from_slice(input);
            return Ok(());
        }
        // Windows must fit both the input and the output with room to move.
        let w = self.window.min(n / 2).min(len / 2) & !1;
        if w < 8 {
            resample_linear(input, len, out);
            return Ok(());
        }
        self.load(input);
        self.acc.clear();
        self.acc.resize(len, 0.0);
        self.weight.clear();
        self.weight.resize(len, 0.0);
        if self.hann.len() != w {
            self.hann = (0..w)
                .map(|i| {
                    let x = core::f32::consts::PI * (i as f32 + 0.5) / w as f32;
                    x.sin() * x.sin()
                })
                .collect();
        }
        let hop = w / 2;
        // Half the longest pitch period (12.5 ms): enough to reach an in-phase position.
        let tol = (self.rate as usize / 160).max(hop);
        let in_span = n - w;
        let out_span = len - w;
        let mut prev: Option<usize> = None;
        let mut o = 0usize;
        loop {
            let last = o >= out_span;
            let o_pos = o.min(out_span);
            let nominal = if out_span == 0 {
                0
            } else {
                ((o_pos as u64 * in_span as u64 + out_span as u64 / 2) / out_span as u64) as usize
            };
            let pos = match prev {
                // The first and last windows are pinned to the frame's ends.
                Some(p) if !last && o_pos != 0 => {
                    self.best_position(p + hop, nominal, tol, in_span, hop)
                }
                _ => nominal,
            };
            self.add_window(pos, o_pos, w, o_pos == 0, last);
            if last {
                break;
            }
            prev = Some(pos);
            o += hop;
        }
        out.extend(self.acc.iter().zip(&self.weight).map(|(&a, &wt)| {
            let v = if wt > 1e-6 { a / wt } else { 0.0 };
            v.round().clamp(f32::from(i16::MIN), f32::from(i16::MAX)) as i16
        }));
        Ok(())
    }

    /// The input position within `[nominal - tol, nominal + tol] ∩ [0, max]` whose
    /// first half-window best matches the input at `natural` (the continuation of the
    /// previous window).
    fn best_position(
        &self,
        natural: usize,
        nominal: usize,
        tol: usize,
        max: usize,
        half: usize,
    ) -> usize {
        let (x, dec, e) = (&self.input, &self.dec, &self.dec_energy);
        let lo = nominal.saturating_sub(tol);
        let hi = (nominal + tol).min(max);
        let Some(target) = x.get(natural..natural + half) else {
            return nominal.min(max);
        };
        // The target's energy is common to all candidates: only the candidate's
        // energy normalises the score.
        let score = |cand: &[f32], t: &[f32], energy: f32| -> f32 {
            if energy <= f32::EPSILON {
                0.0
            } else {
                dot(t, cand) / energy.sqrt()
            }
        };
        // Coarse: on the decimated signal, every 4th position.
        let qh = half / 4;
        let dec_target = dec.get(natural / 4..natural / 4 + qh).unwrap_or(&[]);
        let mut best = (f32::MIN, nominal.clamp(lo, hi));
        for d in lo.div_ceil(4)..=hi / 4 {
            let Some(cand) = dec.get(d..d + qh) else {
                break;
            };
            let energy = e.get(d + qh).copied().unwrap_or(0.0) - e.get(d).copied().unwrap_or(0.0);
            let sc = score(cand, dec_target, energy);
            if sc > best.0 {
                best = (sc, d * 4);
            }
        }
        // Fine: every position around the coarse winner, at full rate.
        let mut fine = (f32::MIN, best.1);
        for p in best.1.saturating_sub(3).max(lo)..=(best.1 + 3).min(hi) {
            let Some(cand) = x.get(p..p + half) else {
                break;
            };
            let sc = score(cand, target, dot(cand, cand));
            if sc > fine.0 {
                fine = (sc, p);
            }
        }
        fine.1
    }

    fn add_window(&mut self, pos: usize, o: usize, w: usize, first: bool, last: bool) {
        let src = self.input.get(pos..pos + w).unwrap_or(&[]);
        let acc = self.acc.get_mut(o..o + w).unwrap_or(&mut []);
        let weight = self.weight.get_mut(o..o + w).unwrap_or(&mut []);
        for (i, ((a, wt), &s)) in acc.iter_mut().zip(weight).zip(src).enumerate() {
            let flat = (first && i < w / 2) || (last && i >= w / 2);
            let h = if flat {
                1.0
            } else {
                self.hann.get(i).copied().unwrap_or(0.0)
            };
            *a += h * s;
            *wt += h;
        }
    }
}

/// Sum of products over the common length, in 8 lanes so that it vectorises.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = if a.len() / 8 == b.len() / 8 {
        ca.remainder()
            .iter()
            .zip(cb.remainder())
            .map(|(x, y)| x * y)
            .sum()
    } else {
        0.0
    };
    let mut acc = [0.0f32; 8];
    for (x, y) in ca.zip(cb) {
        for ((s, p), q) in acc.iter_mut().zip(x).zip(y) {
            *s += p * q;
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Linear interpolation, for inputs too short to hold two windows.
fn resample_linear(input: &[i16], len: usize, out: &mut Vec<i16>) {
    let n = input.len();
    if n == 0 {
        out.resize(len, 0);
        return;
    }
    for i in 0..len {
        let x = if len > 1 {
            i as f64 * (n - 1) as f64 / (len - 1) as f64
        } else {
            0.0
        };
        let j = x.floor() as usize;
        let f = x - j as f64;
        let a = f64::from(input.get(j).copied().unwrap_or(0));
        let b = f64::from(
            input
                .get(j + 1)
                .copied()
                .unwrap_or(input.get(j).copied().unwrap_or(0)),
        );
        out.push((a + (b - a) * f).round() as i16);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;

    fn sine(freq: f64, rate: u32, samples: usize, phase0: usize) -> Vec<i16> {
        (phase0..phase0 + samples)
            .map(|i| {
                (8000.0 * (core::f64::consts::TAU * freq * i as f64 / f64::from(rate)).sin()) as i16
            })
            .collect()
    }

    /// Frequency from the first autocorrelation peak between 1 ms and 20 ms, refined by
    /// parabolic interpolation.
    fn estimate_frequency(x: &[i16], rate: u32) -> f64 {
        let x: Vec<f64> = x.iter().map(|&s| f64::from(s)).collect();
        let (lo, hi) = (rate as usize / 1000, rate as usize / 50);
        let r = |lag: usize| -> f64 {
            x.iter().zip(&x[lag..]).map(|(a, b)| a * b).sum::<f64>() / (x.len() - lag) as f64
        };
        let rs: Vec<f64> = (lo - 1..=hi + 1).map(r).collect();
        // The first local maximum above 80 % of the zero-lag energy is the period.
        let r0 = r(0);
        let mut best = None;
        for i in 1..rs.len() - 1 {
            if rs[i] > rs[i - 1] && rs[i] >= rs[i + 1] && rs[i] > 0.8 * r0 {
                best = Some(i);
                break;
            }
        }
        let i = best.expect("a periodic signal");
        let (a, b, c) = (rs[i - 1], rs[i], rs[i + 1]);
        let delta = 0.5 * (a - c) / (a - 2.0 * b + c);
        f64::from(rate) / ((lo - 1 + i) as f64 + delta)
    }

    #[test]
    fn output_length_is_as_requested() {
        let mut ts = TimeStretcher::new(48_000).unwrap();
        let voiced = sine(220.0, 48_000, 960, 0);
        let mut rng = crate::netsim::SimRng::new(7);
        let noise: Vec<i16> = (0..960).map(|_| rng.next_u64() as i16).collect();
        let mut out = Vec::new();
        for input in [&voiced, &noise] {
            for (lo, hi) in [
                (0.5, 0.9),
                (0.7, 0.8),
                (0.9, 0.95),
                (1.05, 1.1),
                (1.1, 1.5),
                (1.0, 2.0),
            ] {
                let len = ts.stretch(input, lo, hi, &mut out).unwrap();
                assert_eq!(out.len(), len);
                assert!(
                    (960.0 * lo..=960.0 * hi).contains(&(len as f64)),
                    "{lo}-{hi}: {len}"
                );
            }
        }
        // Voiced: a whole number of periods (218.18 samples) removed or added.
        let len = ts.stretch(&voiced, 0.5, 0.9, &mut out).unwrap();
        let periods = (960.0 - len as f64) / (48_000.0 / 220.0);
        assert!((periods - periods.round()).abs() < 0.03, "{len}");
        // Noise: the middle of the range.
        assert_eq!(ts.stretch(&noise, 0.7, 0.8, &mut out).unwrap(), 720);
        for len in [480, 777, 960, 1920] {
            ts.stretch_to(&voiced, len, &mut out).unwrap();
            assert_eq!(out.len(), len);
        }
        assert!(ts.stretch(&voiced, 0.3, 0.9, &mut out).is_err());
        assert!(ts.stretch(&voiced, f64::NAN, 1.0, &mut out).is_err());
        assert!(ts.stretch(&voiced, 1.2, 1.1, &mut out).is_err());
        assert!(ts.stretch_to(&voiced, 2000, &mut out).is_err());
    }

    #[test]
    fn a_stretched_sine_keeps_its_pitch() {
        let rate = 48_000;
        let mut ts = TimeStretcher::new(rate).unwrap();
        // Each range is wider than the period, as the contract asks.
        let wide = [(0.5, 0.95), (1.05, 1.6)];
        let narrow = [(0.6, 0.9), (0.75, 0.9), (1.1, 1.4), (1.1, 1.25)];
        for (freq, ranges) in [
            (110.0, &wide[..]),
            (180.0, &narrow[..1]),
            (180.0, &narrow[2..3]),
            (300.0, &narrow[..]),
            (440.0, &narrow[..]),
        ] {
            for &(lo, hi) in ranges {
                // Twenty consecutive 20 ms frames, each stretched, joined.
                let mut joined = Vec::new();
                let mut out = Vec::new();
                for f in 0..20 {
                    let frame = sine(freq, rate, 960, 960 * f);
                    ts.stretch(&frame, lo, hi, &mut out).unwrap();
                    joined.extend_from_slice(&out);
                }
                // A third of a second spans several stretched frames and their joins.
                let got = estimate_frequency(&joined[..joined.len().min(16_000)], rate);
                eprintln!(
                    "{freq} Hz by {lo}-{hi}: {got:.1} Hz, {} samples",
                    joined.len()
                );
                assert!(
                    (got / freq - 1.0).abs() < 0.03,
                    "{freq} Hz stretched by {lo}-{hi}: {got:.1} Hz"
                );
            }
        }
    }

    #[test]
    fn silence_stays_silence_and_frame_edges_are_kept() {
        let mut ts = TimeStretcher::new(16_000).unwrap();
        let mut out = Vec::new();
        ts.stretch(&[0; 320], 1.2, 1.5, &mut out).unwrap();
        assert!(out.iter().all(|&s| s == 0));
        ts.stretch(&[0; 320], 0.5, 0.8, &mut out).unwrap();
        assert!(out.iter().all(|&s| s == 0));
        let input = sine(200.0, 16_000, 320, 0);
        ts.stretch(&input, 0.6, 0.8, &mut out).unwrap();
        // The pinned first and last windows: the joins to neighbouring frames.
        assert_eq!(out[0], input[0]);
        assert_eq!(out[out.len() - 1], input[input.len() - 1]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn never_panics_and_always_hits_the_range(
            input in vec(any::<i16>(), 0..3000),
            a in MIN_RATIO..=MAX_RATIO,
            b in MIN_RATIO..=MAX_RATIO,
            rate in prop::sample::select(vec![8_000u32, 16_000, 48_000]),
        ) {
            let (lo, hi) = (a.min(b), a.max(b));
            let mut ts = TimeStretcher::new(rate).unwrap();
            let mut out = Vec::new();
            let len = ts.stretch(&input, lo, hi, &mut out).unwrap();
            prop_assert_eq!(out.len(), len);
            let n = input.len() as f64;
            prop_assert!(len as f64 >= (n * lo).ceil().min((n * hi).floor()) && len as f64 <= (n * hi).floor().max((n * lo).ceil()));
        }
    }
}

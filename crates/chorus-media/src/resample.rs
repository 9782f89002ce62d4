//! Streaming sample-rate conversion by windowed-sinc interpolation, for PCM that
//! arrives at another rate than the one it is mixed or encoded at (a 44.1 kHz
//! microphone, an 8 kHz gateway leg). Opus streams never need it: libopus decodes to
//! any of its rates directly.
//!
//! Output sample `n` lies at input time `t = n * from / to` and is the input
//! convolved there with a Blackman-windowed sinc whose cut-off sits just under the
//! lower of the two Nyquist frequencies (so downsampling does not alias and
//! upsampling leaves no images). The kernel spans 16 input samples each side when
//! upsampling, proportionally more when downsampling (the transition band scales
//! with the cut-off). It is centred: no phase shift, at the cost of a look-ahead of
//! that half-width, so a call produces the outputs whose whole kernel has arrived
//! and [`Resampler::flush`] produces the rest as if zeros followed. Coefficients are
//! tabulated per phase of the rational ratio `to/from` (up to [`MAX_PHASES`]; a
//! ratio with more phases uses the nearest tabulated one), so each output sample
//! costs one multiply-add per tap and no trigonometry.
//!
//! Feeding the input in any pieces gives exactly the output of feeding it at once.
//!
//! ```
//! use chorus_media::resample::Resampler;
//!
//! // 10 ms of a 440 Hz tone at 44.1 kHz, to 48 kHz.
//! let tone: Vec<i16> = (0..441)
//!     .map(|i| (8000.0 * (i as f64 * 440.0 * std::f64::consts::TAU / 44_100.0).sin()) as i16)
//!     .collect();
//! let mut r = Resampler::new(44_100, 48_000, 1)?;
//! let mut out = Vec::new();
//! r.process(&tone, &mut out);
//! r.flush(&mut out);
//! assert_eq!(out.len(), 480);
//! # Ok::<(), chorus_media::Error>(())
//! ```
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic
    )
)]

use std::collections::VecDeque;

use crate::error::{Error, UsageError};

/// Most coefficient phases tabulated (32 KiB of f32 per 8 taps).
pub const MAX_PHASES: usize = 1024;
/// Kernel half-width in input samples when upsampling.
const HALF: usize = 16;
/// Kernel half-width at most (downsampling by more than 8 keeps this width).
const MAX_HALF: usize = 128;

/// A streaming resampler of interleaved 16-bit PCM. See the module docs.
#[derive(Debug, Clone)]
pub struct Resampler {
    channels: usize,
    /// Output sample n lies at input n * down / up.
    up: u64,
    down: u64,
    half: usize,
    phases: usize,
    /// `phases` rows of `2 * half` taps: row p, tap i weighs input
    /// `floor(t) - half + 1 + i` for an output at fractional position p / phases.
    coeffs: Vec<f32>,
    /// Input frames not yet out of reach, oldest first, one queue per channel (so
    /// that each output sample is one contiguous dot product); `base` is the
    /// absolute index of the first.
    input: Vec<VecDeque<f32>>,
    base: u64,
    /// Input frames received in all.
    received: u64,
    /// The next output frame's index.
    next: u64,
}

const fn gcd(a: u64, b: u64) -> u64 {
    let (mut a, mut b) = (a, b);
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

impl Resampler {
    /// A resampler from `from` Hz to `to` Hz for `channels` interleaved channels.
    ///
    /// # Errors
    /// [`UsageError::InvalidConfig`] for a zero rate, zero or more than 8 channels,
    /// or rates above 384 kHz.
    pub fn new(from: u32, to: u32, channels: usize) -> Result<Self, Error> {
        if from == 0 || to == 0 || from > 384_000 || to > 384_000 {
            return Err(UsageError::InvalidConfig("resampler rates must be 1-384,000 Hz").into());
        }
        if !(1..=8).contains(&channels) {
            return Err(UsageError::InvalidConfig("resampler channels must be 1-8").into());
        }
        let g = gcd(u64::from(from), u64::from(to));
        let (up, down) = (u64::from(to) / g, u64::from(from) / g);
        let ratio = f64::from(to) / f64::from(from);
        let half = if ratio >= 1.0 {
            HALF
        } else {
            ((HALF as f64 / ratio).ceil() as usize).min(MAX_HALF)
        };
        // In input cycles per sample: just under the lower Nyquist frequency.
        let cutoff = 0.95 * ratio.min(1.0);
        let phases = usize::try_from(up).unwrap_or(MAX_PHASES).min(MAX_PHASES);
        let taps = 2 * half;
        let mut coeffs = Vec::with_capacity(phases * taps);
        for p in 0..phases {
            let frac = p as f64 / phases as f64;
            for i in 0..taps {
                // Distance from the output instant to the tap's input sample.
                let d = frac + (half - 1) as f64 - i as f64;
                let arg = std::f64::consts::PI * cutoff * d;
                let sinc = if arg.abs() < 1e-12 {
                    1.0
                } else {
                    arg.sin() / arg
                };
                let w = d / half as f64;
                let window = if w.abs() >= 1.0 {
                    0.0
                } else {
                    let x = std::f64::consts::PI * (w + 1.0);
                    0.42 - 0.5 * x.cos() + 0.08 * (2.0 * x).cos()
                };
                coeffs.push((cutoff * sinc * window) as f32);
            }
        }
        Ok(Self {
            channels,
            up,
            down,
            half,
            phases,
            coeffs,
            input: vec![VecDeque::new(); channels],
            base: 0,
            received: 0,
            next: 0,
        })
    }

    /// Output frames for `frames` input frames, rounded down.
    #[must_use]
    pub const fn output_frames(&self, frames: u64) -> u64 {
        frames * self.up / self.down
    }

    /// Appends `input` (interleaved; a trailing partial frame is ignored) and writes
    /// to `out` every output frame whose kernel it completes.
    pub fn process(&mut self, input: &[i16], out: &mut Vec<i16>) {
        let frames = input.len() / self.channels;
        for frame in input.chunks_exact(self.channels) {
            for (queue, &x) in self.input.iter_mut().zip(frame) {
                queue.push_back(f32::from(x));
            }
        }
        self.received += frames as u64;
        self.emit(false, out);
    }

    /// Writes the remaining output frames, as if silence followed the input: in all,
    /// [`Resampler::output_frames`] of the input frames received. The resampler then
    /// starts afresh.
    pub fn flush(&mut self, out: &mut Vec<i16>) {
        self.emit(true, out);
        self.input.iter_mut().for_each(VecDeque::clear);
        (self.base, self.received, self.next) = (0, 0, 0);
    }

    fn emit(&mut self, flush: bool, out: &mut Vec<i16>) {
        let total = self.output_frames(self.received);
        let half = self.half as u64;
        let taps = 2 * self.half;
        for queue in &mut self.input {
            queue.make_contiguous();
        }
        while self.next < total {
            let pos = self.next * self.down;
            let k = pos / self.up;
            // The kernel reaches input k + half; wait for it unless flushing.
            if !flush && k + half >= self.received {
                break;
            }
            let phase = ((pos % self.up) * self.phases as u64 / self.up) as usize;
            let row = self
                .coeffs
                .get(phase * taps..(phase + 1) * taps)
                .unwrap_or_default();
            // Taps from the first input sample (before it: zeros) to the last one
            // received (after it, when flushing: zeros).
            let first = (k + 1).saturating_sub(half);
            let last = (k + half).min(self.received.saturating_sub(1));
            let skip = half.saturating_sub(k + 1) as usize;
            let n = (last + 1).saturating_sub(first) as usize;
            let row = row.get(skip..skip + n).unwrap_or_default();
            let at = first.saturating_sub(self.base) as usize;
            for queue in &self.input {
                let samples = queue.as_slices().0.get(at..at + n).unwrap_or_default();
                let acc = dot(row, samples);
                out.push(acc.round().clamp(-32_768.0, 32_767.0) as i16);
            }
            self.next += 1;
        }
        // Inputs below the next output's kernel are no longer needed.
        let keep_from = ((self.next * self.down) / self.up + 1).saturating_sub(half);
        let drop = keep_from
            .saturating_sub(self.base)
            .min(self.received - self.base);
        for queue in &mut self.input {
            queue.drain(..(drop as usize).min(queue.len()));
        }
        self.base += drop;
    }
}

/// The dot product of two equally long slices, in eight independent lanes (which
/// the compiler turns into vector instructions; a single running sum would have to
/// stay in order).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let (a8, a_rest) = a.as_chunks::<8>();
    let (b8, b_rest) = b.as_chunks::<8>();
    let mut lanes = [0.0f32; 8];
    for (x, y) in a8.iter().zip(b8) {
        for ((l, p), q) in lanes.iter_mut().zip(x).zip(y) {
            *l += p * q;
        }
    }
    let tail: f32 = a_rest.iter().zip(b_rest).map(|(p, q)| p * q).sum();
    lanes.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quality::tone;
    use proptest::prelude::*;

    fn all(from: u32, to: u32, channels: usize, input: &[i16]) -> Vec<i16> {
        let mut r = Resampler::new(from, to, channels).unwrap();
        let mut out = Vec::new();
        r.process(input, &mut out);
        r.flush(&mut out);
        out
    }

    /// Root-mean-square error against the ideal tone, over the middle (the kernel's
    /// reach from either end excluded), relative to the tone's RMS, in dB.
    fn error_db(out: &[i16], to: u32, hz: f64, channels: usize, edge: usize) -> f64 {
        let frames = out.len() / channels;
        let (mut err, mut n) = (0.0, 0);
        for i in edge..frames - edge {
            let ideal = 8000.0 * (i as f64 * hz * std::f64::consts::TAU / f64::from(to)).sin();
            for ch in 0..channels {
                err += (f64::from(out[i * channels + ch]) - ideal).powi(2);
                n += 1;
            }
        }
        10.0 * ((err / f64::from(n)) / (8000.0f64.powi(2) / 2.0)).log10()
    }

    #[test]
    fn tones_keep_their_shape_at_common_rates() {
        for (from, to) in [
            (44_100, 48_000),
            (16_000, 48_000),
            (8_000, 48_000),
            (48_000, 16_000),
            (48_000, 44_100),
            (32_000, 48_000),
            (22_050, 48_000),
        ] {
            let input = tone(from, 1000.0, from as usize / 10, 2);
            let out = all(from, to, 2, &input);
            assert_eq!(out.len(), to as usize / 10 * 2, "{from} -> {to}");
            let e = error_db(&out, to, 1000.0, 2, to as usize / 100);
            assert!(e < -50.0, "{from} -> {to}: {e:.1} dB");
        }
    }

    #[test]
    fn downsampling_removes_what_the_new_rate_cannot_carry() {
        // 7 kHz at 48 kHz to 8 kHz: above the new Nyquist frequency, it would alias
        // to 1 kHz; the filter takes it out.
        let input = tone(48_000, 7_000.0, 4_800, 1);
        let out = all(48_000, 8_000, 1, &input);
        let rms = (out[100..700]
            .iter()
            .map(|&s| f64::from(s).powi(2))
            .sum::<f64>()
            / 600.0)
            .sqrt();
        let db = 20.0 * (rms / (8000.0 / 2f64.sqrt())).log10();
        assert!(db < -50.0, "aliased tone at {db:.1} dB");
    }

    #[test]
    fn an_odd_ratio_uses_the_nearest_phase() {
        let r = Resampler::new(44_101, 48_000, 1).unwrap();
        assert_eq!(r.phases, MAX_PHASES);
        let input = tone(44_101, 500.0, 4_410, 1);
        let out = all(44_101, 48_000, 1, &input);
        assert!(error_db(&out, 48_000, 500.0, 1, 500) < -45.0);
    }

    #[test]
    fn invalid_settings_are_refused() {
        assert!(Resampler::new(0, 48_000, 1).is_err());
        assert!(Resampler::new(48_000, 48_000, 0).is_err());
        assert!(Resampler::new(48_000, 400_000, 1).is_err());
    }

    proptest! {
        /// Arbitrary samples at arbitrary rates: never a panic, and the length the
        /// ratio says.
        #[test]
        fn any_input_any_rates(
            input in proptest::collection::vec(any::<i16>(), 0..3_000),
            from in 1_000u32..=96_000,
            to in 1_000u32..=96_000,
        ) {
            let out = all(from, to, 1, &input);
            prop_assert_eq!(out.len() as u64, input.len() as u64 * u64::from(to) / u64::from(from));
        }

        /// Any split of the input gives the output of feeding it at once.
        #[test]
        fn pieces_equal_the_whole(
            rates in proptest::sample::select(vec![(44_100u32, 48_000u32), (48_000, 8_000), (16_000, 48_000), (48_000, 48_000)]),
            cuts in proptest::collection::vec(0usize..700, 0..8),
            channels in 1usize..3,
        ) {
            let (from, to) = rates;
            let input = tone(from, 300.0, 2_000, channels);
            let whole = all(from, to, channels, &input);
            let mut r = Resampler::new(from, to, channels).unwrap();
            let mut pieces = Vec::new();
            let mut rest = &input[..];
            for c in cuts {
                let n = (c * channels).min(rest.len());
                r.process(&rest[..n], &mut pieces);
                rest = &rest[n..];
            }
            r.process(rest, &mut pieces);
            r.flush(&mut pieces);
            prop_assert_eq!(whole, pieces);
        }
    }
}

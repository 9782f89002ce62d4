//! Test speech generated at run time and a Rust-side objective quality measure, shared by
//! the integration tests and the `media-quality` example (no audio files in git, no
//! Python needed for the test suite).

/// A speech-like signal: syllables of a harmonic series (`harmonics` partials) whose
/// pitch glides between 110 and 220 Hz, with a moving formant-like emphasis; 16-bit
/// samples at `rate` Hz.
#[must_use]
pub fn synthetic_speech(rate: u32, samples: usize, harmonics: u32) -> Vec<i16> {
    let mut phase = 0.0f64;
    (0..samples)
        .map(|i| {
            let t = i as f64 / f64::from(rate);
            let syllable = t % 0.35;
            let env = if syllable < 0.25 {
                (std::f64::consts::PI * syllable / 0.25).sin()
            } else {
                0.0
            };
            let pitch = 165.0 + 55.0 * (t * 0.7).sin();
            phase += std::f64::consts::TAU * pitch / f64::from(rate);
            let formant = 700.0 + 400.0 * (t * 1.3).sin();
            let s: f64 = (1..=harmonics)
                .map(|h| {
                    let f = pitch * f64::from(h);
                    let gain = 1.0 / (1.0 + ((f - formant) / 300.0).powi(2));
                    gain * (phase * f64::from(h)).sin()
                })
                .sum();
            (6000.0 * env * s) as i16
        })
        .collect()
}

/// A sine tone of `hz` at amplitude 8,000 (about -12 dBFS), `frames` sample frames
/// at `rate`, the same sample in each of `channels` interleaved channels: the probe
/// of resampling and mixing tests.
#[must_use]
pub fn tone(rate: u32, hz: f64, frames: usize, channels: usize) -> Vec<i16> {
    (0..frames)
        .flat_map(|i| {
            let s =
                (8000.0 * (i as f64 * hz * std::f64::consts::TAU / f64::from(rate)).sin()) as i16;
            std::iter::repeat_n(s, channels)
        })
        .collect()
}

/// Segmental SNR in dB: the mean per-frame SNR of `test` against `reference` over the
/// frames of `frame` samples where the reference is not silent, each clamped to
/// [-10, 35] dB. 0 when no frame qualifies.
#[must_use]
pub fn segmental_snr(reference: &[i16], test: &[i16], frame: usize) -> f64 {
    let (mut total, mut frames) = (0.0, 0u32);
    for (r, t) in reference
        .chunks_exact(frame.max(1))
        .zip(test.chunks_exact(frame.max(1)))
    {
        let signal: f64 = r.iter().map(|&x| f64::from(x).powi(2)).sum();
        if signal < 1e5 * frame as f64 {
            continue;
        }
        let noise: f64 = r
            .iter()
            .zip(t)
            .map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2))
            .sum();
        total += (10.0 * (signal / noise.max(1.0)).log10()).clamp(-10.0, 35.0);
        frames += 1;
    }
    total / f64::from(frames.max(1))
}

/// Segmental SNR of `output` against `input` after aligning each `frame`-sample block
/// of `output` to `input`, skipping the first `skip` samples of the output.
///
/// A receiver's playout delay changes during a call (time stretching, concealment,
/// jitter-buffer moves; on a starved CPU by hundreds of milliseconds), so one global
/// lag would not do. Each block's lag is tracked within ±25 ms of the previous block's
/// (a stretched frame moves it by at most 10 ms, a concealed gap by 20 ms), kept unless
/// another correlates clearly better so that silence does not wander; where the
/// tracked lag stops matching audible output, the lag is searched again over the whole
/// range of 0-1 s (on a decimated copy, then refined), and taken when it matches.
#[must_use]
pub fn aligned_segmental_snr(
    input: &[i16],
    output: &[i16],
    rate: u32,
    frame: usize,
    skip: usize,
) -> f64 {
    let reference = align(input, output, rate as usize, frame.max(1));
    let skip = skip.min(reference.len());
    let end = reference.len().min(output.len());
    segmental_snr(
        reference.get(skip..end).unwrap_or_default(),
        output.get(skip..end).unwrap_or_default(),
        frame,
    )
}

/// `input` delayed block by block to line up with `output` (see
/// [`aligned_segmental_snr`]); as long as `output` rounded down to whole blocks.
fn align(input: &[i16], output: &[i16], rate: usize, frame: usize) -> Vec<i16> {
    let coarse = Decimated::new(input, output, rate);
    let reach = rate / 1000 * 25 / coarse.step;
    let mut lag = 0;
    let mut searched_at: Option<usize> = None;
    let mut reference = Vec::with_capacity(output.len());
    for start in (0..output.len().saturating_sub(frame)).step_by(frame) {
        // Candidates from the decimated copy (the three best lags within reach, a tenth
        // of the work of searching at full rate), each refined and compared at full
        // rate: decimation blurs the peaks of voiced speech, which repeat every pitch
        // period, so the decimated copy alone picks the wrong period.
        let full = |l| normalized_correlation(input, output, l, start, frame);
        let (d_start, d_len, d_lag) = (start / coarse.step, frame / coarse.step, lag / coarse.step);
        let mut candidates: Vec<(f64, usize)> = (d_lag.saturating_sub(reach)..=d_lag + reach)
            .map(|l| {
                let c = normalized_correlation(&coarse.input, &coarse.output, l, d_start, d_len);
                (c, l)
            })
            .collect();
        candidates.sort_unstable_by(|x, y| y.0.total_cmp(&x.0));
        let mut best = (full(lag), lag);
        for &(_, l) in candidates.iter().take(3) {
            let l = refine(input, output, l * coarse.step, coarse.step, start, frame);
            let c = full(l);
            if c > best.0 * 1.05 + 1.0 {
                best = (c, l);
            }
        }
        for l in [best.1.saturating_sub(1), best.1 + 1] {
            let c = full(l);
            if c > best.0 {
                best = (c, l);
            }
        }
        lag = best.1;
        // Lost track: the output is audible but the tracked lag does not explain it.
        // Searched again at most every 100 ms, so a block nothing matches (another
        // voice, noise) costs one wide search, not one per block.
        // The first audible block is searched for in any case: the lag is unknown.
        let due = searched_at.is_none_or(|at| start >= at + rate / 10);
        let lost = searched_at.is_none() || coefficient(input, output, lag, start, frame) < 0.6;
        if due && lost && audible(&output[start..start + frame]) {
            searched_at = Some(start);
            if let Some((_, l)) = coarse.search(start).filter(|&(rho, _)| rho > 0.7) {
                lag = refine(input, output, l, coarse.step, start, frame);
            }
        }
        reference.extend((start..start + frame).map(|i| {
            i.checked_sub(lag)
                .and_then(|j| input.get(j))
                .copied()
                .unwrap_or(0)
        }));
    }
    reference
}

/// The lag within `reach` samples of `lag` that best lines `input` up with the block
/// of `output` at `start`.
fn refine(
    input: &[i16],
    output: &[i16],
    lag: usize,
    reach: usize,
    start: usize,
    frame: usize,
) -> usize {
    (lag.saturating_sub(reach)..=lag + reach)
        .map(|l| (normalized_correlation(input, output, l, start, frame), l))
        .fold((f64::MIN, lag), |b, c| if c.0 > b.0 { c } else { b })
        .1
}

/// Whether a block is louder than about -50 dBFS.
fn audible(block: &[i16]) -> bool {
    let energy: f64 = block.iter().map(|&x| f64::from(x).powi(2)).sum();
    energy > 1e5 * block.len() as f64
}

/// Both signals averaged over `step` samples (about 4 kHz), for searching lags at a
/// small fraction of the cost.
struct Decimated {
    input: Vec<i16>,
    output: Vec<i16>,
    step: usize,
    max_lag: usize,
    window: usize,
}

impl Decimated {
    fn new(input: &[i16], output: &[i16], rate: usize) -> Self {
        let step = (rate / 4000).max(1);
        let decimate = |s: &[i16]| -> Vec<i16> {
            s.chunks(step)
                .map(|c| (c.iter().map(|&x| i64::from(x)).sum::<i64>() / c.len() as i64) as i16)
                .collect()
        };
        Self {
            input: decimate(input),
            output: decimate(output),
            step,
            max_lag: rate / step,
            window: rate / 5 / step,
        }
    }

    /// The lag (in samples of the full rate) and correlation coefficient that best
    /// explain the 200 ms of output from `start`, searched over 0-1 s.
    fn search(&self, start: usize) -> Option<(f64, usize)> {
        let start = start / self.step;
        // Output can only follow what was said: lags past the window's middle would
        // compare it with less than half a window of input.
        (0..=self.max_lag.min(start + self.window / 2))
            .map(|l| {
                (
                    coefficient(&self.input, &self.output, l, start, self.window),
                    l,
                )
            })
            .filter(|c| c.0 > 0.0)
            .fold(None, |best: Option<(f64, usize)>, c| match best {
                Some(b) if b.0 >= c.0 => Some(b),
                _ => Some(c),
            })
            .map(|(rho, l)| (rho, l * self.step))
    }
}

/// Correlation of `output[start..start + len]` with `input` delayed by `lag`,
/// normalised by the input's energy over the same span.
fn normalized_correlation(
    input: &[i16],
    output: &[i16],
    lag: usize,
    start: usize,
    len: usize,
) -> f64 {
    let (xy, xx, _) = products(input, output, lag, start, len);
    xy / xx.sqrt().max(1.0)
}

/// Correlation coefficient (-1 to 1) of `output[start..start + len]` with `input`
/// delayed by `lag`: how well the lag explains the output, whatever its loudness.
fn coefficient(input: &[i16], output: &[i16], lag: usize, start: usize, len: usize) -> f64 {
    let (xy, xx, yy) = products(input, output, lag, start, len);
    xy / (xx * yy).sqrt().max(1.0)
}

/// Sums of input x output, input² and output² over `output[start..start + len]`
/// against `input` delayed by `lag` (the part of the span both signals cover).
fn products(
    input: &[i16],
    output: &[i16],
    lag: usize,
    start: usize,
    len: usize,
) -> (f64, f64, f64) {
    let lo = start.max(lag);
    let hi = (start + len).min(output.len()).min(input.len() + lag);
    let (mut xy, mut xx, mut yy) = (0i64, 0i64, 0i64);
    if lo < hi {
        let pairs = input.get(lo - lag..hi - lag).unwrap_or_default().iter();
        for (&x, &y) in pairs.zip(output.get(lo..hi).unwrap_or_default()) {
            xy += i64::from(x) * i64::from(y);
            xx += i64::from(x) * i64::from(x);
            yy += i64::from(y) * i64::from(y);
        }
    }
    (xy as f64, xx as f64, yy as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_signals_score_the_cap_and_noise_lowers_it() {
        let speech = synthetic_speech(16_000, 16_000, 12);
        assert!(speech.iter().any(|&s| s.unsigned_abs() > 1000), "audible");
        assert_eq!(segmental_snr(&speech, &speech, 320), 35.0);
        let noisy: Vec<i16> = speech
            .iter()
            .enumerate()
            .map(|(i, &s)| s.saturating_add(if i % 2 == 0 { 300 } else { -300 }))
            .collect();
        let snr = segmental_snr(&speech, &noisy, 320);
        assert!(snr < 35.0 && snr > 0.0, "{snr}");
        assert_eq!(segmental_snr(&[0; 640], &[0; 640], 320), 0.0, "all silent");
    }

    #[test]
    fn alignment_finds_a_delay_and_tells_other_speech_apart() {
        let speech = synthetic_speech(16_000, 32_000, 12);
        // Played out 73 ms late, the first 73 ms silence.
        let late: Vec<i16> = std::iter::repeat_n(0, 1168)
            .chain(speech.iter().copied())
            .collect();
        let snr = aligned_segmental_snr(&speech, &late, 16_000, 320, 0);
        assert!(snr > 30.0, "{snr}");
        // Another voice (the same generator 9 % higher) scores nowhere near.
        let other = synthetic_speech(14_700, 32_000, 12);
        let wrong = aligned_segmental_snr(&other, &late, 16_000, 320, 0);
        assert!(wrong < 3.0, "{wrong}");
    }

    /// A starved receiver (seen on a loaded CI machine) lets its playout delay swing
    /// from 80 ms to 600 ms and back to 370 ms within one call.
    #[test]
    fn alignment_follows_a_delay_that_jumps_by_hundreds_of_milliseconds() {
        let rate = 16_000;
        let speech = synthetic_speech(rate, 5 * 16_000, 12);
        let ms = |m: usize| m * 16;
        // Output second by second, each from the input at its own delay, with the
        // gaps a jitter buffer plays as silence.
        let mut out = Vec::new();
        for (second, delay) in [80, 80, 600, 370, 370].into_iter().enumerate() {
            let from = ms(1000 * second);
            out.resize(from, 0);
            out.extend((from..from + ms(1000)).map(|i| {
                i.checked_sub(ms(delay))
                    .and_then(|j| speech.get(j))
                    .copied()
                    .unwrap_or(0)
            }));
        }
        let snr = aligned_segmental_snr(&speech, &out, rate, 320, 0);
        assert!(snr > 25.0, "{snr}");
        let other = synthetic_speech(14_700, 5 * 16_000, 12);
        let wrong = aligned_segmental_snr(&other, &out, rate, 320, 0);
        assert!(wrong < 3.0, "{wrong}");
    }
}

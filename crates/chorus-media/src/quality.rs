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
/// jitter-buffer moves), so one global lag would not do: the first lag is searched
/// over 0-250 ms on half a second of speech, then each block's lag within ±25 ms of the
/// previous block's (a stretched frame moves it by at most 10 ms, a concealed gap by
/// 20 ms), kept unless another correlates clearly better (so silence does not wander).
#[must_use]
pub fn aligned_segmental_snr(
    input: &[i16],
    output: &[i16],
    rate: u32,
    frame: usize,
    skip: usize,
) -> f64 {
    let rate = rate as usize;
    let frame = frame.max(1);
    let window = |l: usize| normalized_correlation(input, output, l, rate / 2, rate / 2);
    let best_of = |lags: &mut dyn Iterator<Item = usize>| {
        lags.map(|l| (window(l), l))
            .fold((f64::MIN, 0), |best, c| if c.0 > best.0 { c } else { best })
            .1
    };
    let coarse = best_of(&mut (0..rate / 4).step_by(4));
    let mut lag = best_of(&mut (coarse.saturating_sub(4)..=coarse + 4));
    let mut reference = Vec::with_capacity(output.len());
    let reach = rate / 1000 * 25;
    for start in (0..output.len().saturating_sub(frame)).step_by(frame) {
        let mut best = (
            normalized_correlation(input, output, lag, start, frame),
            lag,
        );
        for l in (lag.saturating_sub(reach)..=lag + reach).step_by(2) {
            let c = normalized_correlation(input, output, l, start, frame);
            if c > best.0 * 1.05 + 1.0 {
                best = (c, l);
            }
        }
        for l in [best.1.saturating_sub(1), best.1 + 1] {
            let c = normalized_correlation(input, output, l, start, frame);
            if c > best.0 {
                best = (c, l);
            }
        }
        lag = best.1;
        reference.extend((start..start + frame).map(|i| {
            i.checked_sub(lag)
                .and_then(|j| input.get(j))
                .copied()
                .unwrap_or(0)
        }));
    }
    let skip = skip.min(reference.len());
    let end = reference.len().min(output.len());
    segmental_snr(
        reference.get(skip..end).unwrap_or_default(),
        output.get(skip..end).unwrap_or_default(),
        frame,
    )
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
    let lo = start.max(lag);
    let hi = (start + len).min(output.len()).min(input.len() + lag);
    if lo >= hi {
        return 0.0;
    }
    let (mut xy, mut xx) = (0i64, 0i64);
    let pairs = input.get(lo - lag..hi - lag).unwrap_or_default().iter();
    for (&x, &y) in pairs.zip(output.get(lo..hi).unwrap_or_default()) {
        xy += i64::from(x) * i64::from(y);
        xx += i64::from(x) * i64::from(x);
    }
    xy as f64 / (xx as f64).sqrt().max(1.0)
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
}

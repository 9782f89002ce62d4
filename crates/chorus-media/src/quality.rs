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
}

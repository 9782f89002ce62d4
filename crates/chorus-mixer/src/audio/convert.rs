//! PCM fed to the mixer directly (the initiator's microphone, a gateway leg) arrives at
//! its own sample rate and channel count; this turns it into the mixing format.
//! Channels first (stereo to mono by averaging, mono to stereo by copying), then
//! chorus-media's streaming windowed-sinc resampler (`chorus_media::resample`), which
//! carries its state across calls, so frame boundaries leave no seam, and filters
//! what the other rate cannot carry. Opus streams never come through here: libopus
//! decodes them straight to the mixing rate.

use std::collections::VecDeque;

use chorus_media::resample::Resampler;

/// Converts interleaved PCM from `(from, in_channels)` to `(to, out_channels)`.
#[derive(Debug, Clone)]
pub(crate) struct Converter {
    from: u32,
    in_channels: usize,
    out_channels: usize,
    /// `None` when the rates are equal.
    resampler: Option<Resampler>,
    /// Reused buffers: the input in output channels, and the resampled frames.
    mapped: Vec<i16>,
    resampled: Vec<i16>,
}

impl Converter {
    /// Channel counts are 1 or 2 (checked by the caller).
    ///
    /// # Errors
    /// As [`Resampler::new`]: rates the resampler refuses.
    pub(crate) fn new(
        from: u32,
        in_channels: usize,
        to: u32,
        out_channels: usize,
    ) -> Result<Self, chorus_media::Error> {
        let resampler = (from != to)
            .then(|| Resampler::new(from, to, out_channels))
            .transpose()?;
        Ok(Self {
            from,
            in_channels,
            out_channels,
            resampler,
            mapped: Vec::new(),
            resampled: Vec::new(),
        })
    }

    /// The input rate.
    pub(crate) const fn rate_in(&self) -> u32 {
        self.from
    }

    /// Output frames for `frames` input frames (rounded down).
    pub(crate) fn output_frames(&self, frames: usize) -> usize {
        self.resampler.as_ref().map_or(frames, |r| {
            usize::try_from(r.output_frames(frames as u64)).unwrap_or(usize::MAX)
        })
    }

    /// Converts `input` (whole input frames; a trailing partial frame is ignored) and
    /// appends the result to `out`: every output frame whose resampling kernel the
    /// input so far completes (the resampler looks ahead a few input samples).
    pub(crate) fn push(&mut self, input: &[i16], out: &mut VecDeque<i16>) {
        self.mapped.clear();
        for frame in input.chunks_exact(self.in_channels) {
            let m = match (self.in_channels, self.out_channels, frame) {
                (2, 1, &[l, r, ..]) => [(i32::from(l) + i32::from(r)) / 2, 0],
                (1, 2, &[s, ..]) => [i32::from(s); 2],
                (_, _, &[l, r, ..]) => [i32::from(l), i32::from(r)],
                (_, _, &[s]) => [i32::from(s), 0],
                (_, _, []) => [0; 2],
            };
            self.mapped
                .extend(m.iter().take(self.out_channels).map(|&s| clamp16(s)));
        }
        match &mut self.resampler {
            None => out.extend(self.mapped.iter().copied()),
            Some(r) => {
                self.resampled.clear();
                r.process(&self.mapped, &mut self.resampled);
                out.extend(self.resampled.iter().copied());
            }
        }
    }
}

fn clamp16(s: i32) -> i16 {
    i16::try_from(s.clamp(i32::from(i16::MIN), i32::from(i16::MAX))).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chorus_media::quality::tone;

    #[test]
    fn same_rate_maps_channels_only() {
        let mut c = Converter::new(48_000, 2, 48_000, 1).unwrap();
        let mut out = VecDeque::new();
        c.push(&[100, 300, -100, -300, 7, 7], &mut out);
        assert_eq!(out, [200, -200, 7]);
        let mut c = Converter::new(48_000, 1, 48_000, 2).unwrap();
        out.clear();
        c.push(&[5, -5], &mut out);
        assert_eq!(out, [5, 5, -5, -5]);
    }

    #[test]
    fn resampling_in_pieces_equals_resampling_at_once_and_keeps_the_tone() {
        for (from, to) in [(16_000, 48_000), (44_100, 48_000), (48_000, 8_000)] {
            let input = tone(from, 440.0, from as usize / 5, 1);
            let mut whole = VecDeque::new();
            Converter::new(from, 1, to, 1)
                .unwrap()
                .push(&input, &mut whole);
            let mut pieces = VecDeque::new();
            let mut c = Converter::new(from, 1, to, 1).unwrap();
            for chunk in input.chunks(from as usize / 100) {
                c.push(chunk, &mut pieces);
            }
            assert_eq!(whole, pieces, "{from} -> {to}");
            // All but the resampler's look-ahead (at most 96 input samples here).
            let expected = input.len() * to as usize / from as usize;
            let lookahead = 96 * to as usize / from as usize + 1;
            assert!(
                (expected - lookahead..=expected).contains(&whole.len()),
                "{from} -> {to}: {}",
                whole.len()
            );
            // Output j lies at input time j * from / to exactly (no phase shift).
            let ideal = |j: usize| {
                let t = j as f64 / f64::from(to);
                8000.0 * (t * 440.0 * std::f64::consts::TAU).sin()
            };
            let edge = to as usize / 200;
            let err: f64 = whole
                .iter()
                .enumerate()
                .skip(edge)
                .map(|(j, &a)| (f64::from(a) - ideal(j)).powi(2))
                .sum::<f64>()
                / (whole.len() - edge) as f64;
            let signal = 8000.0f64.powi(2) / 2.0;
            let db = 10.0 * (err / signal).log10();
            assert!(db < -60.0, "{from} -> {to}: error {db:.1} dB");
        }
    }
}

//! PCM fed to the mixer directly (the initiator's microphone, a gateway leg) arrives at
//! its own sample rate and channel count; this turns it into the mixing format.
//! Channels first (stereo to mono by averaging, mono to stereo by copying), then a
//! streaming linear-interpolation resampler that carries its phase and last sample
//! across calls, so frame boundaries leave no seam. Linear interpolation is enough
//! for speech from a local device; Opus streams never come through here, libopus
//! decodes them straight to the mixing rate.

use std::collections::VecDeque;

/// Converts interleaved PCM from `(from, in_channels)` to `(to, out_channels)`.
#[derive(Debug, Clone)]
pub(crate) struct Converter {
    from: u32,
    to: u32,
    in_channels: usize,
    out_channels: usize,
    /// Position of the next output sample, in 1/`to` input samples, from `prev`.
    phase: u64,
    /// The last input frame, already in output channels.
    prev: [i32; 2],
}

impl Converter {
    /// Channel counts are 1 or 2 (checked by the caller).
    pub(crate) const fn new(from: u32, in_channels: usize, to: u32, out_channels: usize) -> Self {
        Self {
            from,
            to,
            in_channels,
            out_channels,
            phase: 0,
            prev: [0; 2],
        }
    }

    /// The input rate.
    pub(crate) const fn rate_in(&self) -> u32 {
        self.from
    }

    /// Output frames produced for `frames` input frames (within one, phase aside).
    pub(crate) fn output_frames(&self, frames: usize) -> usize {
        usize::try_from(frames as u64 * u64::from(self.to) / u64::from(self.from))
            .unwrap_or(usize::MAX)
    }

    fn map(&self, frame: &[i16]) -> [i32; 2] {
        match (self.in_channels, self.out_channels, frame) {
            (2, 1, &[l, r, ..]) => [(i32::from(l) + i32::from(r)) / 2, 0],
            (1, 2, &[s, ..]) => [i32::from(s); 2],
            (_, _, &[l, r, ..]) => [i32::from(l), i32::from(r)],
            (_, _, &[s]) => [i32::from(s), 0],
            (_, _, []) => [0; 2],
        }
    }

    /// Converts `input` (whole input frames; a trailing partial frame is ignored) and
    /// appends the result to `out`.
    pub(crate) fn push(&mut self, input: &[i16], out: &mut VecDeque<i16>) {
        let oc = self.out_channels;
        if self.from == self.to {
            for frame in input.chunks_exact(self.in_channels) {
                let m = self.map(frame);
                out.extend(m.iter().take(oc).map(|&s| clamp16(s)));
            }
            return;
        }
        let to = u64::from(self.to);
        let mut frames = input.chunks_exact(self.in_channels);
        // x[0] = prev, x[1..] = input; emit while the right neighbour exists.
        let mut left = self.prev;
        let mut index = 0u64; // index of `left` in x
        let Some(first) = frames.next() else { return };
        let mut right = self.map(first);
        loop {
            let want = self.phase / to;
            if want > index {
                left = right;
                index += 1;
                match frames.next() {
                    Some(f) => right = self.map(f),
                    None => break,
                }
                continue;
            }
            let frac = i64::try_from(self.phase % to).unwrap_or(0);
            let den = i64::from(self.to);
            for ch in 0..oc {
                let (a, b) = (i64::from(left[ch]), i64::from(right[ch]));
                let y = a + (b - a) * frac / den;
                out.push_back(clamp16(i32::try_from(y).unwrap_or(0)));
            }
            self.phase += u64::from(self.from);
        }
        // `left` is now the last input frame, at index `index`: rebase onto it.
        self.prev = left;
        self.phase -= index * to;
    }
}

fn clamp16(s: i32) -> i16 {
    i16::try_from(s.clamp(i32::from(i16::MIN), i32::from(i16::MAX))).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(rate: u32, hz: f64, frames: usize, channels: usize) -> Vec<i16> {
        (0..frames)
            .flat_map(|i| {
                let s = (8000.0 * (i as f64 * hz * std::f64::consts::TAU / f64::from(rate)).sin())
                    as i16;
                std::iter::repeat_n(s, channels)
            })
            .collect()
    }

    #[test]
    fn same_rate_maps_channels_only() {
        let mut c = Converter::new(48_000, 2, 48_000, 1);
        let mut out = VecDeque::new();
        c.push(&[100, 300, -100, -300, 7, 7], &mut out);
        assert_eq!(out, [200, -200, 7]);
        let mut c = Converter::new(48_000, 1, 48_000, 2);
        out.clear();
        c.push(&[5, -5], &mut out);
        assert_eq!(out, [5, 5, -5, -5]);
    }

    #[test]
    fn resampling_in_pieces_equals_resampling_at_once_and_keeps_the_tone() {
        for (from, to) in [(16_000, 48_000), (44_100, 48_000), (48_000, 8_000)] {
            let input = tone(from, 440.0, from as usize / 5, 1);
            let mut whole = VecDeque::new();
            Converter::new(from, 1, to, 1).push(&input, &mut whole);
            let mut pieces = VecDeque::new();
            let mut c = Converter::new(from, 1, to, 1);
            for chunk in input.chunks(from as usize / 100) {
                c.push(chunk, &mut pieces);
            }
            assert_eq!(whole, pieces, "{from} -> {to}");
            let expected = input.len() * to as usize / from as usize;
            assert!(
                whole.len().abs_diff(expected) <= 1,
                "{from} -> {to}: {}",
                whole.len()
            );
            // Output j lies at input time j * from / to - 1 (one input sample late).
            let ideal = |j: usize| {
                let t = j as f64 / f64::from(to) - 1.0 / f64::from(from);
                8000.0 * (t * 440.0 * std::f64::consts::TAU).sin()
            };
            let err: f64 = whole
                .iter()
                .enumerate()
                .skip(8)
                .map(|(j, &a)| (f64::from(a) - ideal(j)).powi(2))
                .sum::<f64>()
                / whole.len() as f64;
            let signal = 8000.0f64.powi(2) / 2.0;
            assert!(err < signal / 100.0, "{from} -> {to}: error {err}");
        }
    }
}

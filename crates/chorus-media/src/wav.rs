//! WAV files (RIFF, 16-bit PCM) for tests and examples, and resampling to the 48 kHz
//! Opus works best at.
//!
//! ```
//! use chorus_media::wav::{self, Wav};
//!
//! let tone = Wav { sample_rate: 8_000, channels: 1, samples: vec![0, 1000, -1000, 0] };
//! let mut file = Vec::new();
//! wav::write(&tone, &mut file)?;
//! assert_eq!(wav::read(&file, 1 << 20)?, tone);
//! let up = wav::resample(&tone.samples, 1, 8_000, 48_000);
//! assert_eq!(up.len(), 24);
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

use chorus_framing::Reader;

use crate::error::{DecodeError, Error, UsageError};

/// Interleaved 16-bit PCM audio.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wav {
    /// Samples per second per channel.
    pub sample_rate: u32,
    /// 1 or 2.
    pub channels: u16,
    /// Interleaved samples.
    pub samples: Vec<i16>,
}

fn le16(r: &mut Reader<'_>) -> Result<u16, DecodeError> {
    Ok(u16::from_le_bytes(r.array::<2>()?))
}

fn le32(r: &mut Reader<'_>) -> Result<u32, DecodeError> {
    Ok(u32::from_le_bytes(r.array::<4>()?))
}

/// Reads a RIFF/WAVE file of 16-bit PCM (format 1, or WAVE_FORMAT_EXTENSIBLE with
/// the PCM sub-format), mono or stereo; other chunks are skipped. Files longer than
/// `max_len` bytes are refused before anything is allocated.
pub fn read(bytes: &[u8], max_len: usize) -> Result<Wav, Error> {
    if bytes.len() > max_len {
        return Err(DecodeError::TooLong {
            len: bytes.len(),
            max: max_len,
        }
        .into());
    }
    let mut r = Reader::new(bytes);
    if r.take(4)? != b"RIFF" {
        return Err(DecodeError::BadWav("no RIFF header").into());
    }
    let _riff_len = le32(&mut r)?;
    if r.take(4)? != b"WAVE" {
        return Err(DecodeError::BadWav("not a WAVE file").into());
    }
    let mut format: Option<(u16, u32)> = None;
    while !r.is_empty() {
        let id = r.take(4)?;
        let len = le32(&mut r)? as usize;
        let body = r.take(len.min(r.remaining()))?;
        if len % 2 == 1 && !r.is_empty() {
            r.skip(1)?; // RIFF chunks are padded to even lengths
        }
        let mut c = Reader::new(body);
        match id {
            b"fmt " => {
                let tag = le16(&mut c)?;
                let channels = le16(&mut c)?;
                let rate = le32(&mut c)?;
                let _byte_rate = le32(&mut c)?;
                let _align = le16(&mut c)?;
                let bits = le16(&mut c)?;
                let pcm = match tag {
                    1 => true,
                    0xFFFE => {
                        // WAVE_FORMAT_EXTENSIBLE: cbSize, valid bits, mask, sub-format GUID
                        // whose first two bytes are the format tag.
                        c.skip(2 + 2 + 4)?;
                        le16(&mut c)? == 1
                    }
                    _ => false,
                };
                if !pcm || bits != 16 {
                    return Err(DecodeError::BadWav("only 16-bit PCM is read").into());
                }
                if !(1..=2).contains(&channels) || !(1_000..=384_000).contains(&rate) {
                    return Err(DecodeError::BadWav("1 or 2 channels, 1-384 kHz").into());
                }
                format = Some((channels, rate));
            }
            b"data" => {
                let (channels, sample_rate) =
                    format.ok_or(DecodeError::BadWav("data before fmt"))?;
                let samples = body
                    .chunks_exact(2 * usize::from(channels))
                    .flat_map(|frame| frame.chunks_exact(2))
                    .map(|b| {
                        i16::from_le_bytes([
                            b.first().copied().unwrap_or(0),
                            b.get(1).copied().unwrap_or(0),
                        ])
                    })
                    .collect();
                return Ok(Wav {
                    sample_rate,
                    channels,
                    samples,
                });
            }
            _ => {}
        }
    }
    Err(DecodeError::BadWav("no data chunk").into())
}

/// Writes `wav` as a 16-bit PCM RIFF/WAVE file into `out` (cleared first).
pub fn write(wav: &Wav, out: &mut Vec<u8>) -> Result<(), Error> {
    if !(1..=2).contains(&wav.channels) || wav.sample_rate == 0 {
        return Err(UsageError::InvalidConfig("1 or 2 channels and a sample rate").into());
    }
    let data_len = u32::try_from(wav.samples.len() * 2)
        .ok()
        .filter(|l| *l <= u32::MAX - 36)
        .ok_or(UsageError::InvalidConfig(
            "more audio than a WAV file holds",
        ))?;
    out.clear();
    out.reserve(44 + data_len as usize);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data_len).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&wav.channels.to_le_bytes());
    out.extend_from_slice(&wav.sample_rate.to_le_bytes());
    let align = wav.channels * 2;
    out.extend_from_slice(&(wav.sample_rate * u32::from(align)).to_le_bytes());
    out.extend_from_slice(&align.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    for s in &wav.samples {
        out.extend_from_slice(&s.to_le_bytes());
    }
    Ok(())
}

/// Resamples interleaved audio from `from` Hz to `to` Hz with the windowed-sinc
/// [`Resampler`](crate::resample::Resampler), all at once (no phase shift). Output
/// length is `frames * to / from` frames; empty for settings the resampler refuses
/// (a zero rate or channel count, more than 8 channels, rates above 384 kHz).
#[must_use]
pub fn resample(input: &[i16], channels: usize, from: u32, to: u32) -> Vec<i16> {
    if channels == 0 || from == 0 || to == 0 {
        return Vec::new();
    }
    let frames = input.len() / channels;
    if from == to {
        return input.get(..frames * channels).unwrap_or(&[]).to_vec();
    }
    let Ok(mut r) = crate::resample::Resampler::new(from, to, channels) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    r.process(input, &mut out);
    r.flush(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn tone(rate: u32, hz: f64, n: usize) -> Vec<i16> {
        (0..n)
            .map(|i| {
                (8000.0 * (std::f64::consts::TAU * hz * i as f64 / f64::from(rate)).sin()) as i16
            })
            .collect()
    }

    #[test]
    fn resampling_keeps_a_tone() {
        let input = tone(16_000, 1000.0, 1600);
        let up = resample(&input, 1, 16_000, 48_000);
        assert_eq!(up.len(), 4800);
        let want = tone(48_000, 1000.0, 4800);
        // Away from the edges the error is small.
        let err = up[300..4500]
            .iter()
            .zip(&want[300..4500])
            .map(|(&a, &b)| (i32::from(a) - i32::from(b)).abs())
            .max()
            .unwrap();
        assert!(err < 200, "max error {err}");
    }

    #[test]
    fn rejects_what_it_does_not_read() {
        let mut file = Vec::new();
        write(
            &Wav {
                sample_rate: 8000,
                channels: 2,
                samples: vec![1, 2, 3, 4],
            },
            &mut file,
        )
        .unwrap();
        for n in 0..file.len() {
            assert!(read(&file[..n], 1 << 20).is_err() || n >= 44, "prefix {n}");
        }
        assert!(read(&file, 10).is_err());
        let mut eight_bit = file.clone();
        eight_bit[34] = 8;
        assert!(matches!(
            read(&eight_bit, 1 << 20),
            Err(Error::Decode(DecodeError::BadWav(_)))
        ));
    }

    proptest! {
        #[test]
        fn round_trip(rate in 1_000u32..96_000, stereo in any::<bool>(), samples in proptest::collection::vec(any::<i16>(), 0..200)) {
            let channels = if stereo { 2 } else { 1 };
            let mut samples = samples;
            samples.truncate(samples.len() / channels as usize * channels as usize);
            let wav = Wav { sample_rate: rate, channels, samples };
            let mut file = Vec::new();
            write(&wav, &mut file).unwrap();
            prop_assert_eq!(read(&file, 1 << 20).unwrap(), wav);
        }

        #[test]
        fn never_panics(b in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut file = b"RIFF\x00\x00\x00\x00WAVE".to_vec();
            file.extend_from_slice(&b);
            let _ = read(&file, 1 << 20);
            let _ = read(&b, 1 << 20);
        }
    }
}

//! Speech in and out of the quality examples (`media-quality`, `call-quality`): WAV
//! files as 48 kHz mono, and the command-line values they share.

use std::time::Duration;

use chorus::media::wav;

/// The sample rate the examples work at.
const RATE: u32 = 48_000;

/// `10%`, `0.1`.
pub(crate) fn parse_fraction(v: &str) -> Option<f64> {
    let x = match v.strip_suffix('%') {
        Some(pct) => pct.trim().parse::<f64>().ok()? / 100.0,
        None => v.parse().ok()?,
    };
    (0.0..=1.0).contains(&x).then_some(x)
}

/// `30ms`, `0.03s`, `30` (milliseconds).
pub(crate) fn parse_duration(v: &str) -> Option<Duration> {
    let secs = if let Some(ms) = v.strip_suffix("ms") {
        ms.trim().parse::<f64>().ok()? / 1000.0
    } else if let Some(s) = v.strip_suffix('s') {
        s.trim().parse::<f64>().ok()?
    } else {
        v.parse::<f64>().ok()? / 1000.0
    };
    (0.0..60.0)
        .contains(&secs)
        .then(|| Duration::from_secs_f64(secs))
}

/// The input speech (`path`, any rate, first channel) at 48 kHz mono, or 10 s of
/// synthetic voiced speech.
pub(crate) fn read_input(path: Option<&str>) -> Result<Vec<i16>, Box<dyn std::error::Error>> {
    Ok(match path {
        Some(path) => {
            let w = wav::read(&std::fs::read(path)?, 1 << 30)?;
            let mono: Vec<i16> = w
                .samples
                .iter()
                .step_by(usize::from(w.channels.max(1)))
                .copied()
                .collect();
            wav::resample(&mono, 1, w.sample_rate, RATE)
        }
        None => chorus::media::quality::synthetic_speech(RATE, RATE as usize * 10, 20),
    })
}

/// Writes 48 kHz mono 16-bit PCM as a WAV file.
pub(crate) fn write_wav(path: &str, samples: Vec<i16>) -> Result<(), Box<dyn std::error::Error>> {
    let mut file = Vec::new();
    wav::write(
        &wav::Wav {
            sample_rate: RATE,
            channels: 1,
            samples,
        },
        &mut file,
    )?;
    std::fs::write(path, file)?;
    Ok(())
}

/// The `q` quantile (0-1) of ascending `sorted`, nearest rank; 0 when empty.
pub(crate) fn percentile(sorted: &[f64], q: f64) -> f64 {
    let i = ((sorted.len().saturating_sub(1)) as f64 * q).round() as usize;
    sorted.get(i).copied().unwrap_or(0.0)
}

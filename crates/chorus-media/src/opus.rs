//! Opus (RFC 6716) through libopus: an encoder with the knobs a call adapts (bitrate,
//! complexity, DTX, in-band FEC with an expected-loss hint) and a decoder with packet
//! loss concealment and in-band FEC recovery. RTP carries Opus with a 48 kHz clock
//! whatever the sampling rate (RFC 7587 §4.1).
//!
//! libopus (1.6.1) is C; it is built from source with cmake by the `opusic-c` crate's
//! `opusic-sys`. It is the only non-Rust code in this crate and sits behind the `opus`
//! feature (on by default). With the `dnn` feature libopus is built with its neural
//! models and [`Decoder::new`] sets decoder complexity 7: the deep PLC conceals lost
//! frames and OSCE NoLACE enhances every decoded speech frame (measured in
//! `docs/media.md`: +0.13 PESQ-WB on clean 32 kbit/s speech, +0.15 under loss with
//! packet FEC).
//!
//! ```
//! use chorus_media::opus::{Channels, Decoder, Encoder, EncoderConfig};
//!
//! let config = EncoderConfig::default(); // 48 kHz mono, 20 ms, 32 kbit/s, VoIP
//! let mut encoder = Encoder::new(config)?;
//! let mut decoder = Decoder::new(48_000, Channels::Mono)?;
//! let tone: Vec<i16> = (0..encoder.frame_samples())
//!     .map(|i| (8000.0 * (i as f64 * 440.0 * std::f64::consts::TAU / 48_000.0).sin()) as i16)
//!     .collect();
//! let mut packet = Vec::new();
//! encoder.encode(&tone, &mut packet)?;
//! let mut pcm = Vec::new();
//! assert_eq!(decoder.decode(&packet, &mut pcm)?, 960);
//! // A lost packet: concealment produces a frame of audio anyway.
//! assert_eq!(decoder.conceal(960, &mut pcm)?, 960);
//! # Ok::<(), chorus_media::Error>(())
//! ```

use core::time::Duration;

use crate::error::{Error, UsageError};
pub use crate::opus_packet::has_inband_fec;

/// The decoder complexity [`Decoder::new`] sets: 7 (deep PLC and OSCE NoLACE) with
/// the `dnn` feature, which measurably lifts speech quality (`docs/media.md`), else 0.
pub const DEFAULT_DECODER_COMPLEXITY: u8 = if cfg!(feature = "dnn") { 7 } else { 0 };

/// The largest packet libopus produces for one call (its documented recommendation).
const MAX_PACKET: usize = 4000;
/// The longest frame a packet may decode to: 120 ms (RFC 6716 §3.2.5).
const MAX_FRAME_MS: usize = 120;

/// Mono or stereo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channels {
    /// One channel.
    Mono,
    /// Two channels, interleaved (left, right).
    Stereo,
}

impl Channels {
    /// 1 or 2.
    #[must_use]
    pub const fn count(self) -> usize {
        match self {
            Self::Mono => 1,
            Self::Stereo => 2,
        }
    }

    const fn to_opus(self) -> opusic_c::Channels {
        match self {
            Self::Mono => opusic_c::Channels::Mono,
            Self::Stereo => opusic_c::Channels::Stereo,
        }
    }
}

/// The encoder's tuning (RFC 6716 §2.1.x: SILK for speech, CELT for low delay).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Application {
    /// Speech intelligibility first (calls).
    Voip,
    /// Fidelity to the input (music).
    Audio,
    /// Lowest delay: CELT only.
    LowDelay,
}

/// Encoder settings. Every field is checked by [`Encoder::new`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct EncoderConfig {
    /// 8,000, 12,000, 16,000, 24,000 or 48,000 Hz. Default 48,000.
    pub sample_rate: u32,
    /// Default mono.
    pub channels: Channels,
    /// Default [`Application::Voip`].
    pub application: Application,
    /// 10, 20, 40 or 60 ms. Default 20 ms.
    pub frame: Duration,
    /// 6,000-510,000 bit/s. Default 32,000.
    pub bitrate: u32,
    /// 0 (fastest) to 10 (best). Default 9.
    pub complexity: u8,
    /// Discontinuous transmission: near-silent frames become tiny packets. Default off.
    pub dtx: bool,
    /// In-band FEC (LBRR, RFC 6716 §2.1.7): each packet also carries a low-rate copy of
    /// the previous frame. Default on.
    pub inband_fec: bool,
    /// Expected loss in percent (0-100): how much LBRR the encoder spends. Default 5.
    pub expected_loss_percent: u8,
}

impl Default for EncoderConfig {
    fn default() -> Self {
        Self {
            sample_rate: 48_000,
            channels: Channels::Mono,
            application: Application::Voip,
            frame: Duration::from_millis(20),
            bitrate: 32_000,
            complexity: 9,
            dtx: false,
            inband_fec: true,
            expected_loss_percent: 5,
        }
    }
}

#[allow(clippy::needless_pass_by_value, reason = "used as map_err(codec)")]
fn codec(e: opusic_c::ErrorCode) -> Error {
    Error::Codec(e.message())
}

fn sample_rate(rate: u32) -> Result<opusic_c::SampleRate, Error> {
    use opusic_c::SampleRate as R;
    Ok(match rate {
        8_000 => R::Hz8000,
        12_000 => R::Hz12000,
        16_000 => R::Hz16000,
        24_000 => R::Hz24000,
        48_000 => R::Hz48000,
        _ => {
            return Err(
                UsageError::InvalidConfig("sample rate must be 8, 12, 16, 24 or 48 kHz").into(),
            );
        }
    })
}

fn check_rate(rate: u32) -> Result<(), Error> {
    if [8_000, 12_000, 16_000, 24_000, 48_000].contains(&rate) {
        Ok(())
    } else {
        Err(UsageError::InvalidConfig("sample rate must be 8, 12, 16, 24 or 48 kHz").into())
    }
}

/// An Opus encoder.
pub struct Encoder {
    inner: opusic_c::Encoder,
    config: EncoderConfig,
    /// The samples as libopus's binding takes them (`u16` bit patterns of `i16`).
    scratch: Vec<u16>,
}

impl core::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Encoder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Encoder {
    /// A new encoder; fails on an invalid configuration.
    pub fn new(config: EncoderConfig) -> Result<Self, Error> {
        check_rate(config.sample_rate)?;
        if ![10, 20, 40, 60].contains(&config.frame.as_millis())
            || !config.frame.subsec_nanos().is_multiple_of(1_000_000)
        {
            return Err(UsageError::InvalidConfig("frame must be 10, 20, 40 or 60 ms").into());
        }
        if config.complexity > 10 || config.expected_loss_percent > 100 {
            return Err(UsageError::InvalidConfig("complexity 0-10, expected loss 0-100 %").into());
        }
        let application = match config.application {
            Application::Voip => opusic_c::Application::Voip,
            Application::Audio => opusic_c::Application::Audio,
            Application::LowDelay => opusic_c::Application::LowDelay,
        };
        let inner = opusic_c::Encoder::new(
            config.channels.to_opus(),
            sample_rate(config.sample_rate)?,
            application,
        )
        .map_err(codec)?;
        let mut encoder = Self {
            inner,
            config,
            scratch: Vec::new(),
        };
        encoder.set_bitrate(config.bitrate)?;
        encoder
            .inner
            .set_complexity(config.complexity)
            .map_err(codec)?;
        encoder.inner.set_dtx(config.dtx).map_err(codec)?;
        encoder.set_inband_fec(config.inband_fec, config.expected_loss_percent)?;
        Ok(encoder)
    }

    /// The configuration in force.
    #[must_use]
    pub const fn config(&self) -> &EncoderConfig {
        &self.config
    }

    /// Samples per channel in one frame.
    #[must_use]
    pub fn frame_samples(&self) -> usize {
        let ms = usize::try_from(self.config.frame.as_millis()).unwrap_or(20);
        self.config.sample_rate as usize / 1000 * ms
    }

    /// RTP timestamp increment per frame: Opus RTP always counts at 48 kHz (RFC 7587).
    #[must_use]
    pub fn rtp_timestamp_step(&self) -> u32 {
        u32::try_from(self.config.frame.as_millis() * 48).unwrap_or(960)
    }

    /// The encoder's look-ahead in samples per channel at its sampling rate: how far
    /// the decoded audio lags the input (libopus `OPUS_GET_LOOKAHEAD`).
    pub fn lookahead(&mut self) -> Result<usize, Error> {
        let n = self.inner.get_look_ahead().map_err(codec)?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    /// Changes the target bitrate (6,000-510,000 bit/s).
    pub fn set_bitrate(&mut self, bitrate: u32) -> Result<(), Error> {
        if !(6_000..=510_000).contains(&bitrate) {
            return Err(UsageError::InvalidConfig("bitrate must be 6-510 kbit/s").into());
        }
        self.inner
            .set_bitrate(opusic_c::Bitrate::Value(bitrate))
            .map_err(codec)?;
        self.config.bitrate = bitrate;
        Ok(())
    }

    /// Switches in-band FEC and sets the expected loss hint (0-100 %).
    pub fn set_inband_fec(&mut self, on: bool, expected_loss_percent: u8) -> Result<(), Error> {
        if expected_loss_percent > 100 {
            return Err(UsageError::InvalidConfig("expected loss 0-100 %").into());
        }
        let mode = if on {
            opusic_c::InbandFec::Mode1
        } else {
            opusic_c::InbandFec::Off
        };
        self.inner.set_inband_fec(mode).map_err(codec)?;
        self.inner
            .set_packet_loss(expected_loss_percent)
            .map_err(codec)?;
        self.config.inband_fec = on;
        self.config.expected_loss_percent = expected_loss_percent;
        Ok(())
    }

    /// Returns the encoder to its freshly created state (settings kept), as when it
    /// starts encoding a different signal: no history of the previous one leaks in.
    pub fn reset(&mut self) -> Result<(), Error> {
        self.inner.reset().map_err(codec)
    }

    /// Encodes one frame of interleaved samples (`frame_samples() * channels` of
    /// them) into `out` (cleared first).
    pub fn encode(&mut self, pcm: &[i16], out: &mut Vec<u8>) -> Result<(), Error> {
        if pcm.len() != self.frame_samples() * self.config.channels.count() {
            return Err(UsageError::InvalidConfig("pcm must hold exactly one frame").into());
        }
        out.clear();
        out.resize(MAX_PACKET, 0);
        self.scratch.clear();
        self.scratch.extend(pcm.iter().map(|&x| x as u16));
        let n = self
            .inner
            .encode_to_slice(&self.scratch, out)
            .map_err(codec)?;
        out.truncate(n);
        Ok(())
    }
}

/// An Opus decoder.
pub struct Decoder {
    inner: opusic_c::Decoder,
    sample_rate: u32,
    channels: Channels,
    scratch: Vec<u16>,
}

impl core::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Decoder")
            .field("sample_rate", &self.sample_rate)
            .field("channels", &self.channels)
            .finish_non_exhaustive()
    }
}

impl Decoder {
    /// A decoder producing `channels` at `sample_rate` (8, 12, 16, 24 or 48 kHz),
    /// whatever the encoder used.
    pub fn new(sample_rate: u32, channels: Channels) -> Result<Self, Error> {
        check_rate(sample_rate)?;
        let inner = opusic_c::Decoder::new(channels.to_opus(), self::sample_rate(sample_rate)?)
            .map_err(codec)?;
        let mut decoder = Self {
            inner,
            sample_rate,
            channels,
            scratch: Vec::new(),
        };
        decoder.set_complexity(DEFAULT_DECODER_COMPLEXITY)?;
        Ok(decoder)
    }

    fn max_samples(&self) -> usize {
        self.sample_rate as usize / 1000 * MAX_FRAME_MS * self.channels.count()
    }

    fn run(
        &mut self,
        packet: &[u8],
        samples: Option<usize>,
        fec: bool,
        out: &mut Vec<i16>,
    ) -> Result<usize, Error> {
        let len = match samples {
            Some(n) => {
                let n = n.saturating_mul(self.channels.count());
                if n == 0 || n > self.max_samples() {
                    return Err(UsageError::InvalidConfig(
                        "concealed length must be 1 sample to 120 ms",
                    )
                    .into());
                }
                n
            }
            None => self.max_samples(),
        };
        self.scratch.clear();
        self.scratch.resize(len, 0);
        let n = self
            .inner
            .decode_to_slice(packet, &mut self.scratch, fec)
            .map_err(codec)?;
        let n = n.min(len / self.channels.count());
        out.clear();
        out.extend(
            self.scratch
                .iter()
                .take(n * self.channels.count())
                .map(|&x| x as i16),
        );
        Ok(n)
    }

    /// Returns the decoder to its freshly created state, as before a stream it has not
    /// followed (for example a conference member whose packets were skipped while
    /// silent).
    pub fn reset(&mut self) -> Result<(), Error> {
        self.inner.reset().map_err(codec)
    }

    /// Sets the decoder complexity, 0-10. With the `dnn` feature, 5 and up switch
    /// libopus's deep PLC on, 6 adds OSCE LACE and 7 and up OSCE NoLACE (neural
    /// enhancement of decoded speech); without it, libopus is built without its
    /// neural models and this only checks the value.
    pub fn set_complexity(&mut self, complexity: u8) -> Result<(), Error> {
        if complexity > 10 {
            return Err(UsageError::InvalidConfig("complexity 0-10").into());
        }
        #[cfg(feature = "dnn")]
        self.inner.set_complexity(complexity).map_err(codec)?;
        Ok(())
    }

    /// Decodes one packet (peer data: an invalid one is an error, never a panic) into
    /// `out` (cleared first, interleaved). Returns samples per channel.
    pub fn decode(&mut self, packet: &[u8], out: &mut Vec<i16>) -> Result<usize, Error> {
        if packet.is_empty() {
            return Err(Error::Codec("empty packet"));
        }
        self.run(packet, None, false, out)
    }

    /// Packet loss concealment: `samples` per channel (usually one frame) of audio
    /// extrapolated from what came before.
    pub fn conceal(&mut self, samples: usize, out: &mut Vec<i16>) -> Result<usize, Error> {
        self.run(&[], Some(samples), false, out)
    }

    /// In-band FEC: rebuilds the lost frame *before* `next_packet` from the low-rate
    /// copy `next_packet` carries (or conceals, if it has none). `samples` per channel
    /// is the lost frame's length. Decode `next_packet` itself afterwards as usual.
    pub fn decode_fec(
        &mut self,
        next_packet: &[u8],
        samples: usize,
        out: &mut Vec<i16>,
    ) -> Result<usize, Error> {
        if next_packet.is_empty() {
            return self.conceal(samples, out);
        }
        self.run(next_packet, Some(samples), true, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn chirp(rate: u32, seconds: f64, channels: usize) -> Vec<i16> {
        let n = (f64::from(rate) * seconds) as usize;
        (0..n)
            .flat_map(|i| {
                let t = i as f64 / f64::from(rate);
                // 200 Hz rising to 1,200 Hz: speech-band content.
                let phase = std::f64::consts::TAU * (200.0 * t + 500.0 * t * t);
                let s = (10_000.0 * phase.sin()) as i16;
                std::iter::repeat_n(s, channels)
            })
            .collect()
    }

    /// Best normalized cross-correlation of `a` against `b` delayed by 0..max_lag.
    fn similarity(a: &[i16], b: &[i16], max_lag: usize) -> f64 {
        (0..max_lag)
            .map(|lag| {
                let pairs = a.iter().zip(b.iter().skip(lag));
                let (mut ab, mut aa, mut bb) = (0.0, 0.0, 0.0);
                for (&x, &y) in pairs {
                    let (x, y) = (f64::from(x), f64::from(y));
                    ab += x * y;
                    aa += x * x;
                    bb += y * y;
                }
                ab / (aa.sqrt() * bb.sqrt()).max(1.0)
            })
            .fold(0.0, f64::max)
    }

    fn round_trip(config: EncoderConfig) -> (Vec<i16>, Vec<i16>) {
        let mut enc = Encoder::new(config).unwrap();
        let ch = config.channels.count();
        let mut dec = Decoder::new(config.sample_rate, config.channels).unwrap();
        let input = chirp(config.sample_rate, 1.2, ch);
        let frame = enc.frame_samples() * ch;
        let mut output = Vec::new();
        let (mut packet, mut pcm) = (Vec::new(), Vec::new());
        for chunk in input.chunks_exact(frame) {
            enc.encode(chunk, &mut packet).unwrap();
            assert!(packet.len() < MAX_PACKET);
            assert_eq!(dec.decode(&packet, &mut pcm).unwrap() * ch, frame);
            output.extend_from_slice(&pcm);
        }
        (input, output)
    }

    #[test]
    fn speech_band_chirp_survives_encoding_at_every_rate() {
        for rate in [8_000, 12_000, 16_000, 24_000, 48_000] {
            let config = EncoderConfig {
                sample_rate: rate,
                ..EncoderConfig::default()
            };
            let (input, output) = round_trip(config);
            // Skip the first 100 ms (encoder start-up); allow the codec delay.
            let skip = rate as usize / 10;
            let s = similarity(&input[skip..3 * skip], &output[skip..], rate as usize / 50);
            assert!(s > 0.8, "{rate} Hz: similarity {s}");
        }
    }

    #[test]
    fn stereo_and_every_frame_length_round_trip() {
        for ms in [10, 20, 40, 60] {
            let config = EncoderConfig {
                channels: Channels::Stereo,
                frame: Duration::from_millis(ms),
                bitrate: 64_000,
                ..EncoderConfig::default()
            };
            let (input, output) = round_trip(config);
            let s = similarity(&input[9600..19_200], &output[9600..], 1000);
            assert!(s > 0.8, "{ms} ms: similarity {s}");
        }
    }

    #[test]
    fn rejects_invalid_settings() {
        for bad in [
            EncoderConfig {
                sample_rate: 44_100,
                ..EncoderConfig::default()
            },
            EncoderConfig {
                frame: Duration::from_millis(30),
                ..EncoderConfig::default()
            },
            EncoderConfig {
                bitrate: 5_000,
                ..EncoderConfig::default()
            },
            EncoderConfig {
                bitrate: 600_000,
                ..EncoderConfig::default()
            },
            EncoderConfig {
                complexity: 11,
                ..EncoderConfig::default()
            },
        ] {
            assert!(Encoder::new(bad).is_err(), "{bad:?}");
        }
        let mut enc = Encoder::new(EncoderConfig::default()).unwrap();
        assert!(enc.encode(&[0; 100], &mut Vec::new()).is_err());
    }

    #[test]
    fn inband_fec_rebuilds_a_lost_frame_better_than_concealment() {
        let config = EncoderConfig {
            bitrate: 24_000,
            expected_loss_percent: 20,
            sample_rate: 16_000,
            ..EncoderConfig::default()
        };
        let mut enc = Encoder::new(config).unwrap();
        let input = chirp(16_000, 1.0, 1);
        let packets: Vec<Vec<u8>> = input
            .chunks_exact(320)
            .map(|c| {
                let mut p = Vec::new();
                enc.encode(c, &mut p).unwrap();
                p
            })
            .collect();
        assert_eq!(has_inband_fec(&packets[30]), Some(true));
        let lost = 30;
        let run = |use_fec: bool| {
            let mut dec = Decoder::new(16_000, Channels::Mono).unwrap();
            let mut out = Vec::new();
            let mut pcm = Vec::new();
            for (i, p) in packets.iter().enumerate() {
                if i == lost {
                    if use_fec {
                        dec.decode_fec(&packets[i + 1], 320, &mut pcm).unwrap();
                    } else {
                        dec.conceal(320, &mut pcm).unwrap();
                    }
                } else {
                    dec.decode(p, &mut pcm).unwrap();
                }
                out.extend_from_slice(&pcm);
            }
            let window = (lost - 1) * 320..(lost + 2) * 320;
            similarity(&input[window.clone()], &out[window.start..], 400)
        };
        let (with_fec, plc) = (run(true), run(false));
        assert!(with_fec > plc, "FEC {with_fec} vs PLC {plc}");
    }

    #[test]
    fn reset_forgets_the_previous_signal() {
        let mut enc = Encoder::new(EncoderConfig::default()).unwrap();
        let input = chirp(48_000, 0.2, 1);
        let encode_all = |enc: &mut Encoder| -> Vec<Vec<u8>> {
            input
                .chunks_exact(960)
                .map(|c| {
                    let mut p = Vec::new();
                    enc.encode(c, &mut p).unwrap();
                    p
                })
                .collect()
        };
        let first = encode_all(&mut enc);
        let _ = encode_all(&mut enc);
        enc.reset().unwrap();
        assert_eq!(
            encode_all(&mut enc),
            first,
            "a reset encoder repeats itself"
        );
        let mut dec = Decoder::new(48_000, Channels::Mono).unwrap();
        let decode_all = |dec: &mut Decoder| -> Vec<i16> {
            let mut pcm = Vec::new();
            first
                .iter()
                .flat_map(|p| {
                    dec.decode(p, &mut pcm).unwrap();
                    pcm.clone()
                })
                .collect()
        };
        let once = decode_all(&mut dec);
        dec.reset().unwrap();
        assert_eq!(decode_all(&mut dec), once);
    }

    #[test]
    fn the_lbrr_flag_of_the_encoders_packets() {
        // The encoder's own packets: LBRR flag read once in-band FEC is on.
        let mut enc = Encoder::new(EncoderConfig {
            sample_rate: 16_000,
            bitrate: 24_000,
            expected_loss_percent: 20,
            ..EncoderConfig::default()
        })
        .unwrap();
        let input = chirp(16_000, 0.5, 1);
        let mut p = Vec::new();
        let flags: Vec<bool> = input
            .chunks_exact(320)
            .map(|c| {
                enc.encode(c, &mut p).unwrap();
                has_inband_fec(&p).unwrap()
            })
            .collect();
        assert!(flags.iter().skip(2).all(|&f| f), "{flags:?}");
    }

    proptest! {
        #[test]
        fn arbitrary_packets_never_panic_the_decoder(b in proptest::collection::vec(any::<u8>(), 0..400)) {
            let mut dec = Decoder::new(48_000, Channels::Stereo).unwrap();
            let mut pcm = Vec::new();
            let _ = dec.decode(&b, &mut pcm);
            let _ = dec.decode_fec(&b, 960, &mut pcm);
            let _ = has_inband_fec(&b);
        }
    }
}

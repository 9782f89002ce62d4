//! The whole call-leg pipeline and time stretching (run `cargo bench --bench
//! media_session`).
//!
//! - `session/frame_both_ways/{plain,fec}`: one 20 ms 48 kHz mono frame each way
//!   between two `chorus_media::session::Session`s wired by hand: Opus encode, RTP
//!   with audio level and abs-send-time, SRTP (AES-CM-128/HMAC-SHA1-80), for `fec` a
//!   Reed-Solomon (4, 1) group's share of repair work, then SRTP check, receive
//!   statistics, delay estimator, FEC decoder, jitter buffer, Opus decode and playout
//!   on the other side, with the RTCP timers running; rate capped at 48 kbit/s
//!   (Opus at ~32-40 kbit/s), Opus complexity 9 (the session's default) or 5.
//!   Divide by 2 for one stream direction; divide by 20 ms for the share of a core.
//! - `session/opus_only_both_ways`: the codec floor in the same run: the same frames
//!   through two Opus encoders (40 kbit/s) and decoders, nothing else.
//! - `timestretch/{accelerate,expand}`: one 20 ms 48 kHz frame of speech stretched
//!   by 0.5-0.9 or 1.1-1.5 (WSOLA with pitch search).
//!
//! Inputs are fixed (synthetic speech) and built before timing starts.

use std::hint::black_box;
use std::time::{Duration, Instant};

use chorus_crypto::srtp::{Policy, SrtpSession, Suite};
use chorus_framing::SeededEntropy;
use chorus_media::adapt::Protection;
use chorus_media::opus::{Channels, Decoder, Encoder, EncoderConfig as OpusConfig};
use chorus_media::quality::synthetic_speech;
use chorus_media::session::{Session, SessionConfig};
use chorus_media::timestretch::TimeStretcher;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const RATE: u32 = 48_000;
const FRAME: usize = 960;

fn srtp(key: u8) -> SrtpSession {
    let suite = Suite::AesCm128HmacSha1_80;
    let policy = Policy::new(
        suite,
        &vec![key; suite.key_len()],
        &vec![key; suite.salt_len()],
    );
    SrtpSession::new(policy.unwrap()).unwrap()
}

fn pair(now: Instant, fec: bool, complexity: u8) -> (Session, Session) {
    let mut config = SessionConfig::default();
    config.sample_rate = RATE;
    // A voice call's rate (Opus ~32-40 kbit/s), comparable with `media`'s opus_encode
    // bench; the default bounds let the controllers climb to 128 kbit/s.
    config.rate.start_bps = 40_000;
    config.rate.max_bps = 48_000;
    config.complexity = complexity;
    if fec {
        config.force_protection = Some(Protection {
            rs: Some((4, 1)),
            stride: 1,
            opus_fec: true,
            opus_expected_loss: 5,
        });
    }
    let mut b = config.clone();
    (b.ssrc, b.fec_ssrc) = (11, 12);
    let a = Session::new(
        config,
        srtp(1),
        srtp(2),
        Box::new(SeededEntropy::new(1)),
        now,
    )
    .unwrap();
    let b = Session::new(b, srtp(2), srtp(1), Box::new(SeededEntropy::new(2)), now).unwrap();
    (a, b)
}

fn session_bench(c: &mut Criterion) {
    let speech = synthetic_speech(RATE, RATE as usize * 10, 12);
    let frames: Vec<&[i16]> = speech.chunks_exact(FRAME).collect();
    let mut g = c.benchmark_group("session");
    g.throughput(Throughput::Elements(1));
    for (name, fec, complexity) in [
        ("frame_both_ways/plain", false, 9),
        ("frame_both_ways/fec", true, 9),
        ("frame_both_ways/fec_complexity5", true, 5),
    ] {
        g.bench_function(name, |bench| {
            let t0 = Instant::now();
            let (mut a, mut b) = pair(t0, fec, complexity);
            let mut i = 0usize;
            let mut now = t0;
            let mut heard = 0usize;
            let mut step = || {
                let pcm = frames[i % frames.len()];
                i += 1;
                now += Duration::from_millis(20);
                a.send_frame(now, pcm).unwrap();
                b.send_frame(now, pcm).unwrap();
                while let Some(d) = a.poll_transmit() {
                    let _ = b.handle_input(now, black_box(&d));
                }
                while let Some(d) = b.poll_transmit() {
                    let _ = a.handle_input(now, black_box(&d));
                }
                a.handle_timeout(now);
                b.handle_timeout(now);
                while let Some(pcm) = a.poll_pcm() {
                    heard += pcm.len();
                }
                while let Some(pcm) = b.poll_pcm() {
                    heard += pcm.len();
                }
                heard
            };
            // Past the jitter buffer's start-up delay first, so every measured frame
            // (and the single one `cargo test` runs) goes all the way through.
            for _ in 0..25 {
                step();
            }
            bench.iter(&mut step);
            assert!(b.stats().decoded > 0 && a.stats().decoded > 0);
            if fec {
                assert!(a.stats().frames_sent < 4 || a.stats().repair_sent > 0);
            }
        });
    }
    // The codec floor in the same run: Opus alone, the same frames, both ways.
    g.bench_function("opus_only_both_ways", |bench| {
        let mut config = OpusConfig::default();
        config.bitrate = 40_000;
        config.inband_fec = false;
        let mut enc = [Encoder::new(config).unwrap(), Encoder::new(config).unwrap()];
        let mut dec = [
            Decoder::new(RATE, Channels::Mono).unwrap(),
            Decoder::new(RATE, Channels::Mono).unwrap(),
        ];
        let (mut packet, mut out) = (Vec::new(), Vec::new());
        let mut i = 0usize;
        bench.iter(|| {
            let pcm = frames[i % frames.len()];
            i += 1;
            for (e, d) in enc.iter_mut().zip(&mut dec) {
                e.encode(black_box(pcm), &mut packet).unwrap();
                d.decode(&packet, &mut out).unwrap();
            }
            out.len()
        });
    });
    g.finish();
}

fn stretch_bench(c: &mut Criterion) {
    let speech = synthetic_speech(RATE, RATE as usize, 12);
    // A voiced frame (the middle of a syllable).
    let frame = &speech[RATE as usize / 10..RATE as usize / 10 + FRAME];
    let mut ts = TimeStretcher::new(RATE).unwrap();
    let mut out = Vec::new();
    let mut g = c.benchmark_group("timestretch");
    g.throughput(Throughput::Elements(1));
    g.bench_function("accelerate", |b| {
        b.iter(|| ts.stretch(black_box(frame), 0.5, 0.9, &mut out).unwrap())
    });
    g.bench_function("expand", |b| {
        b.iter(|| ts.stretch(black_box(frame), 1.1, 1.5, &mut out).unwrap())
    });
    g.finish();
}

criterion_group!(benches, session_bench, stretch_bench);
criterion_main!(benches);

//! Per-tick cost of the initiator's audio mixer (run `cargo bench --bench mixer`).
//!
//! One iteration is one 20 ms tick for N participants (the initiator with a silent
//! microphone plus N-1 remote ones): N-1 RTP datagrams written into one receive
//! buffer (a 12-byte header and an audio-level element around a prepared Opus payload)
//! and handed to the mixer, then the tick itself: jitter buffers, speaker selection,
//! decoding, mix-minus, encoding and packetizing one RTP packet per remote participant.
//!
//! - `tick/speakers-3/N`: 5 participants talk (tones at different levels), the rest
//!   send quiet noise; the 3 loudest are decoded and mixed, 4 encodes.
//! - `tick/classic/N`: the classic bridge: everyone decoded, everyone's mix encoded.
//!
//! The Opus payloads (one second per track) are encoded before timing starts.

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use chorus_media::opus::{Encoder, EncoderConfig};
use chorus_media::rtp::{AudioLevel, ONE_BYTE_PROFILE};
use chorus_mixer::audio::{Mixer, MixerConfig, ParticipantId, PcmConfig, RemoteConfig, Selection};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

const FRAME: usize = 960;
const FRAMES: usize = 50;

/// Per frame: the Opus payload and the RFC 6464 level byte.
type Track = Vec<(Vec<u8>, u8)>;

fn track(hz: f64, amplitude: f64) -> Track {
    let mut encoder = Encoder::new(EncoderConfig::default()).unwrap();
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    (0..FRAMES)
        .map(|f| {
            let pcm: Vec<i16> = (0..FRAME)
                .map(|i| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    let t = (f * FRAME + i) as f64 / 48_000.0;
                    let noise = (state >> 58) as f64 - 32.0;
                    (amplitude * (t * hz * std::f64::consts::TAU).sin() + noise) as i16
                })
                .collect();
            let mut payload = Vec::new();
            encoder.encode(&pcm, &mut payload).unwrap();
            (payload, AudioLevel::from_samples(&pcm, true).to_byte())
        })
        .collect()
}

struct Conference {
    mixer: Mixer,
    initiator: ParticipantId,
    remote: Vec<(ParticipantId, usize)>,
    tracks: Vec<Track>,
    ticks: u32,
    t0: Instant,
}

impl Conference {
    fn new(n: usize, selection: Selection) -> Self {
        let mut tracks: Vec<Track> = (0..5)
            .map(|i| track(200.0 + 90.0 * i as f64, 8000.0 / (1.0 + i as f64)))
            .collect();
        tracks.push(track(0.0, 0.0));
        let mut config = MixerConfig::default();
        config.selection = selection;
        let mut mixer = Mixer::new(config).unwrap();
        let initiator = mixer.add_pcm(PcmConfig::default()).unwrap();
        let remote = (0..n - 1)
            .map(|p| {
                let mut rc = RemoteConfig::default();
                rc.ssrc = p as u32;
                (mixer.add_remote(rc).unwrap(), p.min(5))
            })
            .collect();
        let mut c = Self {
            mixer,
            initiator,
            remote,
            tracks,
            ticks: 0,
            t0: Instant::now(),
        };
        // Warm up: jitter buffers started, speakers chosen, codecs lent.
        for _ in 0..10 {
            c.tick();
        }
        c
    }

    fn tick(&mut self) -> usize {
        let t = self.ticks;
        let now = self.t0 + Duration::from_millis(20) * t;
        let frame = t as usize % FRAMES;
        // One receive buffer per tick, as a batched receive would fill.
        let mut datagrams = BytesMut::with_capacity(self.remote.len() * 100);
        let mut ends = Vec::with_capacity(self.remote.len());
        for (p, &(_, track)) in self.remote.iter().enumerate() {
            let (payload, level) = &self.tracks[track][frame];
            let seq = t as u16;
            // RFC 3550 §5.1 header with X set, one RFC 8285 element (id 1, 1 byte).
            datagrams.extend_from_slice(&[0x90, 111]);
            datagrams.extend_from_slice(&seq.to_be_bytes());
            datagrams.extend_from_slice(&(t * 960).to_be_bytes());
            datagrams.extend_from_slice(&(p as u32).to_be_bytes());
            datagrams.extend_from_slice(&ONE_BYTE_PROFILE.to_be_bytes());
            datagrams.extend_from_slice(&[0, 1, 0x10, *level, 0, 0]);
            datagrams.extend_from_slice(payload);
            ends.push(datagrams.len());
        }
        let datagrams = datagrams.freeze();
        let mut begin = 0;
        for (&(id, _), &end) in self.remote.iter().zip(&ends) {
            let _ = self
                .mixer
                .handle_packet(now, id, datagrams.slice(begin..end));
            begin = end;
        }
        self.mixer
            .handle_pcm(self.initiator, t * FRAME as u32, &[0; FRAME])
            .unwrap();
        self.mixer.tick(now);
        self.ticks += 1;
        self.mixer
            .transmits()
            .map(|o| black_box(o.packet).len())
            .sum()
    }
}

fn tick_bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("tick");
    g.sample_size(20);
    g.measurement_time(Duration::from_secs(5));
    for (name, n, selection) in [
        ("speakers-3", 100, Selection::Loudest(3)),
        ("speakers-3", 1000, Selection::Loudest(3)),
        ("classic", 50, Selection::All),
    ] {
        let mut conference = Conference::new(n, selection);
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(BenchmarkId::new(name, n), |b| b.iter(|| conference.tick()));
    }
    g.finish();
}

criterion_group!(benches, tick_bench);
criterion_main!(benches);

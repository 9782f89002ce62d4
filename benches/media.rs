//! Per-stage costs of the `chorus-media` pipeline (run `cargo bench --bench media`).
//!
//! - `rtp_decode`, `rtp_encode`: one 160-byte Opus RTP packet with an RFC 6464 level.
//! - `rtcp_decode`: a compound SR + SDES + NACK packet.
//! - `fec_encode/k,m`, `fec_recover/k,m`: a group of k 200-byte packets; encode makes
//!   the m repairs, recover rebuilds m lost sources from them.
//! - `jitter`: one packet in and one frame out of the jitter buffer.
//! - `opus_encode`, `opus_decode`: one 20 ms 48 kHz mono frame of synthetic voiced
//!   speech at 32 kbit/s (with
//!   `--features media-dnn` the decoder runs OSCE NoLACE).
//! - `opus_conceal`: one concealed frame (PLC; the deep PLC with `media-dnn`) and the
//!   next frame's decode.
//! - `resample/from->to`: one 20 ms mono frame through the streaming windowed-sinc
//!   resampler (44.1 kHz microphone to 48 kHz, 48 kHz to an 8 kHz gateway leg).
//!
//! Inputs are fixed and built before timing starts.

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use chorus_media::fec::{self, DecoderConfig, EncoderConfig};
use chorus_media::jitter::{JitterBuffer, JitterConfig};
use chorus_media::opus::{Channels, Decoder, Encoder, EncoderConfig as OpusConfig};
use chorus_media::rtcp::{self, Limits, NackEntry, SdesChunk, SenderInfo};
use chorus_media::rtp::{self, AudioLevel, Element, Extension};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

fn rtp_bench(c: &mut Criterion) {
    let level = [AudioLevel {
        voice: true,
        level: 30,
    }
    .to_byte()];
    let mut ext = Vec::new();
    let profile = rtp::write_elements(
        &[Element {
            id: 1,
            data: &level,
        }],
        &mut ext,
    )
    .unwrap();
    let payload = [0x5au8; 160];
    let packet = rtp::Packet {
        marker: false,
        payload_type: 111,
        sequence: 1,
        timestamp: 960,
        ssrc: 7,
        csrcs: vec![],
        extension: Some(Extension {
            profile,
            data: &ext,
        }),
        payload: &payload,
        padding: 0,
    };
    let mut wire = BytesMut::new();
    packet.encode(&mut wire).unwrap();
    let mut g = c.benchmark_group("rtp");
    g.throughput(Throughput::Elements(1));
    g.bench_function("rtp_decode", |b| {
        b.iter(|| rtp::Packet::decode(black_box(&wire)).unwrap().payload.len())
    });
    g.bench_function("rtp_encode", |b| {
        let mut out = BytesMut::with_capacity(256);
        b.iter(|| {
            out.clear();
            black_box(&packet).encode(&mut out).unwrap();
        });
    });
    let compound = [
        rtcp::Packet::SenderReport {
            ssrc: 1,
            info: SenderInfo::default(),
            reports: vec![],
        },
        rtcp::Packet::Sdes(vec![SdesChunk {
            ssrc: 1,
            items: vec![(rtcp::SDES_CNAME, b"alice@example")],
        }]),
        rtcp::Packet::Nack {
            sender_ssrc: 1,
            media_ssrc: 7,
            entries: NackEntry::from_lost(&[3, 5, 40]),
        },
    ];
    let mut rtcp_wire = BytesMut::new();
    rtcp::encode_compound(&compound, &mut rtcp_wire).unwrap();
    g.bench_function("rtcp_decode", |b| {
        b.iter(|| {
            rtcp::decode_compound(black_box(&rtcp_wire), &Limits::default())
                .unwrap()
                .len()
        })
    });
    g.finish();
}

fn fec_bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("fec");
    // (3, 2) and (6, 12): the controller's choices at 10 % random and 20 % bursty loss.
    for (k, m) in [(4u8, 1u8), (4, 2), (8, 4), (3, 2), (6, 12)] {
        let mut config = EncoderConfig::default();
        (config.k, config.m) = (k, m);
        let packets: Vec<Vec<u8>> = (0..k).map(|i| vec![i; 200]).collect();
        g.throughput(Throughput::Bytes(200 * u64::from(k)));
        g.bench_with_input(
            BenchmarkId::new("fec_encode", format!("{k},{m}")),
            &packets,
            |b, packets| {
                let mut enc = fec::Encoder::new(config).unwrap();
                let mut seq = 0u16;
                b.iter(|| {
                    for p in packets {
                        enc.push(seq, p).unwrap();
                        seq = seq.wrapping_add(1);
                    }
                    while let Some(r) = enc.poll_repair() {
                        black_box(r);
                    }
                });
            },
        );
        let mut enc = fec::Encoder::new(config).unwrap();
        for (i, p) in packets.iter().enumerate() {
            enc.push(i as u16, p).unwrap();
        }
        let repairs: Vec<Vec<u8>> = std::iter::from_fn(|| enc.poll_repair()).collect();
        g.bench_with_input(
            BenchmarkId::new("fec_recover", format!("{k},{m}")),
            &repairs,
            |b, repairs| {
                b.iter(|| {
                    let mut dec = fec::Decoder::new(DecoderConfig::default()).unwrap();
                    for (i, p) in packets.iter().enumerate().skip(usize::from(m)) {
                        dec.handle_source(i as u16, p);
                    }
                    for r in repairs {
                        dec.handle_repair(r).unwrap();
                    }
                    std::iter::from_fn(|| dec.poll_recovered()).count()
                });
            },
        );
    }
    g.finish();
}

fn jitter_bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("jitter");
    g.throughput(Throughput::Elements(1));
    g.bench_function("jitter", |b| {
        let mut jb = JitterBuffer::new(JitterConfig::default()).unwrap();
        let t0 = Instant::now();
        let mut i = 0u32;
        b.iter(|| {
            let now = t0 + Duration::from_millis(20 * u64::from(i));
            let _ = jb.handle_packet(now, i as u16, i.wrapping_mul(960), i);
            i += 1;
            black_box(jb.poll_frame(now + Duration::from_millis(100)))
        });
    });
    g.finish();
}

fn opus_bench(c: &mut Criterion) {
    // 1 s of synthetic voiced speech (so that the encoder picks its speech modes and
    // OSCE, which enhances SILK frames, has work to do), cycled frame by frame.
    let speech = chorus_media::quality::synthetic_speech(48_000, 48_000, 20);
    let frames: Vec<&[i16]> = speech.chunks_exact(960).collect();
    let mut enc = Encoder::new(OpusConfig::default()).unwrap();
    let mut packet = Vec::new();
    let mut g = c.benchmark_group("opus");
    g.throughput(Throughput::Elements(1));
    let mut i = 0;
    g.bench_function("opus_encode", |b| {
        b.iter(|| {
            i = (i + 1) % frames.len();
            enc.encode(black_box(frames[i]), &mut packet).unwrap()
        })
    });
    let packets: Vec<Vec<u8>> = frames
        .iter()
        .map(|f| {
            enc.encode(f, &mut packet).unwrap();
            packet.clone()
        })
        .collect();
    let mut dec = Decoder::new(48_000, Channels::Mono).unwrap();
    let mut out = Vec::new();
    g.bench_function("opus_decode", |b| {
        b.iter(|| {
            i = (i + 1) % packets.len();
            dec.decode(black_box(&packets[i]), &mut out).unwrap()
        })
    });
    // A lost frame: libopus PLC (the deep PLC with the `media-dnn` feature).
    g.bench_function("opus_conceal", |b| {
        b.iter(|| {
            i = (i + 1) % packets.len();
            dec.conceal(960, &mut out).unwrap();
            dec.decode(black_box(&packets[i]), &mut out).unwrap()
        })
    });
    g.finish();
}

fn resample_bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("resample");
    for (from, to) in [(44_100u32, 48_000u32), (48_000, 8_000)] {
        let frame: Vec<i16> = (0..from as usize / 50)
            .map(|i| ((i as f64 * 0.07).sin() * 8000.0) as i16)
            .collect();
        let mut r = chorus_media::resample::Resampler::new(from, to, 1).unwrap();
        let mut out = Vec::with_capacity(2 * to as usize / 50);
        g.throughput(Throughput::Elements(u64::from(to) / 50));
        g.bench_function(format!("{from}->{to}"), |b| {
            b.iter(|| {
                out.clear();
                r.process(black_box(&frame), &mut out);
                black_box(out.len())
            })
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    rtp_bench,
    fec_bench,
    jitter_bench,
    opus_bench,
    resample_bench
);
criterion_main!(benches);
